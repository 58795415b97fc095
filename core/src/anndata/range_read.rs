//! A range of a 1-D array read chunk by whole chunk.
//!
//! zarrs reads the chunks a subset covers whole straight into the output,
//! but a chunk the subset only partly covers goes through the codecs'
//! partial decoders; for blosc that is `blosc_getitem` over byte ranges
//! read one by one, which cost four times a whole decode (perf, CSR outer
//! on sparse 5000: 12% of the CPU in partial blosc decoding against 3% in
//! whole decodes). A sparse matrix's `indices` and `data` are read in
//! ranges that start and end inside chunks, so here the chunks of a
//! compressed array are read whole, one at a time: plain blosc frames are
//! decoded by blosc straight into the reader's buffer, just the blocks
//! wanted ([`super::blosc_frames`]); other chunks are decoded whole and
//! the wanted part copied out. An
//! array without a compressor (anncat's own scratch, h5ad seen as zarr,
//! sharded arrays at the outer level) is left to zarrs, whose partial reads
//! of it fetch just the bytes wanted: decoding whole 8 MiB scratch chunks
//! for a few rows each made the CSC to CSR transpose 1.4x slower.

use zarrs::array::{Array, ArrayBytes, ArrayError, ArraySubset, CodecOptions, FromArrayBytes};

use super::backend::Backend;
pub use super::blosc_frames::ByteSink;
use super::blosc_frames::PlainBlosc;

/// The codec options of this process's zarrs configuration, for every
/// read. zarrs' reads without `_opt` take `CodecOptions::default()`,
/// which ignores that configuration and decodes at least four chunks at
/// once on rayon's pool: a one-thread worker handed every read of more than
/// one chunk to the pool's thread and waited, and two workers on two cores
/// ran four busy threads.
pub fn codec_options() -> CodecOptions {
    zarrs::config::global_config().codec_options()
}

/// Subset reads with [`codec_options`], for every read of a subset in
/// this crate (in place of zarrs' `retrieve_array_subset`).
pub trait ReadSubset {
    /// The elements of `subset`, decoded as `T`.
    fn read_subset<T: FromArrayBytes>(&self, subset: &ArraySubset) -> Result<T, ArrayError>;
}

impl ReadSubset for Array<Backend> {
    fn read_subset<T: FromArrayBytes>(&self, subset: &ArraySubset) -> Result<T, ArrayError> {
        self.retrieve_array_subset_opt(subset, &codec_options())
    }
}

/// Chunks larger than this (decoded) are left to zarrs' partial decoders:
/// decoding a large shard whole for a few elements would cost more.
const WHOLE_CHUNK_MAX_BYTES: u64 = 16 << 20;

/// Hands elements `start .. start + len` of the 1-D fixed-size `array` to
/// `take`, in order, in zarrs' decoded layout: one piece a chunk where
/// [`whole_chunks`] takes the array, else one piece from zarrs' subset
/// read.
pub fn read_range_pieces(
    array: &Array<Backend>,
    start: u64,
    len: u64,
    take: impl FnMut(&[u8]),
) -> Result<(), zarrs::array::ArrayError> {
    read_range_into(array, start, len, &mut Pieces(take))
}

/// Appends elements `start .. start + len` of the 1-D fixed-size `array`
/// to `sink`, in order, in their stored little-endian layout: plain blosc
/// chunks decoded in place ([`PlainBlosc`]), other chunks decoded whole
/// one at a time where [`whole_chunks`] takes the array, else one piece
/// from zarrs' subset read.
pub fn read_range_into(
    array: &Array<Backend>,
    start: u64,
    len: u64,
    sink: &mut dyn ByteSink,
) -> Result<(), zarrs::array::ArrayError> {
    match whole_chunks(array, start, len)? {
        Some(chunks) => each_chunk_piece(array, start, len, chunks, sink),
        None => {
            let subset = ArraySubset::new_with_start_shape(vec![start], vec![len])?;
            let bytes: ArrayBytes<'_> = array.read_subset(&subset)?;
            sink.append(&bytes.into_fixed()?);
            Ok(())
        }
    }
}

/// Asks the storage to start fetching the chunks that hold elements
/// `start .. start + len` of `array`, where
/// they are read whole ([`whole_chunks`]): a kernel's prefetch calls it
/// for a task queued next, so the task finds them in the page cache
/// instead of waiting for the disk chunk by chunk. (Not called by the
/// reads themselves: on inputs already in the page cache, the extra
/// opens cost a task more than the overlap gained on cold ones.)
pub fn advise_range(array: &Array<Backend>, start: u64, len: u64) {
    if let Ok(Some((first, last))) = whole_chunks(array, start, len) {
        let storage = array.storage();
        for c in first..last {
            storage.advise_willneed(&array.chunk_key(&[c]));
        }
    }
}

