//! A zarr store on the filesystem (v2 or v3), or an `.h5ad` file read as a
//! zarr v2 store, seen node by node: format detection, node metadata and
//! attributes, children, zarrs array handles, and metadata writing for new
//! stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use zarrs::array::{Array, ArrayMetadata};

use super::atomic_store::AtomicFsStore;
use super::backend::{Backend, DerivedChunks};
use super::dtype::DType;
use super::h5::{H5Store, is_hdf5};
use super::legacy::views::{FieldView, Json2View, plain_v2_doc};
use super::legacy::{Overlay, ZarrField};
use super::store_cache::Memo;
use super::structured::{Field, fixed_text_field, raw_bits_view};
use crate::error::{Error, Result};

/// The zarr format of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ZarrFormat {
    /// Zarr v2: `.zgroup` / `.zarray` / `.zattrs`.
    V2,
    /// Zarr v3: one `zarr.json` per node.
    V3,
}

impl ZarrFormat {
    /// Parses `2` or `3`.
    pub fn from_number(n: u8) -> Result<Self> {
        match n {
            2 => Ok(ZarrFormat::V2),
            3 => Ok(ZarrFormat::V3),
            other => Err(Error::option(format!(
                "zarr format must be 2 or 3, not {other}"
            ))),
        }
    }

    /// `2` or `3`.
    pub fn number(self) -> u8 {
        match self {
            ZarrFormat::V2 => 2,
            ZarrFormat::V3 => 3,
        }
    }
}

/// What a node is, with its array metadata when it is an array.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A zarr group.
    Group,
    /// A zarr array.
    Array(Box<ArrayMeta>),
}

/// The parts of an array's metadata anncat works with, plus the raw JSON.
#[derive(Debug, Clone)]
pub struct ArrayMeta {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Element data type.
    pub dtype: DType,
    /// Chunk shape (the inner chunk shape when sharded).
    pub chunks: Vec<u64>,
    /// Shard shape when the array uses `sharding_indexed` (v3 only).
    pub shard: Option<Vec<u64>>,
    /// Fill value as written in the metadata.
    pub fill_value: Value,
    /// The metadata document as read (`.zarray` or `zarr.json`, without attributes).
    pub raw: Value,
}

/// One node's metadata: what it is and its attributes.
#[derive(Debug, Clone)]
pub struct NodeMeta {
    /// Group or array.
    pub kind: NodeKind,
    /// User attributes (`.zattrs` or `attributes`).
    pub attrs: Map<String, Value>,
}

/// An input: a zarr store on the local (or shared) filesystem, or an h5ad
/// file, read only. [`OutputStore`](super::output_store::OutputStore) is the
/// one that writes.
///
/// Writing to an input does not compile: a `Store` has no write methods,
///
/// ```compile_fail
/// let input = anncat_core::anndata::Store::open(std::path::Path::new("in.zarr")).unwrap();
/// input.write_group("", &serde_json::Map::new()).unwrap();
/// ```
///
/// and its arrays are over storage that cannot be written:
///
/// ```compile_fail
/// use zarrs::array::{ArrayBytes, ArraySubset};
/// let input = anncat_core::anndata::Store::open(std::path::Path::new("in.zarr")).unwrap();
/// let subset = ArraySubset::new_with_shape(vec![1]);
/// input.array("X").unwrap().store_array_subset(&subset, ArrayBytes::new_flen(vec![0u8; 4])).unwrap();
/// ```
///
/// while the same calls on an output store do:
///
/// ```no_run
/// use zarrs::array::{ArrayBytes, ArraySubset};
/// let out = anncat_core::anndata::OutputStore::open(std::path::Path::new("out.zarr")).unwrap();
/// out.write_group("", &serde_json::Map::new()).unwrap();
/// let subset = ArraySubset::new_with_shape(vec![1]);
/// out.writable_array("X").unwrap().store_array_subset(&subset, ArrayBytes::new_flen(vec![0u8; 4])).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    format: ZarrFormat,
    storage: Arc<Backend>,
    /// An anndata 0.7 store seen as the current layout (see [`Overlay`]).
    legacy: Option<Arc<Overlay>>,
    /// Node metadata and arrays opened so far, when the store is shared by
    /// a run's tasks ([`StoreCache`](super::store_cache::StoreCache)).
    memo: Option<Arc<Memo>>,
}

