//! Streamed uploads (`image load`, `cp` into a container): the request body as a reader, read to its end even
//! when the work on it stops early.
//!
//! A client sends an upload and reads the answer after. When the work fails at once (a full disk, a bad
//! archive, a missing directory) and the daemon answered and closed while the client was still sending, the
//! client would see a broken pipe instead of the error. So the body is fed to the reader by a task that goes
//! on reading (and dropping) what is left once the reader is gone, and a failed request is answered when that
//! task is done, or after [`DRAIN_LIMIT`].

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::task::JoinHandle;

/// How long a failed upload's answer waits for the rest of the body.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The task reading an upload's body; see [`upload`].
pub(crate) struct Drain(JoinHandle<()>);

/// An upload's body as a reader, and the task that feeds it.
pub(crate) fn upload(body: Body) -> (impl AsyncRead + Send + Unpin + 'static, Drain) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let mut data = body.into_data_stream();
    let feed = tokio::spawn(async move {
        let mut wanted = true;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(std::io::Error::other);
            let broken = chunk.is_err();
            if wanted && tx.send(chunk).await.is_err() {
                wanted = false;
            }
            if broken {
                break;
            }
        }
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (
        tokio_util::io::StreamReader::new(Box::pin(chunks)),
        Drain(feed),
    )
}

impl Drain {
    /// `result`, once the client has sent all it had when `result` is a failure (at most [`DRAIN_LIMIT`]).
    pub(crate) async fn settle<T, E>(self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            let _ = tokio::time::timeout(DRAIN_LIMIT, self.0).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn the_body_is_read_to_its_end_after_the_reader_gave_up() {
        let (sender, body) =
            {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|c| (c, rx))
                });
                (tx, Body::from_stream(stream))
            };
        let (mut reader, drain) = upload(body);
        let sending = tokio::spawn(async move {
            for _ in 0..100 {
                sender.send(Ok(Bytes::from(vec![7u8; 1024]))).await.unwrap();
            }
            drop(sender);
        });
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).await.unwrap();
        assert_eq!(first, [7u8; 10]);
        drop(reader);
        let answer: Result<(), &str> = drain.settle(Err("full disk")).await;
        assert_eq!(answer, Err("full disk"));
        // Every chunk was taken from the client before the answer: none is left unsent.
        assert!(sending.is_finished(), "the client is still sending");
        sending.await.unwrap();
    }
}
