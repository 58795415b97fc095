//! Writing an AnnData store as an `.h5ad` (HDF5) file, the way anndata's
//! `write_h5ad` lays it out: the same groups, arrays and attributes as the
//! zarr store, arrays as contiguous uncompressed datasets (h5py's default),
//! strings as variable-length UTF-8, booleans as HDF5's FALSE/TRUE enum and
//! record arrays as compound datasets.
//!
//! The copy streams: each array is read one zarr chunk at a time (a window
//! of chunks decoded in parallel, then written in order, since the HDF5
//! library takes one call at a time), so memory stays at a few chunks
//! whatever the store's size.

use crate::anndata::range_read::ReadSubset;
use std::path::Path;

use hdf5::types::VarLenUnicode;
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use serde_json::{Map, Value};
use zarrs::array::{Array, ArraySubset, ElementOwned};

use super::backend::Backend;
use super::dtype::DType;
use super::element::Element;
use super::h5_records::{BoolByte, write_records};
use super::layout::unravel;
use super::store::{ArrayMeta, NodeKind, Store};
use crate::error::{Error, Result};

/// Chunks decoded at once per array (then written in order).
const WINDOW_CHUNKS: usize = 8;

/// What writing an `.h5ad` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct H5WriteSummary {
    /// Groups written (the root included).
    pub groups: usize,
    /// Datasets written.
    pub datasets: usize,
    /// Zarr chunks copied.
    pub chunks: u64,
}

/// Writes the AnnData store `src`, whose element tree is `tree` (from
/// [`read_tree`](super::element::read_tree)), as a new HDF5 file at `dest`
/// (replacing any file there). `dest` is written in place: callers stage it
/// and rename.
pub fn write_h5ad(src: &Store, tree: &Element, dest: &Path) -> Result<H5WriteSummary> {
    let file = hdf5::File::create(dest)
        .map_err(|e| Error::path(dest, format!("cannot create the HDF5 file: {e}")))?;
    let mut summary = H5WriteSummary::default();
    let writer = Writer { src, dest };
    writer.group(&file, tree, &mut summary)?;
    file.flush()
        .map_err(|e| Error::path(dest, format!("cannot flush the HDF5 file: {e}")))?;
    file.close()
        .map_err(|e| Error::path(dest, format!("cannot close the HDF5 file: {e}")))?;
    Ok(summary)
}

struct Writer<'a> {
    src: &'a Store,
    dest: &'a Path,
}

