//! The scheduler's state machine: plain functions over state, no I/O.
//!
//! Events come in (`on_worker_joined`, `on_task_reports`, `on_worker_lost`,
//! `on_start`, ...); messages go out through a [`Comm`]. Placement is
//! memory-aware (a task goes only where its estimate fits the worker's
//! budget beside the largest of its tasks in flight, as many as it has
//! threads), locality-aware (prefer the worker holding most of its input
//! bytes), and bounded (at most `threads + prefetch` tasks in flight per
//! worker, so reads cannot race ahead of writes). Outputs stay on the
//! worker that made them until no unfinished task needs them; a lost
//! worker's running tasks run again elsewhere and outputs that only it held
//! are recomputed when still needed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use anncat_exec::graph::{Graph, TaskId, TaskSpec};
use anncat_exec::protocol::{
    Assignment, ClientId, FailureKind, Heartbeat, InputRef, JobId, PeerInfo, TaskDone, TaskKey,
    TaskOutcome, TaskReport, ToClient, ToWorker, Want, WorkerId, WorkerInfo, WorkerSummary,
};

mod assign;
mod reports;

use assign::{index_of, make_unavailable, requeue, reset};

/// Where the state machine sends messages (the network, or a recorder in tests).
pub trait Comm {
    /// Sends `msg` to a worker.
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker);
    /// Sends `msg` to a client.
    fn to_client(&mut self, client: ClientId, msg: ToClient);
    /// Drops a worker's connection (it stopped answering).
    fn drop_worker(&mut self, worker: WorkerId, reason: &str);
}

/// Scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Tasks in flight per worker beyond its thread count (memory estimates
    /// bound them further: a worker's in-flight estimates fit its budget).
    pub prefetch: usize,
    /// A task running on this many workers that died fails its job.
    pub max_crashes: u32,
    /// A worker silent for this long is considered hung and dropped.
    pub hang_timeout: Duration,
    /// Most tasks one job may have.
    pub max_tasks_per_job: usize,
    /// Most tasks a ready-queue scan looks at when the head does not fit.
    pub scan_limit: usize,
    /// Fail started jobs when no worker has been connected for this long
    /// (a local cluster whose workers all died); `None` waits for workers.
    pub no_worker_timeout: Option<Duration>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            prefetch: 32,
            max_crashes: 3,
            hang_timeout: Duration::from_millis(1500),
            max_tasks_per_job: 50_000_000,
            scan_limit: 64,
            no_worker_timeout: None,
        }
    }
}

/// How much queued work (in seconds of recent task durations) a worker gets beyond its threads.
const QUEUED_WORK_S: f64 = 0.005;

/// Most RSS samples kept per worker (older ones are thinned).
const MAX_SAMPLES: usize = 8192;

struct Worker {
    info: WorkerInfo,
    threads: usize,
    prefetch: usize,
    /// Moving average of task run times on this worker (seconds).
    avg_task_s: f64,
    /// Assigned tasks: memory estimate, whether the worker said it started
    /// it, and the order of assignment.
    running: HashMap<TaskKey, (u64, bool, u64)>,
    /// Running tasks whose kernel returned (their writes are being made
    /// durable): no longer counted in flight, their memory released.
    computed: std::collections::HashSet<TaskKey>,
    holds: std::collections::HashSet<TaskKey>,
    last_heartbeat: Instant,
    paused: bool,
    peak_rss: u64,
    samples: Vec<(f64, u64)>,
}

impl Worker {
    fn summary(&self, id: WorkerId, lost: bool) -> WorkerSummary {
        WorkerSummary {
            id: id.0,
            name: self.info.name.clone(),
            pid: self.info.pid,
            memory_limit: self.info.memory_limit,
            peak_rss: self.peak_rss,
            rss_samples: self.samples.clone(),
            lost,
        }
    }

