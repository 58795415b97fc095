//! The flush thread: what a task deferred (the concat kernels' flush of
//! their writes to stable storage) runs here, off the task thread, so the
//! next task computes while the disk catches up. A task is reported done
//! only once its flush returned; a flush that fails fails its task.

use std::sync::mpsc::{Receiver, Sender};

use anncat_exec::kernel::Deferred;

use super::*;

/// A finished task waiting for its deferred work.
pub(super) struct Pending {
    pub(super) completion: Completion,
    pub(super) deferred: Deferred,
}

/// The channel task threads hand [`Pending`] tasks to.
pub(super) fn channel() -> (Sender<Pending>, Receiver<Pending>) {
    std::sync::mpsc::channel()
}

/// Starts the flush thread: it runs each pending task's deferred work in
/// turn and reports the task, until the worker stops.
pub(super) fn start(shared: Arc<Shared>, pending: Receiver<Pending>) -> Result<()> {
    let done = shared.done_tx.clone();
    drain_on_thread("anncat-flush", shared, pending, move |p| {
        let _ = done.send(Event::Ended(finish(p)));
    })
}

/// Runs `p`'s deferred work: its completion as it was, or failed with the
/// work's error (and no output kept).
fn finish(p: Pending) -> Completion {
    let Pending {
        mut completion,
        deferred,
    } = p;
    if let Err(e) = deferred() {
        completion.outcome = TaskOutcome::Failed {
            kind: FailureKind::Error,
            message: e.to_string(),
        };
        completion.keep = None;
    }
    completion
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Completion {
        Completion {
            session: 1,
            key: TaskKey {
                job: anncat_exec::protocol::JobId(1),
                task: anncat_exec::graph::TaskId(2),
            },
            keep: Some(Arc::new(vec![1])),
            outcome: TaskOutcome::Done { output: None },
            stats: TaskStats::default(),
        }
    }

    #[test]
    fn a_failed_flush_fails_its_task_and_a_good_one_leaves_it_done() {
        let ok = finish(Pending {
            completion: done(),
            deferred: Box::new(|| Ok(())),
        });
        assert!(matches!(ok.outcome, TaskOutcome::Done { .. }));
        assert!(ok.keep.is_some());
        let failed = finish(Pending {
            completion: done(),
            deferred: Box::new(|| Err(anncat_exec::Error::Task("disk gone".into()))),
        });
        match failed.outcome {
            TaskOutcome::Failed { kind, message } => {
                assert_eq!(kind, FailureKind::Error);
                assert_eq!(message, "disk gone");
            }
            other => panic!("{other:?}"),
        }
        assert!(failed.keep.is_none(), "a failed task keeps no output");
    }
}
