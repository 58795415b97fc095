//! Output array layout: the metadata anncat writes for a new array in
//! either zarr format (anndata's codecs: blosc-lz4 for v2, zstd for v3,
//! optional sharding), and chunk / shard shapes chosen from a byte budget.

use serde_json::{Value, json};

use super::dtype::DType;
use super::store::ZarrFormat;

/// Everything needed to create an output array.
#[derive(Debug, Clone, PartialEq)]
pub struct ArraySpec {
    /// Array shape.
    pub shape: Vec<u64>,
    /// Element data type (not [`DType::Other`]).
    pub dtype: DType,
    /// Chunk shape (inner chunk shape when sharded); every entry ≥ 1.
    pub chunks: Vec<u64>,
    /// Shard shape (v3 only): a multiple of `chunks` in every dimension.
    pub shard: Option<Vec<u64>>,
    /// Fill value (JSON as in the metadata).
    pub fill_value: Value,
}

impl ArraySpec {
    /// A spec with `chunks` clamped to at least 1 per dimension and the
    /// dtype's default fill value.
    pub fn new(shape: Vec<u64>, dtype: DType, chunks: Vec<u64>) -> Self {
        let fill_value = dtype.default_fill();
        let chunks = chunks.into_iter().map(|c| c.max(1)).collect();
        ArraySpec {
            shape,
            dtype,
            chunks,
            shard: None,
            fill_value,
        }
    }

    /// The metadata document (without attributes) for `format`, or `None`
    /// when the dtype has no standard spelling ([`DType::Other`]).
    pub fn to_metadata(&self, format: ZarrFormat) -> Option<Value> {
        let fill = normalize_fill(&self.dtype, &self.fill_value);
        match format {
            ZarrFormat::V2 => {
                let dtype = self.dtype.spelling(format)?;
                let filters = if self.dtype == DType::String {
                    json!([{"id": "vlen-utf8"}])
                } else {
                    Value::Null
                };
                Some(json!({
                    "shape": self.shape,
                    "chunks": self.chunks,
                    "dtype": dtype,
                    "fill_value": fill,
                    "order": "C",
                    "filters": filters,
                    "dimension_separator": ".",
                    "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0},
                    "zarr_format": 2,
                }))
            }
            ZarrFormat::V3 => {
                let data_type = self.dtype.spelling(format)?;
                let serializer = if self.dtype == DType::String {
                    json!({"name": "vlen-utf8", "configuration": {}})
                } else {
                    json!({"name": "bytes", "configuration": {"endian": "little"}})
                };
                let inner = json!([serializer, {"name": "zstd", "configuration": {"level": 0, "checksum": false}}]);
                let (grid, codecs) = match &self.shard {
                    Some(shard) => (
                        shard.clone(),
                        json!([{
                            "name": "sharding_indexed",
                            "configuration": {
                                "chunk_shape": self.chunks,
                                "codecs": inner,
                                "index_codecs": [
                                    {"name": "bytes", "configuration": {"endian": "little"}},
                                    {"name": "crc32c"}
                                ],
                                "index_location": "end"
                            }
                        }]),
                    ),
                    None => (self.chunks.clone(), inner),
                };
                Some(json!({
                    "shape": self.shape,
                    "data_type": data_type,
                    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
                    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                    "fill_value": fill,
                    "codecs": codecs,
                    "zarr_format": 3,
                    "node_type": "array",
                    "storage_transformers": [],
                }))
            }
        }
    }
}

/// A fill value valid for `dtype` in both formats: missing or mistyped
/// values become the dtype's default; NaN / infinities keep their spelling.
fn normalize_fill(dtype: &DType, fill: &Value) -> Value {
    match (dtype, fill) {
        (DType::Bool, Value::Bool(_)) => fill.clone(),
        (DType::Bool, Value::Number(n)) => Value::Bool(n.as_f64().is_some_and(|f| f != 0.0)),
        (DType::String, Value::String(_)) => fill.clone(),
        (DType::Float16 | DType::Float32 | DType::Float64, Value::Number(n)) => {
            json!(n.as_f64().unwrap_or(0.0))
        }
        (DType::Float16 | DType::Float32 | DType::Float64, Value::String(s))
            if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") =>
        {
            fill.clone()
        }
        (DType::Bool | DType::String | DType::Float16 | DType::Float32 | DType::Float64, _) => {
            dtype.default_fill()
        }
        (DType::Other(_) | DType::Structured(_), _) => fill.clone(),
        (_, Value::Number(n)) if n.is_i64() || n.is_u64() => fill.clone(),
        (_, Value::Number(n)) => json!(n.as_f64().unwrap_or(0.0) as i64),
        _ => dtype.default_fill(),
    }
}

/// A chunk shape for an array of `shape` whose chunks hold about
/// `target_bytes`: whole trailing dimensions while they fit, then rows.
pub fn chunk_shape_for(shape: &[u64], item_size: usize, target_bytes: u64) -> Vec<u64> {
    if shape.is_empty() {
        return Vec::new();
    }
    let mut budget = (target_bytes / item_size.max(1) as u64).max(1);
    let mut chunks = vec![1u64; shape.len()];
    // Fill from the last dimension backwards: C order keeps rows contiguous.
    for d in (0..shape.len()).rev() {
        let extent = shape[d].max(1);
        if extent <= budget {
            chunks[d] = extent;
            budget /= extent;
        } else {
            chunks[d] = budget.max(1);
            break;
        }
    }
    chunks
}

