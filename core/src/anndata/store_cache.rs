//! Input stores kept open across the tasks of one run in one process.
//!
//! Every task used to open its inputs afresh: the store's format and
//! legacy layout, then each array's metadata (`.zarray`, `.zattrs`, a
//! probe for `zarr.json`), several times a task. That was about 19,000
//! small file opens in a nine-input sparse concat. A [`StoreCache`] lives
//! with a run's loaded plan, so nothing it holds outlives the run: the
//! inputs do not change while it runs (a resume checks them), but may
//! between runs served by the same worker.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use zarrs::array::Array;

use super::backend::Backend;
use super::store::{NodeMeta, Store};
use crate::error::Result;
use crate::recent::Recent;

/// Zarr input stores a process keeps open for a run, least recently used
/// first. An `.h5ad` input is opened afresh each time: an open HDF5 file
/// holds a chunk cache, and a run may have thousands.
#[derive(Debug, Clone)]
pub struct StoreCache {
    kept: Arc<Mutex<Recent<Store>>>,
}

impl Default for StoreCache {
    fn default() -> Self {
        Self {
            kept: Arc::new(Mutex::new(Recent::new(Self::ENTRIES))),
        }
    }
}

impl StoreCache {
    /// Stores kept at most (each holds the metadata of the few arrays a
    /// task reads: a few KiB).
    pub const ENTRIES: usize = 64;

    /// The input store at `path`: the kept one, or newly opened.
    pub fn open(&self, path: &Path) -> Result<Store> {
        if let Some(store) = self.kept.lock().ok().and_then(|mut k| k.get(path)) {
            return Ok(store);
        }
        let store = Store::open(path)?;
        if store.h5().is_some() {
            return Ok(store);
        }
        let store = store.memoized();
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(path, store.clone());
        }
        Ok(store)
    }
}

/// What a kept [`Store`] has read: node metadata and opened arrays, by
/// path. Errors are not kept.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    nodes: Mutex<HashMap<String, Option<NodeMeta>>>,
    arrays: Mutex<HashMap<String, Arc<Array<Backend>>>>,
}

impl Memo {
    /// The node at `path`, read by `read` the first time.
    pub(crate) fn node(
        &self,
        path: &str,
        read: impl FnOnce() -> Result<Option<NodeMeta>>,
    ) -> Result<Option<NodeMeta>> {
        if let Some(hit) = self.nodes.lock().ok().and_then(|n| n.get(path).cloned()) {
            return Ok(hit);
        }
        let node = read()?;
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(path.to_string(), node.clone());
        }
        Ok(node)
    }

    /// The array at `path`, opened by `open` the first time.
    pub(crate) fn array(
        &self,
        path: &str,
        open: impl FnOnce() -> Result<Array<Backend>>,
    ) -> Result<Arc<Array<Backend>>> {
        if let Some(hit) = self.arrays.lock().ok().and_then(|a| a.get(path).cloned()) {
            return Ok(hit);
        }
        let array = Arc::new(open()?);
        if let Ok(mut arrays) = self.arrays.lock() {
            arrays.insert(path.to_string(), array.clone());
        }
        Ok(array)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
    }

    /// A copy of the `chunked_v2.zarr` fixture in a fresh directory.
    fn copy_of_fixture() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("in.zarr");
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(fixtures().join("chunked_v2.zarr"))
            .arg(&copy)
            .status()
            .expect("cp");
        assert!(status.success());
        (dir, copy)
    }

    /// A kept store reads each node's metadata and opens each array once:
    /// after its metadata is gone from disk, the kept store still has it,
    /// while a store opened afresh (or through another run's cache) does
    /// not.
    #[test]
    fn a_kept_store_reads_metadata_once_per_run() {
        let (_dir, copy) = copy_of_fixture();
        let run = StoreCache::default();
        let store = run.open(&copy).expect("open");
        let shape = store.shared_array("X").expect("X").shape().to_vec();
        assert!(store.node("X").expect("node").is_some());
        std::fs::remove_file(copy.join("X/.zarray")).expect("remove");

        let again = run.open(&copy).expect("kept");
        assert_eq!(again.shared_array("X").expect("kept X").shape(), shape);
        assert!(again.node("X").expect("kept node").is_some());

        let fresh = Store::open(&copy).expect("open afresh");
        assert!(fresh.shared_array("X").is_err(), "no metadata on disk");
        assert!(fresh.node("X").expect("node").is_none());
        let other_run = StoreCache::default().open(&copy).expect("open");
        assert!(
            other_run.shared_array("X").is_err(),
            "another run reads afresh"
        );
    }

    /// Errors are not kept: an array that could not be opened is tried
    /// again.
    #[test]
    fn a_failed_open_is_not_kept() {
        let (_dir, copy) = copy_of_fixture();
        let zarray = std::fs::read(copy.join("X/.zarray")).expect("read");
        std::fs::remove_file(copy.join("X/.zarray")).expect("remove");
        let run = StoreCache::default();
        let store = run.open(&copy).expect("open");
        assert!(store.shared_array("X").is_err());
        std::fs::write(copy.join("X/.zarray"), zarray).expect("restore");
        assert!(run.open(&copy).expect("kept").shared_array("X").is_ok());
    }

    /// At most [`StoreCache::ENTRIES`] stores are kept, the least recently
    /// used dropped first.
    #[test]
    fn the_cache_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = StoreCache::default();
        let paths: Vec<PathBuf> = (0..=StoreCache::ENTRIES)
            .map(|i| {
                let p = dir.path().join(format!("s{i}.zarr"));
                std::fs::create_dir(&p).expect("mkdir");
                std::fs::write(p.join(".zgroup"), br#"{"zarr_format": 2}"#).expect("zgroup");
                p
            })
            .collect();
        for p in &paths {
            run.open(p).expect("open");
        }
        run.open(&paths[1]).expect("touch the second");
        let kept: Vec<PathBuf> = run
            .kept
            .lock()
            .expect("lock")
            .keys()
            .map(Path::to_path_buf)
            .collect();
        assert_eq!(kept.len(), StoreCache::ENTRIES);
        assert!(!kept.contains(&paths[0]), "the least recently used went");
        assert_eq!(kept.last(), Some(&paths[1]), "the last used is kept last");
    }

    /// An `.h5ad` input is opened, and not kept.
    #[cfg(feature = "hdf5")]
    #[test]
    fn an_hdf5_file_is_not_kept() {
        let run = StoreCache::default();
        let h5ad = fixtures().join("legacy/a07.h5ad");
        let store = run.open(&h5ad).expect("open h5ad");
        assert!(store.h5().is_some());
        let kept = run.kept.lock().expect("lock");
        assert_eq!(kept.keys().count(), 0, "an HDF5 file is not kept");
    }
}
