//! Counting a sparse output's entries per row, the first step of its
//! tasks: row blocks, the count tasks that cover them (many blocks each
//! when counting reads the inputs' `indptr` alone), and the counts.

use std::ops::Range;

use super::rows::{assemble, assemble_stacked_sparse, csr_pieces, has_dense_source, index_dtype};
use super::{MatrixTask, inputs_in};
use crate::concat::plan::{Axis, ConcatPlan, MatrixPlan, MatrixSource};
use crate::error::Result;
use crate::graph::encode;

/// Rows `b * chunks[0] ..` of sparse `m`: its row block `b`.
pub(super) fn block_range(m: &MatrixPlan, b: u64) -> Range<u64> {
    let rows = m.chunks[0];
    b * rows..((b + 1) * rows).min(m.shape[0])
}

/// Number of row blocks of a sparse output.
pub fn n_blocks(m: &MatrixPlan) -> u64 {
    m.shape[0].div_ceil(m.chunks[0])
}

/// Output chunk bytes per row a count task covers when counting reads
/// `indptr` alone: a task's row counts (4 bytes a row, sent through the
/// scheduler) and its `indptr` chunk (at most 8) stay a few times smaller
/// than an output chunk; 131072 rows for 8 MiB chunks.
const CHUNK_BYTES_PER_COUNTED_ROW: u64 = 64;

/// Fewest count tasks a sparse output has when it has that many row blocks:
/// counting is the first step of a sparse output, with nothing else of it
/// ready to run, so a single task would leave every other worker idle.
const MIN_COUNT_TASKS: u64 = 4;

/// Row blocks per count task when counting assembles the rows (reads
/// their columns): a block holds about half an output chunk of entries,
/// so a task of one block took under a millisecond, and on CSC along var
/// with `--sparse-format csc` the coordinator's share of the CPU reached
/// 5% from dispatching those and their one-block `indptr` chunks.
const ASSEMBLED_BLOCKS_PER_COUNT_TASK: u64 = 4;

/// Row blocks per count task of sparse `m` with output chunks of
/// `chunk_bytes`: many when [`counts_from_indptr`] serves every block (a
/// task per block of a few hundred rows spent more on its dispatch than
/// on its work), else [`ASSEMBLED_BLOCKS_PER_COUNT_TASK`]; either way no
/// fewer than [`MIN_COUNT_TASKS`] tasks.
pub(crate) fn count_group(plan: &ConcatPlan, m: &MatrixPlan, chunk_bytes: u64) -> u64 {
    let reads_indptr_alone = m.sparse
        && m.fill.is_zero()
        && !has_dense_source(m)
        && (m.stack == Axis::Var
            || m.diagonal
            || m.sources.iter().enumerate().all(|(i, s)| {
                s.is_none()
                    || plan.spaces[m.space]
                        .reindexer(i)
                        .new_of_old
                        .iter()
                        .all(|&n| n >= 0)
            }));
    if reads_indptr_alone {
        blocks_per_count_task(n_blocks(m), m.chunks[0], chunk_bytes)
    } else {
        ASSEMBLED_BLOCKS_PER_COUNT_TASK
            .min(n_blocks(m).div_ceil(MIN_COUNT_TASKS))
            .max(1)
    }
}

/// Row blocks per `indptr` chunk of sparse `m` (its
/// [`count_group`](MatrixPlan::count_group) set): a whole number of count
/// groups, as many as [`blocks_per_count_task`] allows. An `indptr` chunk
/// of one small count group was a chunk of a few hundred rows and a task
/// of its own.
pub(crate) fn indptr_group(m: &MatrixPlan, chunk_bytes: u64) -> u64 {
    indptr_blocks(n_blocks(m), m.chunks[0], chunk_bytes, m.count_group)
}

/// [`indptr_group`] of `n_blocks` blocks of `block_rows` rows counted in
/// groups of `count_group`.
fn indptr_blocks(n_blocks: u64, block_rows: u64, chunk_bytes: u64, count_group: u64) -> u64 {
    let g = count_group.max(1);
    let want = blocks_per_count_task(n_blocks, block_rows, chunk_bytes);
    (want / g).max(1) * g
}

/// Row blocks (of `block_rows` rows) per count task, of `n_blocks`, when
/// counting reads `indptr` alone: as many as [`CHUNK_BYTES_PER_COUNTED_ROW`]
/// allows, though no fewer than [`MIN_COUNT_TASKS`] tasks; at least one.
fn blocks_per_count_task(n_blocks: u64, block_rows: u64, chunk_bytes: u64) -> u64 {
    let by_bytes = chunk_bytes / CHUNK_BYTES_PER_COUNTED_ROW / block_rows.max(1);
    by_bytes.min(n_blocks.div_ceil(MIN_COUNT_TASKS)).max(1)
}

/// Number of count tasks of a sparse output.
pub fn n_count_tasks(m: &MatrixPlan) -> u64 {
    n_blocks(m).div_ceil(m.count_group.max(1))
}

/// The row blocks count task `c` counts.
pub fn group_blocks(m: &MatrixPlan, c: u64) -> Range<u64> {
    let g = m.count_group.max(1);
    c * g..((c + 1) * g).min(n_blocks(m))
}

/// Number of `indptr` chunks of a sparse output (it has one more entry
/// than rows), each the rows of [`MatrixPlan::indptr_group`] blocks.
pub fn n_indptr_chunks(m: &MatrixPlan) -> u64 {
    (m.shape[0] + 1).div_ceil(m.chunks[0] * m.indptr_group.max(1))
}

