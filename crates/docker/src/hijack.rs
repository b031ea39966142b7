//! Raw ("hijacked") engine connections for terminal sessions.
//!
//! With a terminal the engine sends the process's output as plain bytes, without its 8-byte stream headers.
//! bollard's decoder tells the two formats apart by looking at the first byte of every read (0, 1 and 2 mean a
//! header), so terminal output that starts with such a byte (a NUL, ctrl-A, ctrl-B: binary output, some
//! full-screen programs) is taken for a header and lost. For terminal sessions husk therefore makes the upgraded
//! connection itself (hyper, as bollard does) and passes every byte through unchanged. Sessions without a
//! terminal keep using bollard, whose header decoding is right for them.

use bollard::ClientVersion;
use bollard::container::LogOutput;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use husk_core::{Error, Result};
use hyper::Request;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::ReaderStream;

use crate::client::{Address, engine_error, parse_address};
use crate::stdio_bridge::{EngineInput, EngineOutput};

/// Characters that may stand unescaped in a query value.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The attach query for a terminal container.
pub(crate) fn attach_path(engine_id: &str, stdin: bool, detach_keys: &str) -> String {
    format!(
        "/containers/{engine_id}/attach?stream=1&stdin={}&stdout=1&stderr=1&detachKeys={}",
        u8::from(stdin),
        query_escape(detach_keys)
    )
}

/// The exec start path and body for a terminal exec.
pub(crate) fn exec_start(exec_id: &str) -> (String, Vec<u8>) {
    (
        format!("/exec/{exec_id}/start"),
        br#"{"Detach":false,"Tty":true}"#.to_vec(),
    )
}

/// Sends `POST /v<version><path>` asking for a raw connection, and returns its two halves: output as
/// [`LogOutput::Console`] chunks exactly as the engine sent them, and input.
pub(crate) async fn open(
    host: &str,
    version: &ClientVersion,
    path: &str,
    body: Vec<u8>,
) -> Result<(EngineOutput, EngineInput)> {
    let uri = format!(
        "/v{}.{}{path}",
        version.major_version, version.minor_version
    );
    match parse_address(host)? {
        Address::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(&socket)
                .await
                .map_err(|e| Error::io(format!("connect to the Docker Engine at {host}"), e))?;
            upgrade(stream, &uri, body).await
        }
        Address::Http(addr) => {
            let target = addr.trim_start_matches("tcp://").to_string();
            let stream = tokio::net::TcpStream::connect(&target)
                .await
                .map_err(|e| Error::io(format!("connect to the Docker Engine at {host}"), e))?;
            upgrade(stream, &uri, body).await
        }
    }
}

async fn upgrade<S>(stream: S, uri: &str, body: Vec<u8>) -> Result<(EngineOutput, EngineInput)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let failed = |e: hyper::Error| {
        Error::backend(format!("raw connection to the Docker Engine ({uri}): {e}"))
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    tokio::spawn(connection.with_upgrades());
    let request = Request::post(uri)
        .header(HOST, "docker")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "tcp")
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Error::internal(format!("building the engine request {uri}: {e}")))?;
    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status();
    if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
        let e = bollard::errors::Error::DockerResponseServerError {
            status_code: status.as_u16(),
            message,
        };
        return Err(engine_error(format!("open a terminal session ({uri})"), e));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(failed)?;
    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
    let output = ReaderStream::new(read).map(|chunk| {
        chunk
            .map(|message| LogOutput::Console { message })
            .map_err(Into::into)
    });
    Ok((Box::pin(output), Box::pin(write)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_escaping() {
        assert_eq!(query_escape("ctrl-^,ctrl-_"), "ctrl-%5E%2Cctrl-_");
        assert_eq!(
            attach_path("abc", true, "ctrl-^"),
            "/containers/abc/attach?stream=1&stdin=1&stdout=1&stderr=1&detachKeys=ctrl-%5E"
        );
        let (path, body) = exec_start("e1");
        assert_eq!(path, "/exec/e1/start");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Tty"], true);
    }
}
