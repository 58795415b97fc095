//! {axis}m, {axis}p and {other}m: arrays concatenated along the axis and
//! joined positionally on their second dimension, pairwise matrices placed
//! block-diagonally, and the other axis' mappings merged by strategy.

use super::awkward::concat_awkward;
use super::axis_frame::{FramePart, Text, plan_axis_frame};
use super::index::{Join, Reindexer};
use super::plan::{Axis, Space};
use super::tasks::MatrixLayout;
use super::{Planner, View, child_names, frame_columns, group_attrs, join_keys, matrix_shape};
use crate::anndata::element::{Element, Encoding};
use crate::error::Result;

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
                self.merge_other_elements(views, other_m, false, strategy)?;
                let other_p = if axis == Axis::Obs { "varp" } else { "obsp" };
                self.out
                    .write_group(other_p, &group_attrs("dict", "0.1.0"))?;
                self.merge_other_elements(views, other_p, true, strategy)?;
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
                .any(|e| e.encoding == Encoding::AwkwardArray)
            {
                let with_stores: Vec<_> = self
                    .inputs
                    .iter()
                    .zip(&els)
                    .map(|(inp, e)| (&inp.store, *e))
                    .collect();
                concat_awkward(
                    &self.out,
                    &at(&format!("{m_name}/{key}")),
                    &with_stores,
                    along,
                    self.opts.join,
                )?;
                continue;
            }
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
            let widths: Vec<u64> = widths.iter().map(|w| w.unwrap_or(0)).collect();
            let space = self.plan.spaces.len();
            self.plan.spaces.push(Space::by_key(width, &widths, |&w| {
                Reindexer::from_new_of_old(
                    (0..w as i32)
                        .map(|j| if (j as u64) < width { j } else { -1 })
                        .collect(),
                    width as usize,
                )
            }));
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
                    csc: false,
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
        &mut self,
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
        let planned = plan_axis_frame(
            &self.out,
            path,
            index_name,
            &parts,
            &columns,
            None,
            self.frame_block_rows(),
            Text::Keep,
        )?;
        self.plan.frames.extend(planned);
        Ok(())
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
            self.plan
                .spaces
                .push(Space::by_key(n, &vec![(); along.len()], |_| Reindexer {
                    new_of_old: Vec::new(),
                    n_new: 0,
                    identity: true,
                }));
            self.plan_matrix(
                &format!("{name}/{key}"),
                &els,
                MatrixLayout {
                    space,
                    shape: [n, n],
                    stack: Axis::Obs,
                    along,
                    diagonal: true,
                    csc: false,
                },
            )?;
        }
        Ok(())
    }
}
