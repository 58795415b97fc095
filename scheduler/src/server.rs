//! The scheduler process: a QUIC endpoint that registers workers and
//! clients (hello checked: protocol version and cluster secret), and one
//! actor task that owns the [`SchedulerState`] and feeds it events. Each
//! event batch ends with [`SchedulerState::schedule`], so assignments to a
//! worker go out in one frame.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anncat_exec::protocol::{
    ClientId, CloseCode, FromWorker, Hello, ToClient, ToScheduler, ToWorker, WorkerId, WorkerInfo,
};
use anncat_net::cluster_file::{ClusterFile, check_hello};
use anncat_net::frame::CONTROL_MAX_BYTES;
use anncat_net::hello::read_hello;
use anncat_net::tls::{certificate_names, server_endpoint};
use anncat_net::{Identity, TransportTuning};
use quinn::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::client::Client;
use crate::error::{Result, SchedulerError};
use crate::local_link::Inlet;
use crate::state::{Comm, SchedulerConfig, SchedulerState};

/// How to run a scheduler.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (loopback by default).
    pub listen: SocketAddr,
    /// Host names or IP addresses workers and clients dial (needed when
    /// listening on all interfaces). The certificate names each of them and
    /// the listen address; the first goes into the cluster file.
    pub advertise: Vec<String>,
    /// Where to write the cluster file (mode 0600), if anywhere. Not
    /// written when [`ServerConfig::identity`] is given.
    pub cluster_file: Option<PathBuf>,
    /// A pre-made identity (`anncat keygen`): the cluster file to serve
    /// (certificate and secret) and the certificate's private key (PEM).
    /// Without it the scheduler makes a fresh certificate and secret.
    pub identity: Option<(ClusterFile, String)>,
    /// Scheduling policy.
    pub scheduling: SchedulerConfig,
    /// Connection liveness timing.
    pub tuning: TransportTuning,
    /// Heartbeat check interval.
    pub tick: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            advertise: Vec::new(),
            cluster_file: None,
            identity: None,
            scheduling: SchedulerConfig::default(),
            tuning: TransportTuning::default(),
            tick: Duration::from_millis(250),
        }
    }
}

