//! The agent's gRPC service: containers, their processes and stdio, as the host asks for them.
//!
//! Every request is checked before anything is done (unknown container, empty command, bad frame ...) and
//! answered with a clear status; nothing a request carries can take the agent down.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::Stream;
use husk_agent_protocol::proto::{self, agent_server::Agent};
use husk_agent_protocol::status::status_from_error;
use husk_core::stdio::{Frame, read_frame, write_frame};
use husk_core::{ContainerConfig, Error, MountKind, Result};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use husk_container::container_fs::{FsOp, FsTarget};
use husk_container::shim::Request as ShimRequest;

use crate::files::{self, Helper};
use crate::reaper::Reaper;
use crate::runtime::{ContainerSetup, Runtime};
use crate::shim::{Bundle, Maker};

/// Where the agent keeps its state and finds its shares.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    /// Per-container directories live under `<run_dir>/containers`.
    pub run_dir: PathBuf,
    /// Mounted 9p shares by tag (mounted by a boot thread while the agent already serves).
    pub shares: Arc<crate::init::Pending<HashMap<String, PathBuf>>>,
    /// The cgroup v2 root, when the guest has one.
    pub cgroup_root: Option<PathBuf>,
    /// Containers share one PID namespace (the sandbox was made with `share_pid`).
    pub share_pid: bool,
    /// A default seccomp program compiled on the host for a capability set: (capabilities, program).
    pub seccomp_seed: Option<(Vec<String>, Vec<u8>)>,
}

/// Output not yet read by anyone is kept up to this many bytes (older output is dropped).
const BUFFER_LIMIT: usize = 1 << 20;

/// A process's output and who reads it.
#[derive(Debug, Default)]
struct Hub {
    buffered: Vec<Frame>,
    buffered_bytes: usize,
    readers: Vec<mpsc::Sender<Frame>>,
    /// The last frame (Exit or Error), once the process ended; every later reader gets it.
    end: Option<Frame>,
}

impl Hub {
    fn publish(&mut self, frame: Frame) {
        self.readers.retain(|r| !r.is_closed());
        if matches!(frame, Frame::Exit(_) | Frame::Error(_)) {
            for r in self.readers.drain(..) {
                let _ = r.try_send(frame.clone());
            }
            self.end = Some(frame);
            return;
        }
        if self.readers.is_empty() {
            if let Frame::Stdout(b) | Frame::Stderr(b) = &frame {
                self.buffered_bytes += b.len();
            }
            self.buffered.push(frame);
            while self.buffered_bytes > BUFFER_LIMIT && !self.buffered.is_empty() {
                if let Frame::Stdout(b) | Frame::Stderr(b) = self.buffered.remove(0) {
                    self.buffered_bytes -= b.len();
                }
            }
            return;
        }
        for r in &self.readers {
            // A reader that cannot keep up loses frames rather than stalling the process.
            let _ = r.try_send(frame.clone());
        }
    }

