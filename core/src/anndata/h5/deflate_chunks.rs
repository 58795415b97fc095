//! Gzip-compressed datasets read chunk by chunk, inflated by libdeflate.
//!
//! Atlases are published as gzip `.h5ad`. Read through HDF5, each chunk is
//! inflated by the system zlib: half of a concat's CPU time went there
//! (perf, nine gzip h5ad inputs: 48% in libz). HDF5 does not let a
//! program replace its built-in deflate filter, so for the datasets that
//! carry the bulk of a matrix (numbers, chunked in whole rows, compressed
//! with deflate alone or after shuffle) a read takes each chunk's stored
//! bytes (`H5Dread_chunk`) and inflates them here with libdeflate, two to
//! three times as fast on whole buffers. Anything else (other filters,
//! chunks never written, big-endian numbers) reads through HDF5 as before.

use std::ops::Range;

use hdf5::filters::Filter;
use hdf5_sys::h5d::{H5Dget_chunk_info_by_coord, H5Dread_chunk};
use hdf5_sys::h5p::H5P_DEFAULT;
use hdf5_sys::h5t::{H5T_order_t, H5Tget_order};
use libdeflate_sys::{
    libdeflate_alloc_decompressor, libdeflate_decompressor, libdeflate_free_decompressor,
    libdeflate_result_LIBDEFLATE_SUCCESS, libdeflate_zlib_decompress,
};

use super::Elem;

/// How a dataset's chunks are stored, when they can be read directly.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeflateChunks {
    /// Rows (first-dimension indices) in one chunk.
    chunk_rows: u64,
    /// Bytes of one row.
    row_bytes: usize,
    /// Bytes of one element (the shuffle's stride).
    elem_size: usize,
    /// Dimensions of the dataset.
    rank: usize,
    /// The shuffle filter ran before deflate.
    shuffled: bool,
}

impl DeflateChunks {
    /// `Some` when `ds` (of shape `shape`, elements `elem`) holds
    /// little-endian numbers in chunks of whole rows, filtered by deflate
    /// alone or by shuffle then deflate.
    pub(super) fn of(ds: &hdf5::Dataset, elem: Elem, shape: &[u64]) -> Option<DeflateChunks> {
        if elem == Elem::Bool || elem.is_string() || shape.is_empty() {
            return None;
        }
        let chunk = ds.chunk()?;
        if chunk.len() != shape.len()
            || chunk[0] == 0
            || chunk[1..]
                .iter()
                .zip(&shape[1..])
                .any(|(&c, &s)| c as u64 != s)
        {
            return None;
        }
        let shuffled = match ds.filters().as_slice() {
            [Filter::Deflate(_)] => false,
            [Filter::Shuffle, Filter::Deflate(_)] => true,
            _ => return None,
        };
        let dtype = ds.dtype().ok()?;
        let elem_size = elem.size() as usize;
        if dtype.size() != elem_size {
            return None;
        }
        // SAFETY: `dtype` is an open type id for the duration of the call,
        // made under the library's lock.
        #[allow(unsafe_code)]
        let order = hdf5::sync::sync(|| unsafe { H5Tget_order(dtype.id()) });
        if elem_size > 1 && order != H5T_order_t::H5T_ORDER_LE {
            return None;
        }
        let row_elems: u64 = shape[1..].iter().product();
        Some(DeflateChunks {
            chunk_rows: chunk[0] as u64,
            row_bytes: usize::try_from(row_elems).ok()?.checked_mul(elem_size)?,
            elem_size,
            rank: shape.len(),
            shuffled,
        })
    }

    /// Rows `rows` of `ds`, little-endian; `Ok(None)` when a chunk they
    /// touch cannot be read directly (never written, or filtered
    /// differently), for the caller to read through HDF5 instead.
    pub(super) fn read(
        &self,
        ds: &hdf5::Dataset,
        rows: Range<u64>,
    ) -> Result<Option<Vec<u8>>, String> {
        let chunk_bytes = usize::try_from(self.chunk_rows)
            .ok()
            .and_then(|r| r.checked_mul(self.row_bytes))
            .ok_or("chunk too large")?;
        let mut out = Vec::with_capacity((rows.end - rows.start) as usize * self.row_bytes);
        let (mut stored, mut plain, mut unshuffled) =
            (Vec::new(), vec![0u8; chunk_bytes], Vec::new());
        let mut inflater = Inflater::new()?;
        let mut offset = vec![0u64; self.rank];
        for c in rows.start / self.chunk_rows..rows.end.div_ceil(self.chunk_rows) {
            offset[0] = c * self.chunk_rows;
            let Some(mask) = read_stored(ds, &offset, chunk_bytes, &mut stored)? else {
                return Ok(None);
            };
            // The filter mask: bit i set, filter i of the pipeline skipped.
            let (shuffle_bit, deflate_bit) = if self.shuffled { (1, 2) } else { (0, 1) };
            if mask & !(shuffle_bit | deflate_bit) != 0 {
                return Ok(None);
            }
            let bytes: &[u8] = if mask & deflate_bit == 0 {
                if inflater.inflate(&stored, &mut plain)? != chunk_bytes {
                    return Err(format!("chunk {c} inflates to the wrong size"));
                }
                &plain
            } else if stored.len() == chunk_bytes {
                &stored
            } else {
                return Ok(None);
            };
            let bytes = if self.shuffled && mask & shuffle_bit == 0 {
                unshuffle(bytes, self.elem_size, &mut unshuffled);
                &unshuffled
            } else {
                bytes
            };
            let first = c * self.chunk_rows;
            let lo = (rows.start.max(first) - first) as usize * self.row_bytes;
            let hi = (rows.end.min(first + self.chunk_rows) - first) as usize * self.row_bytes;
            out.extend_from_slice(&bytes[lo..hi]);
        }
        Ok(Some(out))
    }
}

