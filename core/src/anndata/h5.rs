//! `.h5ad` (HDF5) files read as if they were zarr v2 stores: a read-only
//! zarrs storage that answers `.zgroup`, `.zattrs` and `.zarray` from the
//! HDF5 objects and their attributes, and each chunk key with one hyperslab
//! read of the dataset (uncompressed, little-endian, strings as vlen-utf8).
//! Everything above the storage — element model, planner, kernels — reads an
//! h5ad exactly as it reads a zarr store, and only the rows a task needs
//! leave the file.
//!
//! The virtual chunks span whole rows (every dimension but the first at
//! full extent) and about 256 KiB, in multiples of the dataset's own HDF5
//! chunk rows, so a chunk read touches whole HDF5 chunks. They are small
//! because zarrs reads whole virtual chunks: a task whose span of a sparse
//! matrix's `data` ends inside one decodes (and, for gzip, inflates) all of
//! it, and so does the next task; with 4 MiB chunks that doubled the
//! inflating on gzip h5ad inputs (benches/H5AD_INPUT_RESULTS.md). The HDF5 library
//! serializes its calls (one lock per process); separate worker processes
//! read one file at once, each with its own handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::ArrayD;
use serde_json::{Map, Value, json};

use super::h5_records::{
    BoolByte, FieldColumn, FieldValuesRead, Records, read_field_column, read_records, utf8,
};
use super::structured::base64_zeros;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

mod decode;
mod deflate_chunks;
mod elem;

use decode::*;
use deflate_chunks::DeflateChunks;
pub(super) use elem::{Elem, FixedRead, LeBytes, NumberRead, with_fixed_size};

/// Target size of one virtual chunk (see the module documentation).
const CHUNK_TARGET_BYTES: u64 = 256 << 10;

/// Largest virtual chunk made by rounding up to whole HDF5 chunks.
const CHUNK_ROUNDING_CAP_BYTES: u64 = 64 << 20;

pub use super::hdf5_signature::is_hdf5;

/// What a dataset holds, as presented to zarr.
enum Content {
    /// Numbers, booleans or strings, read chunk by chunk.
    Values(Elem),
    /// A null dataspace (anndata's `None`): a 0-d boolean array with no
    /// chunk, as anndata stores `None` in zarr.
    Null,
    /// A compound dataset (record array), read whole when opened.
    Records(Records),
    /// One field of a compound dataset, read whole when opened: a column
    /// of a pre-0.7 data frame, or an entry of a pre-0.7 obsm / varm.
    Field(FieldColumn),
    /// A type anncat does not read: why, and the element size. The metadata
    /// still opens (as raw bytes), so the element is refused only if a task
    /// reads it.
    Unsupported(String, usize),
}

/// A dataset seen as a zarr array.
struct VirtualArray {
    ds: hdf5::Dataset,
    content: Content,
    shape: Vec<u64>,
    chunks: Vec<u64>,
    /// Gzip chunks inflated here rather than by HDF5, when they can be.
    deflate: Option<DeflateChunks>,
}

/// Virtual chunks of about [`CHUNK_TARGET_BYTES`] of whole rows (every
/// dimension but the first at full extent), in whole HDF5 chunks unless one
/// is far over the target.
fn virtual_chunks(ds: &hdf5::Dataset, shape: &[u64], elem_size: u64) -> Vec<u64> {
    if shape.is_empty() {
        return Vec::new();
    }
    let row: u64 = shape[1..]
        .iter()
        .fold(1u64, |a, &d| a.saturating_mul(d.max(1)))
        .saturating_mul(elem_size)
        .max(1);
    let unit = ds
        .chunk()
        .and_then(|c| c.first().copied())
        .unwrap_or(1)
        .max(1) as u64;
    let rows = (CHUNK_TARGET_BYTES / row).max(1);
    let rows = if unit.saturating_mul(row) <= CHUNK_ROUNDING_CAP_BYTES {
        (rows / unit).max(1) * unit
    } else {
        rows
    };
    let mut chunks = vec![rows.min(shape[0]).max(1)];
    chunks.extend(shape[1..].iter().map(|&d| d.max(1)));
    chunks
}

