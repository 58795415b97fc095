//! `--merge` of the other axis' mappings ({other}m, {other}p): each input's
//! elements reindexed onto the joined other axis (the rows of {other}m;
//! rows and columns of {other}p), then kept or dropped by the strategy, as
//! anndata's `merge_*` functions decide: dense equality is dtype-sensitive
//! and NaN-aware; sparse equality compares values only (any dtype, CSR or
//! CSC, an explicit zero equal to none); the first input's element is the
//! one kept. These elements span the other axis only (genes when stacking
//! cells), so they are merged in memory.

use super::Planner;
use super::awkward::AwkwardValue;
use super::frame::{Column, IndexNa, write_frame};
use super::index::{Join, Reindexer};
use super::matrix::{index_dtype, index_dtype_for, read_csr_rows};
use super::options::Merge;
use super::values::{Scalar, Values, fill_promote};
use super::{View, child_names, group_attrs, join_keys};
use crate::anndata::OutputStore;
use crate::anndata::element::{Element, Encoding};
use crate::anndata::layout::{ArraySpec, chunk_shape_for};
use crate::anndata::{DType, Store};
use crate::error::Result;

/// One element after reindexing, ready to compare and write.
#[derive(Debug, Clone)]
enum Merged {
    /// A dense 2-D array (row-major values).
    Dense { shape: [u64; 2], values: Values },
    /// A data frame (in {other}m), its columns reindexed onto the joined
    /// axis, which becomes its index.
    Frame {
        /// Rows.
        rows: u64,
        /// Columns in order.
        columns: Vec<(String, Column)>,
    },
    /// An awkward array (in {other}m), reindexed as anndata reindexes it.
    Awkward(AwkwardValue),
    /// A sparse matrix as entries sorted in its format's major order.
    Sparse {
        csr: bool,
        shape: [u64; 2],
        /// (row, column) of each stored entry.
        entries: Vec<(u64, u64)>,
        data: Values,
    },
}

/// Dense equality as anndata's `equal` for arrays: same dtype, same shape,
/// same values with NaN equal to NaN.
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

impl Merged {
    /// Non-zero entries as ((row, column), value), row-major.
    fn nonzero(&self) -> Result<Vec<((u64, u64), f64)>> {
        let mut out: Vec<((u64, u64), f64)> = match self {
            Merged::Frame { .. } | Merged::Awkward(_) => Vec::new(),
            Merged::Dense { shape, values } => {
                let Values::F64(v) = values.cast(&DType::Float64)? else {
                    return Ok(Vec::new());
                };
                v.iter()
                    .enumerate()
                    .filter(|(_, x)| **x != 0.0)
                    .map(|(k, &x)| ((k as u64 / shape[1], k as u64 % shape[1]), x))
                    .collect()
            }
            Merged::Sparse { entries, data, .. } => {
                let Values::F64(v) = data.cast(&DType::Float64)? else {
                    return Ok(Vec::new());
                };
                entries
                    .iter()
                    .zip(v)
                    .filter(|(_, x)| *x != 0.0)
                    .map(|(&e, x)| (e, x))
                    .collect()
            }
        };
        out.sort_by_key(|(e, _)| *e);
        Ok(out)
    }

    fn shape(&self) -> [u64; 2] {
        match self {
            Merged::Dense { shape, .. } | Merged::Sparse { shape, .. } => *shape,
            Merged::Frame { rows, columns } => [*rows, columns.len() as u64],
            Merged::Awkward(a) => [a.len(), 0],
        }
    }

