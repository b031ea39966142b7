//! How the agent makes containers real inside the guest, behind a small trait so that the `linux` driver's
//! container code (OCI spec + libcontainer in a shim) can replace this implementation.
//!
//! [`NamespaceRuntime`] is deliberately minimal and honest: per container an overlay root (lower = the image
//! layers from 9p, upper = guest tmpfs), and per process a `clone(2)` into new mount and PID namespaces (a new
//! UTS namespace when the container has its own hostname), a private `/proc`, `/dev` (tmpfs with the usual
//! nodes and its own devpts) and read-only `/sys`, `pivot_root` into the overlay, and `execve`. Execs join the
//! container's mount and PID namespaces with `setns`. Processes join the container's cgroup (v2) when the guest
//! has one. No seccomp, no capability dropping, no user namespace: the VM is the security boundary here.
//!
//! The child side of `clone` runs in a copy of a multi-threaded process, so it only makes system calls on data
//! prepared before the clone (no allocation, no locks). It reports a failure as `(step, errno)` on a close-on-exec
//! pipe; an empty pipe means `execve` succeeded.

use std::ffi::{CString, c_char};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use husk_core::{Context, Error, Result};
use tokio::sync::oneshot;

use crate::reaper::Reaper;

/// A container as the runtime needs it.
#[derive(Debug, Clone)]
pub struct ContainerSetup {
    /// Container ID.
    pub id: String,
    /// The container's directory in the guest (upper, work and rootfs live here).
    pub dir: PathBuf,
    /// Image layer directories, bottom layer first.
    pub lower: Vec<PathBuf>,
    /// Its own hostname (standalone mode), or `None` to share the VM's.
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Its cgroup directory, when the guest has cgroup v2.
    pub cgroup: Option<PathBuf>,
    /// The holder of a PID namespace shared by the sandbox's containers (the VM's `--share-pid`), or `None` for
    /// a PID namespace of the container's own.
    pub shared_pid_ns: Option<i32>,
}

impl ContainerSetup {
    /// Where its root filesystem is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// A process to start, resolved against the container's root filesystem.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// argv.
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: String,
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// The process's stdin is a terminal (makes it the controlling terminal).
    pub tty: bool,
}

/// The child's ends of its stdio.
#[derive(Debug)]
pub struct ChildStdio {
    /// stdin.
    pub stdin: OwnedFd,
    /// stdout.
    pub stdout: OwnedFd,
    /// stderr.
    pub stderr: OwnedFd,
    /// With a terminal: the socket on which the child sends the master side of the terminal it opens inside the
    /// container (from the container's own devpts, so `tty` names it there); stdio then is that terminal.
    pub tty_sock: Option<OwnedFd>,
}

/// A started process: its PID (in the agent's PID namespace) and its wait status, once it exits.
pub type Started = (i32, oneshot::Receiver<i32>);

/// What the agent needs from a container runtime.
pub trait Runtime: Send + Sync {
    /// Prepares the container's root filesystem.
    fn create(&self, c: &ContainerSetup) -> Result<()>;
    /// Starts the container's main process.
    fn start(
        &self,
        c: &ContainerSetup,
        p: &ProcessSpec,
        io: ChildStdio,
        reaper: &Reaper,
    ) -> Result<Started>;
    /// Starts another process in the running container whose main process is `init_pid`.
    fn exec(
        &self,
        c: &ContainerSetup,
        init_pid: i32,
        p: &ProcessSpec,
        io: ChildStdio,
        reaper: &Reaper,
    ) -> Result<Started>;
    /// Removes what `create` made (the caller has killed the processes).
    fn delete(&self, c: &ContainerSetup) -> Result<()>;
    /// Starts the holder of a PID namespace that containers can share: PID 1 there, reaping orphans.
    fn pid_namespace_holder(&self, reaper: &Reaper) -> Result<i32>;
}

/// The minimal clone + pivot_root runtime described in the module documentation.
#[derive(Debug, Default)]
pub struct NamespaceRuntime;

