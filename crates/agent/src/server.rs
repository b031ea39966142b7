//! Serving the agent's gRPC service on a virtio-serial port, a vsock listener or (for tests on the host) a unix
//! socket.
//!
//! The virtio-serial port is one byte stream that the host may close and open again (a daemon restart). The
//! guest sees the host's side closed as end of file (and `POLLHUP` until it comes back), so each host connection
//! gets a fresh HTTP/2 server connection on the same open port.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use husk_agent_protocol::proto::agent_server::AgentServer;
use husk_core::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::fdio::FdStream;
use crate::service::AgentService;

/// Serves one HTTP/2 connection until it ends.
pub async fn serve_connection<IO>(
    service: AgentService,
    io: IO,
) -> std::result::Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        TowerToHyperService::new(AgentServer::new(service).max_decoding_message_size(8 << 20));
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await
}

/// Whether the host side of the port is connected (`POLLHUP` clear).
fn host_connected(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd with a zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r >= 0 && p.revents & libc::POLLHUP == 0
}

/// Serves on the virtio-serial port at `dev` forever, one host connection after another. Each starts with the
/// handshake of `husk_agent_protocol::handshake`, which also skips what is left of an earlier connection.
pub async fn serve_port(service: AgentService, dev: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .context(format!("open {}", dev.display()))?;
    let fd = OwnedFd::from(file);
    loop {
        while !host_connected(&fd) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let conn = fd.try_clone().context("duplicate the port descriptor")?;
        let mut stream = FdStream::new(conn).context("watch the port")?;
        if husk_agent_protocol::handshake::agent(&mut stream)
            .await
            .is_err()
        {
            // The host went away before finishing the handshake (reads give end of file until one is back).
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if let Err(e) = serve_connection(service.clone(), stream).await {
            crate::log!("host connection ended: {e}");
        }
    }
}

/// Serves every connection of a vsock listener on `port`.
pub async fn serve_vsock(service: AgentService, port: u32) -> Result<()> {
    let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener =
        tokio_vsock::VsockListener::bind(addr).context(format!("listen on vsock port {port}"))?;
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("accept a vsock connection")?;
        tokio::spawn(serve_connection(service.clone(), stream));
    }
}

/// Serves every connection of a unix socket listener at `path` (the agent run on the host, for tests).
pub async fn serve_unix(service: AgentService, path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener =
        tokio::net::UnixListener::bind(path).context(format!("listen on {}", path.display()))?;
    loop {
        let (stream, _) = listener.accept().await.context("accept a connection")?;
        tokio::spawn(serve_connection(service.clone(), stream));
    }
}