/// Numbers of a dataset (a selection, or all of a 0-d one), little-endian.
struct NumberSlice<'a> {
    ds: &'a hdf5::Dataset,
    selection: Option<Selection>,
    capacity: usize,
}

impl NumberRead for NumberSlice<'_> {
    type Out = Result<Vec<u8>, String>;

    fn read<T: LeBytes>(self) -> Self::Out {
        let a: ArrayD<T> = match self.selection {
            Some(s) => self.ds.as_reader().read_slice(s),
            None => self.ds.read_dyn::<T>(),
        }
        .map_err(|e| e.to_string())?;
        let mut out = Vec::with_capacity(self.capacity);
        for v in a.iter() {
            v.put(&mut out);
        }
        Ok(out)
    }
}

/// Values read for a chunk.
enum Values {
    /// Numbers, little-endian.
    Bytes(Vec<u8>),
    /// Strings.
    Strings(Vec<String>),
}

impl VirtualArray {
    fn new(ds: hdf5::Dataset) -> Result<VirtualArray, String> {
        let dtype = ds
            .dtype()
            .map_err(|e| format!("unreadable HDF5 type: {e}"))?;
        let desc = dtype
            .to_descriptor()
            .map_err(|e| format!("unreadable HDF5 type: {e}"))?;
        let null = ds.space().is_ok_and(|s| s.is_null());
        let content = match (Elem::of(&desc), &desc) {
            (Some(_), _) if null => Content::Null,
            (Some(elem), _) => Content::Values(elem),
            (None, TypeDescriptor::Compound(ct)) if !null => match read_records(&ds, ct) {
                Ok(r) => Content::Records(r),
                Err(why) => Content::Unsupported(why, dtype.size()),
            },
            (None, _) => Content::Unsupported(
                format!("HDF5 datasets of type {desc} are not supported in .h5ad inputs"),
                dtype.size(),
            ),
        };
        let shape: Vec<u64> = match content {
            Content::Null => Vec::new(),
            _ => ds.shape().iter().map(|&d| d as u64).collect(),
        };
        let chunks = match &content {
            Content::Values(elem) => virtual_chunks(&ds, &shape, elem.size()),
            Content::Unsupported(_, size) => virtual_chunks(&ds, &shape, *size as u64),
            // Read whole: one chunk.
            Content::Records(_) | Content::Field(_) => shape.iter().map(|&d| d.max(1)).collect(),
            Content::Null => Vec::new(),
        };
        let deflate = match content {
            Content::Values(elem) => DeflateChunks::of(&ds, elem, &shape),
            _ => None,
        };
        Ok(VirtualArray {
            ds,
            content,
            shape,
            chunks,
            deflate,
        })
    }

    /// The field `name` of the compound dataset `ds`, seen as its own
    /// array (`obs/n_genes` of a pre-0.7 `obs`); `None` if `ds` is not a
    /// compound dataset with that field.
    fn field(ds: hdf5::Dataset, name: &str) -> Result<Option<VirtualArray>, String> {
        let desc = ds
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(|e| format!("unreadable HDF5 type: {e}"))?;
        let TypeDescriptor::Compound(ct) = desc else {
            return Ok(None);
        };
        let Some(column) = read_field_column(&ds, &ct, name)? else {
            return Ok(None);
        };
        let mut shape: Vec<u64> = ds.shape().iter().map(|&d| d as u64).collect();
        shape.extend(&column.inner_shape);
        let chunks = shape.iter().map(|&d| d.max(1)).collect();
        Ok(Some(VirtualArray {
            ds,
            content: Content::Field(column),
            shape,
            chunks,
            deflate: None,
        }))
    }