fn cstr(s: impl AsRef<[u8]>, what: &str) -> Result<CString> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| Error::bad_request(format!("{what} contains a NUL byte")))
}

fn cpath(p: &Path) -> Result<CString> {
    cstr(p.as_os_str().as_bytes(), "path")
}

/// Finds `name` the way execvp would, but inside `rootfs`: a name with a `/` is taken as is; otherwise each
/// directory of the container's PATH is tried. Symlinks are looked at, not followed (their targets are
/// container paths).
pub fn resolve_executable(rootfs: &Path, name: &str, env: &[String]) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid("args", "the command is empty"));
    }
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
        if std::fs::symlink_metadata(rootfs.join(candidate.trim_start_matches('/'))).is_ok() {
            return Ok(candidate);
        }
    }
    Err(Error::not_found(format!(
        "executable {name:?} in the container's PATH ({path})"
    )))
}

/// Resolves `user` (`uid[:gid]`, or a name in the container's /etc/passwd) to numeric IDs.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && (f[0] == u || f[2] == u));
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                Error::invalid(
                    "user",
                    format!("no user {u:?} in the container's /etc/passwd"),
                )
            })?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| {
                        Error::invalid(
                            "user",
                            format!("no group {g:?} in the container's /etc/group"),
                        )
                    })?
            }
        },
        None => entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
    };
    Ok((uid, gid))
}

/// One mount for the child to make.
struct MountOp {
    source: CString,
    target: CString,
    fstype: CString,
    flags: libc::c_ulong,
    data: CString,
}

/// The mount points, mounts, device nodes and /dev links of a container's root.
struct RootSetup {
    mkdirs: Vec<CString>,
    mounts: Vec<MountOp>,
    nodes: Vec<(CString, libc::dev_t)>,
    links: Vec<(CString, CString)>,
}

/// Everything the child does, prepared before `clone`.
struct ChildPlan {
    mnt_ns: RawFd,
    cgroup_procs: RawFd,
    new_root: Option<CString>,
    mkdirs: Vec<CString>,
    mounts: Vec<MountOp>,
    nodes: Vec<(CString, libc::dev_t)>,
    links: Vec<(CString, CString)>,
    readonly_root: bool,
    hostname: Option<CString>,
    stdio: [RawFd; 3],
    tty: bool,
    tty_sock: RawFd,
    uid: u32,
    gid: u32,
    cwd: CString,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    err_fd: RawFd,
}

const NO_FD: RawFd = -1;

fn container_mounts(rootfs: &Path) -> Result<RootSetup> {
    let p = |rel: &str| cpath(&rootfs.join(rel));
    let c = |s: &str| cstr(s, "mount option");
    let mkdirs = vec![p("proc")?, p("dev")?, p("sys")?];
    let nosuid = libc::MS_NOSUID;
    let mounts = vec![
        MountOp {
            source: c("proc")?,
            target: p("proc")?,
            fstype: c("proc")?,
            flags: nosuid | libc::MS_NODEV | libc::MS_NOEXEC,
            data: c("")?,
        },
        MountOp {
            source: c("tmpfs")?,
            target: p("dev")?,
            fstype: c("tmpfs")?,
            flags: nosuid | libc::MS_STRICTATIME,
            data: c("mode=755,size=65536k")?,
        },
        MountOp {
            source: c("sysfs")?,
            target: p("sys")?,
            fstype: c("sysfs")?,
            flags: nosuid | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
            data: c("")?,
        },
    ];
    let dev = |maj, min| libc::makedev(maj, min);
    let nodes = vec![
        (p("dev/null")?, dev(1, 3)),
        (p("dev/zero")?, dev(1, 5)),
        (p("dev/full")?, dev(1, 7)),
        (p("dev/random")?, dev(1, 8)),
        (p("dev/urandom")?, dev(1, 9)),
        (p("dev/tty")?, dev(5, 0)),
    ];
    let links = vec![
        (c("/proc/self/fd")?, p("dev/fd")?),
        (c("/proc/self/fd/0")?, p("dev/stdin")?),
        (c("/proc/self/fd/1")?, p("dev/stdout")?),
        (c("/proc/self/fd/2")?, p("dev/stderr")?),
        (c("pts/ptmx")?, p("dev/ptmx")?),
    ];
    Ok(RootSetup {
        mkdirs,
        mounts,
        nodes,
        links,
    })
}

