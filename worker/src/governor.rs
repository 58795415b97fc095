//! The worker's memory governor: a counting global allocator (total bytes
//! allocated, and per thread the peak of what the running task allocated),
//! a sampler of the process RSS (via sysinfo), and the admission rule that
//! starts a task only while the sum of running tasks' estimates fits the
//! budget and the process is not near its limit.
//!
//! A binary opts into exact counting by installing [`CountingAllocator`] as
//! its `#[global_allocator]` (the `anncat` binary does); without it the
//! governor still works from RSS samples.

#![allow(unsafe_code)] // A GlobalAlloc is unsafe by definition; it only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static THREAD_NET: Cell<i64> = const { Cell::new(0) };
    static THREAD_PEAK: Cell<i64> = const { Cell::new(0) };
    /// This thread's change to [`ALLOCATED`] not yet added to it.
    static THREAD_PENDING: Cell<i64> = const { Cell::new(0) };
}

/// A thread adds its allocations to the process total in steps of at least
/// this many bytes: the shared counter is touched once per step instead of
/// at every allocation (which made threads allocating many small strings
/// at once contend for its cache line). [`allocated`] is thus behind by at
/// most this much per thread.
const FLUSH_BYTES: i64 = 64 * 1024;

/// Counts allocated bytes, in total and per thread, then defers to the
/// system allocator.
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAllocator;

