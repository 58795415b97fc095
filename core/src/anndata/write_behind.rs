//! Chunk writes that land behind the task, around the page cache.
//!
//! A task thread hands a chunk's encoded bytes to this process' writer
//! thread and goes on computing; the writer writes them to the chunk's
//! temporary file with `O_DIRECT` and renames it into place. The task's
//! flush ([`super::durable`]) waits for each of its writes to land before
//! it syncs the file, so a task is still reported done only once its
//! chunks are on stable storage, and a write that failed fails its task.
//!
//! Why around the page cache: a buffered write copies every byte into
//! freshly allocated page-cache pages, which the task's flush then writes
//! out from the same thread; on a virtual machine whose freed memory goes
//! back to the host, touching those fresh pages cost more than compressing
//! the chunk (perf, CSR obs inner: the kernel's copy into the page cache
//! was 18% of all CPU). An `O_DIRECT` write goes to the device from a
//! buffer this module keeps and reuses, and leaves the inputs' pages in
//! the cache. The buffers are on huge pages where the kernel gives them
//! ([`super::huge_buffer`]): a chunk then reaches the device in one or two
//! requests instead of one per megabyte or less (CSR obs inner, 6 files:
//! 0.52 against 0.43 s, median of 8 alternating runs each). File systems
//! that refuse `O_DIRECT` (tmpfs, some FUSE mounts) get buffered writes,
//! still behind the task.
//!
//! Only threads that opted in ([`allow_on_this_thread`], a task thread
//! whose every task ends in a flush) write behind, and only chunks of at
//! least [`MIN_BYTES`]; reads, listings and removals through anncat's
//! stores first wait for this thread's writes at or under the key they
//! touch ([`super::durable::settle_this_thread_under`]), and the sandbox's
//! for all of them ([`super::durable::settle_this_thread`]), so a task
//! reads what it wrote, while a chunk it handed over lands as it goes on
//! (opening the next array's metadata does not wait for it).

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use super::durable::HeldFile;
use super::huge_buffer::HugeBuffer;

/// Chunks at least this long are written behind; shorter ones (metadata,
/// small chunks) are written in place, where an `O_DIRECT` write's
/// latency would cost more than the copy.
pub const MIN_BYTES: usize = 64 * 1024;

/// Alignment of `O_DIRECT` buffers, lengths and offsets (4 KiB: enough
/// for every common device's logical block).
const ALIGN: usize = 4096;

/// Writes queued behind the one being written; a task thread that hands
/// over more waits (the memory held stays at a few chunks).
const QUEUED: usize = 1;

/// Aligned buffers kept for reuse (freshly allocated pages are what this
/// module avoids).
const KEPT_BUFFERS: usize = QUEUED + 2;

thread_local! {
    /// Whether this thread's chunk writes may land behind it.
    static ALLOWED: Cell<bool> = const { Cell::new(false) };
}

/// Lets this thread's chunk writes land behind it: for a task thread
/// whose every task ends in the flush [`super::durable::take_unsynced`]
/// hands over (a kernel registry's prepare hook).
pub fn allow_on_this_thread() {
    ALLOWED.with(|a| a.set(true));
}

/// Keeps this thread's chunk writes in place (buffered) until the next
/// [`allow_on_this_thread`]: for scratch data read back soon, which a
/// direct write would send to the disk only for the reader to fault it
/// back into fresh page-cache pages.
pub fn forbid_on_this_thread() {
    ALLOWED.with(|a| a.set(false));
}

/// Whether a chunk write of `len` bytes on this thread goes behind it (not
/// on a codec pool thread, whose writes no task's flush waits for).
pub(crate) fn applies(len: usize) -> bool {
    len >= MIN_BYTES && ALLOWED.with(Cell::get) && !super::durable::on_pool_thread()
}

/// How a write behind ended: the written file (kept open for its flush,
/// within the process' bound) or why it failed.
type Landed = std::io::Result<Option<HeldFile>>;

#[derive(Default)]
struct Ticket {
    landed: Mutex<Option<Landed>>,
    wake: Condvar,
}

/// A chunk write handed to the writer thread.
pub(crate) struct PendingWrite(Arc<Ticket>);

impl PendingWrite {
    /// Blocks until the write landed or failed.
    pub(crate) fn wait(&self) {
        let Ok(mut landed) = self.0.landed.lock() else {
            return;
        };
        while landed.is_none() {
            landed = match self.0.wake.wait(landed) {
                Ok(l) => l,
                Err(_) => return,
            };
        }
    }

