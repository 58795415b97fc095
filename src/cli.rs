//! Command-line pieces shared by the `anncat` binary and custom worker
//! binaries: the `worker` and `scheduler` options and how they become the
//! libraries' configurations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anncat_core::concat::parse_size;
use anncat_core::kernel::KernelRegistry;
use anncat_net::ClusterFile;
use anncat_net::Identity;
use anncat_net::tls::certificate_names;
use anncat_scheduler::{SchedulerHandle, ServerConfig, check_host_name, new_secret};
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
    /// Host name or IP address peers dial (needed when --listen is 0.0.0.0).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Name in reports (default: address/pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to keep dialling a scheduler that cannot be reached (at
    /// start or after losing it) before exiting; 0: exit when it is lost.
    #[arg(long, default_value_t = 30)]
    pub reconnect_timeout: u64,
    /// Seconds to keep dialling the scheduler before first joining it
    /// (default: --reconnect-timeout). A busy scheduler that many workers
    /// dial at once may time some handshakes out.
    #[arg(long)]
    pub join_timeout: Option<u64>,
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
        config.reconnect_timeout = Duration::from_secs(self.reconnect_timeout);
        config.join_timeout = self.join_timeout.map(Duration::from_secs);
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
    /// Host name or IP address workers and clients dial (repeatable; the
    /// certificate names each, the first goes into the cluster file).
    /// Needed when --listen is 0.0.0.0.
    #[arg(long)]
    pub advertise: Vec<String>,
    /// The cluster file: written here (address, certificate, secret; mode
    /// 0600), or read from here with --key-file.
    #[arg(long)]
    pub cluster_file: PathBuf,
    /// Serve a pre-made identity (from `anncat keygen`): read the
    /// certificate and secret from --cluster-file and the private key from
    /// this file instead of making new ones.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

impl SchedulerArgs {
    /// The scheduler library configuration.
    pub fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut listen = self.listen;
        let identity = match &self.key_file {
            Some(key_file) => {
                let cluster = ClusterFile::read(&self.cluster_file)?;
                // The address and names come from keygen: listen where the
                // cluster file says workers and clients dial.
                if !self.advertise.is_empty() {
                    anyhow::bail!(
                        "invalid option: --advertise cannot be combined with --key-file (the names are in the certificate keygen made)"
                    );
                }
                let (host, port) = anncat_net::cluster_file::split_host_port(&cluster.address)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: address {:?} is not HOST:PORT",
                            self.cluster_file.display(),
                            cluster.address
                        )
                    })?;
                match listen.port() {
                    0 => listen.set_port(port),
                    p if p != port => anyhow::bail!(
                        "invalid option: --listen port {p} differs from the cluster file's address {}",
                        cluster.address
                    ),
                    _ => {}
                }
                let host_is_local = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if listen.ip().is_loopback() && !host_is_local {
                    anyhow::bail!(
                        "invalid option: listening on {} but workers dial {}: give --listen 0.0.0.0:{port} (or that host's address)",
                        listen.ip(),
                        cluster.address
                    );
                }
                let key = std::fs::read_to_string(key_file).map_err(|e| {
                    anyhow::anyhow!("{}: cannot read key file: {e}", key_file.display())
                })?;
                Identity::from_pem(&cluster.certificate, &key).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: does not fit the certificate of {}: {e}",
                        key_file.display(),
                        self.cluster_file.display()
                    )
                })?;
                Some((cluster, key))
            }
            None => None,
        };
        let config = ServerConfig {
            listen,
            advertise: self.advertise,
            cluster_file: identity.is_none().then_some(self.cluster_file),
            identity,
            ..ServerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// Runs a scheduler until SIGTERM or SIGINT, then tells its workers to
    /// shut down (they exit cleanly) and stops.
    pub fn run(self) -> anyhow::Result<()> {
        let path = self.cluster_file.clone();
        let handle = SchedulerHandle::start(self.into_config()?)?;
        eprintln!(
            "anncat scheduler: listening on {}; cluster file {}",
            handle.cluster().address,
            path.display()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok::<_, std::io::Error>(())
        })?;
        eprintln!("anncat scheduler: stopping; workers are told to shut down");
        handle.stop();
        Ok(())
    }
}

/// `keygen` options: a cluster identity made ahead of time, for clusters
/// that hand it to the scheduler (a Kubernetes Secret, say).
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// HOST:PORT workers and clients will dial (HOST: a name or IP address).
    #[arg(long)]
    pub address: String,
    /// More names for the certificate (repeatable), e.g. a service's
    /// fully qualified name.
    #[arg(long)]
    pub name: Vec<String>,
    /// Where to write the cluster file (mode 0600).
    #[arg(long)]
    pub cluster_file: PathBuf,
    /// Where to write the scheduler's private key (PEM, mode 0600).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Replace an existing cluster file and key.
    #[arg(long)]
    pub overwrite: bool,
}

impl KeygenArgs {
    /// Writes the cluster file and the key.
    pub fn run(self) -> anyhow::Result<()> {
        let (host, _) =
            anncat_net::cluster_file::split_host_port(&self.address).ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid option: --address {:?} is not HOST:PORT",
                    self.address
                )
            })?;
        check_host_name(host)?;
        for path in [&self.cluster_file, &self.key_file] {
            if path.exists() && !self.overwrite {
                anyhow::bail!(
                    "{}: exists; give --overwrite to replace it (workers and clients holding the old cluster file will be refused)",
                    path.display()
                );
            }
        }
        for n in &self.name {
            check_host_name(n)?;
        }
        let names = match host.parse() {
            Ok(ip) => certificate_names(ip, &self.name),
            Err(_) => std::iter::once(host.to_string())
                .chain(self.name.iter().cloned())
                .collect(),
        };
        let identity = Identity::generate(&names)?;
        let cluster = ClusterFile {
            address: self.address.clone(),
            certificate: identity.certificate_pem(),
            secret: new_secret()?,
        };
        anncat_net::cluster_file::write_private(&self.key_file, identity.key_pem().as_bytes())
            .map_err(|e| {
                anyhow::anyhow!("{}: cannot write key file: {e}", self.key_file.display())
            })?;
        cluster.write(&self.cluster_file)?;
        eprintln!(
            "anncat keygen: cluster file {} (address {}, certificate for {}), key {}",
            self.cluster_file.display(),
            cluster.address,
            names.join(", "),
            self.key_file.display()
        );
        Ok(())
    }
}
