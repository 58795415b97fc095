//! Encoding the blosc frames anndata writes (LZ4, byte shuffle or none)
//! without blosc's copies.
//!
//! blosc shuffles each block into a scratch block, has LZ4 compress each
//! of its streams into the frame, and copies a stream there as it is when
//! LZ4 cannot shrink it. Float values rarely shrink in their low bytes, so
//! most streams of a `float64` chunk are such copies: a second pass over
//! most of the chunk, into memory the kernel then reads again for the
//! write. Here a block's streams are shuffled straight to where they
//! would sit in the frame if none shrank; LZ4 then compresses each from
//! there, and only a stream that shrank (a few small ones: the high bytes
//! of numbers, which come after the low ones) or one that must move down
//! behind a shrunken one is copied.
//!
//! The frames are blosc's: the same header, block size (blosc's choice
//! for the level and type size), split into streams, LZ4 acceleration
//! (10 - level), and the same rule for storing a stream or the whole
//! buffer as it is. LZ4 is the library blosc itself links (`lz4-sys`), so
//! the frames are blosc's byte for byte (the tests compare them).

#![allow(unsafe_code)] // LZ4's C encoder, and SIMD loads and stores.

use std::cell::RefCell;

use super::blosc_lz4::{DONT_SPLIT, DOSHUFFLE, LZ4, MEMCPYED, MIN_BUFFER, splits};

/// The format version of LZ4 in a blosc header, and the header's size.
const LZ4_FORMAT: u8 = 1;
const HEADER: usize = 16;

thread_local! {
    /// A block shuffled when it cannot be shuffled in place, and LZ4's
    /// output for a stream compressed from its place in the frame.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// An encoder of LZ4 blosc frames at one level, shuffle and type size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lz4Encoder {
    clevel: usize,
    shuffle: bool,
    typesize: usize,
}

impl Lz4Encoder {
    /// `Some` for blosc's LZ4 at `clevel` 1-9 with byte shuffle (1) or
    /// none (0), elements of 1-255 bytes; anything else is left to blosc.
    pub(crate) fn new(clevel: usize, shuffle: i32, typesize: usize) -> Option<Self> {
        ((1..=9).contains(&clevel)
            && (shuffle == 0 || shuffle == 1)
            && (1..=255).contains(&typesize))
        .then_some(Self {
            clevel,
            shuffle: shuffle == 1,
            typesize,
        })
    }

    /// The room [`Self::encode`] needs for `nbytes` bytes: blosc's most
    /// (the bytes and a header), and a size word for each stream of each
    /// block, as they sit before the frame is packed.
    pub(crate) fn max_encoded(&self, nbytes: usize) -> usize {
        let blocksize = blocksize(self.clevel, self.typesize, nbytes).max(1);
        nbytes + HEADER + 4 * nbytes.div_ceil(blocksize) * (1 + self.typesize)
    }

    /// Encodes `src` (whole elements, under 2 GiB) into `dest`, which has
    /// [`Self::max_encoded`] bytes of room; how many it wrote.
    pub(crate) fn encode(&self, src: &[u8], dest: &mut [u8]) -> Option<usize> {
        let nbytes = src.len();
        if dest.len() < self.max_encoded(nbytes) || i32::try_from(nbytes + HEADER).is_err() {
            return None;
        }
        let ts = self.typesize;
        let blocksize = blocksize(self.clevel, ts, nbytes);
        let split = splits(ts, blocksize);
        let mut flags = LZ4 << 5 | if split { 0 } else { DONT_SPLIT };
        if self.shuffle {
            flags |= DOSHUFFLE;
        }
        dest[0] = 2;
        dest[1] = LZ4_FORMAT;
        dest[3] = ts as u8;
        put(dest, 4, nbytes);
        put(dest, 8, blocksize);
        // blosc's bound: never more than the bytes and a header.
        let most = nbytes + HEADER;
        let packed = (nbytes >= MIN_BUFFER)
            .then(|| self.blocks(src, dest, blocksize, split, most))
            .flatten();
        let total = match packed {
            Some(total) => total,
            None => {
                flags |= MEMCPYED;
                dest[HEADER..most].copy_from_slice(src);
                most
            }
        };
        dest[2] = flags;
        put(dest, 12, total);
        Some(total)
    }