    fn zarray(&self) -> Value {
        let (dtype, fill_value, filters) = match &self.content {
            Content::Values(elem) | Content::Field(FieldColumn { elem, .. }) => (
                json!(elem.zarr_dtype()),
                elem.fill_value(),
                if elem.is_string() {
                    json!([{"id": "vlen-utf8"}])
                } else {
                    Value::Null
                },
            ),
            Content::Null => (json!("|b1"), Value::Bool(false), Value::Null),
            Content::Records(r) => (
                r.dtype.clone(),
                json!(base64_zeros(r.record_size as u64)),
                Value::Null,
            ),
            // Raw bytes of the element size.
            Content::Unsupported(_, size) => (
                json!(format!("|V{size}")),
                json!(base64_zeros(*size as u64)),
                Value::Null,
            ),
        };
        json!({
            "zarr_format": 2,
            "shape": self.shape,
            "chunks": self.chunks,
            "dtype": dtype,
            "fill_value": fill_value,
            "order": "C",
            "compressor": null,
            "filters": filters,
            "dimension_separator": ".",
        })
    }

    /// The encoded bytes of the chunk at `index` (a full chunk: the part
    /// past the end of the dataset holds the fill value).
    fn chunk(&self, index: &[u64]) -> Result<Option<Vec<u8>>, String> {
        let elem = match &self.content {
            Content::Unsupported(why, _) => return Err(why.clone()),
            Content::Null => return Ok(None),
            _ if index.len() != self.shape.len().max(1) => return Ok(None),
            Content::Records(r) => {
                if index.iter().any(|&i| i != 0) {
                    return Ok(None);
                }
                let full: u64 = self.chunks.iter().product::<u64>().max(1);
                let mut bytes = r.bytes.clone();
                bytes.resize(full as usize * r.record_size, 0);
                return Ok(Some(bytes));
            }
            Content::Field(column) => {
                if index.iter().any(|&i| i != 0) {
                    return Ok(None);
                }
                let full: u64 = self.chunks.iter().product::<u64>().max(1);
                let values = match &column.values {
                    FieldValuesRead::Bytes(b) => Values::Bytes(b.clone()),
                    FieldValuesRead::Strings(s) => Values::Strings(s.clone()),
                };
                return Ok(Some(fill_chunk(column.elem, full, values)));
            }
            Content::Values(elem) => *elem,
        };
        let full: u64 = self
            .chunks
            .iter()
            .try_fold(1u64, |a, &c| a.checked_mul(c))
            .ok_or("chunk too large")?
            .max(1);
        let mut ranges = Vec::with_capacity(self.shape.len());
        for (d, (&i, &c)) in index.iter().zip(&self.chunks).enumerate() {
            let Some(start) = i.checked_mul(c) else {
                return Ok(None);
            };
            if start >= self.shape[d] && !(self.shape[d] == 0 && i == 0) {
                return Ok(None);
            }
            ranges.push(start as usize..start.saturating_add(c).min(self.shape[d]) as usize);
        }
        let count: usize = ranges.iter().map(|r| r.len()).product();
        let scalar = self.shape.is_empty();
        let values = if count == 0 && !scalar {
            if elem.is_string() {
                Values::Strings(Vec::new())
            } else {
                Values::Bytes(Vec::new())
            }
        } else if let Some(bytes) = match &self.deflate {
            Some(d) if !scalar => d.read(&self.ds, ranges[0].start as u64..ranges[0].end as u64)?,
            _ => None,
        } {
            Values::Bytes(bytes)
        } else {
            // A 0-d dataset is read whole.
            let selection = (!scalar).then(|| {
                Selection::from(Hyperslab::from(
                    ranges
                        .into_iter()
                        .map(SliceOrIndex::from)
                        .collect::<Vec<_>>(),
                ))
            });
            let capacity = full as usize * elem.size() as usize;
            match elem.read_numbers(NumberSlice {
                ds: &self.ds,
                selection: selection.clone(),
                capacity,
            }) {
                Some(bytes) => Values::Bytes(bytes?),
                None => Values::Strings(read_strings(&self.ds, elem, selection)?),
            }
        };
        Ok(Some(fill_chunk(elem, full, values)))
    }
}

/// A read-only zarrs storage over one `.h5ad` file.
pub struct H5Store {
    path: PathBuf,
    file: hdf5::File,
    arrays: Mutex<HashMap<String, Arc<VirtualArray>>>,
    /// What each node asked about is (`None`: no object of that name),
    /// so that asking a dataset for its group (or a group for its
    /// dataset), which HDF5 answers with a costly error, is never done.
    kinds: Mutex<HashMap<String, Option<hdf5::LocationType>>>,
    /// A pre-0.7 file (no encoding-type on the root, `obs` a compound
    /// dataset): a one-element array of fixed-length byte strings (but
    /// `uns/<column>_categories`) reads as a 0-d string, as anndata reads
    /// such a file, which stored `str` values so.
    singleton_scalars: bool,
}

