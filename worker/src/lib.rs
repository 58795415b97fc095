//! `anncat-worker`: a worker process of anncat's distributed executor.
//!
//! [`runtime::run_worker`] joins a cluster and runs tasks with the kernels
//! of a [`KernelRegistry`](anncat_exec::kernel::KernelRegistry) under a
//! memory limit enforced by the [`governor`]. A worker binary with its own
//! kernels is a few lines:
//!
//! ```no_run
//! use anncat_exec::kernel::KernelRegistry;
//! use anncat_net::ClusterFile;
//! use anncat_worker::{WorkerConfig, run_worker};
//!
//! let mut kernels = KernelRegistry::new();
//! kernels.register("double", |args: &[u8], _: &[std::sync::Arc<Vec<u8>>]| {
//!     Ok(args.iter().map(|b| b.wrapping_mul(2)).collect())
//! });
//! let cluster = ClusterFile::read("cluster.json".as_ref()).expect("cluster file");
//! run_worker(WorkerConfig::new(cluster, 512 << 20), kernels).expect("worker");
//! ```

pub mod error;
pub mod governor;
pub mod queue;
pub mod runtime;

pub use error::{Result, WorkerError};
pub use governor::{CountingAllocator, MemoryGovernor};
pub use runtime::{WorkerConfig, run_worker};
