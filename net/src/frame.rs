//! Length-prefixed frames: a little-endian `u32` length, then that many bytes
//! of bincode. The reader checks the length against its limit before it
//! allocates, so a peer cannot make us reserve memory it never sends.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{NetError, Result};

/// Largest hello frame a server reads from a caller it does not know yet.
pub const HELLO_MAX_BYTES: usize = 64 * 1024;

/// Default largest control frame (task batches, reports).
pub const CONTROL_MAX_BYTES: usize = 64 * 1024 * 1024;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    bincode::serde::encode_into_std_write(value, &mut buf, bincode::config::standard())
        .map_err(|e| NetError::Malformed(e.to_string()))?;
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| NetError::Malformed("frame longer than 4 GiB".into()))?;
    buf[..4].copy_from_slice(&len.to_le_bytes());
    Ok(buf)
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<()> {
    let buf = encode(value)?;
    send.write_all(&buf)
        .await
        .map_err(|e| NetError::Closed(e.to_string()))
}

/// Reads one frame of at most `max` bytes; `Ok(None)` at a clean end of stream.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<T>> {
    let mut header = [0u8; 4];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(NetError::Closed(e.to_string())),
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(NetError::FrameTooLarge {
            len: len as u64,
            max: max as u64,
        });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| NetError::Closed(e.to_string()))?;
    let (value, used) = bincode::serde::decode_from_slice(&body, bincode::config::standard())
        .map_err(|e| NetError::Malformed(e.to_string()))?;
    if used != len {
        return Err(NetError::Malformed("trailing bytes in frame".into()));
    }
    Ok(Some(value))
}

/// The receiving half of a framed stream, with its limit.
#[derive(Debug)]
pub struct FrameReader {
    recv: quinn::RecvStream,
    max: usize,
}

impl FrameReader {
    /// Wraps a stream; frames over `max` bytes are errors.
    pub fn new(recv: quinn::RecvStream, max: usize) -> Self {
        Self { recv, max }
    }

    /// The next frame, or `None` at the end of the stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        read_frame(&mut self.recv, self.max).await
    }
}

/// The sending half of a framed stream.
#[derive(Debug)]
pub struct FrameWriter {
    send: quinn::SendStream,
}

impl FrameWriter {
    /// Wraps a stream.
    pub fn new(send: quinn::SendStream) -> Self {
        Self { send }
    }

    /// Sends one frame.
    pub async fn send<T: Serialize>(&mut self, value: &T) -> Result<()> {
        write_frame(&mut self.send, value).await
    }

    /// Ends the stream.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_frames_carry_their_length() {
        let buf = encode(&(1u32, "abc".to_string())).expect("encode");
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len() - 4);
    }
}
