//! `anncat-worker`: the worker process of anncat's distributed executor
//! (QUIC client, task executor, memory governor, data store).
//!
//! Not built yet: the executor arrives with the distributed-executor issue.
//! Until then this crate only reserves its place in the workspace and
//! re-exports the core crate it will build on.

pub use anncat_core as core;
