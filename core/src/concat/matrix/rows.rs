//! Reading sparse rows: a CSR (or converted CSC) source's rows in a range,
//! reindexed and assembled into the block of one output matrix (stacked
//! along the rows, or side by side along the columns).

use super::column_scatter::{ColumnScatter, DROPPED, RenamedRows, narrow_map};
use super::*;
use crate::anndata::store_cache::StoreCache;

/// Rows of a sparse matrix: `indptr` from 0, column indices (checked
/// against the matrix's width when read), values.
#[derive(Debug, Clone)]
pub(crate) struct Rows {
    pub(crate) indptr: Vec<usize>,
    pub(crate) indices: Vec<u32>,
    pub(crate) data: Values,
}

impl Rows {
    /// Whether every row's columns are strictly ascending.
    fn rows_ascending(&self) -> bool {
        self.indptr
            .windows(2)
            .all(|w| self.indices[w[0]..w[1]].windows(2).all(|c| c[0] < c[1]))
    }

    /// Appends `more`'s rows after these.
    fn append(&mut self, more: Rows) -> Result<()> {
        let base = self.indices.len();
        self.indptr
            .extend(more.indptr[1..].iter().map(|&p| p + base));
        self.indices.extend(more.indices);
        self.data.append(more.data)
    }
}

/// Where the CSR rows `rows` of a sparse source live: (store, group,
/// rows local to that group). One piece for a CSR input; for a converted
/// CSC input, the parts overlapping `rows`.
pub(super) fn csr_pieces(
    src: &MatrixSource,
    rows: &Range<u64>,
) -> Vec<(PathBuf, String, Range<u64>)> {
    match src.kind {
        SourceKind::Csc => src
            .parts
            .iter()
            .filter_map(|p| {
                let [p0, p1] = p.rows;
                let (lo, hi) = (rows.start.max(p0), rows.end.min(p1));
                (lo < hi).then(|| (p.store.clone(), "m".to_string(), lo - p0..hi - p0))
            })
            .collect(),
        _ => vec![(src.store.clone(), src.path.clone(), rows.clone())],
    }
}

/// Reads CSR rows `rows` of the group `path` in `store`, a matrix of
/// `columns` columns (values left empty unless `with_data`).
pub(crate) fn read_csr_rows(
    stores: &StoreCache,
    store_path: &Path,
    path: &str,
    dtype: &DType,
    rows: Range<u64>,
    columns: u64,
    with_data: bool,
) -> Result<Rows> {
    let store = stores.open(store_path)?;
    let n = rows.end - rows.start;
    let ip_path = format!("{path}/indptr");
    let ip_dtype = index_dtype(&store, &ip_path)?;
    let ip =
        crate::anndata::sparse::read_i64_range(&store, &ip_path, &ip_dtype, rows.start, n + 1)?;
    let (lo, hi) = (ip[0] as u64, ip[n as usize] as u64);
    let ix_path = format!("{path}/indices");
    let ix_dtype = index_dtype(&store, &ix_path)?;
    let indices =
        crate::anndata::sparse::read_columns(&store, &ix_path, &ix_dtype, lo, hi - lo, columns)?;
    let data = if with_data {
        let data_path = format!("{path}/data");
        let data_dtype = index_dtype(&store, &data_path)?;
        read_values(&store, &data_path, &data_dtype, vec![lo], vec![hi - lo])?.into_cast(dtype)?
    } else {
        Values::zeros(dtype, 0)?
    };
    Ok(Rows {
        indptr: ip.iter().map(|&p| (p as u64 - lo) as usize).collect(),
        indices,
        data,
    })
}

/// Reads input rows `rows` of `src` as CSR with values cast to `dtype`.
pub(super) fn read_rows(
    stores: &StoreCache,
    src: &MatrixSource,
    rows: Range<u64>,
    dtype: &DType,
) -> Result<Rows> {
    read_rows_with(stores, src, rows, dtype, true)
}

