//! The directories a process may write under (a worker's `--allow-write`):
//! set once, then checked by every write and delete that process makes
//! (the zarr store and `anncat_core::anndata::sandbox` call
//! [`check_write_allowed`]). A refusal names `--allow-write`.

use std::path::{Path, PathBuf};

/// Directories this process may write under; `None` means anywhere.
static WRITE_ROOTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();

/// Restricts every store write of this process to paths under `roots`
/// (a worker's `--allow-write` directories). Each root counts as given and
/// as canonicalized. Can be set once; later calls return false.
pub fn restrict_writes(roots: &[PathBuf]) -> bool {
    let mut all = Vec::new();
    for r in roots {
        if let Ok(abs) = std::path::absolute(r) {
            all.push(abs);
        }
        if let Ok(canon) = std::fs::canonicalize(r) {
            all.push(canon);
        }
    }
    WRITE_ROOTS.set(all).is_ok()
}

/// Refuses a write outside the roots set by [`restrict_writes`].
pub fn check_write_allowed(path: &Path) -> std::io::Result<()> {
    let Some(roots) = WRITE_ROOTS.get() else {
        return Ok(());
    };
    let abs = std::path::absolute(path)?;
    let escapes = abs
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir));
    if !escapes && roots.iter().any(|r| abs.starts_with(r)) {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "this worker may not write {} (outside its --allow-write directories)",
            abs.display()
        ),
    ))
}
