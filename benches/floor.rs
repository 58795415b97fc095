//! The floor of a concatenation: the time to read, decode, encode and
//! write every byte of the inputs' matrix once, with no concatenation at all.
//!
//! `cargo bench --bench floor -- ELEMENT STORE...` streams every chunk of
//! every array of ELEMENT (a dense array, or a sparse group's data /
//! indices / indptr) of each input through decode and encode with the
//! input's own codecs and chunk layout into a scratch store, on as many
//! threads as the machine has cores, and prints one JSON line: decoded MiB
//! and seconds. `benches/compare.py` reports each case's anncat time as a
//! multiple of this floor.

use std::path::Path;
use std::time::Instant;

use anncat_core::anndata::OutputStore;
use anncat_core::anndata::layout::ArraySpec;
use anncat_core::anndata::store::{NodeKind, Store};
use anncat_core::anndata::{Element, read_tree};
use rayon::prelude::*;
use zarrs::array::ArrayBytes;

/// Every array under `e` (itself, when it is one).
fn arrays_of(e: &Element) -> Vec<&Element> {
    let mut out = Vec::new();
    e.walk(&mut |n| {
        if n.array().is_some() {
            out.push(n);
        }
    });
    out
}

/// Chunk coordinates of a grid, in order.
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

/// Decoded size of one chunk.
fn byte_len(b: &ArrayBytes<'_>) -> u64 {
    match b {
        ArrayBytes::Fixed(raw) => raw.len() as u64,
        ArrayBytes::Variable(v) => v.bytes().len() as u64,
        _ => 0,
    }
}

/// Streams every chunk of `element` in `input` into `out`; returns the
/// decoded bytes.
fn copy_element(input: &Path, element: &str, out: &OutputStore) -> u64 {
    let store = Store::open(input).expect("open input");
    let tree = read_tree(&store).expect("read input");
    let target = tree
        .walk_find(element)
        .unwrap_or_else(|| panic!("{}: no element {element}", input.display()));
    let mut total = 0;
    for a in arrays_of(target) {
        let NodeKind::Array(meta) = &a.meta.kind else {
            continue;
        };
        let mut spec = ArraySpec::new(meta.shape.clone(), meta.dtype.clone(), meta.chunks.clone());
        spec.shard = meta.shard.clone();
        spec.fill_value = meta.fill_value.clone();
        let doc = spec.to_metadata(store.format()).expect("metadata");
        out.write_array_meta(&a.path, &doc, &a.meta.attrs)
            .expect("write metadata");
        let from = store.array(&a.path).expect("open input array");
        let to = out.writable_array(&a.path).expect("open output array");
        total += chunk_indices(from.chunk_grid_shape())
            .into_par_iter()
            .map(|idx| {
                let bytes: ArrayBytes<'static> = from.retrieve_chunk(&idx).expect("read chunk");
                let n = byte_len(&bytes);
                to.store_chunk(&idx, bytes).expect("write chunk");
                n
            })
            .sum::<u64>();
    }
    total
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [element, inputs @ ..] = args.as_slice() else {
        eprintln!("usage: floor ELEMENT STORE...");
        std::process::exit(2);
    };
    if inputs.is_empty() {
        eprintln!("usage: floor ELEMENT STORE...");
        std::process::exit(2);
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let mut bytes = 0;
    for (i, input) in inputs.iter().enumerate() {
        let probe = Store::open(Path::new(input)).expect("open input");
        let out = OutputStore::create(&scratch.path().join(format!("{i}.zarr")), probe.format())
            .expect("create scratch store");
        bytes += copy_element(Path::new(input), element, &out);
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "element": element,
            "inputs": inputs.len(),
            "mib": bytes as f64 / (1024.0 * 1024.0),
            "seconds": seconds,
        })
    );
}
