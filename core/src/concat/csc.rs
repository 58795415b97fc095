//! Out-of-core conversion of a CSC input to CSR, so its rows can be read
//! like a CSR input's. Two kernels, each within a bounded amount of memory:
//!
//! - `concat.csc_scatter` streams the input's columns in groups and appends
//!   every entry (local row, column, value) to the spill file of the row
//!   range ("part") it falls in; columns arrive in order, so each part's
//!   entries are column-ascending;
//! - `concat.csc_gather` (one per part) reads its spill file, orders the
//!   entries by row with a stable counting sort (columns stay ascending
//!   within a row) and writes the part as a small CSR store, compressed
//!   (blosc lz4 at its fastest level) in chunks of
//!   [`PART_CHUNK`] elements.
//!
//! The spill files and parts live in the run's scratch directory
//! (`OUT.partial/.anncat/tmp`) and go away with it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::in_order::read_bytes;
use super::matrix::{index_dtype, write_value_range};
use super::values::Values;
use crate::anndata::OutputStore;
use crate::anndata::layout::ArraySpec;
use crate::anndata::sandbox;
use crate::anndata::{DType, Store, ZarrFormat};
use crate::error::{Error, Result};
use crate::graph::{decode, encode};
use crate::kernel::KernelRegistry;

/// Arguments of `concat.csc_scatter`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CscScatterTask {
    /// Input store.
    pub store: PathBuf,
    /// The CSC element.
    pub path: String,
    /// Row bounds of the parts (`parts + 1` values, from 0 to the row count).
    pub bounds: Vec<u64>,
    /// Directory for the spill files (`part-K.bin`).
    pub spill_dir: PathBuf,
    /// Most entries read at once.
    pub group_entries: u64,
}

/// Arguments of `concat.csc_gather`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CscGatherTask {
    /// The part's spill file.
    pub spill: PathBuf,
    /// Rows in the part.
    pub rows: u64,
    /// The input's value dtype.
    pub dtype: DType,
    /// The CSR store to write (group `m`).
    pub out: PathBuf,
}

/// Registers the CSC conversion kernels.
pub fn register(registry: &mut KernelRegistry) {
    registry.register("concat.csc_scatter", |a: &[u8], _: &[Arc<Vec<u8>>]| {
        scatter(&decode(a)?)
    });
    registry.register("concat.csc_gather", |a: &[u8], _: &[Arc<Vec<u8>>]| {
        gather(&decode(a)?)
    });
}

/// Bytes buffered per part before they are written to its spill file
/// (the scatter task's memory estimate counts 256 KiB per part).
const SPILL_BUFFER: usize = 256 << 10;

/// Elements in one chunk of a part store's arrays. The parts are written
/// compressed: uncompressed, they were the run's largest writes (12 bytes
/// per entry), and filling that much new page cache cost more system time
/// than every other step together (CSC along var, 98M entries: 8.2 s of
/// system time and 9.2 s of wall time; compressed in these chunks, 3.0 s
/// and 5.6 s). Small enough that decoding one whole, to read a few rows,
/// stays cheap (1 MiB of 8-byte values).
pub const PART_CHUNK: u64 = 1 << 17;

/// The most a reader of a part store decodes at once: a chunk of each of
/// its arrays (values of `item` bytes and 4-byte columns of at most
/// `entries` entries, an 8-byte `indptr` of at most `rows` rows).
pub fn part_read_chunk_bytes(item: usize, entries: u64, rows: u64) -> u64 {
    PART_CHUNK.min(entries.max(1)) * (item as u64 + 4) + PART_CHUNK.min(rows + 1) * 8
}

/// Bytes of one spilled entry of values of `item` bytes.
pub fn record_bytes(item: usize) -> usize {
    8 + item
}

/// The spill file of part `k`.
pub fn spill_file(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("part-{k}.bin"))
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::path(
        path,
        format!("{what}: {}", crate::anndata::store::io_reason(&e)),
    )
}

/// A part's spill file being written: its temporary name, the file, and
/// the records not written yet.
struct SpillOut {
    tmp: PathBuf,
    file: std::fs::File,
    buf: Vec<u8>,
}