/// Mounts made after /dev exists (devpts and shm live inside the new /dev).
fn dev_mounts(rootfs: &Path) -> Result<(Vec<CString>, Vec<MountOp>)> {
    let p = |rel: &str| cpath(&rootfs.join(rel));
    let c = |s: &str| cstr(s, "mount option");
    Ok((
        vec![p("dev/pts")?, p("dev/shm")?],
        vec![
            MountOp {
                source: c("devpts")?,
                target: p("dev/pts")?,
                fstype: c("devpts")?,
                flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                data: c("newinstance,ptmxmode=0666,mode=0620")?,
            },
            MountOp {
                source: c("shm")?,
                target: p("dev/shm")?,
                fstype: c("tmpfs")?,
                flags: libc::MS_NOSUID | libc::MS_NODEV,
                data: c("mode=1777,size=65536k")?,
            },
        ],
    ))
}

fn open_cgroup_procs(c: &ContainerSetup) -> Result<Option<File>> {
    match &c.cgroup {
        Some(dir) => {
            let path = dir.join("cgroup.procs");
            Ok(Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .context(format!("open {}", path.display()))?,
            ))
        }
        None => Ok(None),
    }
}

fn base_plan(
    c: &ContainerSetup,
    p: &ProcessSpec,
    io: &ChildStdio,
    err_fd: RawFd,
    cgroup: &Option<File>,
) -> Result<ChildPlan> {
    let first = p
        .args
        .first()
        .ok_or_else(|| Error::invalid("args", "the command is empty"))?;
    let exe = resolve_executable(&c.rootfs(), first, &p.env)?;
    Ok(ChildPlan {
        mnt_ns: NO_FD,
        cgroup_procs: cgroup.as_ref().map(|f| f.as_raw_fd()).unwrap_or(NO_FD),
        new_root: None,
        mkdirs: Vec::new(),
        mounts: Vec::new(),
        nodes: Vec::new(),
        links: Vec::new(),
        readonly_root: false,
        hostname: None,
        stdio: [
            io.stdin.as_raw_fd(),
            io.stdout.as_raw_fd(),
            io.stderr.as_raw_fd(),
        ],
        tty: p.tty,
        tty_sock: io.tty_sock.as_ref().map(|f| f.as_raw_fd()).unwrap_or(NO_FD),
        uid: p.uid,
        gid: p.gid,
        cwd: cstr(if p.cwd.is_empty() { "/" } else { &p.cwd }, "cwd")?,
        exe: cstr(&exe, "command")?,
        argv: p
            .args
            .iter()
            .map(|a| cstr(a, "argument"))
            .collect::<Result<_>>()?,
        envp: p
            .env
            .iter()
            .map(|e| cstr(e, "environment variable"))
            .collect::<Result<_>>()?,
        err_fd,
    })
}

fn error_pipe() -> Result<(File, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::backend(format!("pipe: {e}")))?;
    Ok((File::from(r), w))
}

const STEPS: &[&str] = &[
    "",
    "join the cgroup",
    "join the mount namespace",
    "make mounts private",
    "create a mount point",
    "mount",
    "create a device node",
    "create a /dev link",
    "pivot_root",
    "detach the old root",
    "remount the root read-only",
    "set the hostname",
    "set up stdio",
    "set the controlling terminal",
    "set the user",
    "change to the working directory",
    "execute the command",
    "open a terminal in the container",
];

