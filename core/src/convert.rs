//! `anncat convert`: rewrite an AnnData store in the other zarr format and/or
//! with new chunking, streaming one output chunk (or shard) at a time.

use crate::anndata::range_read::ReadSubset;
use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;
use zarrs::array::{ArrayBytes, ArraySubset};

use crate::anndata::OutputStore;
use crate::anndata::consolidate::consolidate;
use crate::anndata::dtype::DType;
use crate::anndata::element::{Element, read_tree};
use crate::anndata::h5_write::write_h5ad;
use crate::anndata::layout::{ArraySpec, chunk_shape_for, shard_shape_for, unravel};
use crate::anndata::sparse::check_all_sparse;
use crate::anndata::store::{ArrayMeta, NodeKind, Store, ZarrFormat, io_reason};
use crate::error::{Error, Result};
use crate::output::{StagedOutput, is_h5ad};

/// Options of a conversion.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Output format; `None` keeps the input's.
    pub zarr_format: Option<ZarrFormat>,
    /// Target chunk size in bytes; `None` keeps each array's chunk shape.
    pub chunk_bytes: Option<u64>,
    /// Target shard size in bytes (v3 output only); `None` keeps the input's
    /// shards when both sides are v3 and chunks are kept, else no sharding.
    pub shard_bytes: Option<u64>,
    /// Replace an existing output.
    pub overwrite: bool,
}

