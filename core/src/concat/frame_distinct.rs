//! The check task of a string column of an axis data frame: anndata writes
//! obs and var after `strings_to_categoricals`, so a string result whose
//! values repeat (or are missing somewhere) is stored as a categorical of
//! its distinct values, and one whose values are all different stays
//! strings. Which one needs every value, so the planner does not wait for
//! it: it plans the column as strings, the block tasks write them and leave
//! the sorted hashes of their values ([`leave_hashes`]), and this task,
//! after all of them, merges the hashes ([`super::distinct`]). All distinct:
//! the strings stay. Otherwise it counts the values exactly and, if they do
//! repeat (or some are missing), rewrites the column as the categorical.
//! (Block tasks with rows of an input lacking the column write nothing:
//! strings cannot hold the missing values, and the column is a categorical
//! for certain.) Run again after a crash, it reaches the same verdict from
//! the inputs and rewrites the same bytes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::column_concat::ColumnTarget;
use super::distinct::{remove_runs, runs_distinct, write_run};
use super::frame::{create_column, write_column_rows};
use super::frame_tasks::{
    FrameColumnKind, FrameColumnPlan, block_column, blocks, pieces, read_piece,
};
use super::plan::ConcatPlan;
use crate::anndata::{OutputStore, sandbox};
use crate::error::{Error, Result};
use crate::graph::{Graph, TaskId, decode};
use crate::kernel::KernelRegistry;

/// Decides string column `column` of the plan at `plan` (see the module).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameDistinctTask {
    /// The saved plan.
    pub plan: PathBuf,
    /// Index into [`ConcatPlan::frames`].
    pub column: usize,
}

/// Registers the check kernel.
pub(crate) fn register(registry: &mut KernelRegistry) {
    registry.register("concat.frame_distinct", |a: &[u8], _: &[Arc<Vec<u8>>]| {
        check_column(&decode(a)?).map(|()| Vec::new())
    });
}

/// Adds the check task of column `column` (`c`), after its `blocks`.
pub(crate) fn add_check_task(
    g: &mut Graph,
    c: &FrameColumnPlan,
    column: usize,
    plan_file: &Path,
    blocks: Vec<TaskId>,
) -> Result<TaskId> {
    g.add(
        "concat.frame_distinct",
        &FrameDistinctTask {
            plan: plan_file.to_path_buf(),
            column,
        },
        blocks,
        c.block_memory(),
        format!("{}: whether values repeat", c.name),
    )
}

/// Where the block tasks of column `column` leave their hashes.
fn hashes_dir(output: &Path, column: usize) -> PathBuf {
    output
        .join(".anncat")
        .join("distinct")
        .join(column.to_string())
}

/// In the block task of block `block` of column `column`: leaves the
/// hashes of the block's present values for the check task.
pub(crate) fn leave_hashes(
    plan: &ConcatPlan,
    column: usize,
    block: u64,
    hashes: Vec<u64>,
) -> Result<()> {
    write_run(&hashes_dir(&plan.output, column), block, hashes)
}

fn check_column(t: &FrameDistinctTask) -> Result<()> {
    let plan = ConcatPlan::load(&t.plan)?;
    let c = plan
        .frames
        .get(t.column)
        .ok_or_else(|| Error::internal("check task of a column the plan lacks"))?;
    let dir = hashes_dir(&plan.output, t.column);
    if runs_distinct(&dir, c.blocks(), c.total())? != Some(true) {
        decide_exactly(&plan, c)?;
    }
    remove_runs(&dir)
}

/// Counts the distinct values of `c` (read again from the inputs, a block
/// at a time); if they repeat, replaces the strings the block tasks wrote
/// with the categorical anndata writes.
fn decide_exactly(plan: &ConcatPlan, c: &FrameColumnPlan) -> Result<()> {
    let FrameColumnKind::Stored { target, inputs } = &c.kind else {
        return Err(Error::internal("a checked column is not a stored one"));
    };
    let ranges = blocks(c.total(), c.block);
    let mut distinct = HashSet::new();
    for (start, end) in ranges.clone() {
        for (i, local, n) in pieces(&c.rows, start, end) {
            let piece = read_piece(&inputs[i], local, n)?;
            ColumnTarget::collect_distinct(piece.as_ref(), n as usize, &mut distinct);
        }
    }
    let decided = target.clone().finish(distinct, c.total());
    if decided.needs_distinct() {
        // All different after all (the hashes collided): strings it is.
        return Ok(());
    }
    let out = OutputStore::open(&plan.output)?;
    let node = out.node_dir(&c.out_path);
    sandbox::remove_dir_all(&node).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(out.err(&c.out_path, format!("cannot replace the strings: {e}"))),
    })?;
    create_column(&out, &c.out_path, &decided.empty()?, c.total(), c.block)?;
    let kind = FrameColumnKind::Stored {
        target: decided,
        inputs: inputs.clone(),
    };
    for (start, end) in ranges {
        let column = block_column(c, &kind, start, end)?;
        write_column_rows(&out, &c.out_path, &column, start)?;
    }
    Ok(())
}