impl Writer<'_> {
    /// An error about element `path` of the file being written.
    fn err(&self, path: &str, message: impl std::fmt::Display) -> Error {
        Error::element(self.dest, path, message)
    }

    /// Writes the attributes and children of group element `e` into `group`.
    fn group(&self, group: &hdf5::Group, e: &Element, summary: &mut H5WriteSummary) -> Result<()> {
        summary.groups += 1;
        self.attrs(group, &e.path, &e.meta.attrs)?;
        for child in &e.children {
            let name = child.name();
            if name.starts_with('.') {
                continue;
            }
            match &child.meta.kind {
                NodeKind::Group => {
                    let sub = group.create_group(name).map_err(|err| {
                        self.err(&child.path, format!("cannot create group: {err}"))
                    })?;
                    self.group(&sub, child, summary)?;
                }
                NodeKind::Array(meta) => {
                    let ds = self.array(group, name, &child.path, meta, summary)?;
                    self.attrs(&ds, &child.path, &child.meta.attrs)?;
                    summary.datasets += 1;
                }
            }
        }
        Ok(())
    }

    /// Writes every attribute of element `path`.
    fn attrs(&self, loc: &hdf5::Location, path: &str, attrs: &Map<String, Value>) -> Result<()> {
        for (name, value) in attrs {
            write_attr(loc, name, value)
                .map_err(|why| self.err(path, format!("attribute {name:?}: {why}")))?;
        }
        Ok(())
    }

    /// Creates the dataset `name` in `group` and copies the array `path`.
    fn array(
        &self,
        group: &hdf5::Group,
        name: &str,
        path: &str,
        meta: &ArrayMeta,
        summary: &mut H5WriteSummary,
    ) -> Result<hdf5::Dataset> {
        let copy = Copy {
            writer: self,
            group,
            name,
            path,
            meta,
        };
        let (ds, chunks) = match &meta.dtype {
            DType::Bool => copy.numbers::<bool, BoolByte>(|b| BoolByte(u8::from(b))),
            DType::Int8 => copy.numbers::<i8, i8>(|v| v),
            DType::Int16 => copy.numbers::<i16, i16>(|v| v),
            DType::Int32 => copy.numbers::<i32, i32>(|v| v),
            DType::Int64 => copy.numbers::<i64, i64>(|v| v),
            DType::UInt8 => copy.numbers::<u8, u8>(|v| v),
            DType::UInt16 => copy.numbers::<u16, u16>(|v| v),
            DType::UInt32 => copy.numbers::<u32, u32>(|v| v),
            DType::UInt64 => copy.numbers::<u64, u64>(|v| v),
            DType::Float32 => copy.numbers::<f32, f32>(|v| v),
            DType::Float64 => copy.numbers::<f64, f64>(|v| v),
            DType::String => copy.strings(),
            DType::Structured(s) => {
                let array = self.src.array(path)?;
                let bytes: zarrs::array::ArrayBytes<'static> = array
                    .read_subset(&array.subset_all())
                    .map_err(|e| self.src.err(path, format!("cannot read data: {e}")))?;
                let bytes = bytes
                    .into_fixed()
                    .map_err(|e| self.src.err(path, format!("cannot read records: {e}")))?;
                let rows = meta.shape.iter().product::<u64>() as usize;
                let ds = write_records(group, name, s, rows, &bytes)
                    .map_err(|why| self.err(path, why))?;
                Ok((ds, 1))
            }
            DType::Float16 => Err(self.err(
                path,
                "float16 arrays cannot be written to .h5ad by anncat (write a .zarr output)",
            )),
            DType::Other(dtype) => Err(self.err(
                path,
                format!("an array of dtype {dtype} cannot be written to .h5ad"),
            )),
        }?;
        summary.chunks += chunks;
        Ok(ds)
    }
}

/// One array being copied.
struct Copy<'a> {
    writer: &'a Writer<'a>,
    group: &'a hdf5::Group,
    name: &'a str,
    path: &'a str,
    meta: &'a ArrayMeta,
}

