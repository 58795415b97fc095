//! The `anncat` command line: inspect, convert, concat, and the cluster
//! roles (scheduler, worker).

use std::io::IsTerminal;
use std::process::ExitCode;

use anncat::args::{Cli, Command, ParseError, mib_to_bytes};
use anncat::run_concat;
use anncat_core::anndata::ZarrFormat;
use anncat_core::convert::{ConvertOptions, convert};
use anncat_core::executor::Progress;
use anncat_core::inspect::{inspect, render_text};

// Workers measure their tasks' allocations exactly.
#[global_allocator]
static ALLOCATOR: anncat_worker::CountingAllocator = anncat_worker::CountingAllocator;

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
            let format = match summary.zarr_format {
                0 => "h5ad".to_string(),
                n => format!("zarr v{n}"),
            };
            eprintln!(
                "anncat: wrote {} ({format}): {} groups, {} arrays ({} copied verbatim), {} chunks encoded",
                output.display(),
                summary.groups,
                summary.arrays,
                summary.arrays_copied_verbatim,
                summary.chunks_written
            );
        }
        Command::Scheduler(args) => args.run()?,
        Command::Keygen(args) => args.run()?,
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
    let cli = match anncat::args::parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(ParseError::Config(e)) => {
            eprintln!("anncat: error: {e}");
            return ExitCode::from(2);
        }
        Err(ParseError::Clap(e)) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Clap(e)) => {
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
