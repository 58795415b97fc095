//! Typed numeric vectors, numpy's dtype promotion, and pandas' rules for
//! the dtype that a fill value forces on an array with missing entries.

use zarrs::array::{ArrayBytes, ArrayBytesRaw};

use crate::anndata::DType;
use crate::error::{Error, Result};

/// A fill value as the user gave it: an integer or a float (NaN allowed).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scalar {
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
}

impl Scalar {
    /// Parses `nan`, an integer, or a float.
    pub fn parse(s: &str) -> Result<Scalar> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("nan") {
            return Ok(Scalar::Float(f64::NAN));
        }
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Scalar::Int(i));
        }
        t.parse::<f64>()
            .map(Scalar::Float)
            .map_err(|_| Error::option(format!("--fill-value must be a number or nan, not {s:?}")))
    }

    /// The value as f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Int(i) => i as f64,
            Scalar::Float(f) => f,
        }
    }

    /// Whether the value is zero (the sparse "nothing stored" value).
    pub fn is_zero(self) -> bool {
        self.as_f64() == 0.0
    }

    /// numpy's dtype of `np.array(value)`.
    pub fn numpy_dtype(self) -> DType {
        match self {
            Scalar::Int(_) => DType::Int64,
            Scalar::Float(_) => DType::Float64,
        }
    }
}

fn rank(d: &DType) -> Option<(char, u32)> {
    Some(match d {
        DType::Bool => ('b', 1),
        DType::Int8 => ('i', 8),
        DType::Int16 => ('i', 16),
        DType::Int32 => ('i', 32),
        DType::Int64 => ('i', 64),
        DType::UInt8 => ('u', 8),
        DType::UInt16 => ('u', 16),
        DType::UInt32 => ('u', 32),
        DType::UInt64 => ('u', 64),
        DType::Float16 => ('f', 16),
        DType::Float32 => ('f', 32),
        DType::Float64 => ('f', 64),
        _ => return None,
    })
}

fn from_rank(kind: char, bits: u32) -> DType {
    match (kind, bits) {
        ('b', _) => DType::Bool,
        ('i', 8) => DType::Int8,
        ('i', 16) => DType::Int16,
        ('i', 32) => DType::Int32,
        ('i', _) => DType::Int64,
        ('u', 8) => DType::UInt8,
        ('u', 16) => DType::UInt16,
        ('u', 32) => DType::UInt32,
        ('u', _) => DType::UInt64,
        ('f', 16) => DType::Float16,
        ('f', 32) => DType::Float32,
        _ => DType::Float64,
    }
}

/// numpy's `result_type` of two numeric dtypes; `None` if either is not numeric.
pub fn promote(a: &DType, b: &DType) -> Option<DType> {
    let (ka, ba) = rank(a)?;
    let (kb, bb) = rank(b)?;
    let float_for_int = |bits: u32| match bits {
        8 => 16,
        16 => 32,
        _ => 64,
    };
    Some(match (ka, kb) {
        _ if a == b => a.clone(),
        ('b', _) => b.clone(),
        (_, 'b') => a.clone(),
        ('i', 'i') | ('u', 'u') | ('f', 'f') => from_rank(ka, ba.max(bb)),
        ('i', 'u') | ('u', 'i') => {
            let (sb, ub) = if ka == 'i' { (ba, bb) } else { (bb, ba) };
            if sb > ub {
                from_rank('i', sb)
            } else if ub < 64 {
                from_rank('i', ub * 2)
            } else {
                DType::Float64
            }
        }
        ('f', _) => from_rank('f', ba.max(float_for_int(bb))),
        (_, 'f') => from_rank('f', bb.max(float_for_int(ba))),
        _ => return None,
    })
}

