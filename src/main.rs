//! The `anncat` command line: inspect, convert, concat, and the cluster
//! roles (scheduler, worker).

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use anncat::cli::{SchedulerArgs, WorkerArgs};
use anncat::{ClusterChoice, LocalClusterConfig, RunOptions, run_concat};
use anncat_core::anndata::ZarrFormat;
use anncat_core::concat::index::Join;
use anncat_core::concat::plan::Axis;
use anncat_core::concat::values::Scalar;
use anncat_core::concat::{ConcatOptions, Merge, parse_size};
use anncat_core::convert::{ConvertOptions, convert};
use anncat_core::executor::Progress;
use anncat_core::inspect::{inspect, render_text};
use clap::{Parser, Subcommand};

// Workers measure their tasks' allocations exactly.
#[global_allocator]
static ALLOCATOR: anncat_worker::CountingAllocator = anncat_worker::CountingAllocator;

/// Concatenate AnnData zarr stores out of core.
#[derive(Debug, Parser)]
#[command(name = "anncat", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the element tree of a store: encoding, shape, dtype, chunking, stored size.
    Inspect {
        /// The AnnData zarr store.
        store: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite a store in the other zarr format and/or with new chunking.
    Convert {
        /// The input AnnData zarr store.
        input: PathBuf,
        /// The output store (written as OUTPUT.partial, renamed when complete).
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
}

/// `anncat concat` options, named like anndata.concat's arguments.
#[derive(Debug, clap::Args)]
struct ConcatArgs {
    /// Input stores, in order; write KEY=PATH to give each its key.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// The output store (written as OUTPUT.partial, renamed when complete).
    #[arg(short, long)]
    output: PathBuf,
    /// Axis to concatenate along: obs (0) or var (1).
    #[arg(long, default_value = "obs")]
    axis: String,
    /// Join of the other axis: inner or outer.
    #[arg(long, default_value = "inner")]
    join: String,
    /// How to merge the other axis' annotations: same, unique, first or only.
    #[arg(long)]
    merge: Option<String>,
    /// How to merge uns: same, unique, first or only.
    #[arg(long)]
    uns_merge: Option<String>,
    /// Add a column with this name recording each entry's input key.
    #[arg(long)]
    label: Option<String>,
    /// Comma-separated keys, one per input (default 0,1,...).
    #[arg(long, value_delimiter = ',')]
    keys: Option<Vec<String>>,
    /// Make names unique by appending this separator and the input's key.
    #[arg(long)]
    index_unique: Option<String>,
    /// Value for missing entries (default: NaN for dense, 0 for sparse).
    #[arg(long, allow_negative_numbers = true)]
    fill_value: Option<String>,
    /// Concatenate the pairwise ({axis}p) elements block-diagonally.
    #[arg(long)]
    pairwise: bool,
    /// Output zarr format (default: the first input's).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=3))]
    zarr_format: Option<u8>,
    /// Memory limit of each worker process, e.g. 512MiB (with --workers 0:
    /// the budget of the tasks running at once).
    #[arg(long, default_value = "1GiB")]
    memory_limit: String,
    /// Local worker processes to start (default: number of cores; 0 runs
    /// the tasks on threads of this process).
    #[arg(long)]
    workers: Option<usize>,
    /// Threads per worker (default 1; with --workers 0, number of cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Submit to a running cluster (its scheduler's cluster file) instead of
    /// starting local workers.
    #[arg(long, conflicts_with = "workers")]
    cluster_file: Option<PathBuf>,
    /// Continue an interrupted run from OUTPUT.partial, redoing only unfinished tasks.
    #[arg(long)]
    resume: bool,
    /// Write a run report (JSON per task and worker, and an SVG timeline beside it).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Target output chunk size in MiB (default: from the memory limit).
    #[arg(long, allow_negative_numbers = true)]
    chunk_mib: Option<f64>,
    /// Replace the output if it exists.
    #[arg(long)]
    overwrite: bool,
    /// No progress on stderr.
    #[arg(long, short)]
    quiet: bool,
}

impl ConcatArgs {
    /// Converts the command line into the library's options.
    fn into_options(self) -> anyhow::Result<(ConcatOptions, RunOptions, bool)> {
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
        opts.zarr_format = self.zarr_format.map(ZarrFormat::from_number).transpose()?;
        opts.memory_limit = parse_size(&self.memory_limit)?;
        opts.threads = threads;
        opts.chunk_bytes = mib_to_bytes("chunk-mib", self.chunk_mib)?;
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
            cluster,
            report: self.report,
        };
        Ok((opts, run, self.quiet))
    }
}