    /// Blocks until the write landed, and returns how it ended.
    pub(crate) fn outcome(self) -> Landed {
        self.wait();
        self.0
            .landed
            .lock()
            .ok()
            .and_then(|mut l| l.take())
            .unwrap_or_else(|| Err(std::io::Error::other("the chunk writer stopped")))
    }
}

struct Job {
    tmp: PathBuf,
    path: PathBuf,
    buffer: HugeBuffer,
    len: usize,
    ticket: Arc<Ticket>,
}

/// Hands `bytes` to the writer thread, to be written to `tmp` and renamed
/// to `path` (whose directory exists).
pub(crate) fn write(tmp: PathBuf, path: PathBuf, bytes: &[u8]) -> std::io::Result<PendingWrite> {
    write_encoded(tmp, path, bytes.len(), |dest| {
        dest[..bytes.len()].copy_from_slice(bytes);
        Some(bytes.len())
    })?
    .ok_or_else(|| std::io::Error::other("a copy into the write buffer failed"))
}

/// Hands the bytes `encode` puts at the start of a kept buffer of
/// `max_len` aligned bytes (returning how many) to the writer thread, as
/// [`write`] does, without copying them; `None` if `encode` failed.
pub(crate) fn write_encoded(
    tmp: PathBuf,
    path: PathBuf,
    max_len: usize,
    encode: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> std::io::Result<Option<PendingWrite>> {
    let mut buffer = take_buffer(max_len)?;
    let Some(len) = encode(&mut buffer.as_mut_slice()[..max_len]).filter(|&n| n <= max_len) else {
        give_back(buffer);
        return Ok(None);
    };
    let ticket = Arc::new(Ticket::default());
    let job = Job {
        tmp,
        path,
        buffer,
        len,
        ticket: ticket.clone(),
    };
    writer()?
        .send(job)
        .map_err(|_| std::io::Error::other("the chunk writer thread stopped"))?;
    Ok(Some(PendingWrite(ticket)))
}

/// The writer thread's queue, started on first use.
fn writer() -> std::io::Result<&'static SyncSender<Job>> {
    static WRITER: OnceLock<SyncSender<Job>> = OnceLock::new();
    if let Some(w) = WRITER.get() {
        return Ok(w);
    }
    let (tx, rx) = sync_channel(QUEUED);
    let mut started = None;
    let w = WRITER.get_or_init(|| {
        started = Some(
            std::thread::Builder::new()
                .name("anncat-writer".into())
                .spawn(move || write_all(rx)),
        );
        tx
    });
    match started {
        Some(Err(e)) => Err(e),
        _ => Ok(w),
    }
}

/// The writer thread: lands each job in turn.
fn write_all(jobs: Receiver<Job>) {
    for job in jobs {
        let bytes = &job.buffer.as_slice()[..job.len];
        let landed = write_file(&job.tmp, bytes, direct_allowed())
            .and_then(|file| std::fs::rename(&job.tmp, &job.path).map(|()| file));
        let landed = match landed {
            Ok(file) => Ok(HeldFile::hold(file)),
            Err(e) => {
                let _ = std::fs::remove_file(&job.tmp);
                Err(e)
            }
        };
        give_back(job.buffer);
        if let Ok(mut l) = job.ticket.landed.lock() {
            *l = Some(landed);
        }
        job.ticket.wake.notify_all();
    }
}

/// Set once a file system refused `O_DIRECT`: this process writes
/// buffered from then on.
static BUFFERED_ONLY: AtomicBool = AtomicBool::new(false);

fn direct_allowed() -> bool {
    cfg!(target_os = "linux")
        && !BUFFERED_ONLY.load(Ordering::Relaxed)
        && !super::durable::measuring_without_sync()
}

/// Writes `bytes` (starting at an [`ALIGN`]ed address) to a new file
/// `tmp`: with `O_DIRECT` if `direct`, falling back to a buffered write
/// where the file system refuses it.
fn write_file(tmp: &std::path::Path, bytes: &[u8], direct: bool) -> std::io::Result<File> {
    if direct {
        match write_direct(tmp, bytes) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                BUFFERED_ONLY.store(true, Ordering::Relaxed);
            }
            done => return done,
        }
    }
    let mut file = File::create(tmp)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// The whole blocks of `bytes` go with `O_DIRECT`; a partial last