/// [`read_rows`], with the values of sparse sources left empty unless
/// `with_data` (for counting entries).
pub(super) fn read_rows_with(
    stores: &StoreCache,
    src: &MatrixSource,
    rows: Range<u64>,
    dtype: &DType,
    with_data: bool,
) -> Result<Rows> {
    let n = rows.end - rows.start;
    match src.kind {
        SourceKind::Csr | SourceKind::Csc => {
            let mut pieces = csr_pieces(src, &rows).into_iter();
            let Some((store, path, local)) = pieces.next() else {
                return Ok(Rows {
                    indptr: vec![0; n as usize + 1],
                    indices: Vec::new(),
                    data: Values::zeros(dtype, 0)?,
                });
            };
            let columns = src.columns;
            let mut out = read_csr_rows(stores, &store, &path, dtype, local, columns, with_data)?;
            for (store, path, local) in pieces {
                out.append(read_csr_rows(
                    stores, &store, &path, dtype, local, columns, with_data,
                )?)?;
            }
            Ok(out)
        }
        SourceKind::Dense => {
            // Opened afresh, as the dense kernels open theirs (see
            // `dense_chunk`).
            let store = Store::open(&src.store)?;
            let ncols = store.array(&src.path)?.shape()[1];
            let block = read_values(
                &store,
                &src.path,
                &src.dtype,
                vec![rows.start, 0],
                vec![n, ncols],
            )?
            .cast(dtype)?;
            let nonzero = block.nonzero_mask();
            let mut indptr = vec![0usize];
            let mut indices = Vec::new();
            let mut keep = Vec::new();
            for r in 0..n as usize {
                for c in 0..ncols as usize {
                    let k = r * ncols as usize + c;
                    if nonzero[k] {
                        indices.push(c as u32);
                        keep.push(k);
                    }
                }
                indptr.push(indices.len());
            }
            Ok(Rows {
                indptr,
                indices,
                data: block.select(&keep),
            })
        }
    }
}

/// Whether any input of `m` is a dense array.
pub(super) fn has_dense_source(m: &MatrixPlan) -> bool {
    m.sources
        .iter()
        .flatten()
        .any(|s| s.kind == SourceKind::Dense)
}

/// The metadata of the array at `path`; `missing` is the error otherwise.
pub(super) fn array_meta(store: &Store, path: &str, missing: &str) -> Result<ArrayMeta> {
    match store.node(path)? {
        Some(NodeMeta {
            kind: NodeKind::Array(a),
            ..
        }) => Ok(*a),
        _ => Err(store.err(path, missing)),
    }
}

pub(crate) fn index_dtype(store: &Store, path: &str) -> Result<DType> {
    Ok(array_meta(store, path, "missing sparse member")?.dtype)
}

/// One assembled block of output rows.
pub(super) struct Block {
    pub(super) counts: Vec<u32>,
    pub(super) indices: Vec<u32>,
    pub(super) data: Values,
}

/// Appends row `r` of `rows` with columns mapped by `map_col` (`None` drops).
pub(super) fn push_row(
    rows: &Rows,
    r: usize,
    map_col: &dyn Fn(i64) -> Option<i64>,
    out_idx: &mut Vec<(i64, usize)>,
) {
    for k in rows.indptr[r]..rows.indptr[r + 1] {
        if let Some(c) = map_col(i64::from(rows.indices[k])) {
            out_idx.push((c, k));
        }
    }
}

/// Whether `map` keeps columns in order (ignoring dropped ones).
pub(super) fn keeps_order(map: &[i32]) -> bool {
    let mut last = -1;
    for &n in map {
        if n >= 0 {
            if n <= last {
                return false;
            }
            last = n;
        }
    }
    true
}

/// Reads the rows `wanted` (row numbers of `src`, any order) and says
/// where each landed. Rows that fill most of their span are read in one go;
/// scattered ones (an input whose rows the join reorders) in runs of nearby
/// rows, so memory follows the rows asked for, not their span.
pub(super) fn read_row_set(
    stores: &StoreCache,
    src: &MatrixSource,
    wanted: &[i64],
    dtype: &DType,
) -> Result<(Rows, std::collections::HashMap<i64, usize>)> {
    let mut sorted = wanted.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    let span = (hi - lo + 1) as usize;
    if span <= 2 * sorted.len() + 64 {
        let rows = read_rows(stores, src, lo as u64..hi as u64 + 1, dtype)?;
        let at = sorted.iter().map(|&r| (r, (r - lo) as usize)).collect();
        return Ok((rows, at));
    }
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &r in &sorted {
        match runs.last_mut() {
            Some(run) if r - run.1 <= 8 => run.1 = r,
            _ => runs.push((r, r)),
        }
    }
    let mut out = Rows {
        indptr: vec![0],
        indices: Vec::new(),
        data: Values::zeros(dtype, 0)?,
    };
    let mut at = std::collections::HashMap::with_capacity(sorted.len());
    for (a, b) in runs {
        let base_row = out.indptr.len() - 1;
        out.append(read_rows(stores, src, a as u64..b as u64 + 1, dtype)?)?;
        for r in a..=b {
            at.insert(r, base_row + (r - a) as usize);
        }
    }
    Ok((out, at))
}

