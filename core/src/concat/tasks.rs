//! Output matrices: the dtype, sources, chunking and skeleton of every
//! matrix, and the task graph that fills them.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::plan::{Axis, CsrPart, MatrixPlan, MatrixSource, SourceKind};
use super::values::{Scalar, fill_promote, promote};
use super::{Planner, group_attrs, matrix_shape};
use super::{csc, matrix};
use crate::anndata::DType;
use crate::anndata::element::{Element, Encoding};
use crate::anndata::layout::{ArraySpec, chunk_shape_for};
use crate::error::{Error, Result};
use crate::graph::{Graph, TaskId};

/// Where an output matrix sits: its joined other axis, shape, stacking
/// dimension, each input's length along it, and whether it is block-diagonal.
#[derive(Clone, Copy)]
pub(crate) struct MatrixLayout<'b> {
    pub(crate) space: usize,
    pub(crate) shape: [u64; 2],
    pub(crate) stack: Axis,
    pub(crate) along: &'b [u64],
    pub(crate) diagonal: bool,
    /// Write a sparse result as CSC (see [`super::options::ConcatOptions::csc_output`]).
    pub(crate) csc: bool,
}

/// Memory per entry of a CSC input while it is converted to CSR: a bound
/// on what the scatter (entries read, records buffered) and the gather
/// (columns and values sorted, then encoded) hold per entry.
fn csc_entry_bytes(dtype: &DType) -> u64 {
    2 * dtype.item_size() as u64 + 24
}

/// The chunk shape of a dense output. When the inputs share one chunk
/// size across the stacking dimension (the other axis), the output takes
/// it and spends the rest of `target_bytes` along the stacking dimension,
/// so each output chunk is built from whole input chunks and every input
/// chunk is decoded about once (a chunk of whole rows cut each input chunk
/// across several tasks, each decoding it again). Otherwise C-order chunks
/// of about `target_bytes`.
pub(crate) fn dense_chunk_shape(
    shape: [u64; 2],
    stack: Axis,
    item: u64,
    target_bytes: u64,
    els: &[Option<&Element>],
) -> [u64; 2] {
    let (along_dim, other_dim) = match stack {
        Axis::Obs => (0, 1),
        Axis::Var => (1, 0),
    };
    let mut shared: Option<u64> = None;
    for e in els.iter().flatten() {
        let Some(c) = e.array().and_then(|a| a.chunks.get(other_dim).copied()) else {
            continue;
        };
        if shared.is_some_and(|s| s != c) {
            shared = None;
            break;
        }
        shared = Some(c);
    }
    match shared {
        Some(other) if other > 0 && shape[other_dim] > other && shape[along_dim] > 0 => {
            let along = (target_bytes / item.max(1) / other).clamp(1, shape[along_dim]);
            let mut c = [0; 2];
            c[other_dim] = other;
            c[along_dim] = along;
            c
        }
        _ => {
            let c = chunk_shape_for(&shape, item as usize, target_bytes);
            [c[0], c[1]]
        }
    }
}

