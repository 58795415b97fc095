//! `.h5ad` (HDF5) files read as if they were zarr v2 stores: a read-only
//! zarrs storage that answers `.zgroup`, `.zattrs` and `.zarray` from the
//! HDF5 objects and their attributes, and each chunk key with one hyperslab
//! read of the dataset (uncompressed, little-endian, strings as vlen-utf8).
//! Everything above the storage — element model, planner, kernels — reads an
//! h5ad exactly as it reads a zarr store, and only the rows a task needs
//! leave the file.
//!
//! The virtual chunks span whole rows (every dimension but the first at
//! full extent) and a few MiB, in multiples of the dataset's own HDF5 chunk
//! rows, so a chunk read touches whole HDF5 chunks. The HDF5 library
//! serializes its calls (one lock per process); separate worker processes
//! read one file at once, each with its own handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hdf5::types::{
    FixedAscii, FixedUnicode, FloatSize, H5Type, IntSize, TypeDescriptor, VarLenAscii,
    VarLenUnicode,
};
use hdf5::{Hyperslab, Selection, SliceOrIndex};
use ndarray::ArrayD;
use serde_json::{Map, Value, json};

use super::h5_records::{BoolByte, Records, read_records, utf8};
use super::structured::base64_zeros;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{Bytes, MaybeBytesIterator, ReadableStorageTraits, StorageError, StoreKey};

mod decode;

use decode::*;

/// Target size of one virtual chunk.
const CHUNK_TARGET_BYTES: u64 = 4 << 20;

/// Largest virtual chunk made by rounding up to whole HDF5 chunks.
const CHUNK_ROUNDING_CAP_BYTES: u64 = 64 << 20;

/// Bytes a string element is assumed to take when sizing chunks.
const STRING_GUESS_BYTES: u64 = 32;

pub use super::hdf5_signature::is_hdf5;

/// How the elements of a dataset are read and presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Elem {
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F32,
    F64,
    Bool,
    /// Variable-length strings (UTF-8 or ASCII).
    VarStr {
        ascii: bool,
    },
    /// Fixed-length strings of this many bytes.
    FixedStr {
        ascii: bool,
        len: usize,
    },
}

impl Elem {
    pub(super) fn of(desc: &TypeDescriptor) -> Option<Elem> {
        Some(match desc {
            TypeDescriptor::Integer(s) => match s {
                IntSize::U1 => Elem::I8,
                IntSize::U2 => Elem::I16,
                IntSize::U4 => Elem::I32,
                IntSize::U8 => Elem::I64,
            },
            TypeDescriptor::Unsigned(s) => match s {
                IntSize::U1 => Elem::U8,
                IntSize::U2 => Elem::U16,
                IntSize::U4 => Elem::U32,
                IntSize::U8 => Elem::U64,
            },
            TypeDescriptor::Float(FloatSize::U4) => Elem::F32,
            TypeDescriptor::Float(FloatSize::U8) => Elem::F64,
            TypeDescriptor::Boolean => Elem::Bool,
            TypeDescriptor::VarLenUnicode => Elem::VarStr { ascii: false },
            TypeDescriptor::VarLenAscii => Elem::VarStr { ascii: true },
            TypeDescriptor::FixedAscii(n) => Elem::FixedStr {
                ascii: true,
                len: *n,
            },
            TypeDescriptor::FixedUnicode(n) => Elem::FixedStr {
                ascii: false,
                len: *n,
            },
            _ => return None,
        })
    }

    /// The zarr v2 dtype string.
    pub(super) fn zarr_dtype(self) -> &'static str {
        match self {
            Elem::I8 => "|i1",
            Elem::I16 => "<i2",
            Elem::I32 => "<i4",
            Elem::I64 => "<i8",
            Elem::U8 => "|u1",
            Elem::U16 => "<u2",
            Elem::U32 => "<u4",
            Elem::U64 => "<u8",
            Elem::F32 => "<f4",
            Elem::F64 => "<f8",
            Elem::Bool => "|b1",
            Elem::VarStr { .. } | Elem::FixedStr { .. } => "|O",
        }
    }

    /// Bytes per element in a decoded chunk (strings: a guess for sizing).
    pub(super) fn size(self) -> u64 {
        match self {
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
            Elem::I16 | Elem::U16 => 2,
            Elem::I32 | Elem::U32 | Elem::F32 => 4,
            Elem::I64 | Elem::U64 | Elem::F64 => 8,
            Elem::VarStr { .. } => STRING_GUESS_BYTES,
            // Read at the next size anncat reads: that is what a value takes.
            Elem::FixedStr { len, .. } => with_fixed_size(len, Size).unwrap_or(len) as u64,
        }
    }

    fn is_string(self) -> bool {
        matches!(self, Elem::VarStr { .. } | Elem::FixedStr { .. })
    }

    fn fill_value(self) -> Value {
        match self {
            Elem::Bool => Value::Bool(false),
            Elem::VarStr { .. } | Elem::FixedStr { .. } => Value::String(String::new()),
            Elem::F32 | Elem::F64 => json!(0.0),
            _ => json!(0),
        }
    }

    /// Runs `r` with the Rust type of a number or boolean element; `None`
    /// for strings.
    pub(super) fn read_numbers<R: NumberRead>(self, r: R) -> Option<R::Out> {
        Some(match self {
            Elem::I8 => r.read::<i8>(),
            Elem::I16 => r.read::<i16>(),
            Elem::I32 => r.read::<i32>(),
            Elem::I64 => r.read::<i64>(),
            Elem::U8 => r.read::<u8>(),
            Elem::U16 => r.read::<u16>(),
            Elem::U32 => r.read::<u32>(),
            Elem::U64 => r.read::<u64>(),
            Elem::F32 => r.read::<f32>(),
            Elem::F64 => r.read::<f64>(),
            // Through a byte: a file value other than 0 or 1 must not
            // become a Rust bool.
            Elem::Bool => r.read::<BoolByte>(),
            Elem::VarStr { .. } | Elem::FixedStr { .. } => return None,
        })
    }
}

