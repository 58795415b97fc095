//! Chunks that are plain blosc frames, decoded by the blosc library
//! straight into the reader's buffer.
//!
//! Most AnnData zarr arrays are a `bytes` codec (little-endian) under one
//! `blosc` compressor: each chunk file is a blosc frame of the chunk's
//! elements as stored. zarrs decodes such a chunk whole into a vector of
//! its own, which the reader then copies the wanted part out of; a range
//! that starts or ends inside a chunk decodes that chunk whole in each of
//! the two tasks that share it. Here the frame is read in one go and
//! decoded into the destination: whole by `blosc_decompress_ctx`, or just
//! the blocks the range covers by `blosc_getitem`. On CSR along obs
//! (sparse 10000) that removed the copy after each decode and the decoding
//! of the parts of boundary chunks the task does not keep.
//!
//! Anything else (other codecs, filters, big-endian data, a frame that is
//! not what the metadata says) is left to zarrs.

#![allow(unsafe_code)] // Calls into the blosc C library, and buffers it writes into.

use std::ffi::c_void;

use zarrs::array::codec::{BloscCodec, BytesCodec};
use zarrs::array::{Array, ArrayError};

use super::backend::Backend;

/// The bytes of an element of `array` when its chunks are plain blosc
/// frames of its elements: 1-D, fixed-size elements stored little-endian
/// (or single bytes) on a little-endian machine, exactly one `bytes` codec
/// and one `blosc` codec. For reading ([`PlainBlosc`]) and writing
/// (`super::blosc_encode`) alike.
pub(crate) fn plain_blosc_element_size<S: ?Sized>(array: &Array<S>) -> Option<usize> {
    if cfg!(not(target_endian = "little")) || array.dimensionality() != 1 {
        return None;
    }
    let size = array.data_type().fixed_size()?;
    let codecs = array.codecs();
    if !codecs.array_to_array_codecs().is_empty() {
        return None;
    }
    let [blosc] = codecs.bytes_to_bytes_codecs() else {
        return None;
    };
    blosc.as_any().downcast_ref::<BloscCodec>()?;
    let bytes = codecs.array_to_bytes_codec();
    bytes.as_any().downcast_ref::<BytesCodec>()?;
    // The stored order must be this machine's (little-endian), or of
    // single bytes.
    let config = bytes.configuration_v3(&Default::default())?;
    let little = match config.get("endian") {
        None => size == 1,
        Some(e) => e.as_str() == Some("little"),
    };
    little.then_some(size)
}

/// An input array whose chunks are plain blosc frames of its elements
/// ([`plain_blosc_element_size`]).
pub(crate) struct PlainBlosc {
    /// Bytes an element.
    size: usize,
}

impl PlainBlosc {
    /// `Some` when `array` stores plain blosc frames (see the module).
    pub(crate) fn of(array: &Array<Backend>) -> Option<Self> {
        plain_blosc_element_size(array).map(|size| Self { size })
    }

    /// Elements of chunk `c` (whole, as its frame holds them).
    fn chunk_len(array: &Array<Backend>, c: u64) -> Result<usize, ArrayError> {
        let shape = array.chunk_shape(&[c])?;
        Ok(shape.iter().map(|n| n.get() as usize).product())
    }