impl Planner<'_> {
    /// Target memory of one CSC conversion task: a quarter of the memory
    /// limit, at most 16 output chunks (so smaller chunks give more parts).
    fn csc_part_bytes(&self) -> u64 {
        (self.opts.memory_limit / 4)
            .min(self.chunk_bytes * 16)
            .max(4 << 10)
    }

    /// Plans one output matrix from per-input elements (`None`: absent).
    pub(crate) fn plan_matrix(
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
            csc,
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
        // A CSC result is planned as the CSR result of the transposed
        // matrix: rows and columns swap, and so do the inputs' CSR and CSC
        // (a CSC group read as CSR is its transpose). CSC inputs stacked
        // along var are then rows stacked in order, copied as they are.
        let out_shape = shape;
        let transposed = csc && !diagonal;
        let (shape, stack) = if transposed {
            if let Some(i) = kinds
                .iter()
                .position(|k| matches!(k, Some((SourceKind::Dense, _))))
            {
                return Err(self.fail(
                    i,
                    els[i].map_or("", |e| &e.path),
                    "--sparse-format csc needs sparse inputs, and this one is dense",
                ));
            }
            for (kind, _) in kinds.iter_mut().flatten() {
                *kind = match kind {
                    SourceKind::Csr => SourceKind::Csc,
                    _ => SourceKind::Csr,
                };
            }
            let flipped = match stack {
                Axis::Obs => Axis::Var,
                Axis::Var => Axis::Obs,
            };
            ([shape[1], shape[0]], flipped)
        } else {
            (shape, stack)
        };
        // block_diag always gives CSR; its blocks are never filled.
        let sparse = diagonal || kinds.iter().flatten().any(|(k, _)| *k != SourceKind::Dense);
        // Sparse kernels hold column indices as `u32`, one value kept to
        // mark a dropped column.
        if sparse && shape[1] >= u64::from(u32::MAX) {
            return Err(Error::data(format!(
                "{out_path}: a sparse result of {} columns is wider than anncat supports ({})",
                shape[1],
                u32::MAX - 1
            )));
        }
        let fill = if diagonal {
            Scalar::Int(0)
        } else {
            self.opts.fill_value.unwrap_or(if sparse {
                Scalar::Int(0)
            } else {
                Scalar::Float(f64::NAN)
            })
        };
        let space_ref = &self.plan.spaces[space];
        let mut dtype: Option<DType> = None;
        for (i, k) in kinds.iter().enumerate() {
            let d = match k {
                Some((_, d)) if diagonal => d.clone(),
                None if diagonal => DType::Bool,
                Some((_, d)) => {
                    let missing = space_ref.reindexer(i).has_missing();
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
                    .ok_or_else(|| Error::data(format!("{out_path}: incompatible dtypes")))?,
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
            let (n_rows, n_cols) = matrix_shape(e)
                .map(|s| {
                    if transposed {
                        (s[1], s[0])
                    } else {
                        (s[0], s[1])
                    }
                })
                .unwrap_or((0, 0));
            let stored = match kind {
                SourceKind::Dense => n_rows * n_cols,
                _ => e
                    .child("data")
                    .and_then(Element::array)
                    .map_or(0, |a| a.shape[0]),
            };
            max_nnz += stored;
            let bytes = stored * d.item_size() as u64;
            let chunk_of = |a: &crate::anndata::store::ArrayMeta| {
                a.chunks.iter().product::<u64>() * a.dtype.item_size().max(1) as u64
            };
            let read_chunk_bytes = match kind {
                SourceKind::Dense => e.array().map_or(0, chunk_of),
                _ => ["data", "indices", "indptr"]
                    .iter()
                    .filter_map(|c| e.child(c).and_then(Element::array))
                    .map(chunk_of)
                    .sum(),
            };
            let origin = (store.clone(), e.path.clone());
            let source = match kind {
                SourceKind::Csc => {
                    let dir = self
                        .out
                        .root()
                        .join(".anncat")
                        .join("tmp")
                        .join(format!("m{m_index}_in{i}"));
                    // Row ranges small enough for a gather task to hold.
                    let k = (stored * csc_entry_bytes(d))
                        .div_ceil(self.csc_part_bytes())
                        .clamp(1, n_rows.max(1));
                    let parts = (0..k)
                        .map(|j| CsrPart {
                            rows: [n_rows * j / k, n_rows * (j + 1) / k],
                            store: dir.join(format!("part-{j}.zarr")),
                        })
                        .collect();
                    MatrixSource {
                        store: dir,
                        path: "m".to_string(),
                        kind: SourceKind::Csc,
                        dtype: d.clone(),
                        columns: n_cols,
                        origin,
                        bytes,
                        // The scatter decodes the input's chunks, the
                        // data tasks the parts'.
                        read_chunk_bytes: read_chunk_bytes.max(csc::part_read_chunk_bytes(
                            d.item_size(),
                            stored,
                            n_rows.div_ceil(k),
                        )),
                        parts,
                    }
                }
                _ => MatrixSource {
                    store,
                    path: e.path.clone(),
                    kind: *kind,
                    dtype: d.clone(),
                    columns: n_cols,
                    origin,
                    bytes,
                    read_chunk_bytes,
                    parts: Vec::new(),
                },
            };
            sources.push(Some(source));
        }
        // Fill entries stored explicitly in sparse output.
        if sparse && !fill.is_zero() {
            let space_ref = &self.plan.spaces[space];
            for (i, &n) in along.iter().enumerate() {
                let missing = space_ref.reindexer(i).n_missing();
                let missing = if sources[i].is_none() {
                    space_ref.n_other
                } else {
                    missing
                };
                max_nnz += missing * n;
            }
        }
        let item = dtype.item_size() as u64;
        let chunks = if sparse {
            let avg_row = (max_nnz / shape[0].max(1)).max(1);
            let data_chunk = (self.chunk_bytes / (item + 8)).max(1);
            let block_rows = (data_chunk / 2 / avg_row).clamp(1, (self.chunk_bytes / 8).max(1));
            [block_rows, data_chunk]
        } else {
            dense_chunk_shape(shape, stack, item, self.chunk_bytes, els)
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
            count_group: 1,
            indptr_group: 1,
        };
        let m = MatrixPlan {
            count_group: matrix::count_group(&self.plan, &m, self.chunk_bytes),
            ..m
        };
        let m = MatrixPlan {
            indptr_group: matrix::indptr_group(&m, self.chunk_bytes),
            ..m
        };
        self.check_read_chunks_fit(&m)?;
        // Skeleton.
        if sparse {
            let encoding = if transposed {
                "csc_matrix"
            } else {
                "csr_matrix"
            };
            let mut attrs = group_attrs(encoding, "0.1.0");
            attrs.insert("shape".into(), json!(out_shape));
            self.out.write_group(out_path, &attrs)?;
        } else {
            let spec = ArraySpec::new(shape.to_vec(), dtype.clone(), chunks.to_vec());
            self.out
                .write_array(out_path, spec, &group_attrs("array", "0.2.0"))?;
        }
        self.plan.matrices.push(m);
        Ok(())
    }

    /// Refuses, before any work, a matrix whose inputs are stored in
    /// chunks too large to decode within the memory limit: the message
    /// names the input, the element and the limit it would need.
    fn check_read_chunks_fit(&self, m: &MatrixPlan) -> Result<()> {
        let Some(s) = m
            .sources
            .iter()
            .flatten()
            .max_by_key(|s| s.read_chunk_bytes)
        else {
            return Ok(());
        };
        let need = if m.sparse {
            sparse_block_bytes(m, self.chunk_bytes) * 2
        } else {
            dense_task_bytes(m, self.chunk_bytes)
        };
        // A worker's own baseline counts against its limit (see README).
        const WORKER_BASELINE: u64 = 32 << 20;
        let budget = self.opts.memory_limit.saturating_sub(WORKER_BASELINE);
        if need <= budget {
            return Ok(());
        }
        // The limit that would do: the input chunk's share is fixed, the
        // rest grows with the output chunks a larger limit gives.
        let read_part = 2 * s.read_chunk_bytes;
        let rest = need.saturating_sub(read_part).max(1);
        let mut enough = need;
        for _ in 0..8 {
            let mut at = self.opts.clone();
            at.memory_limit = enough;
            let scale = at.target_chunk_bytes() as f64 / self.chunk_bytes.max(1) as f64;
            enough = read_part + (rest as f64 * scale.max(1.0)) as u64;
        }
        Err(Error::element(
            &s.origin.0,
            &s.origin.1,
            format!(
                "stored in chunks of {} MiB decoded; a task reading one needs about {} MiB, more than --memory-limit {} MiB: raise --memory-limit to at least {} MiB, or rechunk the input",
                s.read_chunk_bytes.div_ceil(1 << 20),
                need.div_ceil(1 << 20),
                self.opts.memory_limit >> 20,
                (enough + WORKER_BASELINE).div_ceil(1 << 20) + 8,
            ),
        ))
    }

    /// The task graph of every planned matrix.
    pub(crate) fn graph(&self, plan_file: &Path) -> Result<Graph> {
        let mut g = Graph::new();
        super::frame_tasks::add_frame_tasks(&mut g, &self.plan, plan_file)?;
        let mut conversions: std::collections::HashMap<PathBuf, Vec<TaskId>> =
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
                if let Some(ids) = conversions.get(&s.store) {
                    pre.extend(ids);
                    continue;
                }
                let item = s.dtype.item_size().max(1) as u64;
                let nnz = s.bytes / item;
                let group = (self.csc_part_bytes() / (2 * item + 24)).max(1);
                let spill_dir = s.store.join("spill");
                let mut bounds: Vec<u64> = s.parts.iter().map(|p| p.rows[0]).collect();
                bounds.extend(s.parts.last().map(|p| p.rows[1]));
                let scatter = g.add(
                    "concat.csc_scatter",
                    &csc::CscScatterTask {
                        store: s.origin.0.clone(),
                        path: s.origin.1.clone(),
                        bounds,
                        spill_dir: spill_dir.clone(),
                        group_entries: group,
                    },
                    vec![],
                    group * (2 * item + 24) + s.parts.len() as u64 * (256 << 10) + (1 << 20),
                    format!("{}: spill input {i} (CSC) by rows", m.out_path),
                )?;
                let mut ids = Vec::new();
                let per_part = nnz.div_ceil(s.parts.len().max(1) as u64);
                for (j, part) in s.parts.iter().enumerate() {
                    ids.push(g.add(
                        "concat.csc_gather",
                        &csc::CscGatherTask {
                            spill: csc::spill_file(&spill_dir, j),
                            rows: part.rows[1] - part.rows[0],
                            dtype: s.dtype.clone(),
                            out: part.store.clone(),
                        },
                        vec![scatter],
                        // Twice the average part: rows are not all equally full.
                        2 * per_part * csc_entry_bytes(&s.dtype)
                            + (part.rows[1] - part.rows[0]) * 16
                            + (1 << 20),
                        format!(
                            "{}: input {i} rows {}..{} to CSR",
                            m.out_path, part.rows[0], part.rows[1]
                        ),
                    )?);
                }
                conversions.insert(s.store.clone(), ids.clone());
                pre.extend(ids);
            }
            let item = m.dtype.item_size() as u64;
            if m.sparse {
                let block_bytes = sparse_block_bytes(m, self.chunk_bytes);
                let mut counts = Vec::new();
                for c in 0..matrix::n_count_tasks(m) {
                    let blocks = matrix::group_blocks(m, c);
                    counts.push(g.add(
                        "concat.sparse_count",
                        &task(c, 0),
                        pre.clone(),
                        block_bytes + (blocks.end - blocks.start) * m.chunks[0] * 8,
                        format!(
                            "{}: count blocks {}..{}",
                            m.out_path, blocks.start, blocks.end
                        ),
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
                    // The count tasks of its blocks, then the offsets.
                    let per = (m.indptr_group / m.count_group.max(1)).max(1) as usize;
                    let mut deps: Vec<TaskId> = counts
                        .iter()
                        .skip(c as usize * per)
                        .take(per)
                        .copied()
                        .collect();
                    deps.push(prefix);
                    g.add(
                        "concat.sparse_indptr",
                        &task(c, 0),
                        deps,
                        m.chunks[0] * m.indptr_group.max(1) * 16 + (1 << 20),
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
                for r in 0..rows {
                    for c in 0..cols {
                        g.add(
                            "concat.dense_chunk",
                            &task(r, c),
                            pre.clone(),
                            dense_task_bytes(m, self.chunk_bytes),
                            format!("{}: chunk {r}.{c}", m.out_path),
                        )?;
                    }
                }
            }
        }
        Ok(g)
    }
}

/// The largest input chunk any source of `m` makes a reader decode.
fn largest_read_chunk(m: &MatrixPlan) -> u64 {
    m.sources
        .iter()
        .flatten()
        .map(|s| s.read_chunk_bytes)
        .max()
        .unwrap_or(0)
}

/// Memory estimate of one dense output chunk's task: the output chunk and
/// its pieces, read blocks, and an input chunk decoded whole (its stored
/// and decoded bytes).
fn dense_task_bytes(m: &MatrixPlan, chunk_bytes: u64) -> u64 {
    let out_chunk = m.chunks[0] * m.chunks[1] * m.dtype.item_size() as u64;
    out_chunk * 4 + chunk_bytes * 2 + largest_read_chunk(m) * 2
}

/// Memory estimate of one block of rows of a sparse matrix: its entries
/// (values, indices and offsets, twice), read blocks, and one decoded chunk
/// each of the inputs' data, indices and indptr.
fn sparse_block_bytes(m: &MatrixPlan, chunk_bytes: u64) -> u64 {
    let item = m.dtype.item_size() as u64;
    m.chunks[0].max(1) * (m.max_nnz / m.shape[0].max(1) + 1) * (item + 24) * 2
        + chunk_bytes * 4
        + largest_read_chunk(m)
}