/// A group of whole columns read by a scatter task.
struct SpillGroup<'a> {
    /// The columns.
    columns: std::ops::Range<usize>,
    /// Where each column starts among the input's entries.
    ip: &'a [i64],
    /// The input entry the group starts at.
    start: i64,
    /// The group's entries' rows.
    rows: &'a [i64],
    /// Their values, little-endian.
    values: &'a [u8],
}

/// Appends each entry of `g` (values of `W` bytes: the record's size is
/// known to the compiler, so no copy calls out) to the spill buffer of
/// the part its row falls in (row bounds `bounds`), writing out each
/// buffer that fills, and counts the entries per part. A row outside the
/// bounds is refused with `bad_row` of it.
fn spill_columns<const W: usize>(
    g: &SpillGroup<'_>,
    bounds: &[u64],
    outs: &mut [SpillOut],
    counts: &mut [u64],
    bad_row: &dyn Fn(i64) -> Error,
) -> Result<()> {
    let parts = outs.len();
    let end = bounds.last().copied().unwrap_or(0);
    for c in g.columns.clone() {
        // A column's rows ascend, and so do the parts they fall in.
        let mut part = 0usize;
        for k in (g.ip[c] - g.start) as usize..(g.ip[c + 1] - g.start) as usize {
            let r = u64::try_from(g.rows[k])
                .ok()
                .filter(|&r| r < end)
                .ok_or_else(|| bad_row(g.rows[k]))?;
            while part + 1 < parts && bounds[part + 1] <= r {
                part += 1;
            }
            if r < bounds[part] {
                // Rows out of order in this column: look the part up.
                part = bounds
                    .partition_point(|&b| b <= r)
                    .saturating_sub(1)
                    .min(parts - 1);
            }
            let local = (r - bounds[part]) as u32;
            let value: &[u8; W] = g.values[k * W..(k + 1) * W]
                .try_into()
                .expect("W bytes per value");
            let out = &mut outs[part];
            out.buf.extend_from_slice(&local.to_le_bytes());
            out.buf.extend_from_slice(&(c as u32).to_le_bytes());
            out.buf.extend_from_slice(value);
            if out.buf.len() + record_bytes(W) > SPILL_BUFFER {
                out.file
                    .write_all(&out.buf)
                    .map_err(|e| io_err(&out.tmp, "cannot write spill file", e))?;
                out.buf.clear();
            }
            counts[part] += 1;
        }
    }
    Ok(())
}

fn scatter(t: &CscScatterTask) -> Result<Vec<u8>> {
    // Refused up front, before any reading, if outside --allow-write.
    sandbox::create_dir_all(&t.spill_dir).map_err(|e| io_err(&t.spill_dir, "cannot create", e))?;
    let store = Store::open(&t.store)?;
    let ip_path = format!("{}/indptr", t.path);
    let ncols = store.array(&ip_path)?.shape()[0].saturating_sub(1);
    let ip = crate::anndata::sparse::read_i64_range(
        &store,
        &ip_path,
        &index_dtype(&store, &ip_path)?,
        0,
        ncols + 1,
    )?;
    let ix_path = format!("{}/indices", t.path);
    let ix_dtype = index_dtype(&store, &ix_path)?;
    let data_path = format!("{}/data", t.path);
    let dtype = index_dtype(&store, &data_path)?;
    let item = dtype.item_size();
    let parts = t.bounds.len().saturating_sub(1);
    // Records gather in a buffer per part, written out when full.
    let mut outs = Vec::with_capacity(parts);
    for k in 0..parts {
        let tmp = spill_file(&t.spill_dir, k).with_extension("tmp");
        let file = sandbox::create_file(&tmp).map_err(|e| io_err(&tmp, "cannot create", e))?;
        outs.push(SpillOut {
            tmp,
            file,
            buf: Vec::with_capacity(SPILL_BUFFER),
        });
    }
    let spill = match item {
        1 => spill_columns::<1>,
        2 => spill_columns::<2>,
        4 => spill_columns::<4>,
        8 => spill_columns::<8>,
        _ => return Err(store.err(&data_path, format!("values of {item} bytes"))),
    };
    let rows_end = t.bounds.last().copied().unwrap_or(0);
    let bad_row = |r: i64| store.err(&ix_path, format!("row index {r} outside 0..{rows_end}"));
    let mut counts = vec![0u64; parts];
    let mut c0 = 0usize;
    while c0 < ncols as usize {
        // A group of whole columns of at most `group_entries` entries (at least one column).
        let start = ip[c0];
        let mut c1 = c0 + 1;
        while c1 < ncols as usize && (ip[c1 + 1] - start) as u64 <= t.group_entries {
            c1 += 1;
        }
        let n = (ip[c1] - start) as u64;
        if n > 0 {
            let rows = crate::anndata::sparse::read_i64_range(
                &store,
                &ix_path,
                &ix_dtype,
                start as u64,
                n,
            )?;
            let values = read_bytes(&store, &data_path, start as u64, n)?;
            let group = SpillGroup {
                columns: c0..c1,
                ip: &ip,
                start,
                rows: &rows,
                values: &values,
            };
            spill(&group, &t.bounds, &mut outs, &mut counts, &bad_row)?;
        }
        c0 = c1;
    }
    for (k, mut out) in outs.into_iter().enumerate() {
        out.file
            .write_all(&out.buf)
            .map_err(|e| io_err(&out.tmp, "cannot write spill file", e))?;
        drop(out.file);
        let dest = spill_file(&t.spill_dir, k);
        sandbox::rename(&out.tmp, &dest)
            .map_err(|e| io_err(&dest, "cannot write spill file", e))?;
    }
    encode(&counts)
}

