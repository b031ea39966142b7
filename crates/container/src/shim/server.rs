//! The shim process: one per container run, started by exec from the daemon (`husk shim CONFIG`).
//!
//! It creates the container with libcontainer while still single-threaded, is a child subreaper and the only
//! reaper of its children, owns the container's stdio (pipes or a terminal), writes the log, serves the control
//! socket, records the exit status on disk, cleans libcontainer's state and cgroup, and exits. It outlives the
//! daemon: nothing it does depends on the daemon being there.
//!
//! The event loop is a current-thread tokio runtime, so the process never has a second thread: libcontainer's
//! clone calls for execs happen on the only thread, and a `waitpid(-1)` reaper cannot steal an exit status that
//! libcontainer is waiting for (libcontainer's own waits finish before control returns to the loop).
//!
//! Why this file is long: one process's event loop: its handlers share the loop's state (the container, its stdio,
//! the log, the exit status), so splitting them would only spread that state across files.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use husk_core::stdio::{Frame, read_frame, write_frame};
use husk_core::{Error, ExitStatus, Result};
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// The read side of a client connection, buffered.
type ConnReader = BufReader<OwnedReadHalf>;
use tokio::sync::{mpsc, oneshot};

use super::fdio::{self, Fd};
use super::proto::{Request, Response, ShimConfig, ShimStatus};
use crate::logs::LogWriter;

/// How long output may keep flowing after a process exits before its stream is closed anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after a start or an exec the shim gives back the pages it touched to make it (see
/// [`super::resident`]): long enough for the client's next requests of a start (attach, state) to be served.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// Gives back the startup pages a moment from now (on this event loop); one release at a time, however many
/// execs ask meanwhile (a probe's exec every few seconds, a burst of them).
fn release_pages_soon() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::Relaxed) {
        return;
    }
    tokio::task::spawn_local(async {
        tokio::time::sleep(RELEASE_DELAY).await;
        PENDING.store(false, Ordering::Relaxed);
        super::resident::release_startup_pages();
    });
}

fn lc_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("{what}: {e}"))
}

/// libcontainer's default executor, after restoring default signal dispositions and an empty signal mask in the
/// container's process (a Rust parent ignores SIGPIPE, and ignored signals survive exec), and installing the
/// precompiled seccomp program, if any, as the very last step.
#[derive(Clone)]
struct HuskExecutor {
    seccomp: Option<Arc<Vec<u8>>>,
}

impl Executor for HuskExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> std::result::Result<(), ExecutorError> {
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // SAFETY: resetting a disposition to its default has no memory-safety preconditions.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        // SAFETY: an empty set built by sigemptyset, passed to sigprocmask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        if let Some(program) = &self.seccomp {
            crate::seccomp_bpf::install(program)
                .map_err(|e| ExecutorError::Other(format!("install the seccomp filter: {e}")))?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    /// Runs in the container, as the process's user, in its working directory, before it waits for `start`:
    /// a command that cannot run fails the create, in runc's words (see [`crate::command`]).
    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> std::result::Result<(), ExecutorValidationError> {
        let process = spec.process().as_ref();
        let program = process
            .and_then(|p| p.args().as_ref())
            .and_then(|a| a.first())
            .ok_or_else(|| ExecutorValidationError::ArgValidationError("no command".into()))?;
        let path_var = process
            .and_then(|p| p.env().as_ref())
            .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")));
        crate::command::find_executable(program, path_var, std::path::Path::new("/"))
            .map(|_| ())
            .map_err(ExecutorValidationError::ArgValidationError)
    }
}

/// The process's stdio, on the shim's side.
enum Stdio {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Terminal {
        master: OwnedFd,
    },
}

