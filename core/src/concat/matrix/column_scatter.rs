//! Renamed columns put back in order without sorting: each kept entry of a
//! row is marked in a bitmap of the joined axis (its value beside it, in a
//! scratch array by column), and the bitmap is read back in column order.
//! A reindexing that reorders columns (an outer join's lexicographic union
//! of `gene0..geneN`, a shuffled var order) costs two passes over the row
//! instead of a sort or a many-way merge with a data-dependent branch per
//! entry.

use crate::concat::values::{AppendKernel, Number};

/// The new column of an old one that the renaming drops.
pub(super) const DROPPED: u32 = u32::MAX;

/// A renaming (new column of each old one, negative: dropped) in the
/// narrower form [`ColumnScatter::sort_row`] reads.
pub(super) fn narrow_map(map: &[i64]) -> Vec<u32> {
    map.iter()
        .map(|&n| u32::try_from(n).unwrap_or(DROPPED))
        .collect()
}

/// A bitmap of the joined axis; empty between rows.
pub(super) struct ColumnScatter {
    bits: Vec<u64>,
}

impl ColumnScatter {
    /// Widest joined axis scattered (its scratch values: 32 MiB of
    /// float64); wider ones sort. Below [`DROPPED`], so a kept new column
    /// fits a `u32`.
    pub(super) const MAX_COLUMNS: u64 = 1 << 22;

    /// A scatter for a joined axis of `n_columns`; `None` when wider than
    /// [`Self::MAX_COLUMNS`].
    pub(super) fn new(n_columns: u64) -> Option<Self> {
        (n_columns <= Self::MAX_COLUMNS).then(|| Self {
            bits: vec![0; n_columns.div_ceil(64) as usize],
        })
    }

    /// Columns the bitmap covers: how long a `by_col` scratch must be.
    pub(super) fn columns(&self) -> usize {
        self.bits.len() * 64
    }

    /// Appends the kept entries of one row (old columns `row`, values
    /// `vals`; `map` gives each old column's new one, [`DROPPED`]: none)
    /// in ascending new column: each new column to `indices`, its value to
    /// `out`. `by_col` (a value per column, see [`Self::columns`]) is
    /// scratch. Returns how many, or `None` (nothing appended) when two
    /// entries of the row land on one column, which a stable sort must
    /// order instead.
    pub(super) fn sort_row<T: Copy + Default>(
        &mut self,
        map: &[u32],
        row: &[i64],
        vals: &[T],
        by_col: &mut [T],
        indices: &mut Vec<i64>,
        out: &mut Vec<T>,
    ) -> Option<u32> {
        let dense = row.len() * 4 >= self.bits.len();
        // Words holding marks, and entries kept. A row with entries in a
        // good share of the words keeps no bounds and finds a column
        // marked twice by counting what is read back; a sparser one checks
        // each mark.
        let (mut lo, mut hi, mut kept) = (usize::MAX, 0usize, 0usize);
        for (k, (&c, &v)) in row.iter().zip(vals).enumerate() {
            let n = map[c as usize];
            if n == DROPPED {
                continue;
            }
            let n = n as usize;
            let (w, bit) = (n >> 6, 1u64 << (n & 63));
            if !dense {
                if self.bits[w] & bit != 0 {
                    self.unmark(map, &row[..k]);
                    return None;
                }
                lo = lo.min(w);
                hi = hi.max(w);
            }
            self.bits[w] |= bit;
            by_col[n] = v;
            kept += 1;
        }
        if kept == 0 {
            return Some(0);
        }
        let i0 = indices.len();
        if !dense && hi - lo > 16 * kept {
            // Few entries spread over a wide axis: sort them rather than
            // read every word between.
            indices.extend(
                row.iter()
                    .map(|&c| map[c as usize])
                    .filter(|&n| n != DROPPED)
                    .map(i64::from),
            );
            indices[i0..].sort_unstable();
            out.extend(indices[i0..].iter().map(|&n| by_col[n as usize]));
            self.unmark(map, row);
            return Some(kept as u32);
        }
        let words = if dense {
            0..self.bits.len()
        } else {
            lo..hi + 1
        };
        // The columns first, then the values in one gather: appending
        // (rather than zero-filling `kept` slots and writing them) and the
        // separate gather took 13% off this loop (micro-benchmark, rows of
        // 1,000 entries over 14,000 columns).
        for (w, slot) in self.bits[words.clone()].iter_mut().enumerate() {
            let mut word = std::mem::take(slot);
            let base = ((words.start + w) * 64) as i64;
            while word != 0 {
                indices.push(base + i64::from(word.trailing_zeros()));
                word &= word - 1;
            }
        }
        if indices.len() - i0 != kept {
            // A column marked twice (a dense row's marks are not checked).
            indices.truncate(i0);
            return None;
        }
        out.extend(indices[i0..].iter().map(|&n| by_col[n as usize]));
        Some(kept as u32)
    }

