//! Matrix kernels: the tasks that build X, layers and raw/X of the output
//! from the inputs, each writing whole output chunks.
//!
//! Dense output: one task per output chunk. Sparse output (always CSR, as in
//! `anndata.concat`): rows are grouped in blocks (one block = one `indptr`
//! chunk); `count` tasks assemble a block and count entries per row, one
//! `prefix` task turns counts into block offsets and sizes `data` /
//! `indices`, then `indptr` tasks write pointer chunks and `data` tasks
//! assemble the rows overlapping one data chunk and write it. CSC inputs are
//! first converted to temporary CSR parts (see `csc`).

use crate::anndata::range_read::ReadSubset;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Map;
use zarrs::array::ArraySubset;

use super::in_order::{
    InputEntries, copy_entries, entries_in_order, input_entries, locate_inputs, write_bytes,
};
use super::plan::{Axis, ConcatPlan, MatrixPlan, MatrixSource, SourceKind};
use super::values::{Scalar, Values};
use crate::anndata::layout::ArraySpec;
use crate::anndata::store::{ArrayMeta, NodeKind, NodeMeta};
use crate::anndata::{DType, OutputStore, Store};
use crate::error::{Error, Result};
use crate::graph::{decode, encode};
use crate::kernel::KernelRegistry;

mod column_scatter;
mod counts;
mod prefetch;
mod rows;

use counts::{block_range, counts_from_indptr, sparse_count};
pub(crate) use counts::{count_group, indptr_group};
pub use counts::{group_blocks, max_data_chunks, n_blocks, n_count_tasks, n_indptr_chunks};
use rows::{array_meta, assemble, assemble_sized};
pub(crate) use rows::{index_dtype, read_csr_rows};

/// Arguments of every matrix kernel: the plan, the matrix, a block number.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixTask {
    /// The saved plan.
    pub plan: PathBuf,
    /// Index into the plan's matrices.
    pub matrix: usize,
    /// Chunk / block number (meaning depends on the kernel).
    pub block: u64,
    /// Second chunk coordinate (dense chunks).
    pub block2: u64,
}

/// Keeps a worker process's codec work within its `threads` task threads
/// (call it before any task runs): zarrs decodes and encodes on rayon's
/// pool (all cores by default) and blosc on threads of its own, so two
/// one-thread workers on two cores each ran three busy threads, and every
/// task was slowed by the other worker's codecs.
pub fn keep_codecs_within(threads: usize) {
    let threads = threads.max(1);
    // Fails only if the pool was built already: then it stays as it is.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
    let mut config = zarrs::config::global_config_mut();
    config.set_codec_concurrent_target(threads);
    // Reads decode at least this many chunks at once on rayon's pool (see
    // `range_read::codec_options`); at zarrs' default (4) every multi-chunk
    // read of a one-thread worker went to the pool's thread while the task
    // thread waited.
    config.set_chunk_concurrent_minimum(threads);
}

/// A registry with every kernel a concatenation runs (for executors and
/// worker binaries).
pub fn kernels() -> KernelRegistry {
    let mut registry = KernelRegistry::new();
    register(&mut registry);
    // A task is done (and journaled) only once what it wrote is durable.
    registry.finish_each_with(crate::anndata::durable::take_unsynced);
    // ... so their chunk writes may land behind them.
    registry.prepare_each_with(crate::anndata::write_behind::allow_on_this_thread);
    registry
}

/// Registers the matrix kernels under their names.
pub fn register(registry: &mut KernelRegistry) {
    registry.register("concat.dense_chunk", |a: &[u8], _: &[Arc<Vec<u8>>]| {
        dense_chunk(&decode(a)?)
    });
    super::csc::register(registry);
    super::frame_tasks::register(registry);
    super::frame_distinct::register(registry);
    registry.register("concat.sparse_count", |a: &[u8], _: &[Arc<Vec<u8>>]| {
        sparse_count(&decode(a)?)
    });
    registry.register("concat.sparse_prefix", |a: &[u8], i: &[Arc<Vec<u8>>]| {
        sparse_prefix(&decode(a)?, i)
    });
    registry.register("concat.sparse_indptr", |a: &[u8], i: &[Arc<Vec<u8>>]| {
        sparse_indptr(&decode(a)?, i)
    });
    registry.register_prefetching(
        "concat.sparse_data",
        |a: &[u8], i: &[Arc<Vec<u8>>]| sparse_data(&decode(a)?, i),
        |a: &[u8], i: &[Arc<Vec<u8>>]| {
            if let Ok(t) = decode(a) {
                prefetch::sparse_data(&t, i);
            }
        },
    );
}

