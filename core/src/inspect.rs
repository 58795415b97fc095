//! `anncat inspect`: the element tree of a store with encoding, shape,
//! dtype, chunking and stored (compressed) size — what `h5ls -r` is for HDF5.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::anndata::element::{Element, Encoding, read_tree};
use crate::anndata::store::{NodeKind, Store};
use crate::error::Result;

/// One element of an inspected store.
#[derive(Debug, Clone, Serialize)]
pub struct InspectRow {
    /// Path inside the store (`/` for the root).
    pub path: String,
    /// Nesting depth (root = 0).
    pub depth: usize,
    /// `group` or `array`.
    pub node: &'static str,
    /// The `encoding-type` (`-` when absent).
    pub encoding: &'static str,
    /// The `encoding-version`, if any.
    pub encoding_version: Option<String>,
    /// Logical shape: the array's, a sparse matrix's `shape`, or a data
    /// frame's (rows, columns).
    pub shape: Option<Vec<u64>>,
    /// Element dtype (arrays only).
    pub dtype: Option<String>,
    /// Chunk shape as stored (inner chunks when sharded; an `.h5ad`'s HDF5
    /// chunks, `None` when contiguous).
    pub chunks: Option<Vec<u64>>,
    /// Compression as stored: zarr's compressor or codecs, an `.h5ad`'s
    /// HDF5 filters (`gzip(4)+shuffle`); `None` when uncompressed.
    pub compression: Option<String>,
    /// Shard shape, when sharded.
    pub shards: Option<Vec<u64>>,
    /// Bytes stored on disk for this element's chunks (all descendants for groups).
    pub stored_bytes: u64,
}

/// A whole inspected store.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The store path as given.
    pub store: String,
    /// What holds the store: `"zarr"` or `"hdf5"` (an `.h5ad` file).
    pub container: String,
    /// Zarr format (2 or 3; an `.h5ad` reads as zarr v2).
    pub zarr_format: u8,
    /// Every element, parents before children.
    pub elements: Vec<InspectRow>,
}

/// Reads the element tree of the AnnData store at `path` (metadata and
/// file sizes only).
pub fn inspect(path: &Path) -> Result<Inspection> {
    let store = Store::open(path)?;
    let tree = read_tree(&store)?;
    let mut elements = Vec::new();
    collect(&store, &tree, 0, &mut elements);
    Ok(Inspection {
        store: path.display().to_string(),
        container: if store.h5().is_some() { "hdf5" } else { "zarr" }.to_string(),
        zarr_format: store.format().number(),
        elements,
    })
}

fn collect(store: &Store, e: &Element, depth: usize, out: &mut Vec<InspectRow>) -> u64 {
    let index = out.len();
    let attrs = &e.meta.attrs;
    let (node, dtype, mut chunks, shards, mut shape) = match &e.meta.kind {
        NodeKind::Array(a) => (
            "array",
            Some(a.dtype.display_name()),
            Some(a.chunks.clone()),
            a.shard.clone(),
            Some(a.shape.clone()),
        ),
        NodeKind::Group => ("group", None, None, None, None),
    };
    let mut compression = None;
    if let NodeKind::Array(a) = &e.meta.kind {
        match store.h5().and_then(|h5| h5.storage_layout(&e.path)) {
            Some((stored_chunks, filters)) => {
                chunks = stored_chunks;
                compression = (!filters.is_empty()).then(|| filters.join("+"));
            }
            None if store.h5().is_none() => compression = zarr_compression(&a.raw),
            None => {}
        }
    }
    if matches!(e.encoding, Encoding::CsrMatrix | Encoding::CscMatrix) {
        shape = attrs
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_u64).collect());
    }
    if e.encoding == Encoding::DataFrame {
        let cols = attrs
            .get("column-order")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as u64;
        let rows = crate::anndata::element::element_len(store, e).unwrap_or(0);
        shape = Some(vec![rows, cols]);
    }
    out.push(InspectRow {
        path: if e.path.is_empty() {
            "/".to_string()
        } else {
            e.path.clone()
        },
        depth,
        node,
        encoding: e.encoding.name(),
        encoding_version: attrs
            .get("encoding-version")
            .and_then(Value::as_str)
            .map(str::to_string),
        shape,
        dtype,
        chunks,
        compression,
        shards,
        stored_bytes: 0,
    });
    let stored = match &e.meta.kind {
        NodeKind::Array(_) => match store.h5() {
            Some(h5) => h5.stored_bytes(&e.path),
            None => chunk_bytes(&store.node_dir(&e.path)),
        },
        NodeKind::Group => e
            .children
            .iter()
            .map(|c| collect(store, c, depth + 1, out))
            .sum(),
    };
    out[index].stored_bytes = stored;
    stored
}

