//! Output placement shared by every command that writes a store: checks on
//! the output path, the `OUT.partial` staging directory, and the final
//! rename that makes a finished store visible.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::anndata::store::io_reason;
use crate::error::{Error, Result};
use crate::output_lock::OutputLock;

/// Where an output is staged while it is written, and where it lands.
#[derive(Debug, Clone)]
pub struct StagedOutput {
    /// The final path the user asked for.
    pub final_path: PathBuf,
    /// `FINAL.partial`, where everything is written first.
    pub partial_path: PathBuf,
    overwrite: bool,
    /// The exclusive lock on the output, held until the run ends.
    _lock: Arc<OutputLock>,
}

/// Removes `path`, a directory (with everything in it) or a file.
fn remove_path(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// Whether `path` names an `.h5ad` file (by its extension).
pub fn is_h5ad(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("h5ad"))
}

/// The directory `output` is written in (where `OUT.partial` goes),
/// absolute and with symbolic links resolved.
pub fn output_directory(output: &Path) -> Result<PathBuf> {
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::canonicalize(&parent).map_err(|e| {
        Error::path(
            output,
            format!("output directory {}: {}", parent.display(), io_reason(&e)),
        )
    })
}

impl StagedOutput {
    /// Checks `output` against the `inputs` and prepares a fresh staging
    /// path: the output may not be an input or lie inside one, may not exist
    /// unless `overwrite`, and its parent directory must exist. A stale
    /// `.partial` from an earlier, interrupted run is removed.
    pub fn prepare(output: &Path, inputs: &[&Path], overwrite: bool) -> Result<StagedOutput> {
        Self::prepare_resumable(output, inputs, overwrite, false).map(|(s, _)| s)
    }

    /// [`StagedOutput::prepare`], except that with `resume` an existing
    /// `.partial` is kept for the run to continue; the flag returned says
    /// whether one was there.
    pub fn prepare_resumable(
        output: &Path,
        inputs: &[&Path],
        overwrite: bool,
        resume: bool,
    ) -> Result<(StagedOutput, bool)> {
        let name = output
            .file_name()
            .ok_or_else(|| Error::path(output, "output path has no file name"))?;
        let parent_abs = output_directory(output)?;
        let output_abs = parent_abs.join(name);
        for input in inputs {
            if let Ok(input_abs) = std::fs::canonicalize(input) {
                if output_abs == input_abs || output_abs.starts_with(&input_abs) {
                    return Err(Error::path(
                        output,
                        format!("output lies inside input {}", input.display()),
                    ));
                }
                if input_abs.starts_with(&output_abs) {
                    return Err(Error::path(
                        output,
                        format!("input {} lies inside the output", input.display()),
                    ));
                }
            }
        }
        if output.exists() && !overwrite {
            return Err(Error::path(
                output,
                "output exists (use --overwrite to replace it)",
            ));
        }
        let mut partial_name = name.to_os_string();
        partial_name.push(".partial");
        // Absolute: kernels in other processes write here.
        let partial_path = parent_abs.join(partial_name);
        // Before anything is removed: another run may be writing here.
        let mut lock_name = name.to_os_string();
        lock_name.push(".lock");
        let lock = Arc::new(OutputLock::acquire(&parent_abs.join(lock_name), output)?);
        if resume && partial_path.is_dir() {
            return Ok((
                StagedOutput {
                    final_path: output.to_path_buf(),
                    partial_path,
                    overwrite,
                    _lock: lock,
                },
                true,
            ));
        }
        if partial_path.exists() {
            remove_path(&partial_path).map_err(|e| {
                Error::path(
                    &partial_path,
                    format!("cannot remove stale partial output: {}", io_reason(&e)),
                )
            })?;
        }
        Ok((
            StagedOutput {
                final_path: output.to_path_buf(),
                partial_path,
                overwrite,
                _lock: lock,
            },
            false,
        ))
    }

    /// Makes the finished output visible: replaces an existing output when
    /// allowed, then renames the staging directory into place.
    pub fn commit(self) -> Result<PathBuf> {
        self.remove_existing()?;
        durable_rename(&self.partial_path, &self.final_path)?;
        Ok(self.final_path)
    }

    /// Makes a finished single-file output visible: `file` (written inside
    /// the staging directory) is renamed to the final path, replacing an
    /// existing output when allowed, and the staging directory is removed.
    pub fn commit_file(self, file: &Path) -> Result<PathBuf> {
        self.remove_existing()?;
        durable_rename(file, &self.final_path)?;
        std::fs::remove_dir_all(&self.partial_path).map_err(|e| {
            Error::path(
                &self.partial_path,
                format!("cannot remove the staging directory: {}", io_reason(&e)),
            )
        })?;
        Ok(self.final_path)
    }

    fn remove_existing(&self) -> Result<()> {
        if self.overwrite && self.final_path.exists() {
            remove_path(&self.final_path).map_err(|e| {
                Error::path(
                    &self.final_path,
                    format!("cannot replace existing output: {}", io_reason(&e)),
                )
            })?;
        }
        Ok(())
    }

    /// Ends a run that wrote into the staging directory: commits it when
    /// `result` is a success, removes it (and returns the error) otherwise.
    pub fn finish<T>(self, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.commit()?;
                Ok(value)
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Removes the staging directory after a failure (best effort).
    pub fn abandon(&self) {
        let _ = remove_path(&self.partial_path);
    }
}

/// Renames a finished output into place so that, once this returns, a
/// power loss leaves either no output or the whole of it: the output's
/// file system is flushed first, the parent directory after.
fn durable_rename(from: &Path, to: &Path) -> Result<()> {
    let failed = |e: std::io::Error| {
        Error::path(
            to,
            format!("cannot move output into place: {}", io_reason(&e)),
        )
    };
    crate::anndata::durable::sync_file_system(from).map_err(failed)?;
    std::fs::rename(from, to).map_err(failed)?;
    let parent = to.parent().filter(|p| !p.as_os_str().is_empty());
    crate::anndata::durable::sync_dir(parent.unwrap_or(Path::new("."))).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_output_inside_input_and_existing_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in.zarr");
        std::fs::create_dir(&input).expect("mkdir");
        let inside = input.join("out.zarr");
        let e = StagedOutput::prepare(&inside, &[&input], false).expect_err("inside");
        assert!(e.to_string().contains("inside input"), "{e}");
        let e = StagedOutput::prepare(&input, &[&input], true).expect_err("same");
        assert!(e.to_string().contains("inside input"), "{e}");
        let existing = dir.path().join("exists.zarr");
        std::fs::create_dir(&existing).expect("mkdir");
        let e = StagedOutput::prepare(&existing, &[&input], false).expect_err("exists");
        assert!(e.to_string().contains("--overwrite"), "{e}");
        let missing_parent = dir.path().join("nope/out.zarr");
        assert!(StagedOutput::prepare(&missing_parent, &[&input], false).is_err());
    }

    #[test]
    fn commit_renames_partial_into_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.zarr");
        std::fs::create_dir(&out).expect("mkdir");
        let staged = StagedOutput::prepare(&out, &[], true).expect("prepare");
        assert!(staged.partial_path.ends_with("out.zarr.partial"));
        std::fs::create_dir(&staged.partial_path).expect("mkdir partial");
        std::fs::write(staged.partial_path.join("marker"), b"x").expect("write");
        let landed = staged.commit().expect("commit");
        assert!(landed.join("marker").is_file());
        assert!(!dir.path().join("out.zarr.partial").exists());
    }
}