    /// Clears the marks of `row`'s kept entries.
    fn unmark(&mut self, map: &[u32], row: &[i64]) {
        for &c in row {
            let n = map[c as usize];
            if n != DROPPED {
                self.bits[n as usize >> 6] = 0;
            }
        }
    }
}

/// The rows of one input renamed into the joined axis, columns and values
/// appended together (a [`Values::append_with`] kernel over the values):
/// rows are put back in column order when the renaming reorders columns
/// (by `scatter` when there is one, else, or for a row holding a column
/// twice, by a stable sort of packed `column << 32 | position` keys).
pub(super) struct RenamedRows<'a> {
    /// Marks columns of the joined axis, when not too wide.
    pub(super) scatter: Option<&'a mut ColumnScatter>,
    /// Whether the renaming keeps kept columns in order.
    pub(super) ordered: bool,
    /// New column of each old one (negative: dropped).
    pub(super) map: &'a [i64],
    /// `map` narrowed for the scatter (see [`narrow_map`]); empty without one.
    pub(super) narrow: &'a [u32],
    /// Where each input row starts in `cols`, from 0.
    pub(super) indptr: &'a [usize],
    /// The input rows' old columns.
    pub(super) cols: &'a [i64],
    /// Entries kept per row, written.
    pub(super) counts: &'a mut [u32],
    /// New columns, appended.
    pub(super) indices: &'a mut Vec<i64>,
    /// Sort keys, reused between rows.
    pub(super) keyed: &'a mut Vec<u64>,
}