/// The shared output a task writes its chunks into.
fn open_output(path: &Path) -> Result<OutputStore> {
    OutputStore::open(path)
}

/// Reads the block `start .. start + shape` of the array at `path`.
pub(crate) fn read_values(
    store: &Store,
    path: &str,
    dtype: &DType,
    start: Vec<u64>,
    shape: Vec<u64>,
) -> Result<Values> {
    if shape.contains(&0) {
        return Values::zeros(dtype, 0);
    }
    let array = store.shared_array(path)?;
    let err = |e: zarrs::array::ArrayError| store.err(path, format!("cannot read data: {e}"));
    if let ([s], [n]) = (start.as_slice(), shape.as_slice()) {
        // Decoded into the typed vector (in place where the chunks allow).
        let mut values = Values::zeros(dtype, 0).map_err(|e| store.err(path, e))?;
        values.reserve(*n as usize);
        crate::anndata::range_read::read_range_into(&array, *s, *n, &mut values).map_err(err)?;
        return Ok(values);
    }
    let subset = ArraySubset::new_with_start_shape(start, shape).map_err(|e| store.err(path, e))?;
    let bytes = array.read_subset(&subset).map_err(err)?;
    Values::from_array_bytes(dtype, &bytes).map_err(|e| store.err(path, e))
}

pub(crate) fn write_values(
    store: &OutputStore,
    path: &str,
    start: Vec<u64>,
    shape: Vec<u64>,
    values: &Values,
) -> Result<()> {
    write_value_range(store, path, start, shape, values, 0..values.len())
}

/// Writes `values[range]` as the block `start .. start + shape` of the
/// array at `path` (no copy of the values).
pub(crate) fn write_value_range(
    store: &OutputStore,
    path: &str,
    start: Vec<u64>,
    shape: Vec<u64>,
    values: &Values,
    range: Range<usize>,
) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    crate::kernel::record_bytes_written(range.len() as u64 * values.dtype().item_size() as u64);
    let array = store.writable_array(path)?;
    let err = |e| store.err(path, format!("cannot write chunk: {e}"));
    let bytes = values.range_array_bytes(range);
    if let ([at], zarrs::array::ArrayBytes::Fixed(raw)) = (start.as_slice(), &bytes)
        && crate::anndata::blosc_encode::store_whole_chunks(&array, *at, raw).map_err(err)?
    {
        return Ok(());
    }
    let subset = ArraySubset::new_with_start_shape(start, shape).map_err(|e| store.err(path, e))?;
    array.store_array_subset(&subset, bytes).map_err(err)
}

/// The inputs overlapping `range` along the concatenation axis, with the
/// input-local range of each.
fn inputs_in(m: &MatrixPlan, range: &Range<u64>) -> Vec<(usize, Range<u64>)> {
    m.along
        .iter()
        .enumerate()
        .filter_map(|(i, &[offset, n])| {
            let lo = range.start.max(offset);
            let hi = range.end.min(offset + n);
            (lo < hi).then(|| (i, lo - offset..hi - offset))
        })
        .collect()
}

fn fill_for(m: &MatrixPlan) -> Scalar {
    m.fill
}

// ---------------------------------------------------------------- dense