impl ServerConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if self.listen.ip().is_unspecified() && self.advertise.is_empty() && self.identity.is_none()
        {
            return Err(SchedulerError::Config(
                "listening on all interfaces needs --advertise NAME (the host name or address workers and clients dial)".into(),
            ));
        }
        for name in &self.advertise {
            check_host_name(name)?;
        }
        if self.scheduling.max_crashes == 0 {
            return Err(SchedulerError::Config(
                "max crashes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Checks that `name` is a host name or an IP address (no port, no spaces).
pub fn check_host_name(name: &str) -> Result<()> {
    let ok = name.parse::<IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if ok {
        Ok(())
    } else {
        Err(SchedulerError::Config(format!(
            "{name:?} is not a host name or IP address (give names without a port)"
        )))
    }
}

/// A fresh random cluster secret (256 bits, hex).
pub fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| SchedulerError::system("draw a cluster secret (no randomness)", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the scheduler's event loop is fed: from the network, and from
/// in-process clients ([`crate::local_link`]).
pub(crate) enum Event {
    WorkerJoined {
        id: WorkerId,
        info: WorkerInfo,
        tx: mpsc::UnboundedSender<ToWorker>,
        conn: Connection,
    },
    FromWorker(WorkerId, FromWorker),
    WorkerLost(WorkerId, String),
    ClientJoined(ClientId, mpsc::UnboundedSender<ToClient>),
    FromClient(ClientId, ToScheduler),
    ClientLost(ClientId),
}

#[derive(Default)]
struct NetComm {
    workers: HashMap<WorkerId, (mpsc::UnboundedSender<ToWorker>, Connection)>,
    clients: HashMap<ClientId, mpsc::UnboundedSender<ToClient>>,
}

impl Comm for NetComm {
    fn to_worker(&mut self, worker: WorkerId, msg: ToWorker) {
        if let Some((tx, _)) = self.workers.get(&worker) {
            let _ = tx.send(msg);
        }
    }

    fn to_client(&mut self, client: ClientId, msg: ToClient) {
        if let Some(tx) = self.clients.get(&client) {
            let _ = tx.send(msg);
        }
    }

    fn drop_worker(&mut self, worker: WorkerId, reason: &str) {
        if let Some((_, conn)) = self.workers.remove(&worker) {
            eprintln!(
                "anncat scheduler: dropped worker {worker} ({}): {reason}",
                conn.remote_address()
            );
            conn.close(CloseCode::Dropped.code().into(), reason.as_bytes());
        }
    }
}

/// A running scheduler (on its own thread and runtime).
#[derive(Debug)]
pub struct SchedulerHandle {
    cluster: ClusterFile,
    inlet: Inlet,
    workers: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SchedulerHandle {
    /// Starts a scheduler; returns once it listens (and wrote its cluster file).
    pub fn start(config: ServerConfig) -> Result<SchedulerHandle> {
        config.validate()?;
        let (identity, secret) = match &config.identity {
            Some((cluster, key_pem)) => (
                Identity::from_pem(&cluster.certificate, key_pem)?,
                cluster.secret.clone(),
            ),
            None => (
                Identity::generate(&certificate_names(config.listen.ip(), &config.advertise))?,
                new_secret()?,
            ),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(ClusterFile, Inlet)>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let workers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = workers.clone();
        let thread = std::thread::Builder::new()
            .name("anncat-scheduler".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SchedulerError::system("start a runtime", e)));
                        return;
                    }
                };
                rt.block_on(serve(config, identity, secret, ready_tx, stop_rx, counter));
            })
            .map_err(|e| SchedulerError::system("start the scheduler thread", e))?;
        let (cluster, inlet) = ready_rx.recv().map_err(|_| {
            SchedulerError::system("start the scheduler", "its thread ended during startup")
        })??;
        Ok(SchedulerHandle {
            cluster,
            inlet,
            workers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// What workers and clients need to connect.
    pub fn cluster(&self) -> &ClusterFile {
        &self.cluster
    }

    /// A client in this process: the same protocol as a [`Client`] over
    /// the network, carried by channels (no connection, no encryption, no
    /// encoding). Must not be called from inside an async runtime.
    pub fn local_client(&self) -> Result<Client> {
        Client::local(self.inlet.open()?)
    }

    /// Workers registered now.
    pub fn workers_connected(&self) -> usize {
        self.workers.load(Ordering::Relaxed)
    }

    /// Waits until the scheduler stops (it runs until [`SchedulerHandle::stop`]).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops the scheduler: workers are told to shut down, connections close.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SchedulerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn wall_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn serve(
    config: ServerConfig,
    identity: Identity,
    secret: String,
    ready: std::sync::mpsc::Sender<Result<(ClusterFile, Inlet)>>,
    mut stop: oneshot::Receiver<()>,
    worker_count: Arc<std::sync::atomic::AtomicUsize>,
) {
    let endpoint = match server_endpoint(config.listen, &identity, &config.tuning) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return;
        }
    };
    let local = match endpoint.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(SchedulerError::system("find the local address", e)));
            return;
        }
    };
    let cluster = match &config.identity {
        Some((cluster, _)) => cluster.clone(),
        None => {
            let host = config
                .advertise
                .first()
                .cloned()
                .unwrap_or_else(|| local.ip().to_string());
            let cluster = ClusterFile {
                address: anncat_net::cluster_file::host_port(&host, local.port()),
                certificate: identity.certificate_pem(),
                secret: secret.clone(),
            };
            if let Some(path) = &config.cluster_file
                && let Err(e) = cluster.write(path)
            {
                let _ = ready.send(Err(e.into()));
                return;
            }
            cluster
        }
    };
    let (events_tx, mut events) = mpsc::channel::<Event>(4096);
    let secret = Arc::new(secret);
    let next_id = Arc::new(AtomicU64::new(0));
    let inlet = Inlet {
        events: events_tx.clone(),
        next_id: next_id.clone(),
    };
    let _ = ready.send(Ok((cluster, inlet)));
    let accept_endpoint = endpoint.clone();
    let accept_tx = events_tx.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept_endpoint.accept().await {
            let (tx, secret, next_id) = (accept_tx.clone(), secret.clone(), next_id.clone());
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    handle_connection(conn, tx, secret, next_id).await;
                }
            });
        }
    });
    let mut state = SchedulerState::new(config.scheduling);
    let mut comm = NetComm::default();
    let mut tick = tokio::time::interval(config.tick);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                // Heartbeats that arrived while this loop was busy count
                // before anyone is judged hung: a slow scheduler is not a
                // dead worker.
                while let Ok(ev) = events.try_recv() {
                    handle_event(&mut state, &mut comm, ev);
                }
                state.on_tick(Instant::now(), &mut comm);
                state.schedule(&mut comm);
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                handle_event(&mut state, &mut comm, ev);
                while let Ok(ev) = events.try_recv() {
                    handle_event(&mut state, &mut comm, ev);
                }
                state.schedule(&mut comm);
                worker_count.store(state.worker_count(), Ordering::Relaxed);
            }
        }
    }
    for (tx, _) in comm.workers.values() {
        let _ = tx.send(ToWorker::Shutdown);
    }
    // A worker told to shut down closes its connection: wait for that (so
    // the Shutdown frames are not cut off by the endpoint closing), not for
    // a fixed time, and not forever for a worker that does not answer.
    let connections: Vec<Connection> = comm.workers.values().map(|(_, c)| c.clone()).collect();
    let all_closed = async {
        for conn in &connections {
            conn.closed().await;
        }
    };
    let every_worker_closed = tokio::time::timeout(SHUTDOWN_WAIT, all_closed)
        .await
        .is_ok();
    // A client that is done (the one of a local cluster's run, dropped
    // just before the cluster stops) closes its connection by itself: its
    // going is seen here, so the endpoint need not wait for it below.
    let clients_gone = async {
        while !comm.clients.is_empty() {
            match events.recv().await {
                Some(Event::ClientLost(id)) => {
                    comm.clients.remove(&id);
                }
                Some(_) => {}
                None => break,
            }
        }
    };
    let every_client_closed = tokio::time::timeout(CLOSE_FLUSH, clients_gone)
        .await
        .is_ok();
    endpoint.close(CloseCode::Shutdown.code().into(), b"scheduler stopped");
    // Long enough for the close frames to leave, where a worker or a client
    // still has its connection open (one that closed its own needs none);
    // the draining period after (three probe timeouts) protects nothing a
    // stopping scheduler needs.
    if !every_worker_closed || !every_client_closed {
        let _ = tokio::time::timeout(CLOSE_FLUSH, endpoint.wait_idle()).await;
    }
}

