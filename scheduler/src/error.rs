//! The scheduler crate's error type: one variant per kind of failure, each
//! rendering as one line.

/// What can go wrong running a scheduler or a client.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// Transport failure.
    #[error(transparent)]
    Net(#[from] anncat_net::NetError),
    /// Core failure (cluster file, graph).
    #[error(transparent)]
    Core(#[from] anncat_exec::Error),
    /// A configuration value is not usable.
    #[error("invalid option: {0}")]
    Config(String),
    /// The operating system refused what the scheduler needs (a runtime, a
    /// thread, a socket address, randomness).
    #[error("cannot {what}: {reason}")]
    System {
        /// What was being done ("start the scheduler thread").
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The scheduler named by a cluster file cannot be reached.
    #[error("cannot reach the scheduler at {address}: {reason}")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// Why the connection failed.
        reason: String,
    },
    /// The scheduler turned this client away (wrong secret, version).
    #[error("the scheduler at {address} refused this client: {reason}")]
    Refused {
        /// The scheduler's address.
        address: String,
        /// The scheduler's reason.
        reason: String,
    },
    /// The job failed; the message names the task and its cause.
    #[error("{0}")]
    Job(String),
    /// The connection to the scheduler was lost (the scheduler died or the
    /// network failed); a journaled run can be resumed.
    #[error("lost the connection to the scheduler: {0}")]
    Lost(String),
}

impl SchedulerError {
    /// A failure of the operating system while doing `what`.
    pub fn system(what: &'static str, reason: impl std::fmt::Display) -> SchedulerError {
        SchedulerError::System {
            what,
            reason: reason.to_string(),
        }
    }
}

/// Result with [`SchedulerError`].
pub type Result<T> = std::result::Result<T, SchedulerError>;