    /// anndata's `equal(later, first)`: dense against dense is
    /// dtype-sensitive; sparse against sparse compares stored values only;
    /// a dense later element is compared with the sparse first one made
    /// dense; a sparse later element never equals a dense first one.
    fn same_as_first(&self, first: &Merged) -> Result<bool> {
        if self.shape() != first.shape() {
            return Ok(false);
        }
        Ok(match (first, self) {
            // pandas `DataFrame.equals`: same columns in order, each of the
            // same dtype and values (NaN equal to NaN).
            (Merged::Frame { columns: a, .. }, Merged::Frame { columns: b, .. }) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((na, ca), (nb, cb))| na == nb && ca.equals(cb))
            }
            (Merged::Frame { .. }, _) | (_, Merged::Frame { .. }) => false,
            // `ak.almost_equal`.
            (Merged::Awkward(a), Merged::Awkward(b)) => b.almost_equal(a),
            (Merged::Awkward(_), _) | (_, Merged::Awkward(_)) => false,
            (Merged::Dense { values: a, .. }, Merged::Dense { values: b, .. }) => {
                values_equal(a, b)
            }
            (Merged::Dense { .. }, Merged::Sparse { .. }) => false,
            (Merged::Sparse { data, .. }, Merged::Dense { values, .. }) => {
                data.dtype() == values.dtype() && nonzero_equal(&first.nonzero()?, &self.nonzero()?)
            }
            (Merged::Sparse { .. }, Merged::Sparse { .. }) => {
                nonzero_equal(&first.nonzero()?, &self.nonzero()?)
            }
        })
    }
}

