//! The cluster's wire protocol: the messages the scheduler, workers and
//! clients exchange, as serde enums named by direction. Encoding,
//! transport and the cluster file live in `anncat-net`; this module only
//! says what is sent.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::graph::{TaskId, TaskSpec};

/// Bumped on every incompatible change; checked when a peer says hello.
pub const PROTOCOL_VERSION: u32 = 3;

/// Why a connection was closed: the application close code every side
/// sends (QUIC carries it to the peer with a short reason text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// A clean stop: the scheduler or worker is shutting down, or a test
    /// is done. A worker that sees it from its scheduler exits quietly.
    Shutdown = 0,
    /// The hello was missing, malformed, or refused (version or secret).
    BadHello = 1,
    /// The scheduler dropped this worker (hung, or a protocol violation).
    Dropped = 2,
    /// A frame that was too large or did not decode.
    BadFrame = 3,
}

impl CloseCode {
    /// The code as sent on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Identifies a worker for the lifetime of a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkerId(pub u64);

impl std::fmt::Display for WorkerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "w{}", self.0)
    }
}

/// Identifies a connected client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// Identifies a submitted graph (a job) for the lifetime of a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// A task of a job: unique across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskKey {
    /// The job the task belongs to.
    pub job: JobId,
    /// The task within its job's graph.
    pub task: TaskId,
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "j{}/{}", self.job.0, self.task)
    }
}

/// The first frame on every connection: who is calling, and proof.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Hello {
    /// A worker registering with the scheduler.
    Worker {
        /// The caller's [`PROTOCOL_VERSION`].
        version: u32,
        /// The cluster secret.
        secret: String,
        /// What the worker offers.
        info: WorkerInfo,
    },
    /// A client that submits graphs.
    Client {
        /// The caller's [`PROTOCOL_VERSION`].
        version: u32,
        /// The cluster secret.
        secret: String,
    },
    /// A worker fetching task outputs from another worker.
    Peer {
        /// The caller's [`PROTOCOL_VERSION`].
        version: u32,
        /// The cluster secret.
        secret: String,
    },
}

/// The answer to a [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Welcome {
    /// Accepted; `id` is the worker or client id given to the caller.
    Accepted {
        /// The caller's new id (0 for peers).
        id: u64,
    },
    /// Refused, with the reason (the connection is closed after it).
    Refused {
        /// Why.
        reason: String,
    },
}

/// What a worker tells the scheduler about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// A human name (host:pid by default).
    pub name: String,
    /// The worker's memory limit in bytes.
    pub memory_limit: u64,
    /// Threads that run tasks.
    pub threads: u32,
    /// Where other workers reach it for task outputs.
    pub address: SocketAddr,
    /// Its TLS certificate (DER), which peers pin.
    pub certificate: Vec<u8>,
    /// The process id (for reports and for stopping local workers).
    pub pid: u32,
}

/// Where a task's input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRef {
    /// The task whose output is the input.
    pub key: TaskKey,
    /// A worker holding that output (possibly the receiver itself).
    pub holder: WorkerId,
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The task.
    pub key: TaskKey,
    /// Kernel name.
    pub kernel: String,
    /// Encoded kernel arguments.
    pub args: Vec<u8>,
    /// The scheduler's memory estimate (bytes).
    pub memory_bytes: u64,
    /// Human label.
    pub label: String,
    /// Its inputs, in the order of the task's dependencies.
    pub inputs: Vec<InputRef>,
    /// Whether the output must be sent back with the report (a client asked for it).
    pub send_output: bool,
    /// Whether the worker keeps the output for dependent tasks.
    pub keep_output: bool,
}

/// How to reach a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The worker.
    pub id: WorkerId,
    /// Its peer address.
    pub address: SocketAddr,
    /// Its certificate (DER).
    pub certificate: Vec<u8>,
}

/// Scheduler → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// Workers to fetch from (sent at registration and whenever one joins).
    Peers(Vec<PeerInfo>),
    /// A worker left: forget it.
    PeerGone(WorkerId),
    /// Tasks to run.
    Run(Vec<Assignment>),
    /// Outputs nobody needs any more: drop them.
    Release(Vec<TaskKey>),
    /// Stop: finish nothing more and exit.
    Shutdown,
}

/// Why a task failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The kernel returned an error (or panicked): the job fails.
    Error,
    /// The task went over the worker's memory limit: the job fails.
    OutOfMemory,
    /// An input could not be fetched (its holder is gone): run it again later.
    InputLost,
}

