//! What a sparse data task will read, fetched ahead of it: the worker asks
//! a queued task's kernel to start fetching while the task before it
//! computes ([`anncat_exec::kernel::Kernel::prefetch`]). For a data chunk
//! of a sparse output that is, per input, the stored `indices` and `data`
//! entries the chunk's entries come from: their chunk files are advised
//! into the page cache ([`advise_range`]). Inputs read from disk (an atlas
//! larger than memory) are then read while the previous chunk is decoded
//! and encoded, instead of after it.
//!
//! Advice only: anything that cannot be read here is skipped, and the task
//! itself reads it and reports what is wrong.

use super::rows::csr_pieces;
use super::*;
use crate::anndata::range_read::advise_range;

/// Fetches ahead what the data task `t` (whose dependency's output is
/// `inputs`) will read; nothing when that cannot be worked out.
pub(super) fn sparse_data(t: &MatrixTask, inputs: &[Arc<Vec<u8>>]) {
    let _ = sparse_data_or_err(t, inputs);
}

fn sparse_data_or_err(t: &MatrixTask, inputs: &[Arc<Vec<u8>>]) -> Result<()> {
    let plan = ConcatPlan::load(&t.plan)?;
    let m = &plan.matrices[t.matrix];
    let offsets: Offsets = match inputs {
        [o] => decode(o)?,
        _ => return Ok(()),
    };
    let total = *offsets.block_start.last().unwrap_or(&0);
    let lo = t.block * m.chunks[1];
    if lo >= total || m.stack != Axis::Obs {
        return Ok(());
    }
    let hi = (lo + m.chunks[1]).min(total);
    if let Some(at) = &offsets.in_order {
        return entries(m, at, lo, hi);
    }
    // The row blocks holding entries `lo .. hi` (their rows may hold a few
    // entries more, on either side).
    let n = n_blocks(m) as usize;
    let ends = offsets.block_start.get(1..=n).unwrap_or_default();
    let first = ends.partition_point(|&end| end <= lo);
    let last = ends
        .partition_point(|&end| end < hi)
        .min(n.saturating_sub(1));
    if first > last {
        return Ok(());
    }
    let rows = block_range(m, first as u64).start..block_range(m, last as u64).end;
    for (i, local) in inputs_in(m, &rows) {
        let Some(src) = &m.sources[i] else { continue };
        if src.kind == SourceKind::Dense {
            continue;
        }
        for (store, path, rows) in csr_pieces(src, &local) {
            let _ = csr_rows(&store, &path, rows);
        }
    }
    Ok(())
}

/// The stored entries of output entries `lo .. hi` on the copy path: a
/// range of each input's `indices` and `data`.
fn entries(m: &MatrixPlan, at: &InputEntries, lo: u64, hi: u64) -> Result<()> {
    for (i, src) in m.sources.iter().enumerate() {
        let Some(src) = src else { continue };
        let (first, end) = (at.start[i].max(lo), at.start[i + 1].min(hi));
        if first >= end {
            continue;
        }
        let store = Store::open(&src.store)?;
        let from = first - at.start[i] + at.base[i];
        advise(&store, &src.path, from, end - first);
    }
    Ok(())
}

/// The stored entries of rows `rows` of the CSR group `path` in
/// `store_path`: found from the two ends of its `indptr`.
fn csr_rows(store_path: &Path, path: &str, rows: Range<u64>) -> Result<()> {
    let store = Store::open(store_path)?;
    let ip_path = format!("{path}/indptr");
    let ip_dtype = index_dtype(&store, &ip_path)?;
    let at = |row: u64| -> Result<u64> {
        let v = crate::anndata::sparse::read_i64_range(&store, &ip_path, &ip_dtype, row, 1)?;
        Ok(v.first().map_or(0, |&p| p.max(0) as u64))
    };
    let (lo, hi) = (at(rows.start)?, at(rows.end)?);
    if hi > lo {
        advise(&store, path, lo, hi - lo);
    }
    Ok(())
}

/// Advises the chunks of entries `start .. start + len` of the group
/// `path`'s `indices` and `data`.
fn advise(store: &Store, path: &str, start: u64, len: u64) {
    for part in ["indices", "data"] {
        if let Ok(array) = store.array(&format!("{path}/{part}")) {
            advise_range(&array, start, len, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anndata::atomic_store::take_advised;

    /// The rows' entries found from the indptr are the ones advised: the
    /// indices' and the values' chunks holding them, and no others.
    #[test]
    fn csr_rows_advise_the_chunks_of_their_entries() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chunked_v2.zarr");
        let store = Store::open(&root).expect("open");
        let ip_dtype = index_dtype(&store, "layers/sparse/indptr").expect("dtype");
        let ip = crate::anndata::sparse::read_i64_range(
            &store,
            "layers/sparse/indptr",
            &ip_dtype,
            0,
            104,
        )
        .expect("indptr");
        let (lo, hi) = (ip[20] as u64, ip[70] as u64);
        take_advised();
        csr_rows(&root, "layers/sparse", 20..70).expect("advised");
        let chunks = |part: &str| -> Vec<PathBuf> {
            (lo / 37..hi.div_ceil(37))
                .map(|c| root.join(format!("layers/sparse/{part}/{c}")))
                .collect()
        };
        let advised: Vec<PathBuf> = take_advised()
            .into_iter()
            .filter(|p| !p.starts_with(root.join("layers/sparse/indptr")))
            .collect();
        assert_eq!(advised, [chunks("indices"), chunks("data")].concat());
        // A missing store is skipped quietly by the prefetch, reported by the read.
        assert!(csr_rows(&root.join("absent.zarr"), "layers/sparse", 0..1).is_err());
    }
}