/// A [`ByteSink`] that hands each piece to a closure.
struct Pieces<F>(F);

#[allow(unsafe_code)] // The trait's unsafe method, which does nothing here.
impl<F: FnMut(&[u8])> ByteSink for Pieces<F> {
    fn append(&mut self, piece: &[u8]) {
        (self.0)(piece);
    }

    fn reserve_bytes(&mut self, _: usize) -> Option<*mut u8> {
        None
    }

    unsafe fn commit_bytes(&mut self, _: usize) {}
}

/// The chunks (first, one past the last) holding elements
/// `start .. start + len` when they are to be decoded whole: a compressed
/// 1-D array of fixed-size elements in chunks of at most
/// [`WHOLE_CHUNK_MAX_BYTES`] (see the module); `None` when zarrs' own reads
/// are better.
fn whole_chunks(
    array: &Array<Backend>,
    start: u64,
    len: u64,
) -> Result<Option<(u64, u64)>, zarrs::array::ArrayError> {
    let Some(size) = array.data_type().fixed_size() else {
        return Ok(None);
    };
    if array.dimensionality() != 1 || len == 0 || array.codecs().bytes_to_bytes_codecs().is_empty()
    {
        return Ok(None);
    }
    let subset = ArraySubset::new_with_start_shape(vec![start], vec![len])?;
    let Some(chunks) = array.chunks_in_array_subset(&subset)? else {
        return Ok(None);
    };
    let (first, last) = (chunks.start()[0], chunks.start()[0] + chunks.shape()[0]);
    for c in [first, last - 1] {
        if array.chunk_subset(&[c])?.shape()[0].saturating_mul(size as u64) > WHOLE_CHUNK_MAX_BYTES
        {
            return Ok(None);
        }
    }
    Ok(Some((first, last)))
}

