//! The worker's task queue and admission as plain data and functions (no
//! threads, no sockets): tasks wait in arrival order; the one at the front
//! starts when the [`MemoryGovernor`] admits it against what running tasks
//! reserved and what the process uses; tasks of a session that ended are
//! dropped unstarted. The tasks at the front of the queue are handed out
//! once each to be fetched ahead ([`TaskQueue::to_prefetch`]). The
//! runtime holds one [`TaskQueue`] behind a mutex and its task threads
//! call [`TaskQueue::admit`] and [`TaskQueue::finish`].

use std::collections::VecDeque;
use std::sync::Arc;

use anncat_exec::protocol::Assignment;

use crate::governor::MemoryGovernor;

/// A task whose inputs are all here, waiting to run.
#[derive(Debug)]
pub struct ReadyTask {
    /// The session (connection to the scheduler) that assigned it.
    pub session: u64,
    /// What to run.
    pub a: Assignment,
    /// Its inputs, in the order of its dependencies.
    pub inputs: Vec<Arc<Vec<u8>>>,
}

/// A queued task to fetch ahead: its kernel, arguments and inputs.
#[derive(Debug)]
pub struct Prefetch {
    /// The kernel's name.
    pub kernel: String,
    /// Its encoded arguments.
    pub args: Vec<u8>,
    /// Its inputs, in the order of its dependencies.
    pub inputs: Vec<Arc<Vec<u8>>>,
}

/// Waiting tasks and what the running ones reserved.
#[derive(Debug, Default)]
pub struct TaskQueue {
    waiting: VecDeque<ReadyTask>,
    reserved: u64,
    running: usize,
    /// How many tasks at the front of `waiting` were handed out to fetch
    /// ahead.
    prefetched: usize,
}

impl TaskQueue {
    /// Queues a task behind those already waiting.
    pub fn push(&mut self, task: ReadyTask) {
        self.waiting.push_back(task);
    }

    /// Drops every waiting task (the session that gave them ended).
    pub fn clear(&mut self) {
        self.waiting.clear();
        self.prefetched = 0;
    }

    /// The tasks among the first `window` waiting ones not handed out
    /// before, to fetch ahead (each task is handed out once).
    pub fn to_prefetch(&mut self, window: usize) -> Vec<Prefetch> {
        let end = window.min(self.waiting.len());
        let out = self
            .waiting
            .range(self.prefetched.min(end)..end)
            .map(|t| Prefetch {
                kernel: t.a.kernel.clone(),
                args: t.a.args.clone(),
                inputs: t.inputs.clone(),
            })
            .collect();
        self.prefetched = self.prefetched.max(end);
        out
    }

    /// Takes the task at the front of the queue.
    fn pop_front(&mut self) -> Option<ReadyTask> {
        self.prefetched = self.prefetched.saturating_sub(1);
        self.waiting.pop_front()
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Tasks waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The next task to start, reserved and counted as running, if the
    /// governor admits it now (`in_use`: the bytes the process uses);
    /// tasks of sessions other than `session` are dropped on the way.
    /// `None`: nothing may start yet.
    pub fn admit(
        &mut self,
        governor: &MemoryGovernor,
        in_use: u64,
        session: u64,
    ) -> Option<ReadyTask> {
        while self.waiting.front().is_some_and(|t| t.session != session) {
            self.pop_front();
        }
        let front = self.waiting.front()?;
        let estimate = front.a.memory_bytes;
        if !governor.admits(estimate, self.reserved, self.running, in_use) {
            return None;
        }
        self.reserved += estimate;
        self.running += 1;
        self.pop_front()
    }

    /// A started task (estimated at `estimate` bytes) ended.
    pub fn finish(&mut self, estimate: u64) {
        self.reserved = self.reserved.saturating_sub(estimate);
        self.running = self.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anncat_exec::graph::TaskId;
    use anncat_exec::protocol::{JobId, TaskKey};

    fn task(session: u64, id: u64, mib: u64) -> ReadyTask {
        ReadyTask {
            session,
            a: Assignment {
                key: TaskKey {
                    job: JobId(1),
                    task: TaskId(id),
                },
                kernel: "k".into(),
                args: id.to_string().into_bytes(),
                inputs: Vec::new(),
                memory_bytes: mib << 20,
                label: format!("t{id}"),
                keep_output: false,
                send_output: false,
            },
            inputs: Vec::new(),
        }
    }

    #[test]
    fn tasks_start_in_order_while_their_estimates_fit() {
        let g = MemoryGovernor::new(100 << 20, 0);
        let mut q = TaskQueue::default();
        for (id, mib) in [(1, 60), (2, 30), (3, 20)] {
            q.push(task(7, id, mib));
        }
        assert_eq!(q.admit(&g, 0, 7).map(|t| t.a.key.task), Some(TaskId(1)));
        assert_eq!(q.admit(&g, 0, 7).map(|t| t.a.key.task), Some(TaskId(2)));
        // 60 + 30 reserved: 20 more does not fit; the queue keeps its order.
        assert!(q.admit(&g, 0, 7).is_none());
        assert_eq!((q.running(), q.waiting()), (2, 1));
        q.finish(60 << 20);
        assert_eq!(q.admit(&g, 0, 7).map(|t| t.a.key.task), Some(TaskId(3)));
    }

    #[test]
    fn a_lone_task_starts_even_over_the_budget_but_not_beside_others() {
        let g = MemoryGovernor::new(100 << 20, 0);
        let mut q = TaskQueue::default();
        q.push(task(1, 1, 150));
        q.push(task(1, 2, 1));
        assert!(
            q.admit(&g, 0, 1).is_some(),
            "alone: the scheduler checked it fits"
        );
        assert!(
            q.admit(&g, 0, 1).is_none(),
            "not beside an over-budget task"
        );
    }

    #[test]
    fn queued_tasks_are_handed_out_to_fetch_ahead_once_each_in_order() {
        let g = MemoryGovernor::new(100 << 20, 0);
        let mut q = TaskQueue::default();
        for id in 1..=5 {
            q.push(task(1, id, 1));
        }
        let ids = |p: Vec<Prefetch>| -> Vec<String> {
            p.into_iter()
                .map(|p| String::from_utf8(p.args).expect("utf8"))
                .collect()
        };
        assert_eq!(ids(q.to_prefetch(2)), ["1", "2"]);
        assert!(q.to_prefetch(2).is_empty(), "each once");
        assert_eq!(q.admit(&g, 0, 1).map(|t| t.a.key.task), Some(TaskId(1)));
        // The window moved on by one: only task 3 is new in it.
        assert_eq!(ids(q.to_prefetch(2)), ["3"]);
        assert_eq!(ids(q.to_prefetch(3)), ["4"]);
        q.clear();
        q.push(task(2, 6, 1));
        assert_eq!(ids(q.to_prefetch(2)), ["6"], "a new session starts over");
    }

    #[test]
    fn intake_pauses_near_the_limit_and_stale_sessions_are_dropped() {
        let g = MemoryGovernor::new(100 << 20, 0);
        let mut q = TaskQueue::default();
        q.push(task(1, 1, 1));
        q.push(task(2, 2, 1));
        q.push(task(2, 3, 1));
        // Session 1 ended: its task is dropped, not run.
        assert_eq!(q.admit(&g, 0, 2).map(|t| t.a.key.task), Some(TaskId(2)));
        // The process uses 95 MiB of 100: nothing more starts.
        assert!(q.admit(&g, 95 << 20, 2).is_none());
        assert!(q.admit(&g, 10 << 20, 2).is_some());
        q.clear();
        assert_eq!(q.waiting(), 0);
    }
}
