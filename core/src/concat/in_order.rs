//! The copy path of sparse outputs whose entries keep the inputs' order.
//!
//! When CSR inputs are stacked along rows with a zero fill and every
//! input's columns map onto the joined axis in order with none dropped
//! (the common obs concat: an inner join, or an outer join of nested
//! gene lists), the output's `data` is the inputs' `data` arrays one after
//! the other, and its `indices` are the inputs' `indices` with each column
//! renamed. A data chunk is then a few byte ranges of the inputs: read as
//! decoded bytes and written as they are, with no per-row work and no
//! detour through typed values unless a dtype or a column number changes.

use serde::{Deserialize, Serialize};
use zarrs::array::{ArrayBytes, ArrayBytesRaw, ArraySubset};

use super::matrix::{index_dtype, read_values};
use super::plan::{Axis, ConcatPlan, MatrixPlan, MatrixSource, SourceKind};
use super::values::Values;
use crate::anndata::{DType, OutputStore, Store};
use crate::error::Result;

/// Where each input's entries sit in the output, for the copy path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputEntries {
    /// Per input, then one past the last: the output entry its first entry
    /// lands on (inputs without the element own an empty range).
    pub start: Vec<u64>,
    /// Per input: its `indptr[0]`, the position of its first entry in its
    /// own `data` / `indices` (0 for inputs without the element).
    pub base: Vec<u64>,
}

/// Whether output `m` can take the copy path (see the module docs).
pub fn entries_in_order(plan: &ConcatPlan, m: &MatrixPlan) -> bool {
    if m.stack != Axis::Obs || m.diagonal || !m.fill.is_zero() || !m.sparse {
        return false;
    }
    let space = &plan.spaces[m.space];
    m.sources.iter().enumerate().all(|(i, src)| match src {
        None => true,
        Some(src) => {
            src.kind == SourceKind::Csr && keeps_all_in_order(&space.reindexer(i).new_of_old)
        }
    })
}

/// Whether `map` (new position of every old column) drops no column and
/// keeps their order.
fn keeps_all_in_order(map: &[i32]) -> bool {
    map.iter().all(|&c| c >= 0) && map.windows(2).all(|w| w[0] < w[1])
}

/// Where every input's entries land, from the per-row entry counts of each
/// row block (`counts[b]` for block `b` of `rows_per_block` rows) and each
/// input's first `indptr` value.
pub fn locate_inputs(
    m: &MatrixPlan,
    counts: &[Vec<u32>],
    rows_per_block: u64,
) -> Result<InputEntries> {
    let mut start = Vec::with_capacity(m.along.len() + 1);
    let mut base = Vec::with_capacity(m.along.len());
    let mut total = 0u64;
    let mut row = 0u64;
    for (i, &[offset, n]) in m.along.iter().enumerate() {
        total += entries_between(counts, rows_per_block, row, offset);
        start.push(total);
        total += entries_between(counts, rows_per_block, offset, offset + n);
        row = offset + n;
        base.push(match &m.sources[i] {
            Some(src) => {
                let store = Store::open(&src.store)?;
                let path = format!("{}/indptr", src.path);
                let dtype = index_dtype(&store, &path)?;
                let first = crate::anndata::sparse::read_i64_range(&store, &path, &dtype, 0, 1)?;
                u64::try_from(first[0]).map_err(|_| store.err(&path, "negative indptr[0]"))?
            }
            None => 0,
        });
    }
    start.push(total);
    Ok(InputEntries { start, base })
}

/// Entries of rows `from..to`.
fn entries_between(counts: &[Vec<u32>], rows_per_block: u64, from: u64, to: u64) -> u64 {
    (from..to)
        .map(|r| {
            counts
                .get((r / rows_per_block) as usize)
                .and_then(|c| c.get((r % rows_per_block) as usize))
                .map_or(0, |&c| u64::from(c))
        })
        .sum()
}

/// The stored entries that output entries `lo .. hi` come from on the
/// copy path: per input holding some, (input, its source, first stored
/// entry, how many), in input order.
pub fn input_entries<'a>(
    m: &'a MatrixPlan,
    at: &'a InputEntries,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = (usize, &'a MatrixSource, u64, u64)> + 'a {
    m.sources.iter().enumerate().filter_map(move |(i, src)| {
        let src = src.as_ref()?;
        let (first, end) = (at.start[i].max(lo), at.start[i + 1].min(hi));
        (first < end).then(|| (i, src, first - at.start[i] + at.base[i], end - first))
    })
}

