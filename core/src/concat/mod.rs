//! `anncat concat`: the semantics of `anndata.concat`, planned from metadata
//! and executed as a graph of chunk tasks.
//!
//! The planner opens and validates every input first (nothing is written
//! before all inputs check out), computes both axes' names, the join and one
//! reindexer per input, writes the annotations (obs / var), uns and the
//! skeleton of every matrix, and emits a task graph whose write tasks each
//! own whole output chunks. The graph runs on an executor (in-process here);
//! the output is consolidated and renamed into place only when complete.

pub mod frame;
pub mod index;
pub mod matrix;
pub mod options;
pub mod plan;
pub mod uns;
pub mod values;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use self::frame::{Column, concat_column, read_column, write_frame};
use self::index::{Join, Reindexer, check_unique, concat_names, join_indices, read_strings};
pub use self::options::{ConcatOptions, Merge, parse_size};
use self::plan::{Axis, ConcatPlan, InputInfo, MatrixPlan, MatrixSource, SourceKind, Space};
use self::values::{Scalar, Values, fill_promote, promote};
use crate::anndata::consolidate::consolidate;
use crate::anndata::element::{Element, Encoding, read_tree};
use crate::anndata::layout::{ArraySpec, chunk_shape_for};
use crate::anndata::sparse::check_all_sparse;
use crate::anndata::{DType, Store};
use crate::error::{Error, Result};
use crate::executor::{LocalExecutor, MemoryBudget, Progress};
use crate::graph::{Graph, TaskId};
use crate::kernel::KernelRegistry;
use crate::output::StagedOutput;

/// What a concatenation produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConcatSummary {
    /// The output store.
    pub output: PathBuf,
    /// Output shape (n_obs, n_vars).
    pub shape: [u64; 2],
    /// Tasks run.
    pub tasks: usize,
    /// Matrices written (X, layers, raw/X, obsm).
    pub matrices: Vec<String>,
}

/// An opened input.
struct Input {
    store: Store,
    tree: Element,
}

/// The names of a data frame's rows, and the index's name (None when the
/// index column is called `_index`).
fn frame_index(store: &Store, frame: &Element) -> Result<(Vec<String>, Option<String>)> {
    let col = frame
        .meta
        .attrs
        .get("_index")
        .and_then(Value::as_str)
        .ok_or_else(|| store.err(&frame.path, "dataframe lacks _index"))?;
    let e = frame
        .child(col)
        .ok_or_else(|| store.err(&frame.path, format!("lacks its index column {col:?}")))?;
    if !e.array().is_some_and(|a| a.dtype == DType::String) {
        return Err(store.err(&e.path, "index is not a string array (not supported yet)"));
    }
    let names = read_strings(store, &e.path)?;
    Ok((names, (col != "_index").then(|| col.to_string())))
}

