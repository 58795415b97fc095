//! A concatenation as a resumable run: [`prepare_concat`] opens and checks
//! the inputs, writes everything but the matrix chunks into `OUT.partial`,
//! and returns the task graph; any executor runs it (journaling finished
//! tasks); [`PreparedConcat::finish`] consolidates and renames the output
//! into place. With `resume`, an `OUT.partial` left by a run that died is
//! picked up: its saved graph and journal say what is left to do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ConcatOptions, ConcatSummary, Input, Planner};
use crate::anndata::Store;
use crate::anndata::consolidate::consolidate;
use crate::anndata::element::read_tree;
use crate::anndata::sparse::check_all_sparse;
use crate::error::{Error, Result};
use crate::graph::{Graph, TaskId, decode, encode};
use crate::journal::{Journal, remaining_graph};
use crate::output::StagedOutput;

/// What a run saves in `OUT.partial/.anncat/run.bin` to be resumable.
#[derive(Debug, Serialize, Deserialize)]
struct RunRecord {
    fingerprint: String,
    graph: Graph,
    summary: ConcatSummary,
}

/// A planned concatenation whose graph is ready to run.
#[derive(Debug)]
pub struct PreparedConcat {
    staged: StagedOutput,
    out: Store,
    graph: Graph,
    done: HashMap<TaskId, Vec<u8>>,
    summary: ConcatSummary,
}

/// Identifies the options that shape the plan (not threads or flags).
fn fingerprint(opts: &ConcatOptions) -> String {
    let mut o = opts.clone();
    o.threads = 0;
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
    let opts = &abs;
    // 1. Open and validate every input before writing anything.
    let mut inputs = Vec::with_capacity(opts.inputs.len());
    for path in &opts.inputs {
        let store = Store::open(path)?;
        let tree = read_tree(&store)?;
        check_all_sparse(&store, &tree)?;
        inputs.push(Input { store, tree });
    }
    let input_paths: Vec<&Path> = opts.inputs.iter().map(PathBuf::as_path).collect();
    let (staged, found) =
        StagedOutput::prepare_resumable(&opts.output, &input_paths, opts.overwrite, opts.resume)?;
    if found {
        if let Some(prepared) = resume(&staged, opts)? {
            return Ok(prepared);
        }
        // Died during planning: start over.
        staged.abandon();
    }
    let keys = opts.resolved_keys();
    let format = opts.zarr_format.unwrap_or(inputs[0].store.format());
    let planned = (|| {
        let out = Store::create(&staged.partial_path, format)?;
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
            graph,
            summary,
        };
        let file = scratch(&staged.partial_path).join("run.bin");
        crate::anndata::atomic_store::write_atomic(&file, &encode(&record)?)
            .map_err(|e| Error::path(&file, format!("cannot save the run: {e}")))?;
        Ok((planner.out, record))
    })();
    match planned {
        Ok((out, record)) => Ok(PreparedConcat {
            staged,
            out,
            graph: record.graph,
            done: HashMap::new(),
            summary: record.summary,
        }),
        Err(e) => {
            staged.abandon();
            Err(e)
        }
    }
}

fn resume(staged: &StagedOutput, opts: &ConcatOptions) -> Result<Option<PreparedConcat>> {
    let file = scratch(&staged.partial_path).join("run.bin");
    let Ok(bytes) = std::fs::read(&file) else {
        return Ok(None);
    };
    let record: RunRecord = decode(&bytes)?;
    if record.fingerprint != fingerprint(opts) {
        return Err(Error::path(
            &staged.partial_path,
            "cannot resume: this partial output was made with other inputs or options (remove it, or run without --resume)",
        ));
    }
    let out = Store::open(&staged.partial_path)?;
    let done = Journal::read(&scratch(&staged.partial_path).join("journal"))?;
    Ok(Some(PreparedConcat {
        staged: staged.clone(),
        out,
        graph: record.graph,
        done,
        summary: record.summary,
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
            ..
        } = self;
        match result {
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
