//! Output chunks of plain blosc arrays encoded straight into the buffer
//! they are written from.
//!
//! zarrs encodes a chunk into a vector of its own and hands it to the
//! store, whose write behind the task ([`super::write_behind`]) copies it
//! into an aligned buffer for `O_DIRECT`. For a 1-D array of little-endian
//! elements under one blosc compressor (what anndata writes, and what
//! anncat writes for such inputs), a write of whole chunks is encoded here
//! with the array's blosc settings into the writer's kept, aligned buffer
//! instead: no copy, and no fresh pages for each chunk. LZ4 frames (what
//! anndata writes) are encoded by [`super::blosc_lz4_encode`], which
//! shuffles into the frame itself; other compressors by the blosc
//! library. The frames are what zarrs would write (same compressor,
//! level, shuffle, type size and block size). Other arrays and partial
//! chunks are left to zarrs.

#![allow(unsafe_code)] // Calls into the blosc C library, and buffers it writes into.

use std::ffi::{c_char, c_int, c_void};

use zarrs::array::codec::{BloscCodecConfigurationV1, BloscCompressor, BloscShuffleMode};
use zarrs::array::{Array, ArrayError};

use super::atomic_store::AtomicFsStore;
use super::blosc_lz4_encode::Lz4Encoder;

/// The blosc settings of an output array whose chunks are plain blosc
/// frames of its elements.
pub(crate) struct BloscOutput {
    compressor: &'static [u8],
    clevel: c_int,
    shuffle: c_int,
    typesize: usize,
    blocksize: usize,
    /// Bytes an element.
    size: usize,
    /// Elements a chunk.
    chunk_len: u64,
    /// anncat's own encoder of these frames, when it takes them (LZ4,
    /// byte shuffle or none, blosc's block size).
    lz4: Option<Lz4Encoder>,
}

impl BloscOutput {
    /// `Some` when `array` is 1-D, of fixed-size elements stored
    /// little-endian (or single bytes), in a regular grid, under exactly
    /// one blosc codec.
    pub(crate) fn of(array: &Array<AtomicFsStore>) -> Option<Self> {
        let size = super::blosc_frames::plain_blosc_element_size(array)?;
        let codecs = array.codecs();
        let config = codecs
            .bytes_to_bytes_codecs()
            .first()?
            .configuration_v3(&Default::default())?;
        let config: BloscCodecConfigurationV1 =
            serde_json::from_value(serde_json::to_value(config).ok()?).ok()?;
        let shuffle = config.shuffle;
        let typesize = config.typesize.unwrap_or(0);
        let chunk_len = array.chunk_shape(&[0]).ok()?.first()?.get();
        // Every chunk is as long as the first (a regular grid).
        if array.chunk_grid_shape().first().is_none_or(|&n| n > 1)
            && array.chunk_shape(&[1]).ok()?.first()?.get() != chunk_len
        {
            return None;
        }
        let clevel = c_int::from(u8::from(config.clevel));
        let shuffle = match shuffle {
            BloscShuffleMode::NoShuffle => 0,
            BloscShuffleMode::Shuffle => 1,
            BloscShuffleMode::BitShuffle => 2,
        };
        let lz4 = (config.cname == BloscCompressor::LZ4 && config.blocksize == 0)
            .then(|| Lz4Encoder::new(clevel as usize, shuffle, typesize.max(1)))
            .flatten();
        Some(Self {
            compressor: compressor_name(config.cname),
            clevel,
            shuffle,
            typesize: typesize.max(1),
            blocksize: config.blocksize,
            size,
            chunk_len,
            lz4,
        })
    }

    /// The chunks (first, count) that elements `start .. start + len` of
    /// an array of `shape` elements are, when they are whole chunks (the
    /// last chunk of the array may be cut short by its end).
    pub(crate) fn whole_chunks(&self, shape: u64, start: u64, len: u64) -> Option<(u64, u64)> {
        let n = self.chunk_len;
        let end = start.checked_add(len)?;
        (len > 0
            && start.is_multiple_of(n)
            && (end.is_multiple_of(n) || end == shape)
            && end <= shape)
            .then(|| (start / n, len.div_ceil(n)))
    }

