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

/// Most bytes the decoding of a frame read with a limit up to
/// [`HELLO_MAX_BYTES`] may claim for its contents (strings, vectors): a
/// caller that has not authenticated yet cannot make us reserve more, even
/// by announcing a huge string inside a small frame.
const SMALL_DECODE_LIMIT_BYTES: usize = 1 << 20;

/// The same for larger frames, which only authenticated peers send (a frame
/// is at most 4 GiB; a claimed length beyond the bytes present also fails
/// once they run out).
const DECODE_LIMIT_BYTES: usize = u32::MAX as usize;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

fn small_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<SMALL_DECODE_LIMIT_BYTES>()
}

/// Encodes `value` as one frame: the length, then the bincode bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    bincode::serde::encode_into_std_write(value, &mut buf, config())
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
    let len = body_len(header, max)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| NetError::Closed(e.to_string()))?;
    if max <= HELLO_MAX_BYTES {
        decode_small_body(&body).map(Some)
    } else {
        decode_body(&body).map(Some)
    }
}

/// The body length a frame header announces, refused when over `max`.
pub fn body_len(header: [u8; 4], max: usize) -> Result<usize> {
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(NetError::FrameTooLarge {
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(len)
}

/// Decodes one frame body; every byte must be used. Never panics: any
/// byte sequence decodes to a value or to [`NetError::Malformed`].
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    finish_decode(
        bincode::serde::decode_from_slice(body, config()),
        body.len(),
    )
}

/// [`decode_body`] for frames from callers not authenticated yet: contents
/// may claim at most 1 MiB.
pub fn decode_small_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    finish_decode(
        bincode::serde::decode_from_slice(body, small_config()),
        body.len(),
    )
}

