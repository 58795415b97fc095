//! The worker crate's error type: one variant per kind of failure, each
//! rendering as one line.

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Transport failure.
    #[error(transparent)]
    Net(#[from] anncat_net::NetError),
    /// A configuration value is not usable.
    #[error("invalid option: {0}")]
    Config(String),
    /// The operating system refused what the worker needs (a runtime, a
    /// thread, a socket address).
    #[error("cannot {what}: {reason}")]
    System {
        /// What was being done ("start a task thread").
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The scheduler named by the cluster file cannot be reached.
    #[error("cannot reach the scheduler at {address}: {reason}")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// Why the connection failed.
        reason: String,
    },
    /// The scheduler refused this worker.
    #[error("the scheduler refused this worker: {0}")]
    Refused(String),
    /// The scheduler went away.
    #[error("lost the scheduler: {0}")]
    SchedulerLost(String),
}

impl WorkerError {
    /// A failure of the operating system while doing `what`.
    pub fn system(what: &'static str, reason: impl std::fmt::Display) -> WorkerError {
        WorkerError::System {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Result with [`WorkerError`].
pub type Result<T> = std::result::Result<T, WorkerError>;