/// Draws task progress on one stderr line.
fn draw_progress(p: &Progress) {
    let rate = p.done as f64 / p.elapsed_s.max(1e-3);
    let eta = (p.total - p.done) as f64 / rate.max(1e-9);
    let mib = p.bytes_written as f64 / (1024.0 * 1024.0);
    eprint!(
        "\ranncat: {}/{} tasks ({:.0}%), {:.1} MiB written ({:.1} MiB/s), {:.1}s elapsed, ETA {:.1}s   ",
        p.done,
        p.total,
        100.0 * p.done as f64 / p.total.max(1) as f64,
        mib,
        mib / p.elapsed_s.max(1e-3),
        p.elapsed_s,
        eta
    );
}

fn mib_to_bytes(flag: &str, mib: Option<f64>) -> anyhow::Result<Option<u64>> {
    match mib {
        None => Ok(None),
        Some(m) if m.is_finite() && m > 0.0 => Ok(Some((m * 1024.0 * 1024.0).ceil() as u64)),
        Some(m) => {
            anyhow::bail!("invalid option: --{flag} must be a positive number of MiB, not {m}")
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { store, json } => {
            let ins = inspect(&store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&ins)?);
            } else {
                print!("{}", render_text(&ins));
            }
        }
        Command::Convert {
            input,
            output,
            zarr_format,
            chunk_mib,
            shard_mib,
            overwrite,
        } => {
            let opts = ConvertOptions {
                zarr_format: zarr_format.map(ZarrFormat::from_number).transpose()?,
                chunk_bytes: mib_to_bytes("chunk-mib", chunk_mib)?,
                shard_bytes: mib_to_bytes("shard-mib", shard_mib)?,
                overwrite,
            };
            let summary = convert(&input, &output, &opts)?;
            eprintln!(
                "anncat: wrote {} (zarr v{}): {} groups, {} arrays ({} copied verbatim), {} chunks encoded",
                output.display(),
                summary.zarr_format,
                summary.groups,
                summary.arrays,
                summary.arrays_copied_verbatim,
                summary.chunks_written
            );
        }
        Command::Scheduler(args) => args.run()?,
        Command::Worker(args) => {
            args.run(anncat_core::concat::matrix::kernels())?;
        }
        Command::Concat(args) => {
            let (opts, run, quiet) = (*args).into_options()?;
            let show = !quiet && std::io::stderr().is_terminal();
            let progress = |p: &Progress| {
                if show {
                    draw_progress(p);
                }
            };
            let summary = run_concat(&opts, &run, &progress)?;
            if show {
                eprintln!();
            }
            if !quiet {
                eprintln!(
                    "anncat: wrote {} ({} obs x {} vars; {} tasks; matrices: {})",
                    summary.output.display(),
                    summary.shape[0],
                    summary.shape[1],
                    summary.tasks,
                    summary.matrices.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    anncat_worker::governor::mark_installed();
    // Panics in task threads become task errors (reported once, on one
    // line, by the executor); a panic on the main thread is reported here.
    std::panic::set_hook(Box::new(|info| {
        if std::thread::current().name() == Some("main") {
            eprintln!(
                "anncat: internal error: {}",
                info.to_string().replace('\n', " ")
            );
        }
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, like every other anncat error.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("anncat: error: invalid option: {first} (see anncat --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anncat: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
