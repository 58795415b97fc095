//! Tests of [`super`]: frames blosc reads back as what was encoded, with
//! blosc's own header, block size and (for bytes LZ4 cannot shrink) bytes.

use super::*;
use std::ffi::c_void;
use std::mem::MaybeUninit;

/// `bytes` compressed by blosc itself (LZ4, block size its own).
fn blosc_frame(bytes: &[u8], typesize: usize, shuffle: i32, clevel: i32) -> Vec<u8> {
    super::super::blosc_lz4::tests::frame(bytes, typesize, shuffle, 0, clevel)
}

/// What blosc decodes `frame` to.
fn blosc_decoded(frame: &[u8], nbytes: usize) -> Vec<u8> {
    let mut out = vec![0u8; nbytes];
    // SAFETY: `out` has room for the frame's `nbytes`.
    let n = unsafe {
        blosc_src::blosc_decompress_ctx(
            frame.as_ptr().cast::<c_void>(),
            out.as_mut_ptr().cast::<c_void>(),
            out.len(),
            1,
        )
    };
    assert_eq!(n, nbytes as i32, "blosc decoded the frame");
    out
}

/// `bytes` encoded here.
fn encoded(bytes: &[u8], typesize: usize, shuffle: i32, clevel: usize) -> Vec<u8> {
    let encoder = Lz4Encoder::new(clevel, shuffle, typesize).expect("an LZ4 frame");
    let mut out = vec![0xAAu8; encoder.max_encoded(bytes.len())];
    let n = encoder.encode(bytes, &mut out).expect("encoded");
    out.truncate(n);
    out
}

/// Elements of the kinds anncat writes: values whose low bytes do not
/// shrink, column numbers, zeros, a repeating ramp, random bytes.
fn samples(n: usize, seed: u64) -> Vec<(&'static str, usize, Vec<u8>)> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let floats: Vec<u8> = (0..n)
        .flat_map(|_| ((next() % 1_000_000) as f64 / 7.0).to_le_bytes())
        .collect();
    let columns: Vec<u8> = (0..n)
        .flat_map(|i| ((i as u32 * 37 + (next() % 11) as u32) % 10_000).to_le_bytes())
        .collect();
    let random: Vec<u8> = (0..n * 3).map(|_| next() as u8).collect();
    let ramp: Vec<u8> = (0..n * 2)
        .flat_map(|i| (i as u16 % 300).to_le_bytes())
        .collect();
    vec![
        ("float64", 8, floats),
        ("int32 columns", 4, columns),
        ("zeros", 8, vec![0; n * 8]),
        ("random, 3-byte elements", 3, random.clone()),
        ("random bytes", 1, random[..n].to_vec()),
        ("uint16 ramp", 2, ramp.clone()),
        ("16-byte elements", 16, ramp[..n / 4 * 16].to_vec()),
        ("24-byte elements", 24, random[..n / 8 * 24].to_vec()),
    ]
}

/// Every frame is blosc's own, byte for byte, and decodes, with blosc and
/// with anncat's decoder, to what was encoded.
#[test]
fn frames_decode_as_encoded_and_are_blosc_s() {
    for (n, seed) in [
        (0, 1),
        (5, 2),
        (100, 3),
        (4_099, 4),
        (70_001, 5),
        (524_288, 6),
    ] {
        for (what, typesize, bytes) in samples(n, seed) {
            for shuffle in [0, 1] {
                for clevel in [1, 5, 9] {
                    let case = format!(
                        "{what}, {} bytes, shuffle {shuffle}, level {clevel}",
                        bytes.len()
                    );
                    let ours = encoded(&bytes, typesize, shuffle, clevel);
                    assert_eq!(blosc_decoded(&ours, bytes.len()), bytes, "{case}");
                    assert_eq!(
                        ours,
                        blosc_frame(&bytes, typesize, shuffle, clevel as i32),
                        "{case}"
                    );
                    if !bytes.is_empty() && ours[2] & MEMCPYED == 0 {
                        let mut back = vec![MaybeUninit::new(0u8); bytes.len()];
                        super::super::blosc_lz4::decode_range(&ours, (0, bytes.len()), &mut back)
                            .expect("anncat's decoder takes it");
                        // SAFETY: every byte was initialised above.
                        let back: Vec<u8> =
                            back.iter().map(|b| unsafe { b.assume_init() }).collect();
                        assert_eq!(back, bytes, "{case}: anncat's decoder");
                    }
                }
            }
        }
    }
}

