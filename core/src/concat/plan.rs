//! The concat plan: everything the matrix kernels need to know, computed
//! once from metadata by the planner and saved in the staging directory
//! (`OUT.partial/.anncat/plan-PID-NANOS.bin`) where every executor, in this process
//! or another, loads it (once per process).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::index::Reindexer;
use super::values::Scalar;
use crate::anndata::store_cache::StoreCache;
use crate::anndata::{DType, ZarrFormat};
use crate::error::{Error, Result};
use crate::graph::{decode, encode};
use crate::recent::Recent;

/// The axis along which inputs are stacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Axis {
    /// Stack cells (rows).
    Obs,
    /// Stack genes (columns).
    Var,
}

impl Axis {
    /// `obs` or `var`.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Obs => "obs",
            Axis::Var => "var",
        }
    }

    /// The other axis' name.
    pub fn other_name(self) -> &'static str {
        match self {
            Axis::Obs => "var",
            Axis::Var => "obs",
        }
    }
}

/// One input store as the plan sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputInfo {
    /// The input store.
    pub path: PathBuf,
    /// Its length along the concatenation axis.
    pub n_axis: u64,
    /// Where its entries start along the output's concatenation axis.
    pub offset: u64,
}

/// A joined other axis with each input's reindexer onto it (the main
/// object's other axis, or raw's).
///
/// Inputs that share their names share one reindexer: the plan (held by the
/// coordinator and by every worker) grows with the distinct name lists, not
/// with inputs x names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Space {
    /// Length of the joined other axis.
    pub n_other: u64,
    /// The distinct reindexers.
    distinct: Vec<Reindexer>,
    /// Per input, the index of its reindexer in `distinct`.
    of_input: Vec<u32>,
}

impl Space {
    /// A space of `n_other` positions whose input `i` maps onto it with
    /// `distinct[of_input[i]]`.
    pub fn new(n_other: u64, distinct: Vec<Reindexer>, of_input: Vec<u32>) -> Space {
        let space = Space {
            n_other,
            distinct,
            of_input,
        };
        if let Some(why) = space.damage() {
            panic!("a space the planner made is inconsistent: {why}");
        }
        space
    }

    /// A space of `n_other` positions, each input's reindexer the one
    /// `key` gives it (inputs with equal keys share one, built once by
    /// `build`).
    pub fn by_key<K: Eq + std::hash::Hash + Clone>(
        n_other: u64,
        keys: &[K],
        mut build: impl FnMut(&K) -> Reindexer,
    ) -> Space {
        let mut seen: std::collections::HashMap<K, u32> = Default::default();
        let mut distinct = Vec::new();
        let of_input = keys
            .iter()
            .map(|k| {
                *seen.entry(k.clone()).or_insert_with(|| {
                    distinct.push(build(k));
                    (distinct.len() - 1) as u32
                })
            })
            .collect();
        Space::new(n_other, distinct, of_input)
    }

    /// Input `i`'s reindexer onto the joined axis.
    pub fn reindexer(&self, i: usize) -> &Reindexer {
        &self.distinct[self.of_input[i] as usize]
    }

    /// How many inputs the space maps.
    pub fn n_inputs(&self) -> usize {
        self.of_input.len()
    }

    /// Why the space is not one [`Space::new`] could have made (a plan
    /// file damaged on disk), if it is not: an input without a reindexer,
    /// or a reindexer sending a position outside the joined axis.
    fn damage(&self) -> Option<String> {
        if let Some(i) = self
            .of_input
            .iter()
            .position(|&k| k as usize >= self.distinct.len())
        {
            return Some(format!("input {i} has no reindexer"));
        }
        self.distinct.iter().find_map(|r| {
            let n_new = i64::try_from(r.n_new).unwrap_or(i64::MAX);
            r.new_of_old
                .iter()
                .find(|&&n| n < -1 || i64::from(n) >= n_new)
                .map(|n| format!("a reindexer sends a name to {n}, outside 0..{}", r.n_new))
        })
    }

    /// How many distinct reindexers it holds.
    pub fn n_distinct(&self) -> usize {
        self.distinct.len()
    }
}

/// How an input matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// A dense 2-D array.
    Dense,
    /// CSR (rows are read directly).
    Csr,
    /// CSC (converted to a temporary CSR before rows are read).
    Csc,
}

