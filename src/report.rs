//! Run reports: per task (worker, start, end, bytes, peak memory) and per
//! worker (peak RSS, RSS over time), as JSON, plus a timeline of tasks
//! per worker with memory over time, as SVG (and as PNG, `report_png`).

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
    /// Where the coordinating process' time went, start to end.
    pub phases: Phases,
    /// Peak RSS of the coordinating process (bytes; with `--workers 0`, it
    /// also ran the tasks).
    pub coordinator_peak_rss: u64,
    /// Per element of the output: its tasks' time and bytes.
    pub elements: Vec<ElementSummary>,
}

/// The coordinating process' run in phases (seconds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Planning: reading the inputs' metadata and annotations, deciding the
    /// output and writing what is not a graph task.
    pub prepare_s: f64,
    /// From the start to the graph's dispatch: planning, then starting or
    /// connecting to the cluster.
    pub before_graph_s: f64,
    /// The graph, from its dispatch to its last task.
    pub graph_s: f64,
    /// After the graph: the output's consolidated metadata and the rename.
    pub finish_s: f64,
    /// Start to end.
    pub total_s: f64,
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

    /// Sets the phases and the coordinator's peak RSS.
    pub fn phases(&mut self, phases: Phases, coordinator_peak_rss: u64) {
        self.report.phases = phases;
        self.report.coordinator_peak_rss = coordinator_peak_rss;
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
        self.report.elements = element_summaries(&self.report);
        self.report
    }
}

/// The SVG timeline's path for a report at `path` (`x.json` → `x.svg`).
pub fn svg_path(path: &Path) -> PathBuf {
    beside(path, "svg")
}

/// The PNG timeline's path for a report at `path` (`x.json` → `x.png`).
pub fn png_path(path: &Path) -> PathBuf {
    beside(path, "png")
}

/// `x.json` → `x.EXT`; any other name gains `.EXT`.
fn beside(path: &Path, ext: &str) -> PathBuf {
    if path.extension().is_some_and(|e| e == "json") {
        path.with_extension(ext)
    } else {
        let mut p = path.as_os_str().to_os_string();
        p.push(".");
        p.push(ext);
        PathBuf::from(p)
    }
}

/// Writes the JSON report at `path` and the timeline beside it, as SVG and
/// as PNG.
pub fn write_report(path: &Path, report: &RunReport) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the report: {e}", path.display()))?;
    let svg = svg_path(path);
    let picture = render_svg(report);
    std::fs::write(&svg, &picture)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the timeline: {e}", svg.display()))?;
    let png = png_path(path);
    let bytes = crate::report_png::render_png(&picture)
        .map_err(|e| anyhow::anyhow!("{}: cannot draw the timeline: {e}", png.display()))?;
    std::fs::write(&png, bytes)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the timeline: {e}", png.display()))?;
    Ok(())
}

/// Colors for the kinds of task, in the order kinds first appear.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The time spent on one element of the output, summed over its tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ElementSummary {
    /// The element (what a task's label names before `:`), e.g. `layers/counts`.
    pub element: String,
    /// Tasks.
    pub tasks: usize,
    /// Seconds the tasks ran, summed (task-seconds, over all workers).
    pub task_seconds: f64,
    /// Bytes the tasks wrote.
    pub written_bytes: u64,
}

impl ElementSummary {
    /// Written MiB per task-second.
    pub fn mib_per_s(&self) -> f64 {
        if self.task_seconds > 0.0 {
            self.written_bytes as f64 / (1 << 20) as f64 / self.task_seconds
        } else {
            0.0
        }
    }
}

/// Per element of the output: its tasks' time and bytes, the slowest first.
fn element_summaries(report: &RunReport) -> Vec<ElementSummary> {
    let mut by: Vec<ElementSummary> = Vec::new();
    for t in &report.tasks {
        let element = t.label.split(": ").next().unwrap_or(&t.label).to_string();
        let i = match by.iter().position(|e| e.element == element) {
            Some(i) => i,
            None => {
                by.push(ElementSummary {
                    element,
                    tasks: 0,
                    task_seconds: 0.0,
                    written_bytes: 0,
                });
                by.len() - 1
            }
        };
        by[i].tasks += 1;
        by[i].task_seconds += (t.stats.end_s - t.stats.start_s).max(0.0);
        by[i].written_bytes += t.stats.written_bytes;
    }
    by.sort_by(|a, b| b.task_seconds.total_cmp(&a.task_seconds));
    by
}

