//! Processes of the end-to-end cluster tests: every process a test starts
//! is held by [`Procs`] (or [`Pids`]) and killed by pid when the test ends,
//! pass or fail; plus the shared concat inputs, reference run and waits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `anncat` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_anncat");

/// Kills (SIGKILL, by pid) and reaps every process it holds when dropped.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Procs {
    /// Holds `c`; its index.
    pub fn add(&mut self, c: Child) -> usize {
        self.0.push(c);
        self.0.len() - 1
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Kills a pid we did not spawn (a worker started by `anncat concat`).
pub struct Pids(pub Vec<u32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !(state.starts_with('Z') || state.starts_with('X'))
        })
        .unwrap_or(false)
}

/// The example inputs shipped in the repository.
pub fn inputs() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    ["batch1.zarr", "batch2.zarr", "batch3.zarr"]
        .iter()
        .map(|b| root.join(b).to_string_lossy().into_owned())
        .collect()
}

/// Options giving a few hundred small tasks.
pub const SMALL_CHUNKS: [&str; 4] = ["--join", "outer", "--chunk-mib", "0.0003"];

/// `anncat concat` arguments for the example inputs into `out`.
pub fn concat_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["concat".to_string()];
    a.extend(inputs());
    a.extend(["-o".to_string(), out.to_string_lossy().into_owned()]);
    a.extend(SMALL_CHUNKS.iter().map(|s| s.to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The reference output: the same concat on threads of one process.
pub fn reference(dir: &Path) -> (PathBuf, usize) {
    let out = dir.join("ref.zarr");
    let o = Command::new(BIN)
        .args(concat_args(&out, &["--workers", "0"]))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let tasks = err
        .split(';')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("task count in the summary line");
    (out, tasks)
}

/// Waits until `ok` holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A log file `NAME.log` in `dir`, as a child's stdio.
pub fn log(dir: &Path, name: &str) -> (Stdio, PathBuf) {
    let path = dir.join(format!("{name}.log"));
    (Stdio::from(File::create(&path).expect("log")), path)
}

/// Bytes in the run journal of `out` (how far a run got).
pub fn journal_len(out: &Path) -> u64 {
    let mut p = out.as_os_str().to_os_string();
    p.push(".partial/.anncat/journal");
    std::fs::metadata(PathBuf::from(p)).map_or(0, |m| m.len())
}

/// A run report, parsed.
pub fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("report")).expect("json")
}

/// The workers a run report says were lost.
pub fn lost_workers(r: &serde_json::Value) -> Vec<&serde_json::Value> {
    r["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter(|w| w["lost"] == true)
        .collect()
}

/// `anncat worker` on `cluster` with a 256 MiB limit, writing only under
/// `allow_write`, giving up 2 s after losing its scheduler.
pub fn worker_command(cluster: &Path, allow_write: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "worker",
        "--memory-limit",
        "256MiB",
        "--reconnect-timeout",
        "2",
    ])
    .arg("--cluster-file")
    .arg(cluster)
    .arg("--allow-write")
    .arg(allow_write);
    c
}
