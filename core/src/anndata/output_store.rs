//! The output store: a zarr directory anncat creates (or reopens, to
//! resume or to write a task's chunks) and writes. An input [`Store`] has
//! no way to write; everything that writes takes an [`OutputStore`], so a
//! write to an input does not compile. It reads as a [`Store`] too (through
//! `Deref`), to read back what was written.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use zarrs::array::Array;

use super::atomic_store::{AtomicFsStore, write_atomic};
use super::dtype::DType;
use super::store::{NodeKind, NodeMeta, Store, ZarrFormat, io_reason, zarr_dir_format};
use crate::error::{Error, Result};

/// A zarr directory anncat writes.
#[derive(Debug, Clone)]
pub struct OutputStore {
    store: Store,
    /// The directory's storage, for writes.
    fs: Arc<AtomicFsStore>,
    /// Arrays created through [`OutputStore::write_array`] are sharded (v3
    /// only) with inner chunks of at least this many bytes.
    shard_inner_bytes: Option<u64>,
}

impl std::ops::Deref for OutputStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl OutputStore {
    /// Creates a new, empty store directory (it must not exist yet; its
    /// parent must). Nothing is written inside it.
    pub fn create(path: &Path, format: ZarrFormat) -> Result<OutputStore> {
        super::sandbox::create_dir(path)
            .map_err(|e| Error::path(path, format!("cannot create output: {}", io_reason(&e))))?;
        Self::of_dir(path, format)
    }

    /// Opens the output directory `path` (a resumed run's, or the shared
    /// output a worker writes chunks into). It must be a zarr store.
    pub fn open(path: &Path) -> Result<OutputStore> {
        let meta = std::fs::metadata(path).map_err(|e| Error::path(path, io_reason(&e)))?;
        if meta.is_file() && super::h5::is_hdf5(path) {
            return Err(Error::path(
                path,
                "an .h5ad file is not a zarr output to write into",
            ));
        }
        // An output is anncat's own zarr: no legacy layout to look for.
        Self::of_dir(path, zarr_dir_format(path, &meta)?)
    }

    fn of_dir(path: &Path, format: ZarrFormat) -> Result<OutputStore> {
        let storage = |p: &Path| AtomicFsStore::new(p).map_err(|e| Error::path(p, e));
        Ok(OutputStore {
            store: Store::of_output(path, format, storage(path)?),
            fs: Arc::new(storage(path)?),
            shard_inner_bytes: None,
        })
    }

    /// The store for reading.
    pub fn as_store(&self) -> &Store {
        &self.store
    }

    /// A zarrs handle on the array at `path`, for writing its chunks.
    ///
    /// A structured (record) array, which zarrs cannot decode, opens as raw
    /// bits of the record size, as [`Store::array`] opens it.
    pub fn writable_array(&self, path: &str) -> Result<Array<AtomicFsStore>> {
        let node = format!("/{path}");
        let open_err = match Array::open(self.fs.clone(), &node) {
            Ok(array) => return Ok(array),
            Err(e) => e,
        };
        let metadata = match self.stored_node(path)? {
            Some(NodeMeta {
                kind: NodeKind::Array(meta),
                ..
            }) if matches!(meta.dtype, DType::Structured(_)) => {
                self.raw_bits_metadata(path, &meta, "structured array")?
            }
            _ => None,
        };
        let Some(metadata) = metadata else {
            return Err(self.err(path, format!("cannot open array: {open_err}")));
        };
        Array::new_with_metadata(self.fs.clone(), &node, metadata)
            .map_err(|e| self.err(path, format!("cannot open structured array: {e}")))
    }

    /// Shards the arrays later created with [`OutputStore::write_array`]
    /// (zarr v3 only; `None` or a v2 store: unsharded): each array's chunk
    /// becomes its shard, split into inner chunks of at least `inner_bytes`.
    pub fn set_sharding(&mut self, inner_bytes: Option<u64>) {
        self.shard_inner_bytes = inner_bytes.filter(|_| self.format() == ZarrFormat::V3);
    }

    /// Creates an array node from `spec` (sharded as
    /// [`OutputStore::set_sharding`] says) with attributes `attrs`.
    pub fn write_array(
        &self,
        path: &str,
        spec: super::layout::ArraySpec,
        attrs: &Map<String, Value>,
    ) -> Result<()> {
        let spec = match self.shard_inner_bytes {
            Some(inner) if spec.shard.is_none() => spec.sharded(inner),
            _ => spec,
        };
        let doc = spec.to_metadata(self.format()).ok_or_else(|| {
            self.err(
                path,
                format!("no zarr spelling for dtype {}", spec.dtype.display_name()),
            )
        })?;
        self.write_array_meta(path, &doc, attrs)
    }

    /// Writes a group node with `attrs` (v2: `.zgroup` + `.zattrs`).
    pub fn write_group(&self, path: &str, attrs: &Map<String, Value>) -> Result<()> {
        let dir = self.node_dir(path);
        match self.format() {
            ZarrFormat::V3 => {
                let doc = serde_json::json!({
                    "attributes": attrs,
                    "zarr_format": 3,
                    "node_type": "group",
                });
                self.write_doc(path, &dir.join("zarr.json"), &doc)
            }
            ZarrFormat::V2 => {
                self.write_doc(
                    path,
                    &dir.join(".zgroup"),
                    &serde_json::json!({"zarr_format": 2}),
                )?;
                self.write_doc(path, &dir.join(".zattrs"), &Value::Object(attrs.clone()))
            }
        }
    }

    /// Writes an array node: `doc` is the format's array metadata without
    /// attributes (v2 `.zarray`, v3 `zarr.json`), `attrs` its attributes.
    pub fn write_array_meta(
        &self,
        path: &str,
        doc: &Value,
        attrs: &Map<String, Value>,
    ) -> Result<()> {
        let dir = self.node_dir(path);
        match self.format() {
            ZarrFormat::V3 => {
                let mut doc = doc.clone();
                doc["attributes"] = Value::Object(attrs.clone());
                self.write_doc(path, &dir.join("zarr.json"), &doc)
            }
            ZarrFormat::V2 => {
                self.write_doc(path, &dir.join(".zarray"), doc)?;
                self.write_doc(path, &dir.join(".zattrs"), &Value::Object(attrs.clone()))
            }
        }
    }

    /// Writes one JSON document atomically.
    pub fn write_doc(&self, path: &str, file: &Path, doc: &Value) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(doc).map_err(|e| self.err(path, e))?;
        write_atomic(file, &bytes)
            .map_err(|e| self.err(path, format!("cannot write metadata: {}", io_reason(&e))))
    }
}
