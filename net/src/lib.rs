//! `anncat-net`: the transport shared by the scheduler, workers and clients.
//!
//! Every connection is QUIC with TLS 1.3. Each server (the scheduler, every
//! worker) makes a fresh self-signed certificate; callers pin it (the
//! scheduler's comes from the cluster file, a worker's from the scheduler),
//! so there is no certificate authority to trust. The first frame on a
//! connection is a [`Hello`](anncat_exec::protocol::Hello) carrying the
//! protocol version and the cluster secret; frames are length-prefixed
//! bincode with a per-stream size limit checked before anything is allocated.

pub mod cluster_file;
pub mod error;
pub mod frame;
pub mod hello;
pub mod tls;

pub use cluster_file::ClusterFile;
pub use error::{NetError, Result};
pub use frame::{FrameReader, FrameWriter, read_frame, write_frame};
pub use tls::{Identity, TransportTuning};
