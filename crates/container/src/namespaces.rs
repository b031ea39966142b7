//! Sandboxes as pinned namespaces: network, IPC and UTS namespaces are created once and kept alive by
//! bind-mounting their `/proc` files onto files under the run directory, so an idle sandbox costs no process
//! and no memory. A shared PID namespace cannot be pinned usefully (its init must live), so it is held by the
//! pause process (`husk sandbox-pause`), PID 1 of the new namespace, whose namespace file is pinned too.
//!
//! Namespaces are created on a fresh OS thread that exists only for this: `unshare(2)` of network, IPC and UTS
//! namespaces affects only the calling thread, so the daemon's other threads are untouched, and the thread exits
//! right after pinning (it is never returned to a pool with foreign namespaces).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use husk_core::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// The namespaces a sandbox pins (PID is handled by [`spawn_pause`]).
pub const PINNED_KINDS: &[&str] = &["net", "ipc", "uts"];

fn sys(what: impl std::fmt::Display, e: nix::errno::Errno) -> Error {
    Error::backend(format!("{what}: {e}"))
}

/// Brings the loopback interface of the calling thread's network namespace up.
fn loopback_up() -> Result<()> {
    // SAFETY: socket() has no memory-safety preconditions; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io(
            "create a socket to configure lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a new descriptor that we own from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; the union member used is ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::io(
            "read the flags of lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the flags member was just filled in by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::io("bring lo up", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Bind-mounts `source` (a namespace file) onto a new empty file `target`.
pub(crate) fn pin(source: &Path, target: &Path) -> Result<()> {
    File::create(target).map_err(|e| Error::io(format!("create {}", target.display()), e))?;
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        sys(
            format!("pin {} at {}", source.display(), target.display()),
            e,
        )
    })
}

/// Pins the namespace pinned at `pinned` a second time, at `target` (a new file); `pinned` stays pinned.
pub fn pin_again(pinned: &Path, target: &Path) -> Result<()> {
    pin(pinned, target)
}

/// Unmounts and removes a pinned namespace file; a file that is not there is not an error.
pub fn unpin(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(sys(format!("unmount {}", target.display()), e)),
    }
    match std::fs::remove_file(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", target.display()), e)),
    }
}