impl std::fmt::Debug for H5Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl H5Store {
    /// Opens `path` read-only.
    pub fn open(path: &Path) -> Result<H5Store, String> {
        let file = hdf5::File::open(path).map_err(|e| {
            format!(
                "not a readable HDF5 file (truncated or corrupt?): {}",
                crate::error::one_line(&e.to_string())
            )
        })?;
        let mut store = H5Store {
            path: path.to_path_buf(),
            file,
            arrays: Mutex::new(HashMap::new()),
            kinds: Mutex::new(HashMap::new()),
            singleton_scalars: false,
        };
        let root_encoded = store
            .file
            .attr_names()
            .is_ok_and(|names| names.iter().any(|n| n == "encoding-type"));
        store.singleton_scalars = !root_encoded && store.compound_fields("obs").is_some();
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn group(&self, node: &str) -> Option<hdf5::Group> {
        if node.is_empty() {
            self.file.group("/").ok()
        } else if self.kind(node) == Some(hdf5::LocationType::Group) {
            self.file.group(node).ok()
        } else {
            None
        }
    }

    /// What `node` is: a group, a dataset (or a named datatype), or `None`
    /// when no object has that name (a field of a compound dataset, say).
    fn kind(&self, node: &str) -> Option<hdf5::LocationType> {
        if node.is_empty() {
            return Some(hdf5::LocationType::Group);
        }
        if let Ok(kinds) = self.kinds.lock()
            && let Some(&kind) = kinds.get(node)
        {
            return kind;
        }
        let kind = self.file.loc_type_by_name(node).ok();
        if let Ok(mut kinds) = self.kinds.lock() {
            kinds.insert(node.to_string(), kind);
        }
        kind
    }

    fn array(&self, node: &str) -> Result<Option<Arc<VirtualArray>>, String> {
        if node.is_empty() {
            return Ok(None);
        }
        if let Some(a) = self
            .arrays
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .get(node)
        {
            return Ok(Some(a.clone()));
        }
        if self.kind(node) == Some(hdf5::LocationType::Group) {
            return Ok(None);
        }
        let a = match self.file.dataset(node) {
            Ok(ds) => {
                let mut a = VirtualArray::new(ds)?;
                let singleton = a.shape == [1]
                    && matches!(
                        a.content,
                        Content::Values(Elem::FixedStr { ascii: true, .. })
                    );
                // Categories stay a list, as anndata's `_clean_uns` makes them.
                if singleton && !node.ends_with("_categories") && self.singleton_scalars {
                    a.shape = Vec::new();
                    a.chunks = Vec::new();
                }
                Arc::new(a)
            }
            // A field of a compound dataset (`obs/n_genes` of a pre-0.7
            // `obs` record array), seen as an array of its own.
            Err(_) => {
                let Some((parent, field)) = node.rsplit_once('/') else {
                    return Ok(None);
                };
                let Ok(ds) = self.file.dataset(parent) else {
                    return Ok(None);
                };
                match VirtualArray::field(ds, field)? {
                    Some(a) => Arc::new(a),
                    None => return Ok(None),
                }
            }
        };
        self.arrays
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .insert(node.to_string(), a.clone());
        Ok(Some(a))
    }

    /// Why the dataset at `node` cannot be read, if it cannot (a type
    /// anncat does not read from HDF5).
    pub fn unsupported(&self, node: &str) -> Option<String> {
        self.array(node)
            .ok()
            .flatten()
            .and_then(|a| match &a.content {
                Content::Unsupported(why, _) => Some(why.clone()),
                _ => None,
            })
    }

    /// The field names of the compound dataset at `node`, in record order;
    /// `None` if `node` is not a compound dataset.
    pub fn compound_fields(&self, node: &str) -> Option<Vec<String>> {
        let desc = self
            .file
            .dataset(node)
            .ok()?
            .dtype()
            .ok()?
            .to_descriptor()
            .ok()?;
        let TypeDescriptor::Compound(mut ct) = desc else {
            return None;
        };
        ct.fields.sort_by_key(|f| f.index);
        Some(ct.fields.into_iter().map(|f| f.name).collect())
    }

    /// How the dataset at `node` is stored: its HDF5 chunk shape (`None`:
    /// contiguous) and filters (e.g. `gzip(4)`, `shuffle`), or `None` if it
    /// is not a dataset.
    pub fn storage_layout(&self, node: &str) -> Option<(Option<Vec<u64>>, Vec<String>)> {
        use hdf5::filters::Filter;
        let ds = self.file.dataset(node).ok()?;
        let chunks = ds.chunk().map(|c| c.iter().map(|&d| d as u64).collect());
        let filters = ds
            .filters()
            .iter()
            .map(|f| match f {
                Filter::Deflate(level) => format!("gzip({level})"),
                Filter::Shuffle => "shuffle".into(),
                Filter::Fletcher32 => "fletcher32".into(),
                Filter::LZF => "lzf".into(),
                Filter::NBit => "nbit".into(),
                Filter::SZip(..) => "szip".into(),
                Filter::ScaleOffset(..) => "scaleoffset".into(),
                Filter::User(id, _) => format!("filter {id}"),
            })
            .collect();
        Some((chunks, filters))
    }

    /// Bytes the dataset at `node` takes in the file (0 for groups).
    pub fn stored_bytes(&self, node: &str) -> u64 {
        self.file.dataset(node).map_or(0, |d| d.storage_size())
    }

    /// Names of the groups and datasets under the group at `node`, sorted.
    pub fn children(&self, node: &str) -> Result<Vec<String>, String> {
        let g = self
            .group(node)
            .ok_or_else(|| "not an HDF5 group".to_string())?;
        let mut names = g.member_names().map_err(|e| e.to_string())?;
        names.sort();
        Ok(names)
    }

    /// The value of a virtual zarr key.
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let (node, leaf) = match key.rsplit_once('/') {
            Some((n, l)) => (n, l),
            None => ("", key),
        };
        let doc = match leaf {
            ".zgroup" => self.group(node).map(|_| json!({"zarr_format": 2})),
            ".zarray" => self.array(node)?.map(|a| a.zarray()),
            ".zattrs" => {
                let loc: Option<hdf5::Location> = match self.kind(node) {
                    Some(hdf5::LocationType::Group) => self.group(node).map(|g| (*g).clone()),
                    // The dataset the array opened (and keeps), else its own.
                    Some(hdf5::LocationType::Dataset) => match self.array(node) {
                        Ok(Some(a)) => Some((**a.ds).clone()),
                        _ => self.file.dataset(node).ok().map(|d| (**d).clone()),
                    },
                    _ => None,
                };
                loc.map(|l| {
                    let mut attrs = Map::new();
                    for name in l.attr_names().unwrap_or_default() {
                        if let Some(v) = l.attr(&name).ok().as_ref().and_then(attr_json) {
                            attrs.insert(name, v);
                        }
                    }
                    Value::Object(attrs)
                })
            }
            chunk => {
                let Some(a) = self.array(node)? else {
                    return Ok(None);
                };
                let index: Option<Vec<u64>> = chunk.split('.').map(|p| p.parse().ok()).collect();
                let Some(index) = index else {
                    return Ok(None);
                };
                return a.chunk(&index);
            }
        };
        Ok(doc.map(|d| d.to_string().into_bytes()))
    }
}

impl ReadableStorageTraits for H5Store {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        Ok(self
            .value(key.as_str())
            .map_err(StorageError::Other)?
            .map(|value| super::backend::byte_ranges_of(value, byte_ranges)))
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        Ok(self
            .value(key.as_str())
            .map_err(StorageError::Other)?
            .map(|v| v.len() as u64))
    }

    fn supports_get_partial(&self) -> bool {
        false
    }
}

#[cfg(test)]
#[path = "h5_tests.rs"]
mod tests;
