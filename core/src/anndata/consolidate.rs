//! Consolidated metadata: one document holding every node's metadata, as
//! zarr-python and anndata read it (v2 `.zmetadata`; v3 inline in the root
//! `zarr.json`). Written last, after every node exists.

use std::path::Path;

use serde_json::{Map, Value, json};

use super::output_store::OutputStore;
use super::store::{ZarrFormat, io_reason};
use crate::error::{Error, Result};

/// Writes the consolidated metadata of `store`, covering every node on disk.
pub fn consolidate(store: &OutputStore) -> Result<()> {
    let root = store.root();
    let mut files = Vec::new();
    collect_metadata_files(root, root, store.format(), &mut files)?;
    files.sort();
    match store.format() {
        ZarrFormat::V2 => {
            let mut metadata = Map::new();
            for rel in &files {
                metadata.insert(rel.clone(), read(root, rel)?);
            }
            let doc = json!({"metadata": metadata, "zarr_consolidated_format": 1});
            store.write_doc("", &root.join(".zmetadata"), &doc)
        }
        ZarrFormat::V3 => {
            let mut metadata = Map::new();
            for rel in &files {
                let Some(node) = rel.strip_suffix("/zarr.json") else {
                    continue; // the root itself
                };
                let mut doc = read(root, rel)?;
                if doc["node_type"] == "group" {
                    doc["consolidated_metadata"] =
                        json!({"kind": "inline", "must_understand": false, "metadata": {}});
                }
                metadata.insert(node.to_string(), doc);
            }
            let mut root_doc = read(root, "zarr.json")?;
            root_doc["consolidated_metadata"] =
                json!({"kind": "inline", "must_understand": false, "metadata": metadata});
            store.write_doc("", &root.join("zarr.json"), &root_doc)
        }
    }
}

fn read(root: &Path, rel: &str) -> Result<Value> {
    let bytes =
        std::fs::read(root.join(rel)).map_err(|e| Error::element(root, rel, io_reason(&e)))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::element(root, rel, format!("corrupt metadata: {e}")))
}

/// Collects metadata file paths (relative, `/`-separated) below `dir`.
fn collect_metadata_files(
    root: &Path,
    dir: &Path,
    format: ZarrFormat,
    out: &mut Vec<String>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::path(dir, io_reason(&e)))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::path(dir, io_reason(&e)))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let file_type = entry
            .file_type()
            .map_err(|e| Error::path(&path, io_reason(&e)))?;
        if file_type.is_dir() {
            // v3 chunk directories ("c") hold no metadata; skipping them keeps
            // consolidation cheap on large stores.
            if format == ZarrFormat::V3 && name == "c" && dir.join("zarr.json").is_file() {
                let is_array = std::fs::read(dir.join("zarr.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .is_some_and(|d| d["node_type"] == "array");
                if is_array {
                    continue;
                }
            }
            collect_metadata_files(root, &path, format, out)?;
        } else {
            let is_meta = match format {
                ZarrFormat::V2 => {
                    matches!(name.as_str(), ".zgroup" | ".zarray" | ".zattrs")
                        && path != root.join(".zmetadata")
                }
                ZarrFormat::V3 => name == "zarr.json",
            };
            if is_meta {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|e| Error::path(&path, e))?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push(rel);
            }
        }
    }
    Ok(())
}