/// Upper bound of the number of data chunks of a sparse output.
pub fn max_data_chunks(m: &MatrixPlan) -> u64 {
    m.max_nnz.div_ceil(m.chunks[1])
}

/// Entries per row of the blocks of count task `t.block`, one list a block.
pub(super) fn sparse_count(t: &MatrixTask) -> Result<Vec<u8>> {
    let plan = ConcatPlan::load(&t.plan)?;
    let m = &plan.matrices[t.matrix];
    let mut counts: Vec<Vec<u32>> = Vec::new();
    for b in group_blocks(m, t.block) {
        counts.push(block_counts(&plan, m, block_range(m, b))?);
    }
    encode(&counts)
}

/// Entries per row of rows `range` of sparse `m`.
fn block_counts(plan: &ConcatPlan, m: &MatrixPlan, range: Range<u64>) -> Result<Vec<u32>> {
    if let Some(counts) = counts_from_indptr(plan, m, &range)? {
        return Ok(counts);
    }
    if let Some(block) = assemble_stacked_sparse(plan, m, &range, false, 0)? {
        return Ok(block.counts);
    }
    Ok(assemble(plan, m, range)?.counts)
}

/// Row lengths of a sparse source's rows `lo..hi`, from `indptr` alone.
fn row_lengths(plan: &ConcatPlan, src: &MatrixSource, lo: u64, hi: u64) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity((hi - lo) as usize);
    for (store_path, group, local) in csr_pieces(src, &(lo..hi)) {
        let store = plan.stores.open(&store_path)?;
        let path = format!("{group}/indptr");
        let dtype = index_dtype(&store, &path)?;
        let n = local.end - local.start;
        let ip = crate::anndata::sparse::read_i64_range(&store, &path, &dtype, local.start, n + 1)?;
        out.extend(ip.windows(2).map(|w| (w[1] - w[0]) as u32));
    }
    Ok(out)
}

/// Entries per output row without assembling the block, when nothing is
/// dropped or filled: every source is sparse, no column is dropped by the
/// join, and the fill is zero. `None` when the block must be assembled.
pub(super) fn counts_from_indptr(
    plan: &ConcatPlan,
    m: &MatrixPlan,
    range: &Range<u64>,
) -> Result<Option<Vec<u32>>> {
    if !m.fill.is_zero() || has_dense_source(m) {
        return Ok(None);
    }
    let space = &plan.spaces[m.space];
    let mut counts = vec![0u32; (range.end - range.start) as usize];
    match m.stack {
        Axis::Obs => {
            for (i, local) in inputs_in(m, range) {
                let drops = !m.diagonal && space.reindexer(i).new_of_old.iter().any(|&n| n < 0);
                if drops {
                    return Ok(None);
                }
                let Some(src) = &m.sources[i] else { continue };
                let first = (m.along[i][0] + local.start - range.start) as usize;
                for (k, len) in row_lengths(plan, src, local.start, local.end)?
                    .into_iter()
                    .enumerate()
                {
                    counts[first + k] = len;
                }
            }
        }
        Axis::Var => {
            for (i, src) in m.sources.iter().enumerate() {
                let Some(src) = src else { continue };
                let olds = space.reindexer(i).old_of_new_in(range.clone());
                let present: Vec<i64> = olds.iter().copied().filter(|&o| o >= 0).collect();
                let (Some(&lo), Some(&hi)) = (present.iter().min(), present.iter().max()) else {
                    continue;
                };
                let lens = row_lengths(plan, src, lo as u64, hi as u64 + 1)?;
                for (k, &old) in olds.iter().enumerate() {
                    if old >= 0 {
                        counts[k] += lens[(old - lo) as usize];
                    }
                }
            }
        }
    }
    Ok(Some(counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_tasks_group_blocks_by_bytes_but_stay_a_few() {
        let mib = 1 << 20;
        // 8 MiB chunks and blocks of 512 rows: 131072 rows (256 blocks) a
        // task when there are plenty of blocks.
        assert_eq!(blocks_per_count_task(10_000, 512, 8 * mib), 256);
        // 104 blocks: four tasks of 26, not one task of all 104 (which
        // left the other workers idle while it ran).
        let group = blocks_per_count_task(104, 512, 8 * mib);
        assert_eq!(group, 26);
        assert_eq!(104u64.div_ceil(group), MIN_COUNT_TASKS);
        // Fewer blocks than the minimum: one block a task.
        assert_eq!(blocks_per_count_task(3, 512, 8 * mib), 1);
        // Rows wider than the bytes allow: still one block a task.
        assert_eq!(blocks_per_count_task(100, 1 << 20, 8 * mib), 1);
        assert_eq!(blocks_per_count_task(0, 0, 0), 1);
    }

    #[test]
    fn indptr_chunks_are_whole_count_groups_as_large_as_the_bytes_allow() {
        let mib = 1 << 20;
        // Counting from indptr: the chunk is the count group.
        let g = blocks_per_count_task(10_000, 512, 8 * mib);
        assert_eq!(indptr_blocks(10_000, 512, 8 * mib, g), g);
        // Counting assembles rows in groups of four blocks: 412 blocks of
        // 238 rows give chunks of 100 blocks (25 count tasks), not 4.
        assert_eq!(indptr_blocks(412, 238, 8 * mib, 4), 100);
        // Never less than one count group, never a part of one.
        assert_eq!(indptr_blocks(8, 238, 8 * mib, 4), 4);
        assert_eq!(indptr_blocks(412, 1 << 20, 8 * mib, 4), 4);
        assert_eq!(indptr_blocks(412, 238, 8 * mib, 1), 103);
    }
}
