//! The mount namespace containers start from.
//!
//! A container's init copies the mount namespace it starts in (`unshare(CLONE_NEWNS)`), then throws the copy
//! away under `pivot_root`. In the host's namespace that copy holds every other container's mounts (its root,
//! its pinned namespaces, a sandbox's `/dev/shm`): with 1,000 containers ~2,500 mounts, copied and freed at each
//! start, a few milliseconds that grow with every container (docs/benchmarks.md, "Scale").
//!
//! So husk keeps its mounts out of the namespace containers start from:
//!
//! - the run root, where the linux driver mounts everything of its containers, is a **private** mount (bound
//!   onto itself if it is not a mount of its own): what is mounted below it does not propagate anywhere;
//! - the **base namespace** is a copy of the host's made once, with nothing below the run root, pinned at
//!   `RUN_ROOT/base.mnt`. The rest of it is the host's as it was then (and, where the host's mounts are shared,
//!   its peer);
//! - a shim joins the base namespace, makes a copy of its own and attaches there clones of the mounts its
//!   container uses, which it took as detached trees (`open_tree`) before it left the host's namespace: the
//!   run root's at their own paths (its root, the namespace files it joins, the sandbox's `/dev/shm`), and every
//!   other bind source at a place of the container's below the run root, which its spec names instead (so a
//!   host mount made after the base namespace, on a host whose mounts do not propagate, is still seen, and a
//!   shared source's clone stays its peer). Its container's init then copies a namespace of a few dozen mounts,
//!   whatever the host holds.
//!
//! The daemon's own view does not change: every mount stays in the host's namespace too, where copy, commit,
//! user lookup and removal find it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use husk_core::{Error, Result};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

/// The pin of the base namespace below the run root.
pub const PIN: &str = "base.mnt";

/// A file below the run root that says husk bound the run root onto itself (so [`release`] undoes only that).
const BOUND: &str = "base.bound";

/// `statfs` magic of nsfs, the filesystem of namespace files.
const NSFS_MAGIC: libc::__fsword_t = 0x6e73_6673;

fn sys(what: &str, e: impl Into<std::io::Error>) -> Error {
    Error::io(what.to_string(), e.into())
}

/// One line of `/proc/self/mountinfo`: where a mount is, and whether it is shared.
#[derive(Debug, Clone, PartialEq)]
struct MountLine {
    mount_point: PathBuf,
    shared: bool,
}

fn unescape(field: &str) -> String {
    // The kernel escapes space, tab, newline and backslash as \ooo.
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = fields.get(4)?;
            let optional = fields.get(6..)?.iter().take_while(|f| **f != "-");
            let shared = optional.clone().any(|f| f.starts_with("shared:"));
            Some(MountLine {
                mount_point: PathBuf::from(unescape(mount_point)),
                shared,
            })
        })
        .collect()
}

fn strictly_below(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Makes `run_root` a private mount and the base namespace, or finds them made (a restart): the pin's path, or
/// `None` when containers of a husk that did not keep them are still mounted below a shared run root (their
/// mounts would be hidden by a new mount over it): shims then start in the host's namespace, as before.
pub fn prepare(run_root: &Path) -> Result<Option<PathBuf>> {
    let run_root = run_root
        .canonicalize()
        .map_err(|e| sys(&format!("resolve {}", run_root.display()), e))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| sys("read /proc/self/mountinfo", e))?;
    let mounts = parse_mountinfo(&table);
    let top = mounts.iter().rev().find(|m| m.mount_point == run_root);
    if top.is_none_or(|m| m.shared) {
        if mounts
            .iter()
            .any(|m| strictly_below(&m.mount_point, &run_root))
        {
            tracing::info!(
                run_root = %run_root.display(),
                "containers of an earlier husk are mounted below the run root: containers start from the \
                 host's mount namespace until none is left and the daemon restarts"
            );
            return Ok(None);
        }
        nix::mount::mount(
            Some(&run_root),
            &run_root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| sys(&format!("bind {} onto itself", run_root.display()), e))?;
        nix::mount::mount(
            None::<&str>,
            &run_root,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| sys(&format!("make {} private", run_root.display()), e))?;
        std::fs::write(run_root.join(BOUND), "")
            .map_err(|e| sys(&format!("write {}", run_root.join(BOUND).display()), e))?;
    }
    let pin = run_root.join(PIN);
    if is_nsfs(&pin) {
        return Ok(Some(pin));
    }
    make_and_pin(&run_root, &pin)?;
    Ok(Some(pin))
}