    /// Tasks in flight allowed now: the threads, plus queued tasks worth
    /// about [`QUEUED_WORK_S`] of the worker's recent task durations (at
    /// least 1, at most `prefetch`): short tasks queue deep so the worker
    /// never waits for the scheduler, long ones shallow so no worker sits
    /// on a backlog while another idles.
    fn in_flight_limit(&self) -> usize {
        let queued = (QUEUED_WORK_S / self.avg_task_s.max(1e-6)) as usize;
        self.threads + queued.clamp(1, self.prefetch)
    }

    /// Assigned tasks still waiting for or holding a task thread.
    fn in_flight(&self) -> usize {
        self.running.len() - self.computed.len()
    }

    fn has_slot(&self) -> bool {
        !self.paused && self.in_flight() < self.in_flight_limit()
    }

    /// Whether a task estimated at `mem` bytes fits this worker's budget
    /// beside its tasks in flight. The worker runs at most `threads` of
    /// them at once (the rest wait in its queue, and its governor starts
    /// each against what the process uses), so what it may need at once is
    /// the sum of the `threads` largest estimates, this task's among them.
    fn fits(&self, mem: u64) -> bool {
        let mut estimates: Vec<u64> = self
            .running
            .iter()
            .filter(|(k, _)| !self.computed.contains(k))
            .map(|(_, &(m, _, _))| m)
            .chain([mem])
            .collect();
        estimates.sort_unstable_by(|a, b| b.cmp(a));
        estimates
            .iter()
            .take(self.threads.max(1))
            .try_fold(0u64, |sum, &m| sum.checked_add(m))
            .is_some_and(|need| need <= self.info.memory_limit)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    Running(WorkerId),
    Done,
}

struct Task {
    spec: TaskSpec,
    deps: Vec<u32>,
    dependents: Vec<u32>,
    /// Dependencies whose outputs are not available.
    waiting: u32,
    state: State,
    crashes: u32,
    input_retries: u32,
    last_crash: String,
    holders: Vec<WorkerId>,
    /// Dependents not finished yet (the output is kept while > 0).
    pending_dependents: u32,
    wanted: bool,
    output_bytes: u64,
}

impl Task {
    fn available(&self) -> bool {
        self.state == State::Done && !self.holders.is_empty()
    }
}

struct Job {
    client: ClientId,
    name: String,
    staged: Vec<TaskSpec>,
    tasks: Vec<Task>,
    /// Task id -> index, for graphs whose ids are not their positions (a
    /// resumed graph lacks its finished tasks); `None` when they are.
    index: Option<HashMap<TaskId, u32>>,
    done: usize,
    started: bool,
    participants: Vec<WorkerId>,
    lost: Vec<WorkerSummary>,
    finished_batch: Vec<TaskDone>,
}

/// The scheduler's whole state.
pub struct SchedulerState {
    config: SchedulerConfig,
    workers: BTreeMap<WorkerId, Worker>,
    jobs: HashMap<JobId, Job>,
    ready: VecDeque<(JobId, u32)>,
    next_job: u64,
    runs: HashMap<WorkerId, Vec<Assignment>>,
    releases: HashMap<WorkerId, Vec<TaskKey>>,
    /// When the last worker left, and why.
    workerless: Option<(Instant, String)>,
    /// Counts assignments (orders tasks in flight on a worker).
    next_seq: u64,
}

impl std::fmt::Debug for SchedulerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerState")
            .field("workers", &self.workers.len())
            .field("jobs", &self.jobs.len())
            .field("ready", &self.ready.len())
            .finish()
    }
}

