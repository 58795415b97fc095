//! The in-process executor: runs a [`Graph`] on a pool of threads, starting
//! a task only when its dependencies are done and its memory estimate fits
//! in what the [`MemoryBudget`] has left. It is the executor for tests and
//! for `--workers 0`, and the reference the distributed one must match.
//!
//! [`Executor`] is the one way to run a job: this executor (with its
//! kernels, as [`InProcess`]) and a cluster client both implement it, so
//! the journal, the report, progress and `--resume` built on it work the
//! same for either.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::graph::{Graph, TaskId};
use crate::kernel::KernelRegistry;
use crate::protocol::{TaskDone, TaskStats, Want, WorkerId, WorkerSummary};

/// What a finished job gives back.
#[derive(Debug, Default)]
pub struct JobResult {
    /// The outputs that were asked for, by task.
    pub outputs: HashMap<TaskId, Vec<u8>>,
    /// The workers that ran its tasks.
    pub workers: Vec<WorkerSummary>,
}

/// Runs whole jobs: threads of this process ([`InProcess`]) or a cluster
/// (the scheduler crate's client).
pub trait Executor {
    /// Runs `graph` to its end, calling `on_done` for every finished task
    /// in the order they finish (with its output when `want` asks for it);
    /// the wanted outputs and the workers that took part. Stops at the
    /// first failing task.
    fn run_job(
        &mut self,
        name: &str,
        graph: &Graph,
        want: Want,
        on_done: &mut (dyn FnMut(&TaskDone) + Send),
    ) -> Result<JobResult>;
}

/// [`LocalExecutor`] with its kernels: an [`Executor`] whose one "worker"
/// is this process.
#[derive(Debug, Clone)]
pub struct InProcess {
    /// The executor.
    pub executor: LocalExecutor,
    /// The kernels its tasks run.
    pub registry: KernelRegistry,
    /// The name in reports.
    pub name: String,
}

impl Executor for InProcess {
    fn run_job(
        &mut self,
        _name: &str,
        graph: &Graph,
        want: Want,
        on_done: &mut (dyn FnMut(&TaskDone) + Send),
    ) -> Result<JobResult> {
        let wanted = |id: TaskId, sink: bool| match &want {
            Want::All => true,
            Want::Sinks => sink,
            Want::Tasks(ids) => ids.contains(&id),
        };
        let on_done = Mutex::new(on_done);
        let outputs = Mutex::new(HashMap::new());
        self.executor
            .run_observed(graph, &self.registry, &|_, done, output, sink| {
                // A copy of the output only where it is wanted, handed to
                // `on_done` and then kept, as the cluster client does.
                let done = TaskDone {
                    output: wanted(done.task, sink).then(|| output.as_ref().clone()),
                    ..done.clone()
                };
                if let Ok(mut f) = on_done.lock() {
                    f(&done);
                }
                if let (Some(out), Ok(mut outputs)) = (done.output, outputs.lock()) {
                    outputs.insert(done.task, out);
                }
            })?;
        Ok(JobResult {
            outputs: outputs.into_inner().unwrap_or_default(),
            workers: vec![WorkerSummary {
                id: 0,
                name: self.name.clone(),
                pid: std::process::id(),
                memory_limit: self.executor.budget.limit_bytes,
                ..WorkerSummary::default()
            }],
        })
    }
}

fn wall_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What [`LocalExecutor::run_observed`] calls for each finished task: the
/// progress, what finished, its output, and whether it is a sink.
pub type TaskObserver<'a> = dyn Fn(&Progress, &TaskDone, &Arc<Vec<u8>>, bool) + Sync + 'a;

/// A byte budget shared by the tasks running at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The most bytes that running tasks' estimates may add up to.
    pub limit_bytes: u64,
}

impl MemoryBudget {
    /// Whether a task estimated at `bytes` can ever run under this budget.
    pub fn admits(&self, bytes: u64) -> bool {
        bytes <= self.limit_bytes
    }
}

/// What the executor reports after each finished task.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Tasks finished so far.
    pub done: usize,
    /// Tasks in the graph.
    pub total: usize,
    /// The label of the task that just finished.
    pub label: String,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Bytes written to storage so far (as kernels record them).
    pub bytes_written: u64,
    /// Bytes of work finished: the memory estimates (the data each task
    /// holds) of the finished tasks. The ETA comes from these, not from task
    /// counts, since tasks differ in size by orders of magnitude.
    pub work_done: u64,
    /// Bytes of work in the whole graph.
    pub work_total: u64,
}

/// Runs graphs in this process.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// Worker threads.
    pub threads: usize,
    /// The memory budget shared by running tasks.
    pub budget: MemoryBudget,
}

struct State {
    ready: VecDeque<usize>,
    waiting_on: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    uses_left: Vec<usize>,
    outputs: Vec<Option<Arc<Vec<u8>>>>,
    running: usize,
    reserved: u64,
    done: usize,
    written: u64,
    work_done: u64,
    error: Option<Error>,
}

