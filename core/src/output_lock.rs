//! An exclusive lock on an output path, so two runs writing the same `-o`
//! cannot destroy each other's staging directory.
//!
//! The lock is `flock(2)` (`File::try_lock`) on `OUT.lock` beside the output, which holds the
//! pid and host of the run that has it. The kernel releases it when that
//! process dies, however it dies, so a lock left by a dead run is taken over
//! by the next one; its file is removed when the run ends.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::anndata::store::io_reason;
use crate::error::{Error, Result};

/// A held lock on one output; released (and its file removed) on drop.
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

/// This machine's host name (for the lock's holder line).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown host".into())
}

impl OutputLock {
    /// Takes the lock at `lock_path` for `output`, or fails at once naming
    /// the run (pid and host) that holds it.
    pub fn acquire(lock_path: &Path, output: &Path) -> Result<OutputLock> {
        let fail = |what: &str, e: &std::io::Error| {
            Error::path(
                lock_path,
                format!("cannot {what} the output lock: {}", io_reason(e)),
            )
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock_path)
                .map_err(|e| fail("create", &e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(lock_path).unwrap_or_default();
                    let holder = holder.trim();
                    let holder = if holder.is_empty() {
                        "another run".to_string()
                    } else {
                        format!("another run ({holder})")
                    };
                    return Err(Error::path(
                        output,
                        format!(
                            "{holder} is writing this output (it holds {}): wait for it to end or stop it",
                            lock_path.display()
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(fail("take", &e)),
            }
            // The run we may have waited on removes the file as it ends: a
            // lock on a file no longer at `lock_path` guards nothing.
            let held = file.metadata().map_err(|e| fail("read", &e))?;
            match std::fs::metadata(lock_path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
                _ => continue,
            }
            let mut lock = OutputLock {
                file,
                path: lock_path.to_path_buf(),
            };
            lock.record_holder().map_err(|e| fail("write", &e))?;
            return Ok(lock);
        }
    }

    /// Writes `pid N on HOST` into the lock file.
    fn record_holder(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.file.set_len(0)?;
        let line = format!("pid {} on {}\n", std::process::id(), host_name());
        self.file.write_all_at(line.as_bytes(), 0)
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still held, so no other run can lock this file and
        // then find it gone; the lock itself goes with the descriptor.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.zarr");
        let lock_path = dir.path().join("out.zarr.lock");
        let first = OutputLock::acquire(&lock_path, &out).expect("first");
        let err = OutputLock::acquire(&lock_path, &out)
            .expect_err("second")
            .to_string();
        let me = format!("pid {} on ", std::process::id());
        assert!(err.contains("another run") && err.contains(&me), "{err}");
        drop(first);
        assert!(!lock_path.exists(), "lock file left behind");
        // A lock file whose holder died (no flock held) is taken over.
        std::fs::write(&lock_path, "pid 999999 on elsewhere\n").expect("stale");
        let taken = OutputLock::acquire(&lock_path, &out).expect("take over");
        let holder = std::fs::read_to_string(&lock_path).expect("read");
        assert!(holder.starts_with(&me), "{holder}");
        drop(taken);
    }
}