/// The precompiled seccomp program named in the config, if its file exists.
fn seccomp_program(cfg: &ShimConfig) -> Result<Option<Arc<Vec<u8>>>> {
    match &cfg.seccomp_program {
        Some(path) => match std::fs::read(path) {
            Ok(p) => Ok(Some(Arc::new(p))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        },
        None => Ok(None),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| lc_err("create a pipe", e))
}

/// Builds a libcontainer builder with the container's ends of fresh pipes (or a console socket), runs `build`,
/// and returns its result with the shim's ends.
fn with_stdio<T>(
    cfg: &ShimConfig,
    tty: bool,
    stdin: bool,
    console_name: &str,
    build: impl FnOnce(ContainerBuilder) -> Result<T>,
) -> Result<(T, Stdio)> {
    let mut builder = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(&cfg.state_root)
        .map_err(|e| lc_err("libcontainer state root", e))?
        .with_executor(HuskExecutor {
            seccomp: seccomp_program(cfg)?,
        });
    if tty {
        let path = cfg.work_dir.join(console_name);
        let _ = std::fs::remove_file(&path);
        let listener = StdUnixListener::bind(&path)
            .map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
        builder = builder.with_console_socket(Some(&path));
        let out = build(builder);
        let _ = std::fs::remove_file(&path);
        let out = out?;
        let master = fdio::receive_pty_master(&listener)
            .map_err(|e| Error::io("receive the terminal", e))?;
        return Ok((out, Stdio::Terminal { master }));
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    builder = builder.with_stdout(out_w).with_stderr(err_w);
    let mut stdin_w = None;
    if stdin {
        let (in_r, in_w) = pipe()?;
        builder = builder.with_stdin(in_r);
        stdin_w = Some(in_w);
    } else {
        let null = std::fs::File::open("/dev/null").map_err(|e| Error::io("open /dev/null", e))?;
        builder = builder.with_stdin(OwnedFd::from(null));
    }
    let out = build(builder)?;
    Ok((
        out,
        Stdio::Pipes {
            stdin: stdin_w,
            stdout: out_r,
            stderr: err_r,
        },
    ))
}

/// What the shim knows while it runs.
struct Shim {
    cfg: ShimConfig,
    container: RefCell<Container>,
    init_pid: i32,
    status: Cell<ShimStatus>,
    exit: RefCell<Option<ExitStatus>>,
    init_code: Cell<Option<i32>>,
    init_exited: tokio::sync::Notify,
    subscribers: RefCell<Vec<mpsc::UnboundedSender<Frame>>>,
    stdin: RefCell<Option<Rc<Fd>>>,
    terminal: RefCell<Option<Rc<Fd>>>,
    waiters: RefCell<Vec<oneshot::Sender<ExitStatus>>>,
    execs: RefCell<HashMap<i32, oneshot::Sender<i32>>>,
    log: RefCell<LogWriter>,
    exec_seq: Cell<u32>,
    connections: Cell<usize>,
}

impl Shim {
    fn broadcast(&self, frame: Frame) {
        self.subscribers
            .borrow_mut()
            .retain(|s| s.send(frame.clone()).is_ok());
    }

    /// Reaps every exited child and routes each exit to its owner.
    fn reap_all(&self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                Err(_) => return,
            };
            if pid == self.init_pid {
                self.init_code.set(Some(code));
                self.init_exited.notify_one();
            } else if let Some(tx) = self.execs.borrow_mut().remove(&pid) {
                let _ = tx.send(code);
            }
        }
    }

    /// Signals the main process, or every process in the container's cgroup.
    fn kill(&self, signal: i32, all: bool) -> Result<()> {
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| Error::invalid("signal", format!("invalid signal {signal}")))?;
        if self.status.get() == ShimStatus::Exited {
            return Err(Error::conflict("the container is not running"));
        }
        if !all {
            return nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.init_pid), sig)
                .map_err(|e| lc_err("signal the main process", e));
        }
        for pid in crate::cgroups::procs(&self.cfg.cgroup_path) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        Ok(())
    }

    fn set_status(&self, status: ShimStatus) {
        if self.status.get() != ShimStatus::Exited {
            self.status.set(status);
        }
    }
}

