//! A worker's task threads: each takes the next admitted task, hands the
//! tasks queued behind it to the prefetch thread, runs its kernel, and hands the kernel's deferred work (its flush) to the flush
//! thread, telling the scheduler at once that the task computed.

use super::*;

/// The loop of one task thread, until the worker stops.
pub(super) fn exec_loop(shared: &Shared, registry: &KernelRegistry) {
    loop {
        let (task, ahead) = {
            let Ok(mut st) = shared.exec.lock() else {
                return;
            };
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let session = shared.current_session();
                if let Some(task) = st.admit(&shared.governor, shared.in_use(), session) {
                    break (task, st.to_prefetch(shared.prefetch_window));
                }
                st = match shared.wake.wait_timeout(st, SAMPLE_INTERVAL) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
        };
        for p in ahead {
            let _ = shared.prefetch_tx.send(p);
        }
        let mem = task.a.memory_bytes;
        let _ = shared
            .done_tx
            .send(Event::Started(task.session, task.a.key));
        let (completion, deferred) = run_task(shared, registry, task);
        // Freed memory the allocator keeps counts in RSS; hand it back only
        // when RSS is over the limit (doing it after every task costs the
        // next task its page faults: dense concats ran 1.8x slower).
        if shared.rss.load(Ordering::Relaxed) > shared.governor.limit {
            governor::release_free_memory();
        }
        if let Ok(mut st) = shared.exec.lock() {
            st.finish(mem);
        }
        shared.wake.notify_all();
        match deferred {
            Some(deferred) => {
                let _ = shared
                    .done_tx
                    .send(Event::Computed(completion.session, completion.key));
                let _ = shared.flush_tx.send(flush::Pending {
                    completion,
                    deferred,
                });
            }
            None => {
                let _ = shared.done_tx.send(Event::Ended(completion));
            }
        }
    }
}

/// Fault-injection hook for tests: `ANNCAT_TEST_TASK_DELAY_MS` makes every
/// task take at least that long, so a test can act mid-run (read once).
pub fn test_task_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("ANNCAT_TEST_TASK_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    })
}

/// Runs `task` on this thread: its completion, and the work it deferred
/// (to run before it is reported done).
fn run_task(
    shared: &Shared,
    registry: &KernelRegistry,
    task: ReadyTask,
) -> (Completion, Option<Deferred>) {
    let ReadyTask { session, a, inputs } = task;
    let key = a.key;
    if let Ok(mut m) = shared.task_rss.lock() {
        m.insert(key, shared.rss.load(Ordering::Relaxed));
    }
    if let Some(delay) = test_task_delay() {
        std::thread::sleep(delay);
    }
    governor::begin_task();
    let _ = take_bytes_written();
    let start_s = wall_s();
    registry.prepare_task();
    let result = match registry.get(&a.kernel) {
        None => Err(format!("this worker has no kernel named \"{}\"", a.kernel)),
        Some(kernel) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kernel.run(&a.args, &inputs)
        }))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            format!(
                "internal error in task {} ({}): {what}",
                a.key.task, a.label
            )
        })
        .and_then(|r| r.map_err(|e| e.to_string())),
    };
    // Taken either way: a failed task's notes must not ride on the next
    // task's flush (nothing of a failed task needs to be durable).
    let deferred = registry.take_deferred().filter(|_| result.is_ok());
    drop(inputs);
    let peak_alloc = governor::task_peak();
    let written_bytes = take_bytes_written();
    let end_s = wall_s();
    let peak_rss = shared
        .task_rss
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&key))
        .unwrap_or(0)
        .max(shared.rss.load(Ordering::Relaxed));
    let mut stats = TaskStats {
        start_s,
        end_s,
        output_bytes: 0,
        written_bytes,
        peak_alloc,
        peak_rss,
    };
    let (outcome, keep) = match result {
        Ok(output) => {
            if let Some(message) = shared.governor.over_limit(&a.label, peak_alloc) {
                (
                    TaskOutcome::Failed {
                        kind: FailureKind::OutOfMemory,
                        message,
                    },
                    None,
                )
            } else {
                stats.output_bytes = output.len() as u64;
                let output = Arc::new(output);
                let sent = a.send_output.then(|| output.as_ref().clone());
                (
                    TaskOutcome::Done { output: sent },
                    a.keep_output.then_some(output),
                )
            }
        }
        Err(message) => (
            TaskOutcome::Failed {
                kind: FailureKind::Error,
                message,
            },
            None,
        ),
    };
    let deferred = deferred.filter(|_| matches!(outcome, TaskOutcome::Done { .. }));
    (
        Completion {
            session,
            key,
            keep,
            outcome,
            stats,
        },
        deferred,
    )
}