    /// Writes the block starts and blocks after the header; the frame's
    /// length, or `None` when it would pass `most` bytes (blosc then
    /// stores the buffer as it is).
    fn blocks(
        &self,
        src: &[u8],
        dest: &mut [u8],
        blocksize: usize,
        split: bool,
        most: usize,
    ) -> Option<usize> {
        let (ts, nbytes) = (self.typesize, src.len());
        let nblocks = nbytes.div_ceil(blocksize);
        let accel = 10 - self.clevel as i32;
        let mut at = HEADER + 4 * nblocks;
        SCRATCH.with_borrow_mut(|(shuffled, packed)| {
            for b in 0..nblocks {
                put(dest, HEADER + 4 * b, at);
                let block = &src[b * blocksize..((b + 1) * blocksize).min(nbytes)];
                let nsplits = if split && block.len() == blocksize {
                    ts
                } else {
                    1
                };
                let neblock = block.len() / nsplits;
                let shuffle = self.shuffle && ts > 1;
                // Where each stream is read from: in place in `dest` (a
                // split, shuffled block), in `shuffled`, or in `src`.
                let in_place = shuffle && nsplits == ts;
                // Where the block starts, and its streams if none shrank.
                let block_at = at;
                if in_place {
                    if block_at + 4 * ts + block.len() > dest.len() {
                        return None;
                    }
                    let mut parts: Vec<&mut [u8]> = Vec::with_capacity(ts);
                    let mut rest = &mut dest[block_at..];
                    for _ in 0..ts {
                        let (part, tail) = rest[4..].split_at_mut(neblock);
                        parts.push(part);
                        rest = tail;
                    }
                    shuffle_into(block, &mut parts);
                } else if shuffle {
                    // As blosc: byte streams, then any bytes after the
                    // last whole element as they are.
                    shuffled.clear();
                    shuffled.extend_from_slice(block);
                    let n = block.len() / ts;
                    if n > 0 {
                        let mut parts: Vec<&mut [u8]> = shuffled.chunks_mut(n).take(ts).collect();
                        shuffle_into(block, &mut parts);
                    }
                }
                for j in 0..nsplits {
                    let raw_at = block_at + 4 * (j + 1) + j * neblock;
                    let out = at + 4;
                    if out >= most {
                        return None;
                    }
                    let maxout = neblock.min(most - out);
                    // The stream when it is not in place in `dest`.
                    let source = (!in_place).then(|| {
                        let from = if shuffle { &shuffled[..] } else { block };
                        &from[j * neblock..(j + 1) * neblock]
                    });
                    if in_place {
                        packed.clear();
                        packed.reserve(maxout);
                    }
                    // SAFETY: a stream in place is `neblock` bytes of
                    // `dest` from `raw_at`, compressed into `packed`'s
                    // room; any other is compressed into `dest` from
                    // `out`, which has `maxout` bytes (`most <= len`).
                    let n = unsafe {
                        match source {
                            None => lz4(
                                dest.as_ptr().add(raw_at),
                                neblock,
                                packed.as_mut_ptr(),
                                maxout,
                                accel,
                            ),
                            Some(s) => lz4(
                                s.as_ptr(),
                                neblock,
                                dest.as_mut_ptr().add(out),
                                maxout,
                                accel,
                            ),
                        }
                    }?;
                    let cbytes = if n == 0 || n == neblock {
                        // Stored as it is.
                        if out + neblock > most {
                            return None;
                        }
                        match source {
                            Some(s) => dest[out..out + neblock].copy_from_slice(s),
                            None if raw_at != out => {
                                dest.copy_within(raw_at..raw_at + neblock, out)
                            }
                            None => {}
                        }
                        neblock
                    } else {
                        if source.is_none() {
                            // SAFETY: LZ4 wrote `n` bytes there.
                            unsafe { packed.set_len(n) };
                            dest[out..out + n].copy_from_slice(packed);
                        }
                        n
                    };
                    put(dest, at, cbytes);
                    at = out + cbytes;
                }
            }
            Some(at)
        })
    }
}

/// LZ4 (blosc's call) of `len` bytes at `src` into at most `maxout` bytes
/// at `dst`: how many it wrote, 0 when they did not fit.
///
/// # Safety
/// `src` is readable for `len` bytes, `dst` writable for `maxout`, and
/// the two do not overlap.
unsafe fn lz4(
    src: *const u8,
    len: usize,
    dst: *mut u8,
    maxout: usize,
    accel: i32,
) -> Option<usize> {
    // SAFETY: as the caller promises.
    let n = unsafe {
        lz4_sys::LZ4_compress_fast(src.cast(), dst.cast(), len as i32, maxout as i32, accel)
    };
    usize::try_from(n).ok().filter(|&n| n <= maxout)
}