fn frame_columns(frame: &Element) -> Vec<String> {
    frame
        .meta
        .attrs
        .get("column-order")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// pandas' name of a combined index: kept when every part has the same.
fn common_name(names: &[Option<String>]) -> Option<String> {
    let first = names.first()?.clone();
    names.iter().all(|n| *n == first).then_some(first).flatten()
}

/// Keys of child elements: intersection in the first's order, or union in
/// order of first appearance (anndata's `intersect_keys` / `union_keys`).
fn join_keys(lists: &[Vec<String>], join: Join) -> Vec<String> {
    match join {
        Join::Inner => {
            let Some(first) = lists.first() else {
                return Vec::new();
            };
            first
                .iter()
                .filter(|k| lists.iter().all(|l| l.contains(k)))
                .cloned()
                .collect()
        }
        Join::Outer => {
            let mut out: Vec<String> = Vec::new();
            for l in lists {
                for k in l {
                    if !out.contains(k) {
                        out.push(k.clone());
                    }
                }
            }
            out
        }
    }
}

/// [`join_keys`] for the sibling modules.
pub(crate) fn join_keys_pub(lists: &[Vec<String>], join: Join) -> Vec<String> {
    join_keys(lists, join)
}

fn child_names(e: Option<&Element>) -> Vec<String> {
    e.map(|e| e.children.iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default()
}

fn group_attrs(encoding: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("encoding-type".into(), json!(encoding));
    m.insert("encoding-version".into(), json!(version));
    m
}

/// Runs a whole concatenation on the in-process executor.
pub fn concat(
    opts: &ConcatOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ConcatSummary> {
    opts.validate()?;
    let keys = opts.resolved_keys();
    // 1. Open and validate every input before writing anything.
    let mut inputs = Vec::with_capacity(opts.inputs.len());
    for path in &opts.inputs {
        let store = Store::open(path)?;
        let tree = read_tree(&store)?;
        check_all_sparse(&store, &tree)?;
        inputs.push(Input { store, tree });
    }
    let format = opts.zarr_format.unwrap_or(inputs[0].store.format());
    let input_paths: Vec<&Path> = opts.inputs.iter().map(PathBuf::as_path).collect();
    let staged = StagedOutput::prepare(&opts.output, &input_paths, opts.overwrite)?;
    let result = (|| {
        let out = Store::create(&staged.partial_path, format)?;
        let mut planner = Planner::new(opts, &keys, &inputs, out)?;
        planner.plan_all()?;
        let plan_file = planner.plan.save()?;
        let graph = planner.graph(&plan_file)?;
        let mut registry = KernelRegistry::new();
        matrix::register(&mut registry);
        let executor = LocalExecutor {
            threads: opts.threads,
            budget: MemoryBudget {
                limit_bytes: opts.memory_limit,
            },
        };
        executor.run(&graph, &registry, progress)?;
        let scratch = staged.partial_path.join(".anncat");
        std::fs::remove_dir_all(&scratch)
            .map_err(|e| Error::path(&scratch, format!("cannot remove scratch data: {e}")))?;
        consolidate(&planner.out)?;
        Ok(ConcatSummary {
            output: opts.output.clone(),
            shape: planner.shape,
            tasks: graph.len(),
            matrices: planner
                .plan
                .matrices
                .iter()
                .map(|m| m.out_path.clone())
                .collect(),
        })
    })();
    match result {
        Ok(summary) => {
            staged.commit()?;
            Ok(summary)
        }
        Err(e) => {
            staged.abandon();
            Err(e)
        }
    }
}

/// One AnnData-like object per input: the main object, or its raw.
#[derive(Clone, Copy)]
struct View<'a> {
    /// The group holding X / var / varm (the root, or raw).
    group: &'a Element,
    /// The obs frame (raw borrows the root's, index only).
    obs: &'a Element,
    /// Whether obs columns count (false for raw).
    obs_columns: bool,
}

struct Planner<'a> {
    opts: &'a ConcatOptions,
    keys: &'a [String],
    inputs: &'a [Input],
    out: Store,
    plan: ConcatPlan,
    shape: [u64; 2],
    chunk_bytes: u64,
}

impl<'a> Planner<'a> {
    fn new(
        opts: &'a ConcatOptions,
        keys: &'a [String],
        inputs: &'a [Input],
        out: Store,
    ) -> Result<Self> {
        let plan = ConcatPlan {
            output: out.root().to_path_buf(),
            format: out.format(),
            axis: opts.axis,
            inputs: Vec::new(),
            spaces: Vec::new(),
            matrices: Vec::new(),
        };
        Ok(Planner {
            opts,
            keys,
            inputs,
            out,
            plan,
            shape: [0, 0],
            chunk_bytes: opts.target_chunk_bytes(),
        })
    }

    fn fail(&self, input: usize, path: &str, message: impl std::fmt::Display) -> Error {
        self.inputs[input].store.err(path, message)
    }

    fn plan_all(&mut self) -> Result<()> {
        self.out.write_group("", &group_attrs("anndata", "0.1.0"))?;
        let views: Vec<View<'a>> = self
            .inputs
            .iter()
            .enumerate()
            .map(|(i, inp)| {
                let obs = inp
                    .tree
                    .child("obs")
                    .ok_or_else(|| self.fail(i, "obs", "missing obs"))?;
                Ok(View {
                    group: &inp.tree,
                    obs,
                    obs_columns: true,
                })
            })
            .collect::<Result<_>>()?;
        self.shape = self.plan_object(&views, "", true)?;
        // raw: concatenated when every input has it (anndata warns and skips otherwise).
        let raws: Vec<Option<&'a Element>> = self
            .inputs
            .iter()
            .map(|inp| {
                inp.tree
                    .child("raw")
                    .filter(|r| r.encoding == Encoding::Raw)
            })
            .collect();
        if raws.iter().all(Option::is_some) {
            let raw_views: Vec<View<'a>> = views
                .iter()
                .zip(&raws)
                .filter_map(|(v, r)| {
                    r.map(|r| View {
                        group: r,
                        obs: v.obs,
                        obs_columns: false,
                    })
                })
                .collect();
            self.out.write_group("raw", &group_attrs("raw", "0.1.0"))?;
            self.plan_object(&raw_views, "raw", false)?;
        }
        self.plan_uns()?;
        Ok(())
    }

    /// Plans one object (the root or raw) at `prefix`; returns its shape.
    fn plan_object(&mut self, views: &[View<'a>], prefix: &str, main: bool) -> Result<[u64; 2]> {
        let axis = self.opts.axis;
        let join = self.opts.join;
        let at = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            }
        };
        // Names along both axes.
        let mut obs_idx = Vec::new();
        let mut var_idx = Vec::new();
        for (i, v) in views.iter().enumerate() {
            obs_idx.push(frame_index(&self.inputs[i].store, v.obs)?);
            let var = v
                .group
                .child("var")
                .ok_or_else(|| self.fail(i, &at("var"), "missing var"))?;
            var_idx.push(frame_index(&self.inputs[i].store, var)?);
        }
        let (axis_idx, other_idx) = match axis {
            Axis::Obs => (&obs_idx, &var_idx),
            Axis::Var => (&var_idx, &obs_idx),
        };
        for (i, (names, _)) in other_idx.iter().enumerate() {
            let frame = match axis {
                Axis::Obs => at("var"),
                Axis::Var => "obs".to_string(),
            };
            check_unique(&self.inputs[i].store, &frame, names)?;
        }
        let other_names: Vec<Vec<String>> = other_idx.iter().map(|(n, _)| n.clone()).collect();
        let joined = join_indices(&other_names, join);
        let reindexers: Vec<Reindexer> = other_names
            .iter()
            .map(|old| Reindexer::new(old, &joined))
            .collect();
        let axis_lists: Vec<Vec<String>> = axis_idx.iter().map(|(n, _)| n.clone()).collect();
        let concat_idx = concat_names(&axis_lists, self.keys, self.opts.index_unique.as_deref());
        let n_axis = concat_idx.len() as u64;
        let along: Vec<u64> = axis_lists.iter().map(|n| n.len() as u64).collect();
        let n_other = joined.len() as u64;
        let space = self.plan.spaces.len();
        self.plan.spaces.push(Space {
            n_other,
            reindexers: reindexers.clone(),
        });
        if main {
            let mut offset = 0;
            for names in &axis_lists {
                self.plan.inputs.push(InputInfo {
                    path: PathBuf::new(),
                    n_axis: names.len() as u64,
                    offset,
                });
                offset += names.len() as u64;
            }
            for (info, inp) in self.plan.inputs.iter_mut().zip(self.inputs) {
                info.path = inp.store.root().to_path_buf();
            }
        }
        let rows_chunk = (self.chunk_bytes / 8).max(1);

        // Annotation of the concatenation axis.
        let axis_frames: Vec<&Element> = views
            .iter()
            .enumerate()
            .map(|(i, v)| match axis {
                Axis::Obs => Ok(v.obs),
                Axis::Var => v
                    .group
                    .child("var")
                    .ok_or_else(|| self.fail(i, "var", "missing var")),
            })
            .collect::<Result<_>>()?;
        let with_columns = axis == Axis::Var || views.iter().all(|v| v.obs_columns);
        let axis_name = common_name(&axis_idx.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
        let mut columns: Vec<(String, Column)> = Vec::new();
        if with_columns {
            let lists: Vec<Vec<String>> = axis_frames.iter().map(|f| frame_columns(f)).collect();
            for name in join_keys(&lists, join) {
                let mut read = Vec::new();
                for (i, f) in axis_frames.iter().enumerate() {
                    read.push(match f.child(&name) {
                        Some(e) if lists[i].contains(&name) => {
                            Some(read_column(&self.inputs[i].store, e)?)
                        }
                        _ => None,
                    });
                }
                let parts: Vec<(Option<&Column>, usize)> = read
                    .iter()
                    .zip(&axis_lists)
                    .map(|(c, names)| (c.as_ref(), names.len()))
                    .collect();
                let col = concat_column(&parts)
                    .map_err(|e| Error::option(format!("{}/{name}: {e}", axis.name())))?;
                columns.push((name, col));
            }
        }
        if let Some(label) = &self.opts.label
            && (main || axis == Axis::Var)
        {
            let codes: Vec<i64> = axis_lists
                .iter()
                .enumerate()
                .flat_map(|(i, n)| std::iter::repeat_n(i as i64, n.len()))
                .collect();
            let col = Column::Cat {
                codes,
                categories: self.keys.to_vec(),
                ordered: false,
            };
            match columns.iter_mut().find(|(n, _)| n == label) {
                Some(slot) => slot.1 = col,
                None => columns.push((label.clone(), col)),
            }
        }
        // Annotation of the other axis: merged columns.
        let other_frames: Vec<&Element> = views
            .iter()
            .enumerate()
            .map(|(i, v)| match axis {
                Axis::Obs => v
                    .group
                    .child("var")
                    .ok_or_else(|| self.fail(i, "var", "missing var")),
                Axis::Var => Ok(v.obs),
            })
            .collect::<Result<_>>()?;
        let other_name = common_name(&other_idx.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
        let other_columns = match self.opts.merge {
            Some(strategy) if main => self.merge_frames(&other_frames, &reindexers, strategy)?,
            _ => Vec::new(),
        };
        let other_columns = if main { other_columns } else { Vec::new() };
        let frames = [
            (axis.name(), axis_name, &concat_idx, columns),
            (axis.other_name(), other_name, &joined, other_columns),
        ];
        for (frame_name, index_name, index, mut cols) in frames {
            frame::strings_to_categoricals(&mut cols);
            // raw keeps only its var.
            if main || frame_name == "var" {
                write_frame(
                    &self.out,
                    &at(frame_name),
                    index_name.as_deref(),
                    index,
                    &cols,
                    rows_chunk,
                )?;
            }
        }
        let shape = match axis {
            Axis::Obs => [n_axis, n_other],
            Axis::Var => [n_other, n_axis],
        };

        // X.
        let xs: Vec<Option<&Element>> = views.iter().map(|v| v.group.child("X")).collect();
        if xs.iter().any(Option::is_some) {
            if xs.iter().any(Option::is_none) {
                return Err(Error::option(
                    "some inputs have X and others do not (anndata cannot concatenate that either)",
                ));
            }
            self.plan_matrix(
                &at("X"),
                &xs,
                MatrixLayout {
                    space,
                    shape,
                    stack: axis,
                    along: &along,
                    diagonal: false,
                },
            )?;
        }
        // layers.
        if main {
            let layer_groups: Vec<Option<&Element>> =
                views.iter().map(|v| v.group.child("layers")).collect();
            let lists: Vec<Vec<String>> = layer_groups.iter().map(|g| child_names(*g)).collect();
            self.out
                .write_group(&at("layers"), &group_attrs("dict", "0.1.0"))?;
            for key in join_keys(&lists, join) {
                let els: Vec<Option<&Element>> = layer_groups
                    .iter()
                    .map(|g| g.and_then(|g| g.child(&key)))
                    .collect();
                self.plan_matrix(
                    &at(&format!("layers/{key}")),
                    &els,
                    MatrixLayout {
                        space,
                        shape,
                        stack: axis,
                        along: &along,
                        diagonal: false,
                    },
                )?;
            }
            self.plan_axis_mappings(views, prefix, &along)?;
            for name in ["obsp", "varp"] {
                self.out.write_group(name, &group_attrs("dict", "0.1.0"))?;
            }
            if self.opts.pairwise {
                self.plan_pairwise(views, &along)?;
            }
        } else if axis == Axis::Var {
            self.plan_axis_mappings(views, prefix, &along)?;
        } else {
            self.out
                .write_group(&at("varm"), &group_attrs("dict", "0.1.0"))?;
        }
        Ok(shape)
    }

    /// {axis}m: arrays concatenated along the axis, joined positionally on
    /// their second dimension; {other}m is dropped unless merged (not yet).
    fn plan_axis_mappings(
        &mut self,
        views: &[View<'a>],
        prefix: &str,
        along: &[u64],
    ) -> Result<()> {
        let n_axis: u64 = along.iter().sum();
        let axis = self.opts.axis;
        let (m_name, other_m) = match axis {
            Axis::Obs => ("obsm", "varm"),
            Axis::Var => ("varm", "obsm"),
        };
        let at = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            }
        };
        let groups: Vec<Option<&Element>> = views.iter().map(|v| v.group.child(m_name)).collect();
        let lists: Vec<Vec<String>> = groups.iter().map(|g| child_names(*g)).collect();
        self.out
            .write_group(&at(m_name), &group_attrs("dict", "0.1.0"))?;
        if prefix.is_empty() {
            self.out
                .write_group(other_m, &group_attrs("dict", "0.1.0"))?;
            if let Some(strategy) = self.opts.merge {
                self.merge_other_mappings(views, other_m, strategy)?;
                let other_p = if axis == Axis::Obs { "varp" } else { "obsp" };
                for (i, v) in views.iter().enumerate() {
                    if let Some(e) = v.group.child(other_p).and_then(|g| g.children.first()) {
                        return Err(self.fail(
                            i,
                            &e.path,
                            format!("merging {other_p} elements (--merge) is not supported yet"),
                        ));
                    }
                }
            }
        }
        for key in join_keys(&lists, self.opts.join) {
            let els: Vec<Option<&Element>> = groups
                .iter()
                .map(|g| g.and_then(|g| g.child(&key)))
                .collect();
            let mut widths = Vec::new();
            for (i, e) in els.iter().enumerate() {
                let Some(e) = e else {
                    widths.push(None);
                    continue;
                };
                let shape = matrix_shape(e).ok_or_else(|| {
                    self.fail(
                        i,
                        &e.path,
                        format!(
                            "concatenating {} elements in {m_name} is not supported yet",
                            e.encoding.name()
                        ),
                    )
                })?;
                widths.push(Some(shape[1]));
            }
            let present: Vec<u64> = widths.iter().flatten().copied().collect();
            let width = match self.opts.join {
                Join::Inner => present.iter().copied().min().unwrap_or(0),
                Join::Outer => present.iter().copied().max().unwrap_or(0),
            };
            let reindexers = widths
                .iter()
                .map(|w| {
                    let w = w.unwrap_or(0);
                    let old_of_new: Vec<i64> = (0..width as i64)
                        .map(|j| if (j as u64) < w { j } else { -1 })
                        .collect();
                    let new_of_old: Vec<i64> = (0..w as i64)
                        .map(|j| if (j as u64) < width { j } else { -1 })
                        .collect();
                    Reindexer {
                        identity: w == width,
                        old_of_new,
                        new_of_old,
                    }
                })
                .collect();
            let space = self.plan.spaces.len();
            self.plan.spaces.push(Space {
                n_other: width,
                reindexers,
            });
            // Always stored n_axis x width, whichever axis is concatenated.
            self.plan_matrix(
                &at(&format!("{m_name}/{key}")),
                &els,
                MatrixLayout {
                    space,
                    shape: [n_axis, width],
                    stack: Axis::Obs,
                    along,
                    diagonal: false,
                },
            )?;
        }
        Ok(())
    }

    /// {axis}p with `pairwise`: each key's matrices as one block-diagonal
    /// CSR matrix (keys joined like layers; a missing one is an empty block).
    fn plan_pairwise(&mut self, views: &[View<'a>], along: &[u64]) -> Result<()> {
        let name = match self.opts.axis {
            Axis::Obs => "obsp",
            Axis::Var => "varp",
        };
        let n: u64 = along.iter().sum();
        let groups: Vec<Option<&Element>> = views.iter().map(|v| v.group.child(name)).collect();
        let lists: Vec<Vec<String>> = groups.iter().map(|g| child_names(*g)).collect();
        for key in join_keys(&lists, self.opts.join) {
            let els: Vec<Option<&Element>> = groups
                .iter()
                .map(|g| g.and_then(|g| g.child(&key)))
                .collect();
            let space = self.plan.spaces.len();
            self.plan.spaces.push(Space {
                n_other: n,
                reindexers: along
                    .iter()
                    .map(|_| Reindexer {
                        old_of_new: Vec::new(),
                        new_of_old: Vec::new(),
                        identity: true,
                    })
                    .collect(),
            });
            self.plan_matrix(
                &format!("{name}/{key}"),
                &els,
                MatrixLayout {
                    space,
                    shape: [n, n],
                    stack: Axis::Obs,
                    along,
                    diagonal: true,
                },
            )?;
        }
        Ok(())
    }

    /// {other}m merged with `strategy`: every dense array reindexed onto the
    /// joined other axis (missing rows filled with NaN), then compared.
    fn merge_other_mappings(
        &mut self,
        views: &[View<'a>],
        name: &str,
        strategy: Merge,
    ) -> Result<()> {
        let reindexers = self.plan.spaces[0].reindexers.clone();
        let mut per_input: Vec<Vec<(String, [u64; 2], Values)>> = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let mut items = Vec::new();
            for e in v
                .group
                .child(name)
                .map(|g| g.children.as_slice())
                .unwrap_or_default()
            {
                let Some(a) = e.array().filter(|a| {
                    a.shape.len() == 2 && matches!(e.encoding, Encoding::Array | Encoding::Plain)
                }) else {
                    return Err(self.fail(
                        i,
                        &e.path,
                        format!(
                            "merging {} elements of {name} is not supported yet",
                            e.encoding.name()
                        ),
                    ));
                };
                let store = &self.inputs[i].store;
                let array = store.array(&e.path)?;
                let bytes = array
                    .retrieve_array_subset(&array.subset_all())
                    .map_err(|err| store.err(&e.path, format!("cannot read data: {err}")))?;
                let values = Values::from_array_bytes(&a.dtype, &bytes)
                    .map_err(|err| store.err(&e.path, err))?;
                let r = &reindexers[i];
                let width = a.shape[1] as usize;
                let dtype = if r.has_missing() {
                    fill_promote(&a.dtype, Scalar::Float(f64::NAN))
                        .map_err(|err| store.err(&e.path, err))?
                } else {
                    a.dtype.clone()
                };
                let idx: Vec<Option<usize>> = r
                    .old_of_new
                    .iter()
                    .flat_map(|&o| {
                        (0..width).map(move |c| (o >= 0).then(|| o as usize * width + c))
                    })
                    .collect();
                let reindexed = values.cast(&dtype)?.take(&idx, Scalar::Float(f64::NAN));
                items.push((
                    e.name().to_string(),
                    [r.old_of_new.len() as u64, a.shape[1]],
                    reindexed,
                ));
            }
            per_input.push(items);
        }
        let lists: Vec<Vec<String>> = per_input
            .iter()
            .map(|c| c.iter().map(|(n, _, _)| n.clone()).collect())
            .collect();
        let keys = join_keys(
            &lists,
            if strategy == Merge::Same {
                Join::Inner
            } else {
                Join::Outer
            },
        );
        for key in keys {
            let vals: Vec<(&[u64; 2], &Values)> = per_input
                .iter()
                .filter_map(|c| c.iter().find(|(n, _, _)| *n == key).map(|(_, s, v)| (s, v)))
                .collect();
            let same = |a: &(&[u64; 2], &Values), b: &(&[u64; 2], &Values)| {
                a.0 == b.0 && values_equal(a.1, b.1)
            };
            let chosen = match strategy {
                Merge::Same | Merge::Unique => {
                    vals.iter().all(|v| same(v, &vals[0])).then(|| vals[0])
                }
                Merge::First => vals.first().copied(),
                Merge::Only => (vals.len() == 1).then(|| vals[0]),
            };
            if let Some((shape, values)) = chosen {
                let path = format!("{name}/{key}");
                let chunks =
                    chunk_shape_for(&shape[..], values.dtype().item_size(), self.chunk_bytes);
                let spec = ArraySpec::new(shape.to_vec(), values.dtype(), chunks);
                let doc = spec
                    .to_metadata(self.out.format())
                    .ok_or_else(|| Error::option("no zarr spelling"))?;
                self.out
                    .write_array_meta(&path, &doc, &group_attrs("array", "0.2.0"))?;
                if !shape.contains(&0) {
                    let subset =
                        zarrs::array::ArraySubset::new_with_start_shape(vec![0, 0], shape.to_vec())
                            .map_err(|e| self.out.err(&path, e))?;
                    self.out
                        .array(&path)?
                        .store_array_subset(&subset, values.to_array_bytes())
                        .map_err(|e| self.out.err(&path, format!("cannot write: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Columns of the other axis' frames merged with `strategy` after
    /// reindexing onto the joined index.
    fn merge_frames(
        &self,
        frames: &[&Element],
        reindexers: &[Reindexer],
        strategy: Merge,
    ) -> Result<Vec<(String, Column)>> {
        let mut per_input: Vec<Vec<(String, Column)>> = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let idx: Vec<Option<usize>> = reindexers[i]
                .old_of_new
                .iter()
                .map(|&o| (o >= 0).then_some(o as usize))
                .collect();
            let mut cols = Vec::new();
            for name in frame_columns(f) {
                let Some(e) = f.child(&name) else { continue };
                let col = read_column(&self.inputs[i].store, e)?;
                let col = col.take(&idx).map_err(|err| self.fail(i, &e.path, err))?;
                cols.push((name, col));
            }
            per_input.push(cols);
        }
        let lists: Vec<Vec<String>> = per_input
            .iter()
            .map(|c| c.iter().map(|(n, _)| n.clone()).collect())
            .collect();
        let keys = match strategy {
            Merge::Same => join_keys(&lists, Join::Inner),
            _ => join_keys(&lists, Join::Outer),
        };
        let mut out = Vec::new();
        for key in keys {
            let vals: Vec<&Column> = per_input
                .iter()
                .filter_map(|c| c.iter().find(|(n, _)| *n == key).map(|(_, c)| c))
                .collect();
            let chosen = match strategy {
                Merge::Same | Merge::Unique => {
                    vals.iter().all(|v| v.equals(vals[0])).then(|| vals[0])
                }
                Merge::First => vals.first().copied(),
                Merge::Only => (vals.len() == 1).then(|| vals[0]),
            };
            if let Some(c) = chosen {
                out.push((key, c.clone()));
            }
        }
        Ok(out)
    }

    /// Plans one output matrix from per-input elements (`None`: absent).
    fn plan_matrix(
        &mut self,
        out_path: &str,
        els: &[Option<&Element>],
        layout: MatrixLayout<'_>,
    ) -> Result<()> {
        let MatrixLayout {
            space,
            shape,
            stack,
            along,
            diagonal,
        } = layout;
        let mut kinds = Vec::new();
        for (i, e) in els.iter().enumerate() {
            let Some(e) = e else {
                kinds.push(None);
                continue;
            };
            let (kind, dtype) = match e.encoding {
                Encoding::CsrMatrix | Encoding::CscMatrix => {
                    let data = e
                        .child("data")
                        .and_then(Element::array)
                        .ok_or_else(|| self.fail(i, &e.path, "sparse matrix lacks data"))?;
                    let kind = if e.encoding == Encoding::CsrMatrix {
                        SourceKind::Csr
                    } else {
                        SourceKind::Csc
                    };
                    (kind, data.dtype.clone())
                }
                Encoding::Array | Encoding::Plain
                    if e.array().is_some_and(|a| a.shape.len() == 2) =>
                {
                    (
                        SourceKind::Dense,
                        e.array().map(|a| a.dtype.clone()).unwrap_or(DType::Float64),
                    )
                }
                other => {
                    return Err(self.fail(
                        i,
                        &e.path,
                        format!(
                            "concatenating a {} element here is not supported yet",
                            other.name()
                        ),
                    ));
                }
            };
            if matches!(
                dtype,
                DType::String | DType::Other(_) | DType::Structured(_) | DType::Float16
            ) {
                return Err(self.fail(
                    i,
                    &e.path,
                    format!(
                        "matrices of dtype {} are not supported",
                        dtype.display_name()
                    ),
                ));
            }
            kinds.push(Some((kind, dtype)));
        }
        // block_diag always gives CSR; its blocks are never filled.
        let sparse = diagonal || kinds.iter().flatten().any(|(k, _)| *k != SourceKind::Dense);
        let fill = if diagonal {
            Scalar::Int(0)
        } else {
            self.opts.fill_value.unwrap_or(if sparse {
                Scalar::Int(0)
            } else {
                Scalar::Float(f64::NAN)
            })
        };
        let reindexers = &self.plan.spaces[space].reindexers;
        let mut dtype: Option<DType> = None;
        for (i, k) in kinds.iter().enumerate() {
            let d = match k {
                Some((_, d)) if diagonal => d.clone(),
                None if diagonal => DType::Bool,
                Some((_, d)) => {
                    let missing = reindexers[i].has_missing();
                    if !missing {
                        d.clone()
                    } else if sparse {
                        if fill.is_zero() {
                            d.clone()
                        } else {
                            promote(d, &fill.numpy_dtype()).unwrap_or(DType::Float64)
                        }
                    } else {
                        fill_promote(d, fill)
                            .map_err(|e| self.fail(i, els[i].map_or("", |e| &e.path), e))?
                    }
                }
                None if sparse && fill.is_zero() => DType::Float64,
                None => fill.numpy_dtype(),
            };
            dtype = Some(match dtype {
                None => d,
                Some(prev) => promote(&prev, &d)
                    .ok_or_else(|| Error::option(format!("{out_path}: incompatible dtypes")))?,
            });
        }
        let dtype = dtype.unwrap_or(DType::Float64);
        // Sources (CSC inputs read through a temporary CSR copy).
        let m_index = self.plan.matrices.len();
        let mut sources = Vec::new();
        let mut max_nnz = 0u64;
        for (i, (e, k)) in els.iter().zip(&kinds).enumerate() {
            let (Some(e), Some((kind, d))) = (e, k) else {
                sources.push(None);
                continue;
            };
            let store = self.inputs[i].store.root().to_path_buf();
            let (n_rows, n_cols) = matrix_shape(e).map(|s| (s[0], s[1])).unwrap_or((0, 0));
            let stored = match kind {
                SourceKind::Dense => n_rows * n_cols,
                _ => e
                    .child("data")
                    .and_then(Element::array)
                    .map_or(0, |a| a.shape[0]),
            };
            max_nnz += stored;
            let bytes = stored * d.item_size() as u64;
            let origin = (store.clone(), e.path.clone());
            let source = match kind {
                SourceKind::Csc => MatrixSource {
                    store: self
                        .out
                        .root()
                        .join(".anncat")
                        .join("tmp")
                        .join(format!("m{m_index}_in{i}.zarr")),
                    path: "m".to_string(),
                    kind: SourceKind::Csc,
                    dtype: d.clone(),
                    origin,
                    bytes,
                },
                _ => MatrixSource {
                    store,
                    path: e.path.clone(),
                    kind: *kind,
                    dtype: d.clone(),
                    origin,
                    bytes,
                },
            };
            sources.push(Some(source));
        }
        // Fill entries stored explicitly in sparse output.
        if sparse && !fill.is_zero() {
            let space_ref = &self.plan.spaces[space];
            for (i, inp) in self.plan.inputs.iter().enumerate() {
                let missing = space_ref.reindexers[i]
                    .old_of_new
                    .iter()
                    .filter(|&&o| o < 0)
                    .count() as u64;
                let missing = if sources[i].is_none() {
                    space_ref.n_other
                } else {
                    missing
                };
                max_nnz += missing * inp.n_axis;
            }
        }
        let item = dtype.item_size() as u64;
        let chunks = if sparse {
            let avg_row = (max_nnz / shape[0].max(1)).max(1);
            let data_chunk = (self.chunk_bytes / (item + 8)).max(1);
            let block_rows = (data_chunk / 2 / avg_row).clamp(1, (self.chunk_bytes / 8).max(1));
            [block_rows, data_chunk]
        } else {
            let c = chunk_shape_for(&shape, item as usize, self.chunk_bytes);
            [c[0], c[1]]
        };
        let m = MatrixPlan {
            out_path: out_path.to_string(),
            space,
            sources,
            sparse,
            dtype: dtype.clone(),
            shape,
            chunks,
            fill,
            max_nnz,
            stack,
            along: along
                .iter()
                .scan(0u64, |acc, &n| {
                    let start = *acc;
                    *acc += n;
                    Some([start, n])
                })
                .collect(),
            diagonal,
        };
        // Skeleton.
        if sparse {
            let mut attrs = group_attrs("csr_matrix", "0.1.0");
            attrs.insert("shape".into(), json!(shape));
            self.out.write_group(out_path, &attrs)?;
        } else {
            let spec = ArraySpec::new(shape.to_vec(), dtype.clone(), chunks.to_vec());
            let doc = spec
                .to_metadata(self.out.format())
                .ok_or_else(|| Error::option("no zarr spelling"))?;
            self.out
                .write_array_meta(out_path, &doc, &group_attrs("array", "0.2.0"))?;
        }
        self.plan.matrices.push(m);
        Ok(())
    }

    /// uns merged with `uns_merge` (empty without a strategy).
    fn plan_uns(&mut self) -> Result<()> {
        self.out.write_group("uns", &group_attrs("dict", "0.1.0"))?;
        let Some(strategy) = self.opts.uns_merge else {
            return Ok(());
        };
        let sources: Vec<(&Store, Option<&Element>)> = self
            .inputs
            .iter()
            .map(|i| (&i.store, i.tree.child("uns")))
            .collect();
        uns::merge_into(&self.out, "uns", &sources, strategy)
    }

    /// The task graph of every planned matrix.
    fn graph(&self, plan_file: &Path) -> Result<Graph> {
        let mut g = Graph::new();
        let mut conversions: std::collections::HashMap<PathBuf, TaskId> =
            std::collections::HashMap::new();
        for (mi, m) in self.plan.matrices.iter().enumerate() {
            let task = |block: u64, block2: u64| matrix::MatrixTask {
                plan: plan_file.to_path_buf(),
                matrix: mi,
                block,
                block2,
            };
            let mut pre = Vec::new();
            for (i, s) in m.sources.iter().enumerate() {
                let Some(s) = s else { continue };
                if s.kind != SourceKind::Csc {
                    continue;
                }
                let id = match conversions.get(&s.store) {
                    Some(id) => *id,
                    None => {
                        let id = g.add(
                            "concat.to_csr",
                            &matrix::ToCsrTask {
                                store: s.origin.0.clone(),
                                path: s.origin.1.clone(),
                                out: s.store.clone(),
                            },
                            vec![],
                            s.bytes * 3
                                + s.bytes / s.dtype.item_size().max(1) as u64 * 24
                                + (1 << 20),
                            format!("{}: convert input {i} to CSR", m.out_path),
                        )?;
                        conversions.insert(s.store.clone(), id);
                        id
                    }
                };
                pre.push(id);
            }
            let item = m.dtype.item_size() as u64;
            if m.sparse {
                let block_bytes =
                    m.chunks[0].max(1) * (m.max_nnz / m.shape[0].max(1) + 1) * (item + 24) * 2
                        + self.chunk_bytes * 4;
                let mut counts = Vec::new();
                for b in 0..matrix::n_blocks(m) {
                    counts.push(g.add(
                        "concat.sparse_count",
                        &task(b, 0),
                        pre.clone(),
                        block_bytes,
                        format!("{}: count block {b}", m.out_path),
                    )?);
                }
                let prefix = g.add(
                    "concat.sparse_prefix",
                    &task(0, 0),
                    counts.clone(),
                    64 * counts.len() as u64 + (1 << 20),
                    format!("{}: offsets", m.out_path),
                )?;
                for c in 0..matrix::n_indptr_chunks(m) {
                    let mut deps = Vec::new();
                    if let Some(&id) = counts.get(c as usize) {
                        deps.push(id);
                    }
                    deps.push(prefix);
                    g.add(
                        "concat.sparse_indptr",
                        &task(c, 0),
                        deps,
                        m.chunks[0] * 16 + (1 << 20),
                        format!("{}: indptr chunk {c}", m.out_path),
                    )?;
                }
                for k in 0..matrix::max_data_chunks(m) {
                    g.add(
                        "concat.sparse_data",
                        &task(k, 0),
                        vec![prefix],
                        block_bytes * 2 + m.chunks[1] * (item + 8) * 2,
                        format!("{}: data chunk {k}", m.out_path),
                    )?;
                }
            } else {
                let rows = m.shape[0].div_ceil(m.chunks[0]);
                let cols = m.shape[1].div_ceil(m.chunks[1]);
                let chunk_bytes = m.chunks[0] * m.chunks[1] * item;
                for r in 0..rows {
                    for c in 0..cols {
                        g.add(
                            "concat.dense_chunk",
                            &task(r, c),
                            pre.clone(),
                            chunk_bytes * 4 + self.chunk_bytes * 2,
                            format!("{}: chunk {r}.{c}", m.out_path),
                        )?;
                    }
                }
            }
        }
        Ok(g)
    }
}

/// numpy equality of two arrays with NaN equal to NaN; dtypes must match.
fn values_equal(a: &Values, b: &Values) -> bool {
    match (a, b) {
        (Values::F32(x), Values::F32(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
        }
        (Values::F64(x), Values::F64(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
        }
        _ => a == b,
    }
}

/// Where an output matrix sits: its joined other axis, shape, stacking
/// dimension, each input's length along it, and whether it is block-diagonal.
struct MatrixLayout<'b> {
    space: usize,
    shape: [u64; 2],
    stack: Axis,
    along: &'b [u64],
    diagonal: bool,
}

/// The 2-D shape of a matrix element (dense or sparse), if it is one.
fn matrix_shape(e: &Element) -> Option<[u64; 2]> {
    match e.encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            let s = e.meta.attrs.get("shape")?.as_array()?;
            Some([s.first()?.as_u64()?, s.get(1)?.as_u64()?])
        }
        _ => {
            let a = e.array()?;
            (a.shape.len() == 2).then(|| [a.shape[0], a.shape[1]])
        }
    }
}
