//! HDF5 compound datasets (anndata's `rec-array`, e.g. scanpy's
//! `rank_genes_groups` in uns) presented as zarr v2 structured arrays, the
//! way anndata writes them to zarr: numeric fields as they are, string
//! fields as fixed-width `<U{n}` (UTF-32), `n` the longest value.
//!
//! Each field is read on its own, through a one-member compound memory type
//! named like the field (HDF5 converts a compound by member names). The
//! member's name is only known at run time, so the memory types below take
//! it from a thread-local set just before the read.

#![allow(unsafe_code)] // H5Type impls: each type's layout is exactly its descriptor.

use std::cell::RefCell;

use hdf5::types::{CompoundField, CompoundType, FixedAscii, H5Type, TypeDescriptor, VarLenUnicode};
use serde_json::{Value, json};

use super::h5::{Elem, FixedRead, LeBytes, NumberRead, with_fixed_size};

thread_local! {
    /// The field the next one-member read names.
    static FIELD: RefCell<String> = const { RefCell::new(String::new()) };
}

fn one_member(ty: TypeDescriptor, size: usize) -> TypeDescriptor {
    let name = FIELD.with(|f| f.borrow().clone());
    TypeDescriptor::Compound(CompoundType {
        fields: vec![CompoundField {
            name,
            ty,
            offset: 0,
            index: 0,
        }],
        size,
    })
}

/// A record holding only the named field, of type `T`.
#[repr(transparent)]
struct Field<T>(T);

// SAFETY: `Field<T>` is `T` (repr(transparent)), and the descriptor is a
// compound of exactly one `T` member at offset 0 with `T`'s size.
unsafe impl<T: H5Type> H5Type for Field<T> {
    fn type_descriptor() -> TypeDescriptor {
        one_member(T::type_descriptor(), std::mem::size_of::<T>())
    }
}

/// A boolean (HDF5's FALSE/TRUE enum) read as its byte, so a value other
/// than 0 or 1 in a file never becomes a Rust `bool`.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub(crate) struct BoolByte(pub u8);

// SAFETY: one byte, the size and layout of HDF5's boolean enum; any byte
// value is a valid `u8`.
unsafe impl H5Type for BoolByte {
    fn type_descriptor() -> TypeDescriptor {
        TypeDescriptor::Boolean
    }
}

/// Text of bytes read from HDF5, which does not check encodings.
pub(crate) fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        format!(
            "a string is not valid UTF-8: {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// One field's values.
enum Column {
    /// Little-endian bytes, `size` per value, and the zarr dtype.
    Bytes(Vec<u8>, usize, &'static str),
    /// Strings.
    Strings(Vec<String>),
}

/// The named field of every record, as `T`.
fn read_field<T: H5Type>(ds: &hdf5::Dataset, name: &str) -> Result<Vec<Field<T>>, String> {
    FIELD.with(|f| *f.borrow_mut() = name.to_string());
    ds.read_raw().map_err(|e| format!("field {name}: {e}"))
}

/// The named field's strings, read as `T`.
fn field_strings<T: H5Type>(
    ds: &hdf5::Dataset,
    name: &str,
    bytes: impl Fn(&T) -> &[u8],
) -> Result<Column, String> {
    let strings: Result<Vec<String>, String> = read_field::<T>(ds, name)?
        .iter()
        .map(|s| utf8(bytes(&s.0)))
        .collect();
    Ok(Column::Strings(strings?))
}

/// A numeric field, little-endian.
struct NumberField<'a> {
    ds: &'a hdf5::Dataset,
    name: &'a str,
}

impl NumberRead for NumberField<'_> {
    type Out = Result<Vec<u8>, String>;

    fn read<T: LeBytes>(self) -> Self::Out {
        let mut out = Vec::new();
        for v in read_field::<T>(self.ds, self.name)? {
            v.0.put(&mut out);
        }
        Ok(out)
    }
}

/// A fixed-length string field, read at one of the sizes anncat reads.
struct FixedField<'a> {
    ds: &'a hdf5::Dataset,
    name: &'a str,
}

impl FixedRead for FixedField<'_> {
    type Out = Result<Column, String>;

    fn read<const N: usize>(self) -> Self::Out {
        field_strings::<FixedAscii<N>>(self.ds, self.name, |s| s.as_bytes())
    }
}

fn read_column(ds: &hdf5::Dataset, field: &CompoundField) -> Result<Column, String> {
    let name = field.name.as_str();
    let ty = &field.ty;
    let elem =
        Elem::of(ty).ok_or_else(|| format!("record field {name} of type {ty} is not supported"))?;
    if let Some(bytes) = elem.read_numbers(NumberField { ds, name }) {
        return Ok(Column::Bytes(
            bytes?,
            elem.size() as usize,
            elem.zarr_dtype(),
        ));
    }
    match elem {
        Elem::FixedStr { len, .. } => {
            with_fixed_size(len, FixedField { ds, name }).unwrap_or_else(|| {
                Err(format!(
                    "field {name}: fixed-length strings of {len} bytes are longer than anncat reads"
                ))
            })
        }
        // Variable-length, ASCII or UTF-8: both read as UTF-8.
        _ => field_strings::<VarLenUnicode>(ds, name, |s| s.as_bytes()),
    }
}

/// A compound dataset read whole: its zarr v2 structured dtype, record
/// size, and the packed records.
pub struct Records {
    /// The zarr v2 `dtype` (a list of `[name, dtype]`).
    pub dtype: Value,
    /// Bytes per record.
    pub record_size: usize,
    /// Every record, packed, little-endian.
    pub bytes: Vec<u8>,
}

/// Reads the compound dataset `ds` of type `ct` whole.
pub fn read_records(ds: &hdf5::Dataset, ct: &CompoundType) -> Result<Records, String> {
    let n = ds.size();
    let mut fields = ct.fields.clone();
    fields.sort_by_key(|f| f.index);
    let mut columns = Vec::with_capacity(fields.len());
    let mut dtype = Vec::with_capacity(fields.len());
    for f in &fields {
        let column = read_column(ds, f)?;
        let (spelled, size) = match &column {
            Column::Bytes(_, size, dt) => ((*dt).to_string(), *size),
            Column::Strings(v) => {
                let chars = v
                    .iter()
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
                    .max(1);
                (format!("<U{chars}"), chars * 4)
            }
        };
        dtype.push(json!([f.name, spelled]));
        columns.push((column, size));
    }
    let record_size: usize = columns.iter().map(|(_, s)| s).sum();
    let mut bytes = Vec::with_capacity(record_size * n);
    for i in 0..n {
        for (column, size) in &columns {
            match column {
                Column::Bytes(b, s, _) => bytes.extend_from_slice(&b[i * s..(i + 1) * s]),
                Column::Strings(v) => {
                    let start = bytes.len();
                    for c in v[i].chars() {
                        bytes.extend_from_slice(&(c as u32).to_le_bytes());
                    }
                    bytes.resize(start + size, 0);
                }
            }
        }
    }
    Ok(Records {
        dtype: Value::Array(dtype),
        record_size,
        bytes,
    })
}
