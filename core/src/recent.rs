//! A short list of values by path, kept most recently used last and
//! bounded: what a process keeps of loaded plans
//! ([`ConcatPlan::load`](crate::concat::ConcatPlan::load)) and of a run's
//! open input stores ([`StoreCache`](crate::anndata::store_cache::StoreCache)).
//! Linear in its length, which stays small.

use std::path::{Path, PathBuf};

/// At most `bound` values by path, the least recently used first.
#[derive(Debug)]
pub(crate) struct Recent<V> {
    entries: Vec<(PathBuf, V)>,
    bound: usize,
}

impl<V: Clone> Recent<V> {
    /// An empty list keeping at most `bound` values.
    pub(crate) const fn new(bound: usize) -> Self {
        Self {
            entries: Vec::new(),
            bound,
        }
    }

    /// The value kept for `key`, which becomes the most recently used.
    pub(crate) fn get(&mut self, key: &Path) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        let hit = self.entries.remove(i);
        let value = hit.1.clone();
        self.entries.push(hit);
        Some(value)
    }

    /// Keeps `value` for `key` (in place of any kept before) as the most
    /// recently used, dropping the least recently used past the bound.
    pub(crate) fn insert(&mut self, key: &Path, value: V) {
        self.entries.retain(|(k, _)| k != key);
        self.entries.push((key.to_path_buf(), value));
        let over = self.entries.len().saturating_sub(self.bound);
        self.entries.drain(..over);
    }

    /// The keys kept, the least recently used first.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().map(|(k, _)| k.as_path())
    }
}
