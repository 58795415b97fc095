//! Durability of what a task wrote: a task is reported done (and journaled
//! as done) only after its chunks are on stable storage, so after a power
//! loss the journal never claims a chunk the disk lost.
//!
//! Writes note the files they wrote ([`note_written`], or
//! [`note_written_file`] with the open file, or `note_landing` with a
//! chunk still being written behind the task, see [`super::write_behind`])
//! and the directories they changed ([`create_dirs`], [`note_dir_changed`]),
//! per thread; at the end of a task [`take_unsynced`] hands over their
//! flush: each write behind waited for (one that failed fails the flush),
//! an `fdatasync` of each file, then an `fsync` of each directory that
//! gained or lost a name.
//! A worker runs it on another thread while its next task computes, and
//! reports the task done once it returned.
//!
//! Only the task's own files are flushed, not the whole file system: a
//! `syncfs(2)` would also write out every other process' dirty data (on a
//! shared node, without bound), and it wrote the output's directory blocks
//! in place while the next task looked names up in them (lookups waited
//! for that write: 0.1-0.25 s of a 0.6 s concat). The file system is
//! flushed instead (one `syncfs`) for a task that wrote more than
//! [`MAX_FILES`] files, and when a codec thread pool (rayon) wrote for a
//! task: those threads' writes cannot be told apart by task, so they are
//! counted, and a task's flush that may include some syncs the file system
//! unless a `syncfs` that began after them already returned.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::write_behind::PendingWrite;
use crate::error::Error;

/// Most files (and directories) a task's flush syncs one by one; a task
/// that wrote more has its file system flushed instead (and its note of
/// files stays bounded).
pub const MAX_FILES: usize = 64;

/// Most written files a process keeps open for their flushes (flushes may
/// queue behind a slow disk); past it, a flush opens its files again.
pub const MAX_HELD_FILES: usize = 256;

/// Written files kept open, process-wide.
static HELD_FILES: AtomicUsize = AtomicUsize::new(0);

/// A written file kept open for its flush, counted in the counter it was
/// held against ([`HELD_FILES`] but in tests).
pub(crate) struct HeldFile {
    file: File,
    count: &'static AtomicUsize,
}

impl HeldFile {
    /// `file`, kept open if fewer than `bound` are held in `count`.
    fn hold_in(count: &'static AtomicUsize, bound: usize, file: File) -> Option<HeldFile> {
        if count.fetch_add(1, Ordering::Relaxed) < bound {
            Some(HeldFile { file, count })
        } else {
            count.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }

    /// `file`, kept open if fewer than [`MAX_HELD_FILES`] are.
    pub(crate) fn hold(file: File) -> Option<HeldFile> {
        Self::hold_in(&HELD_FILES, MAX_HELD_FILES, file)
    }
}

impl Drop for HeldFile {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a written file's flush reaches it.
enum ToSync {
    /// Opened again by name.
    ByName,
    /// The very file, kept open.
    Held(HeldFile),
    /// A write still landing behind the task (see [`super::write_behind`]).
    Landing(PendingWrite),
}

/// Files a task wrote (the open file, when the writer handed it over).
#[derive(Default)]
struct Written {
    files: Vec<(PathBuf, ToSync)>,
    /// Directories a name was added to besides the files' own (those that
    /// hold directories this task created).
    dirs: Vec<PathBuf>,
    /// More than [`MAX_FILES`] were written: flush the file system of
    /// this one instead.
    whole_file_system: Option<PathBuf>,
    /// The first write behind that failed (once the file list is gone).
    failed: Option<(PathBuf, std::io::Error)>,
}

impl Written {
    fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.dirs.is_empty()
            && self.whole_file_system.is_none()
            && self.failed.is_none()
    }

    fn note_dir(&mut self, dir: &Path) {
        if self.whole_file_system.is_some() || self.dirs.iter().any(|d| d == dir) {
            return;
        }
        if self.dirs.len() >= MAX_FILES {
            return self.flush_file_system_of(dir);
        }
        self.dirs.push(dir.to_path_buf());
    }

    fn note(&mut self, path: &Path, file: ToSync) {
        if self.whole_file_system.is_some() {
            return self.settle(path, file);
        }
        if let Some(i) = self.files.iter().position(|(p, _)| p == path) {
            // Written again: the newer file is the one to sync.
            self.files[i].1 = file;
            return;
        }
        if self.files.len() >= MAX_FILES {
            self.flush_file_system_of(path);
            return self.settle(path, file);
        }
        self.files.push((path.to_path_buf(), file));
    }