impl Copy<'_> {
    fn create<H: hdf5::H5Type>(&self) -> Result<hdf5::Dataset> {
        let shape: Vec<usize> = self.meta.shape.iter().map(|&n| n as usize).collect();
        self.group
            .new_dataset::<H>()
            .shape(shape)
            .create(self.name)
            .map_err(|e| {
                self.writer
                    .err(self.path, format!("cannot create dataset: {e}"))
            })
    }

    /// Copies a numeric array, read as `Z` and written as `H`.
    fn numbers<Z, H>(&self, convert: impl Fn(Z) -> H + Sync) -> Result<(hdf5::Dataset, u64)>
    where
        Z: ElementOwned + Send + Sync,
        H: hdf5::H5Type + Send,
    {
        let ds = self.create::<H>()?;
        let chunks = self.stream(&ds, |values: Vec<Z>| {
            Ok(values.into_iter().map(&convert).collect())
        })?;
        Ok((ds, chunks))
    }

    /// Copies a string array as variable-length UTF-8.
    fn strings(&self) -> Result<(hdf5::Dataset, u64)> {
        let ds = self.create::<VarLenUnicode>()?;
        let chunks = self.stream(&ds, |values: Vec<String>| {
            values.iter().map(|s| text(s)).collect()
        })?;
        Ok((ds, chunks))
    }

    /// Reads the array chunk by chunk as `Z` (a window decoded in
    /// parallel), converts each chunk and writes it to its place in `ds`.
    fn stream<Z, H>(
        &self,
        ds: &hdf5::Dataset,
        convert: impl Fn(Vec<Z>) -> std::result::Result<Vec<H>, String> + Sync,
    ) -> Result<u64>
    where
        Z: ElementOwned + Send,
        H: hdf5::H5Type + Send,
    {
        let src = self.writer.src;
        let array: Array<Backend> = src.array(self.path)?;
        if self.meta.shape.is_empty() {
            let values: Vec<Z> = array
                .read_subset(&array.subset_all())
                .map_err(|e| src.err(self.path, format!("cannot read data: {e}")))?;
            let value = convert(values)
                .map_err(|why| src.err(self.path, why))?
                .into_iter()
                .next()
                .ok_or_else(|| src.err(self.path, "a scalar array holds no value"))?;
            ds.write_scalar(&value)
                .map_err(|e| self.writer.err(self.path, format!("cannot write: {e}")))?;
            return Ok(1);
        }
        if self.meta.shape.contains(&0) {
            return Ok(0);
        }
        let grid: Vec<u64> = array.chunk_grid_shape().to_vec();
        let units: u64 = grid.iter().product();
        let mut next = 0u64;
        while next < units {
            let window: Vec<u64> = (next..units.min(next + WINDOW_CHUNKS as u64)).collect();
            next += window.len() as u64;
            let decoded: Vec<(ArraySubset, Vec<H>)> = window
                .into_par_iter()
                .map(|linear| -> Result<(ArraySubset, Vec<H>)> {
                    let indices = unravel(linear, &grid);
                    let subset = array
                        .chunk_subset_bounded(&indices)
                        .map_err(|e| src.err(self.path, format!("bad chunk {indices:?}: {e}")))?;
                    let values: Vec<Z> = array
                        .read_subset(&subset)
                        .map_err(|e| src.err(self.path, format!("cannot read data: {e}")))?;
                    let values = convert(values).map_err(|why| src.err(self.path, why))?;
                    Ok((subset, values))
                })
                .collect::<Result<_>>()?;
            for (subset, values) in decoded {
                let shape: Vec<usize> = subset.shape().iter().map(|&n| n as usize).collect();
                let block = ArrayD::from_shape_vec(IxDyn(&shape), values)
                    .map_err(|e| src.err(self.path, format!("chunk of unexpected size: {e}")))?;
                ds.write_slice(&block, hyperslab(&subset))
                    .map_err(|e| self.writer.err(self.path, format!("cannot write: {e}")))?;
            }
        }
        Ok(units)
    }
}

/// The HDF5 selection of a zarr subset.
fn hyperslab(subset: &ArraySubset) -> Selection {
    let dims: Vec<SliceOrIndex> = subset
        .start()
        .iter()
        .zip(subset.shape())
        .map(|(&start, &count)| SliceOrIndex::SliceCount {
            start: start as usize,
            step: 1,
            count: count as usize,
            block: 1,
        })
        .collect();
    Selection::from(Hyperslab::from(dims))
}

/// A string as HDF5's variable-length UTF-8, which cannot hold NUL.
fn text(s: &str) -> std::result::Result<VarLenUnicode, String> {
    s.parse::<VarLenUnicode>()
        .map_err(|_| format!("the string {s:?} holds a NUL character, which HDF5 strings cannot"))
}

/// Creates the scalar attribute `name` holding `value`.
fn scalar_attr<T: hdf5::H5Type>(
    loc: &hdf5::Location,
    name: &str,
    value: &T,
) -> std::result::Result<(), String> {
    loc.new_attr::<T>()
        .shape(())
        .create(name)
        .and_then(|a| a.write_scalar(value))
        .map_err(|e| e.to_string())
}

