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

use hdf5::types::{
    CompoundField, CompoundType, FixedAscii, FloatSize, H5Type, IntSize, TypeDescriptor,
    VarLenUnicode,
};
use serde_json::{Value, json};

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

/// Sizes fixed-length strings are read at (HDF5 converts a string to a
/// longer fixed length); a dataset's strings take the smallest that fits.
pub(crate) const FIXED_STRING_BUCKETS: [usize; 13] = [
    8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536,
];

/// The size fixed-length strings of `len` bytes are read at.
pub(crate) fn fixed_bucket(len: usize) -> Option<usize> {
    FIXED_STRING_BUCKETS.iter().copied().find(|&b| b >= len)
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

fn read_field<T: H5Type + Copy>(ds: &hdf5::Dataset, name: &str) -> Result<Vec<T>, String> {
    FIELD.with(|f| *f.borrow_mut() = name.to_string());
    let values: Vec<Field<T>> = ds.read_raw().map_err(|e| format!("field {name}: {e}"))?;
    Ok(values.into_iter().map(|v| v.0).collect())
}

fn numbers<T: H5Type + Copy>(
    ds: &hdf5::Dataset,
    name: &str,
    dtype: &'static str,
    le: impl Fn(T) -> Vec<u8>,
) -> Result<Column, String> {
    let v = read_field::<T>(ds, name)?;
    let size = std::mem::size_of::<T>();
    Ok(Column::Bytes(
        v.into_iter().flat_map(le).collect(),
        size,
        dtype,
    ))
}

fn read_column(ds: &hdf5::Dataset, field: &CompoundField) -> Result<Column, String> {
    let name = field.name.as_str();
    match &field.ty {
        TypeDescriptor::Integer(IntSize::U1) => {
            numbers::<i8>(ds, name, "|i1", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Integer(IntSize::U2) => {
            numbers::<i16>(ds, name, "<i2", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Integer(IntSize::U4) => {
            numbers::<i32>(ds, name, "<i4", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Integer(IntSize::U8) => {
            numbers::<i64>(ds, name, "<i8", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Unsigned(IntSize::U1) => {
            numbers::<u8>(ds, name, "|u1", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Unsigned(IntSize::U2) => {
            numbers::<u16>(ds, name, "<u2", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Unsigned(IntSize::U4) => {
            numbers::<u32>(ds, name, "<u4", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Unsigned(IntSize::U8) => {
            numbers::<u64>(ds, name, "<u8", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Float(FloatSize::U4) => {
            numbers::<f32>(ds, name, "<f4", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Float(FloatSize::U8) => {
            numbers::<f64>(ds, name, "<f8", |v| v.to_le_bytes().to_vec())
        }
        TypeDescriptor::Boolean => {
            numbers::<BoolByte>(ds, name, "|b1", |v| vec![u8::from(v.0 != 0)])
        }
        TypeDescriptor::VarLenUnicode | TypeDescriptor::VarLenAscii => {
            FIELD.with(|f| *f.borrow_mut() = name.to_string());
            let v: Vec<Field<VarLenUnicode>> =
                ds.read_raw().map_err(|e| format!("field {name}: {e}"))?;
            let strings: Result<Vec<String>, String> =
                v.iter().map(|s| utf8(s.0.as_bytes())).collect();
            Ok(Column::Strings(strings?))
        }
        TypeDescriptor::FixedAscii(len) | TypeDescriptor::FixedUnicode(len) => {
            fixed_strings(ds, name, *len)
        }
        other => Err(format!(
            "record field {name} of type {other} is not supported"
        )),
    }
}

/// A fixed-length string field, read at its bucket size.
fn fixed_strings(ds: &hdf5::Dataset, name: &str, len: usize) -> Result<Column, String> {
    fn read<T: H5Type>(
        ds: &hdf5::Dataset,
        name: &str,
        bytes: impl Fn(&T) -> &[u8],
    ) -> Result<Column, String> {
        FIELD.with(|f| *f.borrow_mut() = name.to_string());
        let v: Vec<Field<T>> = ds.read_raw().map_err(|e| format!("field {name}: {e}"))?;
        let strings: Result<Vec<String>, String> = v.iter().map(|s| utf8(bytes(&s.0))).collect();
        Ok(Column::Strings(strings?))
    }
    macro_rules! buckets {
        ($($n:literal),*) => {
            match len {
                $(l if l <= $n => read::<FixedAscii<$n>>(ds, name, |s| s.as_bytes()),)*
                l => Err(format!("field {name}: fixed-length strings of {l} bytes are longer than anncat reads")),
            }
        };
    }
    buckets!(
        8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536
    )
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
