//! Names along the two axes: reading string indices, the kind of join of
//! the other axis (the join itself is in [`super::name_lists::NameLists`]),
//! and the reindexer that maps each input onto the joined axis.

use crate::anndata::range_read::ReadSubset;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zarrs::array::ArraySubset;

use crate::anndata::Store;
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

/// How one input maps onto the joined other axis.
///
/// Only the input's side is stored (its length): a plan holds one per
/// distinct name list, in the coordinator and in every worker, and the
/// joined side (`old_of_new`, the joined axis' length) is computed where
/// a task needs it, for the positions it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reindexer {
    /// For every input position, its output position, or -1 (dropped):
    /// 4 bytes a name, as the joined axis has fewer than 2^31 positions
    /// (the planner refuses more).
    pub new_of_old: Vec<i32>,
    /// Length of the joined axis.
    pub n_new: u64,
    /// The input's axis equals the joined one (nothing to do).
    pub identity: bool,
}

impl Reindexer {
    /// Maps `old` names onto `new` names.
    pub fn new(old: &[String], new: &[String]) -> Reindexer {
        if old == new {
            return Reindexer::identity(old.len());
        }
        let pos = positions_of(new);
        let new_of_old: Vec<i32> = old
            .iter()
            .map(|n| pos.get(n.as_str()).map_or(-1, |&p| p as i32))
            .collect();
        Reindexer::from_new_of_old(new_of_old, new.len())
    }

    /// The reindexer of an input whose axis is the joined one, of `n` names.
    pub fn identity(n: usize) -> Reindexer {
        Reindexer {
            new_of_old: (0..n as i32).collect(),
            n_new: n as u64,
            identity: true,
        }
    }

    /// The reindexer that sends input position `o` to `new_of_old[o]` (or
    /// drops it, -1) on a joined axis of `n_new` positions, each the image
    /// of at most one input position.
    pub fn from_new_of_old(new_of_old: Vec<i32>, n_new: usize) -> Reindexer {
        let identity = new_of_old.len() == n_new
            && new_of_old.iter().enumerate().all(|(o, &n)| n as usize == o);
        Reindexer {
            new_of_old,
            n_new: n_new as u64,
            identity,
        }
    }

    /// For every output position, the input position holding it, or -1.
    pub fn old_of_new(&self) -> Vec<i64> {
        self.old_of_new_in(0..self.n_new)
    }

    /// [`Reindexer::old_of_new`] of the output positions in `range` only
    /// (one pass over the input's positions).
    pub fn old_of_new_in(&self, range: std::ops::Range<u64>) -> Vec<i64> {
        let (start, end) = (range.start as i64, range.end.max(range.start) as i64);
        if self.identity {
            return (start..end).collect();
        }
        let mut olds = vec![-1i64; (end - start) as usize];
        for (o, &n) in self.new_of_old.iter().enumerate() {
            let n = i64::from(n);
            if n >= start && n < end {
                olds[(n - start) as usize] = o as i64;
            }
        }
        olds
    }

    /// How many output positions have no input value.
    pub fn n_missing(&self) -> u64 {
        let kept = self.new_of_old.iter().filter(|&&n| n >= 0).count() as u64;
        self.n_new.saturating_sub(kept)
    }

    /// Whether some output position has no input value (needs filling).
    pub fn has_missing(&self) -> bool {
        self.n_missing() > 0
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
    fn reindexer_maps_both_ways() {
        let r = Reindexer::new(&s(&["x", "y", "z"]), &s(&["z", "w", "x"]));
        assert_eq!(r.old_of_new(), vec![2, -1, 0]);
        assert_eq!(r.old_of_new_in(1..3), vec![-1, 0]);
        assert_eq!(r.n_missing(), 1);
        assert_eq!(r.new_of_old, vec![2, -1, 0]);
        assert!(r.has_missing() && !r.identity);
        assert!(Reindexer::new(&s(&["a"]), &s(&["a"])).identity);
    }
}
