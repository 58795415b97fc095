//! Every input's names along the other axis, as the planner holds them:
//! each distinct name once (interned), each distinct list once, as ids.
//!
//! An atlas' inputs mostly share one gene list, but those that do not
//! (other annotations, other panels) would otherwise be held as strings,
//! one copy per list: 256 inputs of 30,000 genes, each list a little
//! different, were about 300 MB of `String`s in the coordinator. As ids
//! they are 4 bytes a name, and the join and the reindexers work on ids
//! (no hashing of strings after the interning).

use std::collections::HashMap;

use super::index::{Join, Reindexer};
use super::plan::Space;
use crate::error::{Error, Result};

/// The distinct name lists of the inputs, over one table of names.
#[derive(Debug, Default)]
pub struct NameLists {
    /// Every distinct name, by id.
    names: Vec<Box<str>>,
    /// The id of every name in `names`.
    ids: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// The distinct lists, as ids, in order of first appearance.
    lists: Vec<Vec<u32>>,
    /// Per input, the index of its list in `lists`.
    of_input: Vec<usize>,
    /// The distinct lists by [`NameLists::hash`] of their names.
    by_hash: HashMap<u64, Vec<usize>>,
}

/// A name that appears twice in one input's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateName(pub String);

impl NameLists {
    /// The key of a list of names: compute it where the list is read (on
    /// any thread), and hand it to [`NameLists::push`].
    pub fn hash(names: &[String]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::quality::FixedState::with_seed(0).hash_one(names)
    }

    /// The distinct list equal to `names`, if one was added.
    fn find(&self, names: &[String], hash: u64) -> Option<usize> {
        let candidates = self.by_hash.get(&hash)?;
        candidates.iter().copied().find(|&k| {
            let ids = &self.lists[k];
            ids.len() == names.len()
                && ids
                    .iter()
                    .zip(names)
                    .all(|(&id, n)| *self.names[id as usize] == **n)
        })
    }

    /// Adds the next input's `names` (whose [`NameLists::hash`] is `hash`):
    /// `Ok(true)` when no earlier input had the same list (in the same
    /// order), an error naming a name the list holds twice.
    pub fn push(
        &mut self,
        names: Vec<String>,
        hash: u64,
    ) -> std::result::Result<bool, DuplicateName> {
        if let Some(k) = self.find(&names, hash) {
            self.of_input.push(k);
            return Ok(false);
        }
        let mut ids = Vec::with_capacity(names.len());
        for n in names {
            let next = self.names.len() as u32;
            let id = match self.ids.get(n.as_str()) {
                Some(&id) => id,
                None => {
                    let name: Box<str> = n.into_boxed_str();
                    self.names.push(name.clone());
                    self.ids.insert(name, next);
                    next
                }
            };
            ids.push(id);
        }
        // A name twice in the list: its id twice.
        let mut seen = vec![false; self.names.len()];
        for &id in &ids {
            if std::mem::replace(&mut seen[id as usize], true) {
                return Err(DuplicateName(self.names[id as usize].to_string()));
            }
        }
        let k = self.lists.len();
        self.by_hash.entry(hash).or_default().push(k);
        self.of_input.push(k);
        self.lists.push(ids);
        Ok(true)
    }

    /// How many distinct lists the inputs have.
    pub fn n_distinct(&self) -> usize {
        self.lists.len()
    }

    /// The joined names' ids, folded over the distinct lists from the left
    /// as anndata reduces every input's (a list seen before changes neither
    /// an intersection nor a union that already holds it): pandas'
    /// `Index.intersection` (sort=False) for an inner join, `Index.union`
    /// (sort=None) for an outer one.
    fn join_ids(&self, join: Join) -> Vec<u32> {
        let Some((first, rest)) = self.lists.split_first() else {
            return Vec::new();
        };
        match join {
            Join::Inner => {
                let mut acc = first.clone();
                let mut in_next = vec![false; self.names.len()];
                for next in rest {
                    if *next == acc {
                        continue;
                    }
                    next.iter().for_each(|&id| in_next[id as usize] = true);
                    acc.retain(|&id| in_next[id as usize]);
                    next.iter().for_each(|&id| in_next[id as usize] = false);
                }
                acc
            }
            Join::Outer => {
                // union(a, b) is a when equal or b is empty, b when a is
                // empty, else the sorted union; once sorted, every later
                // union is the sorted union of all that follow.
                let mut acc: &[u32] = first;
                for (k, next) in rest.iter().enumerate() {
                    if next.is_empty() || next == acc {
                        continue;
                    }
                    if acc.is_empty() {
                        acc = next;
                        continue;
                    }
                    let mut in_union = vec![false; self.names.len()];
                    for list in std::iter::once(acc).chain(rest[k..].iter().map(Vec::as_slice)) {
                        list.iter().for_each(|&id| in_union[id as usize] = true);
                    }
                    let mut sorted: Vec<u32> = (0..self.names.len() as u32)
                        .filter(|&id| in_union[id as usize])
                        .collect();
                    sorted.sort_unstable_by(|&a, &b| {
                        self.names[a as usize].cmp(&self.names[b as usize])
                    });
                    return sorted;
                }
                acc.to_vec()
            }
        }
    }