/// Builds and writes one dense output chunk.
fn dense_chunk(t: &MatrixTask) -> Result<Vec<u8>> {
    let plan = ConcatPlan::load(&t.plan)?;
    let m = &plan.matrices[t.matrix];
    let out = open_output(&plan.output)?;
    let rows = t.block * m.chunks[0]..((t.block + 1) * m.chunks[0]).min(m.shape[0]);
    let cols = t.block2 * m.chunks[1]..((t.block2 + 1) * m.chunks[1]).min(m.shape[1]);
    let (nr, nc) = (
        (rows.end - rows.start) as usize,
        (cols.end - cols.start) as usize,
    );
    // (concat-axis range, other-axis range) of the chunk.
    let (along, other) = match m.stack {
        Axis::Obs => (rows.clone(), cols.clone()),
        Axis::Var => (cols.clone(), rows.clone()),
    };
    let space = &plan.spaces[m.space];
    if let Some(bytes) = dense_copy(m, space, &along, &other, nc)? {
        let path = &m.out_path;
        crate::kernel::record_bytes_written(bytes.len() as u64);
        let subset = ArraySubset::new_with_start_shape(
            vec![rows.start, cols.start],
            vec![nr as u64, nc as u64],
        )
        .map_err(|e| out.err(path, e))?;
        return out
            .writable_array(path)?
            .store_array_subset(&subset, zarrs::array::ArrayBytes::new_flen(bytes))
            .map(|()| Vec::new())
            .map_err(|e| out.err(path, format!("cannot write chunk: {e}")));
    }
    let mut positions: Vec<Option<usize>> = vec![None; nr * nc];
    let mut all = Values::zeros(&m.dtype, 0)?;
    let other_dim = match m.stack {
        Axis::Obs => 1,
        Axis::Var => 0,
    };
    for (i, local) in inputs_in(m, &along) {
        let offset_in_chunk = (m.along[i][0] + local.start - along.start) as usize;
        let Some(src) = &m.sources[i] else { continue };
        let reindex = space.reindexer(i);
        // Opened afresh, not kept in the run's `plan.stores`: dense
        // tasks are few and large, and with the inputs kept open their
        // workers peaked about 50 MiB higher (dense var, 2026-12-07).
        let store = Store::open(&src.store)?;
        // The input positions this chunk needs along the other axis, grouped
        // by the input's chunks there: each group is read, its wanted values
        // picked out, and dropped, so memory follows the values wanted even
        // when the join scatters them over the whole input.
        let chunk_other = array_meta(&store, &src.path, "expected a dense array")?
            .chunks
            .get(other_dim)
            .copied()
            .unwrap_or(1)
            .max(1);
        let mut groups: std::collections::BTreeMap<u64, Vec<(usize, u64)>> = Default::default();
        for (k, old) in reindex.old_of_new_in(other.clone()).into_iter().enumerate() {
            if old >= 0 {
                groups
                    .entry(old as u64 / chunk_other)
                    .or_default()
                    .push((k, old as u64));
            }
        }
        let n_along = (local.end - local.start) as usize;
        for members in groups.values() {
            let lo = members.iter().map(|&(_, o)| o).min().unwrap_or(0);
            let hi = members.iter().map(|&(_, o)| o).max().unwrap_or(0) + 1;
            let (start, shape) = match m.stack {
                Axis::Obs => (
                    vec![local.start, lo],
                    vec![local.end - local.start, hi - lo],
                ),
                Axis::Var => (
                    vec![lo, local.start],
                    vec![hi - lo, local.end - local.start],
                ),
            };
            let width = shape[1] as usize;
            let block = read_values(&store, &src.path, &src.dtype, start, shape)?;
            // Source order (rows of the block, then columns), so that a
            // block wanted whole is taken as it is.
            let mut picks = Vec::with_capacity(n_along * members.len());
            let mut place = |r: usize, c: usize, src_index: usize| {
                positions[r * nc + c] = Some(all.len() + picks.len());
                picks.push(src_index);
            };
            match m.stack {
                Axis::Obs => {
                    for a in 0..n_along {
                        for &(k, old) in members {
                            let o = (old - lo) as usize;
                            place(offset_in_chunk + a, k, a * width + o);
                        }
                    }
                }
                Axis::Var => {
                    for &(k, old) in members {
                        let o = (old - lo) as usize;
                        for a in 0..n_along {
                            place(k, offset_in_chunk + a, o * width + a);
                        }
                    }
                }
            }
            let whole =
                picks.len() == block.len() && picks.iter().enumerate().all(|(j, &s)| j == s);
            let picked = if whole { block } else { block.select(&picks) };
            all.append(picked.into_cast(&m.dtype)?)?;
        }
    }
    // One input filling the chunk in order (no join, no fill): `all` is
    // already the chunk.
    let in_order =
        all.len() == positions.len() && positions.iter().enumerate().all(|(j, p)| *p == Some(j));
    let chunk = if in_order {
        all
    } else {
        all.take(&positions, fill_for(m))
    };
    write_values(
        &out,
        &m.out_path,
        vec![rows.start, cols.start],
        vec![nr as u64, nc as u64],
        &chunk,
    )?;
    Ok(Vec::new())
}

