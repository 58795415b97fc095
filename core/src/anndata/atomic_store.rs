//! A zarrs storage backend over a directory whose every write is atomic:
//! bytes go to a temporary file beside the key, which is then renamed over
//! it, so a crash never leaves a torn chunk or half a metadata document.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use zarrs::filesystem::FilesystemStore;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, ListableStorageTraits, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits,
    StorageError, StoreKey, StoreKeys, StoreKeysPrefixes, StorePrefix, WritableStorageTraits,
};

/// Distinguishes temporary files written concurrently by threads of one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Filesystem storage with atomic whole-value writes (temporary file + rename).
#[derive(Debug)]
pub struct AtomicFsStore {
    inner: FilesystemStore,
    root: PathBuf,
}

impl AtomicFsStore {
    /// Opens (without creating) the directory `root` as storage.
    pub fn new(root: &Path) -> Result<Self, String> {
        let inner = FilesystemStore::new(root).map_err(|e| e.to_string())?;
        Ok(Self {
            inner,
            root: root.to_path_buf(),
        })
    }

    /// The directory this storage lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key`.
    pub fn key_path(&self, key: &StoreKey) -> PathBuf {
        self.inner.key_to_fspath(key)
    }

    /// Asks the kernel to start reading `key`'s file into the page cache
    /// (`posix_fadvise(WILLNEED)`), so that a read soon after finds it
    /// there instead of waiting for the disk. Advice only: a missing file
    /// or a refusal is ignored, and nothing waits for the reading.
    pub fn advise_willneed(&self, key: &StoreKey) {
        #[cfg(test)]
        ADVISED.with(|a| a.borrow_mut().push(self.inner.key_to_fspath(key)));
        #[cfg(target_os = "linux")]
        if let Ok(file) = std::fs::File::open(self.inner.key_to_fspath(key)) {
            use std::os::fd::AsRawFd;
            // SAFETY: `file` is an open descriptor for the whole call; the
            // call touches no memory of this process.
            #[allow(unsafe_code)]
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = key;
    }
}

#[cfg(test)]
thread_local! {
    /// The files this thread advised the kernel to fetch (for tests).
    static ADVISED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes the files this thread advised the kernel to fetch since the last
/// call (for tests).
#[cfg(test)]
pub(crate) fn take_advised() -> Vec<PathBuf> {
    ADVISED.with(|a| std::mem::take(&mut *a.borrow_mut()))
}

pub use anncat_exec::write_roots::{check_write_allowed, restrict_writes};

/// Writes `bytes` to `path` atomically: a temporary sibling, then a rename
/// over the destination. Missing parent directories are created. The write
/// (and the new directories' entries) is made
/// durable by the flush [`super::durable::take_unsynced`] hands over at the end of the task.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_as(path, bytes, false)
}

/// [`write_atomic`]; a chunk (`behind`) may land behind the task instead
/// ([`super::write_behind`]), its flush waiting for it.
fn write_atomic_as(path: &Path, bytes: &[u8], behind: bool) -> std::io::Result<()> {
    check_write_allowed(path)?;
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    super::durable::create_dirs(parent)?;
    let tmp = temp_sibling(path);
    if behind && super::write_behind::applies(bytes.len()) {
        let pending = super::write_behind::write(tmp, path.to_path_buf(), bytes)?;
        super::durable::note_landing(path, pending);
        return Ok(());
    }
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.flush()?;
        std::fs::rename(&tmp, path)?;
        // Kept open for its flush, which syncs this very file.
        super::durable::note_written_file(path, f);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a chunk file at `path` atomically (as [`write_atomic`], behind
/// the task where that applies) from the bytes `encode` puts at the start
/// of a buffer of `max_len` bytes, returning how many: when behind, the
/// buffer is the writer's own aligned one, so nothing is copied.
/// `Ok(false)`: `encode` failed and nothing was written.
pub(crate) fn write_chunk_encoded(
    path: &Path,
    max_len: usize,
    encode: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> std::io::Result<bool> {
    check_write_allowed(path)?;
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    super::durable::create_dirs(parent)?;
    if super::write_behind::applies(max_len) {
        let tmp = temp_sibling(path);
        let Some(pending) =
            super::write_behind::write_encoded(tmp, path.to_path_buf(), max_len, encode)?
        else {
            return Ok(false);
        };
        super::durable::note_landing(path, pending);
        return Ok(true);
    }
    let mut buffer = vec![0u8; max_len];
    let Some(n) = encode(&mut buffer).filter(|&n| n <= max_len) else {
        return Ok(false);
    };
    write_atomic(path, &buffer[..n])?;
    Ok(true)
}

/// A temporary file beside `path`, unique to this process and write.
fn temp_sibling(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    parent.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Whether `key` names a chunk (or shard), not a metadata document.
fn is_chunk(key: &StoreKey) -> bool {
    let name = key.as_str().rsplit('/').next().unwrap_or_default();
    !name.starts_with('.') && name != "zarr.json"
}

impl ReadableStorageTraits for AtomicFsStore {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        super::durable::settle_this_thread_under(&self.inner.key_to_fspath(key));
        self.inner.get_partial_many(key, byte_ranges)
    }

    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        super::durable::settle_this_thread_under(&self.inner.key_to_fspath(key));
        self.inner.size_key(key)
    }

    fn supports_get_partial(&self) -> bool {
        true
    }
}

impl WritableStorageTraits for AtomicFsStore {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        write_atomic_as(&self.inner.key_to_fspath(key), &value, is_chunk(key))
            .map_err(StorageError::from)
    }

    fn set_partial_many(
        &self,
        key: &StoreKey,
        _offset_values: OffsetBytesIterator<'_>,
    ) -> Result<(), StorageError> {
        Err(StorageError::Other(format!(
            "partial write of {key} refused: anncat writes whole chunks only"
        )))
    }

    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        let path = self.inner.key_to_fspath(key);
        super::durable::settle_this_thread_under(&path);
        check_write_allowed(&path)?;
        self.inner.erase(key)
    }

    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        let path = self.inner.prefix_to_fs_path(prefix);
        super::durable::settle_this_thread_under(&path);
        check_write_allowed(&path)?;
        self.inner.erase_prefix(prefix)
    }

