//! Durability of what a task wrote: a task is reported done (and journaled
//! as done) only after its chunks are on stable storage, so after a power
//! loss the journal never claims a chunk the disk lost.
//!
//! Writes note the file they wrote ([`note_written`], per thread); at the
//! end of a task [`take_unsynced`] hands over a flush of the file system
//! that holds them: one `syncfs(2)` (data, inodes and the directory entries
//! of the renames), a batch per task instead of an `fsync` per chunk. A
//! worker runs it on another thread while its next task computes, and
//! reports the task done once it returned.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use crate::error::Error;

thread_local! {
    /// A file written on this thread since the last sync (any one will do:
    /// the sync covers its whole file system).
    static WRITTEN: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Records that `path` was written (or renamed into place) on this thread.
pub fn note_written(path: &Path) {
    WRITTEN.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_none() {
            *w = Some(path.to_path_buf());
        }
    });
}

/// Whether this thread wrote something not yet made durable.
pub fn has_unsynced_writes() -> bool {
    WRITTEN.with(|w| w.borrow().is_some())
}

/// Takes what was written on this thread since the last call, as the
/// flush that makes it durable (it may run on any thread). Nothing
/// written: nothing to do.
pub fn take_unsynced() -> Option<crate::kernel::Deferred> {
    let path = WRITTEN.with(|w| w.borrow_mut().take())?;
    Some(Box::new(move || {
        sync_file_system(&path)
            .map_err(|e| Error::path(&path, format!("cannot make written data durable: {e}")))
    }))
}

/// `ANNCAT_TEST_NO_SYNC=1`: every flush below does nothing, only so that
/// the benches can measure what the flushes cost. Never for real runs.
fn measuring_without_sync() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("ANNCAT_TEST_NO_SYNC").is_some_and(|v| v == "1"))
}

/// Flushes the file system holding `path` (its parent directory, if the
/// file itself is gone).
pub fn sync_file_system(path: &Path) -> std::io::Result<()> {
    if measuring_without_sync() {
        return Ok(());
    }
    let file = std::fs::File::open(path)
        .or_else(|_| std::fs::File::open(path.parent().unwrap_or(Path::new("."))))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the duration of the call.
        #[allow(unsafe_code)] // syncfs(2) has no safe wrapper in std.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        file.sync_all()
    }
}

/// Makes a rename in `dir` survive a power loss (fsync of the directory).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if measuring_without_sync() {
        return Ok(());
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_takes_what_this_thread_wrote_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("chunk");
        std::fs::write(&f, b"x").expect("write");
        note_written(&f);
        assert!(has_unsynced_writes());
        let flush = take_unsynced().expect("a flush");
        assert!(!has_unsynced_writes(), "taken");
        assert!(take_unsynced().is_none(), "nothing more to sync");
        // The flush runs on another thread; that thread's writes are its own.
        note_written(&f);
        std::thread::spawn(move || {
            assert!(!has_unsynced_writes());
            flush().expect("sync");
        })
        .join()
        .expect("thread");
        (take_unsynced().expect("a flush"))().expect("sync");
        // A file system that cannot be reached fails the flush, naming it.
        note_written(Path::new("/nonexistent/anncat/chunk"));
        let e = (take_unsynced().expect("a flush"))().expect_err("no such file");
        assert!(e.to_string().contains("/nonexistent/anncat/chunk"), "{e}");
        sync_dir(dir.path()).expect("directory");
    }
}
