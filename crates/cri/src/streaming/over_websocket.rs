//! Sessions and port forwards over WebSocket: channel-numbered binary messages (`v5`/`v4.channel.k8s.io`), or
//! a SPDY session tunnelled through binary messages (`SPDY/3.1+portforward.k8s.io`, client-go's port forwarding).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use husk_core::stdio::Frame;
use husk_engine::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::spdy;

use super::over_spdy::spdy_port_forward;
use super::session::*;
use super::*;

/// Channel numbers of the remote-command protocol over WebSocket.
mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[CLOSE, channel]` closes that channel.
    pub const CLOSE: u8 = 255;
}

pub(super) async fn websocket(server: Streaming, pending: Pending, request: Request) -> Response {
    let query = request.uri().query().unwrap_or_default().to_string();
    let (mut parts, _body) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    match pending {
        Pending::PortForward(req) if upgrade_offers(&parts, SPDY_OVER_WEBSOCKET) => {
            // client-go's WebSocket port forwarding: the SPDY session itself, carried in binary messages.
            let upgrade = upgrade.protocols([SPDY_OVER_WEBSOCKET]);
            let engine = server.inner.engine.clone();
            upgrade.on_upgrade(move |socket| async move {
                let (session, streams) = spdy::Session::server(websocket_bytes(socket));
                spdy_port_forward(engine, req.pod_sandbox_id, session, streams).await
            })
        }
        Pending::PortForward(req) => {
            let ports = match query_ports(&query) {
                Ok(p) => p,
                Err(e) => return refuse(StatusCode::BAD_REQUEST, e),
            };
            let upgrade = upgrade.protocols(PORT_FORWARD_WEBSOCKET);
            let engine = server.inner.engine.clone();
            upgrade.on_upgrade(move |socket| {
                ws_port_forward(engine, req.pod_sandbox_id, ports, socket)
            })
        }
        command => {
            let upgrade = upgrade.protocols(REMOTE_COMMAND_WEBSOCKET);
            let Some(version) = upgrade
                .selected_protocol()
                .and_then(|p| p.to_str().ok())
                .map(Version::of)
            else {
                return refuse(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Sec-WebSocket-Protocol: husk speaks {}",
                        REMOTE_COMMAND_WEBSOCKET.join(", ")
                    ),
                );
            };
            upgrade.on_upgrade(move |socket| ws_remote_command(server, command, version, socket))
        }
    }
}

pub(super) type WsSource = futures::stream::SplitStream<WebSocket>;

/// The next binary message; `None` when the client closed or left. Other messages are skipped.
pub(super) async fn next_binary(source: &mut WsSource) -> Option<axum::body::Bytes> {
    while let Some(Ok(message)) = source.next().await {
        match message {
            Message::Binary(data) => return Some(data),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// The next message of the channel protocol: its channel and payload (empty messages are skipped).
pub(super) async fn next_channel_message(source: &mut WsSource) -> Option<(u8, axum::body::Bytes)> {
    loop {
        let data = next_binary(source).await?;
        if let Some(&channel) = data.first() {
            return Some((channel, data.slice(1..)));
        }
    }
}

/// The WebSocket subprotocol of SPDY port forwarding tunnelled through WebSocket messages (client-go's
/// WebSocket port forwarding, kubectl's default since Kubernetes 1.31).
pub(super) const SPDY_OVER_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";

/// Whether the client offers `protocol` in `Sec-WebSocket-Protocol`.
pub(super) fn upgrade_offers(parts: &axum::http::request::Parts, protocol: &str) -> bool {
    parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

/// A WebSocket as a byte stream: binary messages in, binary messages out (each write one message).
pub(super) fn websocket_bytes(socket: WebSocket) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let (mut from_bytes, mut to_bytes) = tokio::io::split(ours);
    let (mut sink, mut source) = socket.split();
    tokio::spawn(async move {
        let inbound = async {
            while let Some(data) = next_binary(&mut source).await {
                if to_bytes.write_all(&data).await.is_err() {
                    break;
                }
            }
            let _ = to_bytes.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = from_bytes.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let message = Message::Binary(buf[..n].to_vec().into());
                if sink.send(message).await.is_err() {
                    break;
                }
            }
            let _ = sink.send(normal_close()).await;
        };
        tokio::join!(inbound, outbound);
    });
    theirs
}

/// A close frame with the normal-closure code (1000): clients take it as the end, not an error.
pub(super) fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// The `port` parameters of a WebSocket port-forward URL.
pub(super) fn query_ports(query: &str) -> std::result::Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "port" {
            let port = value
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("query parameter port: {value:?} is not a port"))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("query parameter port is required (one per forwarded port)".into());
    }
    Ok(ports)
}

pub(super) type WsSink = futures::stream::SplitSink<WebSocket, Message>;

pub(super) struct WsOutput {
    sink: WsSink,
    exec: bool,
}

impl WsOutput {
    async fn send(&mut self, channel: u8, data: &[u8]) -> std::io::Result<()> {
        send_on_channel(&mut self.sink, channel, data).await
    }
}

/// Sends `data` on `channel`: one binary message, the channel number first.
pub(super) async fn send_on_channel(
    sink: &mut WsSink,
    channel: u8,
    data: &[u8],
) -> std::io::Result<()> {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    sink.send(Message::Binary(message.into()))
        .await
        .map_err(std::io::Error::other)
}

impl Output for WsOutput {
    fn output(
        &mut self,
        stderr: bool,
        data: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>> {
        let channel = if stderr {
            channel::STDERR
        } else {
            channel::STDOUT
        };
        Box::pin(async move { self.send(channel, &data).await })
    }

    fn finish(mut self: Box<Self>, end: End) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let status = end.status_json(self.exec);
            let _ = self.send(channel::ERROR, status.as_bytes()).await;
            let _ = self.sink.send(normal_close()).await;
        })
    }
}

pub(super) async fn ws_remote_command(
    server: Streaming,
    pending: Pending,
    version: Version,
    socket: WebSocket,
) {
    let channels = Channels::of(&pending);
    let (sink, mut source) = socket.split();
    let mut output = Box::new(WsOutput {
        sink,
        exec: matches!(pending, Pending::Exec(_)),
    });
    // An empty message on the first channel the client reads tells it the session is up.
    let first = if channels.stdout {
        channel::STDOUT
    } else if channels.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    if output.send(first, &[]).await.is_err() {
        return;
    }
    let (input_tx, input_rx) = mpsc::channel::<Frame>(64);
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut resize = ResizeDecoder::default();
        while let Some((ch, payload)) = next_channel_message(&mut source).await {
            let frames = match ch {
                channel::STDIN => vec![Frame::Stdin(payload.to_vec())],
                channel::RESIZE => resize.push(&payload).unwrap_or_default(),
                channel::CLOSE
                    if version >= Version::V5 && payload.first() == Some(&channel::STDIN) =>
                {
                    vec![Frame::CloseStdin]
                }
                _ => Vec::new(),
            };
            for f in frames {
                if input_tx.send(f).await.is_err() {
                    break;
                }
            }
        }
        let _ = gone_tx.send(());
    });
    let engine = &server.inner.engine;
    let input_end = InputEnd::of(engine, &pending);
    match open_stdio(engine, &pending).await {
        Ok(stdio) => {
            let gone = Box::pin(async move {
                let _ = gone_rx.await;
            });
            pump(stdio, input_rx, output, gone, input_end).await;
        }
        Err(e) => output.finish(End::Failed(e.message)).await,
    }
}

/// Port forwarding over WebSocket: port `i` of the URL is channels `2i` (data) and `2i+1` (error); each
/// channel's first message is the port, little-endian, as kubelet sends it.
pub(super) async fn ws_port_forward(
    engine: Engine,
    pod: String,
    ports: Vec<u16>,
    socket: WebSocket,
) {
    let (sink, mut source) = socket.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let send = |sink: Arc<tokio::sync::Mutex<WsSink>>, channel: u8, data: Vec<u8>| async move {
        send_on_channel(&mut *sink.lock().await, channel, &data)
            .await
            .is_ok()
    };
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data_channel = (2 * i) as u8;
        let error_channel = data_channel + 1;
        for ch in [data_channel, error_channel] {
            if !send(sink.clone(), ch, port.to_le_bytes().to_vec()).await {
                return;
            }
        }
        match engine.connect_sandbox_port(&pod, *port).await {
            Ok(tcp) => {
                let (mut read, write) = tcp.into_split();
                writers.push(Some(write));
                let sink = sink.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 << 10];
                    while let Ok(n) = read.read(&mut buf).await {
                        if n == 0 || !send(sink.clone(), data_channel, buf[..n].to_vec()).await {
                            break;
                        }
                    }
                }));
            }
            Err(e) => {
                writers.push(None);
                let message = format!("error forwarding port {port} to pod {pod}: {}", e.message);
                let _ = send(sink.clone(), error_channel, message.into_bytes()).await;
            }
        }
    }
    while let Some((ch, payload)) = next_channel_message(&mut source).await {
        if ch % 2 != 0 {
            continue;
        }
        if let Some(Some(w)) = writers.get_mut(usize::from(ch / 2))
            && w.write_all(&payload).await.is_err()
        {
            writers[usize::from(ch / 2)] = None;
        }
    }
    for r in readers {
        r.abort();
    }
    let _ = sink.lock().await.send(normal_close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_forward_urls_name_their_ports() {
        assert_eq!(query_ports("port=80&port=8080").unwrap(), vec![80, 8080]);
        assert!(query_ports("").unwrap_err().contains("required"));
        assert!(query_ports("port=0").unwrap_err().contains("port"));
        assert!(query_ports("port=http").is_err());
    }
}
