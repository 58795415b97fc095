//! Renamed columns put back in order by merging, not sorting: a column
//! renaming (an input's columns into the joined axis) that keeps a few
//! rising runs turns every row with ascending columns into as many
//! ascending pieces.

/// Where a column renaming's rising runs start: old columns `starts[j]
/// .. starts[j + 1]` have ascending new columns (dropped ones aside), so a
/// row with ascending old columns is at most [`RisingRuns::MAX`] ascending
/// pieces to merge.
pub(super) struct RisingRuns {
    starts: Vec<usize>,
}

impl RisingRuns {
    /// Runs merged per row at most; more are sorted.
    const MAX: usize = 8;

    /// The runs of `map` (new column of each old one, negative: dropped);
    /// `None` when there are more than [`Self::MAX`].
    pub(super) fn of(map: &[i64]) -> Option<Self> {
        let mut starts = vec![0];
        let mut last = -1i64;
        for (c, &n) in map.iter().enumerate() {
            if n < 0 {
                continue;
            }
            if n < last {
                if starts.len() == Self::MAX {
                    return None;
                }
                starts.push(c);
            }
            last = n;
        }
        Some(Self { starts })
    }

    /// Appends the kept entries of one row (old columns `row`, strictly
    /// ascending, stored from position `at`) in ascending new column: each
    /// new column to `indices`, its position to `take`. Returns how many.
    pub(super) fn merge_row(
        &self,
        map: &[i64],
        row: &[i64],
        at: usize,
        indices: &mut Vec<i64>,
        take: &mut Vec<usize>,
    ) -> u32 {
        let r = self.starts.len();
        let mut head = [0usize; Self::MAX + 1];
        for (j, &s) in self.starts.iter().enumerate() {
            head[j] = row.partition_point(|&c| (c as usize) < s);
        }
        head[r] = row.len();
        let end: [usize; Self::MAX] = std::array::from_fn(|j| head[(j + 1).min(r)]);
        // The new column at each run's head (i64::MAX: run done).
        let next = |j: usize, h: &mut usize| -> i64 {
            while *h < end[j] {
                let n = map[row[*h] as usize];
                if n >= 0 {
                    return n;
                }
                *h += 1;
            }
            i64::MAX
        };
        let mut cur = [i64::MAX; Self::MAX];
        for j in 0..r {
            cur[j] = next(j, &mut head[j]);
        }
        let before = indices.len();
        loop {
            let mut best = 0;
            for j in 1..r {
                if cur[j] < cur[best] {
                    best = j;
                }
            }
            if cur[best] == i64::MAX {
                break;
            }
            indices.push(cur[best]);
            take.push(at + head[best]);
            head[best] += 1;
            cur[best] = next(best, &mut head[best]);
        }
        (indices.len() - before) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::RisingRuns;

    /// Merging a row's rising runs gives what sorting its renamed entries
    /// gives, for renamings of up to `MAX` runs with dropped columns.
    #[test]
    fn merged_runs_equal_sorted_rows() {
        // gene0..gene11 in lexicographic order: 0,1,10,11,2,...,9.
        let names: Vec<String> = (0..12).map(|i| format!("gene{i}")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        let lexicographic: Vec<i64> = names
            .iter()
            .map(|n| sorted.iter().position(|s| s == n).expect("a name") as i64)
            .collect();
        let mut with_drops = lexicographic.clone();
        with_drops[3] = -1;
        with_drops[10] = -1;
        let reversed_pairs: Vec<i64> = vec![1, 0, 3, 2, 5, 4];
        for map in [lexicographic, with_drops, reversed_pairs] {
            let runs = RisingRuns::of(&map).expect("few runs");
            let n = map.len() as i64;
            // Every subset of columns (ascending) as a row.
            for mask in 0u32..(1 << n) {
                let row: Vec<i64> = (0..n).filter(|c| mask & (1 << c) != 0).collect();
                let (mut indices, mut take) = (vec![-7], vec![99]);
                let count = runs.merge_row(&map, &row, 5, &mut indices, &mut take);
                let mut want: Vec<(i64, usize)> = row
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| map[**c as usize] >= 0)
                    .map(|(k, c)| (map[*c as usize], 5 + k))
                    .collect();
                want.sort();
                assert_eq!(count as usize, want.len());
                assert_eq!(
                    indices[1..],
                    want.iter().map(|w| w.0).collect::<Vec<_>>()[..]
                );
                assert_eq!(take[1..], want.iter().map(|w| w.1).collect::<Vec<_>>()[..]);
            }
        }
        // More runs than merged: sorted instead.
        let many: Vec<i64> = (0..20).rev().collect();
        assert!(RisingRuns::of(&many).is_none());
        assert_eq!(RisingRuns::of(&[0, 1, 2]).expect("one").starts, vec![0]);
    }
}
