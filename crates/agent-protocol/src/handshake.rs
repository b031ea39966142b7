//! Where an HTTP/2 connection starts on a virtio-serial port.
//!
//! A virtio-serial port is one byte stream that outlives host connections: when a daemon restarts, bytes of the
//! old HTTP/2 connection may still sit in the guest's port buffer, and the guest may not have noticed the old
//! host leave before the new one arrives (its old HTTP/2 session may even swallow the new host's first bytes).
//! And a host must never give up on a connection and open another: QEMU's socket chardev serves one client at a
//! time and notices a closed client only when the guest reads, so abandoned connections queue up in front of
//! the next one. Hence, on one connection:
//!
//! 1. the host sends `HELLO(nonce)` and repeats it every half second until it reads `READY(nonce)`;
//! 2. the agent skips everything up to a `HELLO` and answers `READY` with its nonce;
//! 3. the host sends `START(nonce)` and speaks HTTP/2; the agent skips everything up to that `START` (repeated
//!    `HELLO`s included), then speaks HTTP/2.
//!
//! Each side thus starts HTTP/2 exactly where the other does, whatever came before. Real connections (vsock,
//! unix sockets to an agent run on the host) need none of this.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Every marker starts with these bytes, then a kind byte and a nonce.
pub const MAGIC: &[u8] = b"\0husk-agent-v1:";
/// Length of the nonce.
pub const NONCE_LEN: usize = 16;
/// How often the host repeats its `HELLO`.
pub const HELLO_INTERVAL: Duration = Duration::from_millis(200);

/// The kind of a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Host: a new connection starts.
    Hello,
    /// Agent: seen, ready.
    Ready,
    /// Host: HTTP/2 starts right after this marker.
    Start,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Hello => b'H',
            Kind::Ready => b'R',
            Kind::Start => b'S',
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            b'H' => Some(Kind::Hello),
            b'R' => Some(Kind::Ready),
            b'S' => Some(Kind::Start),
            _ => None,
        }
    }
}

/// A marker's bytes.
pub fn marker(kind: Kind, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut m = MAGIC.to_vec();
    m.push(kind.byte());
    m.extend_from_slice(nonce);
    m
}

/// Reads until a whole marker has been seen and returns it. Reads one byte at a time so that nothing after the
/// marker is consumed (HTTP/2 may start right there).
pub async fn read_marker<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<(Kind, [u8; NONCE_LEN])> {
    let mut matched = 0;
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other side went away during the handshake",
            ));
        }
        if matched == MAGIC.len() {
            if let Some(kind) = Kind::from_byte(byte[0]) {
                let mut nonce = [0u8; NONCE_LEN];
                s.read_exact(&mut nonce).await?;
                return Ok((kind, nonce));
            }
            matched = 0;
        }
        // MAGIC[0] occurs nowhere else in MAGIC, so a mismatch can only restart a match at that byte.
        matched = if byte[0] == MAGIC[matched] {
            matched + 1
        } else if byte[0] == MAGIC[0] {
            1
        } else {
            0
        };
    }
}

/// Host side: runs the handshake on a fresh connection; HTTP/2 may start when it returns.
pub async fn host<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let hello = marker(Kind::Hello, &nonce);
    {
        let (mut rd, mut wr) = tokio::io::split(&mut *s);
        let wait_ready = async {
            loop {
                let (kind, n) = read_marker(&mut rd).await?;
                if kind == Kind::Ready && n == nonce {
                    return Ok::<(), io::Error>(());
                }
            }
        };
        let repeat_hello = async {
            loop {
                wr.write_all(&hello).await?;
                wr.flush().await?;
                tokio::time::sleep(HELLO_INTERVAL).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        };
        tokio::select! {
            r = wait_ready => r?,
            r = repeat_hello => r?,
        }
    }
    s.write_all(&marker(Kind::Start, &nonce)).await?;
    s.flush().await
}

/// Agent side: runs the handshake with whichever host is connecting; HTTP/2 may start when it returns.
pub async fn agent<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    let mut current: Option<[u8; NONCE_LEN]> = None;
    loop {
        match read_marker(s).await? {
            (Kind::Hello, n) if current != Some(n) => {
                s.write_all(&marker(Kind::Ready, &n)).await?;
                s.flush().await?;
                current = Some(n);
            }
            (Kind::Start, n) if current == Some(n) => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_sides_skip_stale_bytes_and_repeated_hellos() {
        let (mut h, mut a) = tokio::io::duplex(4096);
        // Leftovers of an old connection in both directions, including a READY with another nonce.
        a.write_all(
            &[
                b"old h2 frames".as_slice(),
                &marker(Kind::Ready, &[1; NONCE_LEN]),
            ]
            .concat(),
        )
        .await
        .unwrap();
        h.write_all(b"\0\0\0garbage\0husk-agent-v").await.unwrap();
        let agent_side = tokio::spawn(async move {
            // The agent is slow to come up: the host repeats its HELLO meanwhile.
            tokio::time::sleep(HELLO_INTERVAL * 3).await;
            agent(&mut a).await.unwrap();
            let mut after = [0u8; 2];
            a.read_exact(&mut after).await.unwrap();
            assert_eq!(
                &after, b"h2",
                "the agent starts right after START, past the repeated HELLOs"
            );
            a.write_all(b"ok").await.unwrap();
            a
        });
        host(&mut h).await.unwrap();
        h.write_all(b"h2").await.unwrap();
        let mut after = [0u8; 2];
        h.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"ok");
        agent_side.await.unwrap();
    }

    #[tokio::test]
    async fn a_hello_swallowed_by_an_old_session_is_repeated() {
        let (mut h, mut a) = tokio::io::duplex(4096);
        let agent_side = tokio::spawn(async move {
            // An old HTTP/2 session reads (and loses) the first bytes the new host sends.
            let mut lost = vec![0u8; MAGIC.len() + 1 + NONCE_LEN];
            a.read_exact(&mut lost).await.unwrap();
            agent(&mut a).await.unwrap();
        });
        tokio::time::timeout(HELLO_INTERVAL * 4, host(&mut h))
            .await
            .unwrap()
            .unwrap();
        agent_side.await.unwrap();
    }

    #[tokio::test]
    async fn eof_is_an_error_and_unknown_kinds_are_skipped() {
        let (mut h, a) = tokio::io::duplex(64);
        drop(a);
        assert_eq!(
            read_marker(&mut h).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut input = [MAGIC, b"X", MAGIC, MAGIC, b"S"].concat();
        input.extend_from_slice(&[7u8; NONCE_LEN]);
        let mut r = input.as_slice();
        assert_eq!(
            read_marker(&mut r).await.unwrap(),
            (Kind::Start, [7u8; NONCE_LEN])
        );
    }
}
