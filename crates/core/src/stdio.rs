//! The stdio stream protocol: how a process's stdin, stdout, stderr, terminal size and exit code travel over
//! one byte stream (CLI <-> daemon <-> shim or VM agent).
//!
//! Every message is a frame with Docker's 8-byte header: one byte of frame type, three zero bytes, then the
//! payload length as a big-endian `u32`. Docker's stream types 0/1/2 (stdin/stdout/stderr) keep their numbers, so a
//! Docker-style demultiplexer reads our output unchanged; husk adds types for the exit code, terminal size, the
//! end of stdin and errors. With a terminal, all output arrives as `Stdout`.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload accepted in one frame (a guard against corrupt streams).
pub const MAX_FRAME: usize = 1 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Bytes for the process's stdin (client to process).
    Stdin = 0,
    /// Bytes the process wrote to stdout (or to its terminal).
    Stdout = 1,
    /// Bytes the process wrote to stderr.
    Stderr = 2,
    /// The process exited; payload: exit code as big-endian `i32`. Last frame of an exec or attach stream.
    Exit = 3,
    /// New terminal size; payload: rows and columns as big-endian `u16`s (client to process).
    Resize = 4,
    /// The client has no more input: close the process's stdin.
    CloseStdin = 5,
    /// The stream failed; payload: a UTF-8 message. Last frame.
    Error = 6,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Exit,
            4 => FrameKind::Resize,
            5 => FrameKind::CloseStdin,
            6 => FrameKind::Error,
            _ => return None,
        })
    }
}

/// One message of the stdio protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Input for the process.
    Stdin(Vec<u8>),
    /// Standard output (or terminal output).
    Stdout(Vec<u8>),
    /// Standard error.
    Stderr(Vec<u8>),
    /// The process exited with this code.
    Exit(i32),
    /// The terminal is now `rows` x `cols`.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// No more input.
    CloseStdin,
    /// The stream failed with this message.
    Error(String),
}

impl Frame {
    /// Encodes the frame: header and payload.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (FrameKind, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Stdin(b) => (FrameKind::Stdin, b.into()),
            Frame::Stdout(b) => (FrameKind::Stdout, b.into()),
            Frame::Stderr(b) => (FrameKind::Stderr, b.into()),
            Frame::Exit(code) => (FrameKind::Exit, code.to_be_bytes().to_vec().into()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (FrameKind::Resize, p.into())
            }
            Frame::CloseStdin => (FrameKind::CloseStdin, Vec::new().into()),
            Frame::Error(m) => (FrameKind::Error, m.as_bytes().into()),
        };
        let mut out = Vec::with_capacity(8 + payload.len());
        out.push(kind as u8);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Builds a frame from its kind and payload.
    pub fn decode(kind: u8, payload: Vec<u8>) -> io::Result<Frame> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad stdio frame: {what}"),
            )
        };
        let kind = FrameKind::from_u8(kind).ok_or_else(|| bad("unknown type"))?;
        Ok(match kind {
            FrameKind::Stdin => Frame::Stdin(payload),
            FrameKind::Stdout => Frame::Stdout(payload),
            FrameKind::Stderr => Frame::Stderr(payload),
            FrameKind::Exit => {
                let b: [u8; 4] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad("exit payload is not 4 bytes"))?;
                Frame::Exit(i32::from_be_bytes(b))
            }
            FrameKind::Resize => {
                if payload.len() != 4 {
                    return Err(bad("resize payload is not 4 bytes"));
                }
                Frame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }
            }
            FrameKind::CloseStdin => Frame::CloseStdin,
            FrameKind::Error => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
        })
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 8];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stdio stream ended inside a frame header",
                ))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stdio frame of {len} bytes is over the limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Frame::decode(header[0], payload).map(Some)
}

/// Writes one frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    frame: &Frame,
) -> io::Result<()> {
    w.write_all(&frame.encode()).await?;
    w.flush().await
}

/// A bidirectional byte stream carrying stdio frames.
pub trait StdioStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> StdioStream for T {}

/// A boxed [`StdioStream`], as drivers hand them out.
pub type BoxStdio = Box<dyn StdioStream>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let frames = vec![
            Frame::Stdout(b"hello\n".to_vec()),
            Frame::Stderr(vec![]),
            Frame::Stdin(vec![0, 1, 2]),
            Frame::Resize { rows: 24, cols: 80 },
            Frame::CloseStdin,
            Frame::Error("boom".into()),
            Frame::Exit(-1),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            write_frame(&mut buf, f).await.unwrap();
        }
        let mut r = buf.as_slice();
        let mut back = Vec::new();
        while let Some(f) = read_frame(&mut r).await.unwrap() {
            back.push(f);
        }
        assert_eq!(back, frames);
    }

    #[test]
    fn header_is_dockers() {
        let b = Frame::Stderr(b"ab".to_vec()).encode();
        assert_eq!(&b[..8], &[2, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[tokio::test]
    async fn truncated_and_oversized_frames_are_errors() {
        let mut r: &[u8] = &[1, 0, 0];
        assert!(read_frame(&mut r).await.is_err());
        let mut big = vec![1u8, 0, 0, 0];
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        let mut r = big.as_slice();
        assert!(read_frame(&mut r).await.is_err());
        let mut r: &[u8] = &[9, 0, 0, 0, 0, 0, 0, 0];
        assert!(read_frame(&mut r).await.is_err());
    }
}