    fn subscribe(&mut self) -> mpsc::Receiver<Frame> {
        let (tx, rx) = mpsc::channel(1024 + self.buffered.len());
        for f in self.buffered.drain(..) {
            let _ = tx.try_send(f);
        }
        self.buffered_bytes = 0;
        match &self.end {
            Some(end) => {
                let _ = tx.try_send(end.clone());
            }
            None => self.readers.push(tx),
        }
        rx
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ExitInfo {
    code: i32,
    at_ns: i64,
    oom_killed: bool,
}

/// One process (main or exec) of a container.
#[derive(Debug)]
struct Proc {
    tty: bool,
    pid: Mutex<i32>,
    hub: Mutex<Hub>,
    /// Frames for the process (stdin, end of input, terminal size), sent on its shim connection.
    input: Mutex<Option<mpsc::UnboundedSender<Frame>>>,
    exit: watch::Sender<Option<ExitInfo>>,
}

impl Proc {
    fn new(tty: bool) -> Arc<Proc> {
        Arc::new(Proc {
            tty,
            pid: Mutex::new(0),
            hub: Mutex::new(Hub::default()),
            input: Mutex::new(None),
            exit: watch::channel(None).0,
        })
    }

    fn pid(&self) -> i32 {
        *lock(&self.pid)
    }

    fn running(&self) -> bool {
        self.pid() > 0 && self.exit.borrow().is_none()
    }

    /// Sends a frame to the process; false when it has no input any more.
    fn send(&self, frame: Frame) -> bool {
        lock(&self.input)
            .as_ref()
            .is_some_and(|tx| tx.send(frame).is_ok())
    }

    /// Records the end of the process: no more input, the exit frame last, then the exit for waiters.
    fn finish(&self, code: i32, oom_killed: bool) {
        *lock(&self.input) = None;
        let at_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        lock(&self.hub).publish(Frame::Exit(code));
        self.exit.send_replace(Some(ExitInfo {
            code,
            at_ns,
            oom_killed,
        }));
    }

    /// Takes over a shim connection that carries the process's stdio: frames from [`Proc::send`] go out on it,
    /// output frames go to the hub. The task ends with the stream and yields the exit code, when one came.
    fn connect(
        self: &Arc<Proc>,
        conn: tokio::io::BufReader<tokio::net::UnixStream>,
    ) -> tokio::task::JoinHandle<Option<i32>> {
        let (mut r, mut w) = tokio::io::split(conn);
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        *lock(&self.input) = Some(tx);
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let last = f == Frame::CloseStdin;
                if write_frame(&mut w, &f).await.is_err() {
                    break;
                }
                if last {
                    // The shim closes the process's stdin when its client's input ends (as the daemon's does).
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                    break;
                }
            }
        });
        let p = self.clone();
        tokio::spawn(async move {
            loop {
                match read_frame(&mut r).await {
                    Ok(Some(Frame::Exit(code))) => return Some(code),
                    Ok(Some(f @ (Frame::Stdout(_) | Frame::Stderr(_)))) => lock(&p.hub).publish(f),
                    Ok(Some(Frame::Error(msg))) => {
                        lock(&p.hub)
                            .publish(Frame::Stderr(format!("husk-agent: {msg}\n").into_bytes()));
                        return None;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
        })
    }
}

#[derive(Debug)]
struct Container {
    setup: ContainerSetup,
    config: ContainerConfig,
    /// Its memory, CPU and PIDs limits: the configuration's until an `update_limits` changes them.
    limits: Mutex<husk_core::Resources>,
    main: Mutex<Arc<Proc>>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: Mutex<bool>,
}

/// The sandbox's name files the host put in the share (`.etc/`), as (path in the container, file in the guest).
fn name_files(share: &std::path::Path) -> Vec<(String, PathBuf)> {
    let dir = share.join(".etc");
    ["hosts", "resolv.conf", "hostname"]
        .iter()
        .map(|name| (format!("/etc/{name}"), dir.join(name)))
        .filter(|(_, source)| source.is_file())
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The gRPC service.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<Inner>,
}

struct Inner {
    env: AgentEnv,
    maker: Maker,
    runtime: Arc<dyn Runtime>,
    reaper: Arc<Reaper>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// The holder of the shared PID namespace, once made.
    pid_holder: Mutex<Option<i32>>,
    started: Instant,
    shutdown: mpsc::Sender<()>,
}

fn st(e: Error) -> Status {
    status_from_error(&e)
}

fn valid_id(field: &str, id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        || id.starts_with('.')
    {
        return Err(Error::invalid(
            field,
            format!("bad {field} {id:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

impl AgentService {
    /// A service preparing container roots with `runtime`; `shutdown` is signalled when the host asks to shut
    /// down.
    pub fn new(
        env: AgentEnv,
        runtime: Arc<dyn Runtime>,
        reaper: Arc<Reaper>,
        shutdown: mpsc::Sender<()>,
    ) -> Result<Self> {
        let maker = Maker::new(&env.run_dir)?;
        if let Some((capabilities, program)) = &env.seccomp_seed {
            maker.seccomp.insert(capabilities, program.clone());
        }
        Ok(AgentService {
            inner: Arc::new(Inner {
                maker,
                env,
                runtime,
                reaper,
                pid_holder: Mutex::new(None),
                containers: Mutex::new(HashMap::new()),
                started: Instant::now(),
                shutdown,
            }),
        })
    }

    /// The holder of the shared PID namespace, made on first use (and again if it died).
    fn pid_holder(&self) -> Result<i32> {
        let mut holder = lock(&self.inner.pid_holder);
        if let Some(pid) = *holder
            && std::path::Path::new(&format!("/proc/{pid}/ns/pid")).exists()
        {
            return Ok(pid);
        }
        let pid = self
            .inner
            .runtime
            .pid_namespace_holder(&self.inner.reaper)?;
        *holder = Some(pid);
        Ok(pid)
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        lock(&self.inner.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("container {id:?} in this VM")))
    }

    fn process(&self, container_id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Proc>)> {
        let c = self.container(container_id)?;
        let p = if exec_id.is_empty() {
            lock(&c.main).clone()
        } else {
            lock(&c.execs).get(exec_id).cloned().ok_or_else(|| {
                Error::not_found(format!("exec {exec_id:?} of container {container_id:?}"))
            })?
        };
        Ok((c, p))
    }

    fn do_create(&self, req: proto::CreateContainerRequest) -> Result<()> {
        valid_id("id", &req.id)?;
        let config: ContainerConfig = serde_json::from_str(&req.config_json).map_err(|e| {
            Error::invalid("config_json", format!("not a container configuration: {e}"))
        })?;
        if config.id != req.id {
            return Err(Error::invalid(
                "config_json",
                format!("configuration is for {:?}, not {:?}", config.id, req.id),
            ));
        }
        if config.process.args.is_empty() {
            return Err(Error::invalid("args", "the container's command is empty"));
        }
        let mut config = config;
        self.locate_mount_sources(&mut config, &req.mounts_tag)?;
        let share = self.share(&req.share_tag)?;
        let mut lower = Vec::new();
        for l in &req.layers {
            lower.push(share.join(inside_share("layers", l)?));
        }
        let setup = ContainerSetup {
            id: req.id.clone(),
            dir: self.inner.env.run_dir.join("containers").join(&req.id),
            lower,
            cgroup: self
                .inner
                .env
                .cgroup_root
                .as_ref()
                .map(|r| r.join(crate::shim::cgroup_path(&req.id).trim_start_matches('/'))),
            shared_pid_ns: if self.inner.env.share_pid {
                Some(self.pid_holder()?)
            } else {
                None
            },
            etc_files: name_files(share),
        };
        let mut containers = lock(&self.inner.containers);
        if containers.contains_key(&req.id) {
            return Err(Error::conflict(format!(
                "container {:?} already exists in this VM",
                req.id
            )));
        }
        self.inner.runtime.create(&setup)?;
        // The spec is checked now (user, working directory, capabilities, seccomp profile), so a container that
        // cannot start is refused at create, as on the linux driver.
        if let Err(e) = self.inner.maker.write_bundle(&setup, &config) {
            let _ = self.inner.runtime.delete(&setup);
            return Err(e);
        }
        let main = Proc::new(config.process.tty);
        containers.insert(
            req.id,
            Arc::new(Container {
                setup,
                limits: Mutex::new(config.resources.clone()),
                config,
                main: Mutex::new(main),
                execs: Mutex::new(HashMap::new()),
                paused: Mutex::new(false),
            }),
        );
        Ok(())
    }

    fn share(&self, tag: &str) -> Result<&PathBuf> {
        self.inner
            .env
            .shares
            .get()
            .get(tag)
            .ok_or_else(|| Error::not_found(format!("9p share {tag:?} in this VM")))
    }

    /// Points the container's binds and volumes at their sources in the mounts share `tag`: the host bound
    /// each source at `<container>/<n>` there, and sent that relative path as the mount's `host_path`.
    fn locate_mount_sources(&self, config: &mut ContainerConfig, tag: &str) -> Result<()> {
        for m in config
            .mounts
            .iter_mut()
            .filter(|m| m.kind == MountKind::Bind || m.kind == MountKind::Volume)
        {
            if tag.is_empty() {
                return Err(Error::unsupported(format!(
                    "driver vm: the {} mount on {} needs the VM's mounts share, and the host sent none",
                    m.kind, m.destination
                )));
            }
            let source = self.share(tag)?.join(inside_share("mounts", &m.host_path)?);
            if std::fs::symlink_metadata(&source).is_err() {
                return Err(Error::not_found(format!(
                    "the source of the {} mount on {} in the VM's mounts share ({})",
                    m.kind,
                    m.destination,
                    source.display()
                )));
            }
            m.host_path = source.to_string_lossy().into_owned();
        }
        Ok(())
    }

    /// Where a container-fs helper finds the files of `c`: in its main process's mount namespace while it
    /// runs (a pidfd of it, taken while the agent knows it to be running), else a view of its root
    /// filesystem (kept mounted until the container is removed) with its binds and volumes.
    fn fs_target(&self, c: &Container) -> (FsTarget, Option<OwnedFd>) {
        let main = lock(&c.main).clone();
        if main.running()
            && let Ok(pidfd) = husk_container::fs_helper::pidfd(main.pid())
            && main.running()
        {
            return (FsTarget::Process, Some(pidfd));
        }
        (
            FsTarget::View {
                rootfs: c.setup.rootfs(),
                readonly_rootfs: c.config.security.readonly_rootfs,
                mounts: c.config.mounts.clone(),
            },
            None,
        )
    }

    /// Starts a container-fs helper for `op` on container `id`.
    fn fs_helper(&self, id: &str, op: FsOp, input: bool) -> Result<Helper> {
        let c = self.container(id)?;
        let (target, pidfd) = self.fs_target(&c);
        Helper::start(&self.inner.reaper, target, op, pidfd.as_ref(), input)
    }

    /// Starts the container's main process: a shim creates the container from the bundle, the agent attaches to
    /// its output before starting it (so no output is missed), and a watcher records the exit.
    ///
    /// `first` says the bundle written at create was never used; a restart writes it again.
    async fn launch_main(&self, c: &Arc<Container>, p: &Arc<Proc>, first: bool) -> Result<i32> {
        let bundle = Bundle::of(&c.setup);
        let (this, c2, b2) = (self.clone(), c.clone(), bundle.clone());
        let init_pid = tokio::task::spawn_blocking(move || {
            if !first {
                // A restart: the limits an update set since create count.
                let mut config = c2.config.clone();
                config.resources = lock(&c2.limits).clone();
                this.inner.maker.write_bundle(&c2.setup, &config)?;
            }
            crate::shim::spawn(&this.inner.reaper, &b2)
        })
        .await
        .map_err(|e| Error::internal(format!("shim start task: {e}")))??;
        let client = bundle.client();
        if let Err(e) = files::apply_propagation(&self.inner.reaper, &c.config, init_pid).await {
            let _ = client.call(&ShimRequest::Shutdown).await;
            return Err(e);
        }
        let output = match client.stream(&ShimRequest::Attach { stdin: true }).await {
            Ok((_, conn)) => p.connect(conn),
            Err(e) => {
                let _ = client.call(&ShimRequest::Shutdown).await;
                return Err(e);
            }
        };
        let pid = match client.call(&ShimRequest::Start).await {
            Ok(r) => r.pid.unwrap_or(0),
            Err(e) => {
                let _ = client.call(&ShimRequest::Shutdown).await;
                return Err(e);
            }
        };
        *lock(&p.pid) = pid;
        let p = p.clone();
        tokio::spawn(async move {
            let waited = client.call(&ShimRequest::Wait).await;
            // The exit frame comes after the last output: the stream ends once everything was forwarded.
            let streamed = output.await.ok().flatten();
            let (code, oom) = match waited.ok().and_then(|r| r.exit) {
                Some(exit) => (exit.code, exit.oom_killed),
                None => (streamed.unwrap_or(255), false),
            };
            p.finish(code, oom);
        });
        Ok(pid)
    }

    /// Runs `process` in the running container `c` through its shim (libcontainer joins the container's
    /// namespaces and cgroup).
    async fn launch_exec(
        &self,
        c: &Arc<Container>,
        p: &Arc<Proc>,
        process: &husk_core::ProcessConfig,
        deadline_ms: u64,
    ) -> Result<i32> {
        if process.args.is_empty() {
            return Err(Error::invalid("args", "the command is empty"));
        }
        let process_json = self
            .inner
            .maker
            .exec_process(&c.setup, &c.config, process)?;
        let (r, conn) = Bundle::of(&c.setup)
            .client()
            .stream(&ShimRequest::Exec {
                process: process_json,
                stdin: process.stdin,
                deadline_ms: (deadline_ms > 0).then_some(deadline_ms),
            })
            .await?;
        let pid = r.pid.unwrap_or(0);
        *lock(&p.pid) = pid;
        let output = p.connect(conn);
        let p = p.clone();
        tokio::spawn(async move {
            let code = output.await.ok().flatten().unwrap_or(255);
            p.finish(code, false);
        });
        Ok(pid)
    }

    async fn feed_input(p: Arc<Proc>, mut input: Streaming<proto::StdioIn>) {
        while let Ok(Some(msg)) = input.message().await {
            if msg.frame.is_empty() {
                continue;
            }
            let frame = if msg.frame.len() < 8 {
                Err("truncated frame".to_string())
            } else {
                Frame::decode(msg.frame[0], msg.frame[8..].to_vec()).map_err(|e| e.to_string())
            };
            match frame {
                Ok(f @ (Frame::Stdin(_) | Frame::CloseStdin | Frame::Resize { .. })) => {
                    p.send(f);
                }
                Ok(_) | Err(_) => {
                    // Output frames or garbage from the host: tell it, keep the process alive.
                    lock(&p.hub).readers.retain(|r| {
                        r.try_send(Frame::Stderr(
                            b"husk-agent: ignored a bad stdio frame\n".to_vec(),
                        ))
                        .is_ok()
                    });
                }
            }
        }
    }
}

/// `rel` (a path the host sent, relative to a share) as a relative path that stays inside the share.
fn inside_share<'a>(field: &str, rel: &'a str) -> Result<&'a std::path::Path> {
    let path = std::path::Path::new(rel);
    if rel.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(Error::invalid(
            field,
            format!("share path {rel:?} must be relative and stay inside the share"),
        ));
    }
    Ok(path)
}

fn resize(p: &Proc, rows: u16, cols: u16) -> Result<()> {
    if !p.tty {
        return Err(Error::conflict("the process has no terminal"));
    }
    if !p.send(Frame::Resize { rows, cols }) {
        return Err(Error::conflict("the process has ended"));
    }
    Ok(())
}

/// The sum over every device of one `io.stat` counter (`rbytes=` or `wbytes=`).
fn io_stat_bytes(io_stat: &str, key: &str) -> u64 {
    io_stat
        .split_whitespace()
        .filter_map(|field| field.strip_prefix(key))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

fn read_u64(path: PathBuf) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A `ps`-like row for `pid` from /proc (UID, PID, PPID, STIME, TIME, CMD), or `None` if it is gone.
fn process_row(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (ppid, cpu_ticks, start_ticks) = (
        rest.get(1).copied().unwrap_or("0"),
        field(11) + field(12),
        field(19),
    );
    let hz = 100; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("");
    let cmd: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let boot_secs = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<i64>().ok())
        })
        .unwrap_or(0);
    let started = chrono_like_hhmm(boot_secs + (start_ticks / hz) as i64);
    let cpu = cpu_ticks / hz;
    Some(vec![
        uid.to_string(),
        pid.to_string(),
        ppid.to_string(),
        started,
        format!("{:02}:{:02}:{:02}", cpu / 3600, (cpu / 60) % 60, cpu % 60),
        cmd.join(" "),
    ])
}

/// `HH:MM` (UTC) of a Unix time.
fn chrono_like_hhmm(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}", day / 3600, (day / 60) % 60)
}

