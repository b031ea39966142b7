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
//!
//! Layout: this module serves the URLs; [`session`] is a remote-command session whatever carries it;
//! [`over_spdy`] and [`over_websocket`] carry sessions and port forwards on each transport.

mod over_spdy;
mod over_websocket;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use husk_core::{Error, Result};
use husk_cri_api::v1 as cri;
use husk_engine::Engine;

use over_spdy::spdy_upgrade;
use over_websocket::websocket;

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