fn note(delta: i64) {
    THREAD_PENDING.with(|pending| {
        let owed = pending.get() + delta;
        if owed.abs() >= FLUSH_BYTES {
            pending.set(0);
            add_to_total(owed);
        } else {
            pending.set(owed);
        }
    });
    THREAD_NET.with(|n| {
        let v = n.get() + delta;
        n.set(v);
        THREAD_PEAK.with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

fn add_to_total(delta: i64) {
    if delta >= 0 {
        ALLOCATED.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        ALLOCATED.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}

/// Adds what this thread still owes to the process total now.
fn flush_thread() {
    THREAD_PENDING.with(|pending| add_to_total(pending.replace(0)));
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping touches only atomics and const-initialized
// thread-locals without destructors, and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Marks the counting allocator as installed (call from `main` of a binary
/// that installed it, so reports say which measure they use).
pub fn mark_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

/// Whether the counting allocator is installed in this process.
pub fn counting() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Bytes allocated now through the counting allocator (0 if not installed),
/// up to [`FLUSH_BYTES`] per thread not yet added.
pub fn allocated() -> u64 {
    ALLOCATED.load(Ordering::Relaxed)
}

/// Starts measuring the task about to run on this thread.
pub fn begin_task() {
    flush_thread();
    THREAD_NET.with(|n| n.set(0));
    THREAD_PEAK.with(|p| p.set(0));
}

/// Peak bytes this thread allocated (net) since [`begin_task`].
pub fn task_peak() -> u64 {
    THREAD_PEAK.with(|p| p.get().max(0) as u64)
}

/// Reads this process's resident set size.
#[derive(Debug)]
pub struct RssProbe {
    system: Option<sysinfo::System>,
    pid: sysinfo::Pid,
}

impl Default for RssProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl RssProbe {
    /// A probe for this process.
    pub fn new() -> Self {
        Self {
            system: sysinfo::System::new().ok(),
            pid: sysinfo::Pid::from_u32(std::process::id()),
        }
    }

    /// Current RSS in bytes.
    pub fn rss(&mut self) -> u64 {
        let Some(system) = self.system.as_mut() else {
            return 0;
        };
        system.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[self.pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing().with_memory(),
        );
        system.process(self.pid).map_or(0, |p| p.memory())
    }
}

/// The kernel's high-water mark of this process' resident set (`VmHWM`
/// in `/proc/self/status`), in bytes; 0 where it is not available.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// How often the RSS sampler runs.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// Admission of tasks against a byte budget and the process' measured use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryGovernor {
    /// The process' memory limit (bytes).
    pub limit: u64,
    /// What running tasks' estimates may add up to (the limit minus the
    /// process' own baseline).
    pub budget: u64,
}

impl MemoryGovernor {
    /// A governor for `limit`, with `baseline` bytes already in use.
    pub fn new(limit: u64, baseline: u64) -> Self {
        Self {
            limit,
            budget: limit.saturating_sub(baseline),
        }
    }

    /// Whether to start a task estimated at `estimate` when running tasks
    /// reserved `reserved` (of which `running` are running) and the process
    /// uses `in_use` bytes. A lone task is always admitted (the scheduler
    /// checked it fits the budget).
    pub fn admits(&self, estimate: u64, reserved: u64, running: usize, in_use: u64) -> bool {
        if running == 0 {
            return true;
        }
        reserved + estimate <= self.budget && !self.paused(in_use)
    }

    /// Whether intake pauses: the process is above 90% of its limit.
    pub fn paused(&self, in_use: u64) -> bool {
        in_use > self.limit / 10 * 9
    }

    /// The error for a task that went over the limit, if it did.
    pub fn over_limit(&self, label: &str, task_peak: u64) -> Option<String> {
        (task_peak > self.limit).then(|| {
            format!(
                "task {label} used {} MiB, over the worker's memory limit of {} MiB: raise --memory-limit or lower --chunk-mib",
                task_peak.div_ceil(1 << 20),
                self.limit >> 20
            )
        })
    }
}

/// Tells the C allocator to keep freed chunk buffers for the next task:
/// serve allocations up to 32 MiB from its arenas (not fresh `mmap`s) and
/// never trim on its own. Otherwise every chunk-sized buffer is a fresh
/// mapping whose pages the kernel faults in and zeroes (a fifth of a
/// sparse concat's time). RSS stays bounded: the governor admits tasks by
/// their declared memory and [`release_free_memory`] runs when RSS goes
/// over the limit. A no-op where the allocator is not glibc's.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is called
    // before the worker starts its task threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands memory the allocator keeps after a task back to the system, so
/// the process' RSS follows what its tasks use (glibc keeps freed blocks in
/// its arenas otherwise). A no-op where there is no `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of the C allocator to the
    // kernel; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Caps the C allocator at one arena per core. glibc allows eight per core
/// and keeps what each thread's arena freed: a coordinator whose threads
/// hashed names on all cores kept 2-4 MiB more at 3.2M cells
/// (benches/ATLAS_RESULTS.md), and a worker's runtime threads an arena each.
/// Call before threads start; a no-op where there is no `mallopt`.
pub fn one_malloc_arena_per_core() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let arenas = libc::c_int::try_from(cores.max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a tuning parameter of the C allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_budget_and_pressure() {
        let g = MemoryGovernor::new(100 << 20, 20 << 20);
        assert_eq!(g.budget, 80 << 20);
        assert!(g.admits(90 << 20, 0, 0, 0), "a lone task always runs");
        assert!(g.admits(30 << 20, 40 << 20, 1, 50 << 20));
        assert!(!g.admits(50 << 20, 40 << 20, 1, 50 << 20), "over budget");
        assert!(!g.admits(1, 0, 1, 95 << 20), "paused near the limit");
        assert!(
            g.over_limit("t", 101 << 20)
                .expect("over")
                .contains("memory limit")
        );
        assert!(g.over_limit("t", 99 << 20).is_none());
    }

    #[test]
    fn a_thread_adds_to_the_total_in_steps() {
        // Only this test calls `note` (the allocator is not installed in
        // unit tests), on a thread of its own.
        std::thread::spawn(|| {
            let before = allocated();
            note(1000);
            assert_eq!(allocated(), before, "a small change waits");
            note(FLUSH_BYTES);
            assert_eq!(allocated(), before + 1000 + FLUSH_BYTES as u64);
            note(-500);
            begin_task();
            assert_eq!(
                allocated(),
                before + 500 + FLUSH_BYTES as u64,
                "a task start adds what is owed"
            );
            note(-(500 + FLUSH_BYTES));
            assert_eq!(allocated(), before);
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn rss_probe_reads_something() {
        assert!(RssProbe::new().rss() > 0);
    }

    #[test]
    fn the_peak_is_at_least_the_current_resident_set() {
        let now = RssProbe::new().rss();
        let peak = peak_rss();
        assert!(
            peak > 0 && peak + (4 << 20) >= now,
            "peak {peak}, now {now}"
        );
    }
}