fn finish_decode<T>(
    decoded: std::result::Result<(T, usize), bincode::error::DecodeError>,
    len: usize,
) -> Result<T> {
    let (value, used) = decoded.map_err(|e| NetError::Malformed(e.to_string()))?;
    if used != len {
        return Err(NetError::Malformed("trailing bytes in frame".into()));
    }
    Ok(value)
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
    ///
    /// Not cancel-safe: a frame is two `read_exact` calls, so dropping this
    /// future half-way (as a losing `tokio::select!` branch does) loses the
    /// bytes read so far and the next read starts mid-frame. A loop that
    /// selects over frames and other events reads them through
    /// [`FrameReader::into_channel`] instead.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        read_frame(&mut self.recv, self.max).await
    }

    /// Moves the stream into a task of its own that reads frame after frame
    /// into a channel of `depth` frames: receiving from the channel is
    /// cancel-safe, so it may sit in a `tokio::select!`. The channel ends
    /// after the stream does; a read error is its last item.
    pub fn into_channel<T>(mut self, depth: usize) -> tokio::sync::mpsc::Receiver<Result<T>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(depth.max(1));
        tokio::spawn(async move {
            loop {
                let item = match self.next::<T>().await {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        rx
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
    use anncat_exec::protocol::{
        FromWorker, Hello, PeerReply, PeerRequest, ToClient, ToScheduler, ToWorker, Welcome,
    };
    use proptest::prelude::*;

    /// Decodes `bytes` as every message type of the protocol; none may
    /// panic. (The small limit keeps random length prefixes from making the
    /// test itself allocate gigabytes; the code paths are the same.)
    fn decode_all(bytes: &[u8]) {
        let _ = decode_small_body::<Hello>(bytes);
        let _ = decode_small_body::<Welcome>(bytes);
        let _ = decode_small_body::<ToWorker>(bytes);
        let _ = decode_small_body::<FromWorker>(bytes);
        let _ = decode_small_body::<ToScheduler>(bytes);
        let _ = decode_small_body::<ToClient>(bytes);
        let _ = decode_small_body::<PeerRequest>(bytes);
        let _ = decode_small_body::<PeerReply>(bytes);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Random bytes never panic the decoder.
        #[test]
        fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode_all(&bytes);
        }

        /// Valid frames with bytes flipped, cut or extended never panic and
        /// never decode with bytes left over.
        #[test]
        fn mutated_frames_never_panic(
            secret in "[a-f0-9]{0,80}",
            version in any::<u32>(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
            extra in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let hello = Hello::Client { version, secret };
            let mut body = encode(&hello).expect("encode")[4..].to_vec();
            prop_assert!(decode_body::<Hello>(&body).is_ok());
            for (at, x) in flips {
                let n = body.len();
                body[at % n] ^= x;
            }
            decode_all(&body);
            let n = body.len();
            decode_all(&body[..cut % (n + 1)]);
            body.extend(extra);
            decode_all(&body);
        }

        /// Huge announced lengths are refused before anything is allocated.
        #[test]
        fn announced_lengths_over_the_limit_are_refused(len in any::<u32>(), max in 0usize..(1 << 20)) {
            let r = body_len(len.to_le_bytes(), max);
            prop_assert_eq!(r.is_ok(), (len as usize) <= max);
        }
    }

    /// A body claiming a gigantic string or vector is refused by the
    /// decoder's limit, not by running out of memory.
    #[test]
    fn length_prefixes_inside_a_body_are_bounded() {
        // PeerReply::Data (variant 0) of 2^62 bytes, with 3 bytes present.
        let mut body = vec![0u8, 0xfd];
        body.extend((1u64 << 62).to_le_bytes());
        body.extend([1, 2, 3]);
        assert!(matches!(
            decode_body::<PeerReply>(&body),
            Err(NetError::Malformed(_))
        ));
        // 2^31 claimed, 3 present: fails when the bytes run out.
        let mut body = vec![0u8, 0xfc];
        body.extend((1u32 << 31).to_le_bytes());
        body.extend([1, 2, 3]);
        assert!(matches!(
            decode_body::<PeerReply>(&body),
            Err(NetError::Malformed(_))
        ));
    }

    #[test]
    fn encoded_frames_carry_their_length() {
        let buf = encode(&(1u32, "abc".to_string())).expect("encode");
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert_eq!(len, buf.len() - 4);
    }

    /// Frames read through [`FrameReader::into_channel`] survive a
    /// `select!` whose other branch (a 1 ms timer, as a heartbeat) wins
    /// again and again while large frames arrive in pieces: every frame
    /// comes through whole and in order.
    #[tokio::test]
    async fn a_channel_reader_loses_no_frame_to_a_select() {
        use crate::tls::{Identity, TransportTuning, client_endpoint, connect, server_endpoint};
        let id = Identity::generate(&["127.0.0.1".into()]).expect("id");
        let tuning = TransportTuning::default();
        let server = server_endpoint(([127, 0, 0, 1], 0).into(), &id, &tuning).expect("server");
        let addr = server.local_addr().expect("addr");
        const FRAMES: usize = 64;
        let sender = tokio::spawn(async move {
            let conn = server
                .accept()
                .await
                .expect("incoming")
                .await
                .expect("conn");
            let (send, _recv) = conn.accept_bi().await.expect("stream");
            let mut w = FrameWriter::new(send);
            for i in 0..FRAMES {
                w.send(&vec![i as u8; 300_000]).await.expect("send");
            }
            w.finish();
            conn.closed().await;
        });
        let client = client_endpoint().expect("client");
        let conn = connect(&client, addr, "127.0.0.1", &id.certificate, &tuning)
            .await
            .expect("connect");
        let (mut send, recv) = conn.open_bi().await.expect("open");
        send.write_all(b"").await.expect("open the stream");
        write_frame(&mut send, &0u8)
            .await
            .expect("announce the stream");
        let mut frames = FrameReader::new(recv, 1 << 20).into_channel::<Vec<u8>>(4);
        let mut timer = tokio::time::interval(std::time::Duration::from_millis(1));
        let (mut got, mut ticks) = (0usize, 0u64);
        loop {
            tokio::select! {
                f = frames.recv() => match f {
                    Some(Ok(bytes)) => {
                        assert_eq!(bytes.len(), 300_000, "frame {got}");
                        assert!(bytes.iter().all(|&b| b == got as u8), "frame {got}");
                        got += 1;
                    }
                    Some(Err(e)) => panic!("frame {got}: {e}"),
                    None => break,
                },
                _ = timer.tick() => ticks += 1,
            }
        }
        assert_eq!(got, FRAMES);
        assert!(ticks > 0);
        conn.close(
            anncat_exec::protocol::CloseCode::Shutdown.code().into(),
            b"done",
        );
        sender.abort();
    }
}