/// The copy path of a dense chunk: when every input it spans holds the
/// element in the output dtype and its wanted positions along the other
/// axis are one rising run with nothing to fill (an inner join of shared
/// names, or nested ones), the chunk is the inputs' decoded blocks placed
/// side by side, row slice by row slice, with no per-value work. `None`
/// when a value must be picked out, converted or filled.
fn dense_copy(
    m: &MatrixPlan,
    space: &super::plan::Space,
    along: &Range<u64>,
    other: &Range<u64>,
    nc: usize,
) -> Result<Option<Vec<u8>>> {
    let item = m.dtype.item_size();
    let n_other = (other.end - other.start) as usize;
    let mut blocks = Vec::new();
    for (i, local) in inputs_in(m, along) {
        let Some(src) = &m.sources[i] else {
            return Ok(None);
        };
        if src.kind != SourceKind::Dense || src.dtype != m.dtype {
            return Ok(None);
        }
        let olds = space.reindexer(i).old_of_new_in(other.clone());
        let first = olds[0];
        if first < 0 || olds.iter().enumerate().any(|(k, &o)| o != first + k as i64) {
            return Ok(None);
        }
        blocks.push((i, local, first as u64));
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    let n_chunk = (along.end - along.start) as usize * n_other * item;
    let mut chunk = Vec::new();
    for (i, local, first) in blocks {
        let src = m.sources[i]
            .as_ref()
            .ok_or_else(|| Error::internal("source"))?;
        let store = Store::open(&src.store)?;
        let n_along = local.end - local.start;
        let (start, shape) = match m.stack {
            Axis::Obs => (vec![local.start, first], vec![n_along, n_other as u64]),
            Axis::Var => (vec![first, local.start], vec![n_other as u64, n_along]),
        };
        let array = store.array(&src.path)?;
        let subset =
            ArraySubset::new_with_start_shape(start, shape).map_err(|e| store.err(&src.path, e))?;
        let bytes: zarrs::array::ArrayBytes<'_> = array
            .read_subset(&subset)
            .map_err(|e| store.err(&src.path, format!("cannot read data: {e}")))?;
        let zarrs::array::ArrayBytes::Fixed(block) = bytes else {
            return Err(store.err(&src.path, "expected fixed-size numeric data"));
        };
        if block.len() == n_chunk {
            // One input fills the chunk: its block is the chunk.
            return Ok(Some(block.into_owned()));
        }
        chunk.resize(n_chunk, 0);
        let offset = (m.along[i][0] + local.start - along.start) as usize;
        let n_along = n_along as usize;
        match m.stack {
            // Whole rows of the chunk.
            Axis::Obs => {
                let at = offset * n_other * item;
                chunk[at..at + block.len()].copy_from_slice(&block);
            }
            // A column band of every row.
            Axis::Var => {
                let (band, row) = (n_along * item, nc * item);
                for (r, piece) in block.chunks_exact(band).enumerate() {
                    let at = r * row + offset * item;
                    chunk[at..at + band].copy_from_slice(piece);
                }
            }
        }
    }
    Ok(Some(chunk))
}

/// Output of the prefix task: where each block's entries start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Offsets {
    block_start: Vec<u64>,
    /// Where each input's entries land, when they keep their order (the
    /// copy path of [`super::in_order`]).
    in_order: Option<InputEntries>,
}

/// The index dtype of a sparse output: int32 unless its entries or shape
/// need int64.
pub(crate) fn index_dtype_for(nnz: u64, shape: [u64; 2]) -> DType {
    let max = nnz.max(shape[0]).max(shape[1]);
    if max < i32::MAX as u64 {
        DType::Int32
    } else {
        DType::Int64
    }
}