/// Creates the 1-D attribute `name` holding `values`.
fn list_attr<T: hdf5::H5Type>(
    loc: &hdf5::Location,
    name: &str,
    values: &[T],
) -> std::result::Result<(), String> {
    loc.new_attr_builder()
        .with_data(values)
        .create(name)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Writes one JSON attribute as h5py writes the Python value anndata sets:
/// a string as a variable-length UTF-8 scalar, a bool as a boolean, a
/// number as int64 or float64, a list as a 1-D array of one of those (an
/// empty list as an empty float64 array, as numpy makes of `[]`).
fn write_attr(loc: &hdf5::Location, name: &str, value: &Value) -> std::result::Result<(), String> {
    match value {
        Value::String(s) => scalar_attr(loc, name, &text(s)?),
        Value::Bool(b) => scalar_attr(loc, name, b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => scalar_attr(loc, name, &i),
            (None, Some(u)) => scalar_attr(loc, name, &u),
            (None, None) => scalar_attr(loc, name, &n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Array(items) => write_list_attr(loc, name, items),
        Value::Null | Value::Object(_) => Err(format!(
            "a JSON {} attribute cannot be stored in HDF5",
            if value.is_null() { "null" } else { "object" }
        )),
    }
}

fn write_list_attr(
    loc: &hdf5::Location,
    name: &str,
    items: &[Value],
) -> std::result::Result<(), String> {
    if items.is_empty() {
        return loc
            .new_attr::<f64>()
            .shape(0)
            .create(name)
            .map(drop)
            .map_err(|e| e.to_string());
    }
    if items.iter().all(Value::is_string) {
        let strings = items
            .iter()
            .map(|v| text(v.as_str().unwrap_or_default()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        return list_attr(loc, name, &strings);
    }
    if items.iter().all(Value::is_boolean) {
        let bools: Vec<bool> = items.iter().map(|v| v.as_bool() == Some(true)).collect();
        return list_attr(loc, name, &bools);
    }
    if items.iter().all(Value::is_i64) {
        let ints: Vec<i64> = items.iter().filter_map(Value::as_i64).collect();
        return list_attr(loc, name, &ints);
    }
    if items.iter().all(Value::is_number) {
        let floats: Vec<f64> = items.iter().filter_map(Value::as_f64).collect();
        return list_attr(loc, name, &floats);
    }
    Err("a list of mixed or nested values cannot be stored in HDF5".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperslab_covers_the_subset() {
        let subset = ArraySubset::new_with_start_shape(vec![2, 0], vec![3, 4]).expect("subset");
        let sel = hyperslab(&subset);
        assert_eq!(sel.out_shape([10, 4]).expect("shape"), vec![3, 4]);
    }

    #[test]
    fn attributes_keep_their_types() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.h5");
        let file = hdf5::File::create(&path).expect("create");
        let attrs = serde_json::json!({
            "encoding-type": "dataframe",
            "ordered": true,
            "shape": [3, 4],
            "scale": 0.5,
            "column-order": [],
            "names": ["a", "b"],
        });
        for (k, v) in attrs.as_object().expect("object") {
            write_attr(&file, k, v).expect(k);
        }
        let s: VarLenUnicode = file
            .attr("encoding-type")
            .expect("encoding-type")
            .read_scalar()
            .expect("read");
        assert_eq!(s.as_str(), "dataframe");
        let b: bool = file
            .attr("ordered")
            .expect("ordered")
            .read_scalar()
            .expect("read");
        assert!(b);
        let shape: Vec<i64> = file.attr("shape").expect("shape").read_raw().expect("read");
        assert_eq!(shape, vec![3, 4]);
        let names: Vec<VarLenUnicode> =
            file.attr("names").expect("names").read_raw().expect("read");
        assert_eq!(names[1].as_str(), "b");
        assert_eq!(file.attr("column-order").expect("column-order").size(), 0);
        let err = write_attr(&file, "x", &serde_json::json!({"a": 1})).expect_err("object");
        assert!(err.contains("object"), "{err}");
    }
}
