//! A local cluster: a scheduler in this process and worker processes on
//! this machine, started together and stopped together (by pid, also when
//! the cluster is dropped after an error).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anncat_net::ClusterFile;
use anncat_net::TransportTuning;
use anncat_scheduler::{Client, SchedulerConfig, SchedulerHandle, ServerConfig};

/// How long local workers have to start and join the scheduler.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a local worker that lost its scheduler keeps dialling it.
const LOCAL_RECONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the coordinator looks at its local workers while it waits
/// for them to register or to exit (either holds up the run).
const WORKER_POLL: Duration = Duration::from_millis(1);

/// The program a local cluster runs as its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProgram {
    /// The executable.
    pub path: PathBuf,
    /// Arguments before the worker options (`worker` for the anncat binary).
    pub args: Vec<String>,
}

impl WorkerProgram {
    /// This executable run as `EXE worker ...` (the anncat binary, or a
    /// custom binary that handles `worker` with [`crate::cli::WorkerArgs`]).
    pub fn current_exe() -> anyhow::Result<Self> {
        Ok(Self {
            path: std::env::current_exe()?,
            args: vec!["worker".into()],
        })
    }
}

/// How to start a local cluster.
#[derive(Debug, Clone)]
pub struct LocalClusterConfig {
    /// Worker processes.
    pub workers: usize,
    /// Memory limit of each worker (bytes).
    pub memory_limit: u64,
    /// Task threads per worker.
    pub threads: usize,
    /// Directories the workers may write under.
    pub allow_write: Vec<PathBuf>,
    /// The worker executable (default: this executable with `worker`).
    pub program: Option<WorkerProgram>,
    /// Scheduling policy.
    pub scheduling: SchedulerConfig,
}

impl Default for LocalClusterConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_limit: 1 << 30,
            threads: 1,
            allow_write: Vec::new(),
            program: None,
            // Nobody restarts local workers: when all died, fail the run.
            scheduling: SchedulerConfig {
                no_worker_timeout: Some(Duration::from_secs(2)),
                ..SchedulerConfig::default()
            },
        }
    }
}

impl LocalClusterConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.workers >= 1,
            "invalid option: --workers must be at least 1 for a cluster"
        );
        anyhow::ensure!(
            self.threads >= 1,
            "invalid option: --threads must be at least 1"
        );
        anyhow::ensure!(
            self.memory_limit >= 32 << 20,
            "invalid option: --memory-limit must be at least 32MiB per worker"
        );
        Ok(())
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    scheduler: Option<SchedulerHandle>,
    children: Vec<Child>,
    dir: PathBuf,
    cluster_file: PathBuf,
}

fn private_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("anncat-{}-{nanos}", std::process::id()));
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(&dir).map_err(|e| {
        anyhow::anyhow!("{}: cannot create a private directory: {e}", dir.display())
    })?;
    Ok(dir)
}

impl LocalCluster {
    /// Starts the scheduler and the workers; returns when all registered.
    pub fn start(config: LocalClusterConfig) -> anyhow::Result<LocalCluster> {
        config.validate()?;
        let dir = private_dir()?;
        let cluster_file = dir.join("cluster.json");
        let mut cluster = LocalCluster {
            scheduler: None,
            children: Vec::new(),
            dir,
            cluster_file: cluster_file.clone(),
        };
        let handle = SchedulerHandle::start(ServerConfig {
            cluster_file: Some(cluster_file.clone()),
            scheduling: config.scheduling,
            ..ServerConfig::default()
        })?;
        cluster.scheduler = Some(handle);
        let program = match config.program.clone() {
            Some(p) => p,
            None => WorkerProgram::current_exe()?,
        };
        for _ in 0..config.workers {
            let mut cmd = Command::new(&program.path);
            // Options meant for this process (ANNCAT_* variables, a config
            // file) must not reach its workers, which get theirs below.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key.starts_with("ANNCAT_") && !key.starts_with("ANNCAT_TEST_") {
                    cmd.env_remove(key.as_ref());
                }
            }
            cmd.args(&program.args)
                .arg("--cluster-file")
                .arg(&cluster_file)
                .arg("--memory-limit")
                .arg(config.memory_limit.to_string())
                .arg("--threads")
                .arg(config.threads.to_string())
                // A local worker lives and dies with this process' scheduler:
                // it dials again only briefly, so that a worker dropped for a
                // late heartbeat (hundreds of workers starting on few cores)
                // rejoins, while an orphan of a killed coordinator soon exits.
                .arg("--reconnect-timeout")
                .arg(LOCAL_RECONNECT_TIMEOUT.as_secs().to_string())
                .arg("--join-timeout")
                .arg(STARTUP_TIMEOUT.as_secs().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            for d in &config.allow_write {
                cmd.arg("--allow-write").arg(d);
            }
            let child = cmd.spawn().map_err(|e| {
                anyhow::anyhow!("cannot start worker {}: {e}", program.path.display())
            })?;
            cluster.children.push(child);
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let connected = cluster
                .scheduler
                .as_ref()
                .map_or(0, SchedulerHandle::workers_connected);
            if connected >= config.workers {
                break;
            }
            for c in &mut cluster.children {
                if let Ok(Some(status)) = c.try_wait() {
                    anyhow::bail!(
                        "a local worker (pid {}) exited during startup: {status}",
                        c.id()
                    );
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "local workers did not register within {} s ({connected} of {})",
                STARTUP_TIMEOUT.as_secs(),
                config.workers
            );
            std::thread::sleep(WORKER_POLL);
        }
        Ok(cluster)
    }

    /// The cluster file (address, certificate, secret).
    pub fn cluster(&self) -> anyhow::Result<ClusterFile> {
        Ok(ClusterFile::read(&self.cluster_file)?)
    }

    /// Where the cluster file is.
    pub fn cluster_file(&self) -> &std::path::Path {
        &self.cluster_file
    }

    /// A new client of this cluster, in this process: it talks to the
    /// scheduler over channels, not over a QUIC connection to itself.
    /// Must not be called from inside an async runtime.
    pub fn client(&self) -> anyhow::Result<Client> {
        let scheduler = self
            .scheduler
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the local cluster was stopped"))?;
        Ok(scheduler.local_client()?)
    }

    /// A new client of this cluster over the network, as a client on
    /// another host would connect (address, certificate and secret from
    /// the cluster file).
    pub fn network_client(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(
            &self.cluster()?,
            &TransportTuning::default(),
        )?)
    }

    /// Process ids of the workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Stops the scheduler (which tells workers to exit), then the workers.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if let Some(s) = self.scheduler.take() {
            s.stop();
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(WORKER_POLL);
            }
            if !matches!(c.try_wait(), Ok(Some(_))) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
