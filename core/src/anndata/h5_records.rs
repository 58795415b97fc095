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

use super::dtype::DType;
use super::h5::{Elem, FixedRead, LeBytes, NumberRead, with_fixed_size};
use super::structured::{Field as StructField, Structured};

thread_local! {
    /// The field the next one-member read names.
    static FIELD: RefCell<String> = const { RefCell::new(String::new()) };
    /// The element count of the sub-array field the next [`SubArray`]
    /// read names.
    static COUNT: RefCell<usize> = const { RefCell::new(1) };
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

/// One element of a sub-array field (`('X_pca', '<f4', (50,))`): the
/// memory type is a record holding only that field, as an array of the
/// count set in [`COUNT`], so one record fills that many `SubArray<T>`s.
#[repr(transparent)]
#[derive(Clone, Copy)]
struct SubArray<T>(T);

// SAFETY: only read through `read_into_raw` into a buffer of `records *
// COUNT` elements (see `read_sub_array`): each record the library writes
// is `COUNT` packed `T`s, exactly the descriptor's size.
unsafe impl<T: H5Type> H5Type for SubArray<T> {
    fn type_descriptor() -> TypeDescriptor {
        let count = COUNT.with(|c| *c.borrow());
        one_member(
            TypeDescriptor::FixedArray(Box::new(T::type_descriptor()), count),
            count * std::mem::size_of::<T>(),
        )
    }
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
#[derive(Clone, Copy, Debug, Default)]
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

/// The sub-array field `name` of `count` values per record, as `T`.
fn read_sub_array<T: H5Type + Copy + Default>(
    ds: &hdf5::Dataset,
    name: &str,
    count: usize,
) -> Result<Vec<T>, String> {
    FIELD.with(|f| *f.borrow_mut() = name.to_string());
    COUNT.with(|c| *c.borrow_mut() = count);
    let mut out = vec![SubArray(T::default()); ds.size() * count];
    let read = ds.read_into_raw(&mut out);
    COUNT.with(|c| *c.borrow_mut() = 1);
    read.map_err(|e| format!("field {name}: {e}"))?;
    Ok(out.into_iter().map(|v| v.0).collect())
}

/// A numeric sub-array field, little-endian.
struct SubArrayField<'a> {
    ds: &'a hdf5::Dataset,
    name: &'a str,
    count: usize,
}

impl NumberRead for SubArrayField<'_> {
    type Out = Result<Vec<u8>, String>;

    fn read<T: LeBytes>(self) -> Self::Out {
        let mut out = Vec::new();
        for v in read_sub_array::<T>(self.ds, self.name, self.count)? {
            v.put(&mut out);
        }
        Ok(out)
    }
}

/// One field of every record of a compound dataset, read whole: a
/// pre-0.7 data frame's column or obsm entry.
pub(super) struct FieldColumn {
    /// How each value is presented.
    pub elem: Elem,
    /// The extents after the record axis (a sub-array field's shape).
    pub inner_shape: Vec<u64>,
    /// The values: numbers little-endian, or strings.
    pub values: FieldValuesRead,
}

/// What [`read_field_column`] read.
pub(super) enum FieldValuesRead {
    /// Numbers or booleans, little-endian.
    Bytes(Vec<u8>),
    /// Strings.
    Strings(Vec<String>),
}

/// Reads the field `name` of the compound dataset `ds` of type `ct`, or
/// `None` if it has no such field.
pub(super) fn read_field_column(
    ds: &hdf5::Dataset,
    ct: &CompoundType,
    name: &str,
) -> Result<Option<FieldColumn>, String> {
    let Some(field) = ct.fields.iter().find(|f| f.name == name) else {
        return Ok(None);
    };
    if let TypeDescriptor::FixedArray(inner, count) = &field.ty {
        let elem = Elem::of(inner)
            .filter(|e| !matches!(e, Elem::VarStr { .. } | Elem::FixedStr { .. }))
            .ok_or_else(|| format!("record field {name} of type {} is not supported", field.ty))?;
        let count = *count;
        let bytes = elem
            .read_numbers(SubArrayField { ds, name, count })
            .unwrap_or_else(|| Err(format!("record field {name} is not numeric")))?;
        return Ok(Some(FieldColumn {
            elem,
            inner_shape: vec![count as u64],
            values: FieldValuesRead::Bytes(bytes),
        }));
    }
    let elem = Elem::of(&field.ty)
        .ok_or_else(|| format!("record field {name} of type {} is not supported", field.ty))?;
    let values = match read_column(ds, field)? {
        Column::Bytes(b, _, _) => FieldValuesRead::Bytes(b),
        Column::Strings(s) => FieldValuesRead::Strings(s),
    };
    Ok(Some(FieldColumn {
        elem,
        inner_shape: Vec::new(),
        values,
    }))
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
                let longest = v.iter().map(|s| s.chars().count()).max().unwrap_or(0);
                // A fixed-length field keeps its width (numpy reads `S{n}`
                // as `U{n}`); a variable-length one takes its longest value.
                let chars = match Elem::of(&f.ty) {
                    Some(Elem::FixedStr { len, .. }) => len.max(longest),
                    _ => longest,
                }
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

/// The HDF5 type of a numeric record field, as h5py makes it.
fn field_type(d: &DType) -> Option<TypeDescriptor> {
    use hdf5::types::{FloatSize, IntSize};
    Some(match d {
        DType::Bool => TypeDescriptor::Boolean,
        DType::Int8 => TypeDescriptor::Integer(IntSize::U1),
        DType::Int16 => TypeDescriptor::Integer(IntSize::U2),
        DType::Int32 => TypeDescriptor::Integer(IntSize::U4),
        DType::Int64 => TypeDescriptor::Integer(IntSize::U8),
        DType::UInt8 => TypeDescriptor::Unsigned(IntSize::U1),
        DType::UInt16 => TypeDescriptor::Unsigned(IntSize::U2),
        DType::UInt32 => TypeDescriptor::Unsigned(IntSize::U4),
        DType::UInt64 => TypeDescriptor::Unsigned(IntSize::U8),
        DType::Float32 => TypeDescriptor::Float(FloatSize::U4),
        DType::Float64 => TypeDescriptor::Float(FloatSize::U8),
        _ => return None,
    })
}

/// Writes the named field of every record from `T` values.
fn write_field<T: H5Type>(ds: &hdf5::Dataset, name: &str, values: Vec<T>) -> Result<(), String> {
    FIELD.with(|f| *f.borrow_mut() = name.to_string());
    let values: Vec<Field<T>> = values.into_iter().map(Field).collect();
    ds.write_raw(&values)
        .map_err(|e| format!("field {name}: {e}"))
}

/// One little-endian value of a record field.
struct FieldValues<'a> {
    ds: &'a hdf5::Dataset,
    name: &'a str,
    records: &'a [u8],
    record_size: usize,
    offset: usize,
}