    /// Waits for `file` if it is still landing, keeping its error: the
    /// file system's flush covers it, but not a write that failed.
    fn settle(&mut self, path: &Path, file: ToSync) {
        if let ToSync::Landing(pending) = file
            && let Err(e) = pending.outcome()
            && self.failed.is_none()
        {
            self.failed = Some((path.to_path_buf(), e));
        }
    }

    /// Too many to sync one by one: the file system of `path` instead, and
    /// the lists (and the files they hold open) go, once what is still
    /// landing landed.
    fn flush_file_system_of(&mut self, path: &Path) {
        for (file, to_sync) in std::mem::take(&mut self.files) {
            self.settle(&file, to_sync);
        }
        self.dirs.clear();
        self.whole_file_system = Some(path.to_path_buf());
    }
}

thread_local! {
    /// What this thread wrote since the last flush was taken.
    static WRITTEN: RefCell<Written> = RefCell::new(Written::default());
}

/// Writes made on codec pool threads, counted (see the module doc).
static POOL_WRITES: AtomicU64 = AtomicU64::new(0);

/// Every pool write counted below this is durable: a `syncfs` that began
/// after it returned.
static POOL_WRITES_DURABLE: AtomicU64 = AtomicU64::new(0);

/// The directory of a pool thread's latest write, kept open: what the
/// file-system flush of pool writes syncs (by descriptor, so the flush
/// still reaches that file system after the output moved into place).
static POOL_WRITE_DIR: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

/// Whether this is a thread of rayon's pool, writing for whichever task
/// handed it work.
pub(crate) fn on_pool_thread() -> bool {
    rayon::current_thread_index().is_some()
}

/// Counts a pool thread's write of `path`.
fn note_pool_write(path: &Path) {
    let dir = parent_of(path);
    if let Ok(mut d) = POOL_WRITE_DIR.lock()
        && d.as_ref().is_none_or(|(held, _)| held != dir)
        && let Ok(f) = File::open(dir)
    {
        *d = Some((dir.to_path_buf(), f));
    }
    POOL_WRITES.fetch_add(1, Ordering::SeqCst);
}

/// Records that `path` was written (or renamed into place) on this thread;
/// its flush opens it again by name.
pub fn note_written(path: &Path) {
    if on_pool_thread() {
        return note_pool_write(path);
    }
    WRITTEN.with(|w| w.borrow_mut().note(path, ToSync::ByName));
}

/// Records that `file`, now at `path`, was written on this thread; its
/// flush syncs that very file (no lookup by name, and not whatever another
/// writer may have renamed over it since).
pub fn note_written_file(path: &Path, file: File) {
    if on_pool_thread() {
        return note_pool_write(path);
    }
    let file = HeldFile::hold(file).map_or(ToSync::ByName, ToSync::Held);
    WRITTEN.with(|w| w.borrow_mut().note(path, file));
}

/// Records that `pending`, a write of `path` handed to the writer thread
/// on this thread, will land: the flush waits for it, then syncs it.
pub(crate) fn note_landing(path: &Path, pending: PendingWrite) {
    WRITTEN.with(|w| w.borrow_mut().note(path, ToSync::Landing(pending)));
}

/// Waits until every write this thread handed to the writer thread since
/// its last flush landed: before it reads or removes anything, a task
/// sees what it wrote.
pub fn settle_this_thread() {
    settle_this_thread_where(|_| true);
}

/// [`settle_this_thread`] for the writes at `path` or under it only: what a
/// read, listing or removal there sees. A task that reads another array's
/// metadata after handing over a chunk goes on while the chunk lands.
pub fn settle_this_thread_under(path: &Path) {
    settle_this_thread_where(|written| written.starts_with(path));
}

/// Waits for this thread's writes still landing whose path `wanted` picks.
fn settle_this_thread_where(wanted: impl Fn(&Path) -> bool) {
    WRITTEN.with(|w| {
        for (written, file) in &w.borrow().files {
            if let ToSync::Landing(pending) = file
                && wanted(written)
            {
                pending.wait();
            }
        }
    });
}

/// Records that `dir` gained or lost a name on this thread (a removal, the
/// source side of a rename).
pub fn note_dir_changed(dir: &Path) {
    if on_pool_thread() {
        return note_pool_write(dir);
    }
    WRITTEN.with(|w| w.borrow_mut().note_dir(dir));
}

/// Creates `dir` and its missing ancestors, noting the directories that
/// gained an entry (each created one's parent) for this thread's flush.
/// An existing `dir` costs one `stat`.
pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut missing = vec![dir];
    while let Some(up) = missing[missing.len() - 1].parent() {
        if up.as_os_str().is_empty() || up.is_dir() {
            break;
        }
        missing.push(up);
    }
    std::fs::create_dir_all(dir)?;
    for created in &missing {
        note_dir_changed(parent_of(created));
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The files this thread's next flush syncs one by one (for tests).
#[cfg(test)]
pub(crate) fn noted_files() -> Vec<PathBuf> {
    WRITTEN.with(|w| w.borrow().files.iter().map(|(p, _)| p.clone()).collect())
}

/// Whether this thread wrote something not yet made durable.
pub fn has_unsynced_writes() -> bool {
    WRITTEN.with(|w| !w.borrow().is_empty())
}

/// Takes what was written on this thread since the last call, as the
/// flush that makes it durable (it may run on any thread), with the pool
/// writes made so far that no flush has covered yet. Nothing written:
/// nothing to do.
pub fn take_unsynced() -> Option<crate::kernel::Deferred> {
    let written = WRITTEN.with(|w| std::mem::take(&mut *w.borrow_mut()));
    let pool_writes = POOL_WRITES.load(Ordering::SeqCst);
    let pool_pending = pool_writes > POOL_WRITES_DURABLE.load(Ordering::SeqCst);
    if written.is_empty() && !pool_pending {
        return None;
    }
    Some(Box::new(move || {
        make_durable(written)?;
        if pool_pending {
            make_pool_writes_durable(pool_writes)?;
        }
        Ok(())
    }))
}

/// Flushes what this thread wrote since the last flush was taken, here
/// and now: for a thread that is not a task's (the planner's metadata,
/// before any task may be journaled).
pub fn flush_this_thread() -> crate::error::Result<()> {
    take_unsynced().map_or(Ok(()), |flush| flush())
}

/// Makes the first `count` pool writes durable: one `syncfs` of their file
/// system, unless one that began after them already returned.
fn make_pool_writes_durable(count: u64) -> crate::error::Result<()> {
    if POOL_WRITES_DURABLE.load(Ordering::SeqCst) >= count {
        return Ok(());
    }
    let covers = POOL_WRITES.load(Ordering::SeqCst);
    let held = POOL_WRITE_DIR.lock().ok().and_then(|d| {
        d.as_ref()
            .and_then(|(path, f)| Some((path.clone(), f.try_clone().ok()?)))
    });
    let Some((path, dir)) = held else {
        return Ok(());
    };
    if !measuring_without_sync() {
        sync_open_file_system(&dir)
            .map_err(|e| Error::path(&path, format!("cannot make written data durable: {e}")))?;
    }
    POOL_WRITES_DURABLE.fetch_max(covers, Ordering::SeqCst);
    Ok(())
}

/// Flushes `written`: each file's data, then each directory that gained
/// or lost a name (or the whole file system, for a task of many files).
fn make_durable(written: Written) -> crate::error::Result<()> {
    let failed = |path: &Path, e: std::io::Error| {
        Error::path(path, format!("cannot make written data durable: {e}"))
    };
    let not_written =
        |path: &Path, e: std::io::Error| Error::path(path, format!("cannot write: {e}"));
    if let Some((path, e)) = written.failed {
        return Err(not_written(&path, e));
    }
    if let Some(path) = written.whole_file_system {
        return sync_file_system(&path).map_err(|e| failed(&path, e));
    }
    if written.is_empty() {
        return Ok(());
    }
    let skip = measuring_without_sync();
    let mut dirs = written.dirs;
    for (path, file) in written.files {
        let held = match file {
            ToSync::Landing(pending) => pending.outcome().map_err(|e| not_written(&path, e))?,
            ToSync::Held(held) => Some(held),
            ToSync::ByName => None,
        };
        let synced = match held {
            _ if skip => Ok(()),
            Some(f) => f.file.sync_data(),
            None => match File::open(&path) {
                Ok(f) => f.sync_data(),
                // Gone since (a scratch file removed, a name renamed away):
                // nothing of it to keep, but its directory's change counts.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        };
        synced.map_err(|e| failed(&path, e))?;
        let dir = parent_of(&path);
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    for dir in &dirs {
        match sync_dir(dir) {
            // Removed since (a group rewritten): nothing in it to keep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            done => done.map_err(|e| failed(dir, e))?,
        }
    }
    Ok(())
}

/// `ANNCAT_TEST_NO_SYNC=1`: every flush below does nothing (and chunks
/// written behind go to the page cache), only so that the benches can
/// measure what durability costs. Never for real runs.
pub(crate) fn measuring_without_sync() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("ANNCAT_TEST_NO_SYNC").is_some_and(|v| v == "1"))
}

/// Flushes the file system holding `path` (through its nearest ancestor
/// that still exists, if it is gone).
pub fn sync_file_system(path: &Path) -> std::io::Result<()> {
    if measuring_without_sync() {
        return Ok(());
    }
    let mut at = path;
    let file = loop {
        match File::open(at) {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(up) if !up.as_os_str().is_empty() => at = up,
                _ => break File::open(".")?,
            },
            Err(e) => return Err(e),
        }
    };
    sync_open_file_system(&file)
}

/// Flushes the file system holding the open `file`.
fn sync_open_file_system(file: &File) -> std::io::Result<()> {
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
        assert!(
            !has_unsynced_writes(),
            "nothing more of this thread's to sync"
        );
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
        // A directory removed since has nothing left to keep.
        note_written(Path::new("/nonexistent/anncat/chunk"));
        (take_unsynced().expect("a flush"))().expect("gone: nothing to sync");
        // A file that cannot be opened fails the flush, naming it.
        let under_a_file = f.join("chunk");
        note_written(&under_a_file);
        let e = (take_unsynced().expect("a flush"))().expect_err("not a directory");
        assert!(
            e.to_string().contains(&*under_a_file.to_string_lossy()),
            "{e}"
        );
        sync_dir(dir.path()).expect("directory");
    }

    #[test]
    fn created_directories_are_noted_in_their_parents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = dir.path().join("a").join("b");
        create_dirs(&deep).expect("create");
        assert!(deep.is_dir());
        WRITTEN.with(|w| {
            let w = w.borrow();
            assert_eq!(w.dirs, vec![dir.path().join("a"), dir.path().to_path_buf()]);
        });
        (take_unsynced().expect("a flush"))().expect("sync");
        create_dirs(&deep).expect("exists");
        assert!(!has_unsynced_writes(), "an existing directory adds nothing");
    }