/// Runs a shim from its config file; returns the process exit code.
pub fn run(config_path: &Path) -> i32 {
    // Out of the starter's session and terminal: the shim outlives the daemon. (EPERM when already a session
    // leader is fine.)
    let _ = nix::unistd::setsid();
    let cfg: ShimConfig = match std::fs::read(config_path)
        .map_err(|e| Error::io(format!("read {}", config_path.display()), e))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| Error::internal(format!("parse {}: {e}", config_path.display())))
        }) {
        Ok(c) => c,
        Err(e) => {
            handshake(&Response::err(e));
            return 1;
        }
    };
    // Before libcontainer forks: its processes inherit the cgroup mounts instead of reading the mount table.
    libcgroups::v1::util::seed_cgroup_mounts(&cfg.cgroup_mounts);
    if let Some(base) = &cfg.base_mount_namespace
        && let Err(e) = crate::base_ns::enter(base, &cfg.carried_mounts)
    {
        handshake(&Response::err(e));
        return 1;
    }
    match prepare(&cfg) {
        Ok((container, stdio, listener)) => {
            let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
            handshake(&Response {
                ok: true,
                pid: Some(pid),
                ..Default::default()
            });
            match serve(cfg, container, stdio, listener) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("husk shim: {e}");
                    1
                }
            }
        }
        Err(e) => {
            handshake(&Response::err(e));
            1
        }
    }
}

/// Writes the one-line answer the daemon waits for on our stdout, then points stdout at /dev/null.
fn handshake(response: &Response) {
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(response) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
}

/// The synchronous part: become a subreaper, create the container, bind the control socket.
fn prepare(cfg: &ShimConfig) -> Result<(Container, Stdio, StdUnixListener)> {
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| Error::io(format!("create {}", cfg.work_dir.display()), e))?;
    // libcontainer changes directory and back: keep ours somewhere that stays.
    std::env::set_current_dir(&cfg.work_dir)
        .map_err(|e| Error::io("enter the shim directory", e))?;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) has no memory-safety preconditions.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::io(
            "become a subreaper",
            std::io::Error::last_os_error(),
        ));
    }
    let (container, stdio) = with_stdio(cfg, cfg.tty, cfg.stdin, "console.sock", |builder| {
        builder
            .as_init(&cfg.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| build_error("create the container", &e))
    })?;
    let _ = std::fs::remove_file(&cfg.socket);
    let listener = StdUnixListener::bind(&cfg.socket)
        .map_err(|e| Error::io(format!("bind {}", cfg.socket.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("configure the control socket", e))?;
    Ok((container, stdio, listener))
}

/// A failed libcontainer build (`what`): bad input when the command cannot run (libcontainer passes our
/// executor's words on), else a backend failure with libcontainer's chain of causes.
fn build_error(what: &str, e: &dyn std::error::Error) -> Error {
    let text = describe(e);
    Error::from_exec_failure(&text).unwrap_or_else(|| Error::backend(format!("{what}: {text}")))
}

/// A libcontainer error with its chain of causes.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !text.contains(&msg) {
            text.push_str(": ");
            text.push_str(&msg);
        }
        source = s.source();
    }
    text
}