/// Reads the child's report: Ok when the pipe closed empty (execve succeeded).
fn read_child_report(mut r: File, exe: &str) -> Result<()> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::backend(format!(
                    "read the container process's start report: {e}"
                )));
            }
        }
    }
    if got == 0 {
        return Ok(());
    }
    let step = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let err = std::io::Error::from_raw_os_error(errno);
    let what = STEPS.get(step).copied().unwrap_or("start");
    let msg = format!(
        "start the container process: {what}{}: {err}",
        if step == 16 {
            format!(" {exe}")
        } else {
            String::new()
        }
    );
    Err(if step == 16 && errno == libc::ENOENT {
        Error::not_found(format!("executable {exe} (exec failed: {err})"))
    } else {
        Error::backend(msg)
    })
}

/// Runs `spawn` with this thread's `pid_for_children` set to the PID namespace of process `pid`, then back to
/// the agent's own (the setting is per thread, so other threads are not affected).
fn in_pid_namespace_of<T>(
    pid: i32,
    container: &str,
    spawn: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let target = File::open(format!("/proc/{pid}/ns/pid")).map_err(|e| {
        Error::conflict(format!(
            "container {container} is not running (/proc/{pid}/ns/pid: {e})"
        ))
    })?;
    let own = File::open("/proc/self/ns/pid").context("open /proc/self/ns/pid")?;
    nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWPID).map_err(|e| {
        Error::backend(format!(
            "enter the PID namespace of container {container}: {e}"
        ))
    })?;
    let result = spawn();
    nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| Error::internal(format!("return to the agent's PID namespace: {e}")))?;
    result
}

/// The body of a PID namespace holder (a clone child that never execs): reap whatever dies in the namespace.
fn holder_main() -> ! {
    // SAFETY: signal, waitpid and sleep are plain system calls; nothing here allocates or locks.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        loop {
            if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0 {
                libc::sleep(1);
            }
        }
    }
}

/// clone(2) with `flags` and fork semantics (no new stack); returns the child's PID in the parent.
fn clone_child(flags: libc::c_int, plan: &ChildPlan) -> Result<i32> {
    // SAFETY: the raw clone syscall without CLONE_VM gives the child a copy-on-write copy of this process, as
    // fork does. The child runs only `child_main`, which never returns and makes only system calls on `plan`,
    // which was fully built before the clone.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(Error::backend(format!(
            "clone: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        child_main(plan);
    }
    Ok(pid as i32)
}

