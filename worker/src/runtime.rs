//! The worker process: registers with the scheduler, runs assigned tasks on
//! a pool of threads under the [`MemoryGovernor`], keeps outputs that other
//! tasks need, serves them to peers, fetches its inputs from peers, and
//! heartbeats its memory use. It exits when the scheduler says shut down.
//! When the scheduler cannot be reached (not up yet, gone, or the network
//! cut) it keeps dialling for [`WorkerConfig::reconnect_timeout`] and then
//! joins again as a new worker: each connection is a *session*, and work of
//! an earlier session (queued tasks, held outputs, late results) is dropped,
//! since the scheduler gave it to others when it lost this worker.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anncat_exec::kernel::{KernelRegistry, take_bytes_written};
use anncat_exec::protocol::{
    Assignment, FailureKind, FromWorker, Heartbeat, Hello, PROTOCOL_VERSION, PeerInfo, PeerReply,
    PeerRequest, TaskKey, TaskOutcome, TaskReport, TaskStats, ToWorker, WorkerId, WorkerInfo,
};
use anncat_net::cluster_file::{ClusterFile, check_hello};
use anncat_net::frame::CONTROL_MAX_BYTES;
use anncat_net::hello::{read_hello, say_hello};
use anncat_net::tls::{certificate_names, connect, der_of_pem, server_endpoint};
use anncat_net::{FrameReader, FrameWriter, Identity, NetError, TransportTuning};
use tokio::sync::mpsc;

use crate::error::{Result, WorkerError};
use crate::governor::{self, MemoryGovernor, RssProbe, SAMPLE_INTERVAL};

/// Largest request frame a worker reads from a peer.
pub const PEER_REQUEST_MAX_BYTES: usize = 4096;

/// Memory a worker keeps for itself beyond its measured baseline.
const RESERVE_BYTES: u64 = 8 << 20;

/// How to run a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The cluster to join.
    pub cluster: ClusterFile,
    /// Memory limit of this process (bytes).
    pub memory_limit: u64,
    /// Threads that run tasks.
    pub threads: usize,
    /// Directories tasks may write under (nothing else is writable).
    pub allow_write: Vec<PathBuf>,
    /// Where to listen for peers (loopback by default).
    pub listen: SocketAddr,
    /// The host name or IP address peers dial (needed when `listen` is all
    /// interfaces); a name is resolved once, at start.
    pub advertise: Option<String>,
    /// A name for reports (host:pid by default).
    pub name: Option<String>,
    /// Connection liveness timing.
    pub tuning: TransportTuning,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// How long to keep dialling a scheduler that cannot be reached (at
    /// start, or after losing it) before giving up; zero: one attempt, and
    /// exit when the connection is lost.
    pub reconnect_timeout: Duration,
    /// How long to keep dialling before the first join (`None`: as
    /// `reconnect_timeout`).
    pub join_timeout: Option<Duration>,
}

