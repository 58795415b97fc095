//! Decoding the blosc frames anndata writes (LZ4, byte shuffle) without
//! blosc's copies.
//!
//! A blosc (version 2 format) frame is a 16-byte header, the offset of each
//! block, then the blocks. A block of `typesize`-byte elements whose bytes
//! were shuffled (byte `j` of every element together) is stored as
//! `typesize` streams, one per byte `j`, each LZ4-compressed or, when LZ4
//! could not shrink it, stored as it is. blosc decodes every stream into a
//! scratch block (copying the stored ones there) and unshuffles the scratch
//! block into the destination. Here the unshuffle reads each stream where
//! it is: a stored stream straight out of the frame, a compressed one from
//! where LZ4 put it. Float values rarely compress in their low bytes, so
//! most streams of a `float64` array are stored ones, and that copy was
//! about a third of blosc's decoding time.
//!
//! Only what anndata writes is taken (LZ4, byte shuffle or none, blocks a
//! whole number of elements); anything else is `None`, for blosc.

#![allow(unsafe_code)] // LZ4's C decoder, and SIMD loads and stores.

use std::cell::RefCell;
use std::mem::MaybeUninit;

/// blosc's header flags (shared with [`super::blosc_lz4_encode`]).
pub(super) const DOSHUFFLE: u8 = 0x1;
pub(super) const MEMCPYED: u8 = 0x2;
const DOBITSHUFFLE: u8 = 0x4;
const FUTURE: u8 = 0x8;
pub(super) const DONT_SPLIT: u8 = 0x10;
/// The compressor code (flags >> 5) of LZ4.
pub(super) const LZ4: u8 = 1;
/// blosc splits a block into streams only for elements up to this wide,
/// and blocks of at least [`MIN_BUFFER`] bytes an element.
pub(super) const MAX_SPLITS: usize = 16;
/// blosc's smallest buffer: below it a buffer is stored as it is, and a
/// block split into streams has at least this many elements.
pub(super) const MIN_BUFFER: usize = 128;

/// Whether blosc splits blocks of `blocksize` bytes of `typesize`-byte
/// elements into a stream per byte (its default split mode, for LZ4; a
/// frame can forbid it with [`DONT_SPLIT`]).
pub(super) fn splits(typesize: usize, blocksize: usize) -> bool {
    typesize <= MAX_SPLITS && blocksize / typesize >= MIN_BUFFER
}

thread_local! {
    /// Where LZ4 decodes a block's streams, and a whole block for a part.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The layout of an LZ4 blosc frame.
struct Frame<'a> {
    bytes: &'a [u8],
    typesize: usize,
    nbytes: usize,
    blocksize: usize,
    shuffled: bool,
    split: bool,
}

