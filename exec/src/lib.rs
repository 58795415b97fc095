//! anncat's executor, on its own: task graphs ([`graph`]), kernels by
//! name ([`kernel`]), the in-process executor ([`executor`]), the run
//! journal that makes runs resumable ([`journal`]), the messages a
//! scheduler, its workers and clients exchange ([`protocol`]), and the
//! directories a process may write ([`write_roots`]). It depends on serde
//! and bincode only: the scheduler, the worker runtime and a user's own
//! worker binary link neither HDF5 nor zarr through it.

pub mod error;
pub mod executor;
pub mod graph;
pub mod journal;
pub mod kernel;
pub mod protocol;
pub mod write_roots;

pub use error::{Error, Result};