impl WorkerConfig {
    /// A configuration with defaults for everything but the cluster and limit.
    pub fn new(cluster: ClusterFile, memory_limit: u64) -> Self {
        Self {
            cluster,
            memory_limit,
            threads: 1,
            allow_write: Vec::new(),
            listen: ([127, 0, 0, 1], 0).into(),
            advertise: None,
            name: None,
            tuning: TransportTuning::default(),
            heartbeat: Duration::from_millis(250),
            reconnect_timeout: Duration::from_secs(30),
            join_timeout: None,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if self.memory_limit < (32 << 20) {
            return Err(WorkerError::Setup(format!(
                "invalid option: --memory-limit must be at least 32MiB, not {} bytes",
                self.memory_limit
            )));
        }
        if self.threads == 0 {
            return Err(WorkerError::Setup(
                "invalid option: --threads must be at least 1".into(),
            ));
        }
        for dir in &self.allow_write {
            if !dir.is_dir() {
                return Err(WorkerError::Setup(format!(
                    "{}: --allow-write directory does not exist",
                    dir.display()
                )));
            }
        }
        if self.listen.ip().is_unspecified() && self.advertise.is_none() {
            return Err(WorkerError::Setup(
                "listening on all interfaces needs --advertise NAME (the host name or address peers dial)"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn wall_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

struct ReadyTask {
    session: u64,
    a: Assignment,
    inputs: Vec<Arc<Vec<u8>>>,
}

#[derive(Default)]
struct ExecState {
    queue: VecDeque<ReadyTask>,
    reserved: u64,
    running: usize,
}

enum Event {
    Started(u64, TaskKey),
    Ended(Completion),
}

struct Completion {
    session: u64,
    key: TaskKey,
    keep: Option<Arc<Vec<u8>>>,
    outcome: TaskOutcome,
    stats: TaskStats,
}

/// An authenticated connection to a peer; each fetch opens its own stream,
/// so fetches from one peer run concurrently.
struct PeerConn {
    conn: quinn::Connection,
    max_reply: usize,
    /// The hello stream, kept open for the connection's life.
    _hello: (FrameWriter, FrameReader),
}

/// No worker id yet (between sessions).
const NO_ID: u64 = u64::MAX;

struct Shared {
    /// This worker's id in the current session ([`NO_ID`] between sessions).
    me: AtomicU64,
    /// The current session (connection to the scheduler), counting from 1.
    session: AtomicU64,
    secret: String,
    tuning: TransportTuning,
    governor: MemoryGovernor,
    endpoint: quinn::Endpoint,
    outputs: Mutex<HashMap<TaskKey, Arc<Vec<u8>>>>,
    peers: Mutex<HashMap<WorkerId, PeerInfo>>,
    peer_conns: Mutex<HashMap<WorkerId, Arc<PeerConn>>>,
    exec: Mutex<ExecState>,
    wake: Condvar,
    stop: AtomicBool,
    rss: AtomicU64,
    task_rss: Mutex<HashMap<TaskKey, u64>>,
    done_tx: mpsc::UnboundedSender<Event>,
}

impl Shared {
    fn me(&self) -> Option<WorkerId> {
        let id = self.me.load(Ordering::Relaxed);
        (id != NO_ID).then_some(WorkerId(id))
    }

    fn current_session(&self) -> u64 {
        self.session.load(Ordering::Relaxed)
    }

    /// Forgets the work of the session that ended: queued tasks, held
    /// outputs, peers (the scheduler reassigns all of it).
    async fn end_session(&self) {
        self.me.store(NO_ID, Ordering::Relaxed);
        self.session.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut st) = self.exec.lock() {
            st.queue.clear();
        }
        if let Ok(mut o) = self.outputs.lock() {
            o.clear();
        }
        if let Ok(mut p) = self.peers.lock() {
            p.clear();
        }
        if let Ok(mut conns) = self.peer_conns.lock() {
            conns.clear();
        }
    }

    fn in_use(&self) -> u64 {
        if governor::counting() {
            governor::allocated()
        } else {
            self.rss.load(Ordering::Relaxed)
        }
    }
}

/// Runs a worker until the scheduler shuts it down (`Ok`) or goes away.
pub fn run_worker(config: WorkerConfig, registry: KernelRegistry) -> Result<()> {
    config.validate()?;
    // A panicking kernel fails its task with the panic's message; the
    // default hook's report on stderr would only repeat it.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let task_thread = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("anncat-task-"));
        if !task_thread {
            previous(info);
        }
    }));
    governor::keep_freed_memory();
    // Tasks write only under the allowed directories (none: nothing at all).
    anncat_exec::write_roots::restrict_writes(&config.allow_write);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| WorkerError::Setup(format!("runtime: {e}")))?;
    rt.block_on(run(config, registry))
}

async fn run(config: WorkerConfig, registry: KernelRegistry) -> Result<()> {
    let advertise_ip = match &config.advertise {
        Some(name) => Some(
            anncat_net::cluster_file::resolve_address(&format!("{name}:0"))
                .map_err(|e| WorkerError::Setup(format!("--advertise: {e}")))?
                .ip(),
        ),
        None => None,
    };
    if let (Some(name), Some(ip)) = (&config.advertise, advertise_ip)
        && ip.is_loopback()
        && !config.listen.ip().is_loopback()
    {
        eprintln!(
            "anncat worker: warning: --advertise {name} resolves to the loopback address {ip} here; \
             workers on other hosts cannot fetch from this one (give a name or address they reach)"
        );
    }
    // Peers dial the advertised address by IP: the certificate names it too.
    let advertised: Vec<String> = config
        .advertise
        .iter()
        .cloned()
        .chain(advertise_ip.map(|ip| ip.to_string()))
        .collect();
    let identity = Identity::generate(&certificate_names(config.listen.ip(), &advertised))?;
    let endpoint = server_endpoint(config.listen, &identity, &config.tuning)?;
    let local = endpoint
        .local_addr()
        .map_err(|e| WorkerError::Setup(format!("no local address: {e}")))?;
    let address = SocketAddr::new(advertise_ip.unwrap_or(local.ip()), local.port());
    let mut probe = RssProbe::new();
    let baseline = probe.rss().max(governor::allocated()) + RESERVE_BYTES;
    let gov = MemoryGovernor::new(config.memory_limit, baseline);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Event>();
    let shared = Arc::new(Shared {
        me: AtomicU64::new(NO_ID),
        session: AtomicU64::new(1),
        secret: config.cluster.secret.clone(),
        tuning: config.tuning,
        governor: gov,
        endpoint: endpoint.clone(),
        outputs: Mutex::new(HashMap::new()),
        peers: Mutex::new(HashMap::new()),
        peer_conns: Mutex::new(HashMap::new()),
        exec: Mutex::new(ExecState::default()),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        rss: AtomicU64::new(0),
        task_rss: Mutex::new(HashMap::new()),
        done_tx,
    });
    let pid = std::process::id();
    let info = WorkerInfo {
        name: config
            .name
            .clone()
            .unwrap_or_else(|| format!("{address}/{pid}")),
        memory_limit: gov.budget,
        threads: config.threads as u32,
        address,
        certificate: identity.certificate.clone(),
        pid,
    };
    let scheduler_cert = der_of_pem(&config.cluster.certificate)?;

    // Peers fetch outputs from here.
    let serve = shared.clone();
    tokio::spawn(async move { serve_peers(serve).await });
    // RSS sampler.
    let sampler = shared.clone();
    std::thread::Builder::new()
        .name("anncat-rss".into())
        .spawn(move || {
            while !sampler.stop.load(Ordering::Relaxed) {
                let rss = probe.rss();
                sampler.rss.store(rss, Ordering::Relaxed);
                if let Ok(mut m) = sampler.task_rss.lock() {
                    for v in m.values_mut() {
                        *v = (*v).max(rss);
                    }
                }
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        })
        .map_err(|e| WorkerError::Setup(format!("cannot start a thread: {e}")))?;
    // Task threads.
    let registry = Arc::new(registry);
    for i in 0..config.threads {
        let (s, r) = (shared.clone(), registry.clone());
        std::thread::Builder::new()
            .name(format!("anncat-task-{i}"))
            .spawn(move || exec_loop(&s, &r))
            .map_err(|e| WorkerError::Setup(format!("cannot start a thread: {e}")))?;
    }

    let hello = Hello::Worker {
        version: PROTOCOL_VERSION,
        secret: config.cluster.secret.clone(),
        info,
    };
    let mut unreachable_since = Instant::now();
    let mut joined_before = false;
    let result = loop {
        match join(&config, &endpoint, &scheduler_cert, &hello).await {
            Ok((id, conn, writer, reader)) => {
                if joined_before {
                    eprintln!("anncat worker: joined the scheduler again as worker {id}");
                }
                joined_before = true;
                shared.me.store(id, Ordering::Relaxed);
                let end = session(&config, &shared, writer, reader, &mut done_rx).await;
                shared.end_session().await;
                // A scheduler that stopped closes with code 0: a shutdown,
                // even if its Shutdown frame did not arrive first.
                let stopped = matches!(
                    conn.close_reason(),
                    Some(quinn::ConnectionError::ApplicationClosed(ref c)) if c.error_code == 0u32.into()
                );
                match end {
                    Ok(()) => break Ok(()),
                    Err(_) if stopped => break Ok(()),
                    Err(e) if config.reconnect_timeout.is_zero() => break Err(e),
                    Err(e) => {
                        eprintln!(
                            "anncat worker: {e}; dialling it again for up to {} s",
                            config.reconnect_timeout.as_secs()
                        );
                        unreachable_since = Instant::now();
                        // Tasks of the lost session may still be writing:
                        // let them end before taking new work, so no write of
                        // an abandoned run can land after this worker rejoins.
                        let deadline = Instant::now() + config.reconnect_timeout;
                        while shared.exec.lock().map(|e| e.running).unwrap_or(0) > 0
                            && Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                }
            }
            Err(e @ WorkerError::Refused(_)) => break Err(e),
            Err(e) if unreachable_since.elapsed() >= patience(&config, joined_before) => {
                break Err(if joined_before {
                    WorkerError::SchedulerLost(format!(
                        "gave up after {} s: {e}",
                        config.reconnect_timeout.as_secs()
                    ))
                } else {
                    e
                });
            }
            Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
        }
    };
    shared.stop.store(true, Ordering::Relaxed);
    shared.wake.notify_all();
    endpoint.close(0u32.into(), b"worker stopped");
    result
}

/// How long to keep dialling a scheduler that cannot be reached.
fn patience(config: &WorkerConfig, joined_before: bool) -> Duration {
    match config.join_timeout {
        Some(t) if !joined_before => t,
        _ => config.reconnect_timeout,
    }
}

/// Pause between attempts to reach the scheduler.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// Dials the scheduler and registers; the granted id, the connection and
/// the control stream.
async fn join(
    config: &WorkerConfig,
    endpoint: &quinn::Endpoint,
    scheduler_cert: &[u8],
    hello: &Hello,
) -> Result<(u64, quinn::Connection, FrameWriter, FrameReader)> {
    let unreachable = |e: String| {
        WorkerError::Setup(format!(
            "cannot reach the scheduler at {}: {e}",
            config.cluster.address
        ))
    };
    let addr = config
        .cluster
        .resolve()
        .map_err(|e| unreachable(e.to_string()))?;
    let conn = connect(
        endpoint,
        addr,
        config.cluster.host(),
        scheduler_cert,
        &config.tuning,
    )
    .await
    .map_err(|e| unreachable(e.to_string()))?;
    let (id, writer, reader) =
        say_hello(&conn, hello, CONTROL_MAX_BYTES)
            .await
            .map_err(|e| match e {
                NetError::Refused(r) => WorkerError::Refused(r),
                other => unreachable(other.to_string()),
            })?;
    Ok((id, conn, writer, reader))
}

/// Frames from the scheduler buffered ahead of the session loop.
const INBOX_DEPTH: usize = 64;

/// Serves one session: runs what the scheduler assigns and reports back.
/// `Ok` when the scheduler said shut down, an error when the connection
/// was lost.
///
/// The control stream has one reader task and one writer task (frame reads
/// are not cancel-safe, so none sits in the `select!` below), and the
/// heartbeat is a task of its own that only takes short locks: nothing the
/// session loop waits on (a peer being dialled, a burst of results) can
/// delay a heartbeat.
async fn session(
    config: &WorkerConfig,
    shared: &Arc<Shared>,
    writer: FrameWriter,
    reader: FrameReader,
    done_rx: &mut mpsc::UnboundedReceiver<Event>,
) -> Result<()> {
    let current = shared.current_session();
    let lost = |e: String| WorkerError::SchedulerLost(e);
    let mut inbox = reader.into_channel::<ToWorker>(INBOX_DEPTH);
    let (outbox, mut writer_ended) = spawn_writer(writer);
    let beats = tokio::spawn(heartbeats(config.heartbeat, shared.clone(), outbox.clone()));
    let _stop_heartbeats = AbortOnDrop(beats);
    loop {
        tokio::select! {
            msg = inbox.recv() => match msg {
                Some(Ok(ToWorker::Run(assignments))) => {
                    for a in assignments {
                        if let Some(inputs) = local_inputs(shared, &a) {
                            // Everything is here: no fetch, straight to the queue.
                            if let Ok(mut st) = shared.exec.lock() {
                                st.queue.push_back(ReadyTask { session: current, a, inputs });
                            }
                            shared.wake.notify_one();
                        } else {
                            let s = shared.clone();
                            tokio::spawn(async move { fetch_and_queue(s, current, a).await });
                        }
                    }
                }
                Some(Ok(ToWorker::Release(keys))) => {
                    if let Ok(mut outputs) = shared.outputs.lock() {
                        for k in keys {
                            outputs.remove(&k);
                        }
                    }
                }
                Some(Ok(ToWorker::Peers(peers))) => {
                    if let Ok(mut map) = shared.peers.lock() {
                        for p in peers {
                            map.insert(p.id, p);
                        }
                    }
                }
                Some(Ok(ToWorker::PeerGone(id))) => {
                    if let Ok(mut map) = shared.peers.lock() {
                        map.remove(&id);
                    }
                    if let Ok(mut conns) = shared.peer_conns.lock() {
                        conns.remove(&id);
                    }
                }
                Some(Ok(ToWorker::Shutdown)) => return Ok(()),
                None => return Err(lost("the scheduler closed the connection".into())),
                Some(Err(e)) => return Err(lost(e.to_string())),
            },
            Some(first) = done_rx.recv() => {
                let (mut started, mut reports) = (Vec::new(), Vec::new());
                let mut next = Some(first);
                while let Some(ev) = next {
                    match ev {
                        // Work of an earlier session: the scheduler gave it to others.
                        Event::Started(s, _) if s != current => {}
                        Event::Ended(c) if c.session != current => {}
                        Event::Started(_, key) => started.push(key),
                        Event::Ended(c) => {
                            if let Some(out) = c.keep
                                && let Ok(mut outputs) = shared.outputs.lock()
                            {
                                outputs.insert(c.key, out);
                            }
                            reports.push(TaskReport { key: c.key, outcome: c.outcome, stats: c.stats });
                        }
                    }
                    next = done_rx.try_recv().ok();
                }
                if !started.is_empty() && outbox.send(FromWorker::Started(started)).is_err() {
                    return Err(lost(writer_error(&mut writer_ended).await));
                }
                // The memory peak as of these tasks' ends, so the job's
                // report has it even when it finishes before the next beat.
                if !reports.is_empty()
                    && (outbox.send(FromWorker::Heartbeat(heartbeat(shared))).is_err()
                        || outbox.send(FromWorker::Finished(reports)).is_err())
                {
                    return Err(lost(writer_error(&mut writer_ended).await));
                }
            }
            ended = &mut writer_ended => {
                return Err(lost(ended.unwrap_or_else(|e| e.to_string())));
            }
        }
    }
}

/// Aborts a task when dropped (a session's heartbeat task, whichever way
/// the session ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Moves the control stream's sending half into a task fed by a channel;
/// the task ends with the reason sending failed, or when every sender is
/// gone (then it finishes the stream).
fn spawn_writer(
    mut writer: FrameWriter,
) -> (
    mpsc::UnboundedSender<FromWorker>,
    tokio::task::JoinHandle<String>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<FromWorker>();
    let task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Err(e) = writer.send(&msg).await {
                return e.to_string();
            }
        }
        writer.finish();
        "the session ended".to_string()
    });
    (tx, task)
}

