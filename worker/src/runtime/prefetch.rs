//! The prefetch thread: the kernels of the tasks queued next are asked to
//! start fetching what they will read ([`Kernel::prefetch`]), so that
//! their reads (input chunks not in the page cache) overlap the running
//! task's compute instead of following it. Advice only: a prefetch that
//! panics is ignored, and the task reads and reports as it would have.
//!
//! [`Kernel::prefetch`]: anncat_exec::kernel::Kernel::prefetch

use std::sync::mpsc::{Receiver, Sender};

use crate::queue::Prefetch;

use super::*;

/// Queued tasks fetched ahead per task thread: the tasks that start next.
pub(super) const AHEAD_PER_THREAD: usize = 2;

/// The channel task threads hand tasks to fetch ahead to.
pub(super) fn channel() -> (Sender<Prefetch>, Receiver<Prefetch>) {
    std::sync::mpsc::channel()
}

/// Starts the prefetch thread: it runs each handed-out task's prefetch in
/// turn, until the worker stops.
pub(super) fn start(
    shared: Arc<Shared>,
    registry: Arc<KernelRegistry>,
    tasks: Receiver<Prefetch>,
) -> Result<()> {
    drain_on_thread("anncat-prefetch", shared, tasks, move |p| {
        if let Some(kernel) = registry.get(&p.kernel) {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                kernel.prefetch(&p.args, &p.inputs)
            }));
        }
    })
}
