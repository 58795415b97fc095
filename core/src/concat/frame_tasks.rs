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
    let out = OutputStore::open(&plan.output)?;
    if let Some(raw) = raw_strings_block(c, start, end)? {
        return raw.write(&out, &c.out_path, start);
    }
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
    write_column_rows(&out, &c.out_path, &column, start)
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
