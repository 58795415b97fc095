//! `anncat concat`: the semantics of `anndata.concat`, planned from metadata
//! and executed as a graph of chunk tasks.
//!
//! The planner opens and validates every input first (nothing is written
//! before all inputs check out), computes both axes' names, the join and one
//! reindexer per input, writes the annotations (obs / var), uns and the
//! skeleton of every matrix, and emits a task graph whose write tasks each
//! own whole output chunks. The graph runs on any `Executor` (threads of one
//! process or a cluster: see `anncat::run_concat`, over `prepare_concat`);
//! the output is consolidated and renamed into place only when complete.

mod awkward;
mod axis_frame;
pub mod column_concat;
mod csc;
mod distinct;
pub mod frame;
mod frame_distinct;
pub mod frame_tasks;
mod in_order;
pub mod index;
mod mappings;
pub mod matrix;
mod merge;
pub mod name_lists;
pub mod options;
pub mod plan;
pub mod run;
mod tasks;
pub mod uns;
pub mod values;

use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::{Map, Value, json};

use self::axis_frame::{FramePart, Text, plan_axis_frame};
use self::frame::{Column, read_column, write_frame};
use self::index::{Join, Reindexer, read_strings};
use self::name_lists::NameLists;
pub use self::options::{ConcatOptions, Merge, Sharding, parse_size};
use self::plan::{Axis, ConcatPlan, InputInfo, Space};
pub use self::run::{PreparedConcat, prepare_concat};
use self::tasks::MatrixLayout;
use crate::anndata::OutputStore;
use crate::anndata::element::{Element, Encoding};
use crate::anndata::{DType, Store};
use crate::error::{Error, Result};

/// What a concatenation produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
pub(crate) struct Input {
    pub(crate) store: Store,
    pub(crate) tree: Element,
}

/// A data frame's index array and the index's name (None when the index
/// column is called `_index`), from metadata only.
pub(crate) fn frame_index_element<'e>(
    store: &Store,
    frame: &'e Element,
) -> Result<(&'e Element, Option<String>)> {
    let col = frame
        .meta
        .attrs
        .get("_index")
        .and_then(Value::as_str)
        .ok_or_else(|| store.err(&frame.path, "dataframe lacks _index"))?;
    let e = frame
        .child(col)
        .ok_or_else(|| store.err(&frame.path, format!("lacks its index column {col:?}")))?;
    // pandas 3 (anndata 0.13) stores a string index as a
    // `nullable-string-array`: its names are the `values` member, and no
    // name may be missing.
    let names = if e.encoding == Encoding::NullableStringArray {
        let values = e
            .child("values")
            .ok_or_else(|| store.err(&e.path, "nullable-string-array lacks \"values\""))?;
        let mask = e
            .child("mask")
            .ok_or_else(|| store.err(&e.path, "nullable-string-array lacks \"mask\""))?;
        check_no_missing_names(store, mask)?;
        values
    } else {
        e
    };
    if !names
        .array()
        .is_some_and(|a| a.dtype == DType::String && a.shape.len() == 1)
    {
        let what = match e.encoding {
            Encoding::NullableStringArray | Encoding::StringArray => "is not 1-D",
            _ => "is not a string index (anndata writes obs and var names as strings)",
        };
        return Err(store.err(&names.path, format!("index {what}")));
    }
    Ok((names, (col != "_index").then(|| col.to_string())))
}

/// Fails if the mask of a `nullable-string-array` index marks any name
/// missing (anndata cannot concatenate an index holding NaN either: its
/// names must be strings). Read a block at a time.
fn check_no_missing_names(store: &Store, mask: &Element) -> Result<()> {
    let len = match mask.array() {
        Some(a) if a.shape.len() == 1 => a.shape[0],
        _ => return Err(store.err(&mask.path, "index mask is not a 1-D array")),
    };
    const BLOCK: u64 = 1 << 20;
    let mut start = 0;
    while start < len {
        let n = BLOCK.min(len - start);
        let dtype = mask.array().map(|a| a.dtype.clone()).unwrap_or(DType::Bool);
        let values = matrix::read_values(store, &mask.path, &dtype, vec![start], vec![n])?;
        if let Some(row) = values.nonzero_mask().iter().position(|&m| m) {
            return Err(store.err(
                &mask.path,
                format!(
                    "index name {} is missing (NaN); names must be strings",
                    start + row as u64
                ),
            ));
        }
        start += n;
    }
    Ok(())
}