/// Decodes chunks `first .. last` one at a time and appends the part of
/// each inside `start .. start + len` to `sink`.
fn each_chunk_piece(
    array: &Array<Backend>,
    start: u64,
    len: u64,
    (first, last): (u64, u64),
    sink: &mut dyn ByteSink,
) -> Result<(), zarrs::array::ArrayError> {
    let size = array.data_type().fixed_size().unwrap_or(1);
    let end = start + len;
    let blosc = PlainBlosc::of(array);
    let mut scratch = Vec::new();
    for c in first..last {
        let within = array.chunk_subset(&[c])?;
        let (c0, n) = (within.start()[0], within.shape()[0]);
        let (lo, hi) = (
            (start.max(c0) - c0) as usize,
            (end.min(c0 + n) - c0) as usize,
        );
        if let Some(b) = &blosc
            && b.append_chunk_part(array, c, (lo, hi), sink, &mut scratch)?
        {
            continue;
        }
        let bytes: ArrayBytes<'static> = array.retrieve_chunk(&[c])?;
        let raw = bytes.into_fixed()?;
        sink.append(&raw[lo * size..hi * size]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anndata::store::Store;

    /// Reads take the process's zarrs configuration (a worker sets how
    /// many chunks decode at once), not zarrs' fixed defaults.
    #[test]
    fn reads_take_the_configured_codec_options() {
        let configured = zarrs::config::global_config().codec_options();
        let used = codec_options();
        assert_eq!(
            used.chunk_concurrent_minimum(),
            configured.chunk_concurrent_minimum()
        );
        assert_eq!(used.concurrent_target(), configured.concurrent_target());
        // Only this test changes the setting, to a value reads accept.
        zarrs::config::global_config_mut().set_chunk_concurrent_minimum(3);
        assert_eq!(codec_options().chunk_concurrent_minimum(), 3);
    }

    /// Every range of a compressed chunked array (chunks of 37) reads as
    /// zarrs' own subset read gives it.
    #[test]
    fn ranges_by_whole_chunks_equal_subset_reads() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        for (store, path) in [
            ("chunked_v2.zarr", "layers/sparse/data"),
            ("chunked_v2.zarr", "layers/sparse/indices"),
        ] {
            let store = Store::open(&fixtures.join(store)).expect("open");
            let array = store.array(path).expect("array");
            let n = array.shape()[0];
            for (start, len) in [
                (0, n),
                (0, 1),
                (5, 37),
                (36, 2),
                (37, 74),
                (40, 100),
                (n - 3, 3),
            ] {
                let subset =
                    ArraySubset::new_with_start_shape(vec![start], vec![len]).expect("subset");
                let want: ArrayBytes<'static> = array.read_subset(&subset).expect("subset read");
                assert!(
                    whole_chunks(&array, start, len).expect("chunks").is_some(),
                    "1-D fixed-size: read by chunks"
                );
                let mut pieces = Vec::new();
                read_range_pieces(&array, start, len, |p| pieces.extend_from_slice(p))
                    .expect("pieces");
                assert_eq!(
                    ArrayBytes::new_flen(pieces),
                    want,
                    "{path} {start}+{len} in pieces"
                );
            }
            assert!(whole_chunks(&array, 0, 0).expect("chunks").is_none());
        }
        // No compressor at the outer level (sharded): left to zarrs.
        let store = Store::open(&fixtures.join("chunked_v3s.zarr")).expect("open");
        let array = store.array("layers/sparse/indices").expect("array");
        assert!(whole_chunks(&array, 5, 37).expect("chunks").is_none());
        let subset = ArraySubset::new_with_start_shape(vec![5], vec![37]).expect("subset");
        let want: ArrayBytes<'static> = array.read_subset(&subset).expect("subset read");
        let mut pieces = Vec::new();
        read_range_pieces(&array, 5, 37, |p| pieces.extend_from_slice(p)).expect("pieces");
        assert_eq!(ArrayBytes::new_flen(pieces), want);
    }

    /// [`advise_range`] names exactly the chunks of the range; a range
    /// read itself advises nothing.
    #[test]
    fn advising_a_range_names_its_chunk_files() {
        use crate::anndata::atomic_store::take_advised;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let root = fixtures.join("chunked_v2.zarr");
        let store = Store::open(&root).expect("open");
        let array = store.array("layers/sparse/data").expect("array");
        let chunk = |c: u64| root.join(format!("layers/sparse/data/{c}"));
        take_advised();
        // Elements 40 .. 140 lie in chunks 1, 2 and 3 (chunks of 37).
        advise_range(&array, 40, 100);
        assert_eq!(take_advised(), vec![chunk(1), chunk(2), chunk(3)]);
        advise_range(&array, 111, 1);
        assert_eq!(take_advised(), vec![chunk(3)]);
        read_range_pieces(&array, 40, 100, |_| {}).expect("read");
        assert!(take_advised().is_empty());
    }

    /// Plain blosc chunks decoded in place, into bytes and into typed
    /// values, give what zarrs' subset read gives, and a chunk file that
    /// is missing reads as the fill value; other codecs are not taken.
    #[test]
    fn blosc_chunks_decoded_in_place_equal_subset_reads() {
        use crate::concat::values::Values;
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("chunked_v2.zarr");
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(fixtures.join("chunked_v2.zarr"))
            .arg(&copy)
            .status()
            .expect("cp");
        assert!(status.success());
        // Chunk 3 (elements 111 .. 148) of data is missing: the fill value.
        std::fs::remove_file(copy.join("layers/sparse/data/3")).expect("remove a chunk");
        let store = Store::open(&copy).expect("open");
        let array = store.array("layers/sparse/data").expect("array");
        assert!(
            PlainBlosc::of(&array).is_some(),
            "<f8 under blosc: plain frames"
        );
        let n = array.shape()[0];
        for (start, len) in [(0, n), (5, 37), (100, 60), (111, 37), (40, 1), (n - 3, 3)] {
            let subset = ArraySubset::new_with_start_shape(vec![start], vec![len]).expect("subset");
            let want: ArrayBytes<'static> = array.read_subset(&subset).expect("subset read");
            let mut bytes = vec![7u8];
            read_range_into(&array, start, len, &mut bytes).expect("bytes");
            assert_eq!(bytes[0], 7, "appended after what was there");
            assert_eq!(
                ArrayBytes::new_flen(bytes[1..].to_vec()),
                want,
                "{start}+{len}"
            );
            let mut values = Values::F64(vec![1.5]);
            read_range_into(&array, start, len, &mut values).expect("values");
            let mut want_values = Values::F64(vec![1.5]);
            want_values.extend_from_le_bytes(&want.into_fixed().expect("fixed"));
            assert_eq!(values, want_values, "{start}+{len} as values");
        }
        let zstd = Store::open(&fixtures.join("chunked_v3.zarr")).expect("open");
        let array = zstd.array("layers/sparse/data").expect("array");
        assert!(PlainBlosc::of(&array).is_none(), "zstd: left to zarrs");
    }
}
