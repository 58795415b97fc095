//! `anncat concat`, in this process or on a cluster: plan (or pick up an
//! interrupted run), run the graph on threads of this process, a local
//! cluster or a running one (one [`Executor`] either way),
//! journal every finished task into `OUT.partial` as it completes, and
//! finish the output. When the scheduler is lost mid-run the partial output
//! stays, and `--resume` continues it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anncat_core::concat::matrix::kernels;
use anncat_core::concat::{ConcatOptions, ConcatSummary, prepare_concat};
use anncat_core::executor::{Executor, InProcess, LocalExecutor, MemoryBudget, Progress};
use anncat_core::graph::TaskId;
use anncat_core::protocol::Want;
use anncat_net::ClusterFile;
use anncat_net::TransportTuning;
use anncat_scheduler::Client;

use crate::cluster::{LocalCluster, LocalClusterConfig};
use crate::report::{Phases, ReportBuilder, write_report};

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
    /// Write a run report (JSON, and its timeline as SVG and PNG beside it) here.
    pub report: Option<PathBuf>,
    /// On a running cluster, size the plan (chunks, the memory check) for
    /// the smallest memory limit of its connected workers, not for
    /// `ConcatOptions::memory_limit` (what `anncat concat --cluster-file`
    /// does when `--memory-limit` is not given).
    pub fit_cluster_budgets: bool,
}

/// Runs `opts` as `run` says.
pub fn run_concat(
    opts: &ConcatOptions,
    run: &RunOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> anyhow::Result<ConcatSummary> {
    if let ClusterChoice::Local(c) = &run.cluster {
        c.validate()?;
    }
    let mut remote = match &run.cluster {
        ClusterChoice::Remote(path) => Some(Client::connect(
            &ClusterFile::read(path)?,
            &TransportTuning::default(),
        )?),
        _ => None,
    };
    let mut opts = opts.clone();
    if run.fit_cluster_budgets
        && let Some(client) = remote.as_mut()
        && let Some(&smallest) = client.worker_limits()?.first()
    {
        opts.memory_limit = smallest;
    }
    let opts = &opts;
    let run_start = Instant::now();
    // Local workers start (processes, TLS, registration) while the plan is
    // made: neither needs the other until the graph is submitted.
    let mut starting = match &run.cluster {
        ClusterChoice::Local(c) => anncat_core::output::output_directory(&opts.output)
            .ok()
            .map(|root| {
                let config = c.clone();
                std::thread::spawn(move || start_local(config, root))
            }),
        _ => None,
    };
    let prepared = match prepare_concat(opts) {
        Ok(p) => p,
        Err(e) => {
            // Stops the workers that started meanwhile (dropping the cluster).
            drop(starting.take().map(std::thread::JoinHandle::join));
            return Err(e.into());
        }
    };
    let mut phases = Phases {
        prepare_s: run_start.elapsed().as_secs_f64(),
        ..Phases::default()
    };
    let resumed = !prepared.finished_before().is_empty();
    let mut report = ReportBuilder::new();
    report.planned_for(opts.memory_limit);
    let mut keep_partial = resumed;
    // The local cluster outlives the graph: on success it stops while the
    // output is finished (both wait on other processes or the disk).
    let mut local_cluster: Option<LocalCluster> = None;
    let result = (|| -> anyhow::Result<()> {
        // One way to run the job, whatever runs it: the journal, report,
        // progress and --resume below are the same for all three.
        let mut executor: Box<dyn Executor> = match (&run.cluster, remote.take()) {
            (ClusterChoice::InProcess, _) => Box::new(InProcess {
                executor: LocalExecutor {
                    threads: opts.threads,
                    budget: MemoryBudget {
                        limit_bytes: opts.memory_limit,
                    },
                },
                registry: in_process_kernels(),
                name: format!("in-process/{}", std::process::id()),
            }),
            (ClusterChoice::Local(config), _) => {
                let cluster = match starting.take() {
                    Some(thread) => thread
                        .join()
                        .map_err(|_| anyhow::anyhow!("the local cluster's start-up panicked"))??,
                    // The output directory could not be resolved before
                    // the plan was made; it exists now.
                    None => start_local(
                        config.clone(),
                        anncat_core::output::output_directory(&opts.output)?,
                    )?,
                };
                let client = cluster.client()?;
                local_cluster = Some(cluster);
                Box::new(client)
            }
            (ClusterChoice::Remote(_), Some(client)) => Box::new(client),
            (ClusterChoice::Remote(_), None) => unreachable!("connected above"),
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
        let total = graph.len();
        let started = Instant::now();
        phases.before_graph_s = run_start.elapsed().as_secs_f64();
        let mut last_sync = Instant::now();
        let (mut done, mut written) = (0usize, 0u64);
        let mut journal_error = None;
        let waited = executor.run_job("concat", &graph, Want::All, &mut |d| {
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
        phases.graph_s = started.elapsed().as_secs_f64();
        journal.sync()?;
        report.coordinator_cpu(crate::report::process_cpu_seconds() - cpu_before);
        let result = match waited {
            Ok(mut r) => {
                if matches!(run.cluster, ClusterChoice::InProcess) {
                    for w in &mut r.workers {
                        w.peak_rss = anncat_worker::governor::peak_rss();
                    }
                }
                report.workers(r.workers);
                Ok(())
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
    let finish_start = Instant::now();
    let finished = match result {
        Ok(()) => {
            // Every task is done and flushed: nothing of the workers'
            // touches the output any more.
            let stopping = local_cluster
                .take()
                .map(|c| std::thread::spawn(move || drop(c)));
            let finished = prepared.finish(Ok(()), false).map_err(anyhow::Error::from);
            if let Some(thread) = stopping {
                let _ = thread.join();
            }
            finished
        }
        Err(e) => {
            // Tasks may still run on the workers: they stop before the
            // partial output is kept or removed.
            drop(local_cluster.take());
            let message = format!("{e:#}");
            let _ = prepared.finish(Err(anncat_core::Error::Task(message.clone())), keep_partial);
            Err(anyhow::anyhow!(message))
        }
    };
    if let Some(path) = &run.report {
        phases.finish_s = finish_start.elapsed().as_secs_f64();
        phases.total_s = run_start.elapsed().as_secs_f64();
        report.phases(phases, anncat_worker::governor::peak_rss());
        write_report(path, &report.finish())?;
    }
    finished
}

/// Starts the local cluster of `config`, its workers allowed to write
/// under `root` (the output's directory) only.
fn start_local(mut config: LocalClusterConfig, root: PathBuf) -> anyhow::Result<LocalCluster> {
    config.allow_write = vec![root];
    LocalCluster::start(config)
}

/// The concat kernels for threads of this process; with the test hook
/// `ANNCAT_TEST_TASK_DELAY_MS` (as workers have it) every task takes at
/// least that long, so a test can act mid-run.
fn in_process_kernels() -> anncat_core::kernel::KernelRegistry {
    let mut registry = kernels();
    if anncat_worker::runtime::test_task_delay().is_some() {
        registry.finish_each_with(test_task_delay);
    }
    registry
}

fn test_task_delay() -> Option<anncat_core::kernel::Deferred> {
    if let Some(delay) = anncat_worker::runtime::test_task_delay() {
        std::thread::sleep(delay);
    }
    None
}
