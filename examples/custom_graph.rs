//! anncat as a library: a custom kernel, a diamond-shaped graph, a local
//! cluster of two worker processes, results printed.
//!
//! This binary is also its own worker: the local cluster starts it again as
//! `custom_graph worker --cluster-file ...`, and that process runs a worker
//! with the kernels below.
//!
//! Run: `cargo run --release --example custom_graph`

use std::sync::Arc;

use anncat::{Graph, KernelRegistry, LocalCluster, LocalClusterConfig, decode, encode};

#[global_allocator]
static ALLOCATOR: anncat::worker::CountingAllocator = anncat::worker::CountingAllocator;

/// The kernels every worker of this program knows.
fn kernels() -> KernelRegistry {
    let mut k = KernelRegistry::new();
    // A source: its arguments are a list of numbers.
    k.register("numbers", |args: &[u8], _: &[Arc<Vec<u8>>]| {
        let v: Vec<u64> = decode(args)?;
        encode(&v)
    });
    // The custom kernel: squares every number of its one input.
    k.register("square", |_: &[u8], inputs: &[Arc<Vec<u8>>]| {
        let v: Vec<u64> = decode(&inputs[0])?;
        encode(&v.iter().map(|x| x * x).collect::<Vec<u64>>())
    });
    // Adds its inputs element-wise, scaled by its argument.
    k.register("add", |args: &[u8], inputs: &[Arc<Vec<u8>>]| {
        let scale: u64 = decode(args)?;
        let mut total = Vec::new();
        for input in inputs {
            let v: Vec<u64> = decode(input)?;
            total.resize(v.len().max(total.len()), 0);
            for (t, x) in total.iter_mut().zip(v) {
                *t += x * scale;
            }
        }
        encode(&total)
    });
    k
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        anncat::worker::governor::mark_installed();
        return anncat::cli::worker_main(&args[1..], kernels());
    }
    let cluster = LocalCluster::start(LocalClusterConfig {
        workers: 2,
        memory_limit: 128 << 20,
        ..LocalClusterConfig::default()
    })?;
    // numbers -> (square, add x10) -> add
    let mut g = Graph::new();
    let top = g.add("numbers", &vec![1u64, 2, 3], vec![], 1 << 20, "numbers")?;
    let left = g.add("square", &(), vec![top], 1 << 20, "square")?;
    let right = g.add("add", &10u64, vec![top], 1 << 20, "times ten")?;
    let bottom = g.add("add", &1u64, vec![left, right], 1 << 20, "sum")?;
    let mut client = cluster.client()?;
    let result = client.run(&g)?;
    let sum: Vec<u64> = decode(&result.outputs[&bottom])?;
    println!("diamond over [1, 2, 3]: x^2 + 10x = {sum:?}");
    for w in &result.workers {
        println!(
            "worker {} (pid {}): peak RSS {} MiB",
            w.id,
            w.pid,
            w.peak_rss >> 20
        );
    }
    anyhow::ensure!(sum == vec![11, 24, 39], "wrong result {sum:?}");
    cluster.shutdown();
    Ok(())
}