impl AppendKernel for RenamedRows<'_> {
    fn append<T: Number>(&mut self, out: &mut Vec<T>, vals: &[T]) {
        self.indices.reserve(self.cols.len());
        out.reserve(self.cols.len());
        let mut by_col = match &self.scatter {
            Some(scatter) if !self.ordered => vec![T::default(); scatter.columns()],
            _ => Vec::new(),
        };
        for (r, count) in self.counts.iter_mut().enumerate() {
            let (a, b) = (self.indptr[r], self.indptr[r + 1]);
            let (row, row_vals) = (&self.cols[a..b], &vals[a..b]);
            if let Some(scatter) = self.scatter.as_deref_mut().filter(|_| !self.ordered)
                && let Some(c) =
                    scatter.sort_row(self.narrow, row, row_vals, &mut by_col, self.indices, out)
            {
                *count = c;
                continue;
            }
            self.keyed.clear();
            for (k, &c) in row.iter().enumerate() {
                let n = self.map[c as usize];
                if n >= 0 {
                    self.keyed.push(((n as u64) << 32) | k as u64);
                }
            }
            if !self.ordered {
                // Stable: a column twice keeps its entries' order.
                self.keyed.sort();
            }
            *count = self.keyed.len() as u32;
            for &key in self.keyed.iter() {
                self.indices.push((key >> 32) as i64);
                out.push(row_vals[(key & 0xffff_ffff) as usize]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ColumnScatter, narrow_map};

    /// What a stable sort of the row's renamed entries gives.
    fn sorted(map: &[i64], row: &[i64], at: usize) -> Vec<(i64, usize)> {
        let mut want: Vec<(i64, usize)> = row
            .iter()
            .enumerate()
            .filter(|(_, c)| map[**c as usize] >= 0)
            .map(|(k, c)| (map[*c as usize], at + k))
            .collect();
        want.sort_by_key(|w| w.0);
        want
    }

    /// Scattering a row gives what sorting its renamed entries gives, for
    /// every subset of a few renamings (with dropped columns), rows in any
    /// order, and leaves the bitmap clear for the next row.
    #[test]
    fn scattered_rows_equal_sorted_rows() {
        // gene0..gene11 in lexicographic order: 0,1,10,11,2,...,9.
        let names: Vec<String> = (0..12).map(|i| format!("gene{i}")).collect();
        let mut order = names.clone();
        order.sort();
        let lexicographic: Vec<i64> = names
            .iter()
            .map(|n| order.iter().position(|s| s == n).expect("a name") as i64)
            .collect();
        let mut with_drops = lexicographic.clone();
        with_drops[3] = -1;
        with_drops[10] = -1;
        let reversed: Vec<i64> = (0..12).rev().collect();
        for map in [lexicographic, with_drops, reversed] {
            let mut scatter = ColumnScatter::new(12).expect("narrow");
            let n = map.len() as i64;
            for mask in 0u32..(1 << n) {
                let mut row: Vec<i64> = (0..n).filter(|c| mask & (1 << c) != 0).collect();
                if mask % 3 == 0 {
                    row.reverse();
                }
                let vals: Vec<usize> = (5..5 + row.len()).collect();
                let (mut indices, mut take) = (vec![-7], vec![99]);
                let count = scatter
                    .sort_row(
                        &narrow_map(&map),
                        &row,
                        &vals,
                        &mut [0; 12],
                        &mut indices,
                        &mut take,
                    )
                    .expect("no column twice");
                let want = sorted(&map, &row, 5);
                assert_eq!(count as usize, want.len());
                assert_eq!(indices[1..], want.iter().map(|w| w.0).collect::<Vec<_>>());
                assert_eq!(take[1..], want.iter().map(|w| w.1).collect::<Vec<_>>());
                assert!(scatter.bits.iter().all(|&w| w == 0), "cleared");
            }
        }
    }

    /// A few entries over a wide axis take the sorting branch, with the
    /// same result; a column twice is refused and leaves nothing behind.
    #[test]
    fn sparse_rows_sort_and_repeated_columns_are_refused() {
        let width = 100_000i64;
        let map: Vec<i64> = (0..width).map(|c| (c * 7919) % width).collect();
        let mut scatter = ColumnScatter::new(width as u64).expect("narrow");
        let row = vec![3, 50_000, 99_999, 12];
        let vals: Vec<usize> = (0..row.len()).collect();
        let mut by_col = vec![0; width as usize];
        let (mut indices, mut take) = (Vec::new(), Vec::new());
        let count = scatter.sort_row(
            &narrow_map(&map),
            &row,
            &vals,
            &mut by_col,
            &mut indices,
            &mut take,
        );
        assert_eq!(count, Some(4));
        let want = sorted(&map, &row, 0);
        assert_eq!(indices, want.iter().map(|w| w.0).collect::<Vec<_>>());
        assert_eq!(take, want.iter().map(|w| w.1).collect::<Vec<_>>());
        assert!(scatter.bits.iter().all(|&w| w == 0));

        let twice = vec![1, 2, 1];
        let (mut indices, mut take) = (vec![42], vec![42]);
        assert_eq!(
            scatter.sort_row(
                &narrow_map(&map),
                &twice,
                &[7, 8, 9],
                &mut by_col,
                &mut indices,
                &mut take
            ),
            None
        );
        assert_eq!((indices, take), (vec![42], vec![42]));
        assert!(scatter.bits.iter().all(|&w| w == 0));
        // The same in a narrow axis, where the row is read back whole.
        let mut narrow = ColumnScatter::new(12).expect("narrow");
        let (mut indices, mut take) = (vec![42], vec![42]);
        let identity: Vec<i64> = (0..12).collect();
        let twice = narrow.sort_row(
            &narrow_map(&identity),
            &twice,
            &[7, 8, 9],
            &mut [0; 12],
            &mut indices,
            &mut take,
        );
        assert_eq!(twice, None);
        assert_eq!((indices, take), (vec![42], vec![42]));
        assert!(narrow.bits.iter().all(|&w| w == 0));
        assert!(ColumnScatter::new(ColumnScatter::MAX_COLUMNS + 1).is_none());
    }
}