/// Why the writer task ended (it has, or is about to: its channel closed).
async fn writer_error(ended: &mut tokio::task::JoinHandle<String>) -> String {
    ended.await.unwrap_or_else(|e| e.to_string())
}

/// Sends a heartbeat every `every` until the session's writer is gone.
async fn heartbeats(
    every: Duration,
    shared: Arc<Shared>,
    outbox: mpsc::UnboundedSender<FromWorker>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if outbox
            .send(FromWorker::Heartbeat(heartbeat(&shared)))
            .is_err()
        {
            return;
        }
    }
}

/// This worker's memory and load now.
fn heartbeat(shared: &Shared) -> Heartbeat {
    let running = shared.exec.lock().map(|e| e.running).unwrap_or(0);
    let in_use = shared.in_use();
    Heartbeat {
        rss: shared.rss.load(Ordering::Relaxed),
        peak_rss: governor::peak_rss(),
        allocated: governor::allocated(),
        running: running as u32,
        paused: running > 0 && shared.governor.paused(in_use),
    }
}

fn exec_loop(shared: &Shared, registry: &KernelRegistry) {
    loop {
        let task = {
            let Ok(mut st) = shared.exec.lock() else {
                return;
            };
            loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                let admitted = st.queue.front().is_some_and(|t| {
                    shared.governor.admits(
                        t.a.memory_bytes,
                        st.reserved,
                        st.running,
                        shared.in_use(),
                    )
                });
                if admitted {
                    break;
                }
                st = match shared.wake.wait_timeout(st, SAMPLE_INTERVAL) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                };
            }
            let Some(task) = st.queue.pop_front() else {
                continue;
            };
            if task.session != shared.current_session() {
                continue;
            }
            st.reserved += task.a.memory_bytes;
            st.running += 1;
            task
        };
        let mem = task.a.memory_bytes;
        let _ = shared
            .done_tx
            .send(Event::Started(task.session, task.a.key));
        let completion = run_task(shared, registry, task);
        // Freed memory the allocator keeps counts in RSS; hand it back only
        // when RSS is over the limit (doing it after every task costs the
        // next task its page faults: dense concats ran 1.8x slower).
        if shared.rss.load(Ordering::Relaxed) > shared.governor.limit {
            governor::release_free_memory();
        }
        if let Ok(mut st) = shared.exec.lock() {
            st.reserved -= mem;
            st.running -= 1;
        }
        shared.wake.notify_all();
        let _ = shared.done_tx.send(Event::Ended(completion));
    }
}