    /// Encodes one chunk's elements `raw` (fewer than a chunk only at the
    /// end of the array, then padded with `fill`) into `dest`, which has
    /// room for [`Self::max_encoded`] bytes; how many it wrote, `None` if
    /// the encoder failed.
    pub(crate) fn encode(&self, raw: &[u8], fill: &[u8], dest: &mut [u8]) -> Option<usize> {
        let whole = self.chunk_len as usize * self.size;
        let padded;
        let src = if raw.len() == whole {
            raw
        } else {
            if raw.len() > whole || fill.len() != self.size {
                return None;
            }
            let mut p = Vec::with_capacity(whole);
            p.extend_from_slice(raw);
            while p.len() < whole {
                p.extend_from_slice(fill);
            }
            padded = p;
            &padded
        };
        if dest.len() < self.max_encoded() {
            return None;
        }
        if let Some(lz4) = &self.lz4 {
            return lz4.encode(src, dest);
        }
        // SAFETY: `src` and `dest` are live buffers of the lengths passed;
        // blosc writes at most `dest.len()` bytes; the compressor name is
        // NUL-terminated.
        let n = unsafe {
            blosc_src::blosc_compress_ctx(
                self.clevel,
                self.shuffle,
                self.typesize,
                src.len(),
                src.as_ptr().cast::<c_void>(),
                dest.as_mut_ptr().cast::<c_void>(),
                dest.len(),
                self.compressor.as_ptr().cast::<c_char>(),
                self.blocksize,
                1,
            )
        };
        usize::try_from(n).ok().filter(|&n| n > 0)
    }

    /// The most bytes a chunk's frame can take.
    pub(crate) fn max_encoded(&self) -> usize {
        let nbytes = self.chunk_len as usize * self.size;
        match &self.lz4 {
            Some(lz4) => lz4.max_encoded(nbytes),
            None => nbytes + blosc_src::BLOSC_MAX_OVERHEAD as usize,
        }
    }
}

/// blosc's name of a compressor, NUL-terminated.
fn compressor_name(c: BloscCompressor) -> &'static [u8] {
    match c {
        BloscCompressor::BloscLZ => blosc_src::BLOSC_BLOSCLZ_COMPNAME,
        BloscCompressor::LZ4 => blosc_src::BLOSC_LZ4_COMPNAME,
        BloscCompressor::LZ4HC => blosc_src::BLOSC_LZ4HC_COMPNAME,
        BloscCompressor::Snappy => blosc_src::BLOSC_SNAPPY_COMPNAME,
        BloscCompressor::Zlib => blosc_src::BLOSC_ZLIB_COMPNAME,
        BloscCompressor::Zstd => blosc_src::BLOSC_ZSTD_COMPNAME,
    }
}

