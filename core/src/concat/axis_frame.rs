//! The annotation of the concatenated axis (obs when stacking cells),
//! written a block of rows at a time: the index (with `index_unique`
//! suffixes), every joined column and the label column. Only the columns'
//! kinds and categories, and the distinct values of string results, are
//! gathered whole; rows are read, converted and written block by block, so
//! a million-cell obs never has to fit in memory.

use std::collections::HashSet;

use rayon::prelude::*;

use super::column_concat::{ColumnTarget, Pandas};
use super::frame::{
    Categories, Column, ColumnReader, IndexNa, common_index_na, create_column, index_column,
    write_column_rows, write_frame_group,
};
use super::index::read_strings_range;
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

/// Output rows `start..end` as `(input, first local row, rows)` pieces.
fn pieces(rows: &[u64], start: u64, end: u64) -> Vec<(usize, u64, u64)> {
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
    fn target(&self, rows: &[u64], block: u64, text: Text, pandas: Pandas) -> Result<ColumnTarget> {
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
        // a row, sorted (a column of unique names stays a string array and
        // is never held whole). Distinct hashes prove distinct values;
        // equal ones (a repeat, a missing value or, rarely, a collision)
        // send the column to the exact count below, which collects the
        // values of a column that becomes a categorical anyway.
        let total: u64 = rows.iter().sum();
        let mut hashes = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        self.each_block(rows, block, |_, read| {
            for (piece, _) in &read {
                ColumnTarget::collect_hashes(piece.as_ref(), &mut hashes);
            }
            Ok(())
        })?;
        if hashes.len() as u64 == total {
            hashes.par_sort_unstable();
            if hashes.windows(2).all(|w| w[0] != w[1]) {
                return Ok(target);
            }
        }
        drop(hashes);
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

/// Writes the axis annotation (or an {axis}m data frame) at `path`: the
/// index named `index_name`, the `columns` joined across inputs (each
/// input's own if it has it), then `label` (replacing a column of that name
/// in place) — as `pd.concat` after anndata's dtype unification, then
/// written as anndata writes it (`text`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_axis_frame(
    out: &OutputStore,
    path: &str,
    index_name: Option<&str>,
    parts: &[FramePart<'_>],
    columns: &[String],
    label: Option<(&str, &[String])>,
    block: u64,
    text: Text,
) -> Result<()> {
    let mut sources: Vec<(String, Source<'_>)> = Vec::new();
    for name in columns {
        let readers = parts
            .iter()
            .map(|p| {
                // Only a listed column counts: the frame's index array (or
                // any other child) of that name is not one.
                p.frame
                    .filter(|f| super::frame_columns(f).contains(name))
                    .and_then(|f| f.child(name))
                    .map(|e| ColumnReader::open(p.store, e))
                    .transpose()
            })
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
        sources.push((name.clone(), Source::Stored(readers)));
    }
    if let Some((label, keys)) = label {
        let source = Source::Label(keys.to_vec());
        match sources.iter_mut().find(|(n, _)| n == label) {
            Some(slot) => slot.1 = source,
            None => sources.push((label.to_string(), source)),
        }
    }
    let names: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
    let index_path = write_frame_group(out, path, index_name, &names)?;
    let rows: Vec<u64> = parts.iter().map(|p| p.rows).collect();
    let total: u64 = rows.iter().sum();
    let pandas = if parts.iter().all(|p| p.index_na.is_some()) {
        Pandas::V3
    } else {
        Pandas::V2
    };

    let na = common_index_na(parts.iter().map(|p| p.index_na));
    let write_index = || -> Result<()> {
        create_column(
            out,
            &index_path,
            &index_column(na, Vec::new()),
            total,
            block,
        )?;
        for (start, end) in blocks(total, block) {
            let mut names = Vec::with_capacity((end - start) as usize);
            for (i, local, n) in pieces(&rows, start, end) {
                let p = &parts[i];
                let read = read_strings_range(p.store, &p.index.path, local, n)?;
                names.extend(read.into_iter().map(|s| s + &p.suffix));
            }
            write_column_rows(out, &index_path, &index_column(na, names), start)?;
        }
        Ok(())
    };

    let axis = path.strip_prefix("raw/").unwrap_or(path);
    let write_column = |(name, source): &(String, Source<'_>)| -> Result<()> {
        let target = source
            .target(&rows, block, text, pandas)
            .map_err(|e| Error::data(format!("{axis}/{name}: {e}")))?;
        let col_path = format!("{path}/{name}");
        let in_column = |e: Error| Error::data(format!("{axis}/{name}: {e}"));
        create_column(out, &col_path, &target.empty()?, total, block)?;
        source.each_block(&rows, block, |start, read| {
            let mut col = target.empty()?;
            for (piece, n) in &read {
                col.append(target.conform(piece.as_ref(), *n).map_err(in_column)?)
                    .map_err(in_column)?;
            }
            write_column_rows(out, &col_path, &col, start)
        })
    };
    // The index and the columns are independent arrays: written on all
    // cores at once, the first error (in column order) reported.
    let (index, columns) = rayon::join(write_index, || {
        sources.par_iter().map(write_column).collect::<Vec<_>>()
    });
    index?;
    columns.into_iter().collect()
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