/// How long a stopping scheduler waits for its workers to close their
/// connections after being told to shut down.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// How long a stopping scheduler lets its close frames go out.
const CLOSE_FLUSH: Duration = Duration::from_millis(20);

fn handle_event(state: &mut SchedulerState, comm: &mut NetComm, ev: Event) {
    match ev {
        Event::WorkerJoined { id, info, tx, conn } => {
            comm.workers.insert(id, (tx, conn));
            state.on_worker_joined(id, info, Instant::now(), comm);
        }
        Event::FromWorker(id, FromWorker::Heartbeat(hb)) => {
            state.on_heartbeat(id, hb, wall_s(), Instant::now());
        }
        Event::FromWorker(id, FromWorker::Started(keys)) => {
            state.on_tasks_started(id, &keys, comm);
        }
        Event::FromWorker(id, FromWorker::Computed(keys)) => {
            state.on_tasks_computed(id, &keys, comm);
        }
        Event::FromWorker(id, FromWorker::Finished(reports)) => {
            state.on_heartbeat_seen(id, Instant::now());
            state.on_task_reports(id, reports, comm);
        }
        Event::WorkerLost(id, reason) => {
            comm.workers.remove(&id);
            state.on_worker_lost(id, &reason, comm);
        }
        Event::ClientJoined(id, tx) => {
            comm.clients.insert(id, tx);
        }
        Event::FromClient(id, msg) => match msg {
            ToScheduler::NewJob { name } => {
                state.on_new_job(id, name, comm);
            }
            ToScheduler::AddTasks { job, tasks } => state.on_add_tasks(id, job, tasks, comm),
            ToScheduler::Start { job, want } => state.on_start(id, job, want, comm),
            ToScheduler::Cancel { job } => state.on_cancel(id, job, comm),
            ToScheduler::WorkerLimits => state.on_worker_limits(id, comm),
        },
        Event::ClientLost(id) => {
            comm.clients.remove(&id);
            state.on_client_lost(id, comm);
        }
    }
}

