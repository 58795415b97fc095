//! `anncat-scheduler`: the scheduler of anncat's distributed executor.
//!
//! [`state`] is the I/O-free scheduling state machine; [`server`] runs it
//! behind a QUIC endpoint for workers and clients; [`client`] submits graphs
//! to a running scheduler and streams results back, over the network or,
//! in the scheduler's own process, over channels (`local_link`).

pub mod client;
pub mod error;
mod local_link;
pub mod server;
pub mod state;

pub use client::{Canceller, Client, JobResult};
pub use error::{Result, SchedulerError};
pub use server::{SchedulerHandle, ServerConfig, check_host_name, new_secret};
pub use state::{Comm, SchedulerConfig, SchedulerState};