fn serve(
    cfg: ShimConfig,
    container: Container,
    stdio: Stdio,
    listener: StdUnixListener,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the event loop", e))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let mut children = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| Error::io("watch SIGCHLD", e))?;
        let mut log = LogWriter::open_limited(&cfg.log, cfg.log_limits)?;
        if let Some(path) = &cfg.cri_log {
            log.also_cri(path)?;
        }
        let init_pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
        let shim = Rc::new(Shim {
            cfg,
            container: RefCell::new(container),
            init_pid,
            status: Cell::new(ShimStatus::Created),
            exit: RefCell::new(None),
            init_code: Cell::new(None),
            init_exited: tokio::sync::Notify::new(),
            subscribers: RefCell::new(Vec::new()),
            stdin: RefCell::new(None),
            terminal: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            execs: RefCell::new(HashMap::new()),
            log: RefCell::new(log),
            exec_seq: Cell::new(0),
            connections: Cell::new(0),
        });

        // Output pumps of the main process: log and broadcast.
        let mut pumps = Vec::new();
        let sink = {
            let shim = shim.clone();
            Rc::new(move |stream: usize, data: &[u8]| {
                shim.log.borrow_mut().write(stream, data);
                let frame = if stream == 0 {
                    Frame::Stdout(data.to_vec())
                } else {
                    Frame::Stderr(data.to_vec())
                };
                shim.broadcast(frame);
            }) as Rc<dyn Fn(usize, &[u8])>
        };
        match stdio {
            Stdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                if let Some(fd) = stdin {
                    *shim.stdin.borrow_mut() =
                        Some(Rc::new(Fd::new(fd).map_err(|e| Error::io("stdin", e))?));
                }
                pumps.push(spawn_pump(
                    Fd::new(stdout).map_err(|e| Error::io("stdout", e))?,
                    0,
                    sink.clone(),
                    Some(shim.clone()),
                ));
                pumps.push(spawn_pump(
                    Fd::new(stderr).map_err(|e| Error::io("stderr", e))?,
                    1,
                    sink.clone(),
                    Some(shim.clone()),
                ));
            }
            Stdio::Terminal { master } => {
                let fd = Rc::new(Fd::new(master).map_err(|e| Error::io("terminal", e))?);
                *shim.terminal.borrow_mut() = Some(fd.clone());
                if shim.cfg.stdin {
                    *shim.stdin.borrow_mut() = Some(fd.clone());
                }
                pumps.push(spawn_pump_shared(fd, 0, sink.clone(), Some(shim.clone())));
            }
        }

        // Reaper.
        {
            let shim = shim.clone();
            tokio::task::spawn_local(async move {
                loop {
                    shim.reap_all();
                    if children.recv().await.is_none() {
                        return;
                    }
                }
            });
        }

        // Control socket.
        let listener = tokio::net::UnixListener::from_std(listener)
            .map_err(|e| Error::io("control socket", e))?;
        let accept = {
            let shim = shim.clone();
            tokio::task::spawn_local(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let shim = shim.clone();
                    shim.connections.set(shim.connections.get() + 1);
                    tokio::task::spawn_local(async move {
                        handle_connection(&shim, conn).await;
                        shim.connections.set(shim.connections.get() - 1);
                    });
                }
            })
        };

        // Until the main process exits.
        while shim.init_code.get().is_none() {
            shim.init_exited.notified().await;
        }
        finish(&shim, pumps, accept).await;
        Ok(())
    })
}

type Sink = Rc<dyn Fn(usize, &[u8])>;

fn spawn_pump(
    fd: Fd,
    stream: usize,
    sink: Sink,
    shim: Option<Rc<Shim>>,
) -> tokio::task::JoinHandle<()> {
    spawn_pump_shared(Rc::new(fd), stream, sink, shim)
}

/// Copies everything readable from `fd` to `sink` until EOF; flushes the log's partial line at the end.
fn spawn_pump_shared(
    fd: Rc<Fd>,
    stream: usize,
    sink: Sink,
    shim: Option<Rc<Shim>>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match fd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => sink(stream, &buf[..n]),
            }
        }
        if let Some(shim) = shim {
            shim.log.borrow_mut().flush_stream(stream);
        }
    })
}

/// After the main process exited: stop stragglers, drain output, clean up libcontainer's state, record the
/// exit, tell everyone, and let the last writes go out.
async fn finish(
    shim: &Rc<Shim>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    accept: tokio::task::JoinHandle<()>,
) {
    // Connections already queued are still served (the process's end resets whatever is left).
    let _accept = accept;
    let code = shim.init_code.get().unwrap_or(255);
    if shim.status.get() == ShimStatus::Paused {
        let _ = shim.container.borrow_mut().resume();
    }
    shim.status.set(ShimStatus::Running);
    let _ = shim.kill(libc::SIGKILL, true);
    shim.status.set(ShimStatus::Exited);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(pumps)).await;
    let oom_killed = crate::cgroups::oom_kill_count(&shim.cfg.cgroup_path) > 0;

    let exit = ExitStatus {
        code,
        oom_killed,
        finished_at: Some(husk_core::Timestamp::now()),
        reason: String::new(),
    };
    // From here on, late `wait` and `state` requests get the answer at once.
    *shim.exit.borrow_mut() = Some(exit.clone());
    // Free the libcontainer ID, then record the exit on disk, then free the socket path: whoever learns of the
    // exit (from the file, or from a refused connection followed by the file) may start the container again at
    // once without meeting our leftovers.
    delete_container_state(shim);
    if let Err(e) = write_exit_file(&shim.cfg.exit_file, &exit) {
        eprintln!("husk shim: {e}");
    }
    let _ = std::fs::remove_file(&shim.cfg.socket);
    shim.broadcast(Frame::Exit(code));
    shim.subscribers.borrow_mut().clear();
    for w in shim.waiters.borrow_mut().drain(..) {
        let _ = w.send(exit.clone());
    }
    // Let connection tasks write their last frames.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while shim.connections.get() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Removes libcontainer's state and the container's cgroup. The container's processes are all gone, there are
