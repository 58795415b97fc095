//! Data frame columns along the concatenation axis (obs when stacking
//! cells, and data frames in {axis}m), written by graph tasks: the planner
//! decides each column's output kind and creates its arrays; one task per
//! block of rows reads the inputs' rows of that block, converts them and
//! writes them, on whichever worker runs it. The coordinator thus never
//! reads or writes the per-cell values of a column it does not have to
//! inspect (string columns, for `strings_to_categoricals`).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::column_concat::ColumnTarget;
use super::frame::{Categories, Column, ColumnReader, IndexNa, index_column, write_column_rows};
use super::index::read_strings_range;
use super::plan::ConcatPlan;
use crate::anndata::element::read_element;
use crate::anndata::{OutputStore, Store};
use crate::error::{Error, Result};
use crate::graph::{Graph, decode};
use crate::kernel::KernelRegistry;

/// One output column (or index) of an axis data frame, filled block by
/// block by [`FrameBlockTask`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameColumnPlan {
    /// The column's array (or group) in the output.
    pub out_path: String,
    /// What errors call it (`obs/cell_type`).
    pub name: String,
    /// Where its rows come from and what they become.
    pub kind: FrameColumnKind,
    /// Rows of each input, in order.
    pub rows: Vec<u64>,
    /// Rows per block, and per chunk of the output arrays.
    pub block: u64,
}

/// Where a frame column's rows come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FrameColumnKind {
    /// The index: each input's names (store, array path), with its suffix
    /// (`index_unique` and key) appended.
    Index {
        /// How the combined index is stored.
        na: IndexNa,
        /// Per input: store, names array, suffix.
        inputs: Vec<(PathBuf, String, String)>,
    },
    /// A joined column: each input's stored column (store, element path),
    /// or none when it lacks the column.
    Stored {
        /// The output kind.
        target: ColumnTarget,
        /// Per input.
        inputs: Vec<Option<(PathBuf, String)>>,
    },
    /// The label column: each input's key, as a category.
    Label {
        /// The output kind.
        target: ColumnTarget,
        /// The keys, one per input.
        keys: Vec<String>,
    },
}

impl FrameColumnPlan {
    /// Number of rows of the output column.
    fn total(&self) -> u64 {
        self.rows.iter().sum()
    }

    /// Number of block tasks.
    pub fn blocks(&self) -> u64 {
        self.total().div_ceil(self.block.max(1))
    }

    /// What a block task holds at once: a block of rows, converted, about
    /// 64 bytes a row (strings), twice (read and converted), plus a margin.
    pub fn block_memory(&self) -> u64 {
        self.block.min(self.total()) * 64 * 2 + (4 << 20)
    }
}

/// Fills block `block` of frame column `column` of the plan at `plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameBlockTask {
    /// The saved plan.
    pub plan: PathBuf,
    /// Index into [`ConcatPlan::frames`].
    pub column: usize,
    /// Block number.
    pub block: u64,
}

/// Output rows `start..end` as `(input, first local row, rows)` pieces.
pub(crate) fn pieces(rows: &[u64], start: u64, end: u64) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, &r) in rows.iter().enumerate() {
        let (lo, hi) = (start.max(offset), end.min(offset + r));
        if lo < hi {
            out.push((i, lo - offset, hi - lo));
        }
        offset += r;
    }
    out
}

/// Registers the frame kernel.
pub(crate) fn register(registry: &mut KernelRegistry) {
    registry.register("concat.frame_block", |a: &[u8], _: &[Arc<Vec<u8>>]| {
        frame_block(&decode(a)?).map(|()| Vec::new())
    });
}

/// Adds one task per block of every planned frame column to `g`.
pub(crate) fn add_frame_tasks(
    g: &mut Graph,
    plan: &ConcatPlan,
    plan_file: &std::path::Path,
) -> Result<()> {
    for (i, c) in plan.frames.iter().enumerate() {
        for block in 0..c.blocks() {
            g.add(
                "concat.frame_block",
                &FrameBlockTask {
                    plan: plan_file.to_path_buf(),
                    column: i,
                    block,
                },
                vec![],
                c.block_memory(),
                format!("{}: rows block {block}", c.name),
            )?;
        }
    }
    Ok(())
}

fn frame_block(t: &FrameBlockTask) -> Result<()> {
    let plan = ConcatPlan::load(&t.plan)?;
    let c = plan
        .frames
        .get(t.column)
        .ok_or_else(|| Error::internal("frame task of a column the plan lacks"))?;
    let start = t.block * c.block;
    let end = (start + c.block).min(c.total());
    let in_column = |e: Error| Error::data(format!("{}: {e}", c.name));
    let column = match &c.kind {
        FrameColumnKind::Index { na, inputs } => {
            let mut names = Vec::with_capacity((end - start) as usize);
            for (i, local, n) in pieces(&c.rows, start, end) {
                let (store, path, suffix) = &inputs[i];
                let store = Store::open(store)?;
                let read = read_strings_range(&store, path, local, n)?;
                names.extend(read.into_iter().map(|s| s + suffix));
            }
            index_column(*na, names)
        }
        FrameColumnKind::Stored { target, inputs } => {
            let mut col = target.empty()?;
            for (i, local, n) in pieces(&c.rows, start, end) {
                let piece = match &inputs[i] {
                    Some((store, path)) => {
                        let store = Store::open(store)?;
                        let element = read_element(&store, path)?;
                        Some(ColumnReader::open(&store, &element)?.read(local, n)?)
                    }
                    None => None,
                };
                col.append(
                    target
                        .conform(piece.as_ref(), n as usize)
                        .map_err(in_column)?,
                )
                .map_err(in_column)?;
            }
            col
        }
        FrameColumnKind::Label { target, keys } => {
            let mut col = target.empty()?;
            for (i, _, n) in pieces(&c.rows, start, end) {
                let piece = Column::Cat {
                    codes: vec![i as i64; n as usize],
                    categories: Categories::Str(keys.clone()),
                    ordered: false,
                };
                col.append(
                    target
                        .conform(Some(&piece), n as usize)
                        .map_err(in_column)?,
                )
                .map_err(in_column)?;
            }
            col
        }
    };
    let out = OutputStore::open(&plan.output)?;
    write_column_rows(&out, &c.out_path, &column, start)
}