    /// Appends elements `lo .. hi` of chunk `c` (counted from the chunk's
    /// start) to `sink`: decoded in place when the sink takes bytes, else
    /// through `scratch`. A missing chunk is its fill value. `Ok(false)`:
    /// the frame is not what the metadata says (zarrs should read it, and
    /// report what is wrong); nothing was appended.
    pub(crate) fn append_chunk_part(
        &self,
        array: &Array<Backend>,
        c: u64,
        (lo, hi): (usize, usize),
        sink: &mut dyn ByteSink,
        scratch: &mut Vec<u8>,
    ) -> Result<bool, ArrayError> {
        let chunk_len = Self::chunk_len(array, c)?;
        if lo > hi || hi > chunk_len {
            return Ok(false);
        }
        let bytes = (hi - lo) * self.size;
        let Some(frame) = array.retrieve_encoded_chunk(&[c])? else {
            let fill = array.fill_value().as_ne_bytes();
            if fill.len() != self.size {
                return Ok(false);
            }
            for _ in lo..hi {
                sink.append(fill);
            }
            return Ok(true);
        };
        let Some(layout) = FrameLayout::check(&frame, chunk_len * self.size) else {
            return Ok(false);
        };
        let range = (lo * self.size, hi * self.size);
        if let Some(dest) = sink.reserve_bytes(bytes) {
            // SAFETY: `dest` has room for `bytes` bytes (the sink's
            // contract) and the frame was checked.
            if !unsafe { layout.decode(&frame, range, dest) } {
                return Ok(false);
            }
            // SAFETY: all `bytes` were written.
            unsafe { sink.commit_bytes(bytes) };
        } else {
            scratch.clear();
            scratch.reserve(bytes);
            // SAFETY: `scratch` has room for `bytes` bytes.
            if !unsafe { layout.decode(&frame, range, scratch.as_mut_ptr()) } {
                return Ok(false);
            }
            // SAFETY: all `bytes` were written.
            unsafe { scratch.set_len(bytes) };
            sink.append(scratch);
        }
        Ok(true)
    }
}

/// A checked blosc frame: its decoded length and element width.
struct FrameLayout {
    nbytes: usize,
    typesize: usize,
}

impl FrameLayout {
    /// The frame's layout when blosc accepts it as a whole frame that
    /// decodes to `want` bytes.
    fn check(frame: &[u8], want: usize) -> Option<Self> {
        let mut nbytes = 0usize;
        // SAFETY: blosc reads at most `frame.len()` bytes of `frame`.
        let ok = unsafe {
            blosc_src::blosc_cbuffer_validate(
                frame.as_ptr().cast::<c_void>(),
                frame.len(),
                &mut nbytes,
            )
        };
        if ok != 0 || nbytes != want || i32::try_from(nbytes).is_err() {
            return None;
        }
        let (mut typesize, mut flags) = (0usize, 0i32);
        // SAFETY: the frame holds at least blosc's header (validated).
        unsafe {
            blosc_src::blosc_cbuffer_metainfo(
                frame.as_ptr().cast::<c_void>(),
                &mut typesize,
                &mut flags,
            )
        };
        (typesize > 0).then_some(Self { nbytes, typesize })
    }

    /// Decodes bytes `from .. to` of the frame into `dest`; false when
    /// blosc fails.
    ///
    /// # Safety
    /// `dest` has room for `to - from` bytes; `frame` passed [`Self::check`].
    unsafe fn decode(&self, frame: &[u8], (from, to): (usize, usize), dest: *mut u8) -> bool {
        // SAFETY: per the caller's contract, `dest` has room for the part.
        let room = unsafe {
            std::slice::from_raw_parts_mut(dest.cast::<std::mem::MaybeUninit<u8>>(), to - from)
        };
        if super::blosc_lz4::decode_range(frame, (from, to), room).is_some() {
            return true;
        }
        let src = frame.as_ptr().cast::<c_void>();
        let dest = dest.cast::<c_void>();
        if (from, to) == (0, self.nbytes) {
            // SAFETY: per the caller's contract.
            let n = unsafe { blosc_src::blosc_decompress_ctx(src, dest, self.nbytes, 1) };
            return usize::try_from(n) == Ok(self.nbytes);
        }
        if from == to {
            return true;
        }
        let t = self.typesize;
        if !from.is_multiple_of(t) || !to.is_multiple_of(t) {
            // Elements that do not line up with blosc's items: decode whole.
            let mut whole = Vec::<u8>::with_capacity(self.nbytes);
            // SAFETY: `whole` has room for the frame's bytes.
            let n = unsafe {
                blosc_src::blosc_decompress_ctx(
                    src,
                    whole.as_mut_ptr().cast::<c_void>(),
                    self.nbytes,
                    1,
                )
            };
            if usize::try_from(n) != Ok(self.nbytes) {
                return false;
            }
            // SAFETY: decoded whole; `dest` has room for the part.
            unsafe {
                whole.set_len(self.nbytes);
                std::ptr::copy_nonoverlapping(
                    whole[from..to].as_ptr(),
                    dest.cast::<u8>(),
                    to - from,
                );
            }
            return true;
        }
        // In bounds and below 2 GiB (checked): no overflow.
        let (start, items) = ((from / t) as i32, ((to - from) / t) as i32);
        // SAFETY: per the caller's contract; blosc writes `to - from` bytes.
        let n = unsafe { blosc_src::blosc_getitem(src, start, items, dest) };
        usize::try_from(n) == Ok(to - from)
    }
}