/// Measurements of one task run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// Start, seconds since the Unix epoch (worker clock).
    pub start_s: f64,
    /// End, seconds since the Unix epoch (worker clock).
    pub end_s: f64,
    /// Bytes of the task's output.
    pub output_bytes: u64,
    /// Bytes the task wrote to storage (as the kernel counted them).
    pub written_bytes: u64,
    /// Peak bytes allocated by the task's thread.
    pub peak_alloc: u64,
    /// Peak resident set of the worker process while the task ran.
    pub peak_rss: u64,
}

/// How a task ended on a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TaskOutcome {
    /// Finished; the output stays on the worker, and is included when asked.
    Done {
        /// The output, when the assignment said `send_output`.
        output: Option<Vec<u8>>,
    },
    /// Failed.
    Failed {
        /// What kind of failure.
        kind: FailureKind,
        /// One-line message.
        message: String,
    },
}

/// One finished (or failed) task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task.
    pub key: TaskKey,
    /// Its outcome.
    pub outcome: TaskOutcome,
    /// Its measurements.
    pub stats: TaskStats,
}

/// A worker's periodic report of its memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Resident set of the worker process (bytes).
    pub rss: u64,
    /// The kernel's high-water mark of that resident set since the worker
    /// started (`VmHWM`, bytes; 0 where the system does not say).
    pub peak_rss: u64,
    /// Bytes currently allocated through the counting allocator.
    pub allocated: u64,
    /// Tasks running now.
    pub running: u32,
    /// Whether the worker paused intake because memory is near its limit.
    pub paused: bool,
}

/// Worker → scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromWorker {
    /// Memory use, sent every heartbeat interval.
    Heartbeat(Heartbeat),
    /// Tasks that started running since the last message.
    Started(Vec<TaskKey>),
    /// Tasks whose kernel returned since the last message and whose writes
    /// are being made durable: they hold no task thread and no memory any
    /// more, but are not done (nor journaled) until they are `Finished`.
    Computed(Vec<TaskKey>),
    /// Tasks that ended since the last message.
    Finished(Vec<TaskReport>),
}

/// Which task outputs a client wants back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    /// The outputs of tasks nothing depends on.
    Sinks,
    /// Every task's output (for a journal of finished tasks).
    All,
    /// Exactly these tasks' outputs.
    Tasks(Vec<TaskId>),
}

/// Client → scheduler.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToScheduler {
    /// Start a job; the scheduler answers [`ToClient::JobCreated`].
    NewJob {
        /// A name for reports.
        name: String,
    },
    /// Tasks of a job (sent in batches; ids unique within the job).
    AddTasks {
        /// The job.
        job: JobId,
        /// Its tasks.
        tasks: Vec<TaskSpec>,
    },
    /// All tasks are in: validate and run.
    Start {
        /// The job.
        job: JobId,
        /// Which outputs to send back.
        want: Want,
    },
    /// Stop a job; its results are dropped.
    Cancel {
        /// The job.
        job: JobId,
    },
    /// What memory limits do the connected workers have? The scheduler
    /// answers [`ToClient::WorkerLimits`] (a client sizes its plan's chunks
    /// for the workers that will run it).
    WorkerLimits,
}

/// One task's end, as a client sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskDone {
    /// The task.
    pub task: TaskId,
    /// The worker that ran it.
    pub worker: WorkerId,
    /// Its measurements.
    pub stats: TaskStats,
    /// Its output, when wanted.
    pub output: Option<Vec<u8>>,
}

/// A worker's part of a job report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// The worker.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Its memory limit.
    pub memory_limit: u64,
    /// Highest RSS it reported.
    pub peak_rss: u64,
    /// (seconds since the Unix epoch, RSS bytes) samples from its heartbeats.
    pub rss_samples: Vec<(f64, u64)>,
    /// Whether it was lost during the job.
    pub lost: bool,
}

/// Scheduler → client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToClient {
    /// The id of the job asked for with [`ToScheduler::NewJob`].
    JobCreated(JobId),
    /// Tasks that finished.
    TasksDone {
        /// The job.
        job: JobId,
        /// The tasks.
        done: Vec<TaskDone>,
    },
    /// Every task finished.
    JobFinished {
        /// The job.
        job: JobId,
        /// The workers that took part.
        workers: Vec<WorkerSummary>,
    },
    /// The job failed (or was refused) with this one-line error.
    JobFailed {
        /// The job.
        job: JobId,
        /// Why.
        error: String,
    },
    /// The memory limit (bytes) of every connected worker.
    WorkerLimits(Vec<u64>),
}

/// A peer's request for a task output (worker → worker).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Send this task's output.
    Fetch(TaskKey),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerReply {
    /// The output.
    Data(Vec<u8>),
    /// This worker does not hold it.
    Missing,
}
