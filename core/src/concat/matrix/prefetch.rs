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

use std::cell::RefCell;
use std::collections::HashMap;

use zarrs::array::Array;

use super::rows::csr_pieces;
use super::*;
use crate::anndata::backend::Backend;
use crate::anndata::range_read::advise_range;

/// Arrays a thread opened to fetch ahead, kept between tasks: the
/// prefetch thread would otherwise read and parse the same metadata for
/// every task. Cleared when it grows past this many.
const OPEN_ARRAYS_MAX: usize = 256;

/// An array opened to fetch ahead, with its stored element type.
struct OpenArray {
    array: Array<Backend>,
    dtype: DType,
}

/// Opened arrays by (store, array path).
type OpenArrays = HashMap<(PathBuf, String), Arc<OpenArray>>;

thread_local! {
    static OPEN_ARRAYS: RefCell<OpenArrays> = RefCell::new(HashMap::new());
}

/// The array `path` of the zarr store at `store_path`, opened once per
/// thread. An `.h5ad` file is not opened: its chunks are not advised
/// (they lie inside one file, found through the HDF5 library, whose calls
/// the task thread would then wait for).
fn array(store_path: &Path, path: &str) -> Result<Arc<OpenArray>> {
    if !store_path.is_dir() {
        return Err(Error::path(
            store_path,
            "not a zarr directory: not fetched ahead",
        ));
    }
    let key = (store_path.to_path_buf(), path.to_string());
    if let Some(a) = OPEN_ARRAYS.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(a);
    }
    let store = Store::open(store_path)?;
    let a = Arc::new(OpenArray {
        array: store.array(path)?,
        dtype: index_dtype(&store, path)?,
    });
    OPEN_ARRAYS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= OPEN_ARRAYS_MAX {
            c.clear();
        }
        c.insert(key, a.clone());
    });
    Ok(a)
}

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
    for (_, src, from, len) in input_entries(m, at, lo, hi) {
        advise(&src.store, &src.path, from, len);
    }
    Ok(())
}

/// The stored entries of rows `rows` of the CSR group `path` in
/// `store_path`: found from the two ends of its `indptr`.
fn csr_rows(store_path: &Path, path: &str, rows: Range<u64>) -> Result<()> {
    let ip_path = format!("{path}/indptr");
    let indptr = array(store_path, &ip_path)?;
    let at = |row: u64| -> Result<u64> {
        let v = crate::anndata::sparse::i64_range_of(&indptr.array, &indptr.dtype, row, 1)
            .map_err(|e| Error::path(store_path, format!("{ip_path}: {e}")))?;
        Ok(v.first().map_or(0, |&p| p.max(0) as u64))
    };
    let (lo, hi) = (at(rows.start)?, at(rows.end)?);
    if hi > lo {
        advise(store_path, path, lo, hi - lo);
    }
    Ok(())
}

/// Advises the chunks of entries `start .. start + len` of the group
/// `path`'s `indices` and `data`.
fn advise(store_path: &Path, path: &str, start: u64, len: u64) {
    for part in ["indices", "data"] {
        if let Ok(array) = array(store_path, &format!("{path}/{part}")) {
            advise_range(&array.array, start, len);
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
        // A missing store, or an h5ad file, is skipped (the read reports
        // what is wrong).
        assert!(csr_rows(&root.join("absent.zarr"), "layers/sparse", 0..1).is_err());
        let h5ad = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/legacy/a07.h5ad");
        assert!(h5ad.is_file(), "fixture {}", h5ad.display());
        assert!(csr_rows(&h5ad, "layers/sparse", 0..1).is_err());
        assert!(take_advised().is_empty());
    }

    /// On the copy path, each input's entries that a chunk's entries come
    /// from are advised: the indices' and the values' chunks holding
    /// them, input by input, and nothing of an input outside the chunk.
    #[test]
    fn copied_entries_advise_the_chunks_they_come_from() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chunked_v2.zarr");
        let source = MatrixSource {
            store: root.clone(),
            path: "layers/sparse".into(),
            kind: SourceKind::Csr,
            dtype: DType::Float64,
            columns: 29,
            origin: (root.clone(), "layers/sparse".into()),
            bytes: 0,
            read_chunk_bytes: 0,
            parts: Vec::new(),
        };
        let m = MatrixPlan {
            out_path: "X".into(),
            space: 0,
            sources: vec![Some(source.clone()), None, Some(source)],
            sparse: true,
            dtype: DType::Float64,
            shape: [300, 29],
            chunks: [100, 100],
            fill: Scalar::Int(0),
            max_nnz: 0,
            stack: Axis::Obs,
            along: vec![[0, 100], [100, 0], [100, 200]],
            diagonal: false,
            count_group: 1,
            indptr_group: 1,
        };
        // Input 0's entries land on 0..100, input 2's (from its entry 10)
        // on 100..400; input 1 has none.
        let at = InputEntries {
            start: vec![0, 100, 100, 400],
            base: vec![0, 0, 10],
        };
        let chunk = |part: &str, c: u64| root.join(format!("layers/sparse/{part}/{c}"));
        take_advised();
        // Output entries 90..150: input 0's 90..100 (chunk 2 of 37), input
        // 2's 10..60 (chunks 0 and 1).
        entries(&m, &at, 90, 150).expect("advised");
        assert_eq!(
            take_advised(),
            [
                chunk("indices", 2),
                chunk("data", 2),
                chunk("indices", 0),
                chunk("indices", 1),
                chunk("data", 0),
                chunk("data", 1),
            ]
        );
        // Entries of input 2 only (its 110..120: chunks 2 and 3), nothing
        // of input 0.
        entries(&m, &at, 200, 210).expect("advised");
        assert_eq!(
            take_advised(),
            [
                chunk("indices", 2),
                chunk("indices", 3),
                chunk("data", 2),
                chunk("data", 3),
            ]
        );
    }
}