/// At a daemon's stop: when nothing of a container is mounted below `run_root` any more, removes the base
/// namespace's pin and the run root's bind onto itself (if husk made it), so a host without containers keeps no
/// mount of husk's. With containers left running (they outlive the daemon), both stay for the next daemon.
pub fn release(run_root: &Path) {
    let Ok(run_root) = run_root.canonicalize() else {
        return;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let pin = run_root.join(PIN);
    let busy = parse_mountinfo(&table)
        .iter()
        .any(|m| strictly_below(&m.mount_point, &run_root) && m.mount_point != pin);
    if busy {
        return;
    }
    if is_nsfs(&pin)
        && let Err(e) = nix::mount::umount2(&pin, MntFlags::MNT_DETACH)
    {
        tracing::warn!(error = %e, pin = %pin.display(), "could not release the base mount namespace");
        return;
    }
    let _ = std::fs::remove_file(&pin);
    let bound = run_root.join(BOUND);
    if bound.exists() {
        if let Err(e) = nix::mount::umount2(&run_root, MntFlags::MNT_DETACH) {
            tracing::warn!(error = %e, run_root = %run_root.display(), "could not unbind the run root");
            return;
        }
        let _ = std::fs::remove_file(&bound);
    }
}

/// Makes the base namespace on a thread of its own (a copy of the host's without the mounts below `run_root`)
/// and pins it at `pin` from this thread, which stays in the host's namespace.
fn make_and_pin(run_root: &Path, pin: &Path) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<libc::pid_t>>();
    let (pinned_tx, pinned_rx) = std::sync::mpsc::channel::<()>();
    let below = run_root.to_path_buf();
    let maker = std::thread::Builder::new()
        .name("husk-base-mnt".into())
        .spawn(move || {
            let made = (|| {
                // CLONE_NEWNS takes CLONE_FS with it: only this thread moves.
                nix::sched::unshare(CloneFlags::CLONE_NEWNS)
                    .map_err(|e| sys("make the base mount namespace", e))?;
                detach_below(&below)?;
                Ok(nix::unistd::gettid().as_raw())
            })();
            let ok = made.is_ok();
            let _ = ready_tx.send(made);
            if ok {
                // Stay in the namespace until it is pinned.
                let _ = pinned_rx.recv();
            }
        })
        .map_err(|e| sys("start a thread", e))?;
    let result = ready_rx
        .recv()
        .map_err(|_| Error::internal("the base mount namespace's thread ended early"))
        .and_then(|made| made)
        .and_then(|tid| {
            crate::namespaces::pin(Path::new(&format!("/proc/self/task/{tid}/ns/mnt")), pin)
        });
    let _ = pinned_tx.send(());
    let _ = maker.join();
    result
}

/// Detaches, in this thread's mount namespace, every mount below `run_root` (containers of a daemon that ran
/// before, when the pin was lost). The run root is private, so nothing of this reaches the host.
fn detach_below(run_root: &Path) -> Result<()> {
    let table = std::fs::read_to_string("/proc/thread-self/mountinfo")
        .map_err(|e| sys("read /proc/thread-self/mountinfo", e))?;
    let mut below: Vec<PathBuf> = parse_mountinfo(&table)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| strictly_below(p, run_root))
        .collect();
    below.sort_by_key(|p| p.components().count());
    let mut detached: Vec<PathBuf> = Vec::new();
    for p in below {
        if detached.iter().any(|d| p.starts_with(d)) {
            continue;
        }
        match nix::mount::umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(sys(
                    &format!("detach {} from the base namespace", p.display()),
                    e,
                ));
            }
        }
        detached.push(p);
    }
    Ok(())
}

/// The nearest mount root at or above `path` and strictly below `run_root`: the mount of the run root that holds
/// `path` (a container's root, a namespace file it joins). `None` for a path on no such mount (a plain file of
/// the run root, seen in the base namespace as it is) or a missing one (the runtime's to report).
pub fn mount_root_below(run_root: &Path, path: &Path) -> Option<PathBuf> {
    let mut at = path;
    while strictly_below(at, run_root) {
        let st = rustix::fs::statx(
            rustix::fs::CWD,
            at,
            AtFlags::STATX_DONT_SYNC,
            StatxFlags::empty(),
        )
        .ok()?;
        if st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
            return Some(at.to_path_buf());
        }
        at = at.parent()?;
    }
    None
}