/// The fast path of [`assemble`]: rows stacked along obs from sparse inputs
/// with a zero fill (nothing to insert), not block-diagonal. Columns go
/// through each input's reindexer; a row is put back in column order only
/// when the reindexer reorders columns (through a [`ColumnScatter`], or a
/// stable sort of packed `column << 32 | position` keys for a row holding
/// a column twice); values are gathered once per input, or appended whole
/// when nothing moves. Counting (`!with_data`) only counts each row's kept
/// entries. `None` when the general path is needed.
pub(super) fn assemble_stacked_sparse(
    plan: &ConcatPlan,
    m: &MatrixPlan,
    range: &Range<u64>,
    with_data: bool,
    entries: usize,
) -> Result<Option<Block>> {
    if m.stack != Axis::Obs || m.diagonal || !m.fill.is_zero() {
        return Ok(None);
    }
    let parts = inputs_in(m, range);
    if parts.iter().any(|(i, _)| {
        m.sources[*i]
            .as_ref()
            .is_some_and(|s| s.kind == SourceKind::Dense)
    }) {
        return Ok(None);
    }
    let space = &plan.spaces[m.space];
    let mut counts = vec![0u32; (range.end - range.start) as usize];
    let mut indices: Vec<u32> = Vec::with_capacity(entries);
    let mut data = Values::zeros(&m.dtype, 0)?;
    data.reserve(entries);
    let mut keyed: Vec<u64> = Vec::new();
    let mut scatter: Option<ColumnScatter> = None;
    for (i, local) in parts {
        let Some(src) = &m.sources[i] else { continue };
        let first_out = (m.along[i][0] + local.start - range.start) as usize;
        let rows = read_rows_with(&plan.stores, src, local.clone(), &m.dtype, with_data)?;
        let map = &space.reindexer(i).new_of_old;
        let ordered = keeps_order(map);
        let n = (local.end - local.start) as usize;
        // Kept columns in order, the dropped ones (if any) all after them
        // (an inner join of nested names): each row keeps a prefix.
        let kept = map.iter().position(|&c| c < 0).unwrap_or(map.len());
        let narrow = narrow_map(map);
        if ordered && kept == map.len() {
            for r in 0..n {
                counts[first_out + r] = (rows.indptr[r + 1] - rows.indptr[r]) as u32;
            }
            // The first input of the block hands over its buffers when
            // nothing is renamed (an inner join of one var): no copy.
            if indices.is_empty() && map.iter().zip(0..).all(|(&new, old)| new == old) {
                indices = rows.indices;
            } else {
                indices.extend(rows.indices.iter().map(|&c| narrow[c as usize]));
            }
            data.append(rows.data)?;
            continue;
        }
        if ordered && map[kept..].iter().all(|&c| c < 0) && rows.rows_ascending() {
            for r in 0..n {
                let (a, b) = (rows.indptr[r], rows.indptr[r + 1]);
                let cut = a + rows.indices[a..b].partition_point(|&c| (c as usize) < kept);
                counts[first_out + r] = (cut - a) as u32;
                indices.extend(rows.indices[a..cut].iter().map(|&c| narrow[c as usize]));
                if with_data {
                    data.extend_range(&rows.data, a, cut)?;
                }
            }
            continue;
        }
        if !with_data {
            // Counting: how many entries each row keeps, in any order.
            for r in 0..n {
                let row = &rows.indices[rows.indptr[r]..rows.indptr[r + 1]];
                counts[first_out + r] = row
                    .iter()
                    .filter(|&&c| narrow[c as usize] != DROPPED)
                    .count() as u32;
            }
            continue;
        }
        if !ordered && scatter.is_none() {
            scatter = ColumnScatter::new(space.n_other);
        }
        let mut renamed = RenamedRows {
            scatter: scatter.as_mut(),
            ordered,
            narrow: &narrow,
            indptr: &rows.indptr,
            cols: &rows.indices,
            counts: &mut counts[first_out..first_out + n],
            indices: &mut indices,
            keyed: &mut keyed,
        };
        data.append_with(&rows.data, &mut renamed)?;
    }
    Ok(Some(Block {
        counts,
        indices,
        data,
    }))
}

