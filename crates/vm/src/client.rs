//! The host side of the agent protocol: a gRPC client over the VM's agent socket (virtio-serial) or vsock, with a
//! deadline on every call.
//!
//! A virtio-serial port is one byte stream and QEMU's socket chardev takes one client at a time, so the client
//! keeps exactly one HTTP/2 connection and multiplexes every call and stdio stream over it. Bytes sent before
//! the agent opens its port wait in the socket, so the client can connect as soon as QEMU has created the socket
//! and simply wait for the first answer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use husk_core::stdio::Frame;
use husk_core::{Error, ErrorKind, Result};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use husk_agent_protocol::status::error_from_status;

use crate::proto::{self, PROTOCOL_MINOR, PROTOCOL_VERSION, agent_client::AgentClient as Raw};

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddr {
    /// QEMU's unix socket behind the VM's virtio-serial port: each connection starts with the
    /// [`handshake`](crate::handshake).
    Serial(PathBuf),
    /// A plain unix socket (the agent run on the host, for tests).
    Unix(PathBuf),
    /// A vsock address (guest CID, port).
    Vsock {
        /// Guest context ID.
        cid: u32,
        /// Port.
        port: u32,
    },
}

/// How long establishing a connection (with its handshake) may take after the agent is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default deadline of one call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one agent.
#[derive(Debug, Clone)]
pub struct AgentClient {
    raw: Raw<Channel>,
    channel: Channel,
    timeout: Duration,
    /// The minor protocol version the agent answered with (0 until `version` was called), shared by clones.
    minor: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

fn channel(addr: &AgentAddr, connect_timeout: Duration) -> Result<Channel> {
    // The URI is only a label: the connector decides where the bytes go.
    let endpoint = Endpoint::from_static("http://husk-agent").connect_timeout(connect_timeout);
    Ok(match addr.clone() {
        AgentAddr::Serial(path) => {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let mut s = tokio::net::UnixStream::connect(path).await?;
                    crate::handshake::host(&mut s).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }))
        }
        AgentAddr::Unix(path) => {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(TokioIo::new)
                }
            }))
        }
        AgentAddr::Vsock { cid, port } => {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_| async move {
                tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(cid, port))
                    .await
                    .map(TokioIo::new)
            }))
        }
    })
}

impl AgentClient {
    /// A client for `addr`; connects on the first call.
    pub fn new(addr: &AgentAddr, timeout: Duration) -> Result<Self> {
        Self::with_connect_timeout(addr, timeout, CONNECT_TIMEOUT)
    }

    fn with_connect_timeout(
        addr: &AgentAddr,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let channel = channel(addr, connect_timeout)?;
        Ok(AgentClient {
            raw: Raw::new(channel.clone()),
            channel,
            timeout,
            minor: Default::default(),
        })
    }