/// Output entries `lo..hi` of `m` as the little-endian bytes of its
/// `indices` (in `idx_dtype`) and `data`.
pub fn copy_entries(
    plan: &ConcatPlan,
    m: &MatrixPlan,
    at: &InputEntries,
    lo: u64,
    hi: u64,
    idx_dtype: &DType,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let space = &plan.spaces[m.space];
    // Entries that need no conversion go straight from each decoded input
    // chunk to the end of these.
    let n = (hi - lo) as usize;
    let mut indices: Vec<u8> = Vec::with_capacity(n * idx_dtype.item_size());
    let mut data: Vec<u8> = Vec::with_capacity(n * m.dtype.item_size());
    for (i, src, from, len) in input_entries(m, at, lo, hi) {
        let store = Store::open(&src.store)?;
        let ix_path = format!("{}/indices", src.path);
        let ix_dtype = index_dtype(&store, &ix_path)?;
        let map = &space.reindexer(i).new_of_old;
        let renamed = map.iter().enumerate().any(|(c, &n)| n as usize != c);
        if !renamed && &ix_dtype == idx_dtype {
            append_bytes(&store, &ix_path, from, len, &mut indices)?;
        } else {
            let old = read_values(&store, &ix_path, &ix_dtype, vec![from], vec![len])?
                .into_cast(&DType::Int64)?;
            let Values::I64(old) = old else {
                return Err(store.err(&ix_path, "indices are not integers"));
            };
            let mut new = Vec::with_capacity(old.len());
            for c in old {
                match usize::try_from(c).ok().and_then(|c| map.get(c)) {
                    Some(&n) => new.push(i64::from(n)),
                    None => {
                        return Err(store.err(&ix_path, format!("column {c} out of range")));
                    }
                }
            }
            indices.extend_from_slice(&Values::I64(new).into_cast(idx_dtype)?.to_le_bytes());
        }
        let data_path = format!("{}/data", src.path);
        if src.dtype == m.dtype {
            append_bytes(&store, &data_path, from, len, &mut data)?;
        } else {
            let values = read_values(&store, &data_path, &src.dtype, vec![from], vec![len])?
                .into_cast(&m.dtype)?;
            data.extend_from_slice(&values.to_le_bytes());
        }
    }
    Ok((indices, data))
}

/// Appends the decoded bytes of elements `start .. start + len` of the 1-d
/// array at `path` to `out` (decoded in place where the chunks allow).
fn append_bytes(store: &Store, path: &str, start: u64, len: u64, out: &mut Vec<u8>) -> Result<()> {
    let array = store.array(path)?;
    let Some(size) = array.data_type().fixed_size() else {
        return Err(store.err(path, "expected fixed-size numeric data"));
    };
    out.reserve(len as usize * size);
    crate::anndata::range_read::read_range_into(&array, start, len, out)
        .map_err(|e| store.err(path, format!("cannot read data: {e}")))
}

/// The decoded bytes of elements `start .. start + len` of the 1-d array at
/// `path`.
pub(crate) fn read_bytes(store: &Store, path: &str, start: u64, len: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    append_bytes(store, path, start, len, &mut out)?;
    Ok(out)
}

/// Writes little-endian `bytes` as elements `start ..` of the 1-d array at
/// `path`.
pub fn write_bytes(
    store: &OutputStore,
    path: &str,
    start: u64,
    bytes: Vec<u8>,
    dtype: &DType,
) -> Result<()> {
    let len = (bytes.len() / dtype.item_size().max(1)) as u64;
    if len == 0 {
        return Ok(());
    }
    crate::kernel::record_bytes_written(bytes.len() as u64);
    let array = store.writable_array(path)?;
    let err = |e| store.err(path, format!("cannot write chunk: {e}"));
    if crate::anndata::blosc_encode::store_whole_chunks(&array, start, &bytes).map_err(err)? {
        return Ok(());
    }
    let subset = ArraySubset::new_with_start_shape(vec![start], vec![len])
        .map_err(|e| store.err(path, e))?;
    array
        .store_array_subset(&subset, ArrayBytes::Fixed(ArrayBytesRaw::from(bytes)))
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keeping_maps() {
        assert!(keeps_all_in_order(&[0, 1, 2]));
        assert!(
            keeps_all_in_order(&[0, 2, 5]),
            "gaps are other inputs' columns"
        );
        assert!(!keeps_all_in_order(&[0, -1, 2]), "a dropped column");
        assert!(!keeps_all_in_order(&[1, 0]), "reordered");
    }

    #[test]
    fn entries_between_rows_across_blocks() {
        let counts = vec![vec![1, 2, 3], vec![4, 5]];
        assert_eq!(entries_between(&counts, 3, 0, 5), 15);
        assert_eq!(entries_between(&counts, 3, 2, 4), 7);
        assert_eq!(entries_between(&counts, 3, 4, 4), 0);
    }
}