    #[test]
    fn written_files_kept_open_are_bounded() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("chunk");
        std::fs::write(&f, b"x").expect("write");
        let open = || File::open(&f).expect("open");
        let held: Vec<HeldFile> = (0..5)
            .filter_map(|_| HeldFile::hold_in(&COUNT, 3, open()))
            .collect();
        assert_eq!(held.len(), 3);
        assert!(
            HeldFile::hold_in(&COUNT, 3, open()).is_none(),
            "none past the bound"
        );
        drop(held);
        assert_eq!(
            COUNT.load(Ordering::Relaxed),
            0,
            "dropped ones free their places"
        );
        assert!(HeldFile::hold_in(&COUNT, 3, open()).is_some());
    }

    #[test]
    fn a_pool_threads_writes_are_flushed_by_the_next_task_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("chunk");
        std::fs::write(&f, b"x").expect("write");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        pool.install(|| note_written(&f));
        assert!(!has_unsynced_writes(), "not this thread's note");
        let before = POOL_WRITES.load(Ordering::SeqCst);
        assert!(before > POOL_WRITES_DURABLE.load(Ordering::SeqCst));
        (take_unsynced().expect("a flush of the pool's write"))().expect("syncfs");
        assert!(POOL_WRITES_DURABLE.load(Ordering::SeqCst) >= before);
    }

    #[test]
    fn writes_still_landing_are_waited_for_and_their_failure_kept_past_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = vec![3u8; super::super::write_behind::MIN_BYTES];
        let land = |name: &str| {
            let path = dir.path().join(name);
            let tmp = dir.path().join(format!(".{name}.tmp"));
            let pending =
                super::super::write_behind::write(tmp, path.clone(), &bytes).expect("queued");
            note_landing(&path, pending);
        };
        land("a");
        settle_this_thread();
        assert!(dir.path().join("a").is_file(), "landed once settled");
        // One that fails (its directory is missing), then more than the
        // list holds: the file system is flushed, the failure still told.
        let missing = dir.path().join("missing/b");
        let pending = super::super::write_behind::write(
            dir.path().join("missing/.b.tmp"),
            missing.clone(),
            &bytes,
        )
        .expect("queued");
        note_landing(&missing, pending);
        for i in 0..MAX_FILES {
            land(&format!("c{i}"));
        }
        WRITTEN.with(|w| assert!(w.borrow().whole_file_system.is_some()));
        let e = (take_unsynced().expect("a flush"))().expect_err("b failed");
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        assert!(dir.path().join(format!("c{}", MAX_FILES - 1)).is_file());
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
        // The file system's flush: the file need not exist, nor its directory.
        (take_unsynced().expect("a flush"))().expect("syncfs");
        sync_file_system(&dir.path().join("gone/long/ago")).expect("an ancestor's");
        assert!(!has_unsynced_writes());
    }
}