/// no hooks, so this is two plain removals: libcontainer's own `delete` would build a cgroup manager, which
/// parses the mount table once per controller (tens of milliseconds on a v1 host, on every container's exit).
fn delete_container_state(shim: &Shim) {
    if let Err(e) = crate::cgroups::remove(&shim.cfg.cgroup_path) {
        eprintln!("husk shim: {e}");
    }
    let state = shim.cfg.state_root.join(&shim.cfg.id);
    if let Err(e) = std::fs::remove_dir_all(&state)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("husk shim: remove {}: {e}", state.display());
    }
}

/// Writes the exit status atomically (temp file + rename).
pub fn write_exit_file(path: &Path, exit: &ExitStatus) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec(exit).map_err(|e| Error::internal(e.to_string()))?;
    std::fs::write(&tmp, data).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("write {}", path.display()), e))
}

async fn respond(conn: &mut OwnedWriteHalf, response: &Response) {
    if let Ok(mut line) = serde_json::to_vec(response) {
        line.push(b'\n');
        let _ = conn.write_all(&line).await;
    }
}

async fn handle_connection(shim: &Rc<Shim>, conn: UnixStream) {
    let (read_half, mut conn) = conn.into_split();
    // The reader stays buffered for the stream that may follow the request line.
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            respond(
                &mut conn,
                &Response::err(Error::bad_request(format!("bad shim request: {e}"))),
            )
            .await;
            return;
        }
    };
    match request {
        Request::Attach { stdin } => return attach(shim, reader, conn, stdin).await,
        Request::Exec {
            process,
            stdin,
            deadline_ms,
        } => return exec(shim, reader, conn, process, stdin, deadline_ms).await,
        Request::Wait => {
            let exit = shim.exit.borrow().clone();
            let exit = match exit {
                Some(e) => e,
                None => {
                    let (tx, rx) = oneshot::channel();
                    shim.waiters.borrow_mut().push(tx);
                    match rx.await {
                        Ok(e) => e,
                        Err(_) => return,
                    }
                }
            };
            respond(
                &mut conn,
                &Response {
                    ok: true,
                    exit: Some(exit),
                    ..Default::default()
                },
            )
            .await;
        }
        other => {
            let response = match control(shim, other) {
                Ok(r) => r,
                Err(e) => Response::err(e),
            };
            respond(&mut conn, &response).await;
        }
    }
}