/// block goes through the page cache from a second, buffered handle (then
/// the one returned, for the flush). Writing it padded and truncating
/// instead made the file system read that block back from the device to
/// zero its tail: a synchronous read per chunk.
#[cfg(target_os = "linux")]
fn write_direct(tmp: &std::path::Path, bytes: &[u8]) -> std::io::Result<File> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp)?;
    let whole = bytes.len() / ALIGN * ALIGN;
    file.write_all_at(&bytes[..whole], 0)?;
    if whole == bytes.len() {
        return Ok(file);
    }
    let tail = std::fs::OpenOptions::new().write(true).open(tmp)?;
    tail.write_all_at(&bytes[whole..], whole as u64)?;
    Ok(tail)
}

#[cfg(not(target_os = "linux"))]
fn write_direct(_: &std::path::Path, _: &[u8]) -> std::io::Result<File> {
    Err(std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// Buffers kept for reuse.
static BUFFERS: Mutex<Vec<HugeBuffer>> = Mutex::new(Vec::new());

/// A buffer of at least `len` bytes, [`ALIGN`]ed (on huge pages where the
/// kernel gives them: fewer, larger requests to the device): a kept one if
/// one is large enough.
fn take_buffer(len: usize) -> std::io::Result<HugeBuffer> {
    let kept = BUFFERS.lock().ok().and_then(|mut b| {
        let i = b.iter().position(|v| v.len() >= len)?;
        Some(b.swap_remove(i))
    });
    kept.map_or_else(|| HugeBuffer::new(len), Ok)
}

/// Keeps `buffer` for reuse, in place of the smallest kept one if there
/// are enough.
fn give_back(buffer: HugeBuffer) {
    let Ok(mut kept) = BUFFERS.lock() else {
        return;
    };
    if kept.len() < KEPT_BUFFERS {
        kept.push(buffer);
    } else if let Some(i) = (0..kept.len()).min_by_key(|&i| kept[i].len())
        && kept[i].len() < buffer.len()
    {
        kept[i] = buffer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_behind_lands_whole_and_renamed_whatever_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [MIN_BYTES, MIN_BYTES + 1, 3 * ALIGN * 100 + 17, 1 << 20] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("{len}"));
            let tmp = dir.path().join(format!(".{len}.tmp"));
            let pending = write(tmp.clone(), path.clone(), &bytes).expect("queued");
            pending.outcome().expect("landed");
            assert_eq!(std::fs::read(&path).expect("read"), bytes, "{len}");
            assert!(!tmp.exists());
        }
    }

    #[test]
    fn the_buffered_fallback_writes_the_same_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut buffer = take_buffer(5000).expect("buffer");
        buffer.as_mut_slice()[..5000].fill(9);
        let bytes = &buffer.as_slice()[..5000];
        let tmp = dir.path().join("f");
        write_file(&tmp, bytes, false).expect("buffered");
        assert_eq!(std::fs::read(&tmp).expect("read"), vec![9; 5000]);
        write_file(&tmp, bytes, direct_allowed()).expect("either way");
        assert_eq!(std::fs::read(&tmp).expect("read"), vec![9; 5000]);
        // Whole blocks only, and a file shorter than one block.
        write_file(&tmp, &buffer.as_slice()[..ALIGN], direct_allowed()).expect("whole");
        assert_eq!(std::fs::read(&tmp).expect("read"), vec![9; ALIGN]);
        write_file(&tmp, &buffer.as_slice()[..10], direct_allowed()).expect("short");
        assert_eq!(std::fs::read(&tmp).expect("read"), vec![9; 10]);
    }

    #[test]
    fn a_failed_write_behind_reports_why_and_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no such directory");
        let pending = write(
            missing.join(".c.tmp"),
            missing.join("c"),
            &vec![1; MIN_BYTES],
        )
        .expect("queued");
        let e = pending.outcome().err().expect("failed");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn only_opted_in_threads_write_behind_and_only_large_chunks() {
        std::thread::spawn(|| {
            assert!(!applies(MIN_BYTES), "not opted in");
            allow_on_this_thread();
            assert!(applies(MIN_BYTES));
            assert!(!applies(MIN_BYTES - 1), "small ones in place");
        })
        .join()
        .expect("thread");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        pool.install(|| {
            allow_on_this_thread();
            assert!(!applies(MIN_BYTES), "never on a codec pool thread");
        });
    }

    #[test]
    fn kept_buffers_are_reused_and_bounded() {
        for _ in 0..KEPT_BUFFERS + 3 {
            give_back(HugeBuffer::new(3 * ALIGN).expect("buffer"));
        }
        assert!(BUFFERS.lock().expect("lock").len() <= KEPT_BUFFERS);
        let buffer = take_buffer(ALIGN).expect("buffer");
        assert_eq!(buffer.as_slice().as_ptr() as usize % ALIGN, 0, "aligned");
        assert!(buffer.len() >= ALIGN);
    }
}