impl<'a> Frame<'a> {
    /// The frame's layout, when it is one this module decodes.
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let header = bytes.get(..16)?;
        let word =
            |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or_default());
        let (version, flags, typesize) = (header[0], header[2], header[3] as usize);
        let (nbytes, blocksize, cbytes) = (word(4) as usize, word(8) as usize, word(12) as usize);
        let plain = flags & (MEMCPYED | DOBITSHUFFLE | FUTURE) == 0;
        if version != 2 || !plain || flags >> 5 != LZ4 || cbytes != bytes.len() {
            return None;
        }
        if typesize == 0 || blocksize == 0 || nbytes == 0 || !blocksize.is_multiple_of(typesize) {
            return None;
        }
        let nblocks = nbytes.div_ceil(blocksize);
        if bytes.len() < 16 + 4 * nblocks {
            return None;
        }
        Some(Self {
            bytes,
            typesize,
            nbytes,
            blocksize,
            shuffled: flags & DOSHUFFLE != 0 && typesize > 1,
            split: flags & DONT_SPLIT == 0 && splits(typesize, blocksize),
        })
    }

    /// Decodes block `b` (`len` bytes) into `dest`, LZ4 writing into
    /// `scratch`; `None` when the block is damaged.
    fn decode_block(
        &self,
        b: usize,
        dest: &mut [MaybeUninit<u8>],
        scratch: &mut Vec<u8>,
    ) -> Option<()> {
        let len = dest.len();
        let last = len < self.blocksize;
        let at = 16 + 4 * b;
        let mut offset = u32::from_le_bytes(self.bytes.get(at..at + 4)?.try_into().ok()?) as usize;
        let nstreams = if self.split && !last {
            self.typesize
        } else {
            1
        };
        let stream_len = len / nstreams;
        scratch.clear();
        scratch.reserve(len);
        // Where each stream is: `Ok(range of the frame)` when stored as
        // it is, `Err(start in scratch)` when LZ4 decoded it there.
        let mut streams: [Result<(usize, usize), usize>; MAX_SPLITS] = [Err(0); MAX_SPLITS];
        for stream in streams.iter_mut().take(nstreams) {
            let csize = u32::from_le_bytes(self.bytes.get(offset..offset + 4)?.try_into().ok()?);
            offset += 4;
            let csize = csize as usize;
            let end = offset.checked_add(csize)?;
            let src = self.bytes.get(offset..end)?;
            if csize == stream_len {
                *stream = Ok((offset, end));
            } else {
                let start = scratch.len();
                // SAFETY: LZ4 reads `csize` bytes of `src` and writes at
                // most `stream_len` bytes into the reserved spare room.
                let n = unsafe {
                    lz4_sys::LZ4_decompress_safe(
                        src.as_ptr().cast(),
                        scratch.as_mut_ptr().add(start).cast(),
                        i32::try_from(csize).ok()?,
                        i32::try_from(stream_len).ok()?,
                    )
                };
                if usize::try_from(n).ok()? != stream_len {
                    return None;
                }
                // SAFETY: LZ4 wrote `stream_len` bytes there.
                unsafe { scratch.set_len(start + stream_len) };
                *stream = Err(start);
            }
            offset = end;
        }
        let stream = |s: &Result<(usize, usize), usize>| match *s {
            Ok((a, b)) => &self.bytes[a..b],
            Err(a) => &scratch[a..a + stream_len],
        };
        if !self.shuffled {
            for (j, s) in streams.iter().take(nstreams).enumerate() {
                copy_into(&mut dest[j * stream_len..(j + 1) * stream_len], stream(s));
            }
            return Some(());
        }
        let n = len / self.typesize;
        let mut parts: [&[u8]; MAX_SPLITS] = [&[]; MAX_SPLITS];
        if nstreams == 1 {
            // One stream holding the shuffled block (and any bytes after
            // its last whole element, as they are).
            let whole = stream(&streams[0]);
            for (j, part) in parts.iter_mut().take(self.typesize).enumerate() {
                *part = &whole[j * n..(j + 1) * n];
            }
            let tail = n * self.typesize;
            copy_into(&mut dest[tail..], &whole[tail..]);
        } else {
            for (part, s) in parts.iter_mut().zip(&streams).take(nstreams) {
                *part = stream(s);
            }
        }
        unshuffle(&parts[..self.typesize], n, dest);
        Some(())
    }
}

/// Decodes bytes `from .. to` of the blosc frame `frame` into `dest`
/// (`to - from` bytes). `None` when the frame is not one this module
/// takes, or is damaged; `dest` may then hold anything.
pub(crate) fn decode_range(
    frame: &[u8],
    (from, to): (usize, usize),
    dest: &mut [MaybeUninit<u8>],
) -> Option<()> {
    let f = Frame::parse(frame)?;
    if from > to || to > f.nbytes || dest.len() != to - from {
        return None;
    }
    SCRATCH.with(|cell| {
        let (streams, block) = &mut *cell.borrow_mut();
        let mut b = from / f.blocksize;
        while b * f.blocksize < to {
            let (start, end) = (b * f.blocksize, ((b + 1) * f.blocksize).min(f.nbytes));
            let (lo, hi) = (start.max(from), end.min(to));
            let into = &mut dest[lo - from..hi - from];
            if (lo, hi) == (start, end) {
                f.decode_block(b, into, streams)?;
            } else {
                block.resize(end - start, 0);
                f.decode_block(b, as_uninit(block), streams)?;
                copy_into(into, &block[lo - start..hi - start]);
            }
            b += 1;
        }
        Some(())
    })
}