impl Runtime for NamespaceRuntime {
    fn create(&self, c: &ContainerSetup) -> Result<()> {
        if c.lower.is_empty() {
            return Err(Error::invalid(
                "layers",
                "a container needs at least one image layer",
            ));
        }
        for l in &c.lower {
            if !l.is_dir() {
                return Err(Error::not_found(format!(
                    "image layer {} in the guest",
                    l.display()
                )));
            }
        }
        let (upper, work, rootfs) = (c.dir.join("upper"), c.dir.join("work"), c.rootfs());
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).context(format!("create {}", d.display()))?;
        }
        // overlayfs takes the top layer first.
        let lower: Vec<String> = c
            .lower
            .iter()
            .rev()
            .map(|l| l.to_string_lossy().replace(':', "\\:"))
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| {
            Error::backend(format!(
                "mount the overlay root of container {} ({data}): {e}",
                c.id
            ))
        })?;
        if let Some(cg) = &c.cgroup {
            std::fs::create_dir_all(cg).context(format!("create cgroup {}", cg.display()))?;
        }
        Ok(())
    }

    fn start(
        &self,
        c: &ContainerSetup,
        p: &ProcessSpec,
        io: ChildStdio,
        reaper: &Reaper,
    ) -> Result<Started> {
        let cgroup = open_cgroup_procs(c)?;
        let (report, err_w) = error_pipe()?;
        let mut plan = base_plan(c, p, &io, err_w.as_raw_fd(), &cgroup)?;
        let rootfs = c.rootfs();
        let RootSetup {
            mkdirs,
            mounts,
            nodes,
            links,
        } = container_mounts(&rootfs)?;
        let (dev_dirs, dev_mounts) = dev_mounts(&rootfs)?;
        plan.new_root = Some(cpath(&rootfs)?);
        plan.mkdirs = mkdirs;
        plan.mkdirs.extend(dev_dirs);
        plan.mounts = mounts;
        plan.mounts.extend(dev_mounts);
        plan.nodes = nodes;
        plan.links = links;
        plan.readonly_root = c.readonly_rootfs;
        plan.hostname = c
            .hostname
            .as_deref()
            .map(|h| cstr(h, "hostname"))
            .transpose()?;
        let mut flags = libc::CLONE_NEWNS;
        if plan.hostname.is_some() {
            flags |= libc::CLONE_NEWUTS;
        }
        let started = match c.shared_pid_ns {
            None => reaper.spawn(|| clone_child(flags | libc::CLONE_NEWPID, &plan))?,
            Some(holder) => {
                in_pid_namespace_of(holder, &c.id, || reaper.spawn(|| clone_child(flags, &plan)))?
            }
        };
        drop(err_w);
        drop(io);
        read_child_report(report, &plan.exe.to_string_lossy())?;
        Ok(started)
    }

    fn exec(
        &self,
        c: &ContainerSetup,
        init_pid: i32,
        p: &ProcessSpec,
        io: ChildStdio,
        reaper: &Reaper,
    ) -> Result<Started> {
        let cgroup = open_cgroup_procs(c)?;
        let ns = |kind: &str| {
            let path = format!("/proc/{init_pid}/ns/{kind}");
            File::open(&path).map_err(|e| {
                Error::conflict(format!("container {} is not running ({path}: {e})", c.id))
            })
        };
        let mnt = ns("mnt")?;
        let (report, err_w) = error_pipe()?;
        let mut plan = base_plan(c, p, &io, err_w.as_raw_fd(), &cgroup)?;
        plan.mnt_ns = mnt.as_raw_fd();
        let started =
            in_pid_namespace_of(init_pid, &c.id, || reaper.spawn(|| clone_child(0, &plan)))?;
        drop(err_w);
        drop(io);
        read_child_report(report, &plan.exe.to_string_lossy())?;
        Ok(started)
    }

    fn pid_namespace_holder(&self, reaper: &Reaper) -> Result<i32> {
        let (pid, _exit) = reaper.spawn(|| {
            // SAFETY: as in clone_child; the child runs only holder_main, which makes plain system calls.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if pid < 0 {
                return Err(Error::backend(format!(
                    "clone a PID namespace holder: {}",
                    std::io::Error::last_os_error()
                )));
            }
            if pid == 0 {
                holder_main();
            }
            Ok(pid as i32)
        })?;
        Ok(pid)
    }

    fn delete(&self, c: &ContainerSetup) -> Result<()> {
        let rootfs = c.rootfs();
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(Error::backend(format!("unmount {}: {e}", rootfs.display()))),
        }
        if c.dir.exists() {
            std::fs::remove_dir_all(&c.dir).context(format!("remove {}", c.dir.display()))?;
        }
        if let Some(cg) = &c.cgroup
            && cg.exists()
        {
            std::fs::remove_dir(cg).context(format!("remove cgroup {}", cg.display()))?;
        }
        Ok(())
    }
}

