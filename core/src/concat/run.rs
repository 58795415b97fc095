//! A concatenation as a resumable run: [`prepare_concat`] opens and checks
//! the inputs, writes everything but the matrix chunks into `OUT.partial`,
//! and returns the task graph; any executor runs it (journaling finished
//! tasks); [`PreparedConcat::finish`] consolidates and renames the output
//! into place. With `resume`, an `OUT.partial` left by a run that died is
//! picked up: its saved graph and journal say what is left to do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{ConcatOptions, ConcatSummary, Input, Planner, Sharding};
use crate::anndata::OutputStore;
use crate::anndata::Store;
use crate::anndata::consolidate::consolidate;
use crate::anndata::element::read_tree;
use crate::anndata::h5_write::write_h5ad;
use crate::anndata::sparse::check_all_sparse;
use crate::anndata::store::io_reason;
use crate::error::{Error, Result};
use crate::graph::{Graph, TaskId, decode, encode};
use crate::journal::{Journal, remaining_graph};
use crate::output::{StagedOutput, is_h5ad};

/// What a run saves in `OUT.partial/.anncat/run.bin` to be resumable.
#[derive(Debug, Serialize, Deserialize)]
struct RunRecord {
    fingerprint: String,
    /// What each input was when the run was planned (see [`input_identity`]).
    inputs: Vec<(PathBuf, u64)>,
    graph: Graph,
    summary: ConcatSummary,
}

/// A digest of what an input is: the relative path, size and modification
/// time of every file in it (a zarr store's metadata and chunks, or an
/// `.h5ad` file). Sizes and times, rather than content hashes, so that
/// checking a 100 GB input on resume costs one `stat` per file, not a read
/// of every byte; any rewrite of a chunk, a metadata document or the file
/// changes its time (and a changed shape its sizes).
fn input_identity(path: &Path) -> Result<u64> {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    fn mix(h: &mut u64, bytes: &[u8]) {
        for &b in bytes {
            *h ^= u64::from(b);
            *h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    fn walk(root: &Path, dir: &Path, h: &mut u64) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let meta = e.metadata()?;
            let p = e.path();
            if meta.is_dir() {
                walk(root, &p, h)?;
            } else {
                stamp(root, &p, &meta, h);
            }
        }
        Ok(())
    }
    fn stamp(root: &Path, p: &Path, meta: &std::fs::Metadata, h: &mut u64) {
        let rel = p.strip_prefix(root).unwrap_or(p);
        mix(h, rel.as_os_str().as_encoded_bytes());
        mix(h, &meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        mix(h, &mtime.to_le_bytes());
    }
    let mut h = 0xcbf2_9ce4_8422_2325;
    let read = |e: std::io::Error| Error::path(path, format!("cannot read: {}", io_reason(&e)));
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.is_dir() {
        walk(path, path, &mut h).map_err(read)?;
    } else {
        stamp(path, path, &meta, &mut h);
    }
    Ok(h)
}

/// `f` of every input: zarr stores (directories) on all cores (an atlas
/// has hundreds of inputs of thousands of files), single files (h5ad) one
/// after another beside them. The HDF5 library serves one call at a time,
/// so h5ad inputs opened in parallel only waited on its lock (nine gzip
/// h5ad inputs: 53 ms in parallel, 38 ms in turn). Of several failing
/// inputs, the first in the given order is the one reported.
fn each_input<T: Send>(
    opts: &ConcatOptions,
    f: impl Fn(&PathBuf) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let (files, dirs): (Vec<usize>, Vec<usize>) =
        (0..opts.inputs.len()).partition(|&i| opts.inputs[i].is_file());
    let (in_turn, in_parallel) = rayon::join(
        || {
            files
                .iter()
                .map(|&i| (i, f(&opts.inputs[i])))
                .collect::<Vec<_>>()
        },
        || {
            dirs.par_iter()
                .map(|&i| (i, f(&opts.inputs[i])))
                .collect::<Vec<_>>()
        },
    );
    let mut done: Vec<Option<Result<T>>> = opts.inputs.iter().map(|_| None).collect();
    for (i, r) in in_turn.into_iter().chain(in_parallel) {
        done[i] = Some(r);
    }
    done.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::internal("an input was not read"))))
        .collect()
}

/// Every input's [`input_identity`].
fn input_identities(opts: &ConcatOptions) -> Result<Vec<(PathBuf, u64)>> {
    each_input(opts, |p| Ok((p.clone(), input_identity(p)?)))
}

/// A planned concatenation whose graph is ready to run.
#[derive(Debug)]
pub struct PreparedConcat {
    staged: StagedOutput,
    out: OutputStore,
    graph: Graph,
    done: HashMap<TaskId, Vec<u8>>,
    summary: ConcatSummary,
    /// The inputs the plan was made from, being closed.
    closing: ClosingInputs,
}

