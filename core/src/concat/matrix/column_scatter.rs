//! Renamed columns put back in order without sorting: each kept entry of a
//! row is marked in a bitmap of the joined axis, a running count of the
//! marks before each word is taken, and every entry is then stored
//! straight at its rank (the marks before its word plus those below it in
//! the word). A reindexing that reorders columns (an outer join's
//! lexicographic union of `gene0..geneN`, a shuffled var order) costs two
//! branch-free passes over the row and one over the words it spans,
//! instead of a sort or a many-way merge with a data-dependent branch per
//! entry.

use crate::concat::values::{AppendKernel, Number};

/// The new column of an old one that the renaming drops.
pub(super) const DROPPED: u32 = u32::MAX;

/// A renaming (new column of each old one, negative: dropped) in the
/// narrower form [`ColumnScatter::sort_row`] reads.
pub(super) fn narrow_map<T: Copy>(map: &[T]) -> Vec<u32>
where
    u32: TryFrom<T>,
{
    map.iter()
        .map(|&n| u32::try_from(n).unwrap_or(DROPPED))
        .collect()
}

/// A bitmap of the joined axis (empty between rows) and the scratch that
/// ranks a row's entries in it.
pub(super) struct ColumnScatter {
    bits: Vec<u64>,
    /// Marks in the words before each word of the row's span.
    before: Vec<u32>,
    /// The new column of each entry of the row ([`DROPPED`]: none).
    news: Vec<u32>,
    /// Sort keys (`column << 32 | position`) of a row too sparse to rank.
    keyed: Vec<u64>,
    /// Words of the joined axis; `bits` and `before` have one more, where
    /// a dense row's dropped entries are marked and ranked.
    words: usize,
    /// Whether the CPU counts bits in one instruction (the rank loop is
    /// compiled for it then; the baseline x86-64 target lacks it).
    popcnt: bool,
}

impl ColumnScatter {
    /// Widest joined axis scattered (a bitmap of 512 KiB); wider ones
    /// sort. Below [`DROPPED`], so a kept new column fits a `u32`.
    pub(super) const MAX_COLUMNS: u64 = 1 << 22;

    /// A scatter for a joined axis of `n_columns`; `None` when wider than
    /// [`Self::MAX_COLUMNS`].
    pub(super) fn new(n_columns: u64) -> Option<Self> {
        let words = n_columns.div_ceil(64) as usize;
        #[cfg(target_arch = "x86_64")]
        let popcnt = std::arch::is_x86_feature_detected!("popcnt");
        #[cfg(not(target_arch = "x86_64"))]
        let popcnt = false;
        (n_columns <= Self::MAX_COLUMNS).then(|| Self {
            bits: vec![0; words + 1],
            before: vec![0; words + 1],
            news: Vec::new(),
            keyed: Vec::new(),
            words,
            popcnt,
        })
    }

    /// Appends the kept entries of one row (old columns `row`, values
    /// `vals`; `map` gives each old column's new one, [`DROPPED`]: none)
    /// in ascending new column: each new column to `indices`, its value to
    /// `out`. Returns how many, or `None` (nothing appended) when two
    /// entries of the row land on one column, which a stable sort must
    /// order instead.
    pub(super) fn sort_row<T: Copy + Default>(
        &mut self,
        map: &[u32],
        row: &[u32],
        vals: &[T],
        indices: &mut Vec<u32>,
        out: &mut Vec<T>,
    ) -> Option<u32> {
        #[cfg(target_arch = "x86_64")]
        if self.popcnt {
            // SAFETY: the CPU was found to have `popcnt` in `new`.
            #[allow(unsafe_code)]
            return unsafe { self.sort_row_popcnt(map, row, vals, indices, out) };
        }
        self.sort_row_any(map, row, vals, indices, out)
    }

