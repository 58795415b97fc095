//! `anncat`: out-of-core concatenation of AnnData zarr stores on a
//! Dask-like distributed task-graph executor.
//!
//! The facade over the workspace's crates:
//! - [`exec`]: task graphs, kernels, the [`Executor`] trait with the
//!   in-process [`InProcess`], the journal and the wire messages (serde and
//!   bincode only);
//! - [`core`]: the AnnData model, zarr and h5ad I/O, the concat planner and
//!   its kernels (no sockets; re-exports `exec`'s modules);
//! - [`scheduler`]: the scheduling state machine, the QUIC scheduler and the
//!   [`Client`];
//! - [`worker`]: worker processes with a memory governor;
//! - [`LocalCluster`]: a scheduler plus worker processes on this machine;
//! - [`run_concat`]: `anncat concat` on any executor, journaled and resumable.
//!
//! Submitting your own graph:
//!
//! ```no_run
//! use anncat::{Graph, LocalCluster, LocalClusterConfig};
//! let cluster = LocalCluster::start(LocalClusterConfig::default()).expect("cluster");
//! let mut g = Graph::new();
//! let a = g.add(anncat::core::kernel::CONST_KERNEL, &7u64, vec![], 1 << 10, "seven").expect("add");
//! let result = cluster.client().expect("client").run(&g).expect("run");
//! assert!(result.outputs.contains_key(&a));
//! ```

pub mod args;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod distributed;
pub mod progress;
pub mod report;
pub mod report_png;

pub use anncat_core as core;
pub use anncat_core::graph::{Graph, TaskId, decode, encode};
pub use anncat_core::kernel::{Kernel, KernelRegistry};
pub use anncat_exec as exec;
pub use anncat_exec::executor::{Executor, InProcess, JobResult, LocalExecutor, MemoryBudget};
pub use anncat_scheduler as scheduler;
pub use anncat_scheduler::Client;
pub use anncat_worker as worker;
pub use cluster::{LocalCluster, LocalClusterConfig, WorkerProgram};
pub use distributed::{ClusterChoice, RunOptions, run_concat};
