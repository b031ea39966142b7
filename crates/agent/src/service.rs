//! The agent's gRPC service: containers, their processes and stdio, as the host asks for them.
//!
//! Every request is checked before anything is done (unknown container, empty command, bad frame ...) and
//! answered with a clear status; nothing a request carries can take the agent down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::Stream;
use husk_agent_protocol::proto::{self, agent_server::Agent};
use husk_agent_protocol::status::status_from_error;
use husk_core::stdio::Frame;
use husk_core::{Error, Result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use husk_container::container_fs::FsOp;
use husk_container::shim::Request as ShimRequest;

use crate::reaper::Reaper;
use crate::runtime::Runtime;
use crate::shim::{Bundle, Maker};

mod launch;
mod process;
mod procfs;

use process::{Container, Proc};
use procfs::*;

/// Where the agent keeps its state and finds its shares.
#[derive(Debug, Clone)]
pub struct AgentEnv {
    /// Per-container directories live under `<run_dir>/containers`.
    pub run_dir: PathBuf,
    /// What the boot thread makes while the agent already serves: the mounted shares and the PID sharing.
    pub booted: Arc<crate::init::Pending<Booted>>,
    /// The cgroup v2 root, when the guest has one.
    pub cgroup_root: Option<PathBuf>,
    /// In a guest booted as a template: where the `Configure` call hands the sandbox's settings to the waiting
    /// boot thread (taken by the first call).
    pub configure: Option<Arc<Mutex<Option<std::sync::mpsc::Sender<crate::init::BootOptions>>>>>,
    /// A default seccomp program compiled on the host for a capability set: (capabilities, program).
    pub seccomp_seed: Option<(Vec<String>, Vec<u8>)>,
}

/// The sandbox's settings a guest has once booted (from its kernel command line, or from the `Configure` call of
/// a guest restored from a template).
#[derive(Debug, Default)]
pub struct Booted {
    /// Mounted 9p shares by tag.
    pub shares: HashMap<String, PathBuf>,
    /// Containers share one PID namespace (the sandbox was made with `share_pid`).
    pub share_pid: bool,
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

    async fn configure(
        &self,
        req: Request<proto::ConfigureRequest>,
    ) -> std::result::Result<Response<proto::Empty>, Status> {
        let req = req.into_inner();
        let sender = self
            .inner
            .env
            .configure
            .as_ref()
            .and_then(|slot| lock(slot).take())
            .ok_or_else(|| {
                st(Error::conflict(
                    "this guest was not booted as a template, or is configured already",
                ))
            })?;
        // The clock and the random state first: nothing after this call may see the template's.
        crate::init::set_clock(req.realtime_ns).map_err(st)?;
        crate::init::reseed(&req.seed).map_err(st)?;
        sender
            .send(crate::init::BootOptions::parse(&req.boot_options))
            .map_err(|_| st(Error::internal("the boot thread is gone")))?;
        Ok(Response::new(proto::Empty {}))
    }
}

#[cfg(test)]
mod tests;
