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

    /// The kernel registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Kernel>> {
        self.kernels.get(name).cloned()
    }
}