/// Inputs closed on a thread of their own once planned: closing nine gzip
/// `.h5ad` inputs (HDF5 tears down each file's metadata cache) took the
/// coordinator about 7 ms that the graph's start waited for. Waits for
/// that thread when dropped, so that no HDF5 call is still running when
/// the process exits (the library's exit handler is not thread-safe).
#[derive(Debug)]
struct ClosingInputs(Option<std::thread::JoinHandle<()>>);

impl ClosingInputs {
    /// Starts closing `inputs` (closes them here if no thread starts).
    fn start<T: Send + 'static>(inputs: T) -> ClosingInputs {
        ClosingInputs(
            std::thread::Builder::new()
                .name("anncat-close".into())
                .spawn(move || drop(inputs))
                .ok(),
        )
    }

    /// Nothing to close (a resumed run opened no inputs to plan).
    fn none() -> ClosingInputs {
        ClosingInputs(None)
    }
}

impl Drop for ClosingInputs {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            // A panic while closing leaves nothing to undo.
            let _ = thread.join();
        }
    }
}

/// Identifies the options that shape the output's bytes. Not threads, flags
/// or the memory limit: a resume runs the recorded plan (its chunks were
/// sized from the first run's limit), so "raise the limit and resume" works.
fn fingerprint(opts: &ConcatOptions) -> String {
    let mut o = opts.clone();
    o.threads = 0;
    o.memory_limit = 0;
    o.overwrite = false;
    o.resume = false;
    o.inputs = o
        .inputs
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    o.output = std::path::absolute(&o.output).unwrap_or(o.output);
    format!("anncat {} {o:?}", env!("CARGO_PKG_VERSION"))
}

fn scratch(partial: &Path) -> PathBuf {
    partial.join(".anncat")
}

/// Plans `opts` (or picks up the interrupted run, with `opts.resume`).
pub fn prepare_concat(opts: &ConcatOptions) -> Result<PreparedConcat> {
    opts.validate()?;
    // Kernels may run in other processes with other working directories.
    let mut abs = opts.clone();
    abs.inputs = opts
        .inputs
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    if is_h5ad(&opts.output) {
        // An .h5ad is staged as an unsharded zarr store, then written by
        // one streaming HDF5 writer at the end.
        abs.sharding = Sharding::Off;
    }
    let opts = &abs;
    // 1. Open and validate every input before writing anything.
    let inputs = each_input(opts, |path| {
        let store = Store::open(path)?;
        let tree = read_tree(&store)?;
        check_all_sparse(&store, &tree)?;
        Ok(Input { store, tree })
    })?;
    let input_paths: Vec<&Path> = opts.inputs.iter().map(PathBuf::as_path).collect();
    let (staged, found) =
        StagedOutput::prepare_resumable(&opts.output, &input_paths, opts.overwrite, opts.resume)?;
    if found {
        if let Some(prepared) = resume(&staged, opts)? {
            return Ok(PreparedConcat {
                closing: ClosingInputs::start(inputs),
                ..prepared
            });
        }
        // Died during planning: start over.
        staged.abandon();
    }
    let keys = opts.resolved_keys();
    let format = opts.zarr_format.unwrap_or(inputs[0].store.format());
    // The inputs' identities (a `stat` of every file) are taken on a
    // thread of their own while the plan is made.
    let planned = std::thread::scope(|scope| {
        let identities = std::thread::Builder::new()
            .name("anncat-identity".into())
            .spawn_scoped(scope, || input_identities(opts));
        let out = OutputStore::create(&staged.partial_path, format)?;
        let mut planner = Planner::new(opts, &keys, &inputs, out)?;
        planner.plan_all()?;
        let plan_file = planner.plan.save()?;
        let graph = planner.graph(&plan_file)?;
        let summary = ConcatSummary {
            output: opts.output.clone(),
            shape: planner.shape,
            tasks: graph.len(),
            matrices: planner
                .plan
                .matrices
                .iter()
                .map(|m| m.out_path.clone())
                .collect(),
        };
        let record = RunRecord {
            fingerprint: fingerprint(opts),
            inputs: match identities {
                Ok(thread) => thread
                    .join()
                    .map_err(|_| Error::internal("the input identity thread panicked"))??,
                Err(_) => input_identities(opts)?,
            },
            graph,
            summary,
        };
        let file = scratch(&staged.partial_path).join("run.bin");
        crate::anndata::atomic_store::write_atomic(&file, &encode(&record)?)
            .map_err(|e| Error::path(&file, format!("cannot save the run: {e}")))?;
        // The plan, the metadata and the run record are durable before any
        // task can be journaled as done (tasks flush only their own files).
        crate::anndata::durable::flush_this_thread()?;
        Ok((planner.out, record))
    });
    let closing = ClosingInputs::start(inputs);
    match planned {
        Ok((out, record)) => Ok(PreparedConcat {
            staged,
            out,
            graph: record.graph,
            done: HashMap::new(),
            summary: record.summary,
            closing,
        }),
        Err(e) => {
            staged.abandon();
            Err(e)
        }
    }
}