    /// [`Self::sort_row`] compiled for a CPU with `popcnt`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn sort_row_popcnt<T: Copy + Default>(
        &mut self,
        map: &[u32],
        row: &[u32],
        vals: &[T],
        indices: &mut Vec<u32>,
        out: &mut Vec<T>,
    ) -> Option<u32> {
        self.sort_row_any(map, row, vals, indices, out)
    }

    /// [`Self::sort_row`] for any CPU; inlined into its callers so that
    /// each is compiled with its own target features.
    #[inline(always)]
    fn sort_row_any<T: Copy + Default>(
        &mut self,
        map: &[u32],
        row: &[u32],
        vals: &[T],
        indices: &mut Vec<u32>,
        out: &mut Vec<T>,
    ) -> Option<u32> {
        if row.len() * 4 >= self.words {
            return self.rank_dense(map, row, vals, indices, out);
        }
        // Words holding marks, and entries kept; a column marked twice is
        // found as it is marked.
        let (mut lo, mut hi, mut kept) = (usize::MAX, 0usize, 0usize);
        self.news.clear();
        self.news.extend(row.iter().map(|&c| map[c as usize]));
        let bits = &mut self.bits[..];
        let mut twice = None;
        for (k, &n) in self.news.iter().enumerate() {
            if n == DROPPED {
                continue;
            }
            let n = n as usize;
            let (w, bit) = (n >> 6, 1u64 << (n & 63));
            if bits[w] & bit != 0 {
                twice = Some(k);
                break;
            }
            lo = lo.min(w);
            hi = hi.max(w);
            bits[w] |= bit;
            kept += 1;
        }
        if let Some(k) = twice {
            // Entries from `k` on are not marked.
            self.news.truncate(k);
            self.unmark();
            return None;
        }
        if kept == 0 {
            return Some(0);
        }
        if hi - lo > 16 * kept {
            // Few entries spread over a wide axis: sort them rather than
            // count the marks of every word between.
            self.keyed.clear();
            self.keyed.extend(
                self.news
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n != DROPPED)
                    .map(|(k, &n)| (u64::from(n) << 32) | k as u64),
            );
            self.keyed.sort_unstable();
            indices.extend(self.keyed.iter().map(|&key| (key >> 32) as u32));
            out.extend(
                self.keyed
                    .iter()
                    .map(|&key| vals[(key & 0xffff_ffff) as usize]),
            );
            self.unmark();
            return Some(kept as u32);
        }
        let words = lo..hi + 1;
        self.count_marks(words.clone());
        self.write_at_ranks(kept, vals, indices, out);
        self.bits[words].fill(0);
        Some(kept as u32)
    }

    /// [`Self::sort_row`] of a row with entries in a good share of the
    /// words: no branch per entry. Dropped entries are marked in the spare
    /// word past the axis, cleared before ranking, and ranked there, at
    /// `kept`, one past the row's entries (written to the vectors' spare
    /// room and not kept); a column marked twice is found by counting the
    /// marks.
    #[inline(always)]
    fn rank_dense<T: Copy + Default>(
        &mut self,
        map: &[u32],
        row: &[u32],
        vals: &[T],
        indices: &mut Vec<u32>,
        out: &mut Vec<T>,
    ) -> Option<u32> {
        let words = self.words;
        let spare = words as u32;
        let len = row.len().min(vals.len());
        self.news.clear();
        self.news.reserve(len);
        let mut dropped = 0usize;
        {
            let bits = &mut self.bits[..=words];
            let news = &mut self.news.spare_capacity_mut()[..len];
            for (slot, &c) in news.iter_mut().zip(row) {
                let n = map[c as usize];
                slot.write(n);
                let w = (n >> 6).min(spare) as usize;
                // SAFETY: w <= words, and bits has words + 1.
                #[allow(unsafe_code)]
                unsafe {
                    *bits.get_unchecked_mut(w) |= 1u64 << (n & 63);
                }
                dropped += usize::from(n == DROPPED);
            }
        }
        // SAFETY: the first len were written above.
        #[allow(unsafe_code)]
        unsafe {
            self.news.set_len(len);
        }
        let kept = len - dropped;
        self.bits[words] = 0;
        if self.count_marks(0..words) as usize != kept {
            self.bits.fill(0);
            return None;
        }
        self.write_at_ranks(kept, vals, indices, out);
        self.bits[..words].fill(0);
        Some(kept as u32)
    }

    /// Counts the marks before each word of `words` into `before`, and
    /// their total into the spare word's; returns the total.
    fn count_marks(&mut self, words: std::ops::Range<usize>) -> u32 {
        let mut marks = 0u32;
        for (before, &word) in self.before[words.clone()].iter_mut().zip(&self.bits[words]) {
            *before = marks;
            marks += word.count_ones();
        }
        self.before[self.words] = marks;
        marks
    }

    /// Appends the row's `kept` entries (new columns `news`, values
    /// `vals`) in column order, each written at its rank straight into the
    /// vectors' spare room: the marks before its word plus those below it
    /// in the word. The kept entries' marks are in `bits` (one each, none
    /// shared) and counted by [`Self::count_marks`] over every word
    /// holding one, so their ranks are `0..kept`, each once; a dropped
    /// entry ranks in the spare word (no marks, `kept` before it), at
    /// `kept`, one past them, written to the spare room and not kept.
    #[inline(always)]
    fn write_at_ranks<T: Copy>(
        &self,
        kept: usize,
        vals: &[T],
        indices: &mut Vec<u32>,
        out: &mut Vec<T>,
    ) {
        let spare = self.words as u32;
        debug_assert!(self.bits[self.words] == 0 && self.before[self.words] as usize == kept);
        indices.reserve(kept + 1);
        out.reserve(kept + 1);
        let to_indices = &mut indices.spare_capacity_mut()[..=kept];
        let to_out = &mut out.spare_capacity_mut()[..=kept];
        let (bits, before) = (&self.bits[..=self.words], &self.before[..=self.words]);
        for (&n, &v) in self.news.iter().zip(vals) {
            let (w, below) = ((n >> 6).min(spare) as usize, (1u64 << (n & 63)) - 1);
            // SAFETY: w <= words (both have words + 1); a rank is at most
            // kept (above), and both vectors have kept + 1 spare.
            #[allow(unsafe_code)]
            unsafe {
                let rank = *before.get_unchecked(w) as usize
                    + (*bits.get_unchecked(w) & below).count_ones() as usize;
                to_indices.get_unchecked_mut(rank).write(n);
                to_out.get_unchecked_mut(rank).write(v);
            }
        }
        // SAFETY: the first `kept` spare elements of both were written
        // (the ranks of the kept entries are exactly `0..kept`).
        #[allow(unsafe_code)]
        unsafe {
            indices.set_len(indices.len() + kept);
            out.set_len(out.len() + kept);
        }
    }

    /// Clears the marks of the row's kept entries (`news`, the entries
    /// marked).
    fn unmark(&mut self) {
        for &n in &self.news {
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
    /// New column of each old one ([`DROPPED`]: none; see [`narrow_map`]).
    pub(super) narrow: &'a [u32],
    /// Where each input row starts in `cols`, from 0.
    pub(super) indptr: &'a [usize],
    /// The input rows' old columns.
    pub(super) cols: &'a [u32],
    /// Entries kept per row, written.
    pub(super) counts: &'a mut [u32],
    /// New columns, appended.
    pub(super) indices: &'a mut Vec<u32>,
    /// Sort keys, reused between rows.
    pub(super) keyed: &'a mut Vec<u64>,
}

impl AppendKernel for RenamedRows<'_> {
    fn append<T: Number>(&mut self, out: &mut Vec<T>, vals: &[T]) {
        self.indices.reserve(self.cols.len());
        out.reserve(self.cols.len());
        for (r, count) in self.counts.iter_mut().enumerate() {
            let (a, b) = (self.indptr[r], self.indptr[r + 1]);
            let (row, row_vals) = (&self.cols[a..b], &vals[a..b]);
            if let Some(scatter) = self.scatter.as_deref_mut().filter(|_| !self.ordered)
                && let Some(c) = scatter.sort_row(self.narrow, row, row_vals, self.indices, out)
            {
                *count = c;
                continue;
            }
            self.keyed.clear();
            for (k, &c) in row.iter().enumerate() {
                let n = self.narrow[c as usize];
                if n != DROPPED {
                    self.keyed.push((u64::from(n) << 32) | k as u64);
                }
            }
            if !self.ordered {
                // Stable: a column twice keeps its entries' order.
                self.keyed.sort();
            }
            *count = self.keyed.len() as u32;
            for &key in self.keyed.iter() {
                self.indices.push((key >> 32) as u32);
                out.push(row_vals[(key & 0xffff_ffff) as usize]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ColumnScatter, narrow_map};

    /// What a stable sort of the row's renamed entries gives.
    fn sorted(map: &[i64], row: &[u32], at: usize) -> Vec<(u32, usize)> {
        let mut want: Vec<(u32, usize)> = row
            .iter()
            .enumerate()
            .filter(|(_, c)| map[**c as usize] >= 0)
            .map(|(k, c)| (map[*c as usize] as u32, at + k))
            .collect();
        want.sort_by_key(|w| w.0);
        want
    }

    /// Ranking a row gives what sorting its renamed entries gives, for
    /// every subset of a few renamings (with dropped columns), rows in any
    /// order, with and without `popcnt`, and leaves the bitmap clear for
    /// the next row.
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
        for (map, popcnt) in [lexicographic, with_drops, reversed]
            .into_iter()
            .flat_map(|m| [(m.clone(), true), (m, false)])
        {
            let mut scatter = ColumnScatter::new(12).expect("narrow");
            // Both builds of the rank loop, whatever this CPU has.
            scatter.popcnt &= popcnt;
            let n = map.len() as u32;
            for mask in 0u32..(1 << n) {
                let mut row: Vec<u32> = (0..n).filter(|c| mask & (1 << c) != 0).collect();
                if mask % 3 == 0 {
                    row.reverse();
                }
                let vals: Vec<usize> = (5..5 + row.len()).collect();
                let (mut indices, mut take) = (vec![7], vec![99]);
                let count = scatter
                    .sort_row(&narrow_map(&map), &row, &vals, &mut indices, &mut take)
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
        let (mut indices, mut take) = (Vec::new(), Vec::new());
        let count = scatter.sort_row(&narrow_map(&map), &row, &vals, &mut indices, &mut take);
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
            &mut indices,
            &mut take,
        );
        assert_eq!(twice, None);
        assert_eq!((indices, take), (vec![42], vec![42]));
        assert!(narrow.bits.iter().all(|&w| w == 0));
        assert!(ColumnScatter::new(ColumnScatter::MAX_COLUMNS + 1).is_none());
    }

    /// Rows of every density over a wider axis (the dense, ranked-span
    /// and sorting branches), under a shuffled renaming that drops every
    /// seventh column, give what a stable sort gives; a row holding a
    /// column twice is refused whatever its density, and every branch
    /// leaves the bitmap clear.
    #[test]
    fn rows_of_every_density_equal_sorted_rows() {
        let width = 2_000usize;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut order: Vec<i64> = (0..width as i64).collect();
        for i in (1..width).rev() {
            order.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        let map: Vec<i64> = order
            .iter()
            .enumerate()
            .map(|(c, &n)| if c % 7 == 3 { -1 } else { n })
            .collect();
        let narrow = narrow_map(&map);
        let mut scatter = ColumnScatter::new(width as u64).expect("narrow");
        for round in 0..400u64 {
            let (len, span) = match round % 4 {
                0 => (next() % 8, width as u64),
                1 => (next() % 40, 300),
                2 => (100 + next() % 400, width as u64),
                _ => (1 + next() % 1_000, width as u64),
            };
            let start = next() % (width as u64 - span + 1);
            let mut row: Vec<u32> = (0..len).map(|_| (start + next() % span) as u32).collect();
            row.sort_unstable();
            row.dedup();
            let vals: Vec<usize> = (0..row.len()).collect();
            let (mut indices, mut take) = (vec![7], vec![99]);
            let count = scatter
                .sort_row(&narrow, &row, &vals, &mut indices, &mut take)
                .expect("no column twice");
            let want = sorted(&map, &row, 0);
            assert_eq!(count as usize, want.len(), "round {round}");
            assert_eq!(indices[1..], want.iter().map(|w| w.0).collect::<Vec<_>>());
            assert_eq!(take[1..], want.iter().map(|w| w.1).collect::<Vec<_>>());
            assert!(scatter.bits.iter().all(|&w| w == 0), "cleared");
            // The same row with one kept column twice.
            if let Some(k) = row.iter().position(|&c| map[c as usize] >= 0) {
                let mut twice = row.clone();
                twice.insert(k, row[k]);
                let vals: Vec<usize> = (0..twice.len()).collect();
                let (mut indices, mut take) = (vec![7], vec![99]);
                let refused = scatter.sort_row(&narrow, &twice, &vals, &mut indices, &mut take);
                assert_eq!(refused, None, "round {round}");
                assert_eq!((indices, take), (vec![7], vec![99]));
                assert!(scatter.bits.iter().all(|&w| w == 0), "cleared");
            }
        }
    }
}