/// Moves this process (single-threaded: a shim before libcontainer) from the host's mount namespace to a copy of
/// the base namespace `base` of its own, with clones of the `carried` mounts attached.
pub fn enter(base: &Path, carried: &[CarriedMount]) -> Result<()> {
    // Cloned here, where they are seen; attached there, below the private run root, so nothing propagates out.
    // A place a reboot emptied (the run root is usually a tmpfs) is made again, as a file or a directory like
    // its source; the run root's directories are the same in both namespaces.
    let trees: Vec<(OwnedFd, &Path)> = carried
        .iter()
        .map(|c| {
            if c.target != c.source && !c.target.exists() {
                make_place(&c.source, &c.target)?;
            }
            rustix::mount::open_tree(
                rustix::fs::CWD,
                &c.source,
                OpenTreeFlags::OPEN_TREE_CLONE
                    | OpenTreeFlags::OPEN_TREE_CLOEXEC
                    | OpenTreeFlags::AT_RECURSIVE,
            )
            .map(|tree| (tree, c.target.as_path()))
            .map_err(|e| sys(&format!("clone the mount {}", c.source.display()), e))
        })
        .collect::<Result<_>>()?;
    let ns = std::fs::File::open(base).map_err(|e| {
        sys(
            &format!("open the base mount namespace {}", base.display()),
            e,
        )
    })?;
    nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| sys("join the base mount namespace", e))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| sys("copy the base mount namespace", e))?;
    for (tree, target) in trees {
        rustix::mount::move_mount(
            &tree,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| sys(&format!("attach the mount {}", target.display()), e))?;
    }
    Ok(())
}

/// Makes `target` a place to attach a clone of `source`: a directory for a directory, else an empty file.
pub fn make_place(source: &Path, target: &Path) -> Result<()> {
    let dir = std::fs::metadata(source)
        .map_err(|e| sys(&format!("mount source {}", source.display()), e))?
        .is_dir();
    let made = if dir {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| sys(&format!("create {}", parent.display()), e))?;
        }
        std::fs::File::create(target).map(drop)
    };
    made.map_err(|e| sys(&format!("create {}", target.display()), e))
}

/// A mount of the daemon's namespace a shim takes into its own: `source` cloned (with what is mounted below it)
/// and attached at `target`, below the run root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CarriedMount {
    /// Where it is in the daemon's namespace.
    pub source: PathBuf,
    /// Where the shim attaches it: `source` itself for a mount of the run root, else a place of the container's
    /// below the run root, which the spec names instead of `source`.
    pub target: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_mount_points_and_sharing() {
        let text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    30 22 0:26 / /run rw,nosuid shared:5 master:1 - tmpfs tmpfs rw\n\
                    31 30 0:26 /husk /run/husk rw,nosuid - tmpfs tmpfs rw\n\
                    32 31 0:40 / /run/husk/c/a\\040b/rootfs rw - overlay overlay rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 4);
        assert!(m[0].shared && m[1].shared && !m[2].shared && !m[3].shared);
        assert_eq!(m[3].mount_point, Path::new("/run/husk/c/a b/rootfs"));
    }

    #[test]
    fn only_paths_strictly_below_count() {
        let root = Path::new("/run/husk");
        assert!(strictly_below(Path::new("/run/husk/c"), root));
        assert!(!strictly_below(root, root));
        assert!(!strictly_below(Path::new("/run/husky"), root));
    }

    #[test]
    fn a_place_is_made_like_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let (src_dir, src_file) = (dir.path().join("d"), dir.path().join("f"));
        std::fs::create_dir(&src_dir).unwrap();
        std::fs::write(&src_file, "x").unwrap();
        let places = dir.path().join("c/id/carried");
        make_place(&src_dir, &places.join("0")).unwrap();
        make_place(&src_file, &places.join("1")).unwrap();
        assert!(places.join("0").is_dir());
        assert!(places.join("1").is_file());
        assert!(make_place(&dir.path().join("missing"), &places.join("2")).is_err());
    }

    #[test]
    fn plain_files_of_the_run_root_carry_no_mount() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c/x/hosts");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "").unwrap();
        let missing = dir.path().join("c/y/rootfs");
        assert_eq!(mount_root_below(dir.path(), &file), None);
        assert_eq!(mount_root_below(dir.path(), &missing), None);
    }
}