fn resume(staged: &StagedOutput, opts: &ConcatOptions) -> Result<Option<PreparedConcat>> {
    let file = scratch(&staged.partial_path).join("run.bin");
    // Only a missing record means the run died while planning; any other
    // failure to read it stops the run and leaves the partial output alone.
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::path(
                &file,
                format!(
                    "cannot read the run record to resume: {} (the partial output is left as it is)",
                    io_reason(&e)
                ),
            ));
        }
    };
    let record: RunRecord = decode(&bytes)?;
    for ((path, before), (current, now)) in record.inputs.iter().zip(input_identities(opts)?) {
        if *path == current && *before != now {
            return Err(Error::path(
                path,
                "cannot resume: this input changed since the run began (remove the partial output, or run without --resume)",
            ));
        }
    }
    if record.fingerprint != fingerprint(opts) {
        return Err(Error::path(
            &staged.partial_path,
            "cannot resume: this partial output was made with other inputs or options (remove it, or run without --resume)",
        ));
    }
    let out = OutputStore::open(&staged.partial_path)?;
    let done = Journal::read(&scratch(&staged.partial_path).join("journal"))?;
    Ok(Some(PreparedConcat {
        staged: staged.clone(),
        out,
        graph: record.graph,
        done,
        summary: record.summary,
        closing: ClosingInputs::none(),
    }))
}

impl PreparedConcat {
    /// The whole graph of the run.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Tasks an earlier attempt finished (resume), with their outputs.
    pub fn finished_before(&self) -> &HashMap<TaskId, Vec<u8>> {
        &self.done
    }

    /// What is left to run: the graph without finished tasks (those still
    /// needed become constant tasks yielding their journaled outputs).
    pub fn remaining(&self) -> Graph {
        remaining_graph(&self.graph, &self.done)
    }

    /// The journal to record finished tasks in.
    pub fn journal(&self) -> Result<Journal> {
        Journal::open(&scratch(&self.staged.partial_path).join("journal"))
    }

    /// The staging directory.
    pub fn partial_path(&self) -> &Path {
        &self.staged.partial_path
    }

    /// Ends the run: on success, removes scratch data and temporary files
    /// left by killed workers, consolidates and renames into place. On
    /// failure, removes the partial output unless `keep_partial` (the run
    /// can be resumed).
    pub fn finish(self, result: Result<()>, keep_partial: bool) -> Result<ConcatSummary> {
        let PreparedConcat {
            staged,
            out,
            summary,
            closing,
            ..
        } = self;
        drop(closing);
        match result {
            Ok(()) if is_h5ad(&staged.final_path) => {
                // The zarr staging store (journal included) stays until the
                // HDF5 file is whole, so a failure here can be resumed.
                let file = scratch(&staged.partial_path).join("output.h5ad");
                write_h5ad(&out, &read_tree(&out)?, &file)?;
                staged.commit_file(&file)?;
                Ok(summary)
            }
            Ok(()) => {
                let done = (|| {
                    let dir = scratch(&staged.partial_path);
                    std::fs::remove_dir_all(&dir).map_err(|e| {
                        Error::path(&dir, format!("cannot remove scratch data: {e}"))
                    })?;
                    remove_temp_files(&staged.partial_path)?;
                    consolidate(&out)
                })();
                staged.finish(done.map(|()| summary))
            }
            Err(e) => {
                if !keep_partial {
                    staged.abandon();
                }
                Err(e)
            }
        }
    }
}

