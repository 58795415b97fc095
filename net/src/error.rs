//! The transport's error type.

use std::net::SocketAddr;

/// What can go wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Certificate or TLS configuration problem.
    #[error("TLS: {0}")]
    Tls(String),
    /// Could not bind a local socket.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// Could not connect.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A peer announced a frame over the limit; the connection is dropped.
    #[error("peer sent a frame of {len} bytes, over the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The stream or connection ended.
    #[error("connection closed: {0}")]
    Closed(String),
    /// A frame did not decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The other side refused our hello.
    #[error("refused: {0}")]
    Refused(String),
}

/// Result with [`NetError`].
pub type Result<T> = std::result::Result<T, NetError>;