    /// The joined names and their space: one reindexer per distinct list.
    pub fn join(&self, join: Join) -> Result<(Vec<String>, Space)> {
        let joined = self.join_ids(join);
        if joined.len() > i32::MAX as usize {
            return Err(Error::data(format!(
                "the joined axis would have {} names, more than anncat's limit of 2^31 - 1",
                joined.len()
            )));
        }
        let mut position = vec![-1i32; self.names.len()];
        for (p, &id) in joined.iter().enumerate() {
            position[id as usize] = p as i32;
        }
        let distinct = self
            .lists
            .iter()
            .map(|ids| {
                if *ids == joined {
                    return Reindexer::identity(ids.len());
                }
                let new_of_old = ids.iter().map(|&id| position[id as usize]).collect();
                Reindexer::from_new_of_old(new_of_old, joined.len())
            })
            .collect();
        let of_input = self.of_input.iter().map(|&k| k as u32).collect();
        let space = Space::new(joined.len() as u64, distinct, of_input);
        let names = joined
            .iter()
            .map(|&id| self.names[id as usize].to_string())
            .collect();
        Ok((names, space))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
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

    /// pandas' `Index.intersection` (sort=False) of two indices: `a`'s
    /// order, the names also in `b`.
    fn pandas_intersection(a: &[String], b: &[String]) -> Vec<String> {
        a.iter().filter(|n| b.contains(n)).cloned().collect()
    }

    /// What anndata joins: the pairwise join of every input's list,
    /// folded from the left.
    fn pandas_join(inputs: &[Vec<String>], join: Join) -> Vec<String> {
        let pair = match join {
            Join::Inner => pandas_intersection,
            Join::Outer => pandas_union,
        };
        inputs
            .split_first()
            .map(|(first, rest)| {
                rest.iter()
                    .fold(first.clone(), |acc, next| pair(&acc, next))
            })
            .unwrap_or_default()
    }

    fn joined(inputs: &[Vec<String>], join: Join) -> Vec<String> {
        pushed(inputs).0.join(join).expect("join").0
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
            let folded = pandas_join(&lists, Join::Outer);
            assert_eq!(joined(&lists, Join::Outer), folded, "{lists:?}");
        }
    }

    #[test]
    fn joins_follow_pandas() {
        let a = s(&["c", "a", "b"]);
        let b = s(&["b", "c", "d"]);
        assert_eq!(joined(&[a.clone(), b.clone()], Join::Inner), s(&["c", "b"]));
        assert_eq!(
            joined(&[a.clone(), b.clone()], Join::Outer),
            s(&["a", "b", "c", "d"])
        );
        assert_eq!(joined(&[a.clone(), a.clone()], Join::Outer), a);
    }

    fn pushed(inputs: &[Vec<String>]) -> (NameLists, Vec<bool>) {
        let mut lists = NameLists::default();
        let fresh = inputs
            .iter()
            .map(|n| lists.push(n.clone(), NameLists::hash(n)).expect("unique"))
            .collect();
        (lists, fresh)
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
            vec![Vec::new(), a.clone(), b.clone()],
            vec![b.clone(), b_reordered.clone(), b.clone(), a.clone()],
            vec![a.clone(), s(&["x"]), b.clone()],
        ];
        for inputs in cases {
            let (lists, fresh) = pushed(&inputs);
            assert_eq!(lists.of_input.len(), inputs.len());
            for (i, n) in inputs.iter().enumerate() {
                assert_eq!(fresh[i], !inputs[..i].contains(n));
                assert_eq!(lists.find(n, NameLists::hash(n)), Some(lists.of_input[i]));
            }
            for join in [Join::Inner, Join::Outer] {
                let joined = pandas_join(&inputs, join);
                let (names, space) = lists.join(join).expect("join");
                assert_eq!(names, joined, "{inputs:?} {join:?}");
                assert_eq!(space.n_other, joined.len() as u64);
                assert_eq!(space.n_inputs(), inputs.len());
                assert_eq!(space.n_distinct(), lists.n_distinct());
                for (i, n) in inputs.iter().enumerate() {
                    assert_eq!(space.reindexer(i), &Reindexer::new(n, &joined));
                }
            }
        }
        let (one, _) = pushed(&vec![a.clone(); 5]);
        assert_eq!(one.n_distinct(), 1);
    }

    #[test]
    fn a_name_twice_in_a_list_is_named_even_when_another_list_has_it_once() {
        let mut lists = NameLists::default();
        let first = s(&["a", "b"]);
        assert_eq!(lists.push(first.clone(), NameLists::hash(&first)), Ok(true));
        let twice = s(&["c", "b", "d", "b"]);
        assert_eq!(
            lists.push(twice.clone(), NameLists::hash(&twice)),
            Err(DuplicateName("b".into()))
        );
    }
}