/// Removes `.NAME.tmp-*` files (writes cut short by a killed process).
fn remove_temp_files(dir: &Path) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::path(dir, format!("cannot list: {e}")))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_temp_files(&path)?;
        } else if name.starts_with('.') && name.contains(".tmp-") {
            std::fs::remove_file(&path)
                .map_err(|e| Error::path(&path, format!("cannot remove a temporary file: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closer closes in the background, and dropping it waits until
    /// what it closes is closed (the process must not exit with a close
    /// still running).
    #[test]
    fn dropping_the_closer_waits_for_the_close() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::mpsc::{Receiver, channel};
        /// Closes when told to (or after 5 s).
        struct SlowClose(Arc<AtomicBool>, Receiver<()>);
        impl Drop for SlowClose {
            fn drop(&mut self) {
                let _ = self.1.recv_timeout(std::time::Duration::from_secs(5));
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let closed = Arc::new(AtomicBool::new(false));
        let (go, wait) = channel();
        let closing = ClosingInputs::start(SlowClose(closed.clone(), wait));
        assert!(!closed.load(Ordering::SeqCst), "closed in the background");
        go.send(()).expect("the closer waits");
        drop(closing);
        assert!(closed.load(Ordering::SeqCst));
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir") {
            let e = e.expect("entry");
            let dest = to.join(e.file_name());
            if e.file_type().expect("type").is_dir() {
                copy_dir(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), &dest).expect("copy");
            }
        }
    }

    /// Two copies of a committed fixture, and a run writing `out.zarr`
    /// beside them planned and then "killed" before any task ran; returns
    /// the options with `--resume`.
    fn planned_then_killed(dir: &Path) -> ConcatOptions {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chunked_v2.zarr");
        let (a, b) = (dir.join("a.zarr"), dir.join("b.zarr"));
        copy_dir(&fixture, &a);
        copy_dir(&fixture, &b);
        let mut opts = ConcatOptions::new(vec![a, b], dir.join("out.zarr"));
        opts.index_unique = Some("-".into());
        drop(prepare_concat(&opts).expect("plan"));
        assert!(dir.join("out.zarr.partial/.anncat/run.bin").is_file());
        opts.resume = true;
        opts
    }

    #[test]
    fn inputs_that_share_their_names_share_one_reindexer_in_the_saved_plan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chunked_v2.zarr");
        let inputs: Vec<PathBuf> = (0..12)
            .map(|i| {
                let p = dir.path().join(format!("in{i}.zarr"));
                copy_dir(&fixture, &p);
                p
            })
            .collect();
        let mut opts = ConcatOptions::new(inputs, dir.path().join("out.zarr"));
        opts.index_unique = Some("-".into());
        let prepared = prepare_concat(&opts).expect("plan");
        let saved: Vec<PathBuf> = std::fs::read_dir(prepared.partial_path().join(".anncat"))
            .expect("staging directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("plan-"))
            })
            .collect();
        assert_eq!(saved.len(), 1, "{saved:?}");
        let plan = crate::concat::plan::ConcatPlan::load(&saved[0]).expect("load the plan");
        let main = &plan.spaces[0];
        assert_eq!(main.n_inputs(), 12);
        assert_eq!(main.n_distinct(), 1, "one reindexer, not one per input");
        assert!(main.reindexer(11).identity);
        drop(prepared);
    }

    #[test]
    fn a_resume_refuses_an_input_that_changed_and_keeps_the_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = planned_then_killed(dir.path());
        let partial = dir.path().join("out.zarr.partial");
        // Unchanged inputs: the run picks up where it was.
        drop(prepare_concat(&opts).expect("resume of unchanged inputs"));
        // One chunk of the second input rewritten with other bytes.
        let attrs = dir.path().join("b.zarr/obs/.zattrs");
        let mut text = std::fs::read_to_string(&attrs).expect("read");
        text.push(' ');
        std::fs::write(&attrs, text).expect("write");
        let err = prepare_concat(&opts)
            .expect_err("changed input")
            .to_string();
        assert!(
            err.contains("b.zarr") && err.contains("input changed"),
            "{err}"
        );
        assert!(partial.join(".anncat/run.bin").is_file(), "partial removed");
    }

    #[test]
    fn a_resume_may_change_the_memory_limit_and_threads_but_not_the_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut opts = planned_then_killed(dir.path());
        let planned = prepare_concat(&opts).expect("resume").remaining().len();
        opts.memory_limit *= 4;
        opts.threads += 3;
        let resumed = prepare_concat(&opts).expect("resume with a higher limit");
        assert_eq!(resumed.remaining().len(), planned, "the recorded plan runs");
        drop(resumed);
        opts.join = crate::concat::index::Join::Outer;
        let err = prepare_concat(&opts).expect_err("another join").to_string();
        assert!(err.contains("other inputs or options"), "{err}");
    }

    #[test]
    fn an_unreadable_run_record_stops_the_resume_and_keeps_the_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = planned_then_killed(dir.path());
        let record = dir.path().join("out.zarr.partial/.anncat/run.bin");
        // A record that cannot be read (here: a directory where the file was;
        // permission bits do not stop root).
        std::fs::remove_file(&record).expect("rm");
        std::fs::create_dir(&record).expect("mkdir");
        let err = prepare_concat(&opts)
            .expect_err("unreadable record")
            .to_string();
        assert!(err.contains("cannot read the run record"), "{err}");
        assert!(record.is_dir(), "the partial output was touched");
        assert!(dir.path().join("out.zarr.partial/.zgroup").is_file());
    }
}