    /// Waits until the agent answers `version` (it is booting), up to `deadline`, and checks its protocol version.
    ///
    /// One connection waits for the whole deadline (the virtio-serial handshake waits for the agent); a new one
    /// is made only when a connection fails (QEMU not listening yet, a vsock agent not yet bound). Giving up on
    /// a live connection to QEMU's socket and opening another would only queue the new one behind it.
    pub async fn connect_when_ready(
        addr: &AgentAddr,
        deadline: Duration,
    ) -> Result<(Self, proto::VersionResponse)> {
        let start = Instant::now();
        let mut last = String::from("no answer");
        while start.elapsed() < deadline {
            let left = deadline.saturating_sub(start.elapsed());
            let client = AgentClient::with_connect_timeout(addr, left, left)?;
            match client.version().await {
                Ok(v) => return Ok((client.with_timeout(DEFAULT_CALL_TIMEOUT), v)),
                Err(e) if e.kind == ErrorKind::Unsupported => return Err(e),
                Err(e) => last = e.message,
            }
            drop(client);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(Error::timeout(format!(
            "guest agent did not answer within {deadline:?}: {last}"
        )))
    }

    /// The same connection with another per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The minor protocol version of the agent (from its last `version` answer; 0 before one).
    pub fn minor(&self) -> u32 {
        self.minor.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fails with `Unsupported` (naming `what`) when the agent is older than protocol 1.`minor`: a VM started by
    /// an older husk keeps its agent until it is recreated.
    pub fn require_minor(&self, minor: u32, what: &str) -> Result<()> {
        if self.minor() >= minor {
            return Ok(());
        }
        Err(Error::unsupported(format!(
            "driver vm: this VM's guest agent speaks protocol {PROTOCOL_VERSION}.{} and {what} needs {PROTOCOL_VERSION}.{minor} (this host speaks {PROTOCOL_VERSION}.{PROTOCOL_MINOR}): recreate the sandbox or container to get a new VM",
            self.minor()
        )))
    }

    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        r
    }

    async fn call<F, T>(&self, name: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(error_from_status(name, &s)),
            Err(_) => Err(Error::timeout(format!(
                "guest agent {name}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// The agent's version and health; fails with `Unsupported` when it speaks another protocol version.
    pub async fn version(&self) -> Result<proto::VersionResponse> {
        let v = self
            .call(
                "version",
                self.raw
                    .clone()
                    .version(self.request(proto::VersionRequest {
                        protocol: PROTOCOL_VERSION,
                    })),
            )
            .await?;
        if v.protocol != PROTOCOL_VERSION {
            return Err(Error::unsupported(format!(
                "guest agent speaks protocol {} but this host speaks {PROTOCOL_VERSION}: rebuild the guest image",
                v.protocol
            )));
        }
        self.minor
            .store(v.minor, std::sync::atomic::Ordering::Relaxed);
        Ok(v)
    }

    /// Creates a container from its configuration and layers (relative to the 9p share `share_tag`), without
    /// binds or volumes.
    pub async fn create_container(
        &self,
        config: &husk_core::ContainerConfig,
        share_tag: &str,
        layers: Vec<String>,
    ) -> Result<()> {
        self.create_container_with_mounts(config, share_tag, layers, "")
            .await
    }

    /// Creates a container from its configuration and layers (relative to the 9p share `share_tag`). The
    /// `host_path` of its binds and volumes is relative to the share `mounts_tag` (empty: it has none).
    pub async fn create_container_with_mounts(
        &self,
        config: &husk_core::ContainerConfig,
        share_tag: &str,
        layers: Vec<String>,
        mounts_tag: &str,
    ) -> Result<()> {
        let config_json = serde_json::to_string(config)
            .map_err(|e| Error::internal(format!("encode container config: {e}")))?;
        let req = proto::CreateContainerRequest {
            id: config.id.clone(),
            config_json,
            share_tag: share_tag.into(),
            layers,
            mounts_tag: mounts_tag.into(),
        };
        self.call(
            "create_container",
            self.raw.clone().create_container(self.request(req)),
        )
        .await
        .map(drop)
    }

    /// Starts a container's main process; returns its guest PID.
    pub async fn start(&self, id: &str) -> Result<i32> {
        let r = self
            .call(
                "start",
                self.raw
                    .clone()
                    .start(self.request(proto::StartRequest { id: id.into() })),
            )
            .await?;
        Ok(r.pid)
    }

    /// Starts another process in a container; returns its guest PID.
    pub async fn exec(
        &self,
        container_id: &str,
        exec_id: &str,
        process: &husk_core::ProcessConfig,
    ) -> Result<i32> {
        self.exec_with_deadline(container_id, exec_id, process, None)
            .await
    }

    /// Starts an exec that the agent kills (SIGKILL) if it still runs `deadline` after it started (health
    /// probes: the guest owns the deadline, so it holds whatever happens to this call).
    pub async fn exec_with_deadline(
        &self,
        container_id: &str,
        exec_id: &str,
        process: &husk_core::ProcessConfig,
        deadline: Option<Duration>,
    ) -> Result<i32> {
        let req = proto::ExecRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            process: Some(process_to_proto(process)),
            deadline_ms: deadline.map(|d| (d.as_millis() as u64).max(1)).unwrap_or(0),
        };
        Ok(self
            .call("exec", self.raw.clone().exec(self.request(req)))
            .await?
            .pid)
    }

    /// Sends `signal` to a process (`exec_id` empty = main), or to all of the container's processes.
    pub async fn signal(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: i32,
        all: bool,
    ) -> Result<()> {
        let req = proto::SignalRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            signal,
            all,
        };
        self.call("signal", self.raw.clone().signal(self.request(req)))
            .await
            .map(drop)
    }

    /// Waits (without the per-call deadline) until a process exits.
    pub async fn wait(&self, container_id: &str, exec_id: &str) -> Result<proto::WaitResponse> {
        let req = tonic::Request::new(proto::WaitRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
        });
        self.raw
            .clone()
            .wait(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| error_from_status("wait", &s))
    }

    /// Opens the stdio stream of a process: frames sent on the returned sender go to the process (Stdin,
    /// CloseStdin, Resize); the receiver yields its output, ending with Exit or Error.
    pub async fn stdio(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<(mpsc::Sender<Frame>, mpsc::Receiver<Frame>)> {
        let (in_tx, mut in_rx) = mpsc::channel::<Frame>(64);
        let (raw_tx, raw_rx) = mpsc::channel::<proto::StdioIn>(64);
        let first = proto::StdioIn {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            frame: Vec::new(),
        };
        raw_tx
            .send(first)
            .await
            .map_err(|_| Error::internal("stdio request channel closed"))?;
        tokio::spawn(async move {
            while let Some(f) = in_rx.recv().await {
                let msg = proto::StdioIn {
                    frame: f.encode(),
                    ..Default::default()
                };
                if raw_tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let mut stream = self
            .call(
                "stdio",
                self.raw
                    .clone()
                    .stdio(tonic::Request::new(ReceiverStream::new(raw_rx))),
            )
            .await?;
        let (out_tx, out_rx) = mpsc::channel::<Frame>(64);
        tokio::spawn(async move {
            loop {
                // Stop reading (and release the connection) as soon as nobody wants the output any more.
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = out_tx.closed() => break,
                };
                let frame = match msg {
                    Ok(Some(m)) => decode_frame(&m.frame),
                    Ok(None) => break,
                    Err(s) => Frame::Error(error_from_status("stdio", &s).message),
                };
                let last = matches!(frame, Frame::Exit(_) | Frame::Error(_));
                if out_tx.send(frame).await.is_err() || last {
                    break;
                }
            }
        });
        Ok((in_tx, out_rx))
    }

    /// Changes a container's limits (memory, CPU, PIDs), now and for its next start.
    pub async fn update_limits(
        &self,
        container_id: &str,
        resources: &husk_core::Resources,
    ) -> Result<()> {
        let req = proto::UpdateLimitsRequest {
            container_id: container_id.into(),
            resources_json: serde_json::to_string(resources)
                .map_err(|e| Error::internal(format!("limits as JSON: {e}")))?,
        };
        self.call(
            "update_limits",
            self.raw.clone().update_limits(self.request(req)),
        )
        .await
        .map(drop)
    }

    /// Resizes a process's terminal.
    pub async fn resize(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<()> {
        let req = proto::ResizeRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            rows: rows.into(),
            cols: cols.into(),
        };
        self.call("resize", self.raw.clone().resize(self.request(req)))
            .await
            .map(drop)
    }

    /// A container's resource usage.
    pub async fn stats(&self, container_id: &str) -> Result<proto::StatsResponse> {
        self.call(
            "stats",
            self.raw.clone().stats(self.request(proto::StatsRequest {
                container_id: container_id.into(),
            })),
        )
        .await
    }

    /// The processes of a container (guest PIDs).
    pub async fn top(&self, container_id: &str) -> Result<husk_core::Top> {
        let req = self.request(proto::StatsRequest {
            container_id: container_id.into(),
        });
        let r = self.call("top", self.raw.clone().top(req)).await?;
        Ok(husk_core::Top {
            titles: r.titles,
            processes: r.rows.into_iter().map(|r| r.cells).collect(),
        })
    }

    /// Every container the agent knows.
    pub async fn list(&self) -> Result<Vec<proto::ContainerInfo>> {
        Ok(self
            .call("list", self.raw.clone().list(self.request(proto::Empty {})))
            .await?
            .containers)
    }

    /// Freezes (`true`) or thaws a container.
    pub async fn pause(&self, id: &str, frozen: bool) -> Result<()> {
        self.call(
            "pause",
            self.raw.clone().pause(self.request(proto::PauseRequest {
                id: id.into(),
                frozen,
            })),
        )
        .await
        .map(drop)
    }

    /// Removes a container (kills its processes, drops its writable layer).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        self.call(
            "remove_container",
            self.raw
                .clone()
                .remove_container(self.request(proto::RemoveRequest { id: id.into() })),
        )
        .await
        .map(drop)
    }

    /// Describes `path` inside a container, as `lstat` would (a final symbolic link resolved inside it).
    pub async fn stat_path(&self, container_id: &str, path: &str) -> Result<husk_core::PathStat> {
        self.require_minor(1, "cp")?;
        let req = self.request(proto::PathRequest {
            container_id: container_id.into(),
            path: path.into(),
        });
        let r = self
            .call("stat_path", self.raw.clone().stat_path(req))
            .await?;
        Ok(husk_core::PathStat {
            name: r.name,
            size: r.size,
            mode: r.mode,
            mtime: r.mtime,
            link_target: r.link_target,
        })
    }

    /// A tar archive of `path` inside a container, streamed as the agent makes it (no deadline: it is as long
    /// as the tree). An archive that fails midway ends with a read error carrying the agent's message.
    pub async fn archive(
        &self,
        container_id: &str,
        path: &str,
    ) -> Result<husk_core::ArchiveReader> {
        self.require_minor(1, "cp")?;
        let req = tonic::Request::new(proto::PathRequest {
            container_id: container_id.into(),
            path: path.into(),
        });
        // The answer's headers come once the agent has checked the container and started the archive.
        let stream = match tokio::time::timeout(self.timeout, self.raw.clone().archive(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(s)) => return Err(error_from_status("archive", &s)),
            Err(_) => {
                return Err(Error::timeout(format!(
                    "guest agent archive: no answer within {:?}",
                    self.timeout
                )));
            }
        };
        let bytes = futures::StreamExt::map(stream, |r| match r {
            Ok(chunk) => Ok(bytes::Bytes::from(chunk.data)),
            Err(s) => Err(std::io::Error::other(
                error_from_status("archive", &s).message,
            )),
        });
        Ok(Box::pin(tokio_util::io::StreamReader::new(bytes)))
    }

    /// Unpacks the tar stream `archive` into the directory `dir` inside a container; returns once the agent
    /// has unpacked it all (or failed: its error wins over a broken stream).
    pub async fn extract(
        &self,
        container_id: &str,
        dir: &str,
        archive: husk_core::ArchiveReader,
        options: &husk_core::ExtractOptions,
    ) -> Result<()> {
        self.require_minor(1, "cp")?;
        let first = proto::ExtractRequest {
            container_id: container_id.into(),
            dir: dir.into(),
            copy_owners: options.copy_owners,
            no_overwrite_dir_non_dir: options.no_overwrite_dir_non_dir,
            data: Vec::new(),
        };
        let (tx, rx) = mpsc::channel::<proto::ExtractRequest>(4);
        tx.send(first)
            .await
            .map_err(|_| Error::internal("extract request channel closed"))?;
        // The archive is read while the call runs, a chunk at a time: never whole in memory.
        let (read_tx, read_rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        tokio::spawn(async move {
            let mut chunks = tokio_util::io::ReaderStream::with_capacity(archive, 64 * 1024);
            let mut outcome = Ok(());
            while let Some(chunk) = futures::StreamExt::next(&mut chunks).await {
                match chunk {
                    Ok(data) => {
                        let msg = proto::ExtractRequest {
                            data: data.to_vec(),
                            ..Default::default()
                        };
                        if tx.send(msg).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            let _ = read_tx.send(outcome);
        });
        let r = self
            .raw
            .clone()
            .extract(tonic::Request::new(ReceiverStream::new(rx)))
            .await;
        r.map_err(|s| error_from_status("extract", &s))?;
        match read_rx.await {
            Ok(Err(e)) => Err(Error::io("read the archive to copy into the container", e)),
            _ => Ok(()),
        }
    }

    /// Asks the agent to stop every container and power the VM off.
    pub async fn shutdown(&self) -> Result<()> {
        self.call(
            "shutdown",
            self.raw.clone().shutdown(self.request(proto::Empty {})),
        )
        .await
        .map(drop)
    }

    /// Gives a guest restored from a template its sandbox's settings (`boot_options`, in the kernel command
    /// line's syntax), the host's clock and a fresh random seed.
    pub async fn configure(&self, boot_options: &str) -> Result<()> {
        self.require_minor(2, "a VM started from a template")?;
        let realtime_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let seed: [u8; 32] = rand::random();
        self.call(
            "configure",
            self.raw
                .clone()
                .configure(self.request(proto::ConfigureRequest {
                    boot_options: boot_options.to_string(),
                    realtime_ns,
                    seed: seed.to_vec(),
                })),
        )
        .await
        .map(drop)
    }

    /// The raw generated client, for calls the wrapper does not cover.
    pub fn raw(&self) -> Raw<Channel> {
        self.raw.clone()
    }

    /// The underlying HTTP/2 channel (tests send malformed requests on it).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }
}

fn decode_frame(bytes: &[u8]) -> Frame {
    if bytes.len() < 8 {
        return Frame::Error("guest agent sent a truncated stdio frame".into());
    }
    Frame::decode(bytes[0], bytes[8..].to_vec())
        .unwrap_or_else(|e| Frame::Error(format!("guest agent sent a bad stdio frame: {e}")))
}

/// The protocol form of a process.
pub fn process_to_proto(p: &husk_core::ProcessConfig) -> proto::Process {
    proto::Process {
        args: p.args.clone(),
        env: p.env.clone(),
        cwd: p.cwd.clone(),
        user: p.user.clone(),
        tty: p.tty,
        stdin: p.stdin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_agent_older_than_a_call_needs_is_refused_clearly() {
        let c = AgentClient::new(
            &AgentAddr::Unix("/nonexistent/agent.sock".into()),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(c.minor(), 0, "no version answer yet");
        let e = c.require_minor(1, "cp").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message.contains("driver vm")
                && e.message.contains("1.0")
                && e.message.contains("recreate"),
            "{e}"
        );
        c.minor
            .store(PROTOCOL_MINOR, std::sync::atomic::Ordering::Relaxed);
        assert!(c.require_minor(1, "cp").is_ok());
        assert!(c.clone().require_minor(1, "cp").is_ok(), "clones share it");
    }

    #[test]
    fn stdio_frames_decode() {
        assert_eq!(decode_frame(&Frame::Exit(3).encode()), Frame::Exit(3));
        assert!(matches!(decode_frame(&[1, 0]), Frame::Error(_)));
        assert!(matches!(
            decode_frame(&[9, 0, 0, 0, 0, 0, 0, 0]),
            Frame::Error(_)
        ));
    }
}
