//! The progress of a concat on stderr: redrawn in place (within 80 columns)
//! on a terminal, or one line about every 30 s otherwise, so batch logs
//! (Slurm) show a running job. The percentage and the ETA come from bytes
//! of work (the tasks' memory estimates), not from task counts.

use std::io::Write as _;
use std::sync::Mutex;

use anncat_core::executor::Progress;

/// The widest progress line drawn (a terminal's 80 columns, less one for
/// the cursor).
pub const WIDTH: usize = 79;

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProgressMode {
    /// Nothing (`--quiet`).
    Off,
    /// One line redrawn in place (stderr is a terminal).
    Redraw,
    /// A new line every `interval_s` seconds (stderr is a file or pipe).
    Log {
        /// Seconds between lines.
        interval_s: f64,
    },
}

/// Draws [`Progress`] updates as [`ProgressMode`] says.
#[derive(Debug)]
pub struct ProgressDisplay {
    mode: ProgressMode,
    /// Elapsed seconds at which the next line is due.
    next_s: Mutex<f64>,
}

/// `s` seconds as `42s`, `3m07s` or `2h05m`.
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The fraction of the work done (by bytes of work; by tasks when the
/// graph carries no estimates).
fn fraction(p: &Progress) -> f64 {
    if p.work_total > 0 {
        p.work_done as f64 / p.work_total as f64
    } else {
        p.done as f64 / p.total.max(1) as f64
    }
}

/// One progress line, at most [`WIDTH`] characters.
pub fn line(p: &Progress) -> String {
    let frac = fraction(p).clamp(0.0, 1.0);
    let mib = p.bytes_written as f64 / (1024.0 * 1024.0);
    let rate = mib / p.elapsed_s.max(1e-3);
    let eta = if frac > 0.0 {
        duration(p.elapsed_s * (1.0 - frac) / frac)
    } else {
        "?".into()
    };
    let mut text = format!(
        "anncat: {:.0}%, {}/{} tasks, {:.0} MiB at {:.1} MiB/s, {}, ETA {}",
        100.0 * frac,
        p.done,
        p.total,
        mib,
        rate,
        duration(p.elapsed_s),
        eta
    );
    if text.chars().count() > WIDTH {
        text = text.chars().take(WIDTH).collect();
    }
    text
}

impl ProgressDisplay {
    /// A display in `mode`.
    pub fn new(mode: ProgressMode) -> ProgressDisplay {
        let first = match mode {
            ProgressMode::Log { interval_s } => interval_s,
            _ => 0.0,
        };
        ProgressDisplay {
            mode,
            next_s: Mutex::new(first),
        }
    }

    /// Shows `p` if this mode shows it now.
    pub fn update(&self, p: &Progress) {
        match self.mode {
            ProgressMode::Off => {}
            ProgressMode::Redraw => {
                eprint!("\r{:<WIDTH$}", line(p));
                let _ = std::io::stderr().flush();
            }
            ProgressMode::Log { interval_s } => {
                let Ok(mut next) = self.next_s.lock() else {
                    return;
                };
                if p.elapsed_s >= *next {
                    *next = p.elapsed_s + interval_s;
                    eprintln!("{}", line(p));
                }
            }
        }
    }

    /// Ends the redrawn line, so what follows starts on a fresh one.
    pub fn finish(&self) {
        if self.mode == ProgressMode::Redraw {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(done: usize, work_done: u64, elapsed_s: f64) -> Progress {
        Progress {
            done,
            total: 100,
            label: String::new(),
            elapsed_s,
            bytes_written: 10 << 20,
            work_done,
            work_total: 1000,
        }
    }

    #[test]
    fn the_eta_comes_from_bytes_of_work_not_task_counts() {
        // 90 of 100 tasks but a quarter of the bytes, in 10 s: 30 s to go.
        let l = line(&progress(90, 250, 10.0));
        assert!(l.contains("25%") && l.ends_with("ETA 30s"), "{l}");
        assert_eq!(duration(187.0), "3m07s");
        assert_eq!(duration(7500.0), "2h05m");
    }

    #[test]
    fn lines_fit_80_columns_even_for_huge_runs() {
        let p = Progress {
            done: 9_999_999,
            total: 10_000_000,
            label: String::new(),
            elapsed_s: 400_000.0,
            bytes_written: u64::MAX / 2,
            work_done: 1,
            work_total: u64::MAX,
        };
        assert!(line(&p).chars().count() <= WIDTH, "{}", line(&p));
    }
}
