//! Sessions and port forwards over SPDY/3.1 ([`crate::spdy`]): one stream per channel, named by its
//! `streamType` header.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::Response;
use husk_core::stdio::Frame;
use husk_engine::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::spdy;

use super::session::*;
use super::*;

pub(super) fn spdy_upgrade(server: Streaming, pending: Pending, mut request: Request) -> Response {
    let supported: &[&str] = match pending {
        Pending::PortForward(_) => &[PORT_FORWARD_SPDY],
        _ => &REMOTE_COMMAND_SPDY,
    };
    let offered = offered_protocols(&request);
    let Some(protocol) = offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
    else {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "{PROTOCOL_HEADER}: none of the offered protocols {offered:?} is one husk speaks ({})",
                supported.join(", ")
            ),
        );
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded",
        );
    };
    let version = Version::of(&protocol);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("CRI streaming: SPDY upgrade failed: {e}");
                return;
            }
        };
        let (session, streams) = spdy::Session::server(hyper_util::rt::TokioIo::new(upgraded));
        match pending {
            Pending::PortForward(req) => {
                spdy_port_forward(
                    server.inner.engine.clone(),
                    req.pod_sandbox_id,
                    session,
                    streams,
                )
                .await
            }
            command => spdy_remote_command(server, command, version, session, streams).await,
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header(PROTOCOL_HEADER, protocol)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| {
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "build the upgrade answer",
            )
        })
}

pub(super) struct SpdyOutput {
    session: spdy::Session,
    stdout: Option<spdy::Stream>,
    stderr: Option<spdy::Stream>,
    error: spdy::Stream,
    version: Version,
    exec: bool,
}

impl Output for SpdyOutput {
    fn output(
        &mut self,
        stderr: bool,
        data: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>> {
        Box::pin(async move {
            let stream = if stderr {
                self.stderr.as_mut().or(self.stdout.as_mut())
            } else {
                self.stdout.as_mut()
            };
            match stream {
                Some(s) => s.write_all(&data).await,
                None => Ok(()),
            }
        })
    }

    fn finish(self: Box<Self>, end: End) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let SpdyOutput {
                session,
                stdout,
                stderr,
                mut error,
                version,
                exec,
            } = *self;
            for mut s in [stdout, stderr].into_iter().flatten() {
                let _ = s.shutdown().await;
            }
            let message = if version >= Version::V4 {
                Some(end.status_json(exec))
            } else {
                end.plain(exec)
            };
            if let Some(m) = message {
                let _ = error.write_all(m.as_bytes()).await;
            }
            let _ = error.shutdown().await;
            session.close().await;
        })
    }
}

/// Waits for the streams a remote command needs (replying to each), then runs it.
pub(super) async fn spdy_remote_command(
    server: Streaming,
    pending: Pending,
    version: Version,
    session: spdy::Session,
    mut incoming: mpsc::Receiver<spdy::Stream>,
) {
    let channels = Channels::of(&pending);
    let mut named: HashMap<String, spdy::Stream> = HashMap::new();
    let wanted: Vec<&str> = [
        Some("error"),
        channels.stdin.then_some("stdin"),
        channels.stdout.then_some("stdout"),
        channels.stderr.then_some("stderr"),
        (channels.tty && version >= Version::V3).then_some("resize"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let collect = async {
        while !wanted.iter().all(|w| named.contains_key(*w)) {
            let Some(stream) = incoming.recv().await else {
                return false;
            };
            if stream.reply().await.is_err() {
                return false;
            }
            let kind = stream.header("streamtype").unwrap_or_default().to_string();
            named.insert(kind, stream);
        }
        true
    };
    match tokio::time::timeout(STREAM_CREATION_TIMEOUT, collect).await {
        Ok(true) => {}
        _ => {
            tracing::debug!("CRI streaming: the client did not open the streams {wanted:?}");
            session.close().await;
            return;
        }
    }
    // Streams opened later (none are expected) are accepted and ignored.
    tokio::spawn(async move {
        while let Some(s) = incoming.recv().await {
            let _ = s.reply().await;
        }
    });
    let (input_tx, input_rx) = mpsc::channel::<Frame>(64);
    if let Some(mut stdin) = named.remove("stdin") {
        let tx = input_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Frame::Stdin(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Frame::CloseStdin).await;
        });
    }
    if let Some(mut resize) = named.remove("resize") {
        let tx = input_tx.clone();
        tokio::spawn(async move {
            let mut decoder = ResizeDecoder::default();
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = resize.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                match decoder.push(&buf[..n]) {
                    Ok(frames) => {
                        for f in frames {
                            if tx.send(f).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("CRI streaming: {e}");
                        break;
                    }
                }
            }
        });
    }
    drop(input_tx);
    let Some(error) = named.remove("error") else {
        return;
    };
    let output = Box::new(SpdyOutput {
        session: session.clone(),
        stdout: named.remove("stdout"),
        stderr: named.remove("stderr"),
        error,
        version,
        exec: matches!(pending, Pending::Exec(_)),
    });
    let engine = &server.inner.engine;
    let input_end = InputEnd::of(engine, &pending);
    match open_stdio(engine, &pending).await {
        Ok(stdio) => {
            let watcher = session.clone();
            let gone = Box::pin(async move { watcher.closed().await });
            pump(stdio, input_rx, output, gone, input_end).await;
        }
        Err(e) => output.finish(End::Failed(e.message)).await,
    }
}

