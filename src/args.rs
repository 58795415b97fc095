//! The `anncat` command line as data: the subcommands and their options
//! (parsed by clap, with `ANNCAT_*` environment variables and a config
//! file, see [`crate::config`]), and how `concat`'s options become the
//! library's.

use std::path::PathBuf;

use anncat_core::anndata::ZarrFormat;
use anncat_core::concat::index::Join;
use anncat_core::concat::plan::Axis;
use anncat_core::concat::values::Scalar;
use anncat_core::concat::{ConcatOptions, Merge, Sharding, parse_size};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cli::{KeygenArgs, SchedulerArgs, WorkerArgs};
use crate::{ClusterChoice, LocalClusterConfig, RunOptions};

/// The command line definition, with an environment variable per option.
pub fn command() -> clap::Command {
    crate::config::apply(Cli::command(), None).unwrap_or_else(|_| Cli::command())
}

/// Parses `args` (the first item is the program name), taking options from
/// the environment and from the config file `--config` or `ANNCAT_CONFIG`
/// names. A config file error comes back as a one-line message.
pub fn parse<I, T>(args: I) -> Result<Cli, ParseError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let config = crate::config::config_path(&args);
    let cmd =
        crate::config::apply(Cli::command(), config.as_deref()).map_err(ParseError::Config)?;
    let clap_error = |error: clap::Error| ParseError::Clap {
        source: value_source(&error, &args, config.as_deref()),
        error,
    };
    let matches = cmd.try_get_matches_from(args.clone()).map_err(clap_error)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(clap_error)?;
    // clap checks conflicts on given values only, not on defaults, which is
    // what config-file values are: a config file's cluster-file must yield
    // to --workers given on the command line or in the environment.
    if let (Command::Concat(concat), Some(m)) =
        (&mut cli.command, matches.subcommand_matches("concat"))
    {
        let from_file =
            m.value_source("cluster_file") == Some(clap::parser::ValueSource::DefaultValue);
        let workers_given = matches!(
            m.value_source("workers"),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        );
        if from_file && workers_given {
            concat.cluster_file = None;
        }
    }
    Ok(cli)
}

/// Where a value clap refused came from, when not from the command line:
/// "the environment variable ANNCAT_JOIN" or "the config file FILE".
fn value_source(
    error: &clap::Error,
    args: &[std::ffi::OsString],
    config: Option<&std::path::Path>,
) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let ContextValue::String(arg) = error.get(ContextKind::InvalidArg)? else {
        return None;
    };
    // "--join <JOIN>"
    let long = arg
        .strip_prefix("--")?
        .split([' ', '='])
        .next()?
        .to_string();
    let flag = format!("--{long}");
    let on_command_line = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if on_command_line {
        return None;
    }
    let env = crate::config::env_name(&long);
    if std::env::var_os(&env).is_some() {
        return Some(format!("the environment variable {env}"));
    }
    let config = config
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os(crate::config::CONFIG_ENV).map(PathBuf::from))?;
    Some(format!("the config file {}", config.display()))
}

/// Why the command line was not accepted.
#[derive(Debug)]
pub enum ParseError {
    /// clap's error (including `--help` and `--version`, which are not failures).
    Clap {
        /// clap's error.
        error: clap::Error,
        /// Where a refused value came from, when not from the command line.
        source: Option<String>,
    },
    /// The config file.
    Config(crate::config::ConfigError),
}

