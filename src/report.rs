//! Run reports: per task (worker, start, end, bytes, peak memory) and per
//! worker (peak RSS, RSS over time), as JSON, plus an SVG timeline of tasks
//! per worker with memory over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anncat_core::protocol::{TaskDone, TaskStats, WorkerSummary};
use serde::Serialize;

/// One task in a report: who ran it and its measurements (start, end,
/// bytes, peak memory; flattened into the JSON object).
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    /// Task id.
    pub task: u64,
    /// Label.
    pub label: String,
    /// Kernel.
    pub kernel: String,
    /// Worker id.
    pub worker: u64,
    /// What the worker measured.
    #[serde(flatten)]
    pub stats: TaskStats,
}

/// A whole run's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Tasks in the order they finished.
    pub tasks: Vec<TaskRecord>,
    /// The workers (peak RSS, RSS samples).
    pub workers: Vec<WorkerSummary>,
    /// Wall time from the first task start to the last task end (s).
    pub wall_s: f64,
    /// CPU seconds the coordinating process (scheduler and client; with a
    /// local cluster, the `anncat concat` process) spent while the graph ran.
    pub coordinator_cpu_s: f64,
    /// The per-worker memory limit the plan's tasks were sized for (bytes).
    pub planned_memory_limit: u64,
}

/// Collects a report while a run goes.
#[derive(Debug, Default)]
pub struct ReportBuilder {
    report: RunReport,
}

impl ReportBuilder {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a finished task.
    pub fn task(&mut self, d: &TaskDone, label: &str, kernel: &str) {
        self.report.tasks.push(TaskRecord {
            task: d.task.0,
            label: label.to_string(),
            kernel: kernel.to_string(),
            worker: d.worker.0,
            stats: d.stats.clone(),
        });
    }

    /// Sets the memory limit the plan was sized for.
    pub fn planned_for(&mut self, memory_limit: u64) {
        self.report.planned_memory_limit = memory_limit;
    }

    /// Sets the coordinating process' CPU seconds during the run.
    pub fn coordinator_cpu(&mut self, seconds: f64) {
        self.report.coordinator_cpu_s = seconds;
    }

    /// Sets the worker summaries.
    pub fn workers(&mut self, workers: Vec<WorkerSummary>) {
        self.report.workers = workers;
    }

    /// The finished report.
    pub fn finish(mut self) -> RunReport {
        let start = self
            .report
            .tasks
            .iter()
            .map(|t| t.stats.start_s)
            .fold(f64::INFINITY, f64::min);
        let end = self
            .report
            .tasks
            .iter()
            .map(|t| t.stats.end_s)
            .fold(0.0, f64::max);
        self.report.wall_s = if start.is_finite() {
            (end - start).max(0.0)
        } else {
            0.0
        };
        self.report
    }
}

/// The SVG timeline's path for a report at `path` (`x.json` → `x.svg`).
pub fn svg_path(path: &Path) -> PathBuf {
    if path.extension().is_some_and(|e| e == "json") {
        path.with_extension("svg")
    } else {
        let mut p = path.as_os_str().to_os_string();
        p.push(".svg");
        PathBuf::from(p)
    }
}

/// Writes the JSON report at `path` and the SVG timeline beside it.
pub fn write_report(path: &Path, report: &RunReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the report: {e}", path.display()))?;
    let svg = svg_path(path);
    std::fs::write(&svg, render_svg(report))
        .map_err(|e| anyhow::anyhow!("{}: cannot write the timeline: {e}", svg.display()))?;
    Ok(())
}

