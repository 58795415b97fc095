//! The `anncat` command line: inspect, convert (and, as they land, concat and
//! the cluster roles).

use std::path::PathBuf;
use std::process::ExitCode;

use anncat_core::anndata::ZarrFormat;
use anncat_core::convert::{ConvertOptions, convert};
use anncat_core::inspect::{inspect, render_text};
use clap::{Parser, Subcommand};

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
    }
    Ok(())
}

fn main() -> ExitCode {
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
