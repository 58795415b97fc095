//! The worker process: registers with the scheduler, runs assigned tasks on
//! a pool of threads under the [`MemoryGovernor`], keeps outputs that other
//! tasks need, serves them to peers, fetches its inputs from peers, and
//! heartbeats its memory use. It exits when the scheduler says shut down.
//! When the scheduler cannot be reached (not up yet, gone, or the network
//! cut) it keeps dialling for [`WorkerConfig::reconnect_timeout`] and then
//! joins again as a new worker: each connection is a *session*, and work of
//! an earlier session (queued tasks, held outputs, late results) is dropped,
//! since the scheduler gave it to others when it lost this worker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anncat_exec::kernel::{Deferred, KernelRegistry, take_bytes_written};
use anncat_exec::protocol::{
    Assignment, CloseCode, FailureKind, FromWorker, Heartbeat, Hello, PROTOCOL_VERSION, PeerInfo,
    PeerReply, PeerRequest, TaskKey, TaskOutcome, TaskReport, TaskStats, ToWorker, WorkerId,
    WorkerInfo,
};
use anncat_net::cluster_file::{ClusterFile, check_hello};
use anncat_net::frame::CONTROL_MAX_BYTES;
use anncat_net::hello::{read_hello, say_hello};
use anncat_net::tls::{certificate_names, connect, der_of_pem, server_endpoint};
use anncat_net::{FrameReader, FrameWriter, Identity, NetError, TransportTuning};
use tokio::sync::mpsc;

use crate::error::{Result, WorkerError};
use crate::governor::{self, MemoryGovernor, RssProbe, SAMPLE_INTERVAL};
use crate::queue::{ReadyTask, TaskQueue};

mod peers;
mod session;

mod flush;
mod prefetch;
mod task_thread;

use task_thread::exec_loop;
pub use task_thread::test_task_delay;

use peers::{fetch_and_queue, local_inputs, serve_peers};
use session::session;

