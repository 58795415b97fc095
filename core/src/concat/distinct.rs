//! Whether a column's values are all distinct, judged from 64-bit hashes
//! in bounded memory by graph tasks: each block task leaves the sorted
//! hashes of its block's values in a file of their own (a run), and one
//! check task merges the runs, holding a small buffer per run, and stops at
//! the first repeat. No process holds 8 bytes a row of the whole column.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::anndata::sandbox;
use crate::error::{Error, Result};

/// Bytes read from each run at a time while merging.
const RUN_BUFFER_BYTES: usize = 16 << 10;

/// The file holding run `block` in `dir`.
fn run_file(dir: &Path, block: u64) -> PathBuf {
    dir.join(format!("{block}.bin"))
}

/// Leaves `hashes` (of one block's present values) sorted as run `block`
/// in `dir`, replacing an earlier attempt's.
pub(crate) fn write_run(dir: &Path, block: u64, mut hashes: Vec<u64>) -> Result<()> {
    let io = |e: std::io::Error| Error::path(dir, format!("cannot leave value hashes: {e}"));
    hashes.sort_unstable();
    sandbox::create_dir_all(dir).map_err(io)?;
    let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
    sandbox::write(&run_file(dir, block), &bytes).map_err(io)
}

/// Whether runs `0..blocks` in `dir` hold `total` hashes, all different:
/// `Some(true)` then; `Some(false)` when two are equal (a repeat or, rarely,
/// a collision) or there are fewer (values were missing); `None` when a run
/// is not there (left by a block task of an earlier attempt whose file a
/// crash lost): the caller then counts the values themselves.
pub(crate) fn runs_distinct(dir: &Path, blocks: u64, total: u64) -> Result<Option<bool>> {
    let io = |e: std::io::Error| Error::path(dir, format!("cannot read value hashes: {e}"));
    let mut runs = Vec::with_capacity(blocks as usize);
    let mut count = 0u64;
    for b in 0..blocks {
        let path = run_file(dir, b);
        match File::open(&path) {
            Ok(f) => {
                count += f.metadata().map_err(io)?.len() / 8;
                runs.push(BufReader::with_capacity(RUN_BUFFER_BYTES, f));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        }
    }
    if count != total {
        return Ok(Some(false));
    }
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (r, run) in runs.iter_mut().enumerate() {
        if let Some(h) = next_hash(run).map_err(io)? {
            heap.push(Reverse((h, r)));
        }
    }
    let mut last = None;
    while let Some(Reverse((h, r))) = heap.pop() {
        if last == Some(h) {
            return Ok(Some(false));
        }
        last = Some(h);
        if let Some(next) = next_hash(&mut runs[r]).map_err(io)? {
            heap.push(Reverse((next, r)));
        }
    }
    Ok(Some(true))
}

/// The next hash of a run, `None` at its end.
fn next_hash(run: &mut BufReader<File>) -> std::io::Result<Option<u64>> {
    let mut bytes = [0u8; 8];
    match run.read_exact(&mut bytes) {
        Ok(()) => Ok(Some(u64::from_le_bytes(bytes))),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the runs in `dir` (gone already is fine).
pub(crate) fn remove_runs(dir: &Path) -> Result<()> {
    match sandbox::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::path(dir, format!("cannot remove value hashes: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(r: u64) -> u64 {
        r.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5555
    }

    /// Leaves rows `0..total` hashed by `f` in runs of `block` rows
    /// (`skip`: a row with no value), then merges them.
    fn check(total: u64, block: u64, f: impl Fn(u64) -> u64, skip: Option<u64>) -> Option<bool> {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs = dir.path().join("runs");
        let blocks = total.div_ceil(block);
        for b in 0..blocks {
            let rows = b * block..((b + 1) * block).min(total);
            let hashes = rows.filter(|&r| Some(r) != skip).map(&f).collect();
            write_run(&runs, b, hashes).expect("write");
        }
        let got = runs_distinct(&runs, blocks, total).expect("merge");
        remove_runs(&runs).expect("remove");
        assert!(!runs.exists(), "the runs are removed");
        remove_runs(&runs).expect("removing again is fine");
        got
    }

    #[test]
    fn distinct_repeated_and_missing_across_runs() {
        for (total, block) in [(10_000, 1000), (10_000, 10_000), (5, 1), (1001, 7)] {
            assert_eq!(
                check(total, block, mix, None),
                Some(true),
                "{total}/{block} distinct"
            );
            // A repeat in the last row of the column, of the first row.
            let last = total - 1;
            let repeat = |r: u64| mix(if r == last { 0 } else { r });
            assert_eq!(
                check(total, block, repeat, None),
                Some(false),
                "{total}/{block} repeat"
            );
            // A repeat inside one run.
            let inside = |r: u64| mix(if r == 1 { 0 } else { r });
            assert_eq!(
                check(total, block, inside, None),
                Some(false),
                "{total}/{block} inside"
            );
            assert_eq!(
                check(total, block, mix, Some(3)),
                Some(false),
                "{total}/{block} missing"
            );
        }
        assert_eq!(check(0, 10, mix, None), Some(true), "no rows");
    }

    #[test]
    fn a_lost_run_asks_for_an_exact_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_run(dir.path(), 0, vec![3, 1]).expect("write");
        assert_eq!(runs_distinct(dir.path(), 2, 4).expect("merge"), None);
        assert_eq!(runs_distinct(dir.path(), 1, 2).expect("merge"), Some(true));
    }
}