/// Where decoded elements go, in their stored (little-endian) layout.
pub trait ByteSink {
    /// Appends whole elements' bytes.
    fn append(&mut self, piece: &[u8]);

    /// Room for `n` more bytes at the end, to be written in place: where
    /// they start, or `None` when this sink's elements cannot take any
    /// bytes (then [`Self::append`] is used).
    fn reserve_bytes(&mut self, n: usize) -> Option<*mut u8>;

    /// Takes the `n` bytes written where [`Self::reserve_bytes`] pointed.
    ///
    /// # Safety
    /// All `n` bytes were written, right after `reserve_bytes(n)`.
    unsafe fn commit_bytes(&mut self, n: usize);
}

impl ByteSink for Vec<u8> {
    fn append(&mut self, piece: &[u8]) {
        self.extend_from_slice(piece);
    }

    fn reserve_bytes(&mut self, n: usize) -> Option<*mut u8> {
        self.reserve(n);
        Some(self.spare_capacity_mut().as_mut_ptr().cast::<u8>())
    }

    unsafe fn commit_bytes(&mut self, n: usize) {
        // SAFETY: per the contract, `n` more bytes were initialised.
        unsafe { self.set_len(self.len() + n) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blosc frame of `bytes` (LZ4, byte shuffle of `typesize`).
    fn frame(bytes: &[u8], typesize: usize, blocksize: usize) -> Vec<u8> {
        let mut out = vec![0u8; bytes.len() + blosc_src::BLOSC_MAX_OVERHEAD as usize];
        // SAFETY: buffers sized as blosc asks.
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                5,
                1,
                typesize,
                bytes.len(),
                bytes.as_ptr().cast(),
                out.as_mut_ptr().cast(),
                out.len(),
                blosc_src::BLOSC_LZ4_COMPNAME.as_ptr().cast(),
                blocksize,
                1,
            )
        };
        assert!(n > 0);
        out.truncate(n as usize);
        out
    }

    /// Every part of a frame (whole, inside one block, across blocks,
    /// empty, and parts not on blosc's items) decodes to those bytes.
    #[test]
    fn parts_of_a_frame_decode_to_those_bytes() {
        let values: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i * 7 % 1000).to_le_bytes())
            .collect();
        for typesize in [4, 1, 8] {
            let f = frame(&values, typesize, 4096);
            let layout = FrameLayout::check(&f, values.len()).expect("a frame");
            assert!(FrameLayout::check(&f, values.len() - 4).is_none());
            assert!(FrameLayout::check(&f[..f.len() - 1], values.len()).is_none());
            for (from, to) in [
                (0, values.len()),
                (8, 64),
                (4000, 13_000),
                (100, 100),
                (4, values.len()),
                (0, 4 * 1001),
            ] {
                let mut out = vec![0u8; to - from];
                // SAFETY: room for the part.
                assert!(unsafe { layout.decode(&f, (from, to), out.as_mut_ptr()) });
                assert_eq!(out, values[from..to], "typesize {typesize}, {from}..{to}");
            }
        }
    }

    /// A frame whose block offsets were damaged fails to decode rather
    /// than reading outside it.
    #[test]
    fn a_damaged_frame_fails() {
        let values: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut f = frame(&values, 4, 4096);
        let layout = FrameLayout::check(&f, values.len()).expect("a frame");
        for b in &mut f[16..48] {
            *b = 0xff;
        }
        let mut out = vec![0u8; values.len()];
        // SAFETY: room for every byte.
        assert!(!unsafe { layout.decode(&f, (0, values.len()), out.as_mut_ptr()) });
        assert!(!unsafe { layout.decode(&f, (40, 4000), out.as_mut_ptr()) });
    }
}