    fn supports_set_partial(&self) -> bool {
        false
    }
}

impl ListableStorageTraits for AtomicFsStore {
    fn list(&self) -> Result<StoreKeys, StorageError> {
        super::durable::settle_this_thread();
        self.inner.list()
    }

    fn list_prefix(&self, prefix: &StorePrefix) -> Result<StoreKeys, StorageError> {
        super::durable::settle_this_thread_under(&self.inner.prefix_to_fs_path(prefix));
        self.inner.list_prefix(prefix)
    }

    fn list_dir(&self, prefix: &StorePrefix) -> Result<StoreKeysPrefixes, StorageError> {
        super::durable::settle_this_thread_under(&self.inner.prefix_to_fs_path(prefix));
        self.inner.list_dir(prefix)
    }

    fn size_prefix(&self, prefix: &StorePrefix) -> Result<u64, StorageError> {
        super::durable::settle_this_thread_under(&self.inner.prefix_to_fs_path(prefix));
        self.inner.size_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_writes_whole_value_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AtomicFsStore::new(dir.path()).expect("store");
        let key = StoreKey::new("a/b/c").expect("key");
        store.set(&key, Bytes::from_static(b"hello")).expect("set");
        store
            .set(&key, Bytes::from_static(b"hi"))
            .expect("overwrite");
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c")).expect("read"),
            b"hi"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c")]);
        assert!(
            store
                .set_partial(&key, 0, Bytes::from_static(b"x"))
                .is_err()
        );
    }

    /// Runs `test` on a fresh thread that writes behind, as a task thread
    /// does, with a store over a new temporary directory.
    fn on_a_task_thread(test: impl FnOnce(&Path, &AtomicFsStore) + Send + 'static) {
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = AtomicFsStore::new(dir.path()).expect("store");
            super::super::write_behind::allow_on_this_thread();
            test(dir.path(), &store);
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_chunk_written_behind_is_read_back_and_flushed_by_the_task() {
        on_a_task_thread(|dir, store| {
            let big: Vec<u8> = (0..super::super::write_behind::MIN_BYTES * 3)
                .map(|i| (i % 253) as u8)
                .collect();
            let chunk = StoreKey::new("x/data/0").expect("key");
            store.set(&chunk, Bytes::from(big.clone())).expect("set");
            // The same task reads what it wrote, landed or not: by key, by
            // size, and in listings of the prefixes above it (each waits
            // only for the writes at or under what it looks at).
            let read = store.get(&chunk).expect("get").expect("present");
            assert_eq!(&read[..], &big[..]);
            let other = StoreKey::new("x/indices/0").expect("key");
            store.set(&other, Bytes::from(big.clone())).expect("set");
            assert_eq!(
                store.size_key(&other).expect("size"),
                Some(big.len() as u64)
            );
            let listed = store
                .list_prefix(&StorePrefix::new("x/").expect("prefix"))
                .expect("list");
            assert_eq!(listed, vec![chunk.clone(), other.clone()]);
            // Metadata is written in place, whatever its size.
            let meta = StoreKey::new("x/data/.zarray").expect("key");
            store.set(&meta, Bytes::from(big.clone())).expect("set");
            assert_eq!(
                std::fs::read(dir.join("x/data/.zarray")).expect("read"),
                big
            );
            // The task's flush waits for its chunk and syncs it.
            (super::super::durable::take_unsynced().expect("a flush"))().expect("durable");
            assert_eq!(std::fs::read(dir.join("x/data/0")).expect("read"), big);
        });
    }

    #[test]
    fn a_chunk_that_fails_to_land_fails_the_flush_naming_it() {
        on_a_task_thread(|dir, store| {
            // A directory where the chunk goes: its rename into place fails
            // behind the task (as a full disk would fail the write).
            let chunk_path = dir.join("0");
            std::fs::create_dir(&chunk_path).expect("mkdir");
            std::fs::write(chunk_path.join("x"), b"x").expect("write");
            let chunk = StoreKey::new("0").expect("key");
            let big = vec![7u8; super::super::write_behind::MIN_BYTES];
            store.set(&chunk, Bytes::from(big)).expect("queued");
            let e = (super::super::durable::take_unsynced().expect("a flush"))()
                .expect_err("not written");
            assert!(
                e.to_string().contains("cannot write")
                    && e.to_string().contains(&*chunk_path.to_string_lossy()),
                "{e}"
            );
            let left: Vec<_> = std::fs::read_dir(dir)
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(
                left,
                vec![std::ffi::OsString::from("0")],
                "no temporary left"
            );
        });
    }
}