impl Store {
    /// Opens an existing store, reading only its root metadata.
    pub fn open(path: &Path) -> Result<Store> {
        let meta = std::fs::metadata(path).map_err(|e| Error::path(path, io_reason(&e)))?;
        if meta.is_file() && is_hdf5(path) {
            let h5 = H5Store::open(path).map_err(|e| Error::path(path, e))?;
            return Store {
                root: path.to_path_buf(),
                format: ZarrFormat::V2,
                storage: Arc::new(Backend::H5(h5)),
                legacy: None,
                memo: None,
            }
            .with_legacy_overlay();
        }
        let format = zarr_dir_format(path, &meta)?;
        let storage = AtomicFsStore::new(path).map_err(|e| Error::path(path, e))?;
        Store {
            root: path.to_path_buf(),
            format,
            storage: Arc::new(Backend::Zarr(storage)),
            legacy: None,
            memo: None,
        }
        .with_legacy_overlay()
    }

    /// The store of a zarr directory written by anncat (no legacy overlay).
    pub(crate) fn of_output(path: &Path, format: ZarrFormat, storage: AtomicFsStore) -> Store {
        Store {
            root: path.to_path_buf(),
            format,
            storage: Arc::new(Backend::Zarr(storage)),
            legacy: None,
            memo: None,
        }
    }

    /// This store seen through `overlay` (while an overlay is being built
    /// and needs to read what it has so far).
    pub(crate) fn with_overlay(&self, overlay: Overlay) -> Store {
        Store {
            legacy: Some(Arc::new(overlay)),
            memo: None,
            ..self.clone()
        }
    }

    /// This store, keeping the node metadata and arrays it opens (for
    /// stores that do not change while they are kept).
    pub(crate) fn memoized(self) -> Store {
        Store {
            memo: Some(Arc::default()),
            ..self
        }
    }

    /// Adds the overlay of an anndata 0.7 store (zarr v2 or h5ad).
    fn with_legacy_overlay(mut self) -> Result<Store> {
        if self.format == ZarrFormat::V2 {
            self.legacy = Overlay::detect(&self)?.map(Arc::new);
        }
        Ok(self)
    }

    /// The store's directory (or h5ad file).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's zarr format.
    pub fn format(&self) -> ZarrFormat {
        self.format
    }

    /// The zarrs storage backing this store.
    pub fn storage(&self) -> Arc<Backend> {
        self.storage.clone()
    }

    /// The h5ad file this store reads, when it is one (chunks are then not
    /// files that can be copied).
    pub fn h5(&self) -> Option<&H5Store> {
        match self.storage.as_ref() {
            Backend::H5(h) => Some(h),
            Backend::Zarr(_) | Backend::Aliased { .. } | Backend::Derived(_) => None,
        }
    }

