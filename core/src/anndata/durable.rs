//! Durability of what a task wrote: a task is reported done (and journaled
//! as done) only after its chunks are on stable storage, so after a power
//! loss the journal never claims a chunk the disk lost.
//!
//! Writes note the files they wrote ([`note_written`], or
//! [`note_written_file`] with the open file, per thread); at the end of a
//! task [`take_unsynced`] hands over their flush: an `fdatasync` of each
//! file, then an `fsync` of each directory a name was added to. A worker
//! runs it on another thread while its next task computes, and reports the
//! task done once it returned.
//!
//! Only the task's own files are flushed, not the whole file system: a
//! `syncfs(2)` would also write out every other process' dirty data (on a
//! shared node, without bound), and it wrote the output's directory blocks
//! in place while the next task looked names up in them (lookups waited
//! for that write: 0.1-0.25 s of a 0.6 s concat). A task that wrote more
//! than [`MAX_FILES`] files is flushed as its file system, by one `syncfs`.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;

/// Most files a task's flush syncs one by one; a task that wrote more has
/// its file system flushed instead (and its note of files stays bounded).
pub const MAX_FILES: usize = 256;

/// Most written files a process keeps open for their flushes (flushes may
/// queue behind a slow disk); past it, a flush opens its files again.
pub const MAX_HELD_FILES: usize = 256;

/// Written files kept open, process-wide.
static HELD_FILES: AtomicUsize = AtomicUsize::new(0);

/// A written file kept open for its flush, counted in [`HELD_FILES`].
struct HeldFile(File);

impl HeldFile {
    /// `file`, kept open if fewer than [`MAX_HELD_FILES`] are.
    fn hold(file: File) -> Option<HeldFile> {
        if HELD_FILES.fetch_add(1, Ordering::Relaxed) < MAX_HELD_FILES {
            Some(HeldFile(file))
        } else {
            HELD_FILES.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

impl Drop for HeldFile {
    fn drop(&mut self) {
        HELD_FILES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Files a task wrote (the open file, when the writer handed it over).
#[derive(Default)]
struct Written {
    files: Vec<(PathBuf, Option<HeldFile>)>,
    /// More than [`MAX_FILES`] were written: flush the file system of
    /// this one instead.
    whole_file_system: Option<PathBuf>,
}

impl Written {
    fn is_empty(&self) -> bool {
        self.files.is_empty() && self.whole_file_system.is_none()
    }

    fn note(&mut self, path: &Path, file: Option<File>) {
        let file = file.and_then(HeldFile::hold);
        if self.whole_file_system.is_some() {
            return;
        }
        if self.files.len() >= MAX_FILES {
            self.files.clear();
            self.whole_file_system = Some(path.to_path_buf());
            return;
        }
        self.files.push((path.to_path_buf(), file));
    }
}

thread_local! {
    /// What this thread wrote since the last flush was taken.
    static WRITTEN: RefCell<Written> = RefCell::new(Written::default());
}

/// Records that `path` was written (or renamed into place) on this thread;
/// its flush opens it again by name.
pub fn note_written(path: &Path) {
    WRITTEN.with(|w| w.borrow_mut().note(path, None));
}

/// Records that `file`, now at `path`, was written on this thread; its
/// flush syncs that very file (no lookup by name, and not whatever another
/// writer may have renamed over it since).
pub fn note_written_file(path: &Path, file: File) {
    WRITTEN.with(|w| w.borrow_mut().note(path, Some(file)));
}

/// Whether this thread wrote something not yet made durable.
pub fn has_unsynced_writes() -> bool {
    WRITTEN.with(|w| !w.borrow().is_empty())
}

/// Takes what was written on this thread since the last call, as the
/// flush that makes it durable (it may run on any thread). Nothing
/// written: nothing to do.
pub fn take_unsynced() -> Option<crate::kernel::Deferred> {
    let written = WRITTEN.with(|w| std::mem::take(&mut *w.borrow_mut()));
    if written.is_empty() {
        return None;
    }
    Some(Box::new(move || make_durable(written)))
}

/// Flushes `written`: each file's data, then each directory holding one
/// of their names (or the whole file system, for a task of many files).
fn make_durable(written: Written) -> crate::error::Result<()> {
    let failed = |path: &Path, e: std::io::Error| {
        Error::path(path, format!("cannot make written data durable: {e}"))
    };
    if let Some(path) = written.whole_file_system {
        return sync_file_system(&path).map_err(|e| failed(&path, e));
    }
    if measuring_without_sync() {
        return Ok(());
    }
    let mut dirs: Vec<&Path> = Vec::new();
    for (path, file) in &written.files {
        let synced = match file {
            Some(f) => f.0.sync_data(),
            None => match File::open(path) {
                Ok(f) => f.sync_data(),
                // Gone since (a scratch file removed, a name renamed away):
                // nothing of it to keep, but its directory's change counts.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        };
        synced.map_err(|e| failed(path, e))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        sync_dir(dir).map_err(|e| failed(dir, e))?;
    }
    Ok(())
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
    let file = File::open(path).or_else(|_| File::open(path.parent().unwrap_or(Path::new("."))))?;
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
    File::open(dir)?.sync_all()
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
        // A handed-over file is synced as it is; a noted file removed since
        // leaves nothing to sync but its directory.
        let g = dir.path().join("other");
        note_written_file(&g, File::create(&g).expect("create"));
        note_written(&dir.path().join("removed since"));
        (take_unsynced().expect("a flush"))().expect("sync");
        // A directory that cannot be reached fails the flush, naming it.
        note_written(Path::new("/nonexistent/anncat/chunk"));
        let e = (take_unsynced().expect("a flush"))().expect_err("no such directory");
        assert!(e.to_string().contains("/nonexistent/anncat"), "{e}");
        sync_dir(dir.path()).expect("directory");
    }

    #[test]
    fn written_files_kept_open_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("chunk");
        std::fs::write(&f, b"x").expect("write");
        let open = || File::open(&f).expect("open");
        let held: Vec<HeldFile> = (0..MAX_HELD_FILES + 5)
            .filter_map(|_| HeldFile::hold(open()))
            .collect();
        assert!(held.len() <= MAX_HELD_FILES, "{}", held.len());
        assert!(HeldFile::hold(open()).is_none(), "none past the bound");
        drop(held);
        assert!(
            HeldFile::hold(open()).is_some(),
            "dropped ones free their places"
        );
    }

    #[test]
    fn a_task_of_many_files_flushes_its_file_system_and_keeps_no_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..MAX_FILES + 10 {
            note_written(&dir.path().join(format!("{i}")));
        }
        WRITTEN.with(|w| {
            let w = w.borrow();
            assert!(w.files.is_empty(), "the list is dropped past the bound");
            assert_eq!(
                w.whole_file_system.as_deref(),
                Some(dir.path().join(format!("{MAX_FILES}")).as_path())
            );
        });
        // The file system's flush: the file need not exist, its directory does.
        (take_unsynced().expect("a flush"))().expect("syncfs");
        assert!(!has_unsynced_writes());
    }
}
