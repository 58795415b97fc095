//! Whether a column's values are all distinct, judged from 64-bit hashes
//! in bounded memory. Up to [`PARTITION_BYTES`] of hashes are sorted in
//! memory; beyond that, each block's hashes are dealt by value into
//! partition files under a scratch directory (8 bytes a row on disk, in one
//! pass), and each partition is then sorted on its own, so the planner's
//! memory does not grow with the rows.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Hashes held in memory at once per partition.
pub(crate) const PARTITION_BYTES: u64 = 4 << 20;

/// Whether the `total` hashes given block by block are all distinct.
/// `hash_block(start, end, out)` appends the hashes of rows `start..end`
/// (fewer than `end - start` when some values are missing). `None` when a
/// block had missing values; `Some(false)` when two hashes are equal (a
/// repeat or, rarely, a collision: the caller then counts exactly).
pub(crate) fn hashes_distinct(
    total: u64,
    block: u64,
    scratch: &Path,
    hash_block: impl Fn(u64, u64, &mut Vec<u64>) -> Result<()> + Sync,
) -> Result<Option<bool>> {
    let block = block.max(1);
    let blocks = total.div_ceil(block);
    let partitions = (total * 8).div_ceil(PARTITION_BYTES).max(1);
    if partitions == 1 {
        let mut hashes = vec![0u64; usize::try_from(total).unwrap_or(0)];
        let complete = hashes
            .par_chunks_mut(block as usize)
            .enumerate()
            .map(|(b, slots)| -> Result<bool> {
                let start = b as u64 * block;
                let mut got = Vec::with_capacity(slots.len());
                hash_block(start, start + slots.len() as u64, &mut got)?;
                let complete = got.len() == slots.len();
                if complete {
                    slots.copy_from_slice(&got);
                }
                Ok(complete)
            })
            .collect::<Result<Vec<bool>>>()?;
        if complete.contains(&false) {
            return Ok(None);
        }
        hashes.par_sort_unstable();
        return Ok(Some(hashes.windows(2).all(|w| w[0] != w[1])));
    }
    let spill = Spill::create(scratch, partitions as usize)?;
    let complete = (0..blocks)
        .into_par_iter()
        .map(|b| -> Result<bool> {
            let (start, end) = (b * block, ((b + 1) * block).min(total));
            let mut got = Vec::with_capacity((end - start) as usize);
            hash_block(start, end, &mut got)?;
            if got.len() as u64 != end - start {
                return Ok(false);
            }
            spill.deal(&got)?;
            Ok(true)
        })
        .collect::<Result<Vec<bool>>>()?;
    if complete.contains(&false) {
        return Ok(None);
    }
    spill.flush()?;
    let distinct = (0..spill.parts.len())
        .into_par_iter()
        .map(|p| -> Result<bool> {
            let mut hashes = spill.read(p)?;
            hashes.sort_unstable();
            Ok(hashes.windows(2).all(|w| w[0] != w[1]))
        })
        .collect::<Result<Vec<bool>>>()?;
    Ok(Some(!distinct.contains(&false)))
}

/// Partition files of hashes; the directory goes away with it.
struct Spill {
    dir: PathBuf,
    parts: Vec<Mutex<BufWriter<File>>>,
}

impl Spill {
    fn create(scratch: &Path, n: usize) -> Result<Spill> {
        let io = |e: std::io::Error| Error::path(scratch, format!("cannot spill hashes: {e}"));
        std::fs::create_dir_all(scratch).map_err(io)?;
        let parts = (0..n)
            .map(|p| {
                File::create(scratch.join(format!("{p}.bin")))
                    .map(|f| Mutex::new(BufWriter::new(f)))
                    .map_err(io)
            })
            .collect::<Result<_>>()?;
        Ok(Spill {
            dir: scratch.to_path_buf(),
            parts,
        })
    }

    fn io(&self, e: std::io::Error) -> Error {
        Error::path(&self.dir, format!("cannot spill hashes: {e}"))
    }

    /// Appends each hash to its partition's file (the partition: the
    /// hash's top bits scaled to the partition count).
    fn deal(&self, hashes: &[u64]) -> Result<()> {
        let n = self.parts.len() as u64;
        let mut by_part: Vec<Vec<u8>> = vec![Vec::new(); self.parts.len()];
        for &h in hashes {
            by_part[(((h >> 32) * n) >> 32) as usize].extend_from_slice(&h.to_le_bytes());
        }
        for (p, bytes) in by_part.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let mut w = self.parts[p]
                .lock()
                .map_err(|_| Error::internal("hash spill lock poisoned"))?;
            w.write_all(bytes).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        for part in &self.parts {
            part.lock()
                .map_err(|_| Error::internal("hash spill lock poisoned"))?
                .flush()
                .map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    /// The hashes of partition `p`.
    fn read(&self, p: usize) -> Result<Vec<u64>> {
        let mut bytes = Vec::new();
        File::open(self.dir.join(format!("{p}.bin")))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| self.io(e))?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes of rows: row `r` hashes to `f(r)`; rows in `missing` have none.
    fn run(total: u64, f: impl Fn(u64) -> u64 + Sync, missing: Option<u64>) -> Option<bool> {
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = dir.path().join("hashes");
        let got = hashes_distinct(total, 1000, &scratch, |a, b, out| {
            out.extend((a..b).filter(|&r| Some(r) != missing).map(&f));
            Ok(())
        })
        .expect("check");
        assert!(!scratch.exists(), "the spill directory is removed");
        got
    }

    fn mix(r: u64) -> u64 {
        r.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5555
    }

    #[test]
    fn distinct_repeated_and_missing_in_memory_and_spilled() {
        // One partition in memory, then several spilled to disk.
        for total in [10_000, 3 * PARTITION_BYTES / 8 + 123] {
            assert_eq!(run(total, mix, None), Some(true), "{total} distinct");
            let last = total - 1;
            let repeat = |r: u64| mix(if r == last { 7 } else { r });
            assert_eq!(run(total, repeat, None), Some(false), "{total} one repeat");
            assert_eq!(run(total, mix, Some(5)), None, "{total} one missing");
        }
        assert_eq!(run(0, mix, None), Some(true));
    }
}