/// Writes `value` as a little-endian 32-bit word at `at`.
fn put(dest: &mut [u8], at: usize, value: usize) {
    dest[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes());
}

/// blosc's block size for LZ4 at `clevel` (1-9) for `nbytes` bytes of
/// `typesize`-byte elements, with no size forced.
fn blocksize(clevel: usize, typesize: usize, nbytes: usize) -> usize {
    if nbytes < typesize {
        return 1;
    }
    let mut size = nbytes;
    if nbytes >= 32 << 10 {
        size = match clevel {
            1 => 16 << 10,
            2 => 32 << 10,
            3 => 64 << 10,
            4 | 5 => 128 << 10,
            _ => 256 << 10,
        };
    }
    if splits(typesize, size) {
        size = (size.min(256 << 10) * typesize).clamp(64 << 10, 1 << 20);
    }
    size = size.min(nbytes);
    if size > typesize {
        size = size / typesize * typesize;
    }
    size
}

/// Byte `j` of each element of `block` into `parts[j]` (`parts.len()`
/// bytes an element; any bytes after the last whole element are left).
fn shuffle_into(block: &[u8], parts: &mut [&mut [u8]]) {
    let width = parts.len();
    let n = block.len() / width;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if matches!(width, 2 | 4 | 8 | 16) {
        done = simd::shuffle(block, n, parts);
    }
    for i in done..n {
        for (j, part) in parts.iter_mut().enumerate() {
            part[i] = block[i * width + j];
        }
    }
}

/// SSE2 (every x86-64) transposes of 16 elements at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpacklo_epi8,
    };

    /// Elements `0 .. 16 * (n / 16)` of `block` (elements of
    /// `parts.len()` bytes: 2, 4, 8 or 16; others are not taken) split
    /// into byte streams; returns how many.
    pub(super) fn shuffle(block: &[u8], n: usize, parts: &mut [&mut [u8]]) -> usize {
        match parts.len() {
            2 => shuffle_width::<2>(block, n, parts),
            4 => shuffle_width::<4>(block, n, parts),
            8 => shuffle_width::<8>(block, n, parts),
            16 => shuffle_width::<16>(block, n, parts),
            _ => 0,
        }
    }

    /// [`shuffle`] for elements of `W` bytes. The 16 elements' bytes are
    /// `W` vectors; interleaving vector `k` with vector `k + W / 2`, byte
    /// by byte, four times over moves byte `b` of element `e` from
    /// position `e * W + b` to `b * 16 + e`: each round rotates the bits of
    /// a byte's position by one, and four rotations bring the element's
    /// four bits below the byte's.
    #[inline(always)]
    fn shuffle_width<const W: usize>(block: &[u8], n: usize, parts: &mut [&mut [u8]]) -> usize {
        let whole = n / 16 * 16;
        assert!(parts.len() == W && block.len() >= W * n && parts.iter().all(|p| p.len() >= n));
        let outs: [*mut u8; W] = std::array::from_fn(|j| parts[j].as_mut_ptr());
        let src = block.as_ptr();
        let mut i = 0;
        while i < whole {
            // SAFETY: SSE2 is part of x86-64; every load reads 16 bytes
            // below `W * n` of `block`, every store 16 below `n` of a
            // part (checked above).
            unsafe {
                let mut v: [__m128i; W] =
                    std::array::from_fn(|k| _mm_loadu_si128(src.add(i * W + 16 * k).cast()));
                for _ in 0..4 {
                    v = std::array::from_fn(|k| {
                        let (a, b) = (v[k / 2], v[k / 2 + W / 2]);
                        if k % 2 == 0 {
                            _mm_unpacklo_epi8(a, b)
                        } else {
                            _mm_unpackhi_epi8(a, b)
                        }
                    });
                }
                for (out, vector) in outs.iter().zip(v) {
                    _mm_storeu_si128(out.add(i).cast(), vector);
                }
            }
            i += 16;
        }
        whole
    }
}

#[cfg(test)]
#[path = "blosc_lz4_encode_tests.rs"]
mod tests;
