//! {axis}m, {axis}p and {other}m: arrays concatenated along the axis and
//! joined positionally on their second dimension, pairwise matrices placed
//! block-diagonally, and the other axis' mappings merged by strategy.

use super::axis_frame::{FramePart, Text, write_axis_frame};
use super::index::{Join, Reindexer};
use super::options::Merge;
use super::plan::{Axis, Space};
use super::tasks::MatrixLayout;
use super::values::{Scalar, Values, fill_promote};
use super::{Planner, View, child_names, frame_columns, group_attrs, join_keys, matrix_shape};
use crate::anndata::element::{Element, Encoding};
use crate::anndata::layout::{ArraySpec, chunk_shape_for};
use crate::error::{Error, Result};

impl<'a> Planner<'a> {
    /// {axis}m: arrays concatenated along the axis, joined positionally on
    /// their second dimension, and data frames concatenated like the axis
    /// annotation (rows of `parts`, index named `index_name`); {other}m is
    /// dropped unless merged.
    pub(crate) fn plan_axis_mappings(
        &mut self,
        views: &[View<'a>],
        prefix: &str,
        along: &[u64],
        parts: &[FramePart<'a>],
        index_name: Option<&str>,
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
            if els
                .iter()
                .flatten()
                .any(|e| e.encoding == Encoding::DataFrame)
            {
                self.plan_mapping_frame(&at(&format!("{m_name}/{key}")), &els, parts, index_name)?;
                continue;
            }
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

    /// A data frame in {axis}m: as `pd.concat` of the inputs' frames after
    /// anndata's dtype unification (columns joined like the key, an input
    /// without the key has every value missing, `fill_value` does not
    /// apply), indexed by the concatenated axis names and stored as anndata
    /// stores such frames (no `strings_to_categoricals`).
    fn plan_mapping_frame(
        &self,
        path: &str,
        els: &[Option<&'a Element>],
        parts: &[FramePart<'a>],
        index_name: Option<&str>,
    ) -> Result<()> {
        if let Some((i, e)) = els.iter().enumerate().find_map(|(i, e)| {
            e.filter(|e| e.encoding != Encoding::DataFrame)
                .map(|e| (i, e))
        }) {
            return Err(self.fail(
                i,
                &e.path,
                format!(
                    "is a {} where other inputs have a data frame (anndata cannot concatenate that either)",
                    e.encoding.name()
                ),
            ));
        }
        let lists: Vec<Vec<String>> = els.iter().flatten().map(|f| frame_columns(f)).collect();
        let columns = join_keys(&lists, self.opts.join);
        let parts: Vec<FramePart<'a>> = parts
            .iter()
            .zip(els)
            .map(|(p, e)| FramePart {
                frame: *e,
                ..p.clone()
            })
            .collect();
        write_axis_frame(
            &self.out,
            path,
            index_name,
            &parts,
            &columns,
            None,
            (self.chunk_bytes / 8).max(1),
            Text::Keep,
        )
    }

    /// {axis}p with `pairwise`: each key's matrices as one block-diagonal
    /// CSR matrix (keys joined like layers; a missing one is an empty block).
    pub(crate) fn plan_pairwise(&mut self, views: &[View<'a>], along: &[u64]) -> Result<()> {
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
    pub(crate) fn merge_other_mappings(
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
                let values = super::matrix::read_values(
                    store,
                    &e.path,
                    &a.dtype,
                    vec![0, 0],
                    a.shape.clone(),
                )?;
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
