//! The worker crate's error type.

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Transport failure.
    #[error(transparent)]
    Net(#[from] anncat_net::NetError),
    /// Bad configuration or startup failure.
    #[error("{0}")]
    Setup(String),
    /// The scheduler refused this worker.
    #[error("the scheduler refused this worker: {0}")]
    Refused(String),
    /// The scheduler went away.
    #[error("lost the scheduler: {0}")]
    SchedulerLost(String),
}

/// Result with [`WorkerError`].
pub type Result<T> = std::result::Result<T, WorkerError>;
