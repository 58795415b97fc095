//! Options of a concatenation, mirroring `anndata.concat`'s arguments, with
//! their validation.

use std::path::PathBuf;

use super::index::Join;
use super::plan::Axis;
use super::values::Scalar;
use crate::anndata::ZarrFormat;
use crate::error::{Error, Result};

/// How elements that are not concatenated are combined across inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Merge {
    /// Keep an element only if every input has it and all are equal.
    Same,
    /// Keep an element if all inputs that have it agree.
    Unique,
    /// The first input's value for each element.
    First,
    /// Keep elements present in exactly one input.
    Only,
}

impl Merge {
    /// Parses `same`, `unique`, `first` or `only`.
    pub fn parse(s: &str) -> Result<Merge> {
        Ok(match s {
            "same" => Merge::Same,
            "unique" => Merge::Unique,
            "first" => Merge::First,
            "only" => Merge::Only,
            other => {
                return Err(Error::option(format!(
                    "merge strategy must be same, unique, first or only, not {other:?}"
                )));
            }
        })
    }
}

/// Everything `anncat concat` is asked to do.
#[derive(Debug, Clone)]
pub struct ConcatOptions {
    /// Input stores, in order.
    pub inputs: Vec<PathBuf>,
    /// One key per input (default "0", "1", ...).
    pub keys: Option<Vec<String>>,
    /// Output store.
    pub output: PathBuf,
    /// Concatenation axis.
    pub axis: Axis,
    /// Join of the other axis.
    pub join: Join,
    /// Merge strategy for the other axis' annotations.
    pub merge: Option<Merge>,
    /// Merge strategy for uns.
    pub uns_merge: Option<Merge>,
    /// Name of a column recording each entry's input key.
    pub label: Option<String>,
    /// Separator making the concatenated names unique (`name + SEP + key`).
    pub index_unique: Option<String>,
    /// Value for missing entries (default NaN for dense, 0 for sparse).
    pub fill_value: Option<Scalar>,
    /// Concatenate the {axis}p pairwise elements block-diagonally.
    pub pairwise: bool,
    /// Write sparse X, layers and raw/X as CSC instead of CSR (anndata's
    /// `concat` always gives CSR; CSC inputs stacked along var then need no
    /// transposing). Every input's element must be sparse.
    pub csc_output: bool,
    /// Output zarr format (default: the first input's).
    pub zarr_format: Option<ZarrFormat>,
    /// Memory budget of the executor, in bytes.
    pub memory_limit: u64,
    /// Executor threads.
    pub threads: usize,
    /// Output chunk size in bytes (default: chosen from the memory limit).
    pub chunk_bytes: Option<u64>,
    /// Sharding of a zarr v3 output (ignored for v2).
    pub sharding: Sharding,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Continue an interrupted run from its `OUT.partial` (its journal of
    /// finished tasks), redoing only unfinished tasks.
    pub resume: bool,
}

/// The smallest memory budget anncat accepts.
pub const MIN_MEMORY_LIMIT: u64 = 16 << 20;

impl ConcatOptions {
    /// Options with `anndata.concat`'s defaults for these inputs and output.
    pub fn new(inputs: Vec<PathBuf>, output: PathBuf) -> Self {
        ConcatOptions {
            inputs,
            keys: None,
            output,
            axis: Axis::Obs,
            join: Join::Inner,
            merge: None,
            uns_merge: None,
            label: None,
            index_unique: None,
            fill_value: None,
            pairwise: false,
            csc_output: false,
            zarr_format: None,
            memory_limit: 1 << 30,
            threads: 2,
            chunk_bytes: None,
            sharding: Sharding::Auto,
            overwrite: false,
            resume: false,
        }
    }

    /// Checks the options on their own (inputs are checked when opened).
    pub fn validate(&self) -> Result<()> {
        if self.inputs.is_empty() {
            return Err(Error::option("no inputs to concatenate"));
        }
        if let Some(keys) = &self.keys {
            if keys.len() != self.inputs.len() {
                return Err(Error::option(format!(
                    "{} keys given for {} inputs",
                    keys.len(),
                    self.inputs.len()
                )));
            }
            let mut seen = std::collections::HashSet::new();
            for k in keys {
                if !seen.insert(k) {
                    return Err(Error::option(format!("duplicate key {k:?}")));
                }
            }
        }
        let extension = self
            .output
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("zarr") => {}
            Some("h5ad") => {
                if self.zarr_format.is_some() {
                    return Err(Error::option(format!(
                        "-o {}: --zarr-format applies to .zarr outputs, not .h5ad",
                        self.output.display()
                    )));
                }
                if !matches!(self.sharding, Sharding::Auto) {
                    return Err(Error::option(format!(
                        "-o {}: --shard-mib applies to zarr v3 outputs, not .h5ad",
                        self.output.display()
                    )));
                }
            }
            _ => {
                return Err(Error::option(format!(
                    "-o {}: the output name must end in .zarr or .h5ad (it says which format to write)",
                    self.output.display()
                )));
            }
        }
        if self.memory_limit < MIN_MEMORY_LIMIT {
            return Err(Error::option(format!(
                "--memory-limit must be at least {} MiB",
                MIN_MEMORY_LIMIT >> 20
            )));
        }
        if self.threads == 0 {
            return Err(Error::option("at least one thread is needed"));
        }
        if self.chunk_bytes == Some(0) {
            return Err(Error::option("--chunk-mib must be positive"));
        }
        if let Sharding::Bytes(shard) = self.sharding {
            if shard == 0 {
                return Err(Error::option("--shard-mib must be positive (0 is off)"));
            }
            if shard > self.memory_limit / 4 {
                return Err(Error::option(format!(
                    "--shard-mib {} is more than a quarter of --memory-limit ({} MiB): a shard is \
                     assembled whole by one task",
                    shard as f64 / (1 << 20) as f64,
                    self.memory_limit >> 20
                )));
            }
        }
        if self.label.as_deref() == Some("") {
            return Err(Error::option("--label must not be empty"));
        }
        Ok(())
    }

