//! `husk container-fs`: a fresh process that works on a container's files from inside the container's own
//! mount namespace — for `cp` (stat, archive, extract) and for setting bind mounts' propagation.
//!
//! Why a process of its own: entering a mount namespace (`setns(CLONE_NEWNS)`) or making one (`unshare`) is only
//! allowed to a single-threaded process, and the daemon is not one. The daemon execs `husk container-fs
//! REQUEST` and talks to it over stdin/stdout (a tar stream or JSON); failures come back as one JSON
//! [`husk_core::Error`] line on stderr.
//!
//! How it reaches the files, so that no path can lead out of the container:
//! - A container whose init process exists (created, running, paused): the daemon passes a pidfd of that
//!   process as descriptor 3, and the helper joins its mount namespace. Its root is then the container's root,
//!   with every volume, bind and tmpfs mounted where the container sees them.
//! - A stopped container: the helper makes a private mount namespace, clones the container's root filesystem,
//!   attaches its binds and volumes at their destinations (each resolved inside the root with
//!   `RESOLVE_IN_ROOT`, read-only ones recursively read-only), and `chroot`s into it, as Docker mounts a stopped
//!   container's volumes for `docker cp`.
//!
//! Either way every path is then resolved by [`husk_fs::Tree`] in `RESOLVE_IN_ROOT` mode against the root, and
//! files are re-opened through the helper's own `/proc` (opened before it moved), never the container's.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use husk_core::{Error, MountConfig, MountKind, Result};
use husk_fs::{Scope, Tree};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use serde::{Deserialize, Serialize};

/// The descriptor number of the pidfd a [`FsTarget::Process`] helper inherits.
pub const PIDFD: RawFd = 3;

/// Where the helper finds the container's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FsTarget {
    /// The container's init process; descriptor [`PIDFD`] is a pidfd of it.
    Process,
    /// A stopped container, assembled from its (mounted) root filesystem and its mounts.
    View {
        /// The container's root filesystem on the host.
        rootfs: PathBuf,
        /// The root filesystem is read-only.
        readonly_rootfs: bool,
        /// The container's mounts (binds and volumes are attached; tmpfs contents are gone anyway).
        mounts: Vec<MountConfig>,
    },
}

/// What the helper does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FsOp {
    /// Print the [`husk_core::PathStat`] of `path` as JSON.
    Stat {
        /// Path in the container.
        path: String,
    },
    /// Write a tar archive of `path` to stdout.
    Archive {
        /// Path in the container.
        path: String,
    },
    /// Unpack the tar archive on stdin into the directory `dir`.
    Extract {
        /// Directory in the container.
        dir: String,
        /// Keep the archive's owners.
        copy_owners: bool,
        /// Refuse to replace a directory with a non-directory or the reverse.
        no_overwrite_dir_non_dir: bool,
    },
    /// Give the mounts at these destinations these propagation modes (`rprivate`, `rslave` ...).
    Propagation {
        /// `(destination, mode)` pairs.
        mounts: Vec<(String, String)>,
    },
}

/// A request to the helper (its only argument, as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRequest {
    /// Where the files are.
    pub target: FsTarget,
    /// What to do.
    pub op: FsOp,
}

/// Runs the helper; returns the process exit code. Call it before any other thread exists.
pub fn run(request: &str) -> i32 {
    match serve(request) {
        Ok(()) => 0,
        Err(e) => {
            let line = serde_json::to_string(&e).unwrap_or_else(|_| e.message.clone());
            let _ = writeln!(std::io::stderr(), "{line}");
            1
        }
    }
}

fn sys(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend(format!("{what}: {e}"))
}

fn serve(request: &str) -> Result<()> {
    let req: FsRequest = serde_json::from_str(request)
        .map_err(|e| Error::internal(format!("container-fs: bad request: {e}")))?;
    // Our own /proc, kept for re-opening descriptors whatever namespace we move to.
    let proc_fd = rustix::fs::open(
        "/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys("open /proc", e))?;
    match &req.target {
        FsTarget::Process => enter_process()?,
        FsTarget::View {
            rootfs,
            readonly_rootfs,
            mounts,
        } => enter_view(rootfs, *readonly_rootfs, mounts)?,
    }
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys("open the container's root", e))?;
    let tree = Tree::from_fds(root, proc_fd, Scope::InRoot);
    match req.op {
        FsOp::Stat { path } => {
            let stat = tree.stat(&path)?;
            let text = serde_json::to_string(&stat).map_err(|e| Error::internal(e.to_string()))?;
            println!("{text}");
            Ok(())
        }
        FsOp::Archive { path } => {
            let out = std::io::BufWriter::with_capacity(256 * 1024, std::io::stdout().lock());
            tree.archive(&path, None, out)
        }
        FsOp::Extract {
            dir,
            copy_owners,
            no_overwrite_dir_non_dir,
        } => {
            let options = husk_fs::ExtractOptions {
                copy_owners,
                no_overwrite_dir_non_dir,
                rename_top: None,
            };
            tree.extract(&dir, std::io::stdin().lock(), &options)
        }
        FsOp::Propagation { mounts } => set_propagation(&mounts),
    }
}

/// Joins the mount namespace of the process whose pidfd is descriptor [`PIDFD`].
fn enter_process() -> Result<()> {
    // SAFETY: the daemon passes a pidfd as descriptor 3 to this process and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(PIDFD) };
    nix::sched::setns(&pidfd, nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        sys(
            "enter the container's mount namespace (is it still running?)",
            e,
        )
    })?;
    std::env::set_current_dir("/").map_err(|e| Error::io("enter the container's root", e))
}

