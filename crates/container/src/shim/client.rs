//! The daemon's side of the shim: starting one, and calling it over its control socket.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use husk_core::{Error, ErrorKind, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::proto::{Request, Response};

/// How long a shim may take to create its container (libcontainer create, including rootfs setup).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts `exe shim CONFIG` in its own session, waits for its one-line answer, and returns the container's init
/// PID. The shim's stderr goes to `stderr_log`. A background task reaps the shim when it exits (while this
/// daemon lives; after a daemon restart the shim is no longer our child).
pub async fn spawn_shim(exe: &Path, config: &Path, stderr_log: &Path) -> Result<i32> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .map_err(|e| Error::io(format!("open {}", stderr_log.display()), e))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg0("husk")
        .arg("shim")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(false);
    // No pre_exec hook (the shim leaves our session itself): without one the child is made with posix_spawn
    // (vfork-like) instead of a fork that copies the daemon's page tables, which cost more than the shim's exec.
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("start {} shim", exe.display()), e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::internal("shim stdout missing"))?;
    let mut line = String::new();
    let read =
        tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    match read {
        Err(_) => {
            return Err(Error::timeout(
                "the shim did not finish creating the container within 60 s",
            ));
        }
        Ok(Err(e)) => return Err(Error::io("read the shim's answer", e)),
        Ok(Ok(0)) => {
            return Err(Error::backend(format!(
                "the shim exited without an answer (see {})",
                stderr_log.display()
            )));
        }
        Ok(Ok(_)) => {}
    }
    let response: Response = serde_json::from_str(&line)
        .map_err(|e| Error::internal(format!("bad shim answer {line:?}: {e}")))?;
    if !response.ok {
        return Err(response
            .error
            .unwrap_or_else(|| Error::backend("the shim failed without a message")));
    }
    Ok(response.pid.unwrap_or(0))
}

/// A client of one shim's control socket.
#[derive(Debug, Clone)]
pub struct ShimClient {
    socket: PathBuf,
}

impl ShimClient {
    /// A client for the shim listening at `socket`.
    pub fn new(socket: PathBuf) -> ShimClient {
        ShimClient { socket }
    }

    async fn send(&self, request: &Request) -> Result<(Response, BufReader<UnixStream>)> {
        let mut conn = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    Error::new(ErrorKind::NotFound, "the container's shim is not running")
                }
                _ => Error::io(
                    format!("connect to the shim at {}", self.socket.display()),
                    e,
                ),
            })?;
        let mut line = serde_json::to_vec(request).map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        conn.write_all(&line)
            .await
            .map_err(|e| Error::io("send to the shim", e))?;
        // Frames may follow the answer at once (exec, attach): the reader keeps whatever it read past the line.
        let mut reader = BufReader::new(conn);
        let mut answer = String::new();
        let n = reader
            .read_line(&mut answer)
            .await
            .map_err(|e| Error::io("read from the shim", e))?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::NotFound,
                "the shim closed the connection (the container has exited)",
            ));
        }
        let response: Response = serde_json::from_str(&answer)
            .map_err(|e| Error::internal(format!("bad shim answer: {e}")))?;
        if !response.ok {
            return Err(response
                .error
                .unwrap_or_else(|| Error::backend("the shim failed without a message")));
        }
        Ok((response, reader))
    }

    /// Sends a request and returns the answer.
    pub async fn call(&self, request: &Request) -> Result<Response> {
        self.send(request).await.map(|(r, _)| r)
    }

    /// Sends a streaming request (`attach`, `exec`) and returns the answer and the connection, which now
    /// carries stdio frames (buffered: frames read along with the answer are kept).
    pub async fn stream(&self, request: &Request) -> Result<(Response, BufReader<UnixStream>)> {
        self.send(request).await
    }
}