/// The child side of `clone`: set up and exec, or report `(step, errno)` and exit 127.
fn child_main(plan: &ChildPlan) -> ! {
    // SAFETY: every call below is a system call (or an async-signal-safe libc wrapper of one) on file
    // descriptors and NUL-terminated strings owned by `plan`, which outlives the child (it never returns).
    unsafe {
        let fail = |step: i32| -> ! {
            let errno = *libc::__errno_location();
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&step.to_ne_bytes());
            msg[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(plan.err_fd, msg.as_ptr().cast(), 8);
            libc::_exit(127)
        };
        if plan.cgroup_procs != NO_FD && libc::write(plan.cgroup_procs, b"0".as_ptr().cast(), 1) < 0
        {
            fail(1);
        }
        if plan.mnt_ns != NO_FD && libc::setns(plan.mnt_ns, libc::CLONE_NEWNS) < 0 {
            fail(2);
        }
        if let Some(root) = &plan.new_root {
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) < 0
            {
                fail(3);
            }
            let mut mounts = plan.mounts.iter();
            // proc, dev, sys first; then the mount points inside the new /dev, its nodes and links, devpts, shm.
            for d in &plan.mkdirs[..3] {
                if libc::mkdir(d.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
                    fail(4);
                }
            }
            for m in mounts.by_ref().take(3) {
                if libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    m.fstype.as_ptr(),
                    m.flags,
                    m.data.as_ptr().cast(),
                ) < 0
                {
                    fail(5);
                }
            }
            for (path, dev) in &plan.nodes {
                if libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *dev) < 0 {
                    fail(6);
                }
            }
            for (target, link) in &plan.links {
                if libc::symlink(target.as_ptr(), link.as_ptr()) < 0 {
                    fail(7);
                }
            }
            for d in &plan.mkdirs[3..] {
                if libc::mkdir(d.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
                    fail(4);
                }
            }
            for m in mounts {
                if libc::mount(
                    m.source.as_ptr(),
                    m.target.as_ptr(),
                    m.fstype.as_ptr(),
                    m.flags,
                    m.data.as_ptr().cast(),
                ) < 0
                {
                    fail(5);
                }
            }
            if libc::chdir(root.as_ptr()) < 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0
            {
                fail(8);
            }
            if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 || libc::chdir(c"/".as_ptr()) < 0
            {
                fail(9);
            }
            if plan.readonly_root
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    std::ptr::null(),
                ) < 0
            {
                fail(10);
            }
        }
        if let Some(h) = &plan.hostname
            && libc::sethostname(h.as_ptr(), h.as_bytes().len()) < 0
        {
            fail(11);
        }
        let mut stdio = plan.stdio;
        if plan.tty_sock != NO_FD {
            match open_terminal(plan.tty_sock) {
                Some(slave) => stdio = [slave; 3],
                None => fail(17),
            }
        }
        libc::setsid();
        for (target, fd) in stdio.iter().enumerate() {
            if libc::dup2(*fd, target as i32) < 0 {
                fail(12);
            }
        }
        if plan.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(13);
        }
        // Raw system calls: glibc's setuid/setgid/setgroups would try to apply the change to every thread of
        // the parent process (which the child does not have) and wait for them forever.
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0
            || libc::syscall(libc::SYS_setgid, plan.gid as libc::c_ulong) < 0
            || libc::syscall(libc::SYS_setuid, plan.uid as libc::c_ulong) < 0
        {
            fail(14);
        }
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(15);
        }
        let mut argv: [*const c_char; 256] = [std::ptr::null(); 256];
        let mut envp: [*const c_char; 512] = [std::ptr::null(); 512];
        for (slot, a) in argv.iter_mut().zip(plan.argv.iter().take(255)) {
            *slot = a.as_ptr();
        }
        for (slot, e) in envp.iter_mut().zip(plan.envp.iter().take(511)) {
            *slot = e.as_ptr();
        }
        libc::execve(plan.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(16)
    }
}

/// In the child: opens a terminal on the container's devpts, sends its master side on `sock` and returns the
/// slave side, or `None` (errno set) on failure. Only system calls on stack memory.
///
/// # Safety
/// Must run in the cloned child (it leaves the terminal open for the exec'd process).
unsafe fn open_terminal(sock: RawFd) -> Option<RawFd> {
    // SAFETY: open/ioctl/sendmsg on descriptors this function owns, with a msghdr and control buffer on the stack
    // sized by CMSG_SPACE for one descriptor.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return None;
        }
        let unlock: libc::c_int = 0;
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) < 0 {
            return None;
        }
        let slave = libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY);
        if slave < 0 {
            return None;
        }
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), master);
        if libc::sendmsg(sock, &msg, 0) < 0 {
            return None;
        }
        libc::close(master);
        Some(slave)
    }
}