/// The dtype pandas gives an array of `dtype` when some entries are filled
/// with `fill` (`pandas.core.dtypes.cast.maybe_promote`).
pub fn fill_promote(dtype: &DType, fill: Scalar) -> Result<DType> {
    let (kind, bits) = rank(dtype).ok_or_else(|| {
        Error::data(format!(
            "cannot fill missing entries of a {} array",
            dtype.display_name()
        ))
    })?;
    let unsupported = || {
        Error::data(format!(
            "filling a {} array with {:?} gives numpy object dtype, which anndata cannot store in zarr",
            dtype.display_name(),
            fill
        ))
    };
    match (kind, fill) {
        ('b', _) => Err(unsupported()),
        ('f', _) => Ok(dtype.clone()),
        (_, Scalar::Float(_)) => Ok(DType::Float64),
        ('i', Scalar::Int(v)) => {
            let fits = bits == 64 || (v >= -(1i64 << (bits - 1)) && v < (1i64 << (bits - 1)));
            if fits {
                Ok(dtype.clone())
            } else {
                Ok(DType::Int64)
            }
        }
        (_, Scalar::Int(v)) => {
            // unsigned
            if v < 0 {
                if bits == 64 {
                    Err(unsupported())
                } else {
                    Ok(from_rank('i', bits * 2))
                }
            } else if bits == 64 || (v as u64) < (1u64 << bits) {
                Ok(dtype.clone())
            } else {
                Ok(DType::UInt64)
            }
        }
    }
}

