//! Names along the two axes: reading string indices, the join of the other
//! axis (pandas' `intersection` / `union` rules as `anndata.concat` applies
//! them), and the reindexer that maps each input onto the joined axis.

use crate::anndata::range_read::ReadSubset;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use zarrs::array::ArraySubset;

use crate::anndata::Store;
use crate::concat::plan::Space;
use crate::error::{Error, Result};

/// Inner (intersection) or outer (union) join of the other axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Join {
    /// Keep names every input has, in the first input's order.
    Inner,
    /// Keep every name; sorted unless all inputs agree.
    Outer,
}

/// Reads a whole 1-D string array (an index or a string column).
pub fn read_strings(store: &Store, path: &str) -> Result<Vec<String>> {
    let n = store.array(path)?.shape().first().copied().unwrap_or(0);
    read_strings_range(store, path, 0, n)
}

/// Reads elements `start..start + len` of a 1-D string array.
pub fn read_strings_range(store: &Store, path: &str, start: u64, len: u64) -> Result<Vec<String>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let subset = ArraySubset::new_with_start_shape(vec![start], vec![len])
        .map_err(|e| store.err(path, e))?;
    store
        .array(path)?
        .read_subset::<Vec<String>>(&subset)
        .map_err(|e| store.err(path, format!("cannot read strings: {e}")))
}

/// Elements `start..start + len` of a 1-D string array as stored: the
/// values end to end as one string, and where each starts and ends (`len +
/// 1` byte offsets, the first not necessarily 0), checked to be valid UTF-8
/// cut at character boundaries. `None` when the array's values are not
/// variable-length (read those with [`read_strings_range`]).
pub fn read_raw_strings(
    store: &Store,
    path: &str,
    start: u64,
    len: u64,
) -> Result<Option<(String, Vec<usize>)>> {
    if len == 0 {
        return Ok(Some((String::new(), vec![0])));
    }
    let subset = ArraySubset::new_with_start_shape(vec![start], vec![len])
        .map_err(|e| store.err(path, e))?;
    let read: zarrs::array::ArrayBytes<'static> = store
        .array(path)?
        .read_subset(&subset)
        .map_err(|e| store.err(path, format!("cannot read strings: {e}")))?;
    let Ok(read) = read.into_variable() else {
        return Ok(None);
    };
    let (bytes, offsets) = read.into_parts();
    let offsets = offsets.to_vec();
    let text = String::from_utf8(bytes.into_owned())
        .map_err(|e| store.err(path, format!("invalid UTF-8: {}", e.utf8_error())))?;
    if let Some(&bad) = offsets.iter().find(|&&o| !text.is_char_boundary(o)) {
        return Err(store.err(
            path,
            format!("invalid UTF-8: a value starts inside a character (byte {bad})"),
        ));
    }
    Ok(Some((text, offsets)))
}

/// Fails if `names` holds a duplicate (the other axis must be unique).
pub fn check_unique(store: &Store, path: &str, names: &[String]) -> Result<()> {
    let mut seen: HashSet<&str, foldhash::fast::RandomState> =
        HashSet::with_capacity_and_hasher(names.len(), Default::default());
    for n in names {
        if !seen.insert(n.as_str()) {
            return Err(store.err(
                path,
                format!("duplicate name {n:?} on the axis being joined"),
            ));
        }
    }
    Ok(())
}

/// pandas `Index.intersection` (sort=False): `a`'s order, names also in `b`.
fn intersection(a: &[String], b: &[String]) -> Vec<String> {
    if a == b {
        return a.to_vec();
    }
    let in_b: HashSet<&str> = b.iter().map(String::as_str).collect();
    a.iter()
        .filter(|n| in_b.contains(n.as_str()))
        .cloned()
        .collect()
}

/// pandas `Index.union` (sort=None) folded over `lists` from the left:
/// `union(a, b)` is `a` when the two are equal or `b` is empty, `b` when
/// `a` is empty, and otherwise the sorted union. Once a union is sorted,
/// every later one is the sorted union of it and the next list, so the
/// fold is one set and one sort, however many lists differ.
fn union_all(lists: &[Vec<String>]) -> Vec<String> {
    let Some((first, rest)) = lists.split_first() else {
        return Vec::new();
    };
    let mut acc: &[String] = first;
    for (k, next) in rest.iter().enumerate() {
        if next.is_empty() || next == acc {
            continue;
        }
        if acc.is_empty() {
            acc = next;
            continue;
        }
        let mut all: HashSet<&str> = acc.iter().map(String::as_str).collect();
        for list in &rest[k..] {
            all.extend(list.iter().map(String::as_str));
        }
        let mut sorted: Vec<&str> = all.into_iter().collect();
        sorted.sort_unstable();
        return sorted.into_iter().map(str::to_owned).collect();
    }
    acc.to_vec()
}