/// The names of a data frame's rows, and the index's name.
pub(crate) fn frame_index(store: &Store, frame: &Element) -> Result<(Vec<String>, Option<String>)> {
    let (e, name) = frame_index_element(store, frame)?;
    Ok((read_strings(store, &e.path)?, name))
}

pub(crate) fn frame_columns(frame: &Element) -> Vec<String> {
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
pub(crate) fn common_name(names: &[Option<String>]) -> Option<String> {
    let first = names.first()?.clone();
    names.iter().all(|n| *n == first).then_some(first).flatten()
}

/// Keys of child elements: intersection in the first's order, or union in
/// order of first appearance (anndata's `intersect_keys` / `union_keys`).
pub(crate) fn join_keys(lists: &[Vec<String>], join: Join) -> Vec<String> {
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

pub(crate) fn child_names(e: Option<&Element>) -> Vec<String> {
    e.map(|e| e.children.iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default()
}

pub(crate) fn group_attrs(encoding: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("encoding-type".into(), json!(encoding));
    m.insert("encoding-version".into(), json!(version));
    m
}

/// One AnnData-like object per input: the main object, or its raw.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    /// The group holding X / var / varm (the root, or raw).
    pub(crate) group: &'a Element,
    /// The obs frame (raw borrows the root's, index only).
    pub(crate) obs: &'a Element,
    /// Whether obs columns count (false for raw).
    pub(crate) obs_columns: bool,
}

pub(crate) struct Planner<'a> {
    pub(crate) opts: &'a ConcatOptions,
    pub(crate) keys: &'a [String],
    pub(crate) inputs: &'a [Input],
    pub(crate) out: OutputStore,
    pub(crate) plan: ConcatPlan,
    pub(crate) shape: [u64; 2],
    pub(crate) chunk_bytes: u64,
    /// The joined other axis' names of the main object, and how its index
    /// is stored (the index of merged {other}m data frames).
    pub(crate) other_names: Vec<String>,
    pub(crate) other_index_na: frame::IndexNa,
}

impl<'a> Planner<'a> {
    fn new(
        opts: &'a ConcatOptions,
        keys: &'a [String],
        inputs: &'a [Input],
        out: OutputStore,
    ) -> Result<Self> {
        let mut out = out;
        let (chunk_bytes, shard_inner_bytes) =
            opts.write_units(out.format() == crate::anndata::ZarrFormat::V3);
        out.set_sharding(shard_inner_bytes);
        let plan = ConcatPlan {
            output: out.root().to_path_buf(),
            format: out.format(),
            axis: opts.axis,
            inputs: Vec::new(),
            spaces: Vec::new(),
            matrices: Vec::new(),
            frames: Vec::new(),
            shard_inner_bytes,
            stores: Default::default(),
        };
        Ok(Planner {
            opts,
            keys,
            inputs,
            out,
            plan,
            shape: [0, 0],
            chunk_bytes,
            other_names: Vec::new(),
            other_index_na: None,
        })
    }

    /// Whether the inputs were written by anndata 0.13 with pandas 3 (every
    /// input's obs index is a `nullable-string-array`), whose `concat`
    /// differs from 0.12's where noted: anncat follows the version that
    /// wrote the inputs.
    pub(crate) fn written_by_0_13(&self) -> bool {
        self.inputs.iter().all(|inp| {
            inp.tree
                .child("obs")
                .is_some_and(|obs| frame::index_na(obs).is_some())
        })
    }

    /// Rows per block (and per chunk) of data frame columns: a block of
    /// strings costs about 64 bytes a row in memory.
    pub(crate) fn frame_block_rows(&self) -> u64 {
        (self.chunk_bytes / 64).max(1)
    }

    pub(crate) fn fail(&self, input: usize, path: &str, message: impl std::fmt::Display) -> Error {
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
        // The frames of both axes: names of the other axis (to join), only
        // the length of the concatenated one.
        let frame_of = |i: usize, v: &View<'a>, name: &str| -> Result<&'a Element> {
            match name {
                "obs" => Ok(v.obs),
                _ => v
                    .group
                    .child("var")
                    .ok_or_else(|| self.fail(i, &at("var"), "missing var")),
            }
        };
        let mut axis_frames: Vec<&'a Element> = Vec::new();
        let mut other_frames: Vec<&'a Element> = Vec::new();
        for (i, v) in views.iter().enumerate() {
            axis_frames.push(frame_of(i, v, axis.name())?);
            other_frames.push(frame_of(i, v, axis.other_name())?);
        }
        let mut axis_index = Vec::new();
        // Each input's names along the other axis (once per distinct
        // list), and its index's name. The inputs are read in parallel (an
        // .h5ad's reads take HDF5's lock in turn); the first input's error
        // in order is the one reported.
        let mut other_names = NameLists::default();
        let mut other_index_names: Vec<Option<String>> = Vec::new();
        let other_frame = match axis {
            Axis::Obs => at("var"),
            Axis::Var => "obs".to_string(),
        };
        let inputs = self.inputs;
        // A batch at a time: the lists held at once are a batch's (as
        // strings) and the distinct ones (as ids), not every input's.
        let batch = 4 * rayon::current_num_threads().max(4);
        for first in (0..axis_frames.len()).step_by(batch) {
            let last = (first + batch).min(axis_frames.len());
            let read: Vec<Result<_>> = (first..last)
                .into_par_iter()
                .map(|i| {
                    let store = &inputs[i].store;
                    let axis_index = frame_index_element(store, axis_frames[i])?;
                    let (names, name) = frame_index(store, other_frames[i])?;
                    let hash = NameLists::hash(&names);
                    Ok((axis_index, names, hash, name))
                })
                .collect();
            for (i, input) in (first..last).zip(read) {
                let (index, names, hash, name) = input?;
                other_names.push(names, hash).map_err(|dup| {
                    inputs[i].store.err(
                        &other_frame,
                        format!("duplicate name {:?} on the axis being joined", dup.0),
                    )
                })?;
                axis_index.push(index);
                other_index_names.push(name);
            }
        }
        let (joined, other_space) = other_names.join(join)?;
        drop(other_names);
        let other_na = frame::common_index_na(other_frames.iter().map(|f| frame::index_na(f)));
        if main && self.opts.merge.is_some() {
            self.other_names = joined.clone();
            self.other_index_na = other_na;
        }
        let along: Vec<u64> = axis_index
            .iter()
            .map(|(e, _)| e.array().map_or(0, |a| a.shape[0]))
            .collect();
        let n_axis: u64 = along.iter().sum();
        let n_other = other_space.n_other;
        let space = self.plan.spaces.len();
        self.plan.spaces.push(other_space);
        if main {
            let mut offset = 0;
            for (&n, inp) in along.iter().zip(self.inputs) {
                self.plan.inputs.push(InputInfo {
                    path: inp.store.root().to_path_buf(),
                    n_axis: n,
                    offset,
                });
                offset += n;
            }
        }
        let rows_chunk = self.frame_block_rows();

        // Annotation of the concatenation axis, a block of rows at a time
        // (raw keeps only its var).
        let parts: Vec<FramePart<'a>> = axis_index
            .iter()
            .enumerate()
            .map(|(i, (index, _))| FramePart {
                store: &self.inputs[i].store,
                frame: Some(axis_frames[i]),
                index,
                rows: along[i],
                suffix: self
                    .opts
                    .index_unique
                    .as_ref()
                    .map(|sep| format!("{sep}{}", self.keys[i]))
                    .unwrap_or_default(),
                index_na: frame::index_na(axis_frames[i]),
            })
            .collect();
        let axis_name = common_name(
            &axis_index
                .iter()
                .map(|(_, n)| n.clone())
                .collect::<Vec<_>>(),
        );
        if main || axis == Axis::Var {
            let with_columns = axis == Axis::Var || views.iter().all(|v| v.obs_columns);
            let columns = if with_columns {
                let lists: Vec<Vec<String>> =
                    axis_frames.iter().map(|f| frame_columns(f)).collect();
                join_keys(&lists, join)
            } else {
                Vec::new()
            };
            let label = self
                .opts
                .label
                .as_deref()
                .filter(|_| main || axis == Axis::Var)
                .map(|l| (l, self.keys));
            let planned = plan_axis_frame(
                &self.out,
                &at(axis.name()),
                axis_name.as_deref(),
                &parts,
                &columns,
                label,
                rows_chunk,
                Text::Categorize,
            )?;
            self.plan.frames.extend(planned);
        }
        // Annotation of the other axis: merged columns.
        let other_name = common_name(&other_index_names);
        let mut other_columns = match self.opts.merge {
            Some(strategy) if main => {
                self.merge_frames(&other_frames, &self.plan.spaces[space], strategy)?
            }
            _ => Vec::new(),
        };
        if main || axis.other_name() == "var" {
            frame::strings_to_categoricals(&mut other_columns);
            write_frame(
                &self.out,
                &at(axis.other_name()),
                (other_name.as_deref(), &other_na),
                &joined,
                &other_columns,
                rows_chunk,
            )?;
        }
        let shape = match axis {
            Axis::Obs => [n_axis, n_other],
            Axis::Var => [n_other, n_axis],
        };

        // X and layers share one layout.
        let layout = MatrixLayout {
            space,
            shape,
            stack: axis,
            along: &along,
            diagonal: false,
            csc: self.opts.csc_output,
        };
        let xs: Vec<Option<&Element>> = views.iter().map(|v| v.group.child("X")).collect();
        if xs.iter().any(Option::is_some) {
            if xs.iter().any(Option::is_none) {
                return Err(Error::data(
                    "some inputs have X and others do not (anndata cannot concatenate that either)",
                ));
            }
            self.plan_matrix(&at("X"), &xs, layout)?;
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
                self.plan_matrix(&at(&format!("layers/{key}")), &els, layout)?;
            }
            self.plan_axis_mappings(views, prefix, &along, &parts, axis_name.as_deref())?;
            for name in ["obsp", "varp"] {
                self.out.write_group(name, &group_attrs("dict", "0.1.0"))?;
            }
            if self.opts.pairwise {
                self.plan_pairwise(views, &along)?;
            }
        } else if axis == Axis::Var {
            self.plan_axis_mappings(views, prefix, &along, &parts, axis_name.as_deref())?;
        } else {
            self.out
                .write_group(&at("varm"), &group_attrs("dict", "0.1.0"))?;
        }
        Ok(shape)
    }

    /// Columns of the other axis' frames merged with `strategy` after
    /// reindexing onto the joined index.
    fn merge_frames(
        &self,
        frames: &[&Element],
        space: &Space,
        strategy: Merge,
    ) -> Result<Vec<(String, Column)>> {
        let per_input: Vec<Vec<(String, Column)>> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| self.reindexed_frame(i, f, space.reindexer(i), false))
            .collect::<Result<_>>()?;
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

    /// Input `i`'s data frame `frame` read whole (it spans the other axis
    /// only) and reindexed onto the joined axis as anndata's reindexer does:
    /// pandas `reindex`, and under anndata 0.13 a bool column gaining
    /// missing rows becomes nullable. With `nan_text`, an object string
    /// column gaining missing rows keeps them as the text "nan", as anndata
    /// stores such frames outside obs / var.
    pub(crate) fn reindexed_frame(
        &self,
        i: usize,
        frame: &Element,
        reindexer: &Reindexer,
        nan_text: bool,
    ) -> Result<Vec<(String, Column)>> {
        let idx: Vec<Option<usize>> = reindexer
            .old_of_new()
            .iter()
            .map(|&o| (o >= 0).then_some(o as usize))
            .collect();
        let missing = idx.iter().any(Option::is_none);
        let nullable_bools = self.written_by_0_13();
        let rows = reindexer.new_of_old.len();
        let mut columns = Vec::new();
        for name in frame_columns(frame) {
            let e = frame
                .child(&name)
                .ok_or_else(|| self.fail(i, &frame.path, format!("lacks its column {name:?}")))?;
            let col = read_column(&self.inputs[i].store, e)?;
            if col.len() != rows {
                return Err(self.fail(
                    i,
                    &e.path,
                    format!("has {} rows but the index has {rows}", col.len()),
                ));
            }
            let mut col = match &col {
                Column::Str(v) if nan_text && missing => Column::Str(
                    idx.iter()
                        .map(|i| i.map_or_else(|| "nan".to_string(), |i| v[i].clone()))
                        .collect(),
                ),
                _ => col.take(&idx).map_err(|err| self.fail(i, &e.path, err))?,
            };
            if nullable_bools {
                col = col.bool_object_to_nullable();
            }
            columns.push((name, col));
        }
        Ok(columns)
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
}

/// The 2-D shape of a matrix element (dense or sparse), if it is one.
pub(crate) fn matrix_shape(e: &Element) -> Option<[u64; 2]> {
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