fn color(kernel: &str) -> &'static str {
    const COLORS: [&str; 8] = [
        "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
    ];
    let h = kernel
        .bytes()
        .fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    COLORS[h % COLORS.len()]
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the timeline: one lane per worker, tasks as bars, RSS as a line
/// (scaled to the worker's memory limit, drawn as a dashed line).
pub fn render_svg(report: &RunReport) -> String {
    let mut workers: Vec<u64> = report.tasks.iter().map(|t| t.worker).collect();
    workers.extend(report.workers.iter().map(|w| w.id));
    workers.sort_unstable();
    workers.dedup();
    let t0 = report
        .tasks
        .iter()
        .map(|t| t.stats.start_s)
        .fold(f64::INFINITY, f64::min);
    let t1 = report
        .tasks
        .iter()
        .map(|t| t.stats.end_s)
        .fold(0.0, f64::max);
    let (t0, span) = if t0.is_finite() && t1 > t0 {
        (t0, t1 - t0)
    } else {
        (0.0, 1.0)
    };
    let (width, lane, left) = (1200.0, 90.0, 140.0);
    let x = |t: f64| left + (t - t0) / span * (width - left - 10.0);
    let height = 40.0 + lane * workers.len() as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="16">anncat run: {} tasks, {:.2} s; bars = tasks, line = RSS (dashed = memory limit)</text>"#,
        report.tasks.len(),
        span
    );
    for (i, &w) in workers.iter().enumerate() {
        let top = 30.0 + lane * i as f64;
        let summary = report.workers.iter().find(|s| s.id == w);
        let name = summary.map_or_else(|| format!("worker {w}"), |s| format!("w{w} pid {}", s.pid));
        let _ = writeln!(
            s,
            r##"<rect x="0" y="{top}" width="{width}" height="{lane}" fill="{}"/><text x="6" y="{}">{}</text>"##,
            if i % 2 == 0 { "#f7f7f7" } else { "#ffffff" },
            top + 16.0,
            escape(&name)
        );
        for t in report.tasks.iter().filter(|t| t.worker == w) {
            let (a, b) = (
                x(t.stats.start_s),
                x(t.stats.end_s).max(x(t.stats.start_s) + 0.5),
            );
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="30" fill="{}"><title>{} ({}): {:.3} s, {} B written, peak {} KiB</title></rect>"#,
                top + 4.0,
                b - a,
                color(&t.kernel),
                escape(&t.label),
                escape(&t.kernel),
                t.stats.end_s - t.stats.start_s,
                t.stats.written_bytes,
                t.stats.peak_alloc >> 10
            );
        }
        if let Some(sm) = summary {
            let scale = sm.memory_limit.max(sm.peak_rss).max(1) as f64;
            let y = |rss: u64| top + lane - 4.0 - (rss as f64 / scale) * (lane - 44.0);
            let points: Vec<String> = sm
                .rss_samples
                .iter()
                .filter(|(t, _)| *t >= t0 && *t <= t0 + span)
                .map(|(t, rss)| format!("{:.1},{:.1}", x(*t), y(*rss)))
                .collect();
            if !points.is_empty() {
                let _ = writeln!(
                    s,
                    r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{}"/>"##,
                    points.join(" ")
                );
            }
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{width}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/><text x="6" y="{}">peak RSS {} MiB</text>"##,
                y(sm.memory_limit),
                y(sm.memory_limit),
                top + 32.0,
                sm.peak_rss >> 20
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// CPU seconds (user + system) this process has used, from /proc (0 where
/// there is no /proc).
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime), in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_a_lane_per_worker_and_a_bar_per_task() {
        let mut b = ReportBuilder::new();
        for (i, w) in [(0u64, 1u64), (1, 2), (2, 1)] {
            b.task(
                &TaskDone {
                    task: anncat_core::graph::TaskId(i),
                    worker: anncat_core::protocol::WorkerId(w),
                    stats: anncat_core::protocol::TaskStats {
                        start_s: 10.0 + i as f64,
                        end_s: 10.5 + i as f64,
                        ..Default::default()
                    },
                    output: None,
                },
                "t<1>",
                "k",
            );
        }
        let r = b.finish();
        assert!((r.wall_s - 2.5).abs() < 1e-9);
        let svg = render_svg(&r);
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(svg.contains("t&lt;1&gt;"));
        assert_eq!(svg_path(Path::new("a/r.json")), PathBuf::from("a/r.svg"));
        assert_eq!(svg_path(Path::new("a/r")), PathBuf::from("a/r.svg"));
    }
}
