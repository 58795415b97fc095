//! The annotation of the concatenated axis (obs when stacking cells),
//! planned here and written by graph tasks ([`super::frame_tasks`]) a block
//! of rows at a time: the index (with `index_unique` suffixes), every joined
//! column and the label column. Here, only the columns' kinds and
//! categories are decided (for string results, whether their values repeat,
//! from sorted 64-bit hashes) and their arrays created; no per-row value is
//! written by the coordinator.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::column_concat::{ColumnTarget, Pandas};
use super::distinct::hashes_distinct;
use super::frame::{
    Categories, Column, ColumnReader, IndexNa, common_index_na, create_column, index_column,
    write_frame_group,
};
use super::frame_tasks::{FrameColumnKind, FrameColumnPlan, pieces};
use crate::anndata::OutputStore;
use crate::anndata::Store;
use crate::anndata::element::Element;
use crate::error::{Error, Result};

/// One input's share of the axis annotation (or of a data frame in
/// {axis}m, whose rows are the axis' too).
#[derive(Clone)]
pub(crate) struct FramePart<'a> {
    /// The input's store.
    pub(crate) store: &'a Store,
    /// Its data frame (`None`: it has none, every column is missing).
    pub(crate) frame: Option<&'a Element>,
    /// The axis index array (obs or var names of the input).
    pub(crate) index: &'a Element,
    /// Its number of rows.
    pub(crate) rows: u64,
    /// Appended to each of its names (`index_unique` + key, or nothing).
    pub(crate) suffix: String,
    /// How its index is stored (see [`super::frame::index_na`]).
    pub(crate) index_na: IndexNa,
}

/// How string results are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// As anndata writes obs and var: `strings_to_categoricals` first.
    Categorize,
    /// As anndata writes other data frames: object strings as they are,
    /// missing ones as the text "nan".
    Keep,
}

/// Where the rows of one output column come from.
enum Source<'a> {
    /// Each input's stored column (`None`: the input lacks it).
    Stored(Vec<Option<ColumnReader<'a>>>),
    /// The label column: each input's key.
    Label(Vec<String>),
}

/// Block starts covering `0..total` in steps of `block`.
fn blocks(total: u64, block: u64) -> impl Iterator<Item = (u64, u64)> {
    let block = block.max(1);
    (0..total.div_ceil(block)).map(move |b| (b * block, ((b + 1) * block).min(total)))
}

impl Source<'_> {
    /// Rows `local..local + n` of input `i`.
    fn read(&self, i: usize, local: u64, n: u64) -> Result<Option<Column>> {
        Ok(match self {
            Source::Stored(readers) => match &readers[i] {
                Some(r) => Some(r.read(local, n)?),
                None => None,
            },
            Source::Label(keys) => Some(Column::Cat {
                codes: vec![i as i64; n as usize],
                categories: Categories::Str(keys.clone()),
                ordered: false,
            }),
        })
    }

    /// Calls `f(first output row, pieces)` for each block of `block` rows,
    /// with every input's piece of it read (`None`: that input lacks the
    /// column) and its row count.
    fn each_block(
        &self,
        rows: &[u64],
        block: u64,
        mut f: impl FnMut(u64, Vec<(Option<Column>, usize)>) -> Result<()>,
    ) -> Result<()> {
        for (start, end) in blocks(rows.iter().sum(), block) {
            let read = pieces(rows, start, end)
                .into_iter()
                .map(|(i, local, n)| Ok((self.read(i, local, n)?, n as usize)))
                .collect::<Result<_>>()?;
            f(start, read)?;
        }
        Ok(())
    }

    /// The output kind of this column.
    fn target(
        &self,
        rows: &[u64],
        block: u64,
        text: Text,
        pandas: Pandas,
        scratch: &Path,
    ) -> Result<ColumnTarget> {
        let readers = match self {
            Source::Label(keys) => return Ok(ColumnTarget::label(keys.clone())),
            Source::Stored(readers) => readers,
        };
        let heads: Vec<Option<Column>> = readers
            .iter()
            .map(|r| r.as_ref().map(ColumnReader::head).transpose())
            .collect::<Result<_>>()?;
        let decide: Vec<(Option<&Column>, u64)> = heads
            .iter()
            .zip(rows)
            .map(|(h, &n)| (h.as_ref(), n))
            .collect();
        let target = ColumnTarget::decide(&decide, pandas)?;
        if text == Text::Keep {
            return Ok(target.keeping_text());
        }
        if !target.needs_distinct() {
            return Ok(target);
        }
        // First look for repeats among 64-bit hashes of the values, 8 bytes
        // a row (spilled to `scratch` by partition beyond a few MiB; a
        // column of unique names stays a string array and is never held
        // whole). Distinct hashes prove distinct values; equal ones (a
        // repeat, a missing value or, rarely, a collision) send the column
        // to the exact count below, which collects the values of a column
        // that becomes a categorical anyway. Blocks are read and hashed on
        // all cores.
        let total: u64 = rows.iter().sum();
        let distinct = hashes_distinct(total, block, scratch, |start, end, got| {
            for (i, local, n) in pieces(rows, start, end) {
                if let Some(r) = &readers[i]
                    && r.hash_strings(local, n, got)?
                {
                    continue;
                }
                ColumnTarget::collect_hashes(self.read(i, local, n)?.as_ref(), got);
            }
            Ok(())
        })?;
        if distinct == Some(true) {
            return Ok(target);
        }
        let mut distinct = HashSet::new();
        self.each_block(rows, block, |_, read| {
            for (piece, n) in &read {
                ColumnTarget::collect_distinct(piece.as_ref(), *n, &mut distinct);
            }
            Ok(())
        })?;
        Ok(target.finish(distinct, total))
    }
}

