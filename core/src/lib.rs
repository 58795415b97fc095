//! `anncat-core`: the AnnData element model and zarr I/O (v2 and v3), the
//! conversion and inspection of stores, and (as the project grows) the concat
//! planner and its kernels, above the executor crate `anncat-exec` (whose
//! modules it re-exports). This crate opens no sockets.

pub mod anndata;
pub mod concat;
pub mod convert;
pub mod inspect;
pub mod output;
pub mod output_lock;
mod recent;

// The executor crate, re-exported where it used to live.
pub use anncat_exec::{error, executor, graph, journal, kernel, protocol};
pub use error::{Error, Result};