/// A typed vector of numbers or booleans.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)]
pub enum Values {
    Bool(Vec<bool>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any variant, bound as `$v`.
macro_rules! each {
    ($values:expr, $v:ident => $body:expr) => {
        match $values {
            Values::Bool($v) => $body,
            Values::I8($v) => $body,
            Values::I16($v) => $body,
            Values::I32($v) => $body,
            Values::I64($v) => $body,
            Values::U8($v) => $body,
            Values::U16($v) => $body,
            Values::U32($v) => $body,
            Values::U64($v) => $body,
            Values::F32($v) => $body,
            Values::F64($v) => $body,
        }
    };
}

/// Runs `$body` with `$a` (in `$into`) and `$b` (in `$from`) bound to the
/// vectors of two values of one dtype, for appending one to the other;
/// values of different dtypes return an internal error.
macro_rules! append_same {
    ($into:expr, $from:expr, $a:ident, $b:ident => $body:expr) => {
        append_same!(@ $into, $from, $a, $b, $body; Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64)
    };
    (@ $into:expr, $from:expr, $a:ident, $b:ident, $body:expr; $($var:ident),*) => {
        match ($into, $from) {
            $((Values::$var($a), Values::$var($b)) => $body,)*
            _ => return Err(Error::internal("appending values of different dtypes")),
        }
    };
}

/// Numbers anncat converts between (numpy `astype` semantics for upcasts).
pub trait Number: Copy + Default + Send + Sync + 'static {
    /// To f64.
    fn to_f64(self) -> f64;
    /// To i64 (booleans are 0/1).
    fn to_i64(self) -> i64;
    /// From f64 (truncating, as numpy does for float -> int).
    fn from_f64(v: f64) -> Self;
    /// From i64.
    fn from_i64(v: i64) -> Self;
    /// Whether the value is a zero (not stored in a sparse matrix).
    fn is_zero(self) -> bool;
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            fn to_f64(self) -> f64 { self as f64 }
            fn to_i64(self) -> i64 { self as i64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn from_i64(v: i64) -> Self { v as $t }
            fn is_zero(self) -> bool { self == (0 as $t) }
        }
    )*};
}
number!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl Number for bool {
    fn to_f64(self) -> f64 {
        f64::from(u8::from(self))
    }
    fn to_i64(self) -> i64 {
        i64::from(self)
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn is_zero(self) -> bool {
        !self
    }
}

/// Work on two vectors of one element type, whatever it is: see
/// [`Values::append_with`].
pub trait AppendKernel {
    /// Appends to `into`, reading `from`.
    fn append<T: Number>(&mut self, into: &mut Vec<T>, from: &[T]);
}

fn convert<S: Number, T: Number>(src: &[S], float_target: bool) -> Vec<T> {
    if float_target {
        src.iter().map(|v| T::from_f64(v.to_f64())).collect()
    } else {
        src.iter().map(|v| T::from_i64(v.to_i64())).collect()
    }
}

impl Values {
    /// An empty vector of `dtype`.
    pub fn empty(dtype: &DType) -> Result<Values> {
        Values::zeros(dtype, 0)
    }

    /// `n` zeros of `dtype`.
    pub fn zeros(dtype: &DType, n: usize) -> Result<Values> {
        Ok(match dtype {
            DType::Bool => Values::Bool(vec![false; n]),
            DType::Int8 => Values::I8(vec![0; n]),
            DType::Int16 => Values::I16(vec![0; n]),
            DType::Int32 => Values::I32(vec![0; n]),
            DType::Int64 => Values::I64(vec![0; n]),
            DType::UInt8 => Values::U8(vec![0; n]),
            DType::UInt16 => Values::U16(vec![0; n]),
            DType::UInt32 => Values::U32(vec![0; n]),
            DType::UInt64 => Values::U64(vec![0; n]),
            DType::Float32 => Values::F32(vec![0.0; n]),
            DType::Float64 => Values::F64(vec![0.0; n]),
            other => {
                return Err(Error::data(format!(
                    "unsupported numeric dtype {}",
                    other.display_name()
                )));
            }
        })
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> DType {
        match self {
            Values::Bool(_) => DType::Bool,
            Values::I8(_) => DType::Int8,
            Values::I16(_) => DType::Int16,
            Values::I32(_) => DType::Int32,
            Values::I64(_) => DType::Int64,
            Values::U8(_) => DType::UInt8,
            Values::U16(_) => DType::UInt16,
            Values::U32(_) => DType::UInt32,
            Values::U64(_) => DType::UInt64,
            Values::F32(_) => DType::Float32,
            Values::F64(_) => DType::Float64,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes little-endian array bytes of `dtype`.
    pub fn from_array_bytes(dtype: &DType, bytes: &ArrayBytes<'_>) -> Result<Values> {
        let ArrayBytes::Fixed(raw) = bytes else {
            return Err(Error::data("expected fixed-size numeric data"));
        };
        let mut values = Values::zeros(dtype, 0)?;
        values.extend_from_le_bytes(raw);
        Ok(values)
    }

    /// Appends the values whose little-endian encoding is `raw` (a whole
    /// number of elements of this vector's dtype; a trailing part of one
    /// is ignored).
    pub fn extend_from_le_bytes(&mut self, raw: &[u8]) {
        // One copy of the bytes into the typed vector (they are the
        // little-endian encoding already on a little-endian machine).
        #[cfg(target_endian = "little")]
        macro_rules! le {
            ($v:expr, $t:ty, $n:expr) => {
                match bytemuck::try_cast_slice::<u8, $t>(&raw[..raw.len() / $n * $n]) {
                    Ok(aligned) => $v.extend_from_slice(aligned),
                    Err(_) => $v.extend(
                        raw.chunks_exact($n)
                            .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n]))),
                    ),
                }
            };
        }
        #[cfg(not(target_endian = "little"))]
        macro_rules! le {
            ($v:expr, $t:ty, $n:expr) => {
                $v.extend(
                    raw.chunks_exact($n)
                        .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n]))),
                )
            };
        }
        match self {
            Values::Bool(v) => v.extend(raw.iter().map(|&b| b != 0)),
            Values::I8(v) => v.extend(raw.iter().map(|&b| b as i8)),
            Values::I16(v) => le!(v, i16, 2),
            Values::I32(v) => le!(v, i32, 4),
            Values::I64(v) => le!(v, i64, 8),
            Values::U8(v) => v.extend_from_slice(raw),
            Values::U16(v) => le!(v, u16, 2),
            Values::U32(v) => le!(v, u32, 4),
            Values::U64(v) => le!(v, u64, 8),
            Values::F32(v) => le!(v, f32, 4),
            Values::F64(v) => le!(v, f64, 8),
        }
    }

    /// Encodes the values as little-endian array bytes.
    pub fn to_array_bytes(&self) -> ArrayBytes<'_> {
        self.range_array_bytes(0..self.len())
    }

    /// Encodes the values at positions `range` as little-endian array
    /// bytes (lent without a copy on a little-endian machine).
    ///
    /// # Panics
    /// When `range` is outside the values.
    pub fn range_array_bytes(&self, range: std::ops::Range<usize>) -> ArrayBytes<'_> {
        // Numbers are stored little-endian: on a little-endian machine the
        // vector's own memory is the encoding, lent without a copy.
        #[cfg(target_endian = "little")]
        macro_rules! raw {
            ($v:expr) => {
                ArrayBytesRaw::from(bytemuck::cast_slice::<_, u8>($v))
            };
        }
        #[cfg(not(target_endian = "little"))]
        macro_rules! raw {
            ($v:expr) => {
                ArrayBytesRaw::from($v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
            };
        }
        let raw = match self {
            Values::Bool(v) => {
                ArrayBytesRaw::from(v[range].iter().map(|&b| u8::from(b)).collect::<Vec<u8>>())
            }
            Values::U8(v) => ArrayBytesRaw::from(&v[range]),
            Values::I8(v) => raw!(&v[range]),
            Values::I16(v) => raw!(&v[range]),
            Values::I32(v) => raw!(&v[range]),
            Values::I64(v) => raw!(&v[range]),
            Values::U16(v) => raw!(&v[range]),
            Values::U32(v) => raw!(&v[range]),
            Values::U64(v) => raw!(&v[range]),
            Values::F32(v) => raw!(&v[range]),
            Values::F64(v) => raw!(&v[range]),
        };
        ArrayBytes::Fixed(raw)
    }

    /// The vector's own memory, which is its little-endian encoding, to be
    /// written in place. `None` for booleans (any byte but 0 and 1 would
    /// be invalid) and on a big-endian machine.
    pub fn le_bytes_mut(&mut self) -> Option<&mut [u8]> {
        #[cfg(target_endian = "little")]
        {
            Some(match self {
                Values::Bool(_) => return None,
                Values::U8(v) => v,
                Values::I8(v) => bytemuck::cast_slice_mut(v),
                Values::I16(v) => bytemuck::cast_slice_mut(v),
                Values::I32(v) => bytemuck::cast_slice_mut(v),
                Values::I64(v) => bytemuck::cast_slice_mut(v),
                Values::U16(v) => bytemuck::cast_slice_mut(v),
                Values::U32(v) => bytemuck::cast_slice_mut(v),
                Values::U64(v) => bytemuck::cast_slice_mut(v),
                Values::F32(v) => bytemuck::cast_slice_mut(v),
                Values::F64(v) => bytemuck::cast_slice_mut(v),
            })
        }
        #[cfg(not(target_endian = "little"))]
        {
            None
        }
    }

    /// The values as little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self.to_array_bytes() {
            ArrayBytes::Fixed(raw) => raw.into_owned(),
            _ => Vec::new(),
        }
    }

    /// Values of `dtype` from little-endian bytes.
    pub fn from_le_bytes(dtype: &DType, bytes: &[u8]) -> Result<Values> {
        Values::from_array_bytes(dtype, &ArrayBytes::Fixed(ArrayBytesRaw::from(bytes)))
    }

    /// Converts to `dtype` (numpy `astype`).
    pub fn cast(&self, dtype: &DType) -> Result<Values> {
        if &self.dtype() == dtype {
            return Ok(self.clone());
        }
        let float = matches!(dtype, DType::Float32 | DType::Float64);
        Ok(each!(self, v => match dtype {
            DType::Bool => Values::Bool(convert(v, true)),
            DType::Int8 => Values::I8(convert(v, float)),
            DType::Int16 => Values::I16(convert(v, float)),
            DType::Int32 => Values::I32(convert(v, float)),
            DType::Int64 => Values::I64(convert(v, float)),
            DType::UInt8 => Values::U8(convert(v, float)),
            DType::UInt16 => Values::U16(convert(v, float)),
            DType::UInt32 => Values::U32(convert(v, float)),
            DType::UInt64 => Values::U64(convert(v, float)),
            DType::Float32 => Values::F32(convert(v, true)),
            DType::Float64 => Values::F64(convert(v, true)),
            other => return Err(Error::data(format!("unsupported numeric dtype {}", other.display_name()))),
        }))
    }

    /// `out[k] = self[idx[k]]`, or `fill` where `idx[k]` is `None`. The
    /// result has this vector's dtype: cast first if `fill` needs more.
    pub fn take(&self, idx: &[Option<usize>], fill: Scalar) -> Values {
        fn go<T: Number>(v: &[T], idx: &[Option<usize>], fill: Scalar) -> Vec<T> {
            let f = match fill {
                Scalar::Int(i) => T::from_i64(i),
                Scalar::Float(x) => T::from_f64(x),
            };
            idx.iter().map(|i| i.map_or(f, |i| v[i])).collect()
        }
        macro_rules! take_as {
            ($($var:ident),*) => {
                match self { $(Values::$var(v) => Values::$var(go(v, idx, fill)),)* }
            };
        }
        take_as!(Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64)
    }

    /// Appends `other` (of the same dtype).
    pub fn extend(&mut self, other: &Values) -> Result<()> {
        append_same!(self, other, a, b => a.extend_from_slice(b));
        Ok(())
    }

    /// Appends `other` (of the same dtype), taking its buffer instead of
    /// copying it when this holds nothing yet.
    pub fn append(&mut self, other: Values) -> Result<()> {
        if self.is_empty() && std::mem::discriminant(self) == std::mem::discriminant(&other) {
            *self = other;
            return Ok(());
        }
        self.extend(&other)
    }

    /// Appends `other[from..to]` (of the same dtype) without an
    /// intermediate copy.
    pub fn extend_range(&mut self, other: &Values, from: usize, to: usize) -> Result<()> {
        append_same!(self, other, a, b => a.extend_from_slice(&b[from..to]));
        Ok(())
    }

    /// Makes room for `n` more values.
    pub fn reserve(&mut self, n: usize) {
        each!(self, v => v.reserve(n))
    }

    /// Positions of non-zero values (what a sparse matrix stores).
    pub fn nonzero_mask(&self) -> Vec<bool> {
        each!(self, v => v.iter().map(|x| !x.is_zero()).collect())
    }

    /// The values at `positions`, in order.
    pub fn select(&self, positions: &[usize]) -> Values {
        macro_rules! select_as {
            ($($var:ident),*) => {
                match self { $(Values::$var(v) => Values::$var(positions.iter().map(|&p| v[p]).collect()),)* }
            };
        }
        select_as!(Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64)
    }

    /// Appends `other[p]` (of the same dtype) for each `p` of `positions`,
    /// gathered straight into this vector.
    pub fn extend_selected(&mut self, other: &Values, positions: &[usize]) -> Result<()> {
        append_same!(self, other, a, b => a.extend(positions.iter().map(|&p| b[p])));
        Ok(())
    }

    /// Runs `kernel` on this vector and `from`'s, of one dtype (an
    /// internal error otherwise).
    pub fn append_with(&mut self, from: &Values, kernel: &mut impl AppendKernel) -> Result<()> {
        append_same!(self, from, a, b => kernel.append(a, b));
        Ok(())
    }

    /// The values at positions `from..to`.
    pub fn slice(&self, from: usize, to: usize) -> Values {
        macro_rules! slice_as {
            ($($var:ident),*) => {
                match self { $(Values::$var(v) => Values::$var(v[from..to].to_vec()),)* }
            };
        }
        slice_as!(Bool, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64)
    }

    /// [`Values::cast`] of an owned vector: no copy when the dtype is already right.
    pub fn into_cast(self, dtype: &DType) -> Result<Values> {
        if &self.dtype() == dtype {
            Ok(self)
        } else {
            self.cast(dtype)
        }
    }
}

