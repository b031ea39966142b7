//! The CRI's streaming server: Exec, Attach and PortForward answer with a URL on this HTTP server, and the
//! client (kubelet, crictl, critest) connects there and upgrades the connection.
//!
//! Each URL carries a single-use token that stays valid for a minute, as kubelet's own server does. Two
//! transports are spoken on the same URL, chosen by the client's `Upgrade` header:
//! - `SPDY/3.1` ([`crate::spdy`]): what kubelet, kubectl and crictl use by default. The client opens one stream
//!   per channel (`streamType` error, stdin, stdout, stderr, resize; `data` and `error` per forwarded port) and
//!   names the protocol in `X-Stream-Protocol-Version` (`v4`/`v3`/`v2.channel.k8s.io`, `portforward.k8s.io`).
//! - WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`; for port forwarding `v4.channel.k8s.io` or none): every
//!   binary message starts with its channel number (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5's 255
//!   closes a channel); a forwarded port `i` uses channels `2i` (data) and `2i+1` (error).
//!
//! Both carry the same session: husk's stdio frames ([`husk_core::stdio`]) from the engine's exec or attach
//! stream are turned into the channels and back; the exit code travels as a Kubernetes `Status` on the error
//! channel (v4 and later).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use husk_api_types::ExecCreate;
use husk_core::stdio::{BoxStdio, Frame, read_frame, write_frame};
use husk_core::{Error, Result};
use husk_engine::Engine;
use k8s_cri::v1 as cri;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::spdy;

/// How long a streaming URL stays valid after the RPC that made it (kubelet's value).
pub const URL_TTL: Duration = Duration::from_secs(60);

/// How long a SPDY client has to open the streams its request needs.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Remote-command protocols spoken over SPDY, most preferred first.
pub const REMOTE_COMMAND_SPDY: [&str; 3] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];

/// Remote-command protocols spoken over WebSocket, most preferred first.
pub const REMOTE_COMMAND_WEBSOCKET: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The port-forward protocol spoken over SPDY.
pub const PORT_FORWARD_SPDY: &str = "portforward.k8s.io";

/// Port-forward protocols spoken over WebSocket (a client may also name none).
const PORT_FORWARD_WEBSOCKET: [&str; 2] = ["v4.channel.k8s.io", "channel.k8s.io"];

/// The header a SPDY client offers its protocols in and the server answers with the chosen one.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// The streaming server: hands out URLs for sessions and serves them.
#[derive(Clone)]
pub struct Streaming {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    base_url: String,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

/// A session asked for over gRPC and not yet connected to.
#[derive(Debug, Clone)]
enum Pending {
    Exec(cri::ExecRequest),
    Attach(cri::AttachRequest),
    PortForward(cri::PortForwardRequest),
}

impl Pending {
    fn path(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("base_url", &self.inner.base_url)
            .finish()
    }
}

impl Streaming {
    /// Binds the server's listener on `address` (`HOST:PORT`; port 0 picks a free one). URLs name the bound
    /// address, or loopback when it is unspecified (kubelet connects from the same host).
    pub async fn bind(
        engine: Engine,
        address: &str,
    ) -> Result<(Streaming, tokio::net::TcpListener)> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| Error::io(format!("listen on cri_stream_address {address}"), e))?;
        let mut local = listener
            .local_addr()
            .map_err(|e| Error::io("read the streaming server's address", e))?;
        if local.ip().is_unspecified() {
            let loopback: std::net::IpAddr = if local.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            local = SocketAddr::new(loopback, local.port());
        }
        let streaming = Streaming {
            inner: Arc::new(Inner {
                engine,
                base_url: format!("http://{local}"),
                pending: Mutex::new(HashMap::new()),
            }),
        };
        Ok((streaming, listener))
    }

    /// The URL a client runs this exec at.
    pub fn exec_url(&self, request: cri::ExecRequest) -> String {
        self.url(Pending::Exec(request))
    }

    /// The URL a client attaches at.
    pub fn attach_url(&self, request: cri::AttachRequest) -> String {
        self.url(Pending::Attach(request))
    }

    /// The URL a client forwards the pod's ports at.
    pub fn port_forward_url(&self, request: cri::PortForwardRequest) -> String {
        self.url(Pending::PortForward(request))
    }

    fn url(&self, pending: Pending) -> String {
        let token = hex::encode(rand::random::<[u8; 16]>());
        let path = pending.path();
        let now = Instant::now();
        let mut map = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (made, _)| now.duration_since(*made) < URL_TTL);
        map.insert(token.clone(), (now, pending));
        format!("{}/{path}/{token}", self.inner.base_url)
    }

    /// Takes the session of `token` if it is of kind `path` and still valid (a URL serves once).
    fn take(&self, path: &str, token: &str) -> Option<Pending> {
        let mut map = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(token) {
            Some((made, p)) if p.path() == path && made.elapsed() < URL_TTL => {
                map.remove(token).map(|(_, p)| p)
            }
            _ => None,
        }
    }

    /// Serves sessions on `listener` until `shutdown` completes (sessions already upgraded run to their end).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let app = axum::Router::new()
            .route("/{kind}/{token}", axum::routing::any(handle))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::io("CRI streaming server", e))
    }
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    (code, message.into()).into_response()
}