    /// The directory of the node at `path` (`""` is the root).
    pub fn node_dir(&self, path: &str) -> PathBuf {
        let path = self.real_path(path);
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path.as_ref())
        }
    }

    /// An error about the element at `path` of this store.
    pub fn err(&self, path: &str, message: impl std::fmt::Display) -> Error {
        Error::element(&self.root, path, message)
    }

    fn read_json(&self, path: &str, file: &Path) -> Result<Option<Value>> {
        let read = match self.h5() {
            Some(h5) => {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                let key = if path.is_empty() {
                    name.into_owned()
                } else {
                    format!("{path}/{name}")
                };
                let key = zarrs::storage::StoreKey::new(key).map_err(|e| self.err(path, e))?;
                use zarrs::storage::ReadableStorageTraits as _;
                h5.get(&key)
                    .map_err(|e| self.err(path, e))?
                    .map(|b| b.to_vec())
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            }
            None => std::fs::read(file),
        };
        match read {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                self.err(path, format!("corrupt metadata in {name}: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(path, format!("cannot read metadata: {}", io_reason(&e)))),
        }
    }

    /// The stored node behind `path` (they differ only where an anndata
    /// 0.7 store's categorical is seen as the current layout).
    fn real_path<'a>(&'a self, path: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.legacy {
            Some(overlay) => overlay.real_path(path),
            None => std::borrow::Cow::Borrowed(path),
        }
    }

    /// Reads the metadata of the node at `path`, or `None` if there is none.
    pub fn node(&self, path: &str) -> Result<Option<NodeMeta>> {
        match &self.memo {
            Some(memo) => memo.node(path, || self.node_as_stored(path)),
            None => self.node_as_stored(path),
        }
    }

    /// [`Self::node`], read from the store.
    fn node_as_stored(&self, path: &str) -> Result<Option<NodeMeta>> {
        match &self.legacy {
            Some(overlay) => overlay.node(self, path),
            None => self.stored_node(path),
        }
    }

    /// The metadata of the node stored at `path`, as stored.
    pub(crate) fn stored_node(&self, path: &str) -> Result<Option<NodeMeta>> {
        let dir = self.node_dir(path);
        match self.format {
            ZarrFormat::V3 => {
                let Some(doc) = self.read_json(path, &dir.join("zarr.json"))? else {
                    return Ok(None);
                };
                let Value::Object(mut doc) = doc else {
                    return Err(self.err(path, "corrupt metadata: zarr.json is not an object"));
                };
                let attrs = match doc.remove("attributes") {
                    Some(Value::Object(a)) => a,
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        return Err(self.err(path, "corrupt metadata: attributes is not an object"));
                    }
                };
                match doc.get("node_type").and_then(Value::as_str) {
                    Some("group") => Ok(Some(NodeMeta {
                        kind: NodeKind::Group,
                        attrs,
                    })),
                    Some("array") => Ok(Some(NodeMeta {
                        kind: NodeKind::Array(Box::new(
                            self.parse_v3_array(path, Value::Object(doc))?,
                        )),
                        attrs,
                    })),
                    _ => Err(self.err(path, "corrupt metadata: zarr.json has no valid node_type")),
                }
            }
            ZarrFormat::V2 => {
                let attrs = match self.read_json(path, &dir.join(".zattrs"))? {
                    Some(Value::Object(a)) => a,
                    None => Map::new(),
                    Some(_) => {
                        return Err(self.err(path, "corrupt metadata: .zattrs is not an object"));
                    }
                };
                if let Some(doc) = self.read_json(path, &dir.join(".zarray"))? {
                    return Ok(Some(NodeMeta {
                        kind: NodeKind::Array(Box::new(self.parse_v2_array(path, doc)?)),
                        attrs,
                    }));
                }
                if self.read_json(path, &dir.join(".zgroup"))?.is_some() {
                    return Ok(Some(NodeMeta {
                        kind: NodeKind::Group,
                        attrs,
                    }));
                }
                Ok(None)
            }
        }
    }

    pub(crate) fn parse_v2_array(&self, path: &str, doc: Value) -> Result<ArrayMeta> {
        let shape = u64_list(&doc["shape"])
            .ok_or_else(|| self.err(path, "corrupt metadata: .zarray has no valid shape"))?;
        let chunks = u64_list(&doc["chunks"])
            .ok_or_else(|| self.err(path, "corrupt metadata: .zarray has no valid chunks"))?;
        if chunks.len() != shape.len() {
            return Err(self.err(path, "corrupt metadata: chunks and shape differ in rank"));
        }
        if doc.get("dtype").is_none() {
            return Err(self.err(path, "corrupt metadata: .zarray has no dtype"));
        }
        let dtype = DType::from_v2(&doc["dtype"], &doc["filters"]);
        Ok(ArrayMeta {
            shape,
            dtype,
            chunks,
            shard: None,
            fill_value: doc["fill_value"].clone(),
            raw: doc,
        })
    }

    fn parse_v3_array(&self, path: &str, doc: Value) -> Result<ArrayMeta> {
        let shape = u64_list(&doc["shape"])
            .ok_or_else(|| self.err(path, "corrupt metadata: zarr.json has no valid shape"))?;
        let grid =
            u64_list(&doc["chunk_grid"]["configuration"]["chunk_shape"]).ok_or_else(|| {
                self.err(
                    path,
                    "corrupt metadata: zarr.json has no regular chunk_grid",
                )
            })?;
        if grid.len() != shape.len() {
            return Err(self.err(
                path,
                "corrupt metadata: chunk_shape and shape differ in rank",
            ));
        }
        if doc.get("data_type").is_none() {
            return Err(self.err(path, "corrupt metadata: zarr.json has no data_type"));
        }
        let dtype = DType::from_v3(&doc["data_type"]);
        let sharding = doc["codecs"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "sharding_indexed"));
        let (chunks, shard) = match sharding {
            Some(s) => {
                let inner = u64_list(&s["configuration"]["chunk_shape"]).ok_or_else(|| {
                    self.err(
                        path,
                        "corrupt metadata: sharding_indexed has no chunk_shape",
                    )
                })?;
                (inner, Some(grid))
            }
            None => (grid, None),
        };
        Ok(ArrayMeta {
            shape,
            dtype,
            chunks,
            shard,
            fill_value: doc["fill_value"].clone(),
            raw: doc,
        })
    }

    /// Names of the child nodes of the group at `path`, sorted.
    pub fn children(&self, path: &str) -> Result<Vec<String>> {
        match &self.legacy {
            Some(overlay) => overlay.children(self, path),
            None => self.stored_children(path),
        }
    }

    /// Names of the child nodes stored in the group at `path`, sorted.
    pub(crate) fn stored_children(&self, path: &str) -> Result<Vec<String>> {
        if let Some(h5) = self.h5() {
            return h5
                .children(path)
                .map_err(|e| self.err(path, format!("cannot list group: {e}")));
        }
        let dir = self.node_dir(path);
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| self.err(path, format!("cannot list group: {}", io_reason(&e))))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| self.err(path, format!("cannot list group: {}", io_reason(&e))))?;
            let child = entry.path();
            if !child.is_dir() {
                continue;
            }
            let is_node = match self.format {
                ZarrFormat::V3 => child.join("zarr.json").is_file(),
                ZarrFormat::V2 => {
                    child.join(".zarray").is_file() || child.join(".zgroup").is_file()
                }
            };
            if is_node {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// A zarrs handle on the array at `path`.
    ///
    /// Structured (record) arrays, which zarrs cannot decode, open as raw
    /// bits of the record size so their bytes can still be moved.
    pub fn array(&self, path: &str) -> Result<Array<Backend>> {
        let real = self.real_path(path);
        if let Some(f) = self.legacy.as_ref().and_then(|o| o.zarr_field(&real)) {
            return self.field_view(&real, f);
        }
        if real.split('/').any(|part| part.starts_with("__")) {
            // zarr reserves names starting with `__`: read it under `path`.
            let aliased = Backend::Aliased {
                inner: self.storage.clone(),
                virtual_prefix: format!("{path}/"),
                real_prefix: format!("{real}/"),
            };
            return Array::open(Arc::new(aliased), &format!("/{path}"))
                .map_err(|e| self.err(path, format!("cannot open array: {e}")));
        }
        let node_path = format!("/{real}");
        let opened = Array::open(self.storage.clone(), &node_path);
        let open_err = match opened {
            Ok(array) => return Ok(array),
            Err(e) => e,
        };
        let view = match self.stored_node(&real)? {
            Some(NodeMeta {
                kind: NodeKind::Array(meta),
                ..
            }) if matches!(meta.dtype, DType::Structured(_)) => {
                self.raw_bits_metadata(path, &meta, "structured array")?
            }
            Some(NodeMeta {
                kind: NodeKind::Array(meta),
                ..
            }) if is_json2(&meta.raw) => return self.json2_view(&real, &meta),
            Some(NodeMeta {
                kind: NodeKind::Array(meta),
                ..
            }) if self.format == ZarrFormat::V2 => {
                if let Some(field) = fixed_text_field(&meta.raw["dtype"]) {
                    return self.text_view(&real, &meta, field);
                }
                None
            }
            _ => None,
        };
        let Some(metadata) = view else {
            return Err(self.err(path, format!("cannot open array: {open_err}")));
        };
        Array::new_with_metadata(self.storage.clone(), &node_path, metadata)
            .map_err(|e| self.err(path, format!("cannot open structured array: {e}")))
    }

    /// [`Self::array`], shared: opened once while the store is kept by a
    /// [`StoreCache`](super::store_cache::StoreCache), else each time.
    pub fn shared_array(&self, path: &str) -> Result<Arc<Array<Backend>>> {
        match &self.memo {
            Some(memo) => memo.array(path, || self.array(path)),
            None => self.array(path).map(Arc::new),
        }
    }

    /// The metadata under which zarrs moves the bytes of the array `meta`
    /// (at `path`) as opaque items of its item size: a structured dtype,
    /// which zarrs cannot decode, or a zarr v2 fixed-width text one. `None`
    /// for other dtypes; `what` names the array in an error.
    pub(crate) fn raw_bits_metadata(
        &self,
        path: &str,
        meta: &ArrayMeta,
        what: &str,
    ) -> Result<Option<ArrayMetadata>> {
        let Some(view) = raw_bits_view(&meta.raw, self.format) else {
            return Ok(None);
        };
        match self.format {
            ZarrFormat::V2 => serde_json::from_value(view).map(ArrayMetadata::V2),
            ZarrFormat::V3 => serde_json::from_value(view).map(ArrayMetadata::V3),
        }
        .map(Some)
        .map_err(|e| self.err(path, format!("cannot open {what}: {e}")))
    }

    /// A field of a zarr record array as an array of its own.
    fn field_view(&self, real: &str, f: &ZarrField) -> Result<Array<Backend>> {
        let view = FieldView {
            parent: self.array(&f.parent)?,
            prefix: format!("{real}/"),
            offset: f.offset,
            record: f.record,
            field: f.field.clone(),
        };
        self.derived_array(real, Arc::new(view), f.doc.clone(), "record field")
    }

    /// A zarr v2 array of fixed-width text (`|S{n}`, `<U{n}`: anndata
    /// 0.6's uns strings) as a variable-length string array.
    fn text_view(&self, real: &str, meta: &ArrayMeta, field: Field) -> Result<Array<Backend>> {
        let open_err =
            |e: &dyn std::fmt::Display| self.err(real, format!("cannot open text array: {e}"));
        let raw = self
            .raw_bits_metadata(real, meta, "text array")?
            .ok_or_else(|| open_err(&"not fixed-width text"))?;
        let view = FieldView {
            parent: Array::new_with_metadata(self.storage.clone(), &format!("/{real}"), raw)
                .map_err(|e| open_err(&e))?,
            prefix: format!("{real}/"),
            offset: 0,
            record: field.size() as usize,
            field,
        };
        let doc = plain_v2_doc("|O", &meta.shape, &meta.chunks);
        self.derived_array(real, Arc::new(view), doc, "text array")
    }

    /// An object array of numcodecs' `json2` codec (anndata 0.6's zarr
    /// strings) as a variable-length string array.
    fn json2_view(&self, real: &str, meta: &ArrayMeta) -> Result<Array<Backend>> {
        let view = Json2View {
            inner: self.storage.clone(),
            prefix: format!("{real}/"),
            stored_prefix: format!("{real}/"),
            compressor: meta.raw["compressor"].clone(),
            chunk_len: meta.chunks.iter().product::<u64>().max(1) as usize,
        };
        let doc = plain_v2_doc("|O", &meta.shape, &meta.chunks);
        self.derived_array(real, Arc::new(view), doc, "json2 array")
    }

    /// The array at `real` whose chunks `view` computes, with the zarr v2
    /// metadata `doc`.
    fn derived_array(
        &self,
        real: &str,
        view: Arc<dyn DerivedChunks>,
        doc: Value,
        what: &str,
    ) -> Result<Array<Backend>> {
        let open_err =
            |e: &dyn std::fmt::Display| self.err(real, format!("cannot open {what}: {e}"));
        let metadata = serde_json::from_value(doc)
            .map(ArrayMetadata::V2)
            .map_err(|e| open_err(&e))?;
        Array::new_with_metadata(
            Arc::new(Backend::Derived(view)),
            &format!("/{real}"),
            metadata,
        )
        .map_err(|e| open_err(&e))
    }
}

/// The zarr format of the store directory at `path` (whose metadata is
/// `meta`), or why it is not one.
pub(crate) fn zarr_dir_format(path: &Path, meta: &std::fs::Metadata) -> Result<ZarrFormat> {
    if !meta.is_dir() {
        return Err(Error::path(
            path,
            "not a zarr store (not a directory) and not an HDF5 .h5ad file",
        ));
    }
    if path.join("zarr.json").is_file() {
        Ok(ZarrFormat::V3)
    } else if path.join(".zgroup").is_file() {
        Ok(ZarrFormat::V2)
    } else if path.join(".zarray").is_file() {
        Err(Error::path(
            path,
            "not an AnnData store (the root is a zarr array)",
        ))
    } else {
        Err(Error::path(
            path,
            "not a zarr store (no zarr.json or .zgroup)",
        ))
    }
}

/// Parses a JSON list of non-negative integers.
fn u64_list(v: &Value) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Value::as_u64).collect()
}

pub use crate::error::io_reason;

/// Whether a zarr v2 array's metadata names numcodecs' `json2` codec.
fn is_json2(raw: &Value) -> bool {
    raw["filters"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f["id"] == "json2"))
}