/// The fast path of [`assemble`] for sparse inputs stacked along var
/// (columns side by side) with a zero fill, not block-diagonal: every
/// output row is the inputs' rows one after the other, their columns
/// shifted by each input's offset. Inputs come in column order, so a row
/// stays sorted when every input row is; the values of each (row, input)
/// pair are copied as one range. `None` when the general path is needed
/// (a dense input, a non-zero fill, or an input row whose columns are not
/// strictly ascending).
pub(super) fn assemble_side_by_side(
    plan: &ConcatPlan,
    m: &MatrixPlan,
    range: &Range<u64>,
) -> Result<Option<Block>> {
    if m.stack != Axis::Var || m.diagonal || !m.fill.is_zero() || has_dense_source(m) {
        return Ok(None);
    }
    let space = &plan.spaces[m.space];
    let nrows = (range.end - range.start) as usize;
    // Per input: its column offset, the rows read, and where each output
    // row's input row landed in them (`usize::MAX`: the input lacks it).
    let mut reads: Vec<(u32, Rows, Vec<usize>)> = Vec::new();
    let mut total = 0usize;
    for (i, &[offset, _]) in m.along.iter().enumerate() {
        let Some(src) = &m.sources[i] else { continue };
        let olds = space.reindexer(i).old_of_new_in(range.clone());
        let present: Vec<i64> = olds.iter().copied().filter(|&o| o >= 0).collect();
        if present.is_empty() {
            continue;
        }
        let (rows, map) = read_row_set(&plan.stores, src, &present, &m.dtype)?;
        if !rows.rows_ascending() {
            return Ok(None);
        }
        let at: Vec<usize> = olds
            .iter()
            .map(|&o| if o >= 0 { map[&o] } else { usize::MAX })
            .collect();
        total += at
            .iter()
            .filter(|&&a| a != usize::MAX)
            .map(|&a| rows.indptr[a + 1] - rows.indptr[a])
            .sum::<usize>();
        reads.push((offset as u32, rows, at));
    }
    let mut counts = Vec::with_capacity(nrows);
    let mut indices = Vec::with_capacity(total);
    let mut data = Values::zeros(&m.dtype, 0)?;
    data.reserve(total);
    for r in 0..nrows {
        let before = indices.len();
        for (off, rows, at) in &reads {
            let a = at[r];
            if a == usize::MAX {
                continue;
            }
            let (s, e) = (rows.indptr[a], rows.indptr[a + 1]);
            indices.extend(rows.indices[s..e].iter().map(|&c| c + off));
            data.extend_range(&rows.data, s, e)?;
        }
        counts.push((indices.len() - before) as u32);
    }
    Ok(Some(Block {
        counts,
        indices,
        data,
    }))
}

/// Assembles output rows `range` of sparse matrix `m`.
pub(super) fn assemble(plan: &ConcatPlan, m: &MatrixPlan, range: Range<u64>) -> Result<Block> {
    assemble_sized(plan, m, range, 0)
}

