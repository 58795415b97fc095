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

/// A kernel followed by a check of its own (see
/// [`KernelRegistry::finish_each_with`]).
struct Then {
    inner: Arc<dyn Kernel>,
    after: fn() -> Result<()>,
}

impl Kernel for Then {
    fn run(&self, args: &[u8], inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>> {
        let output = self.inner.run(args, inputs)?;
        (self.after)()?;
        Ok(output)
    }
}

/// The built-in kernel whose output is its arguments: stands in for a task
/// whose output is already known (a resumed run's finished tasks).
pub const CONST_KERNEL: &str = "anncat.const";

/// Kernel implementations by name.
#[derive(Clone, Default)]
pub struct KernelRegistry {
    kernels: HashMap<String, Arc<dyn Kernel>>,
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

    /// Makes every kernel registered so far call `after` once it has run
    /// successfully; an error from `after` fails the task. (The concat
    /// kernels make their writes durable this way before they are reported
    /// done.)
    pub fn finish_each_with(&mut self, after: fn() -> Result<()>) {
        for kernel in self.kernels.values_mut() {
            *kernel = Arc::new(Then {
                inner: kernel.clone(),
                after,
            });
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

    static AFTER_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn count() -> Result<()> {
        AFTER_CALLS.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn refuse() -> Result<()> {
        Err(Error::Task("not durable".into()))
    }

    #[test]
    fn finish_each_with_runs_after_success_only_and_its_error_fails_the_task() {
        let mut r = KernelRegistry::new();
        r.register("fail", |_: &[u8], _: &[Arc<Vec<u8>>]| -> Result<Vec<u8>> {
            Err(Error::Task("kernel failed".into()))
        });
        r.finish_each_with(count);
        let const_kernel = r.get(CONST_KERNEL).expect("const");
        assert_eq!(const_kernel.run(b"ab", &[]).expect("run"), b"ab");
        assert_eq!(AFTER_CALLS.load(Ordering::SeqCst), 1);
        assert!(r.get("fail").expect("fail").run(b"", &[]).is_err());
        assert_eq!(AFTER_CALLS.load(Ordering::SeqCst), 1, "not after a failure");
        r.finish_each_with(refuse);
        let e = r
            .get(CONST_KERNEL)
            .expect("const")
            .run(b"", &[])
            .expect_err("refused");
        assert!(e.to_string().contains("not durable"), "{e}");
    }
}
