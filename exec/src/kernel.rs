//! Kernels: named functions a task runs. Rust cannot ship closures over a
//! wire, so every executor (in-process or a worker process) holds a
//! [`KernelRegistry`] mapping kernel names to implementations.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Result;

/// A kernel: turns encoded arguments and its dependencies' outputs into an
/// encoded output.
pub trait Kernel: Send + Sync {
    /// Runs the kernel. `inputs` are the outputs of the task's dependencies,
    /// in the order of its `deps`.
    fn run(&self, args: &[u8], inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>>;

    /// Asks storage to start fetching what [`Kernel::run`] will read for
    /// these arguments and inputs (a file's pages into the page cache),
    /// ahead of the run: a worker calls it on a thread of its own for the
    /// tasks queued next, so their reads overlap the running task's
    /// compute. Advice only: nothing is returned, nothing may fail, and it
    /// should not take long. By default it does nothing.
    fn prefetch(&self, args: &[u8], inputs: &[Arc<Vec<u8>>]) {
        let _ = (args, inputs);
    }
}

/// A kernel made of a run function and a prefetch function (see
/// [`KernelRegistry::register_prefetching`]).
struct Prefetching<R, P> {
    run: R,
    prefetch: P,
}

impl<R, P> Kernel for Prefetching<R, P>
where
    R: Fn(&[u8], &[Arc<Vec<u8>>]) -> Result<Vec<u8>> + Send + Sync,
    P: Fn(&[u8], &[Arc<Vec<u8>>]) + Send + Sync,
{
    fn run(&self, args: &[u8], inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>> {
        (self.run)(args, inputs)
    }

    fn prefetch(&self, args: &[u8], inputs: &[Arc<Vec<u8>>]) {
        (self.prefetch)(args, inputs);
    }
}

impl<F> Kernel for F
where
    F: Fn(&[u8], &[Arc<Vec<u8>>]) -> Result<Vec<u8>> + Send + Sync,
{
    fn run(&self, args: &[u8], inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>> {
        self(args, inputs)
    }
}

thread_local! {
    static WRITTEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Kernels call this with the bytes they wrote to storage; executors read
/// the per-task total with [`take_bytes_written`].
pub fn record_bytes_written(bytes: u64) {
    WRITTEN.with(|w| w.set(w.get() + bytes));
}

/// Bytes recorded on this thread since the last call (then resets).
pub fn take_bytes_written() -> u64 {
    WRITTEN.with(|w| w.replace(0))
}

/// Work a task left to do before it may be reported done, which need not
/// hold the task's thread: the concat kernels' flush of their writes to
/// stable storage. An executor runs it (on any thread) after the kernel
/// succeeded, and reports the task done only if it succeeds too.
pub type Deferred = Box<dyn FnOnce() -> Result<()> + Send>;

/// Takes, on a task's thread right after its kernel succeeded, what the
/// task left to finish (see [`KernelRegistry::finish_each_with`]).
pub type TakeDeferred = fn() -> Option<Deferred>;

/// The built-in kernel whose output is its arguments: stands in for a task
/// whose output is already known (a resumed run's finished tasks).
pub const CONST_KERNEL: &str = "anncat.const";

/// Kernel implementations by name.
#[derive(Clone, Default)]
pub struct KernelRegistry {
    kernels: HashMap<String, Arc<dyn Kernel>>,
    finish: Vec<TakeDeferred>,
    prepare: Vec<fn()>,
}

impl std::fmt::Debug for KernelRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.kernels.keys().collect();
        names.sort();
        f.debug_struct("KernelRegistry")
            .field("kernels", &names)
            .finish()
    }
}

impl KernelRegistry {
    /// A registry with only the built-in [`CONST_KERNEL`].
    pub fn new() -> Self {
        let mut r = Self::default();
        r.register(CONST_KERNEL, |args: &[u8], _: &[Arc<Vec<u8>>]| {
            Ok(args.to_vec())
        });
        r
    }

    /// Registers `kernel` under `name` (replacing any earlier one).
    pub fn register(&mut self, name: &str, kernel: impl Kernel + 'static) {
        self.kernels.insert(name.to_string(), Arc::new(kernel));
    }

    /// Registers under `name` a kernel that runs `run` and fetches ahead
    /// with `prefetch` (see [`Kernel::prefetch`]).
    pub fn register_prefetching<R, P>(&mut self, name: &str, run: R, prefetch: P)
    where
        R: Fn(&[u8], &[Arc<Vec<u8>>]) -> Result<Vec<u8>> + Send + Sync + 'static,
        P: Fn(&[u8], &[Arc<Vec<u8>>]) + Send + Sync + 'static,
    {
        self.register(name, Prefetching { run, prefetch });
    }

    /// Makes every task of this registry finish with `take` too (after
    /// the finishers given before): executors call it on the task's
    /// thread once the kernel succeeded, and run what it returns before
    /// they report the task done; its error fails the task. (The concat
    /// kernels make their writes durable this way: a worker flushes on
    /// another thread while its next task computes.)
    pub fn finish_each_with(&mut self, take: TakeDeferred) {
        self.finish.push(take);
    }

    /// Makes every task of this registry start with `hook`: executors
    /// call it on the task's thread just before the kernel runs. (The
    /// concat kernels let their chunk writes land behind the task this
    /// way, on threads whose tasks are always followed by their
    /// finishers.)
    pub fn prepare_each_with(&mut self, hook: fn()) {
        self.prepare.push(hook);
    }

    /// Runs the hooks given to [`KernelRegistry::prepare_each_with`], on
    /// the thread about to run a task.
    pub fn prepare_task(&self) {
        self.prepare.iter().for_each(|hook| hook());
    }

    /// What the task that just succeeded on this thread left to finish
    /// (see [`KernelRegistry::finish_each_with`]), as one piece of work.
    pub fn take_deferred(&self) -> Option<Deferred> {
        let mut all: Vec<Deferred> = self.finish.iter().filter_map(|take| take()).collect();
        match all.len() {
            0 => None,
            1 => all.pop(),
            _ => Some(Box::new(move || all.into_iter().try_for_each(|d| d()))),
        }
    }

    /// The kernel registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Kernel>> {
        self.kernels.get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static TAKES: AtomicUsize = AtomicUsize::new(0);

    fn count() -> Option<Deferred> {
        TAKES.fetch_add(1, Ordering::SeqCst);
        None
    }

    fn refuse() -> Option<Deferred> {
        Some(Box::new(|| Err(Error::Task("not durable".into()))))
    }

    #[test]
    fn a_registry_hands_out_the_deferred_work_of_its_finisher() {
        let mut r = KernelRegistry::new();
        assert!(r.take_deferred().is_none(), "no finisher: nothing deferred");
        r.finish_each_with(count);
        assert!(r.take_deferred().is_none());
        assert_eq!(TAKES.load(Ordering::SeqCst), 1);
        r.finish_each_with(refuse);
        let e = (r.take_deferred().expect("deferred"))().expect_err("refused");
        assert!(e.to_string().contains("not durable"), "{e}");
        assert_eq!(TAKES.load(Ordering::SeqCst), 2, "every finisher is asked");
        r.finish_each_with(refuse);
        let e = (r.take_deferred().expect("deferred"))().expect_err("both refuse");
        assert!(e.to_string().contains("not durable"), "{e}");
    }

    static FETCHED: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_kernel_fetches_ahead_only_when_registered_with_a_prefetch() {
        let mut r = KernelRegistry::new();
        r.register("plain", |args: &[u8], _: &[Arc<Vec<u8>>]| Ok(args.to_vec()));
        r.register_prefetching(
            "ahead",
            |args: &[u8], _: &[Arc<Vec<u8>>]| Ok(args.to_vec()),
            |args: &[u8], inputs: &[Arc<Vec<u8>>]| {
                FETCHED.fetch_add(args.len() + inputs.len(), Ordering::SeqCst);
            },
        );
        let input = [Arc::new(vec![1u8])];
        r.get("plain").expect("plain").prefetch(b"ab", &input);
        assert_eq!(
            FETCHED.load(Ordering::SeqCst),
            0,
            "the default does nothing"
        );
        let ahead = r.get("ahead").expect("ahead");
        ahead.prefetch(b"ab", &input);
        assert_eq!(
            FETCHED.load(Ordering::SeqCst),
            3,
            "arguments and inputs passed"
        );
        assert_eq!(ahead.run(b"xy", &[]).expect("run"), b"xy");
    }

    static PREPARED: AtomicUsize = AtomicUsize::new(0);

    fn prepared() {
        PREPARED.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_registry_runs_its_prepare_hooks_before_each_task() {
        let mut r = KernelRegistry::new();
        r.prepare_task();
        assert_eq!(PREPARED.load(Ordering::SeqCst), 0, "no hook yet");
        r.prepare_each_with(prepared);
        r.prepare_each_with(prepared);
        r.prepare_task();
        assert_eq!(PREPARED.load(Ordering::SeqCst), 2, "every hook runs");
    }
}
