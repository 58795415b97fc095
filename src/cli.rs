//! Command-line pieces shared by the `anncat` binary and custom worker
//! binaries: the `worker` and `scheduler` options and how they become the
//! libraries' configurations.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anncat_core::concat::parse_size;
use anncat_core::kernel::KernelRegistry;
use anncat_core::protocol::ClusterFile;
use anncat_scheduler::{SchedulerHandle, ServerConfig};
use anncat_worker::{WorkerConfig, run_worker};

/// `worker` options.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The cluster file the scheduler wrote.
    #[arg(long)]
    pub cluster_file: PathBuf,
    /// Memory limit of this worker process, e.g. 2GiB.
    #[arg(long)]
    pub memory_limit: String,
    /// Threads running tasks.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// A directory tasks may write under (repeatable; nothing else is writable).
    #[arg(long)]
    pub allow_write: Vec<PathBuf>,
    /// Address to listen on for peers (default: loopback, any port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address peers dial (needed when --listen is 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<IpAddr>,
    /// Name in reports (default: address/pid).
    #[arg(long)]
    pub name: Option<String>,
}

impl WorkerArgs {
    /// The worker library configuration.
    pub fn into_config(self) -> anyhow::Result<WorkerConfig> {
        let cluster = ClusterFile::read(&self.cluster_file)?;
        let mut config = WorkerConfig::new(cluster, parse_size(&self.memory_limit)?);
        config.threads = self.threads;
        config.allow_write = self.allow_write;
        config.listen = self.listen;
        config.advertise = self.advertise;
        config.name = self.name;
        config.validate()?;
        Ok(config)
    }

    /// Runs a worker with `kernels` until the scheduler stops it.
    pub fn run(self, kernels: KernelRegistry) -> anyhow::Result<()> {
        Ok(run_worker(self.into_config()?, kernels)?)
    }
}

#[derive(Debug, clap::Parser)]
#[command(name = "worker")]
struct WorkerCommand {
    #[command(flatten)]
    args: WorkerArgs,
}

/// The `main` of a custom worker binary: parses worker options from `args`
/// (the first item is the command name, e.g. `worker`) and runs a worker
/// with `kernels`. [`crate::LocalCluster`] starts workers this way.
pub fn worker_main<I, T>(args: I, kernels: KernelRegistry) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::Parser as _;
    let cmd = WorkerCommand::try_parse_from(args).map_err(|e| anyhow::anyhow!("{e}"))?;
    cmd.args.run(kernels)
}

/// `scheduler` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on (default: loopback; 0.0.0.0 only if asked).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Address written in the cluster file (needed when --listen is 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<IpAddr>,
    /// Where to write the cluster file (address, certificate, secret; mode 0600).
    #[arg(long)]
    pub cluster_file: PathBuf,
}

impl SchedulerArgs {
    /// The scheduler library configuration.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let config = ServerConfig {
            listen: self.listen,
            advertise: self.advertise,
            cluster_file: Some(self.cluster_file),
            ..ServerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Runs a scheduler until the process is stopped.
    pub fn run(self) -> anyhow::Result<()> {
        let path = self.cluster_file.clone();
        let handle = SchedulerHandle::start(self.into_config()?)?;
        eprintln!(
            "anncat scheduler: listening on {}; cluster file {}",
            handle.cluster().address,
            path.display()
        );
        handle.join();
        Ok(())
    }
}