/// `src` into `dest`, of the same length.
fn copy_into(dest: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dest.len(), src.len());
    // SAFETY: both hold `src.len()` bytes and do not overlap (one is
    // borrowed mutably).
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dest.as_mut_ptr().cast(), src.len());
    }
}

/// Initialised bytes seen as bytes to overwrite.
fn as_uninit(bytes: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout; only bytes are written
    // through it, so `bytes` stays initialised.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast(), bytes.len()) }
}

/// Interleaves `parts` (byte `j` of each of `n` elements in `parts[j]`)
/// into `dest`'s first `n * parts.len()` bytes.
fn unshuffle(parts: &[&[u8]], n: usize, dest: &mut [MaybeUninit<u8>]) {
    let width = parts.len();
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if width == 8 {
            done = simd::unshuffle8(parts, n, dest);
        } else if width == 4 {
            done = simd::unshuffle4(parts, n, dest);
        }
    }
    for i in done..n {
        for (j, part) in parts.iter().enumerate() {
            dest[i * width + j].write(part[i]);
        }
    }
}

/// SSE2 (every x86-64) transposes of 16 elements at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::{
        __m128i, _mm_loadu_si128, _mm_storeu_si128, _mm_unpackhi_epi8, _mm_unpackhi_epi16,
        _mm_unpackhi_epi32, _mm_unpacklo_epi8, _mm_unpacklo_epi16, _mm_unpacklo_epi32,
    };
    use std::mem::MaybeUninit;

    /// Elements `0 .. 16 * (n / 16)` of 8 byte streams interleaved into
    /// `dest`; returns how many.
    pub(super) fn unshuffle8(parts: &[&[u8]], n: usize, dest: &mut [MaybeUninit<u8>]) -> usize {
        let whole = n / 16 * 16;
        assert!(parts.len() == 8 && parts.iter().all(|p| p.len() >= n) && dest.len() >= 8 * n);
        let mut i = 0;
        while i < whole {
            // SAFETY: SSE2 is part of x86-64; every load reads 16 bytes
            // below `n` of a stream, every store 16 below `8 * n` of `dest`
            // (checked above).
            unsafe {
                let a: [__m128i; 8] =
                    std::array::from_fn(|j| _mm_loadu_si128(parts[j].as_ptr().add(i).cast()));
                for (half, pairs) in [
                    [
                        _mm_unpacklo_epi8(a[0], a[1]),
                        _mm_unpacklo_epi8(a[2], a[3]),
                        _mm_unpacklo_epi8(a[4], a[5]),
                        _mm_unpacklo_epi8(a[6], a[7]),
                    ],
                    [
                        _mm_unpackhi_epi8(a[0], a[1]),
                        _mm_unpackhi_epi8(a[2], a[3]),
                        _mm_unpackhi_epi8(a[4], a[5]),
                        _mm_unpackhi_epi8(a[6], a[7]),
                    ],
                ]
                .into_iter()
                .enumerate()
                {
                    // Bytes 0-3 and 4-7 of elements 0-3 and 4-7 of the half.
                    let lo03 = _mm_unpacklo_epi16(pairs[0], pairs[1]);
                    let lo47 = _mm_unpackhi_epi16(pairs[0], pairs[1]);
                    let hi03 = _mm_unpacklo_epi16(pairs[2], pairs[3]);
                    let hi47 = _mm_unpackhi_epi16(pairs[2], pairs[3]);
                    let out = [
                        _mm_unpacklo_epi32(lo03, hi03),
                        _mm_unpackhi_epi32(lo03, hi03),
                        _mm_unpacklo_epi32(lo47, hi47),
                        _mm_unpackhi_epi32(lo47, hi47),
                    ];
                    let base = dest.as_mut_ptr().add((i + 8 * half) * 8);
                    for (k, v) in out.into_iter().enumerate() {
                        _mm_storeu_si128(base.add(16 * k).cast(), v);
                    }
                }
            }
            i += 16;
        }
        whole
    }

    /// Elements `0 .. 16 * (n / 16)` of 4 byte streams interleaved into
    /// `dest`; returns how many.
    pub(super) fn unshuffle4(parts: &[&[u8]], n: usize, dest: &mut [MaybeUninit<u8>]) -> usize {
        let whole = n / 16 * 16;
        assert!(parts.len() == 4 && parts.iter().all(|p| p.len() >= n) && dest.len() >= 4 * n);
        let mut i = 0;
        while i < whole {
            // SAFETY: as in `unshuffle8`, for 4 streams.
            unsafe {
                let a: [__m128i; 4] =
                    std::array::from_fn(|j| _mm_loadu_si128(parts[j].as_ptr().add(i).cast()));
                let (p01lo, p01hi) = (_mm_unpacklo_epi8(a[0], a[1]), _mm_unpackhi_epi8(a[0], a[1]));
                let (p23lo, p23hi) = (_mm_unpacklo_epi8(a[2], a[3]), _mm_unpackhi_epi8(a[2], a[3]));
                let out = [
                    _mm_unpacklo_epi16(p01lo, p23lo),
                    _mm_unpackhi_epi16(p01lo, p23lo),
                    _mm_unpacklo_epi16(p01hi, p23hi),
                    _mm_unpackhi_epi16(p01hi, p23hi),
                ];
                let base = dest.as_mut_ptr().add(i * 4);
                for (k, v) in out.into_iter().enumerate() {
                    _mm_storeu_si128(base.add(16 * k).cast(), v);
                }
            }
            i += 16;
        }
        whole
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::ffi::c_void;

    /// A blosc frame of `bytes` compressed by blosc itself.
    pub(in crate::anndata) fn frame(
        bytes: &[u8],
        typesize: usize,
        shuffle: i32,
        blocksize: usize,
        clevel: i32,
    ) -> Vec<u8> {
        let mut out = vec![0u8; bytes.len() + blosc_src::BLOSC_MAX_OVERHEAD as usize];
        // SAFETY: buffers sized as blosc asks.
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                clevel,
                shuffle,
                typesize,
                bytes.len(),
                bytes.as_ptr().cast::<c_void>(),
                out.as_mut_ptr().cast::<c_void>(),
                out.len(),
                c"lz4".as_ptr(),
                blocksize,
                1,
            )
        };
        assert!(n > 0, "blosc compressed");
        out.truncate(n as usize);
        out
    }

    /// Streams of the frame's first block stored as they are.
    fn stored_streams(f: &Frame<'_>) -> usize {
        let mut offset = u32::from_le_bytes(f.bytes[16..20].try_into().expect("4 bytes")) as usize;
        let stream_len = f.blocksize / f.typesize;
        (0..f.typesize)
            .filter(|_| {
                let c = u32::from_le_bytes(f.bytes[offset..offset + 4].try_into().expect("4 bytes"))
                    as usize;
                offset += 4 + c;
                c == stream_len
            })
            .count()
    }

    /// Values whose low bytes do not compress and high bytes do: stored
    /// and LZ4 streams in one block, as `float64` data gives.
    fn values(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (i as f64 * 0.5 + (x % 1000) as f64 / 7.0).to_le_bytes()
            })
            .flat_map(|b| b.into_iter())
            .collect()
    }

    /// Every part of frames of several shapes (element widths 1-16, with
    /// and without shuffle, blocks split or not, a short last block,
    /// random and constant data) decodes to the bytes blosc was given.
    #[test]
    fn parts_of_frames_decode_to_their_bytes() {
        let (mut tried, mut split_shuffled, mut mixed) = (0, 0, 0);
        for typesize in [1usize, 2, 4, 8, 16, 3] {
            for (elements, blocksize) in [
                (10_000usize, 0usize),
                (5_003, 4096),
                (40, 0),
                (70_001, 65_536),
            ] {
                for shuffle in [0, 1] {
                    for data in [
                        values(elements * typesize / 8 + 1, typesize as u64),
                        vec![7u8; elements * typesize],
                    ] {
                        let bytes = &data[..elements * typesize];
                        let f = frame(bytes, typesize, shuffle, blocksize, 5);
                        let Some(parsed) = Frame::parse(&f) else {
                            // Stored whole (MEMCPYED): left to blosc.
                            assert_ne!(
                                f[2] & MEMCPYED,
                                0,
                                "a frame refused: {typesize} {elements} {blocksize}"
                            );
                            continue;
                        };
                        assert_eq!(parsed.nbytes, bytes.len());
                        if parsed.split && parsed.shuffled {
                            split_shuffled += 1;
                            if stored_streams(&parsed) > 0 && f.len() < bytes.len() {
                                mixed += 1;
                            }
                        }
                        let len = bytes.len();
                        for (from, to) in [
                            (0, len),
                            (0, 0),
                            (1, len - 1),
                            (len / 3, len / 2),
                            (typesize * 17, len),
                            (len - 5, len),
                        ] {
                            let mut out = vec![0u8; to - from];
                            decode_range(&f, (from, to), as_uninit(&mut out)).expect("decoded");
                            assert_eq!(
                                out,
                                bytes[from..to],
                                "{typesize} {elements} {blocksize} {shuffle} {from}..{to}"
                            );
                            tried += 1;
                        }
                    }
                }
            }
        }
        assert!(tried > 200, "{tried}");
        // Blocks in streams, some stored and some LZ4 in one frame.
        assert!(
            split_shuffled >= 8 && mixed >= 4,
            "{split_shuffled} {mixed}"
        );
    }

    /// A damaged or foreign frame is refused, never read outside.
    #[test]
    fn damaged_and_foreign_frames_are_refused() {
        let bytes = values(20_000, 3);
        let f = frame(&bytes, 8, 1, 0, 5);
        let mut out = vec![0u8; bytes.len()];
        assert!(decode_range(&f, (0, bytes.len()), as_uninit(&mut out)).is_some());
        // Cut short, a block offset past the end, a stream size past the end.
        assert!(decode_range(&f[..f.len() - 1], (0, bytes.len()), as_uninit(&mut out)).is_none());
        let mut bad = f.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_range(&bad, (0, bytes.len()), as_uninit(&mut out)).is_none());
        let mut bad = f.clone();
        let first = u32::from_le_bytes(f[16..20].try_into().expect("4 bytes")) as usize;
        bad[first..first + 4].copy_from_slice(&(f.len() as u32).to_le_bytes());
        assert!(decode_range(&bad, (0, bytes.len()), as_uninit(&mut out)).is_none());
        // Another codec (zstd: code 4), bit shuffle, a range outside.
        let mut other = f.clone();
        other[2] = (other[2] & 0x1f) | (4 << 5);
        assert!(decode_range(&other, (0, bytes.len()), as_uninit(&mut out)).is_none());
        let mut bits = f.clone();
        bits[2] |= DOBITSHUFFLE;
        assert!(decode_range(&bits, (0, bytes.len()), as_uninit(&mut out)).is_none());
        let mut longer = vec![0u8; bytes.len() + 8];
        assert!(decode_range(&f, (0, bytes.len() + 8), as_uninit(&mut longer)).is_none());
    }
}