/// The joined other-axis index, reducing pairwise from the left as anndata does.
pub fn join_indices(indices: &[Vec<String>], join: Join) -> Vec<String> {
    match join {
        Join::Inner => {
            let mut iter = indices.iter();
            let Some(first) = iter.next() else {
                return Vec::new();
            };
            iter.fold(first.clone(), |acc, next| intersection(&acc, next))
        }
        Join::Outer => union_all(indices),
    }
}

/// Each input's names along the other axis, held once per distinct list:
/// inputs that share their genes (the usual atlas) share one list, so the
/// planner holds O(distinct lists x names), not O(inputs x names).
#[derive(Debug, Default)]
pub struct NameLists {
    /// The distinct lists, in order of first appearance.
    pub lists: Vec<Vec<String>>,
    /// Per input, the index of its list in `lists`.
    pub of_input: Vec<usize>,
    by_hash: HashMap<u64, Vec<usize>>,
}

impl NameLists {
    /// The key of `names` in `by_hash`.
    fn hash(names: &[String]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::quality::FixedState::with_seed(0).hash_one(names)
    }

    /// Whether an input added before had the same list (in the same order).
    pub fn contains(&self, names: &[String]) -> bool {
        self.by_hash
            .get(&NameLists::hash(names))
            .is_some_and(|c| c.iter().any(|&k| self.lists[k] == names))
    }

    /// Adds the next input's names; `true` when no earlier input had the
    /// same list (in the same order).
    pub fn push(&mut self, names: Vec<String>) -> bool {
        let candidates = self.by_hash.entry(NameLists::hash(&names)).or_default();
        if let Some(&k) = candidates.iter().find(|&&k| self.lists[k] == names) {
            self.of_input.push(k);
            return false;
        }
        candidates.push(self.lists.len());
        self.of_input.push(self.lists.len());
        self.lists.push(names);
        true
    }

    /// The joined names: [`join_indices`] over the distinct lists, which
    /// equals it over every input's (a list seen before changes neither an
    /// intersection nor a union that already holds it).
    pub fn join(&self, join: Join) -> Vec<String> {
        join_indices(&self.lists, join)
    }

    /// The space of `joined`, with one reindexer per distinct list.
    pub fn space(&self, joined: &[String]) -> Space {
        // The joined names' positions, built once for every list that
        // differs from them.
        let mut positions = None;
        let distinct: Vec<Reindexer> = self
            .lists
            .iter()
            .map(|old| Reindexer::onto(old, joined, &mut positions))
            .collect();
        let of_input = self.of_input.iter().map(|&k| k as u32).collect();
        Space::new(joined.len() as u64, distinct, of_input)
    }
}

/// How one input maps onto the joined other axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reindexer {
    /// For every output position, the input position holding it, or -1.
    pub old_of_new: Vec<i64>,
    /// For every input position, its output position, or -1 (dropped).
    pub new_of_old: Vec<i64>,
    /// The input's axis equals the joined one (nothing to do).
    pub identity: bool,
}

impl Reindexer {
    /// Maps `old` names onto `new` names.
    pub fn new(old: &[String], new: &[String]) -> Reindexer {
        Reindexer::onto(old, new, &mut None)
    }

    /// Maps `old` names onto `new` names, with `new`'s positions taken
    /// from `positions`, or built there on first need (so that several
    /// inputs mapped onto the same names share one map).
    fn onto<'n>(
        old: &[String],
        new: &'n [String],
        positions: &mut Option<HashMap<&'n str, i64>>,
    ) -> Reindexer {
        if old == new {
            let ids: Vec<i64> = (0..old.len() as i64).collect();
            return Reindexer {
                old_of_new: ids.clone(),
                new_of_old: ids,
                identity: true,
            };
        }
        let pos = positions.get_or_insert_with(|| positions_of(new));
        let new_of_old: Vec<i64> = old
            .iter()
            .map(|n| pos.get(n.as_str()).copied().unwrap_or(-1))
            .collect();
        let mut old_of_new = vec![-1i64; new.len()];
        for (o, &n) in new_of_old.iter().enumerate() {
            if n >= 0 {
                old_of_new[n as usize] = o as i64;
            }
        }
        Reindexer {
            old_of_new,
            new_of_old,
            identity: false,
        }
    }

    /// Whether some output position has no input value (needs filling).
    pub fn has_missing(&self) -> bool {
        self.old_of_new.iter().any(|&o| o < 0)
    }
}

