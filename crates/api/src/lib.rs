#![doc = include_str!("../README.md")]

pub mod keystone;
pub mod local;
pub mod metrics;
pub mod pod;
pub mod trace;
pub mod zun;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use husk_core::{Error, Result};

/// Serves `router` on a unix socket at `path` until `shutdown` resolves. The socket is made mode 0660.
pub async fn serve_unix(
    path: &Path,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_unix_listener(bind_unix(path)?, router, shutdown).await
}

/// A listening unix socket at `path` (a stale socket file there is replaced), mode 0660, its directory made if
/// missing.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io("set the socket's mode", e))?;
    Ok(listener)
}

/// Serves `router` on a listening unix socket (one bound by `bind_unix`, or handed over by systemd) until
/// `shutdown` resolves, within [`ConnectionLimits::default`]: its clients are local (root, or the socket's
/// group), but a stuck or careless one must not hold the daemon's connections either.
pub async fn serve_unix_listener(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_within(listener, router, shutdown, ConnectionLimits::default()).await
}

/// A listening socket whose connections carry HTTP/1.
trait Listener: Send + 'static {
    /// One accepted connection.
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// The socket's kind, for log lines.
    const KIND: &'static str;
    /// The next connection.
    fn next(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;
    const KIND: &'static str = "TCP";
    async fn next(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;
    const KIND: &'static str = "unix";
    async fn next(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// What a listener allows its clients: a TCP listener's may be anyone on the network.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers, and to start the next request on a kept-alive
    /// connection: a slow or idle client is disconnected (a slowloris never holds a connection).
    pub header_read_timeout: std::time::Duration,
    /// Connections served at once; the next ones wait in the kernel's backlog until one ends.
    pub max_connections: usize,
    /// Time connections still open at shutdown get to finish.
    pub shutdown_grace: std::time::Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(30),
            max_connections: 512,
            shutdown_grace: std::time::Duration::from_secs(5),
        }
    }
}

/// Serves `router` on a bound TCP listener until `shutdown` resolves, within [`ConnectionLimits::default`].
pub async fn serve_tcp_listener(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_within(listener, router, shutdown, ConnectionLimits::default()).await
}

/// Serves `router` on `listener` until `shutdown` resolves, within `limits`. Request bodies are bounded by the
/// routes (axum's 2 MiB default for buffered bodies; streams where a route streams).
async fn serve_within<L: Listener>(
    listener: L,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let max = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    // Tells open connections to finish their request in flight and close.
    let (closing, closing_seen) = tokio::sync::watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let service = hyper_util::service::TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(|_| Error::internal("connection slots closed"))?,
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.next() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before accept: wait a little, never spin.
                    tracing::warn!("accept on the {} listener: {e}", L::KIND);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = http
            .serve_connection(TokioIo::new(stream), service.clone())
            .with_upgrades();
        let mut closing = closing_seen.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("{} connection: {e}", L::KIND);
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every slot back means every connection ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!(
            "{} connections still open at shutdown were dropped",
            L::KIND
        );
    }
    Ok(())
}

/// Everything the daemon's unix socket serves: husk's own API for the CLI and Zun's API, both for local root.
pub fn unix_router(engine: husk_engine::Engine) -> axum::Router {
    let router = local::router(engine.clone())
        .merge(keystone::router(engine.clone()))
        .merge(zun::router(engine.clone(), zun::AuthMode::LocalRoot));
    zun::accept_trailing_slashes(trace::traced(metrics::tracked(router, &engine)))
}

/// What a TCP listener serves: Zun's API with authentication `auth`, and the identity service.
pub fn tcp_router(engine: husk_engine::Engine, auth: zun::AuthMode) -> axum::Router {
    let router = keystone::router(engine.clone()).merge(zun::router(engine.clone(), auth));
    zun::accept_trailing_slashes(trace::traced(metrics::tracked(router, &engine)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_within(
            listener,
            router,
            async move {
                let _ = stopped.await;
            },
            limits,
        ));
        (addr, stop)
    }

    /// Reads what the server sends until it closes or `wait` passes.
    async fn read_for(stream: &mut tokio::net::TcpStream, wait: Duration) -> (String, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let closed = loop {
            match tokio::time::timeout(wait, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"hello") {
                        break false;
                    }
                }
                Err(_) => break false,
            }
        };
        (String::from_utf8_lossy(&got).into_owned(), closed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_too_slow_with_its_headers_is_disconnected() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        let (addr, _stop) = server(limits).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let (_, closed) = read_for(&mut slow, Duration::from_secs(5)).await;
        assert!(
            closed,
            "the server kept a connection whose headers never ended"
        );
        // A prompt client is served.
        let mut prompt = tokio::net::TcpStream::connect(addr).await.unwrap();
        prompt
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = read_for(&mut prompt, Duration::from_secs(5)).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_unix_client_idle_before_its_headers_is_disconnected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = bind_unix(&path).unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnectionLimits::default()
        };
        tokio::spawn(serve_within(
            listener,
            router,
            std::future::pending(),
            limits,
        ));
        let mut idle = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the server kept an idle unix connection: {read:?}"
        );
        let mut prompt = tokio::net::UnixStream::connect(&path).await.unwrap();
        prompt
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(b"hello") {
            let n = tokio::time::timeout(Duration::from_secs(5), prompt.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_past_the_limit_wait_for_a_free_slot() {
        let limits = ConnectionLimits {
            max_connections: 1,
            ..ConnectionLimits::default()
        };
        let (addr, stop) = server(limits).await;
        let holder = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = read_for(&mut waiting, Duration::from_millis(400)).await;
        assert_eq!(answer, "", "served past the limit");
        drop(holder);
        let (answer, _) = read_for(&mut waiting, Duration::from_secs(5)).await;
        assert!(answer.ends_with("hello"), "{answer}");
        stop.send(()).unwrap();
    }
}