/// Decoded elements appended in place: their stored little-endian bytes
/// are the vector's own on a little-endian machine (booleans, which not
/// every byte is, go through [`Values::extend_from_le_bytes`]).
#[allow(unsafe_code)] // Writes into the vector's spare capacity.
impl crate::anndata::range_read::ByteSink for Values {
    fn append(&mut self, piece: &[u8]) {
        self.extend_from_le_bytes(piece);
    }

    fn reserve_bytes(&mut self, n: usize) -> Option<*mut u8> {
        if cfg!(not(target_endian = "little")) || matches!(self, Values::Bool(_)) {
            return None;
        }
        let item = self.dtype().item_size();
        if !n.is_multiple_of(item) {
            return None;
        }
        Some(each!(self, v => {
            v.reserve(n / item);
            v.spare_capacity_mut().as_mut_ptr().cast::<u8>()
        }))
    }

    unsafe fn commit_bytes(&mut self, n: usize) {
        let item = self.dtype().item_size();
        // SAFETY: per the contract, `n` bytes (whole elements of a
        // plain-number type, any bit pattern valid) were written after
        // the end.
        each!(self, v => unsafe { v.set_len(v.len() + n / item) })
    }
}

#[cfg(test)]
#[path = "values_tests.rs"]
mod tests;