/// Starts a thread named `name` that hands each item received on `items`
/// to `handle`, in turn, until the worker stops or every sender is gone
/// (the flush thread and the prefetch thread).
fn drain_on_thread<T: Send + 'static>(
    name: &str,
    shared: Arc<Shared>,
    items: std::sync::mpsc::Receiver<T>,
    mut handle: impl FnMut(T) + Send + 'static,
) -> Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                match items.recv_timeout(SAMPLE_INTERVAL) {
                    Ok(item) => handle(item),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| WorkerError::system("start a thread", e))
}

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
            return Err(WorkerError::Config(format!(
                "--memory-limit must be at least 32MiB, not {} bytes",
                self.memory_limit
            )));
        }
        if self.threads == 0 {
            return Err(WorkerError::Config("--threads must be at least 1".into()));
        }
        for dir in &self.allow_write {
            if !dir.is_dir() {
                return Err(WorkerError::Config(format!(
                    "--allow-write {}: the directory does not exist",
                    dir.display()
                )));
            }
        }
        if self.listen.ip().is_unspecified() && self.advertise.is_none() {
            return Err(WorkerError::Config(
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

enum Event {
    Started(u64, TaskKey),
    /// The kernel returned; the task waits for its deferred work (flush).
    Computed(u64, TaskKey),
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
    exec: Mutex<TaskQueue>,
    wake: Condvar,
    stop: AtomicBool,
    rss: AtomicU64,
    task_rss: Mutex<HashMap<TaskKey, u64>>,
    done_tx: mpsc::UnboundedSender<Event>,
    /// Tasks whose deferred work (a flush) runs on the flush thread.
    flush_tx: std::sync::mpsc::Sender<flush::Pending>,
    /// Queued tasks whose kernels fetch ahead on the prefetch thread.
    prefetch_tx: std::sync::mpsc::Sender<crate::queue::Prefetch>,
    /// How many of the tasks queued next are fetched ahead.
    prefetch_window: usize,
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
    fn end_session(&self) {
        self.me.store(NO_ID, Ordering::Relaxed);
        self.session.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut st) = self.exec.lock() {
            st.clear();
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

    /// Queues a task whose inputs are all here and wakes a task thread.
    /// When tasks are running it will wait: if it is among the next to
    /// start, it is fetched ahead.
    fn enqueue(&self, task: ReadyTask) {
        let ahead = match self.exec.lock() {
            Ok(mut st) => {
                st.push(task);
                if st.running() > 0 {
                    st.to_prefetch(self.prefetch_window)
                } else {
                    Vec::new()
                }
            }
            Err(_) => Vec::new(),
        };
        self.wake.notify_all();
        for p in ahead {
            let _ = self.prefetch_tx.send(p);
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
        .map_err(|e| WorkerError::system("start a runtime", e))?;
    let outcome = rt.block_on(async {
        let stop = stop_signal()?;
        tokio::select! {
            result = run(config, registry) => result.map(|()| None),
            signal = stop => Ok(Some(signal)),
        }
    });
    if let Ok(Some(signal)) = outcome {
        // Also as PID 1 of a container, where the kernel ignores signals a
        // process does not handle. Tasks still running are abandoned (the
        // scheduler gives them to other workers); their threads end with the
        // process, not awaited here.
        eprintln!("anncat worker: stopping at {signal}");
        rt.shutdown_background();
        return Ok(());
    }
    outcome.map(|_| ())
}

/// Resolves at the first SIGTERM or SIGINT, with the signal's name.
fn stop_signal() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| WorkerError::system("handle SIGTERM", e))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| WorkerError::system("handle SIGINT", e))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

async fn run(config: WorkerConfig, registry: KernelRegistry) -> Result<()> {
    let advertise_ip = match &config.advertise {
        Some(name) => Some(
            anncat_net::cluster_file::resolve_address(&format!("{name}:0"))
                .map_err(|e| WorkerError::Config(format!("--advertise: {e}")))?
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
        .map_err(|e| WorkerError::system("find the local address", e))?;
    let address = SocketAddr::new(advertise_ip.unwrap_or(local.ip()), local.port());
    let mut probe = RssProbe::new();
    let baseline = probe.rss().max(governor::allocated()) + RESERVE_BYTES;
    let gov = MemoryGovernor::new(config.memory_limit, baseline);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Event>();
    let (flush_tx, flush_rx) = flush::channel();
    let (prefetch_tx, prefetch_rx) = prefetch::channel();
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
        exec: Mutex::new(TaskQueue::default()),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        rss: AtomicU64::new(0),
        task_rss: Mutex::new(HashMap::new()),
        done_tx,
        flush_tx,
        prefetch_tx,
        prefetch_window: prefetch::AHEAD_PER_THREAD * config.threads,
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
        .map_err(|e| WorkerError::system("start a thread", e))?;
    flush::start(shared.clone(), flush_rx)?;
    // Task threads.
    let registry = Arc::new(registry);
    prefetch::start(shared.clone(), registry.clone(), prefetch_rx)?;
    for i in 0..config.threads {
        let (s, r) = (shared.clone(), registry.clone());
        std::thread::Builder::new()
            .name(format!("anncat-task-{i}"))
            .spawn(move || exec_loop(&s, &r))
            .map_err(|e| WorkerError::system("start a thread", e))?;
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
                shared.end_session();
                // A scheduler that stopped closes with code 0: a shutdown,
                // even if its Shutdown frame did not arrive first.
                let stopped = matches!(
                    conn.close_reason(),
                    Some(quinn::ConnectionError::ApplicationClosed(ref c))
                        if c.error_code == CloseCode::Shutdown.code().into()
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
                        while shared.exec.lock().map(|e| e.running()).unwrap_or(0) > 0
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
    endpoint.close(CloseCode::Shutdown.code().into(), b"worker stopped");
    // Let the close frame leave before the process ends: the scheduler
    // waits for it when it stops, and a peer that never hears it waits for
    // its idle timeout instead.
    let _ = tokio::time::timeout(CLOSE_FLUSH, endpoint.wait_idle()).await;
    result
}

/// How long a stopping worker lets its close frame go out: the endpoint's
/// driver sends it on its next turn, well within this.
const CLOSE_FLUSH: Duration = Duration::from_millis(5);

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
    let unreachable = |reason: String| WorkerError::Unreachable {
        address: config.cluster.address.clone(),
        reason,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(memory_limit: u64) -> WorkerConfig {
        let cluster = ClusterFile {
            address: "127.0.0.1:1".into(),
            certificate: String::new(),
            secret: "00".into(),
        };
        WorkerConfig::new(cluster, memory_limit)
    }

    #[test]
    fn a_bad_configuration_is_a_config_error_naming_the_option() {
        let err = config(1 << 20).validate().expect_err("too little memory");
        assert!(matches!(err, WorkerError::Config(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("invalid option: --memory-limit"),
            "{err}"
        );
        let mut no_threads = config(1 << 30);
        no_threads.threads = 0;
        let err = no_threads.validate().expect_err("no threads");
        assert!(
            err.to_string().contains("--threads must be at least 1"),
            "{err}"
        );
        let mut missing = config(1 << 30);
        missing.allow_write = vec!["/nonexistent/anncat-dir".into()];
        let err = missing.validate().expect_err("missing directory");
        assert!(matches!(err, WorkerError::Config(_)), "{err:?}");
        assert!(config(1 << 30).validate().is_ok());
    }
}