/// Per input: where its stored column is (store, element path), if it has it.
type Located = Vec<Option<(PathBuf, String)>>;

/// Plans the axis annotation (or an {axis}m data frame) at `path`: the
/// index named `index_name`, the `columns` joined across inputs (each
/// input's own if it has it), then `label` (replacing a column of that name
/// in place) — as `pd.concat` after anndata's dtype unification, then
/// written as anndata writes it (`text`). Creates the frame group and its
/// arrays; returns the columns for the block tasks to fill.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_axis_frame(
    out: &OutputStore,
    path: &str,
    index_name: Option<&str>,
    parts: &[FramePart<'_>],
    columns: &[String],
    label: Option<(&str, &[String])>,
    block: u64,
    text: Text,
) -> Result<Vec<FrameColumnPlan>> {
    let mut sources: Vec<(String, Source<'_>, Located)> = Vec::new();
    for name in columns {
        let elements: Vec<Option<&Element>> = parts
            .iter()
            .map(|p| {
                // Only a listed column counts: the frame's index array (or
                // any other child) of that name is not one.
                p.frame
                    .filter(|f| super::frame_columns(f).contains(name))
                    .and_then(|f| f.child(name))
            })
            .collect();
        let readers = parts
            .iter()
            .zip(&elements)
            .map(|(p, e)| e.map(|e| ColumnReader::open(p.store, e)).transpose())
            .collect::<Result<Vec<_>>>()?;
        for (p, r) in parts.iter().zip(&readers) {
            if let Some(r) = r
                && r.len() != p.rows
            {
                let frame = p.frame.map_or("", |f| f.path.as_str());
                return Err(p.store.err(
                    &format!("{frame}/{name}"),
                    format!("has {} rows but the index has {}", r.len(), p.rows),
                ));
            }
        }
        let located = parts
            .iter()
            .zip(&elements)
            .map(|(p, e)| e.map(|e| (p.store.root().to_path_buf(), e.path.clone())))
            .collect();
        sources.push((name.clone(), Source::Stored(readers), located));
    }
    if let Some((label, keys)) = label {
        let source = Source::Label(keys.to_vec());
        match sources.iter_mut().find(|(n, _, _)| n == label) {
            Some(slot) => slot.1 = source,
            None => sources.push((label.to_string(), source, Vec::new())),
        }
    }
    let names: Vec<String> = sources.iter().map(|(n, _, _)| n.clone()).collect();
    let index_path = write_frame_group(out, path, index_name, &names)?;
    let rows: Vec<u64> = parts.iter().map(|p| p.rows).collect();
    let total: u64 = rows.iter().sum();
    let pandas = if parts.iter().all(|p| p.index_na.is_some()) {
        Pandas::V3
    } else {
        Pandas::V2
    };
    let axis = path.strip_prefix("raw/").unwrap_or(path);

    let na = common_index_na(parts.iter().map(|p| p.index_na));
    create_column(
        out,
        &index_path,
        &index_column(na, Vec::new()),
        total,
        block,
    )?;
    let mut planned = vec![FrameColumnPlan {
        out_path: index_path,
        name: format!("{axis} index"),
        kind: FrameColumnKind::Index {
            na,
            inputs: parts
                .iter()
                .map(|p| {
                    (
                        p.store.root().to_path_buf(),
                        p.index.path.clone(),
                        p.suffix.clone(),
                    )
                })
                .collect(),
        },
        rows: rows.clone(),
        block,
    }];
    // Deciding a string column's kind reads it whole (hashing its values):
    // the columns are decided on all cores at once.
    // Hashes beyond a few MiB spill under the output's scratch directory.
    let scratch = out.root().join(".anncat").join("tmp");
    let targets: Vec<Result<ColumnTarget>> = sources
        .par_iter()
        .enumerate()
        .map(|(k, (name, source, _))| {
            let spill = scratch.join(format!("hashes-{}-{k}", path.replace('/', "_")));
            source
                .target(&rows, block, text, pandas, &spill)
                .map_err(|e| Error::data(format!("{axis}/{name}: {e}")))
        })
        .collect();
    for ((name, source, located), target) in sources.into_iter().zip(targets) {
        let target = target?;
        let col_path = format!("{path}/{name}");
        create_column(out, &col_path, &target.empty()?, total, block)?;
        let kind = match source {
            Source::Stored(_) => FrameColumnKind::Stored {
                target,
                inputs: located,
            },
            Source::Label(keys) => FrameColumnKind::Label { target, keys },
        };
        planned.push(FrameColumnPlan {
            out_path: col_path,
            name: format!("{axis}/{name}"),
            kind,
            rows: rows.clone(),
            block,
        });
    }
    Ok(planned)
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