impl FieldValues<'_> {
    fn column<const N: usize>(&self) -> impl Iterator<Item = [u8; N]> + '_ {
        self.records.chunks_exact(self.record_size).map(|r| {
            let mut b = [0u8; N];
            b.copy_from_slice(&r[self.offset..self.offset + N]);
            b
        })
    }
}

macro_rules! numeric_field {
    ($values:expr, $t:ty) => {
        write_field::<$t>(
            $values.ds,
            $values.name,
            $values
                .column::<{ std::mem::size_of::<$t>() }>()
                .map(<$t>::from_le_bytes)
                .collect(),
        )
    };
}

/// Creates the compound dataset `name` in `group` holding `rows` records
/// of dtype `s`, packed little-endian in `records` as zarr stores them.
/// String fields become variable-length UTF-8, as anndata writes them.
pub fn write_records(
    group: &hdf5::Group,
    name: &str,
    s: &Structured,
    rows: usize,
    records: &[u8],
) -> Result<hdf5::Dataset, String> {
    let record_size = s.item_size() as usize;
    if records.len() != rows * record_size {
        return Err(format!(
            "records hold {} bytes, not {rows} of {record_size}",
            records.len()
        ));
    }
    let mut members = Vec::with_capacity(s.fields().len());
    let mut size = 0usize;
    for (index, (field, kind)) in s.fields().iter().enumerate() {
        let ty = match kind {
            StructField::Numeric(d) => field_type(d).ok_or_else(|| {
                format!(
                    "record field {field} of dtype {} cannot be written to HDF5",
                    d.display_name()
                )
            })?,
            StructField::Utf32(_) => VarLenUnicode::type_descriptor(),
            StructField::Bytes(_) => {
                return Err(format!(
                    "record field {field} holds byte strings, which anncat cannot write to .h5ad"
                ));
            }
        };
        let member_size = ty.size();
        members.push(CompoundField {
            name: field.clone(),
            ty,
            offset: size,
            index,
        });
        size += member_size;
    }
    let compound = TypeDescriptor::Compound(CompoundType {
        fields: members,
        size,
    });
    // Packed, as h5py writes numpy's packed record dtypes.
    let ds = group
        .new_dataset_builder()
        .packed(true)
        .empty_as(&compound)
        .shape(rows)
        .create(name)
        .map_err(|e| format!("cannot create the record dataset: {e}"))?;
    let mut offset = 0usize;
    for (field, kind) in s.fields() {
        let values = FieldValues {
            ds: &ds,
            name: field,
            records,
            record_size,
            offset,
        };
        match kind {
            StructField::Numeric(DType::Bool) => write_field(
                &ds,
                field,
                values.column::<1>().map(|b| BoolByte(b[0])).collect(),
            ),
            StructField::Numeric(DType::Int8) => numeric_field!(values, i8),
            StructField::Numeric(DType::Int16) => numeric_field!(values, i16),
            StructField::Numeric(DType::Int32) => numeric_field!(values, i32),
            StructField::Numeric(DType::Int64) => numeric_field!(values, i64),
            StructField::Numeric(DType::UInt8) => numeric_field!(values, u8),
            StructField::Numeric(DType::UInt16) => numeric_field!(values, u16),
            StructField::Numeric(DType::UInt32) => numeric_field!(values, u32),
            StructField::Numeric(DType::UInt64) => numeric_field!(values, u64),
            StructField::Numeric(DType::Float32) => numeric_field!(values, f32),
            StructField::Numeric(DType::Float64) => numeric_field!(values, f64),
            StructField::Utf32(chars) => {
                let width = *chars as usize * 4;
                let strings = records
                    .chunks_exact(record_size)
                    .map(|r| {
                        let text: String = r[offset..offset + width]
                            .chunks_exact(4)
                            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .take_while(|&c| c != 0)
                            .map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                            .collect();
                        text.parse::<VarLenUnicode>()
                            .map_err(|_| format!("field {field}: a string holds a NUL character"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                write_field(&ds, field, strings)
            }
            StructField::Numeric(_) | StructField::Bytes(_) => {
                Err(format!("record field {field} cannot be written to HDF5"))
            }
        }?;
        offset += kind.size() as usize;
    }
    Ok(ds)
}