/// The requests answered at once.
fn control(shim: &Rc<Shim>, request: Request) -> Result<Response> {
    match request {
        Request::Start => {
            if shim.status.get() != ShimStatus::Created {
                return Err(Error::conflict("the container was already started"));
            }
            shim.container
                .borrow_mut()
                .start()
                .map_err(|e| Error::backend(format!("start the container: {}", describe(&e))))?;
            shim.set_status(ShimStatus::Running);
            release_pages_soon();
            Ok(Response {
                ok: true,
                pid: Some(shim.init_pid),
                ..Default::default()
            })
        }
        Request::State => Ok(Response {
            ok: true,
            pid: Some(shim.init_pid),
            status: Some(shim.status.get()),
            exit: shim.exit.borrow().clone(),
            ..Default::default()
        }),
        Request::Kill { signal, all } => {
            shim.kill(signal, all)?;
            Ok(Response::ok())
        }
        Request::Pause => {
            if shim.status.get() != ShimStatus::Running {
                return Err(Error::conflict("the container is not running"));
            }
            shim.container
                .borrow_mut()
                .pause()
                .map_err(|e| Error::backend(format!("pause: {}", describe(&e))))?;
            shim.set_status(ShimStatus::Paused);
            Ok(Response::ok())
        }
        Request::Resume => {
            if shim.status.get() != ShimStatus::Paused {
                return Err(Error::conflict("the container is not paused"));
            }
            shim.container
                .borrow_mut()
                .resume()
                .map_err(|e| Error::backend(format!("unpause: {}", describe(&e))))?;
            shim.set_status(ShimStatus::Running);
            Ok(Response::ok())
        }
        Request::Resize { rows, cols } => {
            let terminal = shim.terminal.borrow().clone();
            let fd = terminal.ok_or_else(|| Error::conflict("the container has no terminal"))?;
            fdio::set_window_size(fd.raw(), rows, cols)
                .map_err(|e| Error::io("resize the terminal", e))?;
            Ok(Response::ok())
        }
        Request::ReopenLog => {
            shim.log.borrow_mut().reopen_cri()?;
            Ok(Response::ok())
        }
        Request::Shutdown => {
            if shim.status.get() == ShimStatus::Paused {
                let _ = shim.container.borrow_mut().resume();
                shim.set_status(ShimStatus::Running);
            }
            if shim.status.get() != ShimStatus::Exited {
                // The main process first (in a shared PID namespace it may not be in the cgroup's list yet).
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(shim.init_pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = shim.kill(libc::SIGKILL, true);
            }
            Ok(Response::ok())
        }
        Request::Attach { .. } | Request::Exec { .. } | Request::Wait => {
            Err(Error::internal("streaming request in control()"))
        }
    }
}

/// Sends frames from `rx` to the client until the channel closes or an `Exit` frame was sent.
fn spawn_writer(
    mut writer: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            let last = matches!(frame, Frame::Exit(_) | Frame::Error(_));
            if write_frame(&mut writer, &frame).await.is_err() || last {
                break;
            }
        }
        let _ = writer.shutdown().await;
    })
}

/// Forwards the client's frames to a process: stdin bytes, end of input, terminal size. With `shared`, the
/// end of input also closes that shared stdin (an attach to a main process without a terminal).
async fn forward_input(
    mut reader: ConnReader,
    stdin: RefCell<Option<Rc<Fd>>>,
    terminal: Option<Rc<Fd>>,
    shared: Option<Rc<Shim>>,
) {
    while let Ok(Some(frame)) = read_frame(&mut reader).await {
        match frame {
            Frame::Stdin(data) => {
                let fd = stdin.borrow().clone();
                if let Some(fd) = fd
                    && fd.write_all(&data).await.is_err()
                {
                    *stdin.borrow_mut() = None;
                }
            }
            Frame::CloseStdin => {
                *stdin.borrow_mut() = None;
                if let Some(shim) = &shared {
                    *shim.stdin.borrow_mut() = None;
                }
            }
            Frame::Resize { rows, cols } => {
                if let Some(t) = &terminal {
                    let _ = fdio::set_window_size(t.raw(), rows, cols);
                }
            }
            _ => {}
        }
    }
}

async fn attach(shim: &Rc<Shim>, reader: ConnReader, mut writer: OwnedWriteHalf, with_stdin: bool) {
    respond(&mut writer, &Response::ok()).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let exited = shim.exit.borrow().as_ref().map(|e| e.code);
    match exited {
        Some(code) => {
            let _ = tx.send(Frame::Exit(code));
        }
        None => shim.subscribers.borrow_mut().push(tx),
    }
    let mut writer = spawn_writer(writer, rx);
    if with_stdin {
        // Input goes to the shared stdin of the main process; closing it (CloseStdin) closes it for everyone,
        // as `docker attach` with stdin does.
        let shared = shim.stdin.borrow().clone();
        let terminal = shim.terminal.borrow().clone();
        let shim2 = shim.clone();
        let input = RefCell::new(shared);
        let closer = terminal.is_none().then(|| shim.clone());
        let forward = async move {
            forward_input(reader, input, terminal, closer).await;
        };
        tokio::select! {
            _ = forward => {
                // The client finished its input: close the container's stdin unless it has a terminal.
                if shim2.terminal.borrow().is_none() {
                    *shim2.stdin.borrow_mut() = None;
                }
                let _ = (&mut writer).await;
            }
            _ = &mut writer => {}
        }
    } else {
        let _ = writer.await;
    }
}

