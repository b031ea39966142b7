//! The CLI's client of the daemon's local API: HTTP/1.1 over the unix socket, one connection per request.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use husk_core::Error as HuskError;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

type Body = BoxBody<Bytes, std::io::Error>;

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// An error the daemon answered with (kept typed so the CLI can print just its message).
#[derive(Debug)]
pub struct DaemonError(pub HuskError);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for DaemonError {}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

impl Client {
    /// A client for `host` (`unix:///path` or a plain path).
    pub fn new(host: &str) -> Result<Client> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if path.is_empty() || host.starts_with("tcp://") || host.starts_with("http") {
            return Err(anyhow!(
                "unsupported daemon address {host:?}: use unix:///path/to/husk.sock"
            ));
        }
        Ok(Client {
            socket: PathBuf::from(path),
        })
    }

    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<Body>> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "cannot connect to the husk daemon at unix://{}: {e} (is `husk daemon` running?)",
                self.socket.display()
            )
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon")?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut sender = self.connect().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "husk")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)?;
        sender
            .send_request(request)
            .await
            .context("request to the daemon")
    }

    async fn check(response: hyper::Response<hyper::body::Incoming>) -> Result<Bytes> {
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("read the daemon's answer")?
            .to_bytes();
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(bytes);
        }
        match serde_json::from_slice::<HuskError>(&bytes) {
            Ok(e) => Err(DaemonError(e).into()),
            Err(_) => Err(anyhow!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            )),
        }
    }

    /// A request without a body whose answer only counts by its status (a not-found is no error here, and
    /// making one would capture a backtrace when `RUST_BACKTRACE` is set).
    pub async fn status(&self, method: Method, path: &str) -> Result<StatusCode> {
        let response = self.send(method, path, full(Bytes::new())).await?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok(status)
    }

    /// A request with an optional JSON body; returns the raw answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Bytes> {
        let body = match body {
            Some(b) => full(serde_json::to_vec(b)?),
            None => full(Bytes::new()),
        };
        Self::check(self.send(method, path, body).await?).await
    }

    /// A request whose answer is JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "unexpected answer from the daemon: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// A GET whose answer is JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None::<&()>).await
    }

    /// A POST without a body.
    pub async fn post(&self, path: &str) -> Result<()> {
        self.call(Method::POST, path, None::<&()>).await.map(|_| ())
    }

    /// A request whose body is streamed from `reader` (image archives).
    pub async fn upload<R: tokio::io::AsyncRead + Send + Sync + 'static>(
        &self,
        path: &str,
        reader: R,
    ) -> Result<Bytes> {
        self.upload_with(Method::POST, path, reader).await
    }

    /// A request with `method` whose body is streamed from `reader` (a read error aborts the request).
    pub async fn upload_with<R: tokio::io::AsyncRead + Send + Sync + 'static>(
        &self,
        method: Method,
        path: &str,
        reader: R,
    ) -> Result<Bytes> {
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024)
            .map(|chunk| chunk.map(Frame::data));
        let body = BodyExt::boxed(StreamBody::new(stream));
        Self::check(self.send(method, path, body).await?).await
    }

    /// A GET whose answer is a byte stream (archives); a stream the daemon ends with an error reads as an
    /// error.
    pub async fn get_stream(
        &self,
        path: &str,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<>> {
        let response = self.send(Method::GET, path, full(Bytes::new())).await?;
        if !response.status().is_success() {
            Self::check(response).await?;
            return Err(anyhow!("the daemon sent no content"));
        }
        let stream =
            http_body_util::BodyStream::new(response.into_body()).filter_map(|frame| async move {
                match frame {
                    Ok(f) => f.into_data().ok().map(Ok),
                    Err(e) => Some(Err(std::io::Error::other(e))),
                }
            });
        Ok(tokio_util::io::StreamReader::new(Box::pin(stream)))
    }

    /// A GET whose answer streams JSON lines; calls `each` for every line.
    pub async fn lines(&self, path: &str, each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.stream_lines(Method::GET, path, each).await
    }

    /// A request without a body whose answer streams the archive it writes to `out`; fails if the stream breaks.
    pub async fn download<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        path: &str,
        body: &impl Serialize,
        out: &mut W,
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let response = self
            .send(Method::POST, path, full(serde_json::to_vec(body)?))
            .await?;
        if !response.status().is_success() {
            Self::check(response).await?;
            return Err(anyhow!("the daemon sent no archive"));
        }
        let mut body = response.into_body();
        let mut written = 0u64;
        while let Some(frame) = body.frame().await {
            let frame =
                frame.context("the archive stream broke off (the daemon's log says why)")?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data).await.context("write the archive")?;
                written += data.len() as u64;
            }
        }
        out.flush().await.context("write the archive")?;
        Ok(written)
    }

    /// A request without a body whose answer streams JSON lines; calls `each` for every line.
    pub async fn stream_lines(
        &self,
        method: Method,
        path: &str,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let response = self.send(method, path, full(Bytes::new())).await?;
        if !response.status().is_success() {
            Self::check(response).await?;
            return Ok(());
        }
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("read the daemon's stream")?;
            if let Some(data) = frame.data_ref() {
                pending.extend_from_slice(data);
                while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    each(&line[..line.len() - 1])?;
                }
            }
        }
        Ok(())
    }

    /// Like [`Client::upgrade`], also returning the container ID the daemon names in `X-Husk-Container-Id`.
    pub async fn upgrade_with_id(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(TokioIo<hyper::upgrade::Upgraded>, String)> {
        self.upgrade_inner(path, body).await
    }

    /// A request that upgrades the connection to a raw stdio stream.
    pub async fn upgrade(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        self.upgrade_inner(path, body).await.map(|(s, _)| s)
    }

    async fn upgrade_inner(
        &self,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(TokioIo<hyper::upgrade::Upgraded>, String)> {
        let mut sender = self.connect().await?;
        let body = match body {
            Some(b) => full(serde_json::to_vec(b)?),
            None => full(Bytes::new()),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(http::header::HOST, "husk")
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "tcp")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)?;
        let response = sender
            .send_request(request)
            .await
            .context("request to the daemon")?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            Self::check(response).await?;
            return Err(anyhow!("the daemon did not switch to a stream"));
        }
        let id = response
            .headers()
            .get("x-husk-container-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let upgraded = hyper::upgrade::on(response)
            .await
            .context("switch to the stdio stream")?;
        Ok((TokioIo::new(upgraded), id))
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