/// [`assemble`] of rows known to hold about `entries` entries: the block's
/// vectors are given that room at once, rather than grown (and copied)
/// input by input.
pub(super) fn assemble_sized(
    plan: &ConcatPlan,
    m: &MatrixPlan,
    range: Range<u64>,
    entries: usize,
) -> Result<Block> {
    if let Some(block) = assemble_stacked_sparse(plan, m, &range, true, entries)? {
        return Ok(block);
    }
    if let Some(block) = assemble_side_by_side(plan, m, &range)? {
        return Ok(block);
    }
    let space = &plan.spaces[m.space];
    let nrows = (range.end - range.start) as usize;
    let fill = m.fill;
    let fill_nonzero = !fill.is_zero();
    // Per output row: (column, piece, position in piece) entries.
    let mut row_entries: Vec<Vec<(i64, usize, usize)>> = vec![Vec::new(); nrows];
    let mut pieces: Vec<Values> = Vec::new();
    let fill_piece = {
        let v = Values::zeros(&m.dtype, 1)?;
        v.take(&[None], fill)
    };
    let fill_id = 0usize;
    pieces.push(fill_piece);
    match m.stack {
        Axis::Obs => {
            for (i, local) in inputs_in(m, &range) {
                let first_out = (m.along[i][0] + local.start - range.start) as usize;
                if m.diagonal {
                    if let Some(src) = &m.sources[i] {
                        let rows = read_rows(&plan.stores, src, local.clone(), &m.dtype)?;
                        let piece = pieces.len();
                        let shift = m.along[i][0] as i64;
                        for r in 0..(local.end - local.start) as usize {
                            for k in rows.indptr[r]..rows.indptr[r + 1] {
                                row_entries[first_out + r].push((
                                    i64::from(rows.indices[k]) + shift,
                                    piece,
                                    k,
                                ));
                            }
                        }
                        pieces.push(rows.data);
                    }
                    continue;
                }
                let reindex = space.reindexer(i);
                let missing_cols: Vec<i64> = if fill_nonzero {
                    let olds = reindex.old_of_new();
                    (0..space.n_other as i64)
                        .filter(|&c| olds[c as usize] < 0 || m.sources[i].is_none())
                        .collect()
                } else {
                    Vec::new()
                };
                if let Some(src) = &m.sources[i] {
                    let rows = read_rows(&plan.stores, src, local.clone(), &m.dtype)?;
                    let piece = pieces.len();
                    let map = |c: i64| {
                        let n = reindex.new_of_old[c as usize];
                        (n >= 0).then_some(i64::from(n))
                    };
                    let mut tmp = Vec::new();
                    for r in 0..(local.end - local.start) as usize {
                        tmp.clear();
                        push_row(&rows, r, &map, &mut tmp);
                        let entries = &mut row_entries[first_out + r];
                        entries.extend(tmp.iter().map(|&(c, k)| (c, piece, k)));
                        entries.extend(missing_cols.iter().map(|&c| (c, fill_id, 0)));
                    }
                    pieces.push(rows.data);
                } else {
                    for r in 0..(local.end - local.start) as usize {
                        row_entries[first_out + r]
                            .extend(missing_cols.iter().map(|&c| (c, fill_id, 0)));
                    }
                }
            }
        }
        Axis::Var => {
            for (i, &[offset, n]) in m.along.iter().enumerate() {
                let reindex = space.reindexer(i);
                let olds = reindex.old_of_new_in(range.clone());
                let width = n as i64;
                let off = offset as i64;
                let fill_row: Vec<i64> = if fill_nonzero {
                    (off..off + width).collect()
                } else {
                    Vec::new()
                };
                let present: Vec<i64> = olds.iter().copied().filter(|&o| o >= 0).collect();
                let read = match &m.sources[i] {
                    Some(src) if !present.is_empty() => {
                        Some(read_row_set(&plan.stores, src, &present, &m.dtype)?)
                    }
                    _ => None,
                };
                let piece = pieces.len();
                for (r, &old) in olds.iter().enumerate() {
                    match (&read, old >= 0 && m.sources[i].is_some()) {
                        (Some((rows, at)), true) => {
                            let lr = at[&old];
                            for k in rows.indptr[lr]..rows.indptr[lr + 1] {
                                row_entries[r].push((i64::from(rows.indices[k]) + off, piece, k));
                            }
                        }
                        _ => row_entries[r].extend(fill_row.iter().map(|&c| (c, fill_id, 0))),
                    }
                }
                if let Some((rows, _)) = read {
                    pieces.push(rows.data);
                }
            }
        }
    }
    // Gather values in row order, columns sorted.
    let offsets: Vec<usize> = pieces
        .iter()
        .scan(0usize, |acc, p| {
            let start = *acc;
            *acc += p.len();
            Some(start)
        })
        .collect();
    let mut all = Values::zeros(&m.dtype, 0)?;
    for p in &pieces {
        all.extend(p)?;
    }
    let mut counts = Vec::with_capacity(nrows);
    let mut indices = Vec::new();
    let mut take = Vec::new();
    for entries in &mut row_entries {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            entries.sort_by_key(|e| e.0);
        }
        counts.push(entries.len() as u32);
        for &(c, piece, k) in entries.iter() {
            indices.push(c as u32);
            take.push(offsets[piece] + k);
        }
    }
    let data = all.select(&take);
    Ok(Block {
        counts,
        indices,
        data,
    })
}
