//! Read and write throughput of one AnnData element with anncat's zarr I/O.
//!
//! `cargo bench --bench io_throughput -- STORE ELEMENT [REPEATS]` decodes
//! every chunk of the element's arrays (a dense array, or a sparse group's
//! data / indices / indptr) in parallel, then encodes the same chunks into a
//! fresh store of the same format and layout. Prints one JSON line with the
//! decoded MiB and the best read and write times; `benches/io_vs_zarr_python.py`
//! runs it beside zarr-python on the same stores.

use std::path::Path;
use std::time::Instant;

use anncat_core::anndata::OutputStore;
use anncat_core::anndata::layout::ArraySpec;
use anncat_core::anndata::store::{NodeKind, Store};
use anncat_core::anndata::{Element, read_tree};
use rayon::prelude::*;
use zarrs::array::ArrayBytes;

type Chunks = Vec<(Vec<u64>, ArrayBytes<'static>)>;

fn arrays_of(e: &Element) -> Vec<&Element> {
    let mut out = Vec::new();
    e.walk(&mut |n| {
        if n.array().is_some() {
            out.push(n);
        }
    });
    out
}

fn chunk_indices(grid: &[u64]) -> Vec<Vec<u64>> {
    let total: u64 = grid.iter().product();
    (0..total)
        .map(|mut linear| {
            let mut idx = vec![0; grid.len()];
            for d in (0..grid.len()).rev() {
                idx[d] = linear % grid[d];
                linear /= grid[d];
            }
            idx
        })
        .collect()
}

fn read_all(store: &Store, path: &str) -> (Chunks, u64) {
    let array = store.array(path).expect("open array");
    let chunks: Chunks = chunk_indices(array.chunk_grid_shape())
        .into_par_iter()
        .map(|idx| {
            let bytes: ArrayBytes<'static> = array.retrieve_chunk(&idx).expect("read chunk");
            (idx, bytes)
        })
        .collect();
    let bytes = chunks.iter().map(|(_, b)| byte_len(b)).sum();
    (chunks, bytes)
}

fn byte_len(b: &ArrayBytes<'_>) -> u64 {
    match b {
        ArrayBytes::Fixed(raw) => raw.len() as u64,
        ArrayBytes::Variable(v) => v.bytes().len() as u64,
        _ => 0,
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (store_path, element) = match args.as_slice() {
        [s, e, ..] => (s.clone(), e.clone()),
        _ => {
            eprintln!("usage: io_throughput STORE ELEMENT [REPEATS]");
            std::process::exit(2);
        }
    };
    let repeats: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3);
    let store = Store::open(Path::new(&store_path)).expect("open store");
    let tree = read_tree(&store).expect("read tree");
    let target = tree
        .walk_find(&element)
        .unwrap_or_else(|| panic!("no element {element}"));
    let arrays = arrays_of(target);

    let mut best_read = f64::MAX;
    let mut data = Vec::new();
    let mut total_bytes = 0;
    for _ in 0..repeats {
        let start = Instant::now();
        data = arrays
            .iter()
            .map(|a| read_all(&store, &a.path))
            .collect::<Vec<_>>();
        best_read = best_read.min(start.elapsed().as_secs_f64());
        total_bytes = data.iter().map(|(_, b)| b).sum();
    }

    let out_dir = tempfile::tempdir().expect("tempdir");
    let mut best_write = f64::MAX;
    for round in 0..repeats {
        let out = OutputStore::create(
            &out_dir.path().join(format!("w{round}.zarr")),
            store.format(),
        )
        .expect("create");
        let start = Instant::now();
        for (a, (chunks, _)) in arrays.iter().zip(&data) {
            let NodeKind::Array(meta) = &a.meta.kind else {
                unreachable!()
            };
            let mut spec =
                ArraySpec::new(meta.shape.clone(), meta.dtype.clone(), meta.chunks.clone());
            spec.shard = meta.shard.clone();
            spec.fill_value = meta.fill_value.clone();
            let doc = spec.to_metadata(store.format()).expect("metadata");
            out.write_array_meta(&a.path, &doc, &a.meta.attrs)
                .expect("write metadata");
            let array = out.writable_array(&a.path).expect("open output");
            chunks.par_iter().for_each(|(idx, bytes)| {
                array.store_chunk(idx, bytes.clone()).expect("write chunk");
            });
        }
        best_write = best_write.min(start.elapsed().as_secs_f64());
    }
    let mib = total_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}",
        serde_json::json!({
            "tool": "anncat",
            "store": store_path,
            "element": element,
            "mib": mib,
            "read_s": best_read,
            "write_s": best_write,
            "read_mib_s": mib / best_read,
            "write_mib_s": mib / best_write,
        })
    );
}