async fn exec(
    shim: &Rc<Shim>,
    reader: ConnReader,
    mut conn: OwnedWriteHalf,
    process: serde_json::Value,
    stdin: bool,
    deadline_ms: Option<u64>,
) {
    if shim.status.get() != ShimStatus::Running {
        respond(
            &mut conn,
            &Response::err(Error::conflict("the container is not running")),
        )
        .await;
        return;
    }
    let seq = shim.exec_seq.get() + 1;
    shim.exec_seq.set(seq);
    let tty = process["terminal"].as_bool().unwrap_or(false);
    let process_file = shim.cfg.work_dir.join(format!("exec-{seq}.json"));
    let started = std::fs::write(&process_file, process.to_string())
        .map_err(|e| Error::io("write the exec process", e))
        .and_then(|_| {
            with_stdio(
                &shim.cfg,
                tty,
                stdin,
                &format!("exec-{seq}.sock"),
                |builder| {
                    builder
                        .as_tenant()
                        .with_process(Some(&process_file))
                        .with_detach(true)
                        .build()
                        .map_err(|e| build_error("exec", &e))
                },
            )
        });
    let _ = std::fs::remove_file(&process_file);
    let (pid, stdio) = match started {
        Ok(v) => v,
        Err(e) => {
            respond(&mut conn, &Response::err(e)).await;
            return;
        }
    };
    // Registered before the first await, so the reaper cannot see the exit first.
    let (exit_tx, exit_rx) = oneshot::channel();
    shim.execs.borrow_mut().insert(pid.as_raw(), exit_tx);
    shim.reap_all();
    release_pages_soon();
    respond(
        &mut conn,
        &Response {
            ok: true,
            pid: Some(pid.as_raw()),
            ..Default::default()
        },
    )
    .await;
    let writer = conn;
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = spawn_writer(writer, rx);
    let sink: Sink = {
        let tx = tx.clone();
        Rc::new(move |stream: usize, data: &[u8]| {
            let frame = if stream == 0 {
                Frame::Stdout(data.to_vec())
            } else {
                Frame::Stderr(data.to_vec())
            };
            let _ = tx.send(frame);
        })
    };
    let mut pumps = Vec::new();
    let (stdin_fd, terminal) = match stdio {
        Stdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            for (fd, stream) in [(stdout, 0), (stderr, 1)] {
                if let Ok(fd) = Fd::new(fd) {
                    pumps.push(spawn_pump(fd, stream, sink.clone(), None));
                }
            }
            (stdin.and_then(|fd| Fd::new(fd).ok()).map(Rc::new), None)
        }
        Stdio::Terminal { master } => match Fd::new(master) {
            Ok(fd) => {
                let fd = Rc::new(fd);
                pumps.push(spawn_pump_shared(fd.clone(), 0, sink.clone(), None));
                (if stdin { Some(fd.clone()) } else { None }, Some(fd))
            }
            Err(_) => (None, None),
        },
    };
    drop(sink);
    let input = tokio::task::spawn_local(forward_input(
        reader,
        RefCell::new(stdin_fd),
        terminal,
        None,
    ));
    let mut exit_rx = exit_rx;
    let code = match deadline_ms {
        None => exit_rx.await.unwrap_or(255),
        Some(ms) => tokio::select! {
            code = &mut exit_rx => code.unwrap_or(255),
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {
                // Past its deadline: kill it (it is still ours to reap, so the PID is still this process).
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                exit_rx.await.unwrap_or(255)
            }
        },
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(pumps)).await;
    input.abort();
    let _ = tx.send(Frame::Exit(code));
    drop(tx);
    let _ = writer.await;
}