/// Each name's position in `names`.
fn positions_of(names: &[String]) -> HashMap<&str, i64> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as i64))
        .collect()
}

/// An error for names that cannot be joined.
pub fn join_error(message: impl std::fmt::Display) -> Error {
    Error::data(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn distinct_name_lists_join_and_reindex_as_every_input_would() {
        let a = s(&["c", "a", "b"]);
        let b = s(&["b", "c", "d"]);
        let b_reordered = s(&["c", "b", "d"]);
        let cases = [
            vec![a.clone(), a.clone(), a.clone()],
            vec![a.clone(), b.clone(), a.clone(), b.clone()],
            vec![a.clone(), Vec::new(), a.clone()],
            vec![b.clone(), b_reordered.clone(), b.clone(), a.clone()],
        ];
        for inputs in cases {
            let mut lists = NameLists::default();
            let fresh: Vec<bool> = inputs.iter().map(|n| lists.push(n.clone())).collect();
            assert_eq!(lists.of_input.len(), inputs.len());
            for (i, n) in inputs.iter().enumerate() {
                assert_eq!(&lists.lists[lists.of_input[i]], n);
                assert_eq!(fresh[i], !inputs[..i].contains(n));
                assert!(lists.contains(n));
            }
            for join in [Join::Inner, Join::Outer] {
                let joined = join_indices(&inputs, join);
                assert_eq!(lists.join(join), joined, "{inputs:?} {join:?}");
                let every: Vec<Reindexer> =
                    inputs.iter().map(|n| Reindexer::new(n, &joined)).collect();
                let space = lists.space(&joined);
                assert_eq!(space.n_other, joined.len() as u64);
                assert_eq!(space.n_inputs(), inputs.len());
                assert_eq!(space.n_distinct(), lists.lists.len());
                for (i, r) in every.iter().enumerate() {
                    assert_eq!(space.reindexer(i), r);
                }
            }
        }
        let mut one = NameLists::default();
        for _ in 0..5 {
            one.push(a.clone());
        }
        assert_eq!(one.lists.len(), 1);
    }

    /// pandas' `Index.union` (sort=None) of two indices, as written.
    fn pandas_union(a: &[String], b: &[String]) -> Vec<String> {
        if a == b || b.is_empty() {
            return a.to_vec();
        }
        if a.is_empty() {
            return b.to_vec();
        }
        let mut all: Vec<String> = a.iter().chain(b).cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    #[test]
    fn outer_join_is_the_pairwise_union_folded_from_the_left() {
        let a = s(&["c", "a", "b"]);
        let b = s(&["b", "c", "d"]);
        let sorted = s(&["a", "b", "c", "d"]);
        let e: Vec<String> = Vec::new();
        let cases = [
            vec![],
            vec![e.clone()],
            vec![a.clone()],
            vec![e.clone(), a.clone(), e.clone(), a.clone()],
            vec![a.clone(), a.clone(), b.clone()],
            vec![a.clone(), b.clone(), sorted.clone(), a.clone()],
            vec![a.clone(), s(&["a"]), s(&["z", "y"])],
            vec![b.clone(), s(&["d", "c", "b"]), e.clone()],
        ];
        for lists in cases {
            let folded = lists
                .split_first()
                .map(|(first, rest)| {
                    rest.iter()
                        .fold(first.clone(), |acc, next| pandas_union(&acc, next))
                })
                .unwrap_or_default();
            assert_eq!(join_indices(&lists, Join::Outer), folded, "{lists:?}");
        }
    }

    #[test]
    fn joins_follow_pandas() {
        let a = s(&["c", "a", "b"]);
        let b = s(&["b", "c", "d"]);
        assert_eq!(
            join_indices(&[a.clone(), b.clone()], Join::Inner),
            s(&["c", "b"])
        );
        assert_eq!(
            join_indices(&[a.clone(), b.clone()], Join::Outer),
            s(&["a", "b", "c", "d"])
        );
        assert_eq!(join_indices(&[a.clone(), a.clone()], Join::Outer), a);
    }

    #[test]
    fn reindexer_maps_both_ways() {
        let r = Reindexer::new(&s(&["x", "y", "z"]), &s(&["z", "w", "x"]));
        assert_eq!(r.old_of_new, vec![2, -1, 0]);
        assert_eq!(r.new_of_old, vec![2, -1, 0]);
        assert!(r.has_missing() && !r.identity);
        assert!(Reindexer::new(&s(&["a"]), &s(&["a"])).identity);
    }
}