/// Makes the child's stdio: a socket on which the child sends the terminal it opens, or three pipes (returns
/// the parent's ends).
pub fn make_stdio(tty: bool, stdin: bool) -> Result<(ChildStdio, ParentStdio)> {
    if tty {
        let (parent, child) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::backend(format!("socketpair: {e}")))?;
        let null = || {
            File::open("/dev/null")
                .map(OwnedFd::from)
                .context("open /dev/null")
        };
        let child = ChildStdio {
            stdin: null()?,
            stdout: null()?,
            stderr: null()?,
            tty_sock: Some(child),
        };
        return Ok((child, ParentStdio::TtyPending(parent)));
    }
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::backend(format!("pipe: {e}")))
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (child_in, parent_in) = if stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null").context("open /dev/null")?;
        (OwnedFd::from(null), None)
    };
    Ok((
        ChildStdio {
            stdin: child_in,
            stdout: out_w,
            stderr: err_w,
            tty_sock: None,
        },
        ParentStdio::Pipes {
            stdin: parent_in,
            stdout: out_r,
            stderr: err_r,
        },
    ))
}

/// The agent's ends of a process's stdio.
#[derive(Debug)]
pub enum ParentStdio {
    /// The terminal's master side (input and output).
    Tty(OwnedFd),
    /// The socket on which the started process sends its terminal's master side.
    TtyPending(OwnedFd),
    /// Pipes.
    Pipes {
        /// Writes to the process's stdin, when it has one.
        stdin: Option<OwnedFd>,
        /// Reads its stdout.
        stdout: OwnedFd,
        /// Reads its stderr.
        stderr: OwnedFd,
    },
}

impl ParentStdio {
    /// After the process started: takes the terminal master it sent (for a terminal), else returns self.
    pub fn receive_terminal(self) -> Result<ParentStdio> {
        let ParentStdio::TtyPending(sock) = self else {
            return Ok(self);
        };
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let mut byte = [0u8; 1];
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!(std::os::fd::RawFd);
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::backend(format!("receive the container's terminal: {e}")))?;
        for c in msg
            .cmsgs()
            .map_err(|e| Error::backend(format!("receive the container's terminal: {e}")))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c
                && let Some(&fd) = fds.first()
            {
                // SAFETY: SCM_RIGHTS just gave this process a new descriptor that nothing else owns.
                return Ok(ParentStdio::Tty(unsafe {
                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                }));
            }
        }
        Err(Error::backend("the container process sent no terminal"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_found_in_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", d.path().join("bin/echo")).unwrap();
        assert_eq!(
            resolve_executable(d.path(), "echo", &[]).unwrap(),
            "/bin/echo"
        );
        assert_eq!(resolve_executable(d.path(), "/x/y", &[]).unwrap(), "/x/y");
        let e = resolve_executable(d.path(), "nope", &["PATH=/bin".into()]).unwrap_err();
        assert_eq!(e.kind, husk_core::ErrorKind::NotFound);
        assert!(e.message.contains("nope"));
        assert!(resolve_executable(d.path(), "", &[]).is_err());
    }

    #[test]
    fn users_resolve_by_number_or_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(resolve_user(d.path(), "").unwrap(), (0, 0));
        assert_eq!(resolve_user(d.path(), "www").unwrap(), (33, 34));
        assert_eq!(resolve_user(d.path(), "1000:1000").unwrap(), (1000, 1000));
        assert_eq!(resolve_user(d.path(), "www:staff").unwrap(), (33, 50));
        assert!(resolve_user(d.path(), "ghost").is_err());
        assert!(resolve_user(d.path(), "www:nogroup").is_err());
    }
}