/// A zarr array's compression: the v2 compressor (`blosc/lz4`, `zstd`),
/// or the v3 bytes-to-bytes codecs, inside a shard's too.
fn zarr_compression(raw: &Value) -> Option<String> {
    if let Some(c) = raw.get("compressor").filter(|c| !c.is_null()) {
        let id = c["id"].as_str().unwrap_or("?");
        return Some(match c["cname"].as_str() {
            Some(cname) => format!("{id}/{cname}"),
            None => id.to_string(),
        });
    }
    fn codecs(list: &Value, out: &mut Vec<String>) {
        for c in list.as_array().into_iter().flatten() {
            match c["name"].as_str() {
                Some("sharding_indexed") => codecs(&c["configuration"]["codecs"], out),
                Some("bytes" | "transpose" | "vlen-utf8" | "vlen-bytes" | "crc32c") | None => {}
                Some(name) => out.push(name.to_string()),
            }
        }
    }
    let mut names = Vec::new();
    codecs(&raw["codecs"], &mut names);
    (!names.is_empty()).then(|| names.join("+"))
}

/// Bytes of all non-metadata files below an array's directory.
fn chunk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(std::result::Result::ok)
        .map(|entry| {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                chunk_bytes(&path)
            } else if matches!(name.to_str(), Some(".zarray" | ".zattrs" | "zarr.json")) {
                0
            } else {
                entry.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Formats a byte count with a binary unit.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn dims(v: &Option<Vec<u64>>) -> String {
    match v {
        None => String::new(),
        Some(d) if d.is_empty() => "()".to_string(),
        Some(d) => d.iter().map(u64::to_string).collect::<Vec<_>>().join("×"),
    }
}

/// Renders an inspection as an indented table, one element per line.
pub fn render_text(ins: &Inspection) -> String {
    let mut rows: Vec<[String; 7]> = vec![[
        "element".into(),
        "encoding".into(),
        "shape".into(),
        "dtype".into(),
        "chunks".into(),
        "compression".into(),
        "stored".into(),
    ]];
    for r in &ins.elements {
        let name = if r.depth == 0 {
            "/".to_string()
        } else {
            format!(
                "{}{}",
                "  ".repeat(r.depth - 1),
                r.path.rsplit('/').next().unwrap_or("")
            )
        };
        let chunks = match &r.shards {
            Some(s) => format!("{} in {}", dims(&r.chunks), dims(&Some(s.clone()))),
            None if r.chunks.is_none() && r.node == "array" => "contiguous".into(),
            None => dims(&r.chunks),
        };
        let compression = match (&r.compression, r.node) {
            (Some(c), _) => c.clone(),
            (None, "array") => "none".into(),
            (None, _) => String::new(),
        };
        rows.push([
            name,
            r.encoding.to_string(),
            dims(&r.shape),
            r.dtype.clone().unwrap_or_default(),
            chunks,
            compression,
            human_bytes(r.stored_bytes),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = if ins.container == "hdf5" {
        format!("{} (h5ad: HDF5)\n", ins.store)
    } else {
        format!("{} (zarr v{})\n", ins.store, ins.zarr_format)
    };
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i == 6 {
                line.push_str(&format!("{cell:>w$}"));
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
