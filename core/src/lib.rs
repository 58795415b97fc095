//! `anncat-core`: the AnnData element model and zarr I/O (v2 and v3), the
//! conversion and inspection of stores, and (as the project grows) the concat
//! planner and the task graph. This crate opens no sockets.

pub mod anndata;
pub mod concat;
pub mod convert;
pub mod error;
pub mod executor;
pub mod graph;
pub mod inspect;
pub mod journal;
pub mod kernel;
pub mod output;
pub mod output_lock;
pub mod protocol;

pub use error::{Error, Result};
