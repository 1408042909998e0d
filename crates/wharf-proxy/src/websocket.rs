//! A websocket joined through an address: bytes go both ways as they come, but the
//! instance's side is followed frame by frame, so that when the instance leaves the
//! rotation (it is drained) the client gets a close frame (1001, going away) between two
//! frames, not a cut connection, and may reconnect to another instance at once.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Close, status 1001 ("going away"), unmasked as a server sends it.
const GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xE9];
/// How long a frame in flight may take to end once the instance leaves.
const FRAME_LIMIT: Duration = Duration::from_secs(2);
/// How long the client may take to answer the close (its answer goes to the instance).
const CLOSE_LIMIT: Duration = Duration::from_secs(1);

/// Where the instance's stream is: how much of the current frame is still to come, and
/// the start of a header not complete yet.
#[derive(Default)]
pub(crate) struct Frames {
    remaining: u64,
    header: Vec<u8>,
}

impl Frames {
    /// Whether the bytes so far end on a frame boundary.
    pub(crate) fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.header.is_empty()
    }

    /// Follows `bytes` of the stream.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(total) = frame_length(&self.header) {
                self.header.clear();
                self.remaining = total;
            }
        }
    }
}

/// The payload length (plus mask key) a complete header announces, once `header` holds
/// all of it.
fn frame_length(header: &[u8]) -> Option<u64> {
    let second = *header.get(1)?;
    let masked = second & 0x80 != 0;
    let (len, used) = match second & 0x7F {
        126 => (
            u64::from(u16::from_be_bytes([*header.get(2)?, *header.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = header.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked { 4 } else { 0 };
    // Complete once the mask key, if any, is there too.
    (header.len() == used + mask).then_some(len)
}

/// Joins `client` and `backend` until either closes or `leaving` is cancelled.
pub(crate) async fn join<C, B>(client: C, backend: B, leaving: CancellationToken)
where
    C: AsyncRead + AsyncWrite + Unpin + Send,
    B: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_backend, mut to_backend) = tokio::io::split(backend);
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_backend).await;
        let _ = to_backend.shutdown().await;
    };
    let downstream = async {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut left_at = None;
        loop {
            if left_at.is_some() && frames.at_boundary() {
                let _ = to_client.write_all(&GOING_AWAY).await;
                let _ = to_client.flush().await;
                return true;
            }
            let read = match left_at {
                Some(at) => {
                    let deadline = tokio::time::Instant::from_std(at) + FRAME_LIMIT;
                    match tokio::time::timeout_at(deadline, from_backend.read(&mut buf)).await {
                        Ok(r) => r,
                        Err(_) => return false,
                    }
                }
                None => tokio::select! {
                    r = from_backend.read(&mut buf) => r,
                    _ = leaving.cancelled() => {
                        left_at = Some(std::time::Instant::now());
                        continue;
                    }
                },
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    let _ = to_client.shutdown().await;
                    return false;
                }
                Ok(n) => n,
            };
            frames.feed(&buf[..n]);
            if to_client.write_all(&buf[..n]).await.is_err() {
                return false;
            }
        }
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        _ = &mut upstream => {}
        closed = &mut downstream => {
            if closed {
                // The client's answer to the close reaches the instance, if it comes.
                let _ = tokio::time::timeout(CLOSE_LIMIT, upstream).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: usize) -> Vec<u8> {
        let mut f = vec![0x82];
        match payload {
            0..=125 => f.push(payload as u8),
            126..=65535 => {
                f.push(126);
                f.extend((payload as u16).to_be_bytes());
            }
            _ => {
                f.push(127);
                f.extend((payload as u64).to_be_bytes());
            }
        }
        f.extend(std::iter::repeat_n(7u8, payload));
        f
    }

    #[test]
    fn frame_boundaries_are_found_whatever_the_reads() {
        let stream: Vec<u8> = [frame(5), frame(300), frame(70_000), frame(0)].concat();
        let ends: Vec<usize> = [5 + 2, 300 + 4, 70_000 + 10, 2]
            .iter()
            .scan(0, |sum, n| {
                *sum += n;
                Some(*sum)
            })
            .collect();
        for chunk in [1, 3, 7, 1000, stream.len()] {
            let mut frames = Frames::default();
            let mut at = 0;
            for piece in stream.chunks(chunk) {
                frames.feed(piece);
                at += piece.len();
                assert_eq!(
                    frames.at_boundary(),
                    ends.contains(&at),
                    "chunk {chunk}, at {at}"
                );
            }
        }
    }

    #[test]
    fn a_masked_header_counts_its_key() {
        let mut frames = Frames::default();
        frames.feed(&[0x81, 0x83, 1, 2, 3]);
        assert!(!frames.at_boundary(), "a byte of the key is missing");
        frames.feed(&[4, b'a', b'b']);
        assert!(!frames.at_boundary());
        frames.feed(b"c");
        assert!(frames.at_boundary());
    }
}
