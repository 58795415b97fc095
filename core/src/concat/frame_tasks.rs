//! Data frame columns along the concatenation axis (obs when stacking
//! cells, and data frames in {axis}m), written by graph tasks: the planner
//! decides each column's output kind from the inputs' metadata and first
//! rows and creates its arrays; one task per block of rows reads the
//! inputs' rows of that block, converts them and writes them, on whichever
//! worker runs it. A string result's kind also depends on whether its
//! values repeat (`strings_to_categoricals`): such a column is written as
//! strings, its block tasks leave the hashes of their values, and a check
//! task ([`super::frame_distinct`]) rewrites it as a categorical if they
//! repeat. The coordinator never reads a column's per-row values.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::column_concat::{ColumnTarget, hash_bytes};
use super::frame::{Categories, Column, ColumnReader, IndexNa, index_column, write_column_rows};
use super::frame_distinct::leave_hashes;
use super::index::{read_raw_strings, read_strings_range};
use super::plan::ConcatPlan;
use zarrs::array::{ArrayBytes, ArrayBytesOffsets, ArraySubset};

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
    /// Written as strings before knowing whether the values repeat: the
    /// block tasks leave the hashes of their values for the check task.
    pub distinct_check: bool,
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
    pub(crate) fn total(&self) -> u64 {
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

/// Block starts and ends covering `0..total` in steps of `block`.
pub(crate) fn blocks(total: u64, block: u64) -> impl Iterator<Item = (u64, u64)> + Clone {
    let block = block.max(1);
    (0..total.div_ceil(block)).map(move |b| (b * block, ((b + 1) * block).min(total)))
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

/// Adds one task per block of every planned frame column to `g`, and the
/// check task of each column that needs one, after its blocks.
pub(crate) fn add_frame_tasks(
    g: &mut Graph,
    plan: &ConcatPlan,
    plan_file: &std::path::Path,
) -> Result<()> {
    for (i, c) in plan.frames.iter().enumerate() {
        let mut blocks = Vec::with_capacity(c.blocks() as usize);
        for block in 0..c.blocks() {
            blocks.push(g.add(
                "concat.frame_block",
                &FrameBlockTask {
                    plan: plan_file.to_path_buf(),
                    column: i,
                    block,
                },
                vec![],
                c.block_memory(),
                format!("{}: rows block {block}", c.name),
            )?);
        }
        if c.distinct_check {
            super::frame_distinct::add_check_task(g, c, i, plan_file, blocks)?;
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
    if c.distinct_check && lacks_values(c, start, end) {
        // No run of hashes left: the check task counts the values itself.
        return Ok(());
    }
    let out = OutputStore::open(&plan.output)?;
    if let Some(raw) = raw_strings_block(c, start, end)? {
        if c.distinct_check {
            let hashes = raw.offsets.windows(2);
            let hashes = hashes.map(|w| hash_bytes(&raw.bytes[w[0]..w[1]])).collect();
            leave_hashes(&plan, t.column, t.block, hashes)?;
        }
        return raw.write(&out, &c.out_path, start);
    }
    let column = block_column(c, &c.kind, start, end)?;
    if c.distinct_check {
        let mut hashes = Vec::with_capacity(column.len());
        ColumnTarget::collect_hashes(Some(&column), &mut hashes);
        leave_hashes(&plan, t.column, t.block, hashes)?;
    }
    write_column_rows(&out, &c.out_path, &column, start)
}

/// Rows `local..local + n` of an input's stored column, as stored (`None`:
/// the input lacks the column).
pub(crate) fn read_piece(
    input: &Option<(PathBuf, String)>,
    local: u64,
    n: u64,
) -> Result<Option<Column>> {
    let Some((store, path)) = input else {
        return Ok(None);
    };
    let store = Store::open(store)?;
    let element = read_element(&store, path)?;
    Ok(Some(ColumnReader::open(&store, &element)?.read(local, n)?))
}

/// Whether rows `start..end` of `c` include rows of an input lacking the
/// column while its planned kind (strings) cannot hold a missing value:
/// the column then becomes a categorical for certain, which its check
/// task writes whole.
fn lacks_values(c: &FrameColumnPlan, start: u64, end: u64) -> bool {
    match &c.kind {
        FrameColumnKind::Stored {
            target: ColumnTarget::Str,
            inputs,
        } => pieces(&c.rows, start, end)
            .iter()
            .any(|&(i, _, _)| inputs[i].is_none()),
        _ => false,
    }
}

/// Rows `start..end` of column `c` read from its inputs and converted as
/// `kind` says (the plan's own kind, or a check task's decided one).
pub(crate) fn block_column(
    c: &FrameColumnPlan,
    kind: &FrameColumnKind,
    start: u64,
    end: u64,
) -> Result<Column> {
    let in_column = |e: Error| Error::data(format!("{}: {e}", c.name));
    Ok(match kind {
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
                let piece = read_piece(&inputs[i], local, n)?;
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
    })
}

/// The block as stored strings, when it is strings copied as they are
/// (an index without missing names, or a string column that stays one
/// whose inputs all store plain string arrays): bytes and offsets are
/// carried from input to output without making a `String` of each value.
/// `None` when the block needs converting.
fn raw_strings_block(c: &FrameColumnPlan, start: u64, end: u64) -> Result<Option<RawStrings>> {
    let mut raw = RawStrings::with_capacity((end - start) as usize);
    match &c.kind {
        FrameColumnKind::Index { na: None, inputs } => {
            for (i, local, n) in pieces(&c.rows, start, end) {
                let (store, path, suffix) = &inputs[i];
                let store = Store::open(store)?;
                if !raw.append(read_raw_strings(&store, path, local, n)?, suffix) {
                    return Ok(None);
                }
            }
        }
        FrameColumnKind::Stored {
            target: ColumnTarget::Str,
            inputs,
        } => {
            for (i, local, n) in pieces(&c.rows, start, end) {
                let Some((store, path)) = &inputs[i] else {
                    return Ok(None);
                };
                let store = Store::open(store)?;
                let element = read_element(&store, path)?;
                let read = ColumnReader::open(&store, &element)?.read_raw(local, n)?;
                if !raw.append(read, "") {
                    return Ok(None);
                }
            }
        }
        _ => return Ok(None),
    }
    Ok(Some(raw))
}

/// Strings as zarr holds them: UTF-8 bytes end to end, and where each starts.
struct RawStrings {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl RawStrings {
    fn with_capacity(n: usize) -> RawStrings {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        RawStrings {
            bytes: Vec::new(),
            offsets,
        }
    }

    /// Appends strings `read` by [`read_raw_strings`], each followed by
    /// `suffix`; `false` (nothing appended) when there are none (`None`:
    /// the values were not variable-length).
    fn append(&mut self, read: Option<(String, Vec<usize>)>, suffix: &str) -> bool {
        let Some((text, offsets)) = read else {
            return false;
        };
        let bytes = text.as_bytes();
        let base = self.bytes.len();
        let first = offsets.first().copied().unwrap_or(0);
        if suffix.is_empty() {
            let last = offsets.last().copied().unwrap_or(first);
            self.bytes.extend_from_slice(&bytes[first..last]);
            self.offsets
                .extend(offsets[1..].iter().map(|&o| base + o - first));
        } else {
            self.bytes
                .reserve(bytes.len() + suffix.len() * offsets.len());
            for w in offsets.windows(2) {
                self.bytes.extend_from_slice(&bytes[w[0]..w[1]]);
                self.bytes.extend_from_slice(suffix.as_bytes());
                self.offsets.push(self.bytes.len());
            }
        }
        true
    }

    /// Writes the strings as rows `start..` of the string array at `path`.
    fn write(self, out: &OutputStore, path: &str, start: u64) -> Result<()> {
        let n = self.offsets.len() - 1;
        if n == 0 {
            return Ok(());
        }
        crate::kernel::record_bytes_written(self.bytes.len() as u64);
        let subset = ArraySubset::new_with_start_shape(vec![start], vec![n as u64])
            .map_err(|e| out.err(path, e))?;
        let offsets = ArrayBytesOffsets::new(self.offsets).map_err(|e| out.err(path, e))?;
        let bytes = ArrayBytes::new_vlen(self.bytes, offsets).map_err(|e| out.err(path, e))?;
        out.writable_array(path)?
            .store_array_subset(&subset, bytes)
            .map_err(|e| out.err(path, format!("cannot write strings: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_pieces_cover_every_row_once() {
        let all: Vec<(u64, u64)> = blocks(10, 4).collect();
        assert_eq!(all, vec![(0, 4), (4, 8), (8, 10)]);
        assert_eq!(blocks(0, 4).count(), 0);
        // Inputs of 3, 0 and 5 rows; output rows 2..6.
        assert_eq!(pieces(&[3, 0, 5], 2, 6), vec![(0, 2, 1), (2, 0, 3)]);
        assert_eq!(pieces(&[3, 0, 5], 0, 8).len(), 2);
    }
}