/// A round step for about `n` ticks over `span` (1, 2 or 5 times a power of ten).
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-9);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * power)
}

/// Seconds, as short as they stay exact at `step`.
fn seconds_label(t: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{t:.decimals$} s")
}

/// Packs a worker's tasks into rows so that no two in a row overlap (as
/// many rows as tasks ran at once); the row of each task, and the count.
fn pack_rows(tasks: &[&TaskRecord]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by(|&a, &b| tasks[a].stats.start_s.total_cmp(&tasks[b].stats.start_s));
    let mut ends: Vec<f64> = Vec::new();
    let mut rows = vec![0; tasks.len()];
    for i in order {
        let (start, end) = (tasks[i].stats.start_s, tasks[i].stats.end_s);
        // A task starting as another ends (within a microsecond) reuses its row.
        let row = match ends.iter().position(|&e| e <= start + 1e-6) {
            Some(r) => r,
            None => {
                ends.push(0.0);
                ends.len() - 1
            }
        };
        ends[row] = end.max(start);
        rows[i] = row;
    }
    (rows, ends.len().max(1))
}

/// Renders the timeline: a time axis; one lane per worker with its tasks as
/// bars (one row per task running at once, colored by kind, with a legend)
/// and its RSS as a line on a memory scale up to its limit (dashed); then
/// a table of the time, bytes and MiB/s per element of the output.
pub fn render_svg(report: &RunReport) -> String {
    let mut workers: Vec<u64> = report.tasks.iter().map(|t| t.worker).collect();
    workers.extend(report.workers.iter().map(|w| w.id));
    workers.sort_unstable();
    workers.dedup();
    let mut kinds: Vec<&str> = Vec::new();
    for t in &report.tasks {
        if !kinds.contains(&t.kernel.as_str()) {
            kinds.push(&t.kernel);
        }
    }
    let color = |kernel: &str| {
        let i = kinds.iter().position(|k| *k == kernel).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
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
    let (width, left, right) = (1200.0, 150.0, 70.0);
    let x = |t: f64| left + (t - t0) / span * (width - left - right);
    // Lanes: a row of bars per task running at once, then the RSS plot.
    let (row_h, rss_h) = (7.0, 50.0);
    let lanes: Vec<(u64, Vec<&TaskRecord>, Vec<usize>, usize)> = workers
        .iter()
        .map(|&w| {
            let tasks: Vec<&TaskRecord> = report.tasks.iter().filter(|t| t.worker == w).collect();
            let (rows, n) = pack_rows(&tasks);
            (w, tasks, rows, n)
        })
        .collect();
    let legend_rows = kinds.len().div_ceil(4).max(1) as f64;
    let top0 = 30.0 + 16.0 * legend_rows + 36.0;
    let lane_h = |n: usize| 14.0 + row_h * n as f64 + 6.0 + rss_h + 10.0;
    let lanes_h: f64 = lanes.iter().map(|l| lane_h(l.3)).sum();
    let elements = &report.elements;
    let table_top = top0 + lanes_h + 30.0;
    let height = table_top + 20.0 + 16.0 * elements.len().min(30) as f64 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="16" font-size="13">anncat run: {} tasks on {} workers, {:.2} s</text>"#,
        report.tasks.len(),
        workers.len(),
        span
    );
    // Legend: a swatch per kind of task, and the RSS line.
    for (i, kind) in kinds.iter().enumerate() {
        let (lx, ly) = (10.0 + 290.0 * (i % 4) as f64, 30.0 + 16.0 * (i / 4) as f64);
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{ly}" width="12" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            color(kind),
            lx + 16.0,
            ly + 9.0,
            escape(kind)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}">tasks: one row per task running at once; red line: the worker's RSS, on a scale up to its memory limit (dashed)</text>"##,
        30.0 + 16.0 * legend_rows + 10.0
    );
    // Time axis with grid lines through every lane.
    let step = tick_step(span, 10.0);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let tx = x(t0 + t);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{}" y2="{:.1}" stroke="#dddddd"/><text x="{tx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            top0 - 4.0,
            top0 + lanes_h,
            top0 - 8.0,
            seconds_label(t, step)
        );
        t += step;
    }
    let mut top = top0;
    for (i, (w, tasks, rows, nrows)) in lanes.iter().enumerate() {
        let h = lane_h(*nrows);
        let summary = report.workers.iter().find(|s| s.id == *w);
        let name = summary.map_or_else(|| format!("worker {w}"), |s| format!("w{w} pid {}", s.pid));
        let _ = writeln!(
            s,
            r##"<rect x="0" y="{top:.1}" width="{width}" height="{h:.1}" fill="{}" fill-opacity="0.6"/><text x="6" y="{:.1}">{} ({} tasks)</text>"##,
            if i % 2 == 0 { "#f4f4f4" } else { "#ffffff" },
            top + 12.0,
            escape(&name),
            tasks.len()
        );
        for (t, &row) in tasks.iter().zip(rows) {
            let (a, b) = (
                x(t.stats.start_s),
                x(t.stats.end_s).max(x(t.stats.start_s) + 0.5),
            );
            let _ = writeln!(
                s,
                r##"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{}" fill="{}" stroke="#ffffff" stroke-width="0.3"><title>{} ({}): {:.3} s, {} B written, peak {} KiB</title></rect>"##,
                top + 14.0 + row_h * row as f64,
                b - a,
                row_h - 1.0,
                color(&t.kernel),
                escape(&t.label),
                escape(&t.kernel),
                t.stats.end_s - t.stats.start_s,
                t.stats.written_bytes,
                t.stats.peak_alloc >> 10
            );
        }
        if let Some(sm) = summary {
            let base = top + 14.0 + row_h * *nrows as f64 + 6.0 + rss_h;
            let scale = sm.memory_limit.max(sm.peak_rss).max(1) as f64;
            let y = |rss: u64| base - (rss as f64 / scale) * rss_h;
            let points: Vec<String> = sm
                .rss_samples
                .iter()
                .filter(|(t, _)| *t >= t0 && *t <= t0 + span)
                .map(|(t, rss)| format!("{:.1},{:.1}", x(*t), y(*rss)))
                .collect();
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{:.1}" y1="{base:.1}" y2="{base:.1}" stroke="#999999"/><text x="{:.1}" y="{base:.1}">0</text>"##,
                width - right,
                width - right + 4.0
            );
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}">{} MiB</text>"##,
                width - right,
                y(sm.memory_limit),
                y(sm.memory_limit),
                width - right + 4.0,
                y(sm.memory_limit) + 4.0,
                sm.memory_limit >> 20
            );
            if !points.is_empty() {
                let _ = writeln!(
                    s,
                    r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{}"/>"##,
                    points.join(" ")
                );
            }
            let _ = writeln!(
                s,
                r##"<text x="6" y="{:.1}">peak RSS {} MiB</text><text x="6" y="{:.1}">limit {} MiB</text>"##,
                base - rss_h + 12.0,
                sm.peak_rss >> 20,
                base - rss_h + 26.0,
                sm.memory_limit >> 20
            );
        }
        top += h;
    }
    // Per element: task-seconds, bytes written, MiB/s.
    let _ = writeln!(
        s,
        r#"<text x="10" y="{table_top:.1}" font-size="12">per element of the output (the slowest first{}): task-seconds over all workers, bytes written, MiB/s</text>"#,
        if elements.len() > 30 {
            "; the first 30"
        } else {
            ""
        }
    );
    for (i, e) in elements.iter().take(30).enumerate() {
        let y = table_top + 18.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<text x="10" y="{y:.1}">{}</text><text x="420" y="{y:.1}" text-anchor="end">{} tasks</text><text x="520" y="{y:.1}" text-anchor="end">{:.2} s</text><text x="640" y="{y:.1}" text-anchor="end">{:.1} MiB</text><text x="760" y="{y:.1}" text-anchor="end">{:.1} MiB/s</text>"#,
            escape(&e.element),
            e.tasks,
            e.task_seconds,
            e.written_bytes as f64 / (1 << 20) as f64,
            e.mib_per_s()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// CPU seconds (user + system) this process has used, all its threads, to
/// the nanosecond (`CLOCK_PROCESS_CPUTIME_ID`; /proc's clock ticks are
/// 10 ms, a fifth of what a short run's coordinator spends); 0 where the
/// clock cannot be read.
#[allow(unsafe_code)] // One libc call writing into a local.
pub fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_moves_in_steps_finer_than_a_clock_tick() {
        // Spins until the clock moves: its first step is well under the
        // 10 ms clock tick /proc counts in.
        let first = process_cpu_seconds();
        assert!(first > 0.0, "the clock reads");
        let mut next = first;
        while next == first {
            next = std::hint::black_box(process_cpu_seconds());
        }
        assert!(next - first < 0.005, "{first} -> {next}");
    }

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
        // A legend entry for the kind, a time axis from 0 s.
        assert!(svg.contains(">k</text>"), "{svg}");
        assert!(
            svg.contains(">0.0 s</text>") && svg.contains(">2.0 s</text>"),
            "{svg}"
        );
        assert_eq!(r.elements.len(), 1);
        assert_eq!(r.elements[0].element, "t<1>");
        assert_eq!(r.elements[0].tasks, 3);
        assert_eq!(svg_path(Path::new("a/r.json")), PathBuf::from("a/r.svg"));
        assert_eq!(svg_path(Path::new("a/r")), PathBuf::from("a/r.svg"));
        assert_eq!(png_path(Path::new("a/r.json")), PathBuf::from("a/r.png"));
    }

    #[test]
    fn a_thousand_tasks_stay_readable() {
        // Two workers, two task threads each: each lane gets two rows of
        // bars, whatever the number of tasks; each element gets a line.
        let mut b = ReportBuilder::new();
        for i in 0..1200u64 {
            let start = 100.0 + (i / 4) as f64 * 0.01;
            b.task(
                &TaskDone {
                    task: anncat_core::graph::TaskId(i),
                    worker: anncat_core::protocol::WorkerId(i % 2),
                    stats: anncat_core::protocol::TaskStats {
                        start_s: start,
                        end_s: start + 0.01,
                        written_bytes: 1 << 20,
                        ..Default::default()
                    },
                    output: None,
                },
                &format!(
                    "{}: chunk {i}",
                    if i % 3 == 0 { "X" } else { "layers/counts" }
                ),
                if i % 2 == 0 {
                    "concat.dense_chunk"
                } else {
                    "concat.sparse_data"
                },
            );
        }
        let r = b.finish();
        let rows = |w: u64| {
            let tasks: Vec<&TaskRecord> = r.tasks.iter().filter(|t| t.worker == w).collect();
            pack_rows(&tasks).1
        };
        assert_eq!((rows(0), rows(1)), (2, 2));
        let svg = render_svg(&r);
        assert_eq!(svg.matches("<title>").count(), 1200);
        let height: f64 = svg
            .split("height=\"")
            .nth(1)
            .and_then(|h| h.split('"').next())
            .and_then(|h| h.parse().ok())
            .expect("height");
        assert!(height < 600.0, "{height}");
        let names: Vec<&str> = r.elements.iter().map(|e| e.element.as_str()).collect();
        assert_eq!(names, ["layers/counts", "X"]);
        assert!(
            (r.elements[1].mib_per_s() - 400.0 / 4.0).abs() < 1.0,
            "{:?}",
            r.elements[1]
        );
        assert_eq!(tick_step(3.3, 10.0), 0.5);
        assert_eq!(seconds_label(1.5, 0.5), "1.5 s");
    }
}