/// One input's contribution to an output matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixSource {
    /// Store to read from (the input, or a temporary CSR copy of a CSC input).
    pub store: PathBuf,
    /// Element path inside that store.
    pub path: String,
    /// Storage kind (as read: a converted CSC reads as CSR).
    pub kind: SourceKind,
    /// The element's dtype.
    pub dtype: DType,
    /// Columns of the matrix as read (as CSR): every stored column index
    /// is checked to be below this.
    pub columns: u64,
    /// The input store and element the data comes from (differs from
    /// `store` / `path` for a converted CSC input).
    pub origin: (PathBuf, String),
    /// Bytes of the element's stored values (for memory estimates).
    pub bytes: u64,
    /// Decoded bytes of the largest stored chunk a reader of this source
    /// must hold at once (a dense chunk; for sparse, one chunk each of
    /// data, indices and indptr): a task reading any part of it decodes it
    /// whole.
    pub read_chunk_bytes: u64,
    /// A converted CSC input: the CSR parts holding its rows (each a store
    /// with a CSR group `m` of rows `rows[0]..rows[1]`), in row order.
    pub parts: Vec<CsrPart>,
}

/// One row range of a CSC input converted to CSR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsrPart {
    /// First and end row (global) of the part.
    pub rows: [u64; 2],
    /// The part's store.
    pub store: PathBuf,
}

/// One output matrix (X, a layer, raw/X).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixPlan {
    /// Element path in the output.
    pub out_path: String,
    /// Index into [`ConcatPlan::spaces`].
    pub space: usize,
    /// Per input: where its data comes from, or `None` when it lacks the element.
    pub sources: Vec<Option<MatrixSource>>,
    /// Sparse (CSR) output, else dense.
    pub sparse: bool,
    /// Output dtype.
    pub dtype: DType,
    /// Output shape (obs × var).
    pub shape: [u64; 2],
    /// Dense: chunk shape. Sparse: `[rows per block, entries per data chunk]`.
    pub chunks: [u64; 2],
    /// Value for missing entries.
    pub fill: Scalar,
    /// Sparse: upper bound of stored entries (sizes the data-chunk tasks).
    pub max_nnz: u64,
    /// The dimension inputs are stacked along: rows ([`Axis::Obs`]) or
    /// columns ([`Axis::Var`]). X and layers follow the concatenation axis;
    /// {axis}m arrays always stack rows.
    pub stack: Axis,
    /// Per input: `[offset, length]` along the stacking dimension.
    pub along: Vec<[u64; 2]>,
    /// Block-diagonal ({axis}p with `pairwise`): input `i`'s columns are
    /// shifted by its offset; nothing is reindexed or filled.
    pub diagonal: bool,
    /// Sparse: row blocks counted by one task: many when row lengths come
    /// from the inputs' `indptr` alone (a task per block of a few hundred
    /// rows spent more on its dispatch than on its work), a few when
    /// counting assembles rows.
    pub count_group: u64,
    /// Sparse: row blocks of one `indptr` chunk (and task), a whole number
    /// of count groups: as many as [`count_group`](Self::count_group)
    /// allows when row lengths come from `indptr` alone.
    pub indptr_group: u64,
}

/// Everything the matrix kernels need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConcatPlan {
    /// The staging output store.
    pub output: PathBuf,
    /// Its zarr format.
    pub format: ZarrFormat,
    /// Concatenation axis.
    pub axis: Axis,
    /// The inputs in order.
    pub inputs: Vec<InputInfo>,
    /// Joined other axes (0: the main object; 1: raw, when present).
    pub spaces: Vec<Space>,
    /// Output matrices.
    pub matrices: Vec<MatrixPlan>,
    /// Data frame columns along the concatenation axis, written by tasks.
    pub frames: Vec<super::frame_tasks::FrameColumnPlan>,
    /// Arrays are sharded with inner chunks of at least this many bytes
    /// (see [`crate::anndata::Store::set_sharding`]).
    pub shard_inner_bytes: Option<u64>,
    /// The inputs this process's tasks of the run have opened (not saved:
    /// each process keeps its own, for as long as it keeps the plan).
    #[serde(skip)]
    pub stores: StoreCache,
}