/// Fault-injection hook for tests: `ANNCAT_TEST_TASK_DELAY_MS` makes every
/// task take at least that long, so a test can act mid-run.
fn test_task_delay() -> Option<Duration> {
    static DELAY: OnceLock<Option<Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("ANNCAT_TEST_TASK_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    })
}

fn run_task(shared: &Shared, registry: &KernelRegistry, task: ReadyTask) -> Completion {
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
    Completion {
        session,
        key,
        keep,
        outcome,
        stats,
    }
}

/// The inputs of `a` when every one is held by this worker.
fn local_inputs(shared: &Shared, a: &Assignment) -> Option<Vec<Arc<Vec<u8>>>> {
    let me = shared.me()?;
    if a.inputs.iter().any(|i| i.holder != me) {
        return None;
    }
    let outputs = shared.outputs.lock().ok()?;
    a.inputs
        .iter()
        .map(|i| outputs.get(&i.key).cloned())
        .collect()
}

async fn fetch_and_queue(shared: Arc<Shared>, session: u64, a: Assignment) {
    let mut inputs = Vec::with_capacity(a.inputs.len());
    for input in &a.inputs {
        match fetch(&shared, input.key, input.holder).await {
            Ok(data) => inputs.push(data),
            Err(message) => {
                let _ = shared.done_tx.send(Event::Ended(Completion {
                    session,
                    key: a.key,
                    keep: None,
                    outcome: TaskOutcome::Failed {
                        kind: FailureKind::InputLost,
                        message,
                    },
                    stats: TaskStats::default(),
                }));
                return;
            }
        }
    }
    if let Ok(mut st) = shared.exec.lock() {
        st.queue.push_back(ReadyTask { session, a, inputs });
    }
    shared.wake.notify_all();
}

async fn fetch(
    shared: &Arc<Shared>,
    key: TaskKey,
    holder: WorkerId,
) -> std::result::Result<Arc<Vec<u8>>, String> {
    if shared.me() == Some(holder) {
        return shared
            .outputs
            .lock()
            .ok()
            .and_then(|o| o.get(&key).cloned())
            .ok_or_else(|| format!("output of {key} is not on this worker"));
    }
    let peer = peer_conn(shared, holder).await?;
    let reply = async {
        let (send, recv) = peer
            .conn
            .open_bi()
            .await
            .map_err(|e| NetError::Closed(e.to_string()))?;
        let (mut w, mut r) = (
            FrameWriter::new(send),
            FrameReader::new(recv, peer.max_reply),
        );
        w.send(&PeerRequest::Fetch(key)).await?;
        w.finish();
        r.next::<PeerReply>().await
    }
    .await;
    match reply {
        Ok(Some(PeerReply::Data(bytes))) => Ok(Arc::new(bytes)),
        Ok(Some(PeerReply::Missing)) => Err(format!("worker {holder} no longer holds {key}")),
        Ok(None) | Err(_) => {
            if let Ok(mut conns) = shared.peer_conns.lock() {
                conns.remove(&holder);
            }
            Err(format!(
                "lost the connection to worker {holder} fetching {key}"
            ))
        }
    }
}

async fn peer_conn(
    shared: &Arc<Shared>,
    holder: WorkerId,
) -> std::result::Result<Arc<PeerConn>, String> {
    // The map is never locked across an await: dialling a peer that died
    // takes seconds, and nothing else may wait for that. (Two fetches may
    // both dial a new peer; the second connection is dropped.)
    if let Some(c) = shared
        .peer_conns
        .lock()
        .ok()
        .and_then(|conns| conns.get(&holder).cloned())
    {
        return Ok(c);
    }
    let info = shared
        .peers
        .lock()
        .ok()
        .and_then(|p| p.get(&holder).cloned())
        .ok_or_else(|| format!("worker {holder} is unknown or gone"))?;
    let conn = connect(
        &shared.endpoint,
        info.address,
        &info.address.ip().to_string(),
        &info.certificate,
        &shared.tuning,
    )
    .await
    .map_err(|e| format!("worker {holder}: {e}"))?;
    let hello = Hello::Peer {
        version: PROTOCOL_VERSION,
        secret: shared.secret.clone(),
    };
    let max = usize::try_from(shared.governor.limit).unwrap_or(usize::MAX);
    let (_, w, r) = say_hello(&conn, &hello, max)
        .await
        .map_err(|e| format!("worker {holder}: {e}"))?;
    let pc = Arc::new(PeerConn {
        conn,
        max_reply: max,
        _hello: (w, r),
    });
    let mut conns = shared
        .peer_conns
        .lock()
        .map_err(|_| format!("worker {holder}: peer table poisoned"))?;
    Ok(conns.entry(holder).or_insert(pc).clone())
}

async fn serve_peers(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let s = shared.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            let Ok(pending) = read_hello(&conn).await else {
                conn.close(1u32.into(), b"no valid hello");
                return;
            };
            let check = match &pending.hello {
                Hello::Peer { version, secret } => check_hello(*version, secret, &s.secret),
                _ => Err("this is a worker: only peers connect here".to_string()),
            };
            if let Err(reason) = check {
                eprintln!("anncat worker: refused {}: {reason}", conn.remote_address());
                pending.refuse(&conn, &reason).await;
                return;
            }
            let Ok((w, r)) = pending.accept(0, PEER_REQUEST_MAX_BYTES).await else {
                return;
            };
            // Requests come on the hello stream or on streams of their own.
            let (s2, conn2) = (s.clone(), conn.clone());
            tokio::spawn(async move { serve_requests(&s2, &conn2, w, r).await });
            while let Ok((send, recv)) = conn.accept_bi().await {
                let (s3, conn3) = (s.clone(), conn.clone());
                let (w, r) = (
                    FrameWriter::new(send),
                    FrameReader::new(recv, PEER_REQUEST_MAX_BYTES),
                );
                tokio::spawn(async move { serve_requests(&s3, &conn3, w, r).await });
            }
        });
    }
}

/// Answers a peer's requests on one stream until it ends; drops the peer's
/// connection on an oversized or malformed request.
async fn serve_requests(
    s: &Shared,
    conn: &quinn::Connection,
    mut w: FrameWriter,
    mut r: FrameReader,
) {
    loop {
        match r.next::<PeerRequest>().await {
            Ok(Some(PeerRequest::Fetch(key))) => {
                let data = s.outputs.lock().ok().and_then(|o| o.get(&key).cloned());
                let reply = match data {
                    Some(d) => PeerReply::Data(d.as_ref().clone()),
                    None => PeerReply::Missing,
                };
                if w.send(&reply).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                w.finish();
                return;
            }
            Err(e) => {
                if matches!(e, NetError::FrameTooLarge { .. } | NetError::Malformed(_)) {
                    eprintln!("anncat worker: dropped peer {}: {e}", conn.remote_address());
                    conn.close(3u32.into(), e.to_string().as_bytes());
                }
                return;
            }
        }
    }
}