/// A number (or boolean) as read from HDF5 and stored in a zarr chunk.
pub(super) trait LeBytes: H5Type + Copy {
    /// Appends the little-endian bytes of `self` (a boolean: 0 or 1).
    fn put(self, out: &mut Vec<u8>);
}

macro_rules! le_bytes {
    ($($t:ty),*) => {
        $(impl LeBytes for $t {
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        })*
    };
}

le_bytes!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl LeBytes for BoolByte {
    fn put(self, out: &mut Vec<u8>) {
        out.push(u8::from(self.0 != 0));
    }
}

/// A read generic over the element type (see [`Elem::read_numbers`]).
pub(super) trait NumberRead {
    /// What the read gives.
    type Out;
    /// Reads elements as `T`.
    fn read<T: LeBytes>(self) -> Self::Out;
}

/// A read generic over the size of fixed-length strings, which HDF5
/// converts to any longer fixed length (see [`with_fixed_size`]).
pub(super) trait FixedRead {
    /// What the read gives.
    type Out;
    /// Reads strings as `N` bytes each.
    fn read<const N: usize>(self) -> Self::Out;
}

/// Runs `r` with the smallest size anncat reads fixed-length strings of
/// `len` bytes at; `None` when they are longer than all of them.
pub(super) fn with_fixed_size<R: FixedRead>(len: usize, r: R) -> Option<R::Out> {
    macro_rules! sizes {
        ($($n:literal),*) => {
            $(if len <= $n {
                return Some(r.read::<$n>());
            })*
        };
    }
    sizes!(
        8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536
    );
    None
}

/// The size itself.
struct Size;

impl FixedRead for Size {
    type Out = usize;

    fn read<const N: usize>(self) -> usize {
        N
    }
}

/// What a dataset holds, as presented to zarr.
enum Content {
    /// Numbers, booleans or strings, read chunk by chunk.
    Values(Elem),
    /// A null dataspace (anndata's `None`): a 0-d boolean array with no
    /// chunk, as anndata stores `None` in zarr.
    Null,
    /// A compound dataset (record array), read whole when opened.
    Records(Records),
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
            Content::Records(_) => shape.iter().map(|&d| d.max(1)).collect(),
            Content::Null => Vec::new(),
        };
        Ok(VirtualArray {
            ds,
            content,
            shape,
            chunks,
        })
    }

    fn zarray(&self) -> Value {
        let (dtype, fill_value, filters) = match &self.content {
            Content::Values(elem) => (
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
        Ok(H5Store {
            path: path.to_path_buf(),
            file,
            arrays: Mutex::new(HashMap::new()),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn group(&self, node: &str) -> Option<hdf5::Group> {
        if node.is_empty() {
            self.file.group("/").ok()
        } else {
            self.file.group(node).ok()
        }
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
        let Ok(ds) = self.file.dataset(node) else {
            return Ok(None);
        };
        let a = Arc::new(VirtualArray::new(ds)?);
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
                let loc: Option<hdf5::Location> = match self.group(node) {
                    Some(g) => Some((*g).clone()),
                    None => self.file.dataset(node).ok().map(|d| (**d).clone()),
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
        let Some(value) = self.value(key.as_str()).map_err(StorageError::Other)? else {
            return Ok(None);
        };
        let value = Bytes::from(value);
        let len = value.len() as u64;
        let parts: Vec<Result<Bytes, StorageError>> = byte_ranges
            .map(|r| Ok(value.slice(r.to_range_usize(len))))
            .collect();
        Ok(Some(Box::new(parts.into_iter())))
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