impl ConcatPlan {
    /// Saves the plan (atomically) into its staging store under a name
    /// unique to this run; returns the file the kernels load it from.
    pub fn save(&self) -> Result<PathBuf> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let file = self
            .output
            .join(".anncat")
            .join(format!("plan-{}-{nanos}.bin", std::process::id()));
        let bytes = encode(self)?;
        crate::anndata::atomic_store::write_atomic(&file, &bytes)
            .map_err(|e| Error::path(&file, format!("cannot save plan: {e}")))?;
        Ok(file)
    }

    /// Loads the plan at `file`. A process keeps the last
    /// [`PLAN_CACHE_ENTRIES`] plans it loaded (a worker serves one run at a
    /// time, rarely two), so the cache is bounded; its memory is allocated
    /// like any other, so a worker's governor counts it in what the process
    /// uses.
    pub fn load(file: &Path) -> Result<Arc<ConcatPlan>> {
        static CACHE: Mutex<Recent<Arc<ConcatPlan>>> = Mutex::new(Recent::new(PLAN_CACHE_ENTRIES));
        if let Some(plan) = CACHE.lock().ok().and_then(|mut c| c.get(file)) {
            return Ok(plan);
        }
        let bytes =
            std::fs::read(file).map_err(|e| Error::path(file, format!("cannot read plan: {e}")))?;
        let plan: ConcatPlan = decode(&bytes)?;
        if let Some(why) = plan.spaces.iter().find_map(Space::damage) {
            return Err(Error::path(file, format!("the plan is damaged: {why}")));
        }
        let plan = Arc::new(plan);
        if let Ok(mut c) = CACHE.lock() {
            c.insert(file, plan.clone());
        }
        Ok(plan)
    }
}

/// Plans a process keeps loaded at most.
pub const PLAN_CACHE_ENTRIES: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(output: &Path) -> ConcatPlan {
        ConcatPlan {
            output: output.to_path_buf(),
            format: ZarrFormat::V2,
            axis: Axis::Obs,
            inputs: Vec::new(),
            spaces: Vec::new(),
            matrices: Vec::new(),
            frames: Vec::new(),
            shard_inner_bytes: None,
            stores: Default::default(),
        }
    }

    #[test]
    fn the_plan_cache_keeps_the_last_few_plans_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<PathBuf> = (0..PLAN_CACHE_ENTRIES + 2)
            .map(|i| {
                let out = dir.path().join(format!("out{i}"));
                std::fs::create_dir_all(out.join(".anncat")).expect("mkdir");
                plan(&out).save().expect("save")
            })
            .collect();
        let first = ConcatPlan::load(&files[0]).expect("load");
        assert!(Arc::ptr_eq(
            &first,
            &ConcatPlan::load(&files[0]).expect("hit")
        ));
        for f in &files[1..] {
            ConcatPlan::load(f).expect("load");
        }
        // The first was evicted: loading it again reads a new copy.
        let again = ConcatPlan::load(&files[0]).expect("reload");
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(again.output, first.output);
    }

    #[test]
    fn a_plan_whose_reindexer_points_outside_its_axis_is_refused_on_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".anncat")).expect("mkdir");
        let mut p = plan(dir.path());
        p.spaces.push(Space {
            n_other: 2,
            distinct: vec![Reindexer {
                new_of_old: vec![0, 2],
                n_new: 2,
                identity: false,
            }],
            of_input: vec![0],
        });
        let err = ConcatPlan::load(&p.save().expect("save"))
            .expect_err("damaged")
            .to_string();
        assert!(
            err.contains("plan is damaged") && err.contains("outside 0..2"),
            "{err}"
        );
        let mut p = plan(dir.path());
        p.spaces.push(Space {
            n_other: 1,
            distinct: Vec::new(),
            of_input: vec![0],
        });
        let err = ConcatPlan::load(&p.save().expect("save"))
            .expect_err("damaged")
            .to_string();
        assert!(err.contains("input 0 has no reindexer"), "{err}");
    }

    #[test]
    fn inputs_with_equal_keys_share_one_reindexer_through_a_save_and_load() {
        let widths = [3u64, 2, 3, 3, 2, 0];
        let mut built = 0;
        let space = Space::by_key(3, &widths, |&w| {
            built += 1;
            Reindexer::from_new_of_old((0..w as i32).collect(), 3)
        });
        assert_eq!(built, 3);
        assert_eq!((space.n_inputs(), space.n_distinct()), (6, 3));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = plan(dir.path());
        std::fs::create_dir_all(dir.path().join(".anncat")).expect("mkdir");
        p.spaces.push(space);
        let loaded = ConcatPlan::load(&p.save().expect("save")).expect("load");
        let space = &loaded.spaces[0];
        for (i, &w) in widths.iter().enumerate() {
            let r = space.reindexer(i);
            assert_eq!(r.new_of_old.len() as u64, w, "input {i}");
            assert_eq!(r.identity, w == 3);
            assert_eq!(r.has_missing(), w < 3);
        }
    }
}
