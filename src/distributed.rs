//! `anncat concat` on a cluster: plan (or pick up an interrupted run),
//! start a local cluster or connect to a running one, submit the graph,
//! journal every finished task into `OUT.partial` as it completes, and
//! finish the output. When the scheduler is lost mid-run the partial output
//! stays, and `--resume` continues it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anncat_core::concat::{ConcatOptions, ConcatSummary, concat, prepare_concat};
use anncat_core::executor::Progress;
use anncat_core::graph::TaskId;
use anncat_core::protocol::{ClusterFile, Want};
use anncat_net::TransportTuning;
use anncat_scheduler::{Client, SchedulerError};

use crate::cluster::{LocalCluster, LocalClusterConfig};
use crate::report::{ReportBuilder, write_report};

/// Where a concatenation runs.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    /// Threads of this process (no scheduler, no workers).
    InProcess,
    /// A local cluster started for the run and stopped after it.
    Local(LocalClusterConfig),
    /// A running cluster, given by its cluster file.
    Remote(PathBuf),
}

/// How to run a concatenation.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where it runs.
    pub cluster: ClusterChoice,
    /// Write a run report (JSON, and an SVG timeline beside it) here.
    pub report: Option<PathBuf>,
}

/// Runs `opts` as `run` says.
pub fn run_concat(
    opts: &ConcatOptions,
    run: &RunOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> anyhow::Result<ConcatSummary> {
    let local_config = match &run.cluster {
        ClusterChoice::InProcess => {
            anyhow::ensure!(
                run.report.is_none(),
                "invalid option: --report needs a cluster (not --workers 0)"
            );
            return Ok(concat(opts, progress)?);
        }
        ClusterChoice::Local(c) => {
            c.validate()?;
            Some(c.clone())
        }
        ClusterChoice::Remote(_) => None,
    };
    let cluster_file = match &run.cluster {
        ClusterChoice::Remote(path) => Some(ClusterFile::read(path)?),
        _ => None,
    };
    let prepared = prepare_concat(opts)?;
    let resumed = !prepared.finished_before().is_empty();
    let mut report = ReportBuilder::new();
    let mut keep_partial = resumed;
    let result = (|| -> anyhow::Result<()> {
        let mut _local = None;
        let mut client = match (local_config, cluster_file) {
            (Some(mut config), _) => {
                let root = prepared
                    .partial_path()
                    .parent()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."));
                config.allow_write = vec![root];
                let cluster = LocalCluster::start(config)?;
                let client = cluster.client()?;
                _local = Some(cluster);
                client
            }
            (None, Some(file)) => Client::connect(&file, &TransportTuning::default())?,
            (None, None) => unreachable!("in-process runs returned above"),
        };
        let graph = prepared.remaining();
        let labels: HashMap<TaskId, (String, String, u64)> = graph
            .tasks()
            .iter()
            .map(|t| (t.id, (t.label.clone(), t.kernel.clone(), t.memory_bytes)))
            .collect();
        let work_total: u64 = graph.tasks().iter().map(|t| t.memory_bytes).sum();
        let mut work_done = 0u64;
        let mut journal = prepared.journal()?;
        let cpu_before = crate::report::process_cpu_seconds();
        let job = client.submit("concat", &graph, Want::All)?;
        let total = graph.len();
        let started = Instant::now();
        let mut last_sync = Instant::now();
        let (mut done, mut written) = (0usize, 0u64);
        let mut journal_error = None;
        let waited = client.wait(job, &mut |d| {
            done += 1;
            written += d.stats.written_bytes;
            if journal_error.is_none() {
                let recorded = journal.record(d.task, d.output.as_deref().unwrap_or(&[]));
                let synced = if last_sync.elapsed() > Duration::from_millis(200) {
                    last_sync = Instant::now();
                    journal.sync()
                } else {
                    Ok(())
                };
                journal_error = recorded.and(synced).err();
            }
            let (label, kernel, work) = labels.get(&d.task).cloned().unwrap_or_default();
            work_done += work;
            report.task(d, &label, &kernel);
            progress(&Progress {
                done,
                total,
                label,
                elapsed_s: started.elapsed().as_secs_f64(),
                bytes_written: written,
                work_done,
                work_total,
            });
        });
        journal.sync()?;
        report.coordinator_cpu(crate::report::process_cpu_seconds() - cpu_before);
        let result = match waited {
            Ok(r) => {
                report.workers(r.workers);
                Ok(())
            }
            Err(SchedulerError::Lost(why)) => {
                keep_partial = true;
                Err(anyhow::anyhow!(
                    "lost the connection to the scheduler ({why}); {} kept: rerun with --resume to continue",
                    prepared.partial_path().display()
                ))
            }
            Err(e) => {
                // Every finished task is journaled: whatever stopped the run
                // (a task failing, workers lost, the memory limit), a resume
                // continues from there, with new resources if need be.
                keep_partial = true;
                Err(anyhow::anyhow!(
                    "{e}; {} kept: rerun with --resume to continue",
                    prepared.partial_path().display()
                ))
            }
        };
        if let Some(e) = journal_error {
            keep_partial = true;
            return Err(anyhow::anyhow!(
                "{e}; {} kept: free the space or fix the cause, then rerun with --resume to continue",
                prepared.partial_path().display()
            ));
        }
        result
    })();
    if let Some(path) = &run.report {
        write_report(path, &report.finish())?;
    }
    match result {
        Ok(()) => Ok(prepared.finish(Ok(()), false)?),
        Err(e) => {
            let message = format!("{e:#}");
            let _ = prepared.finish(Err(anncat_core::Error::Task(message.clone())), keep_partial);
            Err(anyhow::anyhow!(message))
        }
    }
}
