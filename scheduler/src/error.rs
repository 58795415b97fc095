//! The scheduler crate's error type.

/// What can go wrong running a scheduler or a client.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Transport failure.
    #[error(transparent)]
    Net(#[from] anncat_net::NetError),
    /// Core failure (cluster file, graph).
    #[error(transparent)]
    Core(#[from] anncat_exec::Error),
    /// The job failed; the message names the task and its cause.
    #[error("{0}")]
    Job(String),
    /// The connection to the scheduler was lost (the scheduler died or the
    /// network failed); a journaled run can be resumed.
    #[error("lost the connection to the scheduler: {0}")]
    Lost(String),
    /// Runtime or setup failure.
    #[error("{0}")]
    Setup(String),
}

/// Result with [`SchedulerError`].
pub type Result<T> = std::result::Result<T, SchedulerError>;
