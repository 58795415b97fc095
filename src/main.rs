//! The `anncat` command line: inspect, convert, concat, and the cluster
//! roles (scheduler, worker).

use std::io::IsTerminal;
use std::process::ExitCode;

use anncat::args::{Cli, Command, ParseError, mib_to_bytes};
use anncat::progress::{ProgressDisplay, ProgressMode};
use anncat::run_concat;
use anncat_core::anndata::ZarrFormat;
use anncat_core::convert::{ConvertOptions, convert};
use anncat_core::executor::Progress;
use anncat_core::inspect::{inspect, render_text};

// Workers measure their tasks' allocations exactly.
#[global_allocator]
static ALLOCATOR: anncat_worker::CountingAllocator = anncat_worker::CountingAllocator;

/// Writes `text` to stdout; a reader that closed the pipe early (`| head`)
/// ends the output quietly, as for any Unix tool.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { store, json } => {
            let ins = inspect(&store)?;
            let text = if json {
                serde_json::to_string_pretty(&ins)? + "\n"
            } else {
                render_text(&ins)
            };
            write_stdout(&text)?;
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
            anncat_core::concat::matrix::keep_codecs_within(args.threads);
            args.run(anncat_core::concat::matrix::kernels())?;
        }
        Command::Concat(args) => {
            let (opts, run, quiet) = (*args).into_options()?;
            let mode = if quiet {
                ProgressMode::Off
            } else if std::io::stderr().is_terminal() {
                ProgressMode::Redraw
            } else {
                // ANNCAT_PROGRESS_INTERVAL_S: for tests, which cannot wait 30 s.
                let interval_s = std::env::var("ANNCAT_PROGRESS_INTERVAL_S")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30.0);
                ProgressMode::Log { interval_s }
            };
            let display = ProgressDisplay::new(mode);
            let progress = |p: &Progress| display.update(p);
            let summary = run_concat(&opts, &run, &progress)?;
            display.finish();
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
    anncat_worker::governor::one_malloc_arena_per_core();
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
        Err(ParseError::Clap { error: e, .. }) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(ParseError::Clap { error: e, .. })
            if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            // Bare `anncat` (or a subcommand-less call): the usage.
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(ParseError::Clap { error: e, source }) => {
            let from = source.map(|s| format!(" (from {s})")).unwrap_or_default();
            eprintln!(
                "anncat: error: invalid option: {}{from}",
                one_line_usage_error(&e)
            );
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

/// A clap usage error on one line, like every other anncat error, keeping
/// what helps: the message, the missing arguments' names, clap's "did you
/// mean" tip; the usage block and the `--help` hint become one pointer.
fn one_line_usage_error(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    let message = if parts.is_empty() {
        "invalid arguments".to_string()
    } else {
        parts.join("; ")
    };
    format!("{message} (see anncat --help)")
}
