//! The annotation of the concatenated axis (obs when stacking cells),
//! planned here and written by graph tasks ([`super::frame_tasks`]) a block
//! of rows at a time: the index (with `index_unique` suffixes), every joined
//! column and the label column. Here, only the columns' kinds and
//! categories are decided, from the inputs' metadata and first rows, and
//! their arrays created; whether a string result's values repeat is left to
//! a graph task ([`super::frame_distinct`]). The coordinator reads no
//! column whole.

use std::path::PathBuf;

use super::column_concat::{ColumnTarget, Pandas};
use super::frame::{
    Column, ColumnReader, IndexNa, common_index_na, create_column, index_column, write_frame_group,
};
use super::frame_tasks::{FrameColumnKind, FrameColumnPlan};
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

impl Source<'_> {
    /// The output kind of this column as far as the inputs' metadata and
    /// first rows tell, and whether it still depends on whether its values
    /// repeat (a string result of obs or var: the graph's check task
    /// decides, see [`super::frame_distinct`]).
    fn target(&self, rows: &[u64], text: Text, pandas: Pandas) -> Result<(ColumnTarget, bool)> {
        let readers = match self {
            Source::Label(keys) => return Ok((ColumnTarget::label(keys.clone()), false)),
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
            return Ok((target.keeping_text(), false));
        }
        let check = target.needs_distinct();
        Ok((target, check))
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
        distinct_check: false,
    }];
    for (name, source, located) in sources {
        let (target, distinct_check) = source
            .target(&rows, text, pandas)
            .map_err(|e| Error::data(format!("{axis}/{name}: {e}")))?;
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
            distinct_check,
        });
    }
    Ok(planned)
}