/// Whether `path` is a live pinned namespace (a mounted nsfs file).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == libc::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Creates a new namespace of each of `kinds` (of [`PINNED_KINDS`]; a network namespace gets its loopback up,
/// a UTS namespace `hostname`), and pins them as `dir/KIND`. Returns the paths by kind. On failure nothing
/// stays pinned.
pub fn create_pinned(
    dir: &Path,
    hostname: &str,
    kinds: &[&str],
) -> Result<BTreeMap<String, PathBuf>> {
    if let Some(k) = kinds.iter().find(|k| !PINNED_KINDS.contains(k)) {
        return Err(Error::internal(format!(
            "no pinned namespace of kind {k:?}"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let dir = dir.to_path_buf();
    let hostname = hostname.to_string();
    let kinds: Vec<String> = kinds.iter().map(|k| k.to_string()).collect();
    let worker = std::thread::Builder::new()
        .name("husk-netns".into())
        .spawn(move || -> Result<BTreeMap<String, PathBuf>> {
            let has = |kind: &str| kinds.iter().any(|k| k == kind);
            let mut flags = CloneFlags::empty();
            for (kind, flag) in [
                ("net", CloneFlags::CLONE_NEWNET),
                ("ipc", CloneFlags::CLONE_NEWIPC),
                ("uts", CloneFlags::CLONE_NEWUTS),
            ] {
                if has(kind) {
                    flags |= flag;
                }
            }
            nix::sched::unshare(flags).map_err(|e| sys("create namespaces", e))?;
            if has("uts") {
                nix::unistd::sethostname(&hostname)
                    .map_err(|e| sys(format!("set hostname {hostname:?}"), e))?;
            }
            if has("net") {
                loopback_up()?;
            }
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let mut pinned: BTreeMap<String, PathBuf> = BTreeMap::new();
            for kind in &kinds {
                let target = dir.join(kind);
                let source = PathBuf::from(format!("/proc/self/task/{tid}/ns/{kind}"));
                if let Err(e) = pin(&source, &target) {
                    for p in pinned.values() {
                        let _ = unpin(p);
                    }
                    let _ = std::fs::remove_file(&target);
                    return Err(e);
                }
                pinned.insert(kind.to_string(), target);
            }
            Ok(pinned)
        })
        .map_err(|e| Error::io("start the namespace thread", e))?;
    worker
        .join()
        .map_err(|_| Error::internal("the namespace thread panicked"))?
}

/// Sets the hostname of the UTS namespace pinned at `uts` and brings up the loopback of the network namespace
/// pinned at `net`, from a fresh thread that enters them (and exits after).
fn configure_pinned(uts: Option<PathBuf>, net: Option<PathBuf>, hostname: &str) -> Result<()> {
    let hostname = hostname.to_string();
    std::thread::Builder::new()
        .name("husk-netns".into())
        .spawn(move || -> Result<()> {
            if let Some(uts) = uts {
                let f = File::open(&uts)
                    .map_err(|e| Error::io(format!("open {}", uts.display()), e))?;
                nix::sched::setns(&f, CloneFlags::CLONE_NEWUTS)
                    .map_err(|e| sys(format!("enter {}", uts.display()), e))?;
                nix::unistd::sethostname(&hostname)
                    .map_err(|e| sys(format!("set hostname {hostname:?}"), e))?;
            }
            if let Some(net) = net {
                let f = File::open(&net)
                    .map_err(|e| Error::io(format!("open {}", net.display()), e))?;
                nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| sys(format!("enter {}", net.display()), e))?;
                loopback_up()?;
            }
            Ok(())
        })
        .map_err(|e| Error::io("start the namespace thread", e))?
        .join()
        .map_err(|_| Error::internal("the namespace thread panicked"))?
}

/// Writes `maps` to `/proc/PID/FILE` (`uid_map` or `gid_map`).
fn write_id_map(pid: i32, file: &str, maps: &[husk_core::IdMapping]) -> Result<()> {
    let text: String = maps.iter().map(|m| m.map_line()).collect();
    let path = format!("/proc/{pid}/{file}");
    std::fs::write(&path, text.as_bytes()).map_err(|e| Error::io(format!("write {path}"), e))
}

/// Creates a user namespace with `userns`'s mappings and, owned by it, a new namespace of each of `kinds` (of
/// [`PINNED_KINDS`]; the UTS one gets `hostname`, the network one its loopback up), and pins them all as
/// `dir/user` and `dir/KIND`. Namespaces made by a process in the user namespace belong to it, so the root of a
/// container that joins them may mount `/proc`, `/sys` and `mqueue` for them; the daemon cannot enter a user
/// namespace itself (it is multithreaded), so a child made with `clone3(CLONE_NEWUSER | ...)` holds them while
/// they are pinned. With `pause` (`(husk binary, where to pin its PID namespace)`) that child gets a new PID
/// namespace too (owned by the user namespace) and becomes the sandbox's pause process, root of the user
/// namespace; otherwise it exits once they are pinned. On failure nothing stays pinned or running.
pub fn create_pinned_in_userns(
    dir: &Path,
    hostname: &str,
    kinds: &[&str],
    userns: &husk_core::UserNamespaceConfig,
    pause: Option<(&Path, &Path)>,
) -> Result<(BTreeMap<String, PathBuf>, Option<PauseProcess>)> {
    if let Some(k) = kinds.iter().find(|k| !PINNED_KINDS.contains(k)) {
        return Err(Error::internal(format!(
            "no pinned namespace of kind {k:?}"
        )));
    }
    userns.validate("user_namespace")?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let exec = match pause {
        Some((exe, _)) => Some(
            CString::new(exe.as_os_str().as_encoded_bytes())
                .map_err(|_| Error::internal("husk binary path has a NUL"))?,
        ),
        None => None,
    };
    let arg0 = CString::new("husk").map_err(|_| Error::internal("arg"))?;
    let arg1 = CString::new("sandbox-pause").map_err(|_| Error::internal("arg"))?;
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let exec_ptr = exec.as_ref().map(|c| c.as_ptr());
    let (go_read, go_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| sys("create a pipe for the user namespace", e))?;
    let (go_read_fd, go_write_fd) = (go_read.as_raw_fd(), go_write.as_raw_fd());
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_PIDFD;
    for (kind, flag) in [
        ("net", libc::CLONE_NEWNET),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
    ] {
        if kinds.contains(&kind) {
            flags |= flag;
        }
    }
    if pause.is_some() {
        flags |= libc::CLONE_NEWPID;
    }
    let mut pidfd: libc::c_int = -1;
    // SAFETY: clone_args is plain data; zeroed is the documented default for unused fields.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = flags as u64;
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 with a valid clone_args and its size. The child (return 0) only calls close, read, syscall
    // (setgroups/setresgid/setresuid, raw: libc's wrappers would signal threads the child does not have), execve
    // and _exit, which are async-signal-safe and touch no locks or allocator state; every pointer they use was
    // prepared before the clone.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret == 0 {
        // SAFETY: see above; the child never returns into Rust code.
        unsafe {
            libc::close(go_write_fd);
            let mut byte = 0u8;
            // The parent writes one byte once the mappings are written and the namespaces pinned, or closes the
            // pipe on failure.
            if libc::read(go_read_fd, &mut byte as *mut u8 as *mut libc::c_void, 1) != 1 {
                libc::_exit(0);
            }
            match exec_ptr {
                Some(path) => {
                    // Become the namespace's root (host root is not mapped in it).
                    if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                        || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                        || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
                    {
                        libc::_exit(126);
                    }
                    libc::execve(path, argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127);
                }
                None => libc::_exit(0),
            }
        }
    }
    if ret < 0 {
        return Err(Error::io(
            "create the sandbox's user namespace",
            std::io::Error::last_os_error(),
        ));
    }
    drop(go_read);
    let pid = ret as i32;
    // SAFETY: CLONE_PIDFD stored a new descriptor we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let child = PauseProcess { pid, pidfd };
    let mut pinned: BTreeMap<String, PathBuf> = BTreeMap::new();
    let made = (|| -> Result<()> {
        write_id_map(pid, "uid_map", &userns.uid_mappings)?;
        write_id_map(pid, "gid_map", &userns.gid_mappings)?;
        for kind in std::iter::once(&"user").chain(kinds.iter()) {
            let target = dir.join(kind);
            pin(Path::new(&format!("/proc/{pid}/ns/{kind}")), &target)?;
            pinned.insert(kind.to_string(), target);
        }
        if let Some((_, pin_at)) = pause {
            pin(Path::new(&format!("/proc/{pid}/ns/pid")), pin_at)?;
            pinned.insert("pid".into(), pin_at.to_path_buf());
        }
        configure_pinned(
            pinned.get("uts").cloned(),
            pinned.get("net").cloned(),
            hostname,
        )
    })();
    if let Err(e) = made {
        stop_pause(&child);
        for p in pinned.values() {
            let _ = unpin(p);
        }
        return Err(e);
    }
    nix::unistd::write(&go_write, &[1u8]).map_err(|e| {
        stop_pause(&child);
        for p in pinned.values() {
            let _ = unpin(p);
        }
        sys("start the user namespace's holder", e)
    })?;
    drop(go_write);
    if pause.is_some() {
        Ok((pinned, Some(child)))
    } else {
        reap(&child.pidfd);
        Ok((pinned, None))
    }
}

/// Unpins every namespace file in `dir` and removes the directory if it is then empty.
pub fn remove_pinned(dir: &Path) -> Result<()> {
    for kind in PINNED_KINDS.iter().chain(["pid", "user"].iter()) {
        unpin(&dir.join(kind))?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
    }
}

/// A pause process started as PID 1 of a new PID namespace inside the sandbox's other namespaces.
#[derive(Debug)]
pub struct PauseProcess {
    /// Its PID on the host.
    pub pid: i32,
    /// A pidfd for it (used to reap it and to signal it without PID reuse races).
    pub pidfd: OwnedFd,
}

/// Starts `exe pause` with `clone3(CLONE_NEWPID)`, as PID 1 of a new PID namespace, after joining the
/// namespaces in `join` (pinned files). The child runs only async-signal-safe calls (setns, execve) between
/// clone and exec, so this is safe from the daemon's multithreaded process. Its namespace is pinned at `pin_at`.
pub fn spawn_pause(exe: &Path, join: &[PathBuf], pin_at: &Path) -> Result<PauseProcess> {
    let ns_files: Vec<File> = join
        .iter()
        .map(|p| File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e)))
        .collect::<Result<_>>()?;
    let path = CString::new(exe.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::internal("husk binary path has a NUL"))?;
    let arg0 = CString::new("husk").map_err(|_| Error::internal("arg"))?;
    let arg1 = CString::new("sandbox-pause").map_err(|_| Error::internal("arg"))?;
    let argv = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let ns_fds: Vec<i32> = ns_files.iter().map(|f| f.as_raw_fd()).collect();
    let mut pidfd: libc::c_int = -1;
    // SAFETY: clone_args is plain data; zeroed is the documented default for unused fields.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = (libc::CLONE_NEWPID | libc::CLONE_PIDFD) as u64;
    args.pidfd = &mut pidfd as *mut libc::c_int as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: clone3 with a valid clone_args and its size. In the child (return 0) we only call setns, execve and
    // _exit, which are async-signal-safe and touch no locks or allocator state; every pointer they use was
    // prepared before the clone.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut libc::clone_args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret == 0 {
        // SAFETY: see above; the child never returns into Rust code.
        unsafe {
            for fd in &ns_fds {
                if libc::setns(*fd, 0) != 0 {
                    libc::_exit(126);
                }
            }
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    if ret < 0 {
        return Err(Error::io(
            "start the pause process",
            std::io::Error::last_os_error(),
        ));
    }
    let pid = ret as i32;
    // SAFETY: CLONE_PIDFD stored a new descriptor we now own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pause = PauseProcess { pid, pidfd };
    if let Err(e) = pin(Path::new(&format!("/proc/{pid}/ns/pid")), pin_at) {
        stop_pause(&pause);
        return Err(e);
    }
    Ok(pause)
}

/// Sends SIGKILL to a pause process through its pidfd and reaps it.
pub fn stop_pause(pause: &PauseProcess) {
    // SAFETY: pidfd_send_signal on a pidfd we own; a null siginfo is allowed.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pause.pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<u8>(),
            0,
        )
    };
    reap(&pause.pidfd);
}