impl LocalExecutor {
    /// Runs `graph` with the kernels of `registry`; returns the outputs of
    /// the tasks nothing depends on. Stops at the first failing task.
    pub fn run(
        &self,
        graph: &Graph,
        registry: &KernelRegistry,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<HashMap<TaskId, Arc<Vec<u8>>>> {
        self.run_observed(graph, registry, &|p, _, _, _| progress(p))
    }

    /// [`LocalExecutor::run`], telling `observe` of every finished task:
    /// the progress, what finished (its `output` field left empty), its
    /// output, and whether nothing depends on it. `observe` runs under the
    /// executor's lock, in the order tasks finish; it copies an output only
    /// if it keeps it.
    pub fn run_observed(
        &self,
        graph: &Graph,
        registry: &KernelRegistry,
        observe: &TaskObserver<'_>,
    ) -> Result<HashMap<TaskId, Arc<Vec<u8>>>> {
        graph.validate()?;
        let tasks = graph.tasks();
        let n = tasks.len();
        let index: HashMap<TaskId, usize> =
            tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        for t in tasks {
            if !self.budget.admits(t.memory_bytes) {
                return Err(Error::graph(format!(
                    "task {} ({}) needs about {} MiB, more than the memory limit of {} MiB: raise --memory-limit",
                    t.id,
                    t.label,
                    t.memory_bytes.div_ceil(1 << 20),
                    self.budget.limit_bytes >> 20
                )));
            }
            if registry.get(&t.kernel).is_none() {
                return Err(Error::graph(format!(
                    "task {} uses unknown kernel \"{}\"",
                    t.id, t.kernel
                )));
            }
        }
        let mut dependents = vec![Vec::new(); n];
        let mut waiting_on = vec![0; n];
        for (i, t) in tasks.iter().enumerate() {
            waiting_on[i] = t.deps.len();
            for d in &t.deps {
                dependents[index[d]].push(i);
            }
        }
        let uses_left = dependents.iter().map(Vec::len).collect();
        let state = Mutex::new(State {
            ready: (0..n).filter(|&i| waiting_on[i] == 0).collect(),
            waiting_on,
            dependents,
            uses_left,
            outputs: vec![None; n],
            running: 0,
            reserved: 0,
            done: 0,
            written: 0,
            work_done: 0,
            error: None,
        });
        let wake = Condvar::new();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..self.threads.max(1) {
                scope.spawn(|| self.work(graph, registry, &state, &wake, observe, started));
            }
        });
        let mut state = state
            .into_inner()
            .map_err(|_| Error::internal("executor state poisoned"))?;
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        Ok(tasks
            .iter()
            .enumerate()
            .filter(|(i, _)| state.dependents[*i].is_empty())
            .filter_map(|(i, t)| state.outputs[i].take().map(|o| (t.id, o)))
            .collect())
    }

    fn work(
        &self,
        graph: &Graph,
        registry: &KernelRegistry,
        state: &Mutex<State>,
        wake: &Condvar,
        observe: &TaskObserver<'_>,
        started: Instant,
    ) {
        let tasks = graph.tasks();
        let index: HashMap<TaskId, usize> =
            tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
        let work_total: u64 = tasks.iter().map(|t| t.memory_bytes).sum();
        let Ok(mut guard) = state.lock() else { return };
        loop {
            if guard.error.is_some() || guard.done == tasks.len() {
                wake.notify_all();
                return;
            }
            let budget = self.budget.limit_bytes;
            let reserved = guard.reserved;
            let pick = guard
                .ready
                .iter()
                .position(|&i| reserved + tasks[i].memory_bytes <= budget);
            let Some(pos) = pick else {
                guard = match wake.wait(guard) {
                    Ok(g) => g,
                    Err(_) => return,
                };
                continue;
            };
            let Some(i) = guard.ready.remove(pos) else {
                continue;
            };
            let task = &tasks[i];
            guard.running += 1;
            guard.reserved += task.memory_bytes;
            let inputs: Vec<Arc<Vec<u8>>> = task
                .deps
                .iter()
                .filter_map(|d| guard.outputs[index[d]].clone())
                .collect();
            drop(guard);
            let start_s = wall_s();
            registry.prepare_task();
            let result = match registry.get(&task.kernel) {
                Some(kernel) => {
                    // A panicking kernel must fail its task, not wedge the pool.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        kernel.run(&task.args, &inputs)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        Err(Error::Task(format!(
                            "internal error in task {} ({}): {what}",
                            task.id, task.label
                        )))
                    })
                }
                None => Err(Error::graph(format!("unknown kernel \"{}\"", task.kernel))),
            };
            // In process, what the task deferred runs here, before it counts
            // (taken even from a failed task, so the next one does not run it).
            let deferred = registry.take_deferred();
            let result = result.and_then(|output| match deferred {
                Some(deferred) => deferred().map(|()| output),
                None => Ok(output),
            });
            drop(inputs);
            let written = crate::kernel::take_bytes_written();
            guard = match state.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            guard.running -= 1;
            guard.reserved -= task.memory_bytes;
            match result {
                Ok(output) => {
                    let done = TaskDone {
                        task: task.id,
                        worker: WorkerId(0),
                        stats: TaskStats {
                            start_s,
                            end_s: wall_s(),
                            output_bytes: output.len() as u64,
                            written_bytes: written,
                            ..TaskStats::default()
                        },
                        output: None,
                    };
                    guard.done += 1;
                    guard.written += written;
                    guard.work_done += task.memory_bytes;
                    let output = Arc::new(output);
                    guard.outputs[i] = Some(output.clone());
                    for d in &task.deps {
                        let j = index[d];
                        guard.uses_left[j] -= 1;
                        if guard.uses_left[j] == 0 {
                            guard.outputs[j] = None;
                        }
                    }
                    let dependents = guard.dependents[i].clone();
                    for k in dependents {
                        guard.waiting_on[k] -= 1;
                        if guard.waiting_on[k] == 0 {
                            guard.ready.push_back(k);
                        }
                    }
                    let sink = guard.dependents[i].is_empty();
                    observe(
                        &Progress {
                            done: guard.done,
                            total: tasks.len(),
                            label: task.label.clone(),
                            elapsed_s: started.elapsed().as_secs_f64(),
                            bytes_written: guard.written,
                            work_done: guard.work_done,
                            work_total,
                        },
                        &done,
                        &output,
                        sink,
                    );
                }
                Err(e) => {
                    if guard.error.is_none() {
                        guard.error = Some(e);
                    }
                }
            }
            wake.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::graph::{decode, encode};

    fn registry() -> KernelRegistry {
        let mut r = KernelRegistry::new();
        r.register(
            "value",
            |args: &[u8], _: &[Arc<Vec<u8>>]| -> Result<Vec<u8>> { Ok(args.to_vec()) },
        );
        r.register(
            "sum",
            |_: &[u8], inputs: &[Arc<Vec<u8>>]| -> Result<Vec<u8>> {
                let mut total = 0u64;
                for i in inputs {
                    total += decode::<u64>(i)?;
                }
                encode(&total)
            },
        );
        r.register("fail", |_: &[u8], _: &[Arc<Vec<u8>>]| -> Result<Vec<u8>> {
            Err(Error::Task("boom".into()))
        });
        r
    }

    #[test]
    fn runs_a_diamond_and_returns_sink_outputs() {
        let mut g = Graph::new();
        let top = g.add("sum", &(), vec![], 1, "top").expect("add");
        let left = g.add("value", &5u64, vec![top], 1, "left").expect("add");
        let right = g.add("value", &7u64, vec![top], 1, "right").expect("add");
        let bottom = g
            .add("sum", &(), vec![left, right], 1, "bottom")
            .expect("add");
        // "value" returns its encoded args, which are themselves an encoded u64.
        let exec = LocalExecutor {
            threads: 2,
            budget: MemoryBudget { limit_bytes: 10 },
        };
        let out = exec.run(&g, &registry(), &|_| {}).expect("run");
        assert_eq!(out.len(), 1);
        assert_eq!(decode::<u64>(&out[&bottom]).expect("decode"), 12);
    }

    #[test]
    fn never_exceeds_the_memory_budget() {
        let running = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let mut r = KernelRegistry::new();
        let (run2, peak2) = (running.clone(), peak.clone());
        r.register(
            "hold",
            move |args: &[u8], _: &[Arc<Vec<u8>>]| -> Result<Vec<u8>> {
                let bytes: u64 = decode(args)?;
                let now = run2.fetch_add(bytes, Ordering::SeqCst) + bytes;
                peak2.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(5));
                run2.fetch_sub(bytes, Ordering::SeqCst);
                Ok(vec![])
            },
        );
        let mut g = Graph::new();
        for i in 0..20u64 {
            let bytes = 30 + (i % 3) * 10;
            g.add("hold", &bytes, vec![], bytes, format!("t{i}"))
                .expect("add");
        }
        let exec = LocalExecutor {
            threads: 4,
            budget: MemoryBudget { limit_bytes: 100 },
        };
        exec.run(&g, &r, &|_| {}).expect("run");
        assert!(
            peak.load(Ordering::SeqCst) <= 100,
            "peak {}",
            peak.load(Ordering::SeqCst)
        );
        assert!(peak.load(Ordering::SeqCst) >= 60, "tasks never overlapped");
    }

    #[test]
    fn oversized_tasks_and_failures_are_errors() {
        let mut g = Graph::new();
        g.add("value", &1u64, vec![], 1000, "big").expect("add");
        let exec = LocalExecutor {
            threads: 1,
            budget: MemoryBudget { limit_bytes: 10 },
        };
        let e = exec.run(&g, &registry(), &|_| {}).expect_err("too big");
        assert!(e.to_string().contains("memory limit"), "{e}");
        let mut g = Graph::new();
        let f = g.add("fail", &(), vec![], 1, "f").expect("add");
        g.add("sum", &(), vec![f], 1, "after").expect("add");
        let e = exec.run(&g, &registry(), &|_| {}).expect_err("fails");
        assert!(e.to_string().contains("boom"));
    }
}