    /// The keys, defaulted to "0", "1", ...
    pub fn resolved_keys(&self) -> Vec<String> {
        self.keys
            .clone()
            .unwrap_or_else(|| (0..self.inputs.len()).map(|i| i.to_string()).collect())
    }

    /// Target output chunk size in bytes: `chunk_bytes`, else a 32nd of
    /// the memory limit, at most 16 MiB (8 MiB at the benchmarks'
    /// 256 MiB limit, 16 MiB from a 512 MiB limit on, so at the 1 GiB
    /// default). Fewer, larger chunks cost less to create, flush and send
    /// to the device: 16 MiB against 8 MiB chunks, both at a 256 MiB
    /// limit, took CSR inner 0.44 → 0.39 s, outer 0.90 → 0.81 s, dense obs
    /// 1.17 → 1.08 s and CSC var inner 4.58 → 4.09 s (medians,
    /// alternating). A 16th of the limit is too much, though: on the
    /// outer join of eight small inputs in benches/atlas.py a data task is
    /// then estimated at 242 MiB, over a 256 MiB worker's budget, and the
    /// run fails.
    pub fn target_chunk_bytes(&self) -> u64 {
        self.chunk_bytes
            .unwrap_or_else(|| (self.memory_limit / 32).clamp(256 << 10, 16 << 20))
    }

    /// The size of the unit one write task owns (a chunk, or a shard when
    /// `sharded`) and, when sharded, the smallest inner chunk.
    ///
    /// Automatic sharding keeps the unsharded units (so tasks and memory are
    /// as without sharding) and splits each into inner chunks of an eighth;
    /// `--shard-mib` makes the units that large, with inner chunks of the
    /// target chunk size.
    pub fn write_units(&self, sharded: bool) -> (u64, Option<u64>) {
        let chunk = self.target_chunk_bytes();
        match (sharded, self.sharding) {
            (false, _) | (_, Sharding::Off) => (chunk, None),
            (true, Sharding::Auto) => (chunk, Some(chunk / 8)),
            (true, Sharding::Bytes(shard)) => (shard, Some(chunk.min(shard))),
        }
    }
}

/// How a zarr v3 output is sharded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sharding {
    /// As anndata 0.13 writes v3 (`auto_shard_zarr_v3`): every array
    /// sharded; each task's unit is one shard.
    Auto,
    /// Shards of about this many bytes.
    Bytes(u64),
    /// No sharding.
    Off,
}

/// Parses a size such as `512MiB`, `2GiB`, `100MB` or a plain byte count.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| Error::option(format!("invalid size {s:?} (try 512MiB or 2GiB)")))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0_f64.powi(4),
        _ => {
            return Err(Error::option(format!(
                "invalid size unit in {s:?} (try MiB or GiB)"
            )));
        }
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(Error::option(format!("invalid size {s:?}")));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default chunk stays a 32nd of the limit or less: a 16th made
    /// the outer join of eight small inputs in benches/atlas.py plan a
    /// data task over a 256 MiB worker's budget.
    #[test]
    fn default_chunks_are_a_32nd_of_the_limit_at_most_16_mib() {
        let mut o = ConcatOptions::new(vec!["a".into()], "o.zarr".into());
        for limit in [1 << 20, 64 << 20, 256 << 20, 512 << 20, 1 << 30, 64 << 30] {
            o.memory_limit = limit;
            let chunk = o.target_chunk_bytes();
            assert!(chunk <= (limit / 32).max(256 << 10), "{limit}: {chunk}");
            assert!((256 << 10..=16 << 20).contains(&chunk), "{limit}: {chunk}");
        }
        o.memory_limit = 256 << 20;
        assert_eq!(o.target_chunk_bytes(), 8 << 20);
        o.memory_limit = 1 << 30;
        assert_eq!(o.target_chunk_bytes(), 16 << 20);
        o.chunk_bytes = Some(3 << 20);
        assert_eq!(o.target_chunk_bytes(), 3 << 20, "an explicit size wins");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB").expect("ok"), 512 << 20);
        assert_eq!(parse_size("2GiB").expect("ok"), 2 << 30);
        assert_eq!(parse_size("100MB").expect("ok"), 100_000_000);
        assert_eq!(parse_size("4096").expect("ok"), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn validation_catches_bad_keys_and_limits() {
        let mut o = ConcatOptions::new(vec!["a".into(), "b".into()], "o.zarr".into());
        assert!(o.validate().is_ok());
        o.keys = Some(vec!["x".into(), "x".into()]);
        assert!(
            o.validate()
                .expect_err("dup")
                .to_string()
                .contains("duplicate key")
        );
        o.keys = Some(vec!["x".into()]);
        assert!(o.validate().is_err());
        o.keys = None;
        o.memory_limit = 1;
        assert!(o.validate().is_err());
        let mut h5 = ConcatOptions::new(vec!["a".into()], "out.H5AD".into());
        assert!(h5.validate().is_ok());
        h5.zarr_format = Some(crate::anndata::ZarrFormat::V3);
        assert!(
            h5.validate()
                .expect_err("format")
                .to_string()
                .contains("--zarr-format")
        );
        h5.zarr_format = None;
        h5.output = "out.txt".into();
        assert!(
            h5.validate()
                .expect_err("name")
                .to_string()
                .contains(".zarr or .h5ad")
        );
        h5.output = "out.zarr".into();
        assert!(h5.validate().is_ok());
    }
}