/// Random sizes around blosc's thresholds (128 bytes, 128 elements a
/// stream, partial elements and blocks, fewer bytes than an element),
/// type sizes 1-255, shuffles, levels and contents: every frame is
/// blosc's, byte for byte, and decodes to what was encoded.
#[test]
fn random_settings_give_blosc_s_frames() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    };
    for case in 0..1_500 {
        let ts = match next() % 3 {
            0 => [1, 2, 4, 8, 16][next() % 5],
            1 => 1 + next() % 17,
            _ => 1 + next() % 255,
        };
        let nbytes = match next() % 5 {
            0 => next() % 300,
            1 => 128 * ts * (1 + next() % 4) + [0, 1, ts - 1, ts][next() % 4],
            2 => (128 * ts).saturating_sub(next() % 3),
            3 => (64 << 10) * (1 + next() % 5) + next() % 3,
            _ => next() % 200_000,
        };
        let kind = next() % 4;
        let bytes: Vec<u8> = (0..nbytes)
            .map(|i| match kind {
                0 => next() as u8,
                1 => 0,
                2 if i % ts == ts - 1 => (i / 1000) as u8,
                2 => next() as u8,
                _ if i / 4096 % 2 == 0 => next() as u8,
                _ => (i % 7) as u8,
            })
            .collect();
        let (shuffle, clevel) = ((next() % 2) as i32, 1 + next() % 9);
        let what = format!(
            "case {case}: type size {ts}, {nbytes} bytes, contents {kind}, shuffle {shuffle}, level {clevel}"
        );
        let ours = encoded(&bytes, ts, shuffle, clevel);
        assert_eq!(blosc_decoded(&ours, nbytes), bytes, "{what}");
        assert_eq!(
            ours,
            blosc_frame(&bytes, ts, shuffle, clevel as i32),
            "{what}"
        );
    }
}

/// The float64 chunk anndata writes: most streams are stored as they are
/// (shuffled in place, never copied), the high bytes compressed.
#[test]
fn a_float_chunk_stores_its_low_bytes_and_compresses_its_high_ones() {
    let (_, _, bytes) = samples(524_288, 7).remove(0);
    let ours = encoded(&bytes, 8, 1, 5);
    let theirs = blosc_frame(&bytes, 8, 1, 5);
    assert_eq!(ours[2] & MEMCPYED, 0, "compressed");
    assert!(ours.len() < bytes.len(), "the exponent bytes shrank");
    assert_eq!(ours.len(), theirs.len(), "as blosc");
    assert_eq!(blosc_decoded(&ours, bytes.len()), bytes);
}

/// The block size is blosc's for every level, type size and size.
#[test]
fn block_sizes_are_blosc_s() {
    for clevel in 1..=9 {
        for typesize in [1, 2, 3, 4, 8, 12, 16, 17, 200] {
            for nbytes in [
                128,
                1000,
                32 << 10,
                100_000,
                1 << 20,
                4 << 20,
                (4 << 20) + 24,
            ] {
                let nbytes = nbytes / typesize * typesize;
                let bytes = vec![7u8; nbytes];
                let theirs = blosc_frame(&bytes, typesize, 1, clevel as i32);
                let want = u32::from_le_bytes(theirs[8..12].try_into().expect("word"));
                assert_eq!(
                    blocksize(clevel, typesize, nbytes) as u32,
                    want,
                    "level {clevel}, type size {typesize}, {nbytes} bytes"
                );
            }
        }
    }
}

/// The SIMD transpose splits elements into byte streams as a plain loop
/// does, for every width it takes and counts that are not a multiple of
/// its 16 elements.
#[test]
fn shuffling_splits_elements_into_byte_streams() {
    for width in [2, 3, 4, 8, 16] {
        for n in [0, 1, 15, 16, 17, 100, 1000] {
            let block: Vec<u8> = (0..width * n).map(|i| (i * 31 % 251) as u8).collect();
            let mut streams = vec![vec![0u8; n]; width];
            let mut parts: Vec<&mut [u8]> = streams.iter_mut().map(Vec::as_mut_slice).collect();
            shuffle_into(&block, &mut parts);
            for (j, stream) in streams.iter().enumerate() {
                let want: Vec<u8> = (0..n).map(|i| block[i * width + j]).collect();
                assert_eq!(*stream, want, "width {width}, {n} elements, byte {j}");
            }
        }
    }
}

/// Levels and shuffles blosc's LZ4 frames do not take here are refused.
#[test]
fn other_settings_are_left_to_blosc() {
    assert!(Lz4Encoder::new(0, 1, 8).is_none(), "level 0");
    assert!(Lz4Encoder::new(10, 1, 8).is_none(), "level 10");
    assert!(Lz4Encoder::new(5, 2, 8).is_none(), "bit shuffle");
    assert!(Lz4Encoder::new(5, 1, 0).is_none(), "no element size");
    assert!(Lz4Encoder::new(5, 1, 256).is_none(), "elements too wide");
    let encoder = Lz4Encoder::new(5, 1, 8).expect("taken");
    let mut small = vec![0u8; 10];
    assert_eq!(encoder.encode(&[1u8; 800], &mut small), None, "no room");
}
