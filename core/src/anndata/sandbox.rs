//! The one place a worker's writes and deletes outside zarr stores are
//! checked against its `--allow-write` directories: each function refuses a
//! path outside them (the error names `--allow-write`), then does what the
//! `std::fs` function of the same name does, and notes what it changed for
//! the task's flush ([`super::durable`]). Zarr chunks and metadata go
//! through [`super::atomic_store`], which applies the same check.

use std::fs::File;
use std::path::Path;

use super::atomic_store::check_write_allowed;
use super::durable::{self, parent_of};

/// `std::fs::create_dir_all`, inside the allowed directories.
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    check_write_allowed(path)?;
    durable::create_dirs(path)
}

/// `std::fs::create_dir`, inside the allowed directories.
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    check_write_allowed(path)?;
    std::fs::create_dir(path)?;
    durable::note_dir_changed(parent_of(path));
    Ok(())
}

/// `std::fs::File::create`, inside the allowed directories.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    durable::settle_this_thread();
    check_write_allowed(path)?;
    durable::note_written(path);
    File::create(path)
}

/// `std::fs::write`, inside the allowed directories.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    durable::settle_this_thread();
    check_write_allowed(path)?;
    std::fs::write(path, bytes)?;
    durable::note_written(path);
    Ok(())
}

/// `std::fs::rename`, both ends inside the allowed directories.
pub fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    durable::settle_this_thread();
    check_write_allowed(from)?;
    check_write_allowed(to)?;
    std::fs::rename(from, to)?;
    durable::note_written(to);
    durable::note_dir_changed(parent_of(from));
    Ok(())
}

/// `std::fs::remove_file`, inside the allowed directories.
pub fn remove_file(path: &Path) -> std::io::Result<()> {
    durable::settle_this_thread();
    check_write_allowed(path)?;
    std::fs::remove_file(path)?;
    durable::note_dir_changed(parent_of(path));
    Ok(())
}

/// `std::fs::remove_dir_all`, inside the allowed directories.
pub fn remove_dir_all(path: &Path) -> std::io::Result<()> {
    durable::settle_this_thread();
    check_write_allowed(path)?;
    std::fs::remove_dir_all(path)?;
    durable::note_dir_changed(parent_of(path));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrestricted_processes_write_anywhere() {
        // No roots set in this test process: every call goes through.
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).expect("mkdir");
        write(&sub.join("f"), b"x").expect("write");
        rename(&sub.join("f"), &sub.join("g")).expect("rename");
        remove_file(&sub.join("g")).expect("rm");
        remove_dir_all(&dir.path().join("a")).expect("rm -r");
        assert!(!dir.path().join("a").exists());
    }
}