fn nonzero_equal(a: &[((u64, u64), f64)], b: &[((u64, u64), f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && (x.1 == y.1 || (x.1.is_nan() && y.1.is_nan())))
}

/// Reads a sparse element whole as (row, column) entries.
fn read_sparse(store: &Store, e: &Element) -> Result<Merged> {
    let csr = e.encoding == Encoding::CsrMatrix;
    let shape = super::matrix_shape(e).ok_or_else(|| store.err(&e.path, "lacks its shape"))?;
    let dtype = index_dtype(store, &format!("{}/data", e.path))?;
    let (major, minor) = if csr {
        (shape[0], shape[1])
    } else {
        (shape[1], shape[0])
    };
    // Every major slice, as the matrix kernels read them (indptr was
    // checked when the input was opened, each index is checked to be
    // below `minor` as it is read).
    let rows = read_csr_rows(
        &Default::default(),
        store.root(),
        &e.path,
        &dtype,
        0..major,
        minor,
        true,
    )?;
    let mut entries = Vec::with_capacity(rows.indices.len());
    for m in 0..major as usize {
        for &j in &rows.indices[rows.indptr[m]..rows.indptr[m + 1]] {
            let j = u64::from(j);
            entries.push(if csr { (m as u64, j) } else { (j, m as u64) });
        }
    }
    let data = rows.data;
    Ok(Merged::Sparse {
        csr,
        shape,
        entries,
        data,
    })
}

/// Reindexes rows (and columns too when `both`) onto the joined axis.
fn reindex(m: Merged, r: &Reindexer, both: bool) -> Result<Merged> {
    if r.identity {
        return Ok(m);
    }
    let n = r.n_new;
    let old_of_new = r.old_of_new();
    match m {
        // Reindexed when read.
        read @ (Merged::Frame { .. } | Merged::Awkward(_)) => Ok(read),
        Merged::Dense { shape, values } => {
            let cols: Vec<Option<u64>> = if both {
                old_of_new
                    .iter()
                    .map(|&o| (o >= 0).then_some(o as u64))
                    .collect()
            } else {
                (0..shape[1]).map(Some).collect()
            };
            let dtype = if r.has_missing() {
                fill_promote(&values.dtype(), Scalar::Float(f64::NAN))?
            } else {
                values.dtype()
            };
            let idx: Vec<Option<usize>> = old_of_new
                .iter()
                .flat_map(|&o| {
                    cols.iter().map(move |c| match (o >= 0, c) {
                        (true, Some(c)) => Some((o as u64 * shape[1] + c) as usize),
                        _ => None,
                    })
                })
                .collect();
            Ok(Merged::Dense {
                shape: [n, cols.len() as u64],
                values: values.cast(&dtype)?.take(&idx, Scalar::Float(f64::NAN)),
            })
        }
        Merged::Sparse {
            shape,
            entries,
            data,
            ..
        } => {
            // Reindexing is a product with a selection matrix in anndata:
            // explicit zeros do not survive it.
            let nonzero = data.nonzero_mask();
            let map = |i: u64| r.new_of_old.get(i as usize).map_or(-1, |&n| i64::from(n));
            let mut kept: Vec<((u64, u64), usize)> = Vec::new();
            for (k, &(row, col)) in entries.iter().enumerate() {
                let (nr, nc) = (map(row), if both { map(col) } else { col as i64 });
                if nr >= 0 && nc >= 0 && nonzero[k] {
                    kept.push(((nr as u64, nc as u64), k));
                }
            }
            // scipy makes the selection product CSR, whatever the input.
            kept.sort_by_key(|(e, _)| *e);
            let positions: Vec<usize> = kept.iter().map(|(_, k)| *k).collect();
            Ok(Merged::Sparse {
                csr: true,
                shape: [n, if both { n } else { shape[1] }],
                entries: kept.into_iter().map(|(e, _)| e).collect(),
                data: data.select(&positions),
            })
        }
    }
}

/// Writes a 2-D element.
fn write_merged(
    out: &OutputStore,
    path: &str,
    m: &Merged,
    chunk_bytes: u64,
    index: (&[String], &IndexNa),
) -> Result<()> {
    let array = |path: &str, shape: Vec<u64>, values: &Values, attrs| -> Result<()> {
        let chunks = chunk_shape_for(&shape, values.dtype().item_size(), chunk_bytes);
        let spec = ArraySpec::new(shape.clone(), values.dtype(), chunks);
        out.write_array(path, spec, &attrs)?;
        if !shape.contains(&0) {
            super::matrix::write_values(out, path, vec![0; shape.len()], shape, values)?;
        }
        Ok(())
    };
    match m {
        Merged::Awkward(a) => a.write(out, path),
        Merged::Dense { shape, values } => {
            array(path, shape.to_vec(), values, group_attrs("array", "0.2.0"))
        }
        // Stored as anndata stores data frames outside obs / var: no
        // strings_to_categoricals, indexed by the joined names.
        Merged::Frame { columns, .. } => write_frame(
            out,
            path,
            (None, index.1),
            index.0,
            columns,
            chunk_bytes / 64,
        ),
        Merged::Sparse {
            csr,
            shape,
            entries,
            data,
        } => {
            let mut attrs = group_attrs(if *csr { "csr_matrix" } else { "csc_matrix" }, "0.1.0");
            attrs.insert("shape".into(), serde_json::json!(shape));
            out.write_group(path, &attrs)?;
            let major = if *csr { shape[0] } else { shape[1] };
            let index = index_dtype_for(entries.len() as u64, *shape);
            let mut indptr = vec![0i64; major as usize + 1];
            let mut indices = Vec::with_capacity(entries.len());
            for &(row, col) in entries {
                let (mj, mn) = if *csr { (row, col) } else { (col, row) };
                indptr[mj as usize + 1] += 1;
                indices.push(mn as i64);
            }
            for k in 1..indptr.len() {
                indptr[k] += indptr[k - 1];
            }
            let as_index = |v: Vec<i64>| -> Result<Values> { Values::I64(v).cast(&index) };
            let none = serde_json::Map::new();
            array(
                &format!("{path}/data"),
                vec![data.len() as u64],
                data,
                none.clone(),
            )?;
            array(
                &format!("{path}/indices"),
                vec![indices.len() as u64],
                &as_index(indices)?,
                none.clone(),
            )?;
            array(
                &format!("{path}/indptr"),
                vec![major + 1],
                &as_index(indptr)?,
                none,
            )
        }
    }
}

impl<'a> Planner<'a> {
    /// {other}m (`pairwise`: false) or {other}p (true) merged with
    /// `strategy` into the group `name`.
    pub(crate) fn merge_other_elements(
        &mut self,
        views: &[View<'a>],
        name: &str,
        pairwise: bool,
        strategy: Merge,
    ) -> Result<()> {
        let groups: Vec<Option<&Element>> = views.iter().map(|v| v.group.child(name)).collect();
        let lists: Vec<Vec<String>> = groups.iter().map(|g| child_names(*g)).collect();
        let join = if strategy == Merge::Same {
            Join::Inner
        } else {
            Join::Outer
        };
        // Key by key, reading only the elements the strategy looks at: at
        // most two are held at once.
        for key in join_keys(&lists, join) {
            let holders: Vec<(usize, &Element)> = groups
                .iter()
                .enumerate()
                .filter_map(|(i, g)| g.and_then(|g| g.child(&key)).map(|e| (i, e)))
                .collect();
            let chosen = match strategy {
                Merge::First => match holders.first() {
                    Some(&(i, e)) => Some(self.load_merged(i, e, pairwise)?),
                    None => None,
                },
                Merge::Only if holders.len() == 1 => {
                    Some(self.load_merged(holders[0].0, holders[0].1, pairwise)?)
                }
                Merge::Only => None,
                Merge::Same | Merge::Unique => {
                    let Some(&(i, e)) = holders.first() else {
                        continue;
                    };
                    let first = self.load_merged(i, e, pairwise)?;
                    let mut all = true;
                    for &(j, other) in &holders[1..] {
                        if !self
                            .load_merged(j, other, pairwise)?
                            .same_as_first(&first)?
                        {
                            all = false;
                            break;
                        }
                    }
                    all.then_some(first)
                }
            };
            if let Some(m) = chosen {
                write_merged(
                    &self.out,
                    &format!("{name}/{key}"),
                    &m,
                    self.chunk_bytes,
                    (&self.other_names, &self.other_index_na),
                )?;
            }
        }
        Ok(())
    }

    /// Reads input `i`'s element `e` whole and reindexes it onto the joined
    /// other axis (its columns too when `pairwise`).
    fn load_merged(&self, i: usize, e: &Element, pairwise: bool) -> Result<Merged> {
        let store = &self.inputs[i].store;
        let r = self.plan.spaces[0].reindexer(i);
        let n_old = r.new_of_old.len() as u64;
        if e.encoding == Encoding::DataFrame && !pairwise {
            return self.load_merged_frame(i, e);
        }
        if e.encoding == Encoding::AwkwardArray && !pairwise {
            let a = AwkwardValue::load(store, e)?;
            if a.len() != n_old {
                return Err(store.err(
                    &e.path,
                    format!("has {} entries but its axis has {n_old} names", a.len()),
                ));
            }
            return Ok(Merged::Awkward(a.reindexed(r)));
        }
        let shape = super::matrix_shape(e).filter(|_| {
            matches!(
                e.encoding,
                Encoding::CsrMatrix | Encoding::CscMatrix | Encoding::Array | Encoding::Plain
            )
        });
        let Some(shape) = shape else {
            return Err(store.err(
                &e.path,
                format!(
                    "merging {} elements is not supported yet",
                    e.encoding.name()
                ),
            ));
        };
        if shape[0] != n_old || (pairwise && shape[1] != n_old) {
            return Err(store.err(
                &e.path,
                format!(
                    "has shape {shape:?} but its axis has {n_old} names{}",
                    if pairwise { " (both sides)" } else { "" }
                ),
            ));
        }
        // Merged in memory: about 32 bytes per value while reindexing.
        let values = match e.encoding {
            Encoding::CsrMatrix | Encoding::CscMatrix => e
                .child("data")
                .and_then(|d| d.array())
                .map_or(0, |a| a.shape.iter().product::<u64>()),
            _ => shape[0] * shape[1],
        };
        let wide = u64::from(pairwise) * r.n_new;
        let need = values.max(wide) * 32;
        if need > self.opts.memory_limit {
            return Err(store.err(
                &e.path,
                format!(
                    "merging it takes about {} MiB in memory, more than --memory-limit ({} MiB)",
                    need >> 20,
                    self.opts.memory_limit >> 20
                ),
            ));
        }
        let m = match e.encoding {
            Encoding::CsrMatrix | Encoding::CscMatrix => read_sparse(store, e)?,
            _ => {
                let dtype = e.array().map_or(DType::Float64, |a| a.dtype.clone());
                let values =
                    super::matrix::read_values(store, &e.path, &dtype, vec![0, 0], shape.to_vec())?;
                Merged::Dense { shape, values }
            }
        };
        reindex(m, r, pairwise).map_err(|err| store.err(&e.path, err))
    }

    /// A data frame in {other}m, reindexed onto the joined axis.
    fn load_merged_frame(&self, i: usize, e: &Element) -> Result<Merged> {
        let r = self.plan.spaces[0].reindexer(i);
        let columns = self.reindexed_frame(i, e, r, true)?;
        Ok(Merged::Frame {
            rows: r.n_new,
            columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(csr: bool, entries: Vec<(u64, u64)>, data: Values) -> Merged {
        Merged::Sparse {
            csr,
            shape: [3, 3],
            entries,
            data,
        }
    }

    #[test]
    fn sparse_equality_ignores_format_dtype_and_explicit_zeros() {
        let a = sparse(true, vec![(0, 1), (2, 0)], Values::I64(vec![5, 7]));
        let b = sparse(
            false,
            vec![(2, 0), (0, 1), (1, 1)],
            Values::F32(vec![7.0, 5.0, 0.0]),
        );
        assert!(b.same_as_first(&a).expect("compare"));
        let c = sparse(true, vec![(0, 1)], Values::I64(vec![5]));
        assert!(!c.same_as_first(&a).expect("compare"));
        // Dense later vs sparse first: compared made dense (same dtype).
        let mut dense = vec![0i64; 9];
        dense[1] = 5;
        dense[6] = 7;
        let d = Merged::Dense {
            shape: [3, 3],
            values: Values::I64(dense),
        };
        assert!(d.same_as_first(&a).expect("compare"));
        assert!(!a.same_as_first(&d).expect("compare"));
    }

    #[test]
    fn reindexing_moves_rows_and_columns_and_drops_explicit_zeros() {
        // old axis [a, b, c] onto new [c, a, x]
        let r = Reindexer::from_new_of_old(vec![1, -1, 0], 3);
        assert_eq!(r.old_of_new(), vec![2, 0, -1]);
        let m = sparse(
            true,
            vec![(0, 2), (1, 1), (2, 0), (2, 2)],
            Values::F64(vec![1.0, 2.0, 0.0, 4.0]),
        );
        let Merged::Sparse {
            entries,
            data,
            shape,
            ..
        } = reindex(m, &r, true).expect("reindex")
        else {
            panic!("sparse expected")
        };
        assert_eq!(shape, [3, 3]);
        assert_eq!(entries, vec![(0, 0), (1, 0)]);
        // A CSC element comes out of reindexing as CSR, as scipy's product.
        let c = sparse(false, vec![(2, 0), (0, 2)], Values::F64(vec![1.0, 2.0]));
        assert!(matches!(
            reindex(c, &r, true),
            Ok(Merged::Sparse { csr: true, .. })
        ));
        assert_eq!(data, Values::F64(vec![4.0, 1.0]));
        let d = Merged::Dense {
            shape: [3, 1],
            values: Values::I32(vec![1, 2, 3]),
        };
        let Merged::Dense { values, .. } = reindex(d, &r, false).expect("dense") else {
            panic!("dense expected")
        };
        let Values::F64(v) = values else {
            panic!("float64 expected")
        };
        assert_eq!(&v[..2], &[3.0, 1.0]);
        assert!(v[2].is_nan());
    }
}