/// Reads the stored (still filtered) bytes of the chunk at `offset` into
/// `buf`: its filter mask, or `None` if the chunk was never written or
/// claims more bytes than deflate can make of `chunk_bytes` (left to HDF5,
/// so that a damaged size does not size a buffer).
fn read_stored(
    ds: &hdf5::Dataset,
    offset: &[u64],
    chunk_bytes: usize,
    buf: &mut Vec<u8>,
) -> Result<Option<u32>, String> {
    hdf5::sync::sync(|| {
        let (mut mask, mut addr, mut size) = (0u32, 0u64, 0u64);
        // SAFETY: `offset` has one entry per dimension of `ds`; the out
        // parameters are valid; the call is made under the library's lock.
        #[allow(unsafe_code)]
        let status = unsafe {
            H5Dget_chunk_info_by_coord(
                ds.id(),
                offset.as_ptr(),
                &raw mut mask,
                &raw mut addr,
                &raw mut size,
            )
        };
        // HADDR_UNDEF (all ones): not allocated.
        if status < 0 || addr == u64::MAX || size == 0 {
            return Ok(None);
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > chunk_bytes + chunk_bytes / 8 + 1024 {
            return Ok(None);
        }
        buf.clear();
        buf.resize(size, 0);
        let (status, read_mask) = read_chunk_call(ds, offset, buf);
        if status < 0 {
            return Err(format!("cannot read the stored chunk at row {}", offset[0]));
        }
        Ok(Some(read_mask))
    })
}

/// `H5Dread_chunk` of the chunk at `offset` into all of `buf` (its stored
/// size): the status and the filter mask. Called under the library's lock.
#[cfg(not(hdf5_2))]
fn read_chunk_call(ds: &hdf5::Dataset, offset: &[u64], buf: &mut [u8]) -> (i32, u32) {
    let mut mask = 0u32;
    // SAFETY: `offset` has one entry per dimension; `buf` holds the
    // chunk's stored size, which is what the call writes.
    #[allow(unsafe_code)]
    let status = unsafe {
        H5Dread_chunk(
            ds.id(),
            H5P_DEFAULT,
            offset.as_ptr(),
            &raw mut mask,
            buf.as_mut_ptr().cast(),
        )
    };
    (status, mask)
}

/// `H5Dread_chunk` as HDF5 2 has it: it also takes the buffer's size.
#[cfg(hdf5_2)]
fn read_chunk_call(ds: &hdf5::Dataset, offset: &[u64], buf: &mut [u8]) -> (i32, u32) {
    let (mut mask, mut size) = (0u32, buf.len());
    // SAFETY: as above, with the buffer's true size.
    #[allow(unsafe_code)]
    let status = unsafe {
        H5Dread_chunk(
            ds.id(),
            H5P_DEFAULT,
            offset.as_ptr(),
            &raw mut mask,
            buf.as_mut_ptr().cast(),
            &raw mut size,
        )
    };
    if size != buf.len() {
        (-1, mask)
    } else {
        (status, mask)
    }
}

/// Undoes HDF5's shuffle of `elem_size`-byte elements: `bytes` holds every
/// element's first byte, then every second byte, and so on.
fn unshuffle(bytes: &[u8], elem_size: usize, out: &mut Vec<u8>) {
    let n = bytes.len() / elem_size;
    out.clear();
    out.resize(bytes.len(), 0);
    for (b, plane) in bytes[..n * elem_size].chunks_exact(n.max(1)).enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            out[i * elem_size + b] = v;
        }
    }
    // Bytes past the last whole element are stored as they were.
    out[n * elem_size..].copy_from_slice(&bytes[n * elem_size..]);
}

/// A libdeflate decompressor (one per read; they cannot be shared).
struct Inflater(*mut libdeflate_decompressor);

impl Inflater {
    fn new() -> Result<Inflater, String> {
        // SAFETY: an allocation; null (out of memory) is refused.
        #[allow(unsafe_code)]
        let d = unsafe { libdeflate_alloc_decompressor() };
        if d.is_null() {
            return Err("cannot allocate a decompressor".into());
        }
        Ok(Inflater(d))
    }

    /// Inflates the zlib stream `input` into `out`: the bytes written.
    fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<usize, String> {
        let mut written = 0usize;
        // SAFETY: both slices are valid for their lengths; libdeflate
        // writes at most `out.len()` bytes.
        #[allow(unsafe_code)]
        let status = unsafe {
            libdeflate_zlib_decompress(
                self.0,
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                &raw mut written,
            )
        };
        if status != libdeflate_result_LIBDEFLATE_SUCCESS {
            return Err("a gzip chunk does not inflate (truncated or corrupt?)".into());
        }
        Ok(written)
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: allocated by libdeflate_alloc_decompressor, freed once.
        #[allow(unsafe_code)]
        unsafe {
            libdeflate_free_decompressor(self.0)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshuffle_restores_the_elements() {
        // Three 4-byte elements, shuffled: first bytes, second bytes, ...
        let elems: Vec<u8> = (0u8..12).collect();
        let mut shuffled = Vec::new();
        for b in 0..4 {
            for i in 0..3 {
                shuffled.push(elems[i * 4 + b]);
            }
        }
        let mut out = Vec::new();
        unshuffle(&shuffled, 4, &mut out);
        assert_eq!(out, elems);
    }
}