async fn handle(
    State(server): State<Streaming>,
    Path((kind, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some(pending) = server.take(&kind, &token) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no {kind} session {token}: a streaming URL serves once, within a minute of the RPC"
            ),
        );
    };
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match upgrade.as_str() {
        "websocket" => websocket(server, pending, request).await,
        "spdy/3.1" => spdy_upgrade(server, pending, request),
        _ => refuse(
            StatusCode::BAD_REQUEST,
            "a streaming session needs `Upgrade: SPDY/3.1` or `Upgrade: websocket`",
        ),
    }
}

/// The protocols a SPDY client offers, in its order (each header may list several, comma-separated).
fn offered_protocols(request: &Request) -> Vec<String> {
    request
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn spdy_upgrade(server: Streaming, pending: Pending, mut request: Request) -> Response {
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

/// The remote-command protocol version a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    /// Errors as plain text, no terminal resizing.
    V2,
    /// Terminal resizing.
    V3,
    /// The end as a JSON `Status` carrying the exit code.
    V4,
    /// WebSocket only: a message closes the client's stdin.
    V5,
}

impl Version {
    fn of(protocol: &str) -> Version {
        match protocol {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            _ => Version::V2,
        }
    }
}

/// The channels a remote command uses, from its request.
#[derive(Debug, Clone, Copy, Default)]
struct Channels {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Channels {
    fn of(pending: &Pending) -> Channels {
        let (stdin, stdout, stderr, tty) = match pending {
            Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::PortForward(_) => (false, false, false, false),
        };
        // With a terminal, all output is one stream.
        Channels {
            stdin,
            stdout,
            stderr: stderr && !tty,
            tty,
        }
    }
}

/// How a remote command ended, as told to the client.
enum End {
    /// The exec'd process exited with this code (attach: the container's main process ended).
    Exit(i32),
    /// The session failed.
    Failed(String),
}

impl End {
    /// The Kubernetes `Status` object v4 and later put on the error channel.
    fn status_json(&self, exec: bool) -> String {
        let status = match self {
            End::Exit(code) if *code != 0 && exec => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            End::Exit(_) => serde_json::json!({"metadata": {}, "status": "Success"}),
            End::Failed(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        status.to_string()
    }

    /// What v2 and v3 put on the error channel: nothing on success, else a message.
    fn plain(&self, exec: bool) -> Option<String> {
        match self {
            End::Exit(code) if *code != 0 && exec => Some(format!(
                "command terminated with non-zero exit code: exit code {code}"
            )),
            End::Exit(_) => None,
            End::Failed(m) => Some(m.clone()),
        }
    }
}

/// A terminal size as the client sends it on the resize channel.
#[derive(Debug, Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Decodes the resize channel: a sequence of JSON objects, possibly split across reads.
#[derive(Default)]
struct ResizeDecoder {
    buffer: Vec<u8>,
}

impl ResizeDecoder {
    /// Adds bytes; returns the sizes now complete, or an error for bytes that are not JSON sizes.
    fn push(&mut self, data: &[u8]) -> std::result::Result<Vec<Frame>, String> {
        self.buffer.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let mut it =
                serde_json::Deserializer::from_slice(&self.buffer).into_iter::<TerminalSize>();
            match it.next() {
                Some(Ok(size)) => {
                    let used = it.byte_offset();
                    self.buffer.drain(..used);
                    out.push(Frame::Resize {
                        rows: size.height,
                        cols: size.width,
                    });
                }
                Some(Err(e)) if e.is_eof() => return Ok(out),
                Some(Err(e)) => return Err(format!("resize channel: {e}")),
                None => {
                    self.buffer.clear();
                    return Ok(out);
                }
            }
        }
    }
}

/// Starts the process a remote-command session is for.
async fn open_stdio(engine: &Engine, pending: &Pending) -> Result<BoxStdio> {
    match pending {
        Pending::Exec(r) => {
            let exec = ExecCreate {
                command: r.cmd.clone(),
                tty: r.tty,
                stdin: r.stdin,
                ..Default::default()
            };
            engine.exec(&r.container_id, &exec).await
        }
        Pending::Attach(r) => engine.attach(&r.container_id, r.stdin).await,
        Pending::PortForward(_) => Err(Error::internal("a port forward is no remote command")),
    }
}

/// What the client's end of input does to the process's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputEnd {
    /// Closes it (exec: the process is the session's own).
    Close,
    /// Closes it, and ends the attach stream's input (attach to a container made with `stdin_once`).
    Hangup,
    /// Leaves it open for the next client (attach otherwise).
    Keep,
}

impl InputEnd {
    fn of(engine: &Engine, pending: &Pending) -> InputEnd {
        match pending {
            Pending::Attach(r) => {
                let once = engine
                    .container(&r.container_id)
                    .is_ok_and(|rec| crate::convert::stdin_once(&rec));
                if once {
                    InputEnd::Hangup
                } else {
                    InputEnd::Keep
                }
            }
            _ => InputEnd::Close,
        }
    }
}

/// Where a session's output goes, whatever carries it.
trait Output: Send {
    /// Sends process output on the stdout channel (`stderr` false) or the stderr channel.
    fn output(
        &mut self,
        stderr: bool,
        data: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>>;
    /// Ends the session, telling the client how.
    fn finish(self: Box<Self>, end: End) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Runs a remote-command session: the process's output to `output`, the client's `input` (stdin, its end,
/// terminal sizes) to the process, until the process ends or `gone` (the client left).
async fn pump(
    stdio: BoxStdio,
    mut input: mpsc::Receiver<Frame>,
    mut output: Box<dyn Output>,
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    input_end: InputEnd,
) {
    let (mut from_process, mut to_process): (ReadHalf<BoxStdio>, WriteHalf<BoxStdio>) =
        tokio::io::split(stdio);
    let feeder = tokio::spawn(async move {
        while let Some(frame) = input.recv().await {
            let end = frame == Frame::CloseStdin;
            tracing::debug!(?input_end, end, "CRI streaming: input for the process");
            match input_end {
                InputEnd::Keep if end => continue,
                // An attached client closes the container's stdin by ending its side of the stream.
                InputEnd::Hangup if end => {
                    let _ = write_frame(&mut to_process, &frame).await;
                    let _ = to_process.shutdown().await;
                    break;
                }
                _ => {}
            }
            if write_frame(&mut to_process, &frame).await.is_err() {
                break;
            }
        }
        // Keep the write half (and so the process's input) open until the session ends.
        std::future::pending::<()>().await;
    });
    let ended = async {
        loop {
            match read_frame(&mut from_process).await {
                Ok(Some(Frame::Stdout(data))) => {
                    if output.output(false, data).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(Frame::Stderr(data))) => {
                    if output.output(true, data).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(Frame::Exit(code))) => return Some(End::Exit(code)),
                Ok(Some(Frame::Error(message))) => return Some(End::Failed(message)),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Some(End::Failed(
                        "the process's stream ended without an exit code".into(),
                    ));
                }
                Err(e) => return Some(End::Failed(format!("the process's stream: {e}"))),
            }
        }
    };
    let end = tokio::select! {
        end = ended => end,
        _ = gone => None,
    };
    feeder.abort();
    if let Some(end) = end {
        output.finish(end).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// SPDY

struct SpdyOutput {
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
async fn spdy_remote_command(
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
async fn spdy_port_forward(
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

async fn forward_spdy_pair(
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
async fn copy_both_ways(stream: spdy::Stream, tcp: tokio::net::TcpStream) -> std::io::Result<()> {
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

// ---------------------------------------------------------------------------------------------------------
// WebSocket

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

async fn websocket(server: Streaming, pending: Pending, request: Request) -> Response {
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

type WsSource = futures::stream::SplitStream<WebSocket>;

/// The next binary message; `None` when the client closed or left. Other messages are skipped.
async fn next_binary(source: &mut WsSource) -> Option<axum::body::Bytes> {
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
async fn next_channel_message(source: &mut WsSource) -> Option<(u8, axum::body::Bytes)> {
    loop {
        let data = next_binary(source).await?;
        if let Some(&channel) = data.first() {
            return Some((channel, data.slice(1..)));
        }
    }
}

/// The WebSocket subprotocol of SPDY port forwarding tunnelled through WebSocket messages (client-go's
/// WebSocket port forwarding, kubectl's default since Kubernetes 1.31).
const SPDY_OVER_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";

/// Whether the client offers `protocol` in `Sec-WebSocket-Protocol`.
fn upgrade_offers(parts: &axum::http::request::Parts, protocol: &str) -> bool {
    parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

/// A WebSocket as a byte stream: binary messages in, binary messages out (each write one message).
fn websocket_bytes(socket: WebSocket) -> tokio::io::DuplexStream {
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
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// The `port` parameters of a WebSocket port-forward URL.
fn query_ports(query: &str) -> std::result::Result<Vec<u16>, String> {
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

type WsSink = futures::stream::SplitSink<WebSocket, Message>;

struct WsOutput {
    sink: WsSink,
    exec: bool,
}

impl WsOutput {
    async fn send(&mut self, channel: u8, data: &[u8]) -> std::io::Result<()> {
        send_on_channel(&mut self.sink, channel, data).await
    }
}

/// Sends `data` on `channel`: one binary message, the channel number first.
async fn send_on_channel(sink: &mut WsSink, channel: u8, data: &[u8]) -> std::io::Result<()> {
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

async fn ws_remote_command(
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
async fn ws_port_forward(engine: Engine, pod: String, ports: Vec<u16>, socket: WebSocket) {
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
    fn resize_messages_split_anywhere_are_decoded() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(br#"{"Width":80,"#).unwrap().is_empty());
        let frames = d.push(br#""Height":24}{"Width":100,"Height":50}"#).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Resize { rows: 24, cols: 80 },
                Frame::Resize {
                    rows: 50,
                    cols: 100
                }
            ]
        );
        assert!(d.push(b"not json").is_err());
    }

    #[test]
    fn the_exit_code_travels_as_a_kubernetes_status() {
        let ok: serde_json::Value = serde_json::from_str(&End::Exit(0).status_json(true)).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_str(&End::Exit(3).status_json(true)).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        // An attached container's end is no failure of the session.
        let attach: serde_json::Value =
            serde_json::from_str(&End::Exit(3).status_json(false)).unwrap();
        assert_eq!(attach["status"], "Success");
        assert_eq!(End::Exit(0).plain(true), None);
        assert!(End::Exit(2).plain(true).unwrap().contains("exit code 2"));
    }

    #[test]
    fn port_forward_urls_name_their_ports() {
        assert_eq!(query_ports("port=80&port=8080").unwrap(), vec![80, 8080]);
        assert!(query_ports("").unwrap_err().contains("required"));
        assert!(query_ports("port=0").unwrap_err().contains("port"));
        assert!(query_ports("port=http").is_err());
    }

    #[test]
    fn channels_follow_the_request() {
        let tty = Channels::of(&Pending::Exec(cri::ExecRequest {
            stdout: true,
            stderr: true,
            tty: true,
            ..Default::default()
        }));
        assert!(
            tty.stdout && !tty.stderr,
            "a terminal has one output stream"
        );
        assert_eq!(Version::of("v4.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of("v5.channel.k8s.io"), Version::V5);
        assert_eq!(Version::of("v2.channel.k8s.io"), Version::V2);
    }
}
