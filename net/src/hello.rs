//! The opening exchange on a connection: the caller opens a stream and sends
//! a [`Hello`]; the server answers [`Welcome`]. The server reads the hello
//! with a small frame limit, so an unauthenticated peer can make it allocate
//! at most [`HELLO_MAX_BYTES`](crate::frame::HELLO_MAX_BYTES).

use std::time::Duration;

use anncat_exec::protocol::{CloseCode, Hello, Welcome};
use quinn::Connection;

use crate::error::{NetError, Result};
use crate::frame::{FrameReader, FrameWriter, HELLO_MAX_BYTES, read_frame, write_frame};

/// How long a server waits for the hello, and a caller for the answer.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the control stream, says hello and returns the granted id and the
/// stream (frames over `max` bytes from the server are errors).
pub async fn say_hello(
    conn: &Connection,
    hello: &Hello,
    max: usize,
) -> Result<(u64, FrameWriter, FrameReader)> {
    let exchange = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| NetError::Closed(e.to_string()))?;
        write_frame(&mut send, hello).await?;
        let welcome: Option<Welcome> = read_frame(&mut recv, HELLO_MAX_BYTES).await?;
        match welcome {
            Some(Welcome::Accepted { id }) => {
                Ok((id, FrameWriter::new(send), FrameReader::new(recv, max)))
            }
            Some(Welcome::Refused { reason }) => Err(NetError::Refused(reason)),
            None => Err(NetError::Closed(
                "the server closed the connection during the hello".into(),
            )),
        }
    };
    tokio::time::timeout(HELLO_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            conn.close(CloseCode::BadHello.code().into(), b"no welcome");
            NetError::Closed(format!(
                "no answer to the hello within {} s",
                HELLO_TIMEOUT.as_secs()
            ))
        })?
}

/// A caller whose hello has been read but not answered yet.
#[derive(Debug)]
pub struct PendingHello {
    /// What the caller said.
    pub hello: Hello,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

/// Accepts the control stream of a new connection and reads its hello.
pub async fn read_hello(conn: &Connection) -> Result<PendingHello> {
    let accept = async {
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| NetError::Closed(e.to_string()))?;
        let hello: Option<Hello> = read_frame(&mut recv, HELLO_MAX_BYTES).await?;
        let hello = hello.ok_or_else(|| NetError::Closed("no hello".into()))?;
        Ok(PendingHello { hello, send, recv })
    };
    tokio::time::timeout(HELLO_TIMEOUT, accept)
        .await
        .map_err(|_| NetError::Closed("no hello within 10 s".into()))?
}

impl PendingHello {
    /// Accepts the caller as `id`; returns the control stream (frames over
    /// `max` bytes from the caller are errors).
    pub async fn accept(mut self, id: u64, max: usize) -> Result<(FrameWriter, FrameReader)> {
        write_frame(&mut self.send, &Welcome::Accepted { id }).await?;
        Ok((
            FrameWriter::new(self.send),
            FrameReader::new(self.recv, max),
        ))
    }

    /// Refuses the caller with `reason` and closes the connection.
    pub async fn refuse(mut self, conn: &Connection, reason: &str) {
        let _ = write_frame(
            &mut self.send,
            &Welcome::Refused {
                reason: reason.to_string(),
            },
        )
        .await;
        let _ = self.send.finish();
        // Give the refusal time to arrive before the connection goes.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.send.stopped()).await;
        conn.close(CloseCode::BadHello.code().into(), b"refused");
    }
}