impl ArraySpec {
    /// The same array sharded with one shard per current chunk: the chunk
    /// becomes the shard (so whoever wrote whole chunks now writes whole
    /// shards) and is split along its first dimension into inner chunks of
    /// at least `inner_bytes` each, by the largest number up to 64 that
    /// divides it (or not at all when none gives chunks that large).
    pub fn sharded(mut self, inner_bytes: u64) -> Self {
        if self.chunks.is_empty() {
            return self;
        }
        let item = self.dtype.item_size().max(8) as u64;
        let rest: u64 = self.chunks[1..].iter().product::<u64>().max(1) * item;
        let rows = self.chunks[0];
        let split = (2..=64)
            .rev()
            .find(|&d| rows.is_multiple_of(d) && rows / d * rest >= inner_bytes)
            .unwrap_or(1);
        let mut inner = self.chunks.clone();
        inner[0] = rows / split;
        self.shard = Some(std::mem::replace(&mut self.chunks, inner));
        self
    }
}

/// A shard shape holding about `target_bytes`: `chunks` grown along the
/// first dimension by a whole multiple, never much past the array's extent.
pub fn shard_shape_for(
    shape: &[u64],
    chunks: &[u64],
    item_size: usize,
    target_bytes: u64,
) -> Vec<u64> {
    if shape.is_empty() {
        return Vec::new();
    }
    let chunk_bytes: u64 = chunks.iter().product::<u64>() * item_size.max(1) as u64;
    let mut factor = (target_bytes / chunk_bytes.max(1)).max(1);
    let max_factor = shape[0].max(1).div_ceil(chunks[0]);
    factor = factor.min(max_factor).max(1);
    let mut shard = chunks.to_vec();
    shard[0] = chunks[0] * factor;
    shard
}

/// Row-major unravel of a linear chunk number into grid indices.
pub fn unravel(mut linear: u64, grid: &[u64]) -> Vec<u64> {
    let mut out = vec![0; grid.len()];
    for d in (0..grid.len()).rev() {
        let n = grid[d].max(1);
        out[d] = linear % n;
        linear /= n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(4, &[2, 3]), vec![1, 1]);
        assert_eq!(unravel(0, &[]), Vec::<u64>::new());
    }

    #[test]
    fn chunk_shape_keeps_rows_whole_when_they_fit() {
        assert_eq!(chunk_shape_for(&[1000, 100], 4, 4000), vec![10, 100]);
        assert_eq!(
            chunk_shape_for(&[1000, 100], 4, 400_000_000),
            vec![1000, 100]
        );
        assert_eq!(chunk_shape_for(&[10, 1000], 8, 800), vec![1, 100]);
        assert_eq!(chunk_shape_for(&[0], 8, 800), vec![1]);
        assert_eq!(chunk_shape_for(&[], 8, 800), Vec::<u64>::new());
    }

    #[test]
    fn sharded_specs_keep_the_chunk_as_the_shard() {
        let s = ArraySpec::new(vec![1000, 100], DType::Float32, vec![64, 100]).sharded(6400);
        assert_eq!(s.shard, Some(vec![64, 100]));
        assert_eq!(s.chunks, vec![8, 100]);
        // Too small to split: one inner chunk per shard.
        let s = ArraySpec::new(vec![10], DType::Int64, vec![7]).sharded(1 << 20);
        assert_eq!((s.shard, s.chunks), (Some(vec![7]), vec![7]));
        let v3 = ArraySpec::new(vec![100], DType::Int32, vec![64])
            .sharded(8)
            .to_metadata(ZarrFormat::V3)
            .expect("v3");
        assert_eq!(
            v3["chunk_grid"]["configuration"]["chunk_shape"],
            json!([64])
        );
        assert_eq!(v3["codecs"][0]["configuration"]["chunk_shape"], json!([1]));
    }

    #[test]
    fn shard_shape_is_a_multiple_of_chunks() {
        assert_eq!(
            shard_shape_for(&[1000, 100], &[10, 100], 4, 40_000),
            vec![100, 100]
        );
        assert_eq!(
            shard_shape_for(&[25, 100], &[10, 100], 4, 4_000_000),
            vec![30, 100]
        );
    }

    #[test]
    fn metadata_matches_anndata_conventions() {
        let spec = ArraySpec::new(vec![5], DType::String, vec![5]);
        let v2 = spec.to_metadata(ZarrFormat::V2).expect("v2");
        assert_eq!(v2["dtype"], "|O");
        assert_eq!(v2["filters"][0]["id"], "vlen-utf8");
        let mut sharded = ArraySpec::new(vec![100, 4], DType::Float32, vec![10, 4]);
        sharded.shard = Some(vec![50, 4]);
        let v3 = sharded.to_metadata(ZarrFormat::V3).expect("v3");
        assert_eq!(
            v3["chunk_grid"]["configuration"]["chunk_shape"],
            json!([50, 4])
        );
        assert_eq!(
            v3["codecs"][0]["configuration"]["chunk_shape"],
            json!([10, 4])
        );
        assert_eq!(v3["fill_value"], json!(0.0));
        assert!(
            ArraySpec::new(vec![1], DType::Other(json!("x")), vec![1])
                .to_metadata(ZarrFormat::V3)
                .is_none()
        );
    }

    #[test]
    fn fill_values_are_normalized() {
        assert_eq!(normalize_fill(&DType::Float64, &json!("NaN")), json!("NaN"));
        assert_eq!(normalize_fill(&DType::Float64, &Value::Null), json!(0.0));
        assert_eq!(normalize_fill(&DType::Int32, &json!(0.0)), json!(0));
        assert_eq!(normalize_fill(&DType::String, &Value::Null), json!(""));
        assert_eq!(normalize_fill(&DType::Bool, &json!(0)), json!(false));
    }
}