/// Whether the process of `pidfd` has exited (its pidfd polls readable), without waiting.
pub fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) of one valid descriptor we own, with no timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Waits for the process behind `pidfd` (our child) to exit and reaps it.
pub fn reap(pidfd: &OwnedFd) {
    // SAFETY: siginfo_t is plain data; waitid(P_PIDFD) on our own child's pidfd.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED,
        );
    }
}

/// Signals a process by PID through a pidfd (for a pause process found again after a daemon restart, which is no
/// longer our child). A process that is gone is not an error.
pub fn signal_pid(pid: i32, signal: i32) {
    // SAFETY: pidfd_open on a PID; the result is checked before use.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd >= 0 {
        // SAFETY: pidfd is a new descriptor we own.
        let owned = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: pidfd_send_signal on our descriptor with a null siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                owned.as_raw_fd(),
                signal,
                std::ptr::null::<u8>(),
                0,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn pins_new_namespaces_without_touching_the_caller() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns_dir = dir.path().join("ns");
        let before = ns_inode(Path::new("/proc/thread-self/ns/net"));
        let pinned = create_pinned(&ns_dir, "sbx-host", PINNED_KINDS).unwrap();
        assert_eq!(
            ns_inode(Path::new("/proc/thread-self/ns/net")),
            before,
            "the caller's namespace is unchanged"
        );
        assert_ne!(ns_inode(&pinned["net"]), before);
        assert!(pinned.values().all(|p| is_pinned(p)));
        remove_pinned(&ns_dir).unwrap();
        assert!(!ns_dir.exists());
        remove_pinned(&ns_dir).unwrap();
    }

    #[test]
    fn a_user_namespace_owns_the_namespaces_made_with_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns_dir = dir.path().join("ns");
        let map = vec![husk_core::IdMapping {
            container_id: 0,
            host_id: 1000,
            size: 100_000,
        }];
        let userns = husk_core::UserNamespaceConfig {
            uid_mappings: map.clone(),
            gid_mappings: map,
        };
        let (pinned, pause) =
            create_pinned_in_userns(&ns_dir, "sbx-host", PINNED_KINDS, &userns, None).unwrap();
        assert!(pause.is_none());
        assert_eq!(
            pinned.keys().collect::<Vec<_>>(),
            ["ipc", "net", "user", "uts"]
        );
        assert!(pinned.values().all(|p| is_pinned(p)));
        for kind in PINNED_KINDS {
            let f = File::open(&pinned[*kind]).unwrap();
            // SAFETY: NS_GET_USERNS on a namespace file we opened; it returns a new descriptor or -1.
            let owner = unsafe { libc::ioctl(f.as_raw_fd(), 0xb701) };
            assert!(owner >= 0, "{kind}: {}", std::io::Error::last_os_error());
            // SAFETY: the ioctl returned a new descriptor we own.
            let owner = File::from(unsafe { OwnedFd::from_raw_fd(owner) });
            use std::os::unix::fs::MetadataExt;
            assert_eq!(
                owner.metadata().unwrap().ino(),
                ns_inode(&pinned["user"]),
                "{kind} belongs to the sandbox's user namespace"
            );
        }
        remove_pinned(&ns_dir).unwrap();
        assert!(!ns_dir.exists());
        let bad = husk_core::UserNamespaceConfig::default();
        assert!(create_pinned_in_userns(&ns_dir, "h", &["net"], &bad, None).is_err());
        remove_pinned(&ns_dir).unwrap();
    }

    #[test]
    fn pins_only_the_kinds_asked_for() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns_dir = dir.path().join("ns");
        let pinned = create_pinned(&ns_dir, "sbx-host", &["uts"]).unwrap();
        assert_eq!(pinned.keys().collect::<Vec<_>>(), ["uts"]);
        assert!(!ns_dir.join("ipc").exists() && !ns_dir.join("net").exists());
        remove_pinned(&ns_dir).unwrap();
        assert!(create_pinned(&ns_dir, "sbx-host", &["pid"]).is_err());
        remove_pinned(&ns_dir).unwrap();
    }

    #[test]
    fn has_exited_tells_a_running_child_from_a_dead_one() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        // SAFETY: pidfd_open(2) of our own child; the result is a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        assert!(!has_exited(&pidfd));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(has_exited(&pidfd));
    }
}