/// Serves a SPDY port-forward session: each pair of streams (`error` and `data`, one `requestID`) is one
/// connection to the pod's `port`.
pub(super) async fn spdy_port_forward(
    engine: Engine,
    pod: String,
    session: spdy::Session,
    mut incoming: mpsc::Receiver<spdy::Stream>,
) {
    let mut halves: HashMap<String, (Option<spdy::Stream>, Option<spdy::Stream>)> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        if stream.reply().await.is_err() {
            break;
        }
        let request = stream.header("requestid").unwrap_or_default().to_string();
        let entry = halves.entry(request.clone()).or_default();
        match stream.header("streamtype").unwrap_or_default() {
            "error" => entry.0 = Some(stream),
            "data" => entry.1 = Some(stream),
            other => {
                tracing::debug!("CRI port forward: unknown stream type {other:?}");
                stream.reset().await;
                continue;
            }
        }
        if matches!(halves.get(&request), Some((Some(_), Some(_))))
            && let Some((Some(error), Some(data))) = halves.remove(&request)
        {
            tokio::spawn(forward_spdy_pair(engine.clone(), pod.clone(), error, data));
        }
    }
    session.close().await;
}

pub(super) async fn forward_spdy_pair(
    engine: Engine,
    pod: String,
    mut error: spdy::Stream,
    data: spdy::Stream,
) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let failure = match port {
        None => Some(format!(
            "port header {:?} is not a port",
            data.header("port").unwrap_or_default()
        )),
        Some(port) => match engine.connect_sandbox_port(&pod, port).await {
            Err(e) => Some(format!(
                "error forwarding port {port} to pod {pod}: {}",
                e.message
            )),
            Ok(tcp) => copy_both_ways(data, tcp)
                .await
                .err()
                .map(|e| format!("error forwarding port {port} to pod {pod}: {e}")),
        },
    };
    if let Some(message) = failure {
        let _ = error.write_all(message.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}

/// Copies a stream and a connection into each other, each direction half-closed at its end.
pub(super) async fn copy_both_ways(
    stream: spdy::Stream,
    tcp: tokio::net::TcpStream,
) -> std::io::Result<()> {
    let (mut stream_read, mut stream_write) = tokio::io::split(stream);
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let to_pod = async {
        let n = tokio::io::copy(&mut stream_read, &mut tcp_write).await?;
        tracing::debug!(bytes = n, "CRI port forward: the client's side ended");
        tcp_write.shutdown().await
    };
    let from_pod = async {
        let n = tokio::io::copy(&mut tcp_read, &mut stream_write).await?;
        tracing::debug!(bytes = n, "CRI port forward: the pod's side ended");
        stream_write.shutdown().await
    };
    let (a, b) = tokio::join!(to_pod, from_pod);
    a.and(b)
}