/// Concatenate AnnData stores (zarr or .h5ad) out of core.
#[derive(Debug, Parser)]
#[command(name = "anncat", version, about)]
pub struct Cli {
    /// A TOML file of options, one table per subcommand (also ANNCAT_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
/// The subcommands.
pub enum Command {
    /// Print the element tree of a store (zarr or .h5ad): encoding, shape, dtype, chunking,
    /// stored size.
    Inspect {
        /// The AnnData store: a zarr directory or an .h5ad file.
        store: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a store as zarr v2, zarr v3 (new chunking too) or .h5ad.
    Convert {
        /// The input AnnData store (zarr or .h5ad).
        input: PathBuf,
        /// The output: a .zarr store, or a .h5ad file (written as OUTPUT.partial, renamed when complete).
        #[arg(short, long)]
        output: PathBuf,
        /// Output zarr format (default: the input's).
        #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
        zarr_format: Option<u8>,
        /// Target chunk size in MiB (default: keep each array's chunks).
        #[arg(long, allow_negative_numbers = true)]
        chunk_mib: Option<f64>,
        /// Target shard size in MiB (zarr v3 output only).
        #[arg(long, allow_negative_numbers = true)]
        shard_mib: Option<f64>,
        /// Replace the output if it exists.
        #[arg(long)]
        overwrite: bool,
    },
    /// Concatenate AnnData stores with the semantics of anndata.concat.
    Concat(Box<ConcatArgs>),
    /// Run a scheduler that workers and clients connect to.
    Scheduler(SchedulerArgs),
    /// Run a worker of a cluster.
    Worker(WorkerArgs),
    /// Make a cluster identity ahead of time (cluster file and scheduler
    /// key), for `scheduler --key-file`.
    Keygen(KeygenArgs),
}

/// `anncat concat` options, named like anndata.concat's arguments.
#[derive(Debug, clap::Args)]
pub struct ConcatArgs {
    /// Input stores (zarr directories or .h5ad files), in order; write KEY=PATH to give
    /// each its key.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// The output: NAME.zarr, or NAME.h5ad (staged as zarr, then written as one HDF5 file);
    /// written as OUTPUT.partial and renamed when complete.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Axis to concatenate along: obs (0) or var (1).
    #[arg(long, default_value = "obs", value_parser = ["obs", "var", "0", "1"])]
    pub axis: String,
    /// Join of the other axis: inner or outer.
    #[arg(long, default_value = "inner", value_parser = ["inner", "outer"])]
    pub join: String,
    /// How to merge the other axis' annotations: same, unique, first or only.
    #[arg(long, value_parser = ["same", "unique", "first", "only"])]
    pub merge: Option<String>,
    /// How to merge uns: same, unique, first or only.
    #[arg(long, value_parser = ["same", "unique", "first", "only"])]
    pub uns_merge: Option<String>,
    /// Add a column with this name recording each entry's input key.
    #[arg(long)]
    pub label: Option<String>,
    /// Comma-separated keys, one per input (default 0,1,...).
    #[arg(long, value_delimiter = ',')]
    pub keys: Option<Vec<String>>,
    /// Make names unique by appending this separator and the input's key.
    #[arg(long)]
    pub index_unique: Option<String>,
    /// Value for missing entries (default: NaN for dense, 0 for sparse).
    #[arg(long, allow_negative_numbers = true)]
    pub fill_value: Option<String>,
    /// Concatenate the pairwise ({axis}p) elements block-diagonally.
    #[arg(long)]
    pub pairwise: bool,
    /// Sparse format of X, layers and raw/X: csr (as anndata.concat) or csc
    /// (no transposing of CSC inputs stacked along var; inputs must be sparse).
    #[arg(long, default_value = "csr", value_parser = ["csr", "csc"])]
    pub sparse_format: String,
    /// Output zarr format (default: the first input's).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub zarr_format: Option<u8>,
    /// Memory limit of each worker process, e.g. 512MiB (with --workers 0:
    /// the budget of the tasks running at once). Default 1GiB; with
    /// --cluster-file, the smallest limit of the cluster's workers.
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Local worker processes to start (default: number of cores; 0 runs
    /// the tasks on threads of this process).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Threads per worker (default 1; with --workers 0, number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Submit to a running cluster (its scheduler's cluster file) instead of
    /// starting local workers.
    #[arg(long, conflicts_with = "workers")]
    pub cluster_file: Option<PathBuf>,
    /// Continue an interrupted run from OUTPUT.partial, redoing only unfinished tasks.
    #[arg(long)]
    pub resume: bool,
    /// Write a run report (JSON per task and worker, and a timeline beside it as SVG and PNG).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Target output chunk size in MiB (default: from the memory limit).
    #[arg(long, allow_negative_numbers = true)]
    pub chunk_mib: Option<f64>,
    /// Zarr v3 output: target shard size in MiB, 0 for no sharding (default:
    /// sharded as anndata 0.13 writes, one shard per write task).
    #[arg(long, allow_negative_numbers = true)]
    pub shard_mib: Option<f64>,
    /// Replace the output if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl ConcatArgs {
    /// Converts the command line into the library's options.
    pub fn into_options(self) -> anyhow::Result<(ConcatOptions, RunOptions, bool)> {
        let mut paths = Vec::new();
        let mut inline_keys = Vec::new();
        for input in &self.inputs {
            match input.split_once('=') {
                Some((key, path)) if !std::path::Path::new(input).exists() => {
                    inline_keys.push(key.to_string());
                    paths.push(PathBuf::from(path));
                }
                _ => paths.push(PathBuf::from(input)),
            }
        }
        let keys = match (inline_keys.is_empty(), self.keys) {
            (true, keys) => keys,
            (false, None) if inline_keys.len() == paths.len() => Some(inline_keys),
            (false, None) => {
                anyhow::bail!("invalid option: give KEY=PATH for every input or for none")
            }
            (false, Some(_)) => {
                anyhow::bail!("invalid option: --keys and KEY=PATH inputs cannot be combined")
            }
        };
        let axis = match self.axis.as_str() {
            "obs" | "0" => Axis::Obs,
            "var" | "1" => Axis::Var,
            other => {
                anyhow::bail!("invalid option: --axis must be obs, var, 0 or 1, not {other:?}")
            }
        };
        let join = match self.join.as_str() {
            "inner" => Join::Inner,
            "outer" => Join::Outer,
            other => anyhow::bail!("invalid option: --join must be inner or outer, not {other:?}"),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = self.workers.unwrap_or(cores);
        let in_process = self.cluster_file.is_none() && workers == 0;
        let threads = self.threads.unwrap_or(if in_process { cores } else { 1 });
        if threads == 0 {
            anyhow::bail!("invalid option: --threads must be at least 1");
        }
        let mut opts = ConcatOptions::new(paths, self.output);
        opts.keys = keys;
        opts.axis = axis;
        opts.join = join;
        opts.merge = self.merge.as_deref().map(Merge::parse).transpose()?;
        opts.uns_merge = self.uns_merge.as_deref().map(Merge::parse).transpose()?;
        opts.label = self.label;
        opts.index_unique = self.index_unique;
        opts.fill_value = self.fill_value.as_deref().map(Scalar::parse).transpose()?;
        opts.pairwise = self.pairwise;
        opts.csc_output = match self.sparse_format.as_str() {
            "csr" => false,
            "csc" => true,
            other => {
                anyhow::bail!("invalid option: --sparse-format must be csr or csc, not {other:?}")
            }
        };
        opts.zarr_format = self.zarr_format.map(ZarrFormat::from_number).transpose()?;
        opts.memory_limit = parse_size(self.memory_limit.as_deref().unwrap_or("1GiB"))?;
        opts.threads = threads;
        opts.chunk_bytes = mib_to_bytes("chunk-mib", self.chunk_mib)?;
        opts.sharding = match self.shard_mib {
            None => Sharding::Auto,
            Some(0.0) => Sharding::Off,
            mib => Sharding::Bytes(mib_to_bytes("shard-mib", mib)?.unwrap_or(0)),
        };
        opts.overwrite = self.overwrite;
        opts.resume = self.resume;
        opts.validate()?;
        let cluster = match self.cluster_file {
            Some(path) => ClusterChoice::Remote(path),
            None if in_process => ClusterChoice::InProcess,
            None => ClusterChoice::Local(LocalClusterConfig {
                workers,
                memory_limit: opts.memory_limit,
                threads,
                ..LocalClusterConfig::default()
            }),
        };
        let run = RunOptions {
            fit_cluster_budgets: matches!(cluster, ClusterChoice::Remote(_))
                && self.memory_limit.is_none(),
            cluster,
            report: self.report,
        };
        Ok((opts, run, self.quiet))
    }
}

/// Bytes of a `--*-mib` option (positive MiB).
pub fn mib_to_bytes(flag: &str, mib: Option<f64>) -> anyhow::Result<Option<u64>> {
    match mib {
        None => Ok(None),
        Some(m) if m.is_finite() && m > 0.0 => Ok(Some((m * 1024.0 * 1024.0).ceil() as u64)),
        Some(m) => {
            anyhow::bail!("invalid option: --{flag} must be a positive number of MiB, not {m}")
        }
    }
}