/// Marks a part store as complete (its spill file may be gone).
const COMPLETE: &str = "anncat-complete";

/// Records read from a spill file at once.
const SPILL_BLOCK_RECORDS: usize = 1 << 16;

/// Calls `each` with every spilled record of `file` (`rec` bytes each),
/// a block at a time from its start, and returns how many there were.
#[inline]
fn each_record(
    file: &mut std::fs::File,
    spill: &Path,
    rec: usize,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |e| io_err(spill, "cannot read spill file", e);
    file.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let mut block = vec![0u8; rec * SPILL_BLOCK_RECORDS];
    let mut count = 0u64;
    loop {
        // Fills the block, or up to the end of the file.
        let mut filled = 0;
        while filled < block.len() {
            match file.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(got) => filled += got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        if filled % rec != 0 {
            return Err(Error::path(spill, "spill file is truncated"));
        }
        for record in block[..filled].chunks_exact(rec) {
            each(record)?;
        }
        count += (filled / rec) as u64;
        if filled < block.len() {
            return Ok(count);
        }
    }
}

/// The local row and the column of a spilled record.
fn row_and_column(record: &[u8]) -> (usize, u32) {
    let word = |at: usize| {
        u32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
    };
    (word(0) as usize, word(4))
}

/// The error of a spill file holding a row past its part's.
fn row_outside_part(spill: &Path) -> Error {
    Error::path(spill, "spill file holds a row outside its part")
}

/// Puts each record of the spill file `file` (values of `W` bytes) at its
/// row's next place (`next`, within the row's `indptr` range): its
/// column in `cols`, its value in `values`. Returns how many records.
fn place_records<const W: usize>(
    file: &mut std::fs::File,
    spill: &Path,
    indptr: &[usize],
    next: &mut [usize],
    cols: &mut [i32],
    values: &mut [u8],
) -> Result<u64> {
    each_record(file, spill, record_bytes(W), |record| {
        let (r, c) = row_and_column(record);
        let at = *next.get(r).ok_or_else(|| row_outside_part(spill))?;
        if at >= indptr[r + 1] {
            return Err(Error::path(spill, "spill file changed while it was read"));
        }
        next[r] = at + 1;
        cols[at] = i32::try_from(c).map_err(|_| Error::path(spill, "column index over 2^31"))?;
        let value: &[u8; W] = record[8..].try_into().expect("8 + W bytes per record");
        values[at * W..(at + 1) * W].copy_from_slice(value);
        Ok(())
    })
}

fn gather(t: &CscGatherTask) -> Result<Vec<u8>> {
    if t.out.join(COMPLETE).is_file() {
        return Ok(Vec::new()); // An earlier attempt finished (and removed the spill file).
    }
    // Read twice, a block at a time (to count each row's entries, then to
    // put each entry in place), rather than whole into memory: the
    // file's pages are in the page cache, and a part-sized buffer of
    // fresh memory cost more than the second read.
    let mut file =
        std::fs::File::open(&t.spill).map_err(|e| io_err(&t.spill, "cannot read spill file", e))?;
    let item = t.dtype.item_size();
    let rec = record_bytes(item);
    let nrows = t.rows as usize;
    // Stable counting sort by row: columns stay ascending within a row.
    let mut indptr = vec![0usize; nrows + 1];
    let n = each_record(&mut file, &t.spill, rec, |record| {
        let (r, _) = row_and_column(record);
        // `indptr` has a slot past each of the part's rows, and no more.
        *indptr
            .get_mut(r + 1)
            .ok_or_else(|| row_outside_part(&t.spill))? += 1;
        Ok(())
    })?;
    let n = usize::try_from(n).map_err(|_| Error::path(&t.spill, "spill file too large"))?;
    for r in 0..nrows {
        indptr[r + 1] += indptr[r];
    }
    let mut next = indptr[..nrows].to_vec();
    let mut cols = vec![0i32; n];
    // The values are sorted straight into the vector written (on a
    // little-endian machine); else into bytes, decoded after.
    let mut data = Values::zeros(&t.dtype, n)?;
    let mut staged = Vec::new();
    let values: &mut [u8] = match data.le_bytes_mut() {
        Some(bytes) => bytes,
        None => {
            staged = vec![0u8; n * item];
            &mut staged
        }
    };
    let place = match item {
        1 => place_records::<1>,
        2 => place_records::<2>,
        4 => place_records::<4>,
        8 => place_records::<8>,
        _ => return Err(Error::path(&t.spill, format!("values of {item} bytes"))),
    };
    let placed = place(&mut file, &t.spill, &indptr, &mut next, &mut cols, values)?;
    if placed != n as u64 {
        return Err(Error::path(
            &t.spill,
            "spill file changed while it was read",
        ));
    }
    drop(file);
    if !staged.is_empty() {
        data = Values::from_le_bytes(&t.dtype, &staged)?;
        drop(staged);
    }
    // Idempotent: a re-run replaces what an earlier attempt left.
    if t.out.exists() {
        sandbox::remove_dir_all(&t.out).map_err(|e| io_err(&t.out, "cannot replace", e))?;
    }
    if let Some(parent) = t.out.parent() {
        sandbox::create_dir_all(parent).map_err(|e| io_err(parent, "cannot create", e))?;
    }
    // The part is read back by the data tasks soon: written through the
    // page cache, not around it.
    crate::anndata::write_behind::forbid_on_this_thread();
    // Zarr v2, whose default codec (blosc lz4) anncat encodes and decodes
    // itself.
    let out = OutputStore::create(&t.out, ZarrFormat::V2)?;
    let empty = Map::new();
    out.write_group("", &empty)?;
    out.write_group("m", &empty)?;
    let indptr = Values::I64(indptr.into_iter().map(|p| p as i64).collect());
    for (name, values) in [
        ("data", data),
        ("indices", Values::I32(cols)),
        ("indptr", indptr),
    ] {
        let len = values.len() as u64;
        let chunk = len.clamp(1, PART_CHUNK);
        let spec = ArraySpec::new(vec![len], values.dtype(), vec![chunk]);
        let mut doc = spec
            .to_metadata(out.format())
            .ok_or_else(|| out.err(name, "no zarr spelling"))?;
        // Scratch read back once: blosc's fastest level (CSC along var:
        // user CPU 5.1-5.5 s at anndata's level 5, 4.3-4.4 s at 1).
        doc["compressor"]["clevel"] = serde_json::json!(1);
        let path = format!("m/{name}");
        out.write_array_meta(&path, &doc, &empty)?;
        // One chunk per write, encoded and written on this thread, so that
        // each file is synced by this task's flush. (Several chunks at once
        // through zarrs went to its codec pool, whose writes cost a flush
        // of the whole file system: every other part's spill file, which
        // is removed before the disk need ever see it, went to the disk
        // too.)
        for at in (0..len).step_by(chunk as usize) {
            let n = chunk.min(len - at);
            write_value_range(
                &out,
                &path,
                vec![at],
                vec![n],
                &values,
                at as usize..(at + n) as usize,
            )?;
        }
    }
    let marker = t.out.join(COMPLETE);
    sandbox::write(&marker, b"").map_err(|e| io_err(&marker, "cannot write", e))?;
    // Removed while its pages are likely still unwritten: the disk never sees it.
    sandbox::remove_file(&t.spill).map_err(|e| io_err(&t.spill, "cannot remove spill file", e))?;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gather_sorts_its_part_by_row_and_syncs_each_file_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Entries (local row, column, value) in column order, as spilled:
        // three, then enough for a second chunk of each array.
        let mut spill = Vec::new();
        let more = (4..PART_CHUNK as u32 + 4).map(|c| (2, c, 0.5));
        for (r, c, v) in [(1u32, 0u32, 1.5f64), (0, 2, 2.5), (1, 3, 3.5)]
            .into_iter()
            .chain(more)
        {
            spill.extend_from_slice(&r.to_le_bytes());
            spill.extend_from_slice(&c.to_le_bytes());
            spill.extend_from_slice(&v.to_le_bytes());
        }
        let task = CscGatherTask {
            spill: dir.path().join("part-0.bin"),
            rows: 3,
            dtype: DType::Float64,
            out: dir.path().join("part-0.zarr"),
        };
        std::fs::write(&task.spill, &spill).expect("spill");
        let noted = std::thread::spawn(move || {
            // As on a task thread, whose chunk writes may land behind it.
            crate::anndata::write_behind::allow_on_this_thread();
            gather(&task).expect("gather");
            let noted = crate::anndata::durable::noted_files();
            (crate::anndata::durable::take_unsynced().expect("a flush"))().expect("durable");
            noted
        })
        .join()
        .expect("thread");
        // Each chunk is synced by the task's own flush (not left to a flush
        // of the whole file system, as writes on zarrs' codec pool are).
        for chunk in ["data/0", "data/1", "indices/0", "indices/1", "indptr/0"] {
            let chunk = dir.path().join("part-0.zarr/m").join(chunk);
            assert!(noted.contains(&chunk), "{chunk:?} not in {noted:?}");
        }
        let store = Store::open(&dir.path().join("part-0.zarr")).expect("part");
        let indptr =
            crate::anndata::sparse::read_i64_range(&store, "m/indptr", &DType::Int64, 0, 4)
                .expect("indptr");
        assert_eq!(indptr, vec![0, 1, 3, 3 + PART_CHUNK as i64]);
        let cols = crate::anndata::sparse::read_i64_range(&store, "m/indices", &DType::Int32, 0, 3)
            .expect("indices");
        assert_eq!(
            cols,
            vec![2, 0, 3],
            "rows in order, columns ascending in each"
        );
        let data = read_bytes(&store, "m/data", 0, 3).expect("data");
        let data: Vec<f64> = data
            .chunks(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        assert_eq!(data, vec![2.5, 1.5, 3.5]);
        assert!(!dir.path().join("part-0.bin").exists(), "spill removed");
    }

    /// A spill file cut inside a record, or holding a row beyond its
    /// part, is refused with an error naming it (not a panic), and no
    /// part store is marked complete.
    #[test]
    fn a_gather_refuses_a_truncated_or_corrupt_spill_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let record = |r: u32, c: u32, v: f64| {
            let mut b = r.to_le_bytes().to_vec();
            b.extend_from_slice(&c.to_le_bytes());
            b.extend_from_slice(&v.to_le_bytes());
            b
        };
        let mut truncated = record(0, 0, 1.0);
        truncated.extend_from_slice(&record(1, 0, 2.0)[..10]);
        // More records than one read block, the last one's row outside.
        let mut outside: Vec<u8> = (0..SPILL_BLOCK_RECORDS as u32 + 5)
            .flat_map(|c| record(c % 2, c, 1.0))
            .collect();
        outside.extend_from_slice(&record(2, 0, 1.0));
        for (name, bytes, says) in [
            ("cut", truncated, "truncated"),
            ("outside", outside, "outside its part"),
        ] {
            let task = CscGatherTask {
                spill: dir.path().join(format!("{name}.bin")),
                rows: 2,
                dtype: DType::Float64,
                out: dir.path().join(format!("{name}.zarr")),
            };
            std::fs::write(&task.spill, &bytes).expect("spill");
            let err = gather(&task).expect_err(name).to_string();
            assert!(err.contains(says), "{name}: {err}");
            assert!(err.contains(&format!("{name}.bin")), "{name}: {err}");
            assert!(!task.out.join(COMPLETE).exists(), "{name}");
        }
    }
}
