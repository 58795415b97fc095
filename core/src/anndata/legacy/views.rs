//! Arrays of an old zarr v2 store that zarrs cannot read as anndata does,
//! seen as arrays it can ([`Backend::Derived`]):
//!
//! - [`FieldView`]: one field of a structured (record) array, as its own
//!   array: numbers as they are, fixed-width byte or UTF-32 strings as
//!   variable-length UTF-8 (anndata 0.6's obs and var);
//! - [`Json2View`]: an object array encoded with numcodecs' `json2` codec
//!   (anndata 0.6's uns strings and categories), as variable-length UTF-8.
//!
//! Both are uncompressed on the way out, one chunk per stored chunk.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Value, json};
use zarrs::array::codec::{BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode};
use zarrs::array::{Array, ArrayBytes, BytesRepresentation, BytesToBytesCodecTraits, CodecOptions};
use zarrs::storage::{ReadableStorageTraits, StorageError, StoreKey};

use crate::anndata::backend::{Backend, DerivedChunks};
use crate::anndata::structured::Field;

/// The zarr v2 metadata of a 1-d (or `n x k`) array of `dtype` (`"|O"`:
/// variable-length UTF-8) with the given shape and chunks, uncompressed.
pub(crate) fn plain_v2_doc(dtype: &str, shape: &[u64], chunks: &[u64]) -> Value {
    let text = dtype == "|O";
    json!({
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "fill_value": if text { json!("") } else { json!(0) },
        "order": "C",
        "compressor": null,
        "filters": if text { json!([{"id": "vlen-utf8"}]) } else { Value::Null },
        "dimension_separator": ".",
    })
}

/// Strings as a vlen-utf8 chunk of `full` entries (padded with "").
fn vlen_utf8(strings: &[String], full: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + strings.iter().map(|s| s.len() + 4).sum::<usize>());
    out.extend_from_slice(&(full as u32).to_le_bytes());
    for s in strings.iter().take(full) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    for _ in strings.len().min(full)..full {
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out
}

fn other(e: impl std::fmt::Display) -> StorageError {
    StorageError::Other(e.to_string())
}

/// One field of a structured array, read chunk by chunk from its records.
pub(crate) struct FieldView {
    /// The structured array, opened as raw bits of its record size.
    pub parent: Array<Backend>,
    /// The key prefix this view answers (`obs/index/`).
    pub prefix: String,
    /// Byte offset of the field in a record.
    pub offset: usize,
    /// Bytes per record.
    pub record: usize,
    /// The field's type.
    pub field: Field,
}

impl std::fmt::Debug for FieldView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldView")
            .field("prefix", &self.prefix)
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

impl DerivedChunks for FieldView {
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(index) = key.strip_prefix(self.prefix.as_str()) else {
            return Ok(None);
        };
        let Ok(index) = index.parse::<u64>() else {
            return Ok(None);
        };
        let chunk = self
            .parent
            .retrieve_chunk::<ArrayBytes<'_>>(&[index])
            .map_err(other)?;
        let ArrayBytes::Fixed(raw) = chunk else {
            return Err(other("a record array chunk is not fixed-size"));
        };
        let size = self.field.size() as usize;
        let records = raw
            .chunks_exact(self.record)
            .map(|r| &r[self.offset..self.offset + size]);
        Ok(Some(match &self.field {
            Field::Numeric(_) => records.flatten().copied().collect(),
            Field::Bytes(_) => {
                let strings: Vec<String> = records
                    .map(|b| {
                        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                        String::from_utf8_lossy(&b[..end]).into_owned()
                    })
                    .collect();
                vlen_utf8(&strings, strings.len())
            }
            Field::Utf32(_) => {
                let strings: Vec<String> = records
                    .map(|b| {
                        b.chunks_exact(4)
                            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .take_while(|&c| c != 0)
                            .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                            .collect()
                    })
                    .collect();
                vlen_utf8(&strings, strings.len())
            }
        }))
    }
}

/// An object array of numcodecs' `json2` codec, read as strings.
#[derive(Debug)]
pub(crate) struct Json2View {
    /// The store holding it.
    pub inner: Arc<Backend>,
    /// The key prefix this view answers (the array's path and `/`).
    pub prefix: String,
    /// The prefix its chunks are stored under.
    pub stored_prefix: String,
    /// The array's `compressor` (none or blosc).
    pub compressor: Value,
    /// Entries in a chunk.
    pub chunk_len: usize,
}

impl Json2View {
    /// The chunk's text, decompressed.
    fn decompress<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, [u8]>, StorageError> {
        match self.compressor["id"].as_str() {
            None => Ok(Cow::Borrowed(bytes)),
            Some("blosc") => {
                // Decoding reads everything it needs from the blosc header.
                let codec = BloscCodec::new(
                    BloscCompressor::LZ4,
                    BloscCompressionLevel::try_from(5u8).map_err(other)?,
                    None,
                    BloscShuffleMode::NoShuffle,
                    None,
                )
                .map_err(other)?;
                codec
                    .decode(
                        Cow::Owned(bytes.to_vec()),
                        &BytesRepresentation::UnboundedSize,
                        &CodecOptions::default(),
                    )
                    .map(|b| Cow::Owned(b.into_owned()))
                    .map_err(other)
            }
            Some(id) => Err(other(format!(
                "json2 object arrays compressed with {id} are not supported"
            ))),
        }
    }
}

impl DerivedChunks for Json2View {
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Ok(None);
        };
        let stored = StoreKey::new(format!("{}{rest}", self.stored_prefix)).map_err(other)?;
        let Some(bytes) = self.inner.get(&stored)? else {
            return Ok(None);
        };
        let text = self.decompress(&bytes)?;
        // numcodecs' JSON codec: the items, then the dtype and the shape.
        let items: Vec<Value> = serde_json::from_slice(&text).map_err(other)?;
        let values = &items[..items.len().saturating_sub(2)];
        let strings = values
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Null => Ok(String::new()),
                other_value => Err(other(format!(
                    "a json2 object array holds {other_value}, not a string"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(vlen_utf8(&strings, self.chunk_len)))
    }
}
