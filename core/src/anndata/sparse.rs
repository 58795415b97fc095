//! Sparse matrix (CSR / CSC) checks and reads over zarr: the `indptr` array
//! is read in bounded blocks and must be a valid compressed-pointer array.

use zarrs::array::Array;

use super::backend::Backend;
use super::range_read::{read_range_into, read_range_pieces};

use super::dtype::DType;
use super::element::{Element, Encoding};
use super::store::Store;
use crate::concat::values::Values;
use crate::error::{Error, Result};

/// Entries of `indptr` read per block (8 MiB of int64).
const INDPTR_BLOCK: u64 = 1 << 20;

/// Reads `len` entries of an integer 1-D array from `start`, as i64.
pub fn read_i64_range(
    store: &Store,
    path: &str,
    dtype: &DType,
    start: u64,
    len: u64,
) -> Result<Vec<i64>> {
    let array = store.shared_array(path)?;
    i64_range_of(&array, dtype, start, len).map_err(|e| store.err(path, e))
}

/// [`read_i64_range`] of an opened array (stored as `dtype`); what is
/// wrong, for the caller to attach to the array's name.
pub(crate) fn i64_range_of(
    array: &Array<Backend>,
    dtype: &DType,
    start: u64,
    len: u64,
) -> std::result::Result<Vec<i64>, String> {
    let mut out: Vec<i64> = Vec::with_capacity(len as usize);
    // zarrs hands decoded elements over in native byte order; each piece
    // is widened straight out of its decoded chunk.
    macro_rules! widened {
        ($t:ty) => {
            read_range_pieces(array, start, len, |raw| {
                out.extend(
                    raw.chunks_exact(size_of::<$t>())
                        .map(|c| i64::from(<$t>::from_ne_bytes(c.try_into().unwrap_or_default()))),
                )
            })
        };
    }
    match dtype {
        DType::Int8 => widened!(i8),
        DType::Int16 => widened!(i16),
        DType::UInt8 => widened!(u8),
        DType::UInt16 => widened!(u16),
        DType::Int32 => widened!(i32),
        DType::Int64 => widened!(i64),
        DType::UInt32 => widened!(u32),
        DType::UInt64 => read_range_pieces(array, start, len, |raw| {
            out.extend(raw.chunks_exact(8).map(|c| {
                i64::try_from(u64::from_ne_bytes(c.try_into().unwrap_or_default()))
                    .unwrap_or(i64::MAX)
            }))
        }),
        other => {
            return Err(format!(
                "expected an integer array, found {}",
                other.display_name()
            ));
        }
    }
    .map_err(|e| format!("cannot read data: {e}"))?;
    Ok(out)
}

/// Reads `len` column indices of a sparse `indices` array from `start`, as
/// `u32`, each checked to be below `columns` (the matrix's width): an index
/// out of range (or negative) is an error naming the array, not a wrong
/// matrix. `int32` and `uint32` indices (what anndata writes) are decoded
/// straight into the vector; other integer widths are converted.
pub fn read_columns(
    store: &Store,
    path: &str,
    dtype: &DType,
    start: u64,
    len: u64,
    columns: u64,
) -> Result<Vec<u32>> {
    let out: Vec<u32> = match dtype {
        DType::Int32 | DType::UInt32 => {
            // Decoded in place: an `int32` index's bits as a `u32`.
            let array = store.shared_array(path)?;
            let mut decoded = Values::U32(Vec::with_capacity(len as usize));
            read_range_into(&array, start, len, &mut decoded)
                .map_err(|e| store.err(path, format!("cannot read data: {e}")))?;
            match decoded {
                Values::U32(v) => v,
                _ => return Err(Error::internal("column indices decoded as another type")),
            }
        }
        DType::Int8
        | DType::Int16
        | DType::Int64
        | DType::UInt8
        | DType::UInt16
        | DType::UInt64 => {
            // Converted; one that does not fit becomes `u32::MAX`, refused below.
            read_i64_range(store, path, dtype, start, len)?
                .iter()
                .map(|&c| u32::try_from(c).unwrap_or(u32::MAX))
                .collect()
        }
        other => {
            return Err(store.err(
                path,
                format!("expected an integer array, found {}", other.display_name()),
            ));
        }
    };
    if out.len() as u64 != len {
        return Err(store.err(path, "holds fewer entries than its indptr says"));
    }
    // The widest index first: one pass, no branch per entry.
    if let Some(&widest) = out.iter().max()
        && u64::from(widest) >= columns
    {
        let at = out
            .iter()
            .position(|&c| u64::from(c) >= columns)
            .unwrap_or(0);
        let shown = match dtype {
            DType::Int32 => (out[at] as i32).to_string(),
            DType::UInt32 => out[at].to_string(),
            _ if out[at] == u32::MAX => "out of range".to_string(),
            _ => out[at].to_string(),
        };
        return Err(store.err(
            path,
            format!(
                "column index {shown} at entry {} is not below the matrix's {columns} columns",
                start + at as u64
            ),
        ));
    }
    Ok(out)
}

/// Checks that the `indptr` of the sparse element `e` starts at 0, never
/// decreases, and ends at the number of stored entries. A missing or
/// corrupt `indptr` chunk shows up here rather than as a wrong matrix.
pub fn check_indptr(store: &Store, e: &Element) -> Result<()> {
    debug_assert!(matches!(
        e.encoding,
        Encoding::CsrMatrix | Encoding::CscMatrix
    ));
    let (Some(indptr), Some(data)) = (e.child("indptr"), e.child("data")) else {
        return Err(store.err(&e.path, "sparse matrix lacks indptr or data"));
    };
    let (Some(meta), Some(data_meta)) = (indptr.array(), data.array()) else {
        return Err(store.err(&e.path, "sparse members must be arrays"));
    };
    let n = meta.shape[0];
    let nnz = data_meta.shape[0] as i64;
    let mut previous = 0i64;
    let mut start = 0u64;
    while start < n {
        let len = INDPTR_BLOCK.min(n - start);
        let block = read_i64_range(store, &indptr.path, &meta.dtype, start, len)?;
        for (i, &v) in block.iter().enumerate() {
            let at = start + i as u64;
            if at == 0 && v != 0 {
                return Err(store.err(&indptr.path, format!("indptr starts at {v}, not 0")));
            }
            if v < previous {
                return Err(store.err(
                    &indptr.path,
                    format!("indptr decreases at entry {at} ({previous} then {v}): missing or corrupt chunk"),
                ));
            }
            previous = v;
        }
        start += len;
    }
    if n > 0 && previous != nnz {
        return Err(store.err(
            &indptr.path,
            format!("indptr ends at {previous} but data holds {nnz} entries"),
        ));
    }
    Ok(())
}

/// Runs [`check_indptr`] on every sparse element of the tree.
pub fn check_all_sparse(store: &Store, root: &Element) -> Result<()> {
    let mut sparse = Vec::new();
    root.walk(&mut |e| {
        if matches!(e.encoding, Encoding::CsrMatrix | Encoding::CscMatrix) {
            sparse.push(e);
        }
    });
    sparse.into_iter().try_for_each(|e| check_indptr(store, e))
}