/// Time since the (guest) kernel booted, from /proc/uptime.
fn guest_uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

type OutStream = Pin<Box<dyn Stream<Item = std::result::Result<proto::StdioOut, Status>> + Send>>;

type ArchiveStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::ArchiveChunk, Status>> + Send>>;

/// Bytes per archive message.
const ARCHIVE_CHUNK: usize = 64 * 1024;

fn bytes_of(data: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(data)
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn version(
        &self,
        _req: Request<proto::VersionRequest>,
    ) -> std::result::Result<Response<proto::VersionResponse>, Status> {
        Ok(Response::new(proto::VersionResponse {
            protocol: proto::PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: kernel_release(),
            uptime_ms: guest_uptime_ms()
                .unwrap_or_else(|| self.inner.started.elapsed().as_millis() as u64),
            containers: lock(&self.inner.containers).len() as u32,
            minor: proto::PROTOCOL_MINOR,
        }))
    }

    async fn create_container(
        &self,
        req: Request<proto::CreateContainerRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let this = self.clone();
        let req = req.into_inner();
        tokio::task::spawn_blocking(move || this.do_create(req))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(st)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn start(
        &self,
        req: Request<proto::StartRequest>,
    ) -> std::result::Result<Response<proto::StartResponse>, Status> {
        let id = req.into_inner().id;
        let c = self.container(&id).map_err(st)?;
        let old = lock(&c.main).clone();
        if old.running() {
            return Err(st(Error::conflict(format!(
                "container {id:?} is already running"
            ))));
        }
        // A restart gets a fresh process record; readers of the old one saw its exit.
        let first = old.pid() == 0;
        let main = if first {
            old
        } else {
            Proc::new(c.config.process.tty)
        };
        *lock(&c.main) = main.clone();
        let pid = self.launch_main(&c, &main, first).await.map_err(st)?;
        Ok(Response::new(proto::StartResponse { pid }))
    }

    async fn exec(
        &self,
        req: Request<proto::ExecRequest>,
    ) -> std::result::Result<Response<proto::StartResponse>, Status> {
        let req = req.into_inner();
        valid_id("exec_id", &req.exec_id).map_err(st)?;
        let c = self.container(&req.container_id).map_err(st)?;
        let main = lock(&c.main).clone();
        if !main.running() {
            return Err(st(Error::conflict(format!(
                "container {:?} is not running",
                req.container_id
            ))));
        }
        if *lock(&c.paused) {
            return Err(st(Error::conflict(format!(
                "container {:?} is paused: unpause it first",
                req.container_id
            ))));
        }
        let p = req
            .process
            .ok_or_else(|| st(Error::invalid("process", "exec needs a process")))?;
        let process = husk_core::ProcessConfig {
            args: p.args,
            env: p.env,
            cwd: p.cwd,
            user: p.user,
            tty: p.tty,
            stdin: p.stdin,
        };
        let proc_ = Proc::new(process.tty);
        {
            let mut execs = lock(&c.execs);
            if execs
                .get(&req.exec_id)
                .is_some_and(|e| e.pid() == 0 || e.running())
            {
                return Err(st(Error::conflict(format!(
                    "exec {:?} already exists",
                    req.exec_id
                ))));
            }
            execs.insert(req.exec_id.clone(), proc_.clone());
        }
        match self
            .launch_exec(&c, &proc_, &process, req.deadline_ms)
            .await
        {
            Ok(pid) => Ok(Response::new(proto::StartResponse { pid })),
            Err(e) => {
                lock(&c.execs).remove(&req.exec_id);
                Err(st(e))
            }
        }
    }

    async fn signal(
        &self,
        req: Request<proto::SignalRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let req = req.into_inner();
        if !(1..=64).contains(&req.signal) {
            return Err(st(Error::invalid(
                "signal",
                format!("signal {} is not between 1 and 64", req.signal),
            )));
        }
        let (c, p) = self.process(&req.container_id, &req.exec_id).map_err(st)?;
        if !p.running() {
            return Err(st(Error::conflict(format!(
                "container {:?}: the process is not running",
                req.container_id
            ))));
        }
        if req.exec_id.is_empty() {
            Bundle::of(&c.setup)
                .client()
                .call(&ShimRequest::Kill {
                    signal: req.signal,
                    all: req.all,
                })
                .await
                .map_err(st)?;
        } else {
            // SAFETY: kill(2) of an exec of this container, by the PID its shim reported.
            unsafe { libc::kill(p.pid(), req.signal) };
        }
        Ok(Response::new(proto::Empty {}))
    }

    async fn wait(
        &self,
        req: Request<proto::WaitRequest>,
    ) -> std::result::Result<Response<proto::WaitResponse>, Status> {
        let req = req.into_inner();
        let (_, p) = self.process(&req.container_id, &req.exec_id).map_err(st)?;
        let mut rx = p.exit.subscribe();
        let info = loop {
            if let Some(info) = *rx.borrow_and_update() {
                break info;
            }
            if rx.changed().await.is_err() {
                return Err(Status::unavailable("the process record went away"));
            }
        };
        Ok(Response::new(proto::WaitResponse {
            exit_code: info.code,
            oom_killed: info.oom_killed,
            finished_at_ns: info.at_ns,
        }))
    }

    type StdioStream = OutStream;

    async fn stdio(
        &self,
        req: Request<Streaming<proto::StdioIn>>,
    ) -> std::result::Result<Response<OutStream>, Status> {
        let mut input = req.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            st(Error::bad_request(
                "a stdio stream must start with a message naming the process",
            ))
        })?;
        let (_, p) = self
            .process(&first.container_id, &first.exec_id)
            .map_err(st)?;
        let frames = lock(&p.hub).subscribe();
        tokio::spawn(AgentService::feed_input(p, input));
        let out = ReceiverStream::new(frames);
        let out = futures::StreamExt::map(out, |f| Ok(proto::StdioOut { frame: f.encode() }));
        Ok(Response::new(Box::pin(out)))
    }

    async fn update_limits(
        &self,
        req: Request<proto::UpdateLimitsRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let req = req.into_inner();
        let c = self.container(&req.container_id).map_err(st)?;
        let limits: husk_core::Resources = serde_json::from_str(&req.resources_json)
            .map_err(|e| st(Error::invalid("resources_json", format!("not limits: {e}"))))?;
        if lock(&c.main).running() {
            let path = crate::shim::cgroup_path(&c.setup.id);
            let json = husk_container::spec::limits_json(&limits);
            tokio::task::spawn_blocking(move || husk_container::cgroups::set_limits(&path, &json))
                .await
                .map_err(|e| st(Error::internal(format!("limits task: {e}"))))?
                .map_err(st)?;
        }
        *lock(&c.limits) = limits;
        Ok(Response::new(proto::Empty {}))
    }

    async fn resize(
        &self,
        req: Request<proto::ResizeRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let req = req.into_inner();
        let (_, p) = self.process(&req.container_id, &req.exec_id).map_err(st)?;
        let (rows, cols) = (u16::try_from(req.rows), u16::try_from(req.cols));
        let (Ok(rows), Ok(cols)) = (rows, cols) else {
            return Err(st(Error::invalid(
                "size",
                "rows and columns must be below 65536",
            )));
        };
        resize(&p, rows, cols).map_err(st)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn stats(
        &self,
        req: Request<proto::StatsRequest>,
    ) -> std::result::Result<Response<proto::StatsResponse>, Status> {
        let c = self.container(&req.into_inner().container_id).map_err(st)?;
        let cg = c.setup.cgroup.clone().ok_or_else(|| {
            st(Error::unsupported(
                "this guest has no cgroup v2 for statistics",
            ))
        })?;
        let cpu_stat = std::fs::read_to_string(cg.join("cpu.stat")).unwrap_or_default();
        let usage_us: u64 = cpu_stat
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let max = std::fs::read_to_string(cg.join("memory.max")).unwrap_or_default();
        let io_stat = std::fs::read_to_string(cg.join("io.stat")).unwrap_or_default();
        let main = lock(&c.main).clone();
        let net = if main.running() {
            husk_container::cgroups::interface_counters(main.pid())
        } else {
            Default::default()
        };
        let system_cpu_ns = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines().next().map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse::<u64>().ok())
                        .sum::<u64>()
                })
            })
            .unwrap_or(0)
            * 10_000_000;
        Ok(Response::new(proto::StatsResponse {
            cpu_usage_ns: usage_us * 1000,
            system_cpu_ns,
            online_cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            memory_usage_bytes: read_u64(cg.join("memory.current")),
            memory_limit_bytes: max.trim().parse().unwrap_or(0),
            pids: read_u64(cg.join("pids.current")),
            pids_limit: read_u64(cg.join("pids.max")),
            block_read_bytes: io_stat_bytes(&io_stat, "rbytes="),
            block_write_bytes: io_stat_bytes(&io_stat, "wbytes="),
            net_rx_bytes: net.rx_bytes,
            net_tx_bytes: net.tx_bytes,
            net_rx_errors: net.rx_errors,
            net_tx_errors: net.tx_errors,
        }))
    }

    async fn list(
        &self,
        _req: Request<proto::Empty>,
    ) -> std::result::Result<Response<proto::ListResponse>, Status> {
        let containers = lock(&self.inner.containers)
            .values()
            .map(|c| {
                let main = lock(&c.main).clone();
                let exit = *main.exit.borrow();
                let status = match (main.pid(), exit, *lock(&c.paused)) {
                    (0, _, _) => "created",
                    (_, Some(_), _) => "exited",
                    (_, None, true) => "paused",
                    (_, None, false) => "running",
                };
                proto::ContainerInfo {
                    id: c.setup.id.clone(),
                    status: status.into(),
                    pid: if exit.is_none() { main.pid() } else { 0 },
                    exit_code: exit.map(|e| e.code).unwrap_or(0),
                }
            })
            .collect();
        Ok(Response::new(proto::ListResponse { containers }))
    }

    async fn remove_container(
        &self,
        req: Request<proto::RemoveRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let id = req.into_inner().id;
        let c = self.container(&id).map_err(st)?;
        let main = lock(&c.main).clone();
        let client = Bundle::of(&c.setup).client();
        if client.call(&ShimRequest::Shutdown).await.is_ok() {
            // The shim answers `wait` once it has removed libcontainer's state and the cgroup; it then exits.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                client.call(&ShimRequest::Wait),
            )
            .await;
        }
        if let Some(cg) = &c.setup.cgroup
            && cg.exists()
        {
            // Whatever a shim that died left: every process of the cgroup, then the cgroup.
            let _ = std::fs::write(cg.join("cgroup.kill"), "1");
        }
        if main.running() {
            let mut rx = main.exit.subscribe();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|e| e.is_some()),
            )
            .await;
        }
        let runtime = self.inner.runtime.clone();
        let setup = c.setup.clone();
        tokio::task::spawn_blocking(move || runtime.delete(&setup))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(st)?;
        lock(&self.inner.containers).remove(&id);
        Ok(Response::new(proto::Empty {}))
    }

    async fn pause(
        &self,
        req: Request<proto::PauseRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let req = req.into_inner();
        let c = self.container(&req.id).map_err(st)?;
        let request = if req.frozen {
            ShimRequest::Pause
        } else {
            ShimRequest::Resume
        };
        Bundle::of(&c.setup)
            .client()
            .call(&request)
            .await
            .map_err(st)?;
        *lock(&c.paused) = req.frozen;
        Ok(Response::new(proto::Empty {}))
    }

    async fn top(
        &self,
        req: Request<proto::StatsRequest>,
    ) -> std::result::Result<Response<proto::TopResponse>, Status> {
        let c = self.container(&req.into_inner().container_id).map_err(st)?;
        let main = lock(&c.main).clone();
        if !main.running() {
            return Err(st(Error::conflict(format!(
                "container {:?} is not running",
                c.setup.id
            ))));
        }
        let mut pids: Vec<i32> = match &c.setup.cgroup {
            Some(cg) => std::fs::read_to_string(cg.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            None => vec![main.pid()],
        };
        pids.sort_unstable();
        let rows = pids
            .into_iter()
            .filter_map(process_row)
            .map(|cells| proto::TopRow { cells })
            .collect();
        let titles = ["UID", "PID", "PPID", "STIME", "TIME", "CMD"]
            .map(String::from)
            .to_vec();
        Ok(Response::new(proto::TopResponse { titles, rows }))
    }

    async fn stat_path(
        &self,
        req: Request<proto::PathRequest>,
    ) -> std::result::Result<Response<proto::PathStatResponse>, Status> {
        let req = req.into_inner();
        let out = self
            .fs_helper(&req.container_id, FsOp::Stat { path: req.path }, false)
            .map_err(st)?
            .output()
            .await
            .map_err(st)?;
        let stat: husk_core::PathStat = serde_json::from_slice(&out).map_err(|e| {
            st(Error::internal(format!(
                "the container-fs helper's answer: {e}"
            )))
        })?;
        Ok(Response::new(proto::PathStatResponse {
            name: stat.name,
            size: stat.size,
            mode: stat.mode,
            mtime: stat.mtime,
            link_target: stat.link_target,
        }))
    }

    type ArchiveStream = ArchiveStream;

    async fn archive(
        &self,
        req: Request<proto::PathRequest>,
    ) -> std::result::Result<Response<ArchiveStream>, Status> {
        let req = req.into_inner();
        let mut helper = self
            .fs_helper(&req.container_id, FsOp::Archive { path: req.path }, false)
            .map_err(st)?;
        // A few chunks in flight: the helper waits on its pipe while the host reads slowly.
        let (tx, rx) = mpsc::channel::<std::result::Result<proto::ArchiveChunk, Status>>(4);
        tokio::spawn(async move {
            let mut buf = vec![0u8; ARCHIVE_CHUNK];
            loop {
                match tokio::io::AsyncReadExt::read(&mut helper.stdout, &mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = proto::ArchiveChunk {
                            data: buf[..n].to_vec(),
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            // The host went away: the helper ends on its broken pipe.
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(st(Error::io("read the archive from the helper", e))))
                            .await;
                        break;
                    }
                }
            }
            if let Err(e) = helper.verdict().await {
                let _ = tx.send(Err(st(e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn extract(
        &self,
        req: Request<Streaming<proto::ExtractRequest>>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let mut input = req.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            st(Error::bad_request(
                "an extract stream must start with a message naming the container and directory",
            ))
        })?;
        let op = FsOp::Extract {
            dir: first.dir,
            copy_owners: first.copy_owners,
            no_overwrite_dir_non_dir: first.no_overwrite_dir_non_dir,
        };
        let helper = self.fs_helper(&first.container_id, op, true).map_err(st)?;
        // The archive's bytes, as they arrive, as a reader for the helper's stdin.
        let head = futures::stream::iter([Ok(bytes_of(first.data))]);
        let rest = futures::StreamExt::map(input, |m| match m {
            Ok(m) => Ok(bytes_of(m.data)),
            Err(s) => Err(std::io::Error::other(s.message().to_string())),
        });
        let reader = tokio_util::io::StreamReader::new(futures::StreamExt::chain(head, rest));
        helper.feed(reader).await.map_err(st)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn shutdown(
        &self,
        _req: Request<proto::Empty>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let _ = self.inner.shutdown.try_send(());
        Ok(Response::new(proto::Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_bytes_add_up_every_device() {
        let io_stat = "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                       254:16 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(io_stat_bytes(io_stat, "rbytes="), 4097);
        assert_eq!(io_stat_bytes(io_stat, "wbytes="), 8194);
        assert_eq!(io_stat_bytes("", "rbytes="), 0);
    }

    #[test]
    fn hub_buffers_until_a_reader_comes_and_keeps_the_exit() {
        let mut hub = Hub::default();
        hub.publish(Frame::Stdout(b"early".to_vec()));
        let mut r = hub.subscribe();
        hub.publish(Frame::Stderr(b"live".to_vec()));
        hub.publish(Frame::Exit(3));
        assert_eq!(r.try_recv().unwrap(), Frame::Stdout(b"early".to_vec()));
        assert_eq!(r.try_recv().unwrap(), Frame::Stderr(b"live".to_vec()));
        assert_eq!(r.try_recv().unwrap(), Frame::Exit(3));
        let mut late = hub.subscribe();
        assert_eq!(late.try_recv().unwrap(), Frame::Exit(3));
    }

    #[test]
    fn hub_drops_the_oldest_output_past_its_limit() {
        let mut hub = Hub::default();
        for _ in 0..3 {
            hub.publish(Frame::Stdout(vec![b'x'; BUFFER_LIMIT / 2]));
        }
        assert!(hub.buffered_bytes <= BUFFER_LIMIT);
        assert_eq!(hub.buffered.len(), 2);
    }

    #[test]
    fn share_paths_stay_inside_the_share() {
        assert_eq!(
            inside_share("mounts", "c1/0").unwrap(),
            std::path::Path::new("c1/0")
        );
        for bad in ["", "/etc", "../x", "c1/../../x", "./c1/0"] {
            assert!(inside_share("mounts", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("id", "abc-1_2.x").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(valid_id("id", bad).is_err(), "{bad}");
        }
    }
}
