//! The element types of HDF5 datasets as anncat reads them, and reads
//! generic over the Rust type of a number or the size of a fixed-length
//! string.

use hdf5::types::{FloatSize, H5Type, IntSize, TypeDescriptor};
use serde_json::{Value, json};

use super::BoolByte;

/// Bytes a string element is assumed to take when sizing chunks.
const STRING_GUESS_BYTES: u64 = 32;

/// How the elements of a dataset are read and presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::anndata) enum Elem {
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
    pub(in crate::anndata) fn of(desc: &TypeDescriptor) -> Option<Elem> {
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
    pub(in crate::anndata) fn zarr_dtype(self) -> &'static str {
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
    pub(in crate::anndata) fn size(self) -> u64 {
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

    pub(in crate::anndata) fn is_string(self) -> bool {
        matches!(self, Elem::VarStr { .. } | Elem::FixedStr { .. })
    }

    pub(in crate::anndata) fn fill_value(self) -> Value {
        match self {
            Elem::Bool => Value::Bool(false),
            Elem::VarStr { .. } | Elem::FixedStr { .. } => Value::String(String::new()),
            Elem::F32 | Elem::F64 => json!(0.0),
            _ => json!(0),
        }
    }

    /// Runs `r` with the Rust type of a number or boolean element; `None`
    /// for strings.
    pub(in crate::anndata) fn read_numbers<R: NumberRead>(self, r: R) -> Option<R::Out> {
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
pub(in crate::anndata) trait LeBytes: H5Type + Copy + Default {
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
pub(in crate::anndata) trait NumberRead {
    /// What the read gives.
    type Out;
    /// Reads elements as `T`.
    fn read<T: LeBytes>(self) -> Self::Out;
}

/// A read generic over the size of fixed-length strings, which HDF5
/// converts to any longer fixed length (see [`with_fixed_size`]).
pub(in crate::anndata) trait FixedRead {
    /// What the read gives.
    type Out;
    /// Reads strings as `N` bytes each.
    fn read<const N: usize>(self) -> Self::Out;
}

/// Runs `r` with the smallest size anncat reads fixed-length strings of
/// `len` bytes at; `None` when they are longer than all of them.
pub(in crate::anndata) fn with_fixed_size<R: FixedRead>(len: usize, r: R) -> Option<R::Out> {
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