impl SchedulerState {
    /// An empty scheduler.
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            workers: BTreeMap::new(),
            jobs: HashMap::new(),
            ready: VecDeque::new(),
            next_job: 0,
            runs: HashMap::new(),
            releases: HashMap::new(),
            workerless: None,
            next_seq: 0,
        }
    }

    /// Workers connected now.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Jobs not finished.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// How many lost workers a task was blamed for (None: unknown task).
    pub fn crashes(&self, key: TaskKey) -> Option<u32> {
        let job = self.jobs.get(&key.job)?;
        let idx = index_of(job, key.task)?;
        Some(job.tasks[idx as usize].crashes)
    }

    /// Task outputs held by `worker`.
    pub fn held_by(&self, worker: WorkerId) -> Vec<TaskKey> {
        let mut v: Vec<TaskKey> = self
            .workers
            .get(&worker)
            .map(|w| w.holds.iter().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A worker registered.
    pub fn on_worker_joined(
        &mut self,
        id: WorkerId,
        info: WorkerInfo,
        now: Instant,
        comm: &mut dyn Comm,
    ) {
        let me = PeerInfo {
            id,
            address: info.address,
            certificate: info.certificate.clone(),
        };
        let peers: Vec<PeerInfo> = self
            .workers
            .iter()
            .map(|(&wid, w)| PeerInfo {
                id: wid,
                address: w.info.address,
                certificate: w.info.certificate.clone(),
            })
            .collect();
        for &wid in self.workers.keys() {
            comm.to_worker(wid, ToWorker::Peers(vec![me.clone()]));
        }
        comm.to_worker(id, ToWorker::Peers(peers));
        self.workerless = None;
        let threads = info.threads.max(1) as usize;
        self.workers.insert(
            id,
            Worker {
                info,
                threads,
                prefetch: self.config.prefetch.max(1),
                avg_task_s: QUEUED_WORK_S / 2.0,
                running: HashMap::new(),
                computed: std::collections::HashSet::new(),
                holds: Default::default(),
                last_heartbeat: now,
                paused: false,
                peak_rss: 0,
                samples: Vec::new(),
            },
        );
    }

    /// A worker reported its memory.
    pub fn on_heartbeat(&mut self, id: WorkerId, hb: Heartbeat, wall_s: f64, now: Instant) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_heartbeat = now;
            w.paused = hb.paused;
            w.peak_rss = w.peak_rss.max(hb.rss).max(hb.peak_rss);
            if w.samples.len() >= MAX_SAMPLES {
                let mut keep = false;
                w.samples.retain(|_| {
                    keep = !keep;
                    keep
                });
            }
            w.samples.push((wall_s, hb.rss));
        }
    }

    /// Any message from a worker proves it is alive.
    pub fn on_heartbeat_seen(&mut self, id: WorkerId, now: Instant) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.last_heartbeat = now;
        }
    }

    /// A client asked for the connected workers' memory limits.
    pub fn on_worker_limits(&mut self, client: ClientId, comm: &mut dyn Comm) {
        let mut limits: Vec<u64> = self.workers.values().map(|w| w.info.memory_limit).collect();
        limits.sort_unstable();
        comm.to_client(client, ToClient::WorkerLimits(limits));
    }

    /// Drops workers whose heartbeats stopped.
    pub fn on_tick(&mut self, now: Instant, comm: &mut dyn Comm) {
        let hung: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                now.saturating_duration_since(w.last_heartbeat) > self.config.hang_timeout
            })
            .map(|(&id, _)| id)
            .collect();
        for id in hung {
            let reason = format!(
                "no heartbeat for {:.1} s",
                self.config.hang_timeout.as_secs_f64()
            );
            comm.drop_worker(id, &reason);
            self.on_worker_lost(id, &reason, comm);
        }
        if let (Some(limit), Some((since, why))) = (self.config.no_worker_timeout, &self.workerless)
            && self.workers.is_empty()
            && now.saturating_duration_since(*since) > limit
        {
            let error = format!("no workers left (the last one was lost: {why})");
            let mut started: Vec<JobId> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.started)
                .map(|(&id, _)| id)
                .collect();
            started.sort();
            for job in started {
                self.fail_job(job, error.clone(), comm);
            }
        }
    }

    /// A worker is gone (connection lost, hung, or killed): its running
    /// tasks run again elsewhere, outputs only it held are recomputed.
    pub fn on_worker_lost(&mut self, id: WorkerId, reason: &str, comm: &mut dyn Comm) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        if self.workers.is_empty() {
            self.workerless = Some((Instant::now(), format!("worker {id}: {reason}")));
        }
        for &wid in self.workers.keys() {
            comm.to_worker(wid, ToWorker::PeerGone(id));
        }
        self.runs.remove(&id);
        self.releases.remove(&id);
        let summary = worker.summary(id, true);
        for job in self.jobs.values_mut() {
            if job.participants.contains(&id) {
                job.participants.retain(|w| *w != id);
                job.lost.push(summary.clone());
            }
        }
        let mut failed: Vec<(JobId, String)> = Vec::new();
        // Blame the tasks that were running: those the worker said it
        // started, and (its "started" message may have died with it) the
        // oldest assigned others up to its thread count — workers run tasks
        // in the order they get them.
        // A task whose kernel had returned runs again (its writes may not
        // be durable) but is not to blame.
        let mut running: Vec<(u64, TaskKey, bool, bool)> = worker
            .running
            .iter()
            .map(|(k, (_, started, seq))| {
                let computed = worker.computed.contains(k);
                (*seq, *k, *started && !computed, computed)
            })
            .collect();
        running.sort();
        let mut presumed = worker
            .threads
            .saturating_sub(running.iter().filter(|r| r.2).count());
        let running: Vec<(TaskKey, bool)> = running
            .into_iter()
            .map(|(_, key, started, computed)| {
                let may_presume = !started && !computed && presumed > 0;
                if may_presume {
                    presumed -= 1;
                }
                (key, started || may_presume)
            })
            .collect();
        for (key, started) in running {
            let Some(job) = self.jobs.get_mut(&key.job) else {
                continue;
            };
            let Some(idx) = index_of(job, key.task) else {
                continue;
            };
            let t = &mut job.tasks[idx as usize];
            if t.state != State::Running(id) {
                continue;
            }
            if !started {
                // Queued on the worker, never run: no blame.
                requeue(job, key.job, idx, &mut self.ready);
                continue;
            }
            t.crashes += 1;
            t.last_crash = format!("worker {} ({}) lost: {reason}", id, worker.info.name);
            if t.crashes >= self.config.max_crashes {
                failed.push((
                    key.job,
                    format!(
                        "task {} ({}) was running on {} workers that died; last: {}",
                        key.task, t.spec.label, t.crashes, t.last_crash
                    ),
                ));
                continue;
            }
            requeue(job, key.job, idx, &mut self.ready);
        }
        let mut held: Vec<TaskKey> = worker.holds.iter().copied().collect();
        held.sort();
        for key in held {
            let Some(job) = self.jobs.get_mut(&key.job) else {
                continue;
            };
            let Some(idx) = index_of(job, key.task) else {
                continue;
            };
            let t = &mut job.tasks[idx as usize];
            t.holders.retain(|w| *w != id);
            if t.holders.is_empty() && t.state == State::Done {
                make_unavailable(job, idx);
                if job.tasks[idx as usize].pending_dependents > 0 {
                    reset(job, key.job, idx, &mut self.ready);
                }
            }
        }
        for (job, error) in failed {
            self.fail_job(job, error, comm);
        }
    }

    /// A client asked for a new job.
    pub fn on_new_job(&mut self, client: ClientId, name: String, comm: &mut dyn Comm) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.jobs.insert(
            id,
            Job {
                client,
                name,
                staged: Vec::new(),
                tasks: Vec::new(),
                index: None,
                done: 0,
                started: false,
                participants: Vec::new(),
                lost: Vec::new(),
                finished_batch: Vec::new(),
            },
        );
        comm.to_client(client, ToClient::JobCreated(id));
        id
    }

    /// The name a job was created with.
    pub fn job_name(&self, job: JobId) -> Option<&str> {
        self.jobs.get(&job).map(|j| j.name.as_str())
    }

    /// A batch of a job's tasks arrived.
    pub fn on_add_tasks(
        &mut self,
        client: ClientId,
        job: JobId,
        tasks: Vec<TaskSpec>,
        comm: &mut dyn Comm,
    ) {
        let limit = self.config.max_tasks_per_job;
        let Some(j) = self.jobs.get_mut(&job).filter(|j| j.client == client) else {
            comm.to_client(
                client,
                ToClient::JobFailed {
                    job,
                    error: "unknown job".into(),
                },
            );
            return;
        };
        if j.started {
            return self.fail_job(job, "tasks added after the job started".into(), comm);
        }
        if j.staged.len() + tasks.len() > limit {
            return self.fail_job(job, format!("job has more than {limit} tasks"), comm);
        }
        j.staged.extend(tasks);
    }

    /// All of a job's tasks are in: validate the graph and start it.
    pub fn on_start(&mut self, client: ClientId, job: JobId, want: Want, comm: &mut dyn Comm) {
        let Some(j) = self
            .jobs
            .get_mut(&job)
            .filter(|j| j.client == client && !j.started)
        else {
            return;
        };
        j.started = true;
        let mut graph = Graph::new();
        for t in std::mem::take(&mut j.staged) {
            graph.push(t);
        }
        if let Err(e) = graph.validate() {
            return self.fail_job(job, e.to_string(), comm);
        }
        let specs: Vec<TaskSpec> = graph.tasks().to_vec();
        let index: HashMap<TaskId, u32> = specs
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i as u32))
            .collect();
        let listed: std::collections::HashSet<TaskId> = match &want {
            Want::Tasks(ids) => ids.iter().copied().collect(),
            _ => Default::default(),
        };
        let mut tasks: Vec<Task> = specs
            .into_iter()
            .map(|spec| Task {
                deps: spec.deps.iter().map(|d| index[d]).collect(),
                dependents: Vec::new(),
                waiting: spec.deps.len() as u32,
                state: State::Waiting,
                crashes: 0,
                input_retries: 0,
                last_crash: String::new(),
                holders: Vec::new(),
                pending_dependents: 0,
                wanted: listed.contains(&spec.id),
                output_bytes: 0,
                spec,
            })
            .collect();
        for i in 0..tasks.len() {
            for k in 0..tasks[i].deps.len() {
                let d = tasks[i].deps[k] as usize;
                tasks[d].dependents.push(i as u32);
                tasks[d].pending_dependents += 1;
            }
        }
        for t in &mut tasks {
            t.wanted |= match want {
                Want::All => true,
                Want::Sinks => t.dependents.is_empty(),
                Want::Tasks(_) => false,
            };
        }
        let j = self.jobs.get_mut(&job).expect("job exists");
        for (i, t) in tasks.iter_mut().enumerate() {
            if t.waiting == 0 {
                t.state = State::Ready;
                self.ready.push_back((job, i as u32));
            }
        }
        j.tasks = tasks;
        let dense = index.iter().all(|(id, &i)| id.0 == u64::from(i));
        j.index = (!dense).then_some(index);
        if j.tasks.is_empty() {
            self.finish_job(job, comm);
        }
    }

    /// A client cancelled a job.
    pub fn on_cancel(&mut self, client: ClientId, job: JobId, comm: &mut dyn Comm) {
        if self.jobs.get(&job).is_some_and(|j| j.client == client) {
            self.fail_job(job, "cancelled".into(), comm);
        }
    }

    /// A client disconnected: its jobs are cancelled.
    pub fn on_client_lost(&mut self, client: ClientId, comm: &mut dyn Comm) {
        let jobs: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.client == client)
            .map(|(&id, _)| id)
            .collect();
        for job in jobs {
            self.fail_job(job, "client disconnected".into(), comm);
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
