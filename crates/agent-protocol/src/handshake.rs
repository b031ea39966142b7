//! Where an HTTP/2 connection starts on a virtio-serial port.
//!
//! A virtio-serial port is one byte stream that outlives host connections: when a daemon restarts, bytes of the
//! old HTTP/2 connection may still sit in the guest's port buffer, and the guest may not have noticed the old
//! host leave before the new one arrives (its old HTTP/2 session may even swallow the new host's first bytes).
//! And a host must never give up on a connection and open another: QEMU's socket chardev serves one client at a
//! time and notices a closed client only when the guest reads, so abandoned connections queue up in front of
//! the next one. Hence, on one connection:
//!
//! 1. the host sends `HELLO(nonce)` and repeats it every [`HELLO_INTERVAL`] until it reads `READY(nonce)`, with a
//!    new nonce now and then in case a `READY` was lost;
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

/// How many `HELLO`s the host sends with one nonce before it takes a new one.
pub const HELLOS_PER_NONCE: u32 = 10;

/// Host side: runs the handshake on a fresh connection; HTTP/2 may start when it returns.
///
/// The agent answers each nonce once (a second `READY` could land where the host already speaks HTTP/2), so a
/// `READY` lost on the port (written while the port changed hands) would leave the host repeating a nonce the
/// agent will not answer again. The host therefore takes a new nonce every [`HELLOS_PER_NONCE`] `HELLO`s and
/// waits for the `READY` of the newest: the agent answers every new nonce, in order, so a late `READY` of an older
/// one is skipped and the newest one's follows it.
pub async fn host<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<()> {
    let newest = std::sync::Mutex::new(rand::random::<[u8; NONCE_LEN]>());
    let newest_nonce = || *newest.lock().unwrap_or_else(|p| p.into_inner());
    let nonce = {
        let (mut rd, mut wr) = tokio::io::split(&mut *s);
        let wait_ready = async {
            loop {
                let (kind, n) = read_marker(&mut rd).await?;
                if kind == Kind::Ready && n == newest_nonce() {
                    return Ok::<_, io::Error>(n);
                }
            }
        };
        let repeat_hello = repeat_hellos(&mut wr, &newest);
        tokio::select! {
            r = wait_ready => r?,
            r = repeat_hello => match r? {},
        }
    };
    s.write_all(&marker(Kind::Start, &nonce)).await?;
    s.flush().await
}

/// Sends `HELLO`s every [`HELLO_INTERVAL`], with a new nonce in `newest` every [`HELLOS_PER_NONCE`]; ends only
/// on a write error.
async fn repeat_hellos<W: AsyncWrite + Unpin>(
    wr: &mut W,
    newest: &std::sync::Mutex<[u8; NONCE_LEN]>,
) -> io::Result<std::convert::Infallible> {
    let mut sent = 0u32;
    loop {
        let nonce = {
            let mut newest = newest.lock().unwrap_or_else(|p| p.into_inner());
            if sent > 0 && sent.is_multiple_of(HELLOS_PER_NONCE) {
                *newest = rand::random();
            }
            *newest
        };
        wr.write_all(&marker(Kind::Hello, &nonce)).await?;
        wr.flush().await?;
        sent = sent.wrapping_add(1);
        tokio::time::sleep(HELLO_INTERVAL).await;
    }
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

    /// A transport whose first write is lost (a `READY` written while the port changed hands).
    struct FirstWriteLost<S> {
        inner: S,
        lost: bool,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for FirstWriteLost<S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for FirstWriteLost<S> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            if !self.lost {
                self.lost = true;
                return std::task::Poll::Ready(Ok(buf.len()));
            }
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_lost_ready_is_outlived_by_a_new_nonce() {
        let (mut h, a) = tokio::io::duplex(64 * 1024);
        let agent_side = tokio::spawn(async move {
            let mut a = FirstWriteLost {
                inner: a,
                lost: false,
            };
            agent(&mut a).await.unwrap();
            let mut after = [0u8; 2];
            a.read_exact(&mut after).await.unwrap();
            assert_eq!(&after, b"h2", "the agent starts right after the START");
        });
        tokio::time::timeout(HELLO_INTERVAL * (HELLOS_PER_NONCE + 2), host(&mut h))
            .await
            .expect("the host took a new nonce and was answered")
            .unwrap();
        h.write_all(b"h2").await.unwrap();
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