/// Logs a connection closed for a frame that is too large or does not
/// decode (an unknown message); a plain disconnect is not logged here.
fn log_bad_frame(conn: &Connection, who: &str, e: &anncat_net::NetError) {
    if matches!(
        e,
        anncat_net::NetError::FrameTooLarge { .. } | anncat_net::NetError::Malformed(_)
    ) {
        eprintln!(
            "anncat scheduler: closed the connection of {who} ({}): {e}",
            conn.remote_address()
        );
    }
}

async fn handle_connection(
    conn: Connection,
    events: mpsc::Sender<Event>,
    secret: Arc<String>,
    next_id: Arc<AtomicU64>,
) {
    let Ok(pending) = read_hello(&conn).await else {
        conn.close(CloseCode::BadHello.code().into(), b"no valid hello");
        return;
    };
    let (version, given) = match &pending.hello {
        Hello::Worker {
            version, secret, ..
        }
        | Hello::Client { version, secret }
        | Hello::Peer { version, secret } => (*version, secret.clone()),
    };
    if let Err(reason) = check_hello(version, &given, &secret) {
        eprintln!(
            "anncat scheduler: refused {}: {reason}",
            conn.remote_address()
        );
        pending.refuse(&conn, &reason).await;
        return;
    }
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    match pending.hello.clone() {
        Hello::Worker { info, .. } => {
            let Ok((mut writer, mut reader)) = pending.accept(id, CONTROL_MAX_BYTES).await else {
                return;
            };
            let wid = WorkerId(id);
            let (tx, mut rx) = mpsc::unbounded_channel::<ToWorker>();
            if events
                .send(Event::WorkerJoined {
                    id: wid,
                    info,
                    tx,
                    conn: conn.clone(),
                })
                .await
                .is_err()
            {
                return;
            }
            let writer_conn = conn.clone();
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    let shutdown = matches!(msg, ToWorker::Shutdown);
                    if writer.send(&msg).await.is_err() {
                        break;
                    }
                    if shutdown {
                        writer.finish();
                        break;
                    }
                }
                let _ = writer_conn;
            });
            let reason = loop {
                match reader.next::<FromWorker>().await {
                    Ok(Some(msg)) => {
                        if events.send(Event::FromWorker(wid, msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "worker closed its connection".to_string(),
                    Err(e) => {
                        log_bad_frame(&conn, &format!("worker {wid}"), &e);
                        conn.close(CloseCode::BadFrame.code().into(), e.to_string().as_bytes());
                        break e.to_string();
                    }
                }
            };
            let _ = events.send(Event::WorkerLost(wid, reason)).await;
        }
        Hello::Client { .. } => {
            let Ok((mut writer, mut reader)) = pending.accept(id, CONTROL_MAX_BYTES).await else {
                return;
            };
            let cid = ClientId(id);
            let (tx, mut rx) = mpsc::unbounded_channel::<ToClient>();
            if events.send(Event::ClientJoined(cid, tx)).await.is_err() {
                return;
            }
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    if writer.send(&msg).await.is_err() {
                        break;
                    }
                }
            });
            loop {
                match reader.next::<ToScheduler>().await {
                    Ok(Some(msg)) => {
                        if events.send(Event::FromClient(cid, msg)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        log_bad_frame(&conn, &format!("client {}", cid.0), &e);
                        conn.close(CloseCode::BadFrame.code().into(), e.to_string().as_bytes());
                        break;
                    }
                }
            }
            let _ = events.send(Event::ClientLost(cid)).await;
        }
        Hello::Peer { .. } => {
            pending
                .refuse(&conn, "this is the scheduler, not a worker")
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_configuration_is_a_config_error_naming_the_option() {
        let all_interfaces = ServerConfig {
            listen: ([0, 0, 0, 0], 0).into(),
            ..ServerConfig::default()
        };
        let err = all_interfaces.validate().expect_err("needs --advertise");
        assert!(matches!(err, SchedulerError::Config(_)), "{err:?}");
        assert!(err.to_string().starts_with("invalid option: "), "{err}");
        assert!(err.to_string().contains("--advertise"), "{err}");
        let err = check_host_name("host:7000").expect_err("a port");
        assert!(matches!(err, SchedulerError::Config(_)), "{err:?}");
        assert!(check_host_name("node-1.cluster").is_ok());
        assert!(ServerConfig::default().validate().is_ok());
    }
}