fn sparse_prefix(t: &MatrixTask, inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>> {
    let plan = ConcatPlan::load(&t.plan)?;
    let m = &plan.matrices[t.matrix];
    let in_order = entries_in_order(&plan, m);
    let mut block_start = Vec::with_capacity(inputs.len() + 1);
    let mut kept: Vec<Vec<u32>> = Vec::new();
    let mut total = 0u64;
    for group in inputs {
        let group: Vec<Vec<u32>> = decode(group)?;
        for counts in group {
            block_start.push(total);
            total += counts.iter().map(|&c| u64::from(c)).sum::<u64>();
            if in_order {
                kept.push(counts);
            }
        }
    }
    block_start.push(total);
    let in_order = if in_order {
        Some(locate_inputs(m, &kept, m.chunks[0])?)
    } else {
        None
    };
    if total > m.max_nnz {
        return Err(Error::internal(format!(
            "{} holds {total} entries, more than planned",
            m.out_path
        )));
    }
    let mut out = open_output(&plan.output)?;
    out.set_sharding(plan.shard_inner_bytes);
    let idx = index_dtype_for(total, m.shape);
    let empty = Map::new();
    for (name, dtype, len, chunk) in [
        ("data", m.dtype.clone(), total, m.chunks[1]),
        ("indices", idx.clone(), total, m.chunks[1]),
        (
            "indptr",
            idx,
            m.shape[0] + 1,
            m.chunks[0] * m.indptr_group.max(1),
        ),
    ] {
        let spec = ArraySpec::new(vec![len], dtype, vec![chunk.min(len.max(1))]);
        out.write_array(&format!("{}/{name}", m.out_path), spec, &empty)?;
    }
    encode(&Offsets {
        block_start,
        in_order,
    })
}

fn sparse_indptr(t: &MatrixTask, inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>> {
    let plan = ConcatPlan::load(&t.plan)?;
    let m = &plan.matrices[t.matrix];
    // The count tasks of this chunk's blocks, in order, then the offsets.
    let Some((o, count_outputs)) = inputs.split_last() else {
        return Err(Error::internal("indptr task inputs"));
    };
    let offsets: Offsets = decode(o)?;
    let mut counts: Vec<u32> = Vec::new();
    for c in count_outputs {
        let groups: Vec<Vec<u32>> = decode(c)?;
        counts.extend(groups.into_iter().flatten());
    }
    let rows = m.chunks[0] * m.indptr_group.max(1);
    let first = t.block * rows;
    let last = ((t.block + 1) * rows).min(m.shape[0] + 1);
    let block = (t.block * m.indptr_group.max(1)).min(offsets.block_start.len() as u64 - 1);
    let mut acc = offsets.block_start[block as usize];
    let mut ptr = Vec::with_capacity((last - first) as usize);
    for k in 0..(last - first) as usize {
        ptr.push(acc as i64);
        if let Some(&c) = counts.get(k) {
            acc += u64::from(c);
        }
    }
    let out = open_output(&plan.output)?;
    let path = format!("{}/indptr", m.out_path);
    let values = Values::I64(ptr).cast(&index_dtype(&out, &path)?)?;
    write_values(&out, &path, vec![first], vec![last - first], &values)?;
    Ok(Vec::new())
}

fn sparse_data(t: &MatrixTask, inputs: &[Arc<Vec<u8>>]) -> Result<Vec<u8>> {
    let plan = ConcatPlan::load(&t.plan)?;
    let m = &plan.matrices[t.matrix];
    let offsets: Offsets = match inputs {
        [o] => decode(o)?,
        _ => return Err(Error::internal("data task inputs")),
    };
    let total = *offsets.block_start.last().unwrap_or(&0);
    let lo = t.block * m.chunks[1];
    if lo >= total {
        return Ok(Vec::new());
    }
    let hi = (lo + m.chunks[1]).min(total);
    let out = open_output(&plan.output)?;
    let ix_path = format!("{}/indices", m.out_path);
    let ix_dtype = index_dtype(&out, &ix_path)?;
    if let Some(at) = &offsets.in_order {
        let (indices, data) = copy_entries(&plan, m, at, lo, hi, &ix_dtype)?;
        write_bytes(&out, &ix_path, lo, indices, &ix_dtype)?;
        let data_path = format!("{}/data", m.out_path);
        return write_bytes(&out, &data_path, lo, data, &m.dtype).map(|()| Vec::new());
    }
    let data_path = format!("{}/data", m.out_path);
    let span = (hi - lo) as usize;
    if let Some((rows, first, end)) = rows_holding(&plan, m, &offsets.block_start, lo, hi)? {
        // One assembly of just the rows holding the chunk's entries,
        // written from where the chunk starts in it.
        let block = assemble_sized(&plan, m, rows, (end - first) as usize)?;
        let from = (lo - first) as usize;
        if from + span > block.indices.len() || block.data.len() != block.indices.len() {
            return Err(Error::internal(format!(
                "{} holds fewer entries than counted",
                m.out_path
            )));
        }
        let range = from..from + span;
        // The chunk's slice of the block, written from where it lies.
        let ix = index_values(block.indices, &ix_dtype)?;
        write_value_range(&out, &ix_path, vec![lo], vec![hi - lo], &ix, range.clone())?;
        write_value_range(
            &out,
            &data_path,
            vec![lo],
            vec![hi - lo],
            &block.data,
            range,
        )?;
        return Ok(Vec::new());
    }
    let mut indices: Vec<u32> = Vec::with_capacity(span);
    let mut data = Values::zeros(&m.dtype, 0)?;
    data.reserve(span);
    for b in 0..n_blocks(m) as usize {
        let (bs, be) = (offsets.block_start[b], offsets.block_start[b + 1]);
        if be <= lo || bs >= hi || bs == be {
            continue;
        }
        let block = assemble(&plan, m, block_range(m, b as u64))?;
        let from = (lo.max(bs) - bs) as usize;
        let to = ((hi.min(be) - bs) as usize).min(block.indices.len());
        indices.extend_from_slice(&block.indices[from..to]);
        data.extend_range(&block.data, from, to)?;
    }
    let ix = index_values(indices, &ix_dtype)?;
    write_values(&out, &ix_path, vec![lo], vec![hi - lo], &ix)?;
    write_values(&out, &data_path, vec![lo], vec![hi - lo], &data)?;
    Ok(Vec::new())
}

/// Column indices as values of the output's index dtype.
fn index_values(indices: Vec<u32>, dtype: &DType) -> Result<Values> {
    match dtype {
        // Below 2^31 (the output's width chose int32): the same bits, in
        // the same memory.
        DType::Int32 => Ok(Values::I32(bytemuck::allocation::cast_vec(indices))),
        _ => Values::U32(indices).into_cast(dtype),
    }
}

/// The rows of sparse `m` holding its entries `lo..hi` (`block_start`: the
/// first entry of each row block, and the total), with the entry numbers
/// of their first row and of the row after them; `None` when row lengths
/// are not known from the inputs' `indptr` alone.
fn rows_holding(
    plan: &ConcatPlan,
    m: &MatrixPlan,
    block_start: &[u64],
    lo: u64,
    hi: u64,
) -> Result<Option<(Range<u64>, u64, u64)>> {
    let n = n_blocks(m) as usize;
    // The first block ending after `lo`, then on to the one holding `hi`.
    let mut b = block_start[1..=n].partition_point(|&end| end <= lo);
    let mut start: Option<(u64, u64)> = None;
    while b < n && block_start[b] < hi {
        let (bs, be) = (block_start[b], block_start[b + 1]);
        let rows = block_range(m, b as u64);
        if start.is_some() && be < hi {
            b += 1;
            continue;
        }
        let Some(counts) = counts_from_indptr(plan, m, &rows)? else {
            return Ok(None);
        };
        let mut at = bs;
        for (r, &c) in counts.iter().enumerate() {
            let row = rows.start + r as u64;
            if at >= hi {
                return Ok(start.map(|(r0, first)| (r0..row, first, at)));
            }
            let end = at + u64::from(c);
            if start.is_none() && end > lo {
                start = Some((row, at));
            }
            at = end;
        }
        if at != be {
            return Err(Error::internal(format!(
                "{} row block {b} holds {} entries, counted {}",
                m.out_path,
                at - bs,
                be - bs
            )));
        }
        if be >= hi {
            return Ok(start.map(|(r0, first)| (r0..rows.end, first, be)));
        }
        b += 1;
    }
    let end = block_start[b.min(n)];
    Ok(start.map(|(r0, first)| {
        (
            r0..block_range(m, b.saturating_sub(1) as u64).end,
            first,
            end,
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_concat_kernels_leave_no_write_unsynced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("chunk");
        std::fs::write(&f, b"x").expect("write");
        crate::anndata::durable::note_written(&f);
        let r = kernels();
        let flush = r.take_deferred().expect("a flush of the write");
        assert!(!crate::anndata::durable::has_unsynced_writes());
        flush().expect("sync");
        assert!(
            !crate::anndata::durable::has_unsynced_writes(),
            "nothing written since"
        );
    }
}