/// `mount_setattr(2)`'s argument.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], attr)`.
fn mount_setattr(fd: BorrowedFd<'_>, recursive: bool, attr: &MountAttr) -> std::io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a valid descriptor, a NUL-terminated empty path, and a pointer to a live MountAttr of the size
    // passed; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_in_root(root: BorrowedFd<'_>, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    husk_fs::openat2_retrying(
        root,
        path.trim_start_matches('/'),
        flags | OFlags::CLOEXEC,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Makes the mount point `dest` (a directory, or a file for a file source) inside `root` where it is missing,
/// as the runtime would at start.
fn make_mount_point(root: BorrowedFd<'_>, dest: &str, is_dir: bool) -> Result<()> {
    let parts: Vec<&str> = dest.split('/').filter(|c| !c.is_empty()).collect();
    let mut prefix = String::new();
    for (i, part) in parts.iter().enumerate() {
        let parent = if prefix.is_empty() {
            ".".to_string()
        } else {
            prefix.clone()
        };
        prefix = format!("{prefix}/{part}");
        match open_in_root(root, &prefix, OFlags::PATH) {
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(sys(&format!("mount point {dest}"), e)),
        }
        let dir = open_in_root(root, &parent, OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|e| sys(&format!("mount point {dest}"), e))?;
        let last = i + 1 == parts.len();
        let made = if last && !is_dir {
            rustix::fs::openat(
                &dir,
                *part,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        } else {
            rustix::fs::mkdirat(&dir, *part, Mode::from_raw_mode(0o755))
        };
        match made {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(sys(&format!("make mount point {dest}"), e)),
        }
    }
    Ok(())
}

/// Builds the view of a stopped container in a private mount namespace and `chroot`s into it.
fn enter_view(rootfs: &std::path::Path, readonly: bool, mounts: &[MountConfig]) -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| sys("make a mount namespace", e))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| sys("make the mount namespace private", e))?;
    // A clone of the root filesystem, attached over itself: ours to change.
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        rootfs,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| {
        sys(
            &format!("clone the root filesystem {}", rootfs.display()),
            e,
        )
    })?;
    rustix::mount::move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        rootfs,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| sys("attach the root filesystem", e))?;
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys("open the root filesystem", e))?;
    let mut binds: Vec<&MountConfig> = mounts
        .iter()
        .filter(|m| m.kind != MountKind::Tmpfs && !m.host_path.is_empty())
        .collect();
    binds.sort_by_key(|m| m.destination.matches('/').count());
    for m in binds {
        attach(root.as_fd(), m)?;
    }
    if readonly {
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        mount_setattr(root.as_fd(), false, &attr)
            .map_err(|e| sys("make the root filesystem read-only", e))?;
    }
    rustix::process::fchdir(&root).map_err(|e| sys("enter the root filesystem", e))?;
    nix::unistd::chroot(".").map_err(|e| sys("chroot into the root filesystem", e))?;
    std::env::set_current_dir("/").map_err(|e| Error::io("enter the container's root", e))
}

/// Attaches a bind, volume or image mount at its destination inside `root`.
fn attach(root: BorrowedFd<'_>, m: &MountConfig) -> Result<()> {
    let source_dir = std::fs::metadata(&m.host_path)
        .map(|md| md.is_dir())
        .map_err(|e| Error::io(format!("mount source {}", m.host_path), e))?;
    make_mount_point(root, &m.destination, source_dir)?;
    let dest = open_in_root(root, &m.destination, OFlags::PATH)
        .map_err(|e| sys(&format!("mount point {}", m.destination), e))?;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        m.host_path.as_str(),
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(|e| sys(&format!("clone {}", m.host_path), e))?;
    if m.readonly {
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_RDONLY,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        mount_setattr(tree.as_fd(), true, &attr)
            .map_err(|e| sys(&format!("make {} read-only", m.destination), e))?;
    }
    rustix::mount::move_mount(
        &tree,
        "",
        &dest,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| sys(&format!("mount {} on {}", m.host_path, m.destination), e))
}

/// Sets the propagation of the mounts at the given destinations (inside the current root).
fn set_propagation(mounts: &[(String, String)]) -> Result<()> {
    let root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys("open the container's root", e))?;
    for (dest, mode) in mounts {
        let flag = match mode.trim_start_matches('r') {
            "private" => libc::MS_PRIVATE,
            "shared" => libc::MS_SHARED,
            "slave" => libc::MS_SLAVE,
            other => {
                return Err(Error::invalid(
                    "mounts",
                    format!("unknown propagation {other:?}"),
                ));
            }
        };
        let fd = open_in_root(root.as_fd(), dest, OFlags::PATH)
            .map_err(|e| sys(&format!("mount {dest}"), e))?;
        let attr = MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation: flag as u64,
            userns_fd: 0,
        };
        mount_setattr(fd.as_fd(), mode.starts_with('r'), &attr)
            .map_err(|e| sys(&format!("set the propagation of {dest} to {mode}"), e))?;
    }
    Ok(())
}

/// The argument list of a helper run (after the program): the subcommand and the request.
pub fn helper_args(req: &FsRequest) -> Result<Vec<String>> {
    let text = serde_json::to_string(req).map_err(|e| Error::internal(e.to_string()))?;
    Ok(vec!["container-fs".into(), text])
}

/// Reads the helper's error line (the last JSON line of its stderr), or makes one from the text.
pub fn helper_error(stderr: &[u8], status: std::process::ExitStatus) -> Error {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Error>(l).ok())
        .unwrap_or_else(|| {
            Error::backend(format!(
                "the container-fs helper failed ({status}): {}",
                text.trim()
            ))
        })
}