/// Writes `raw` (whole elements) as elements `start ..` of the 1-D
/// `array`, encoding each chunk into the buffer it is written from
/// ([`super::atomic_store::write_chunk_encoded`]). `Ok(false)`: not whole
/// chunks of a plain blosc array, nothing written (zarrs should write it).
pub(crate) fn store_whole_chunks(
    array: &Array<AtomicFsStore>,
    start: u64,
    raw: &[u8],
) -> Result<bool, ArrayError> {
    let Some(out) = BloscOutput::of(array) else {
        return Ok(false);
    };
    let len = (raw.len() / out.size) as u64;
    let Some((first, count)) = out.whole_chunks(array.shape()[0], start, len) else {
        return Ok(false);
    };
    let fill = array.fill_value().as_ne_bytes().to_vec();
    let chunk_bytes = out.chunk_len as usize * out.size;
    for (k, c) in (first..first + count).enumerate() {
        let part = &raw[k * chunk_bytes..((k + 1) * chunk_bytes).min(raw.len())];
        let path = array.storage().key_path(&array.chunk_key(&[c]));
        let written = super::atomic_store::write_chunk_encoded(&path, out.max_encoded(), |dest| {
            out.encode(part, &fill, dest)
        })
        .map_err(|e| ArrayError::StorageError(e.into()))?;
        if !written {
            return Err(ArrayError::Other(format!(
                "blosc could not encode chunk {c}"
            )));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks are whole when they start on a chunk and end on one or at
    /// the array's end.
    #[test]
    fn whole_chunks_start_on_a_chunk_and_end_on_one_or_the_end() {
        let out = BloscOutput {
            compressor: blosc_src::BLOSC_LZ4_COMPNAME,
            clevel: 5,
            shuffle: 1,
            typesize: 8,
            blocksize: 0,
            size: 8,
            chunk_len: 10,
            lz4: None,
        };
        assert_eq!(out.whole_chunks(95, 0, 10), Some((0, 1)));
        assert_eq!(out.whole_chunks(95, 10, 30), Some((1, 3)));
        assert_eq!(out.whole_chunks(95, 90, 5), Some((9, 1)));
        assert_eq!(out.whole_chunks(95, 80, 15), Some((8, 2)));
        assert_eq!(out.whole_chunks(95, 5, 10), None);
        assert_eq!(out.whole_chunks(95, 10, 5), None);
        assert_eq!(out.whole_chunks(95, 90, 6), None);
        assert_eq!(out.whole_chunks(95, 0, 0), None);
    }

    /// Whole chunks written through blosc here (in place and behind the
    /// thread) read back as what was written, exactly as the same values
    /// written by zarrs; a write not on whole chunks is left to zarrs.
    #[test]
    fn whole_chunks_encoded_here_read_back_as_zarrs_writes_do() {
        use crate::anndata::dtype::DType;
        use crate::anndata::layout::ArraySpec;
        use crate::anndata::output_store::OutputStore;
        use crate::anndata::range_read::ReadSubset;
        use zarrs::array::{ArrayBytes, ArraySubset};
        let dir = tempfile::tempdir().expect("tempdir");
        let out = OutputStore::create(&dir.path().join("o.zarr"), crate::anndata::ZarrFormat::V2)
            .expect("create");
        let n = 95_000u64;
        let values: Vec<u8> = (0..n)
            .flat_map(|i| ((i * 7919 % 1000) as f64).to_le_bytes())
            .collect();
        for name in ["here", "behind", "zarrs", "part"] {
            out.write_array(
                name,
                ArraySpec::new(vec![n], DType::Float64, vec![10_000]),
                &Default::default(),
            )
            .expect("array");
        }
        let array = |name: &str| out.writable_array(name).expect("open");
        assert!(
            BloscOutput::of(&array("here")).is_some(),
            "anncat's v2 output"
        );
        assert!(store_whole_chunks(&array("here"), 0, &values).expect("written"));
        std::thread::scope(|s| {
            s.spawn(|| {
                crate::anndata::write_behind::allow_on_this_thread();
                assert!(
                    store_whole_chunks(&array("behind"), 20_000, &values[160_000..])
                        .expect("written")
                );
                assert!(
                    store_whole_chunks(&array("behind"), 0, &values[..160_000]).expect("written")
                );
                crate::anndata::durable::settle_this_thread();
            });
        });
        let whole = ArraySubset::new_with_start_shape(vec![0], vec![n]).expect("subset");
        array("zarrs")
            .store_array_subset(&whole, ArrayBytes::new_flen(values.clone()))
            .expect("zarrs write");
        assert!(
            !store_whole_chunks(&array("part"), 5, &values[..80_000]).expect("not taken"),
            "not on a chunk"
        );
        for name in ["here", "behind", "zarrs"] {
            let read = out.as_store().array(name).expect("array");
            let got: ArrayBytes<'static> = read.read_subset(&whole).expect("read");
            assert_eq!(got, ArrayBytes::new_flen(values.clone()), "{name}");
        }
        assert!(
            !dir.path().join("o.zarr/part/0").exists(),
            "nothing written"
        );
    }
}