impl ConvertOptions {
    /// Checks the options on their own and against the output format.
    pub fn validate(&self, output_format: ZarrFormat) -> Result<()> {
        if self.chunk_bytes == Some(0) {
            return Err(Error::option("--chunk-mib must be positive"));
        }
        if let Some(shard) = self.shard_bytes {
            if output_format == ZarrFormat::V2 {
                return Err(Error::option(
                    "--shard-mib needs zarr format 3 output (zarr v2 has no shards)",
                ));
            }
            if shard == 0 {
                return Err(Error::option("--shard-mib must be positive"));
            }
            if let Some(chunk) = self.chunk_bytes
                && shard < chunk
            {
                return Err(Error::option("--shard-mib must be at least --chunk-mib"));
            }
        }
        Ok(())
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConvertSummary {
    /// Groups written.
    pub groups: usize,
    /// Arrays written.
    pub arrays: usize,
    /// Arrays copied verbatim (same format, layout and codecs).
    pub arrays_copied_verbatim: usize,
    /// Output chunks (or shards) encoded.
    pub chunks_written: u64,
    /// The output's zarr format (0 for an `.h5ad` output).
    pub zarr_format: u8,
}

/// Converts the AnnData store `input` into a new store at `output`.
pub fn convert(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertSummary> {
    let src = Store::open(input)?;
    if is_h5ad(output) {
        return convert_to_h5ad(&src, input, output, opts);
    }
    let format = opts.zarr_format.unwrap_or(src.format());
    opts.validate(format)?;
    let tree = read_tree(&src)?;
    check_all_sparse(&src, &tree)?;
    let staged = StagedOutput::prepare(output, &[input], opts.overwrite)?;
    let result = (|| {
        let dst = OutputStore::create(&staged.partial_path, format)?;
        let mut summary = ConvertSummary {
            zarr_format: format.number(),
            ..ConvertSummary::default()
        };
        copy_element(&src, &dst, &tree, opts, &mut summary)?;
        consolidate(&dst)?;
        Ok(summary)
    })();
    staged.finish(result)
}

/// Writes the store `src` (read from `input`) as the `.h5ad` file `output`.
fn convert_to_h5ad(
    src: &Store,
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
) -> Result<ConvertSummary> {
    if opts.zarr_format.is_some() || opts.chunk_bytes.is_some() || opts.shard_bytes.is_some() {
        return Err(Error::option(format!(
            "-o {}: --zarr-format, --chunk-mib and --shard-mib apply to zarr outputs, not .h5ad",
            output.display()
        )));
    }
    let tree = read_tree(src)?;
    check_all_sparse(src, &tree)?;
    let staged = StagedOutput::prepare(output, &[input], opts.overwrite)?;
    let result = write_h5ad(src, &tree, &staged.partial_path).map(|written| ConvertSummary {
        groups: written.groups,
        arrays: written.datasets,
        arrays_copied_verbatim: 0,
        chunks_written: written.chunks,
        zarr_format: 0,
    });
    staged.finish(result)
}

/// Copies element `e` of `src` (and everything below it) to the same path of
/// `dst`, re-encoding arrays as `opts` and the output format require.
pub fn copy_element(
    src: &Store,
    dst: &OutputStore,
    e: &Element,
    opts: &ConvertOptions,
    summary: &mut ConvertSummary,
) -> Result<()> {
    match &e.meta.kind {
        NodeKind::Group => {
            dst.write_group(&e.path, &e.meta.attrs)?;
            summary.groups += 1;
            for child in &e.children {
                copy_element(src, dst, child, opts, summary)?;
            }
        }
        NodeKind::Array(meta) => {
            copy_array(src, dst, &e.path, meta, &e.meta.attrs, opts, summary)?;
            summary.arrays += 1;
        }
    }
    Ok(())
}

/// The output layout of one array under `opts`.
fn output_spec(
    src: &Store,
    dst: &OutputStore,
    meta: &ArrayMeta,
    opts: &ConvertOptions,
) -> ArraySpec {
    let item = meta.dtype.item_size();
    let chunks = match opts.chunk_bytes {
        Some(bytes) => chunk_shape_for(&meta.shape, item, bytes),
        None => meta.chunks.clone(),
    };
    let mut spec = ArraySpec::new(meta.shape.clone(), meta.dtype.clone(), chunks);
    spec.fill_value = meta.fill_value.clone();
    // Like anndata, never shard scalars or record arrays (zarr-python cannot
    // read sharded structured arrays).
    if dst.format() == ZarrFormat::V3
        && !meta.shape.is_empty()
        && !matches!(meta.dtype, DType::Structured(_))
    {
        spec.shard = match opts.shard_bytes {
            Some(bytes) => Some(shard_shape_for(&meta.shape, &spec.chunks, item, bytes)),
            None if opts.chunk_bytes.is_none() && src.format() == ZarrFormat::V3 => {
                meta.shard.clone()
            }
            None => None,
        };
    }
    spec
}

#[allow(clippy::too_many_arguments)]
fn copy_array(
    src: &Store,
    dst: &OutputStore,
    path: &str,
    meta: &ArrayMeta,
    attrs: &serde_json::Map<String, Value>,
    opts: &ConvertOptions,
    summary: &mut ConvertSummary,
) -> Result<()> {
    if let DType::Other(dtype) = &meta.dtype {
        if let Some(why) = src.h5().and_then(|h| h.unsupported(path)) {
            return Err(src.err(path, why));
        }
        if src.format() != dst.format() || src.h5().is_some() {
            return Err(src.err(
                path,
                format!("cannot convert an array of dtype {dtype} between zarr formats"),
            ));
        }
        copy_verbatim(src, dst, path)?;
        summary.arrays_copied_verbatim += 1;
        return Ok(());
    }
    let spec = output_spec(src, dst, meta, opts);
    let doc = spec
        .to_metadata(dst.format())
        .ok_or_else(|| src.err(path, "array dtype has no zarr spelling"))?;
    if src.h5().is_none() && src.format() == dst.format() && doc == meta.raw {
        copy_verbatim(src, dst, path)?;
        summary.arrays_copied_verbatim += 1;
        return Ok(());
    }
    dst.write_array_meta(path, &doc, attrs)?;
    summary.chunks_written += copy_array_data(src, dst, path)?;
    Ok(())
}

/// Copies the data of the array at `path` of `src` into the array of the
/// same shape at `path` of `dst` (whose metadata exists), one output chunk
/// or shard per step, in parallel. Returns the number of steps.
pub fn copy_array_data(src: &Store, dst: &OutputStore, path: &str) -> Result<u64> {
    let input = src.array(path)?;
    let output = dst.writable_array(path)?;
    if input.shape() != output.shape() {
        return Err(dst.err(
            path,
            format!(
                "shape {:?} differs from the input's {:?}",
                output.shape(),
                input.shape()
            ),
        ));
    }
    let grid: Vec<u64> = output.chunk_grid_shape().to_vec();
    let units: u64 = grid.iter().product();
    (0..units)
        .into_par_iter()
        .try_for_each(|linear| -> Result<()> {
            let indices = unravel(linear, &grid);
            let subset: ArraySubset = output
                .chunk_subset_bounded(&indices)
                .map_err(|e| dst.err(path, format!("bad chunk {indices:?}: {e}")))?;
            let bytes: ArrayBytes<'static> = input
                .read_subset(&subset)
                .map_err(|e| src.err(path, format!("cannot read data: {e}")))?;
            output
                .store_array_subset(&subset, bytes)
                .map_err(|e| dst.err(path, format!("cannot write chunk {indices:?}: {e}")))
        })?;
    Ok(units)
}

/// Copies every file of the node at `path` (metadata and chunks) byte for
/// byte, each through a temporary file and a rename.
fn copy_verbatim(src: &Store, dst: &OutputStore, path: &str) -> Result<()> {
    copy_dir(&src.node_dir(path), &dst.node_dir(path))
        .map_err(|e| src.err(path, format!("cannot copy: {e}")))
}

fn copy_dir(from: &Path, to: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {}", to.display(), io_reason(&e)))?;
    for entry in
        std::fs::read_dir(from).map_err(|e| format!("{}: {}", from.display(), io_reason(&e)))?
    {
        let entry = entry.map_err(|e| io_reason(&e))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        if source.is_dir() {
            copy_dir(&source, &target)?;
        } else {
            let tmp = to.join(format!(
                ".{}.tmp-{}",
                entry.file_name().to_string_lossy(),
                std::process::id()
            ));
            std::fs::copy(&source, &tmp)
                .map_err(|e| format!("{}: {}", source.display(), io_reason(&e)))?;
            std::fs::rename(&tmp, &target)
                .map_err(|e| format!("{}: {}", target.display(), io_reason(&e)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_need_v3() {
        let opts = ConvertOptions {
            shard_bytes: Some(1 << 20),
            ..ConvertOptions::default()
        };
        assert!(opts.validate(ZarrFormat::V2).is_err());
        assert!(opts.validate(ZarrFormat::V3).is_ok());
    }
}
