#![doc = include_str!("../README.md")]

mod archive;
mod extract;
pub mod overlay;

pub use overlay::{
    MountMethod, mount_image_readonly, mount_overlay, mount_rootfs, unmount_all_in, unmount_rootfs,
};

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use husk_core::{Error, ErrorKind, PathStat, Result};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

pub use extract::ExtractOptions;

/// How paths are resolved in a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The tree's directory is the root of every path: nothing resolves outside it.
    InRoot,
    /// Paths may not leave the tree's directory at all: such a path is an error.
    Beneath,
}

/// A directory tree paths are resolved in without ever leaving it.
#[derive(Debug)]
pub struct Tree {
    anchor: OwnedFd,
    proc_fd: OwnedFd,
    scope: Scope,
}

/// The error of an I/O call on `what`, with a kind and a message users can act on.
/// `openat2` with `resolve`, tried again when it fails with `EAGAIN`: with `RESOLVE_IN_ROOT` or
/// `RESOLVE_BENEATH` the kernel refuses a path with `..` when a rename or a mount anywhere on the system races with
/// the walk (it cannot then prove that `..` stayed inside), and tells the caller to retry.
pub fn openat2_retrying(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(dir, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if attempts < OPENAT2_ATTEMPTS => attempts += 1,
            other => return other,
        }
    }
}

/// How many times [`openat2_retrying`] tries again (each try is one path walk; races are rare and short).
const OPENAT2_ATTEMPTS: u32 = 128;

pub(crate) fn io_error(what: impl std::fmt::Display, e: Errno) -> Error {
    let message = match e {
        Errno::NOENT => format!("{what}: no such file or directory"),
        Errno::NOTDIR => format!("{what}: a path component is not a directory"),
        Errno::XDEV => format!(
            "{what}: the path leads outside the destination (through '..' or a symbolic link)"
        ),
        Errno::LOOP => {
            format!("{what}: too many symbolic links, or a symbolic link where none may be")
        }
        Errno::ROFS => format!("{what}: the file system is read-only"),
        Errno::EXIST => format!("{what}: already exists"),
        Errno::ISDIR => format!("{what}: is a directory"),
        Errno::NOTEMPTY => format!("{what}: the directory is not empty"),
        Errno::ACCESS | Errno::PERM => format!("{what}: permission denied"),
        Errno::NOSPC => format!("{what}: no space left on the device"),
        other => format!("{what}: {}", std::io::Error::from(other)),
    };
    let kind = match e {
        Errno::NOENT => ErrorKind::NotFound,
        Errno::XDEV | Errno::LOOP | Errno::NOTDIR | Errno::ISDIR | Errno::EXIST => {
            ErrorKind::InvalidArgument
        }
        Errno::ROFS | Errno::ACCESS | Errno::PERM => ErrorKind::Forbidden,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, message)
}

/// A path as the kernel's `*at` calls take it relative to the tree: no leading `/`, `.` for the tree itself.
pub(crate) fn relative(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    if p.is_empty() { "." } else { p }
}

/// The meaningful components of `path` (no empty ones, no `.`).
pub(crate) fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Whether `path` asks to follow a final symbolic link (Docker's rule: a trailing `/` or `/.`).
pub(crate) fn follows_final(path: &str) -> bool {
    path.ends_with('/') || path.ends_with("/.") || path == "."
}

/// `path` without a trailing `/` or `/.` (but `/` stays `/`).
pub(crate) fn trim_path(path: &str) -> &str {
    let mut p = path;
    loop {
        let t = p.strip_suffix("/.").or_else(|| p.strip_suffix('/'));
        match t {
            Some(rest) if !rest.is_empty() => p = rest,
            Some(_) => return "/",
            None => return p,
        }
    }
}

impl Tree {
    fn open_dir(path: &Path) -> Result<OwnedFd> {
        rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(format!("open {}", path.display()), e))
    }

    fn open_proc() -> Result<OwnedFd> {
        Self::open_dir(Path::new("/proc"))
    }

    /// The tree rooted at the directory `path`, resolved as [`Scope::InRoot`].
    pub fn in_root(path: &Path) -> Result<Tree> {
        Ok(Tree {
            anchor: Self::open_dir(path)?,
            proc_fd: Self::open_proc()?,
            scope: Scope::InRoot,
        })
    }

    /// The tree under the directory `path`, resolved as [`Scope::Beneath`].
    pub fn beneath(path: &Path) -> Result<Tree> {
        Ok(Tree {
            anchor: Self::open_dir(path)?,
            proc_fd: Self::open_proc()?,
            scope: Scope::Beneath,
        })
    }

    /// A tree from descriptors the caller opened: `anchor` (a directory) and `proc_fd` (the caller's own
    /// `/proc`, used to re-open descriptors).
    pub fn from_fds(anchor: OwnedFd, proc_fd: OwnedFd, scope: Scope) -> Tree {
        Tree {
            anchor,
            proc_fd,
            scope,
        }
    }

    fn resolve_flags(&self) -> ResolveFlags {
        ResolveFlags::NO_MAGICLINKS
            | match self.scope {
                Scope::InRoot => ResolveFlags::IN_ROOT,
                Scope::Beneath => ResolveFlags::BENEATH,
            }
    }

    /// Opens `path` in the tree with `flags` (`O_CLOEXEC` is added); the final component is followed unless
    /// `flags` has `O_NOFOLLOW`.
    pub(crate) fn open(&self, path: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        openat2_retrying(
            self.anchor.as_fd(),
            relative(path),
            flags | OFlags::CLOEXEC,
            self.resolve_flags(),
        )
    }

    /// Opens the object behind an `O_PATH` descriptor for real I/O, through `/proc/self/fd` (the object, not a
    /// name, is what gets opened).
    pub(crate) fn reopen(&self, fd: BorrowedFd<'_>, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat(
            &self.proc_fd,
            format!("self/fd/{}", fd.as_raw_fd()),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
        )
    }

    /// The absolute path of an open object as this process sees it (inside the tree for a process whose root it
    /// is).
    fn path_of(&self, fd: BorrowedFd<'_>) -> rustix::io::Result<String> {
        let target = rustix::fs::readlinkat(
            &self.proc_fd,
            format!("self/fd/{}", fd.as_raw_fd()),
            Vec::new(),
        )?;
        Ok(OsStr::from_bytes(target.as_bytes())
            .to_string_lossy()
            .into_owned())
    }

    /// The object `path` names, pinned with `O_PATH`: a final symbolic link is followed only when the path
    /// asks for it (trailing `/` or `/.`). Returns the descriptor and the name the path gives it.
    pub(crate) fn locate(&self, path: &str) -> Result<(OwnedFd, String)> {
        let trimmed = trim_path(path);
        let parts = components(trimmed);
        let name = match parts.last() {
            None => "/".to_string(),
            Some(n) => (*n).to_string(),
        };
        let follow = follows_final(path) || parts.is_empty() || name == "..";
        let flags = if follow {
            OFlags::PATH
        } else {
            OFlags::PATH | OFlags::NOFOLLOW
        };
        let fd = self.open(path, flags).map_err(|e| io_error(path, e))?;
        Ok((fd, name))
    }

    /// Describes `path` as `lstat` would (a trailing `/` or `/.` follows a final symbolic link); a symbolic
    /// link's `link_target` is where it leads inside the tree.
    pub fn stat(&self, path: &str) -> Result<PathStat> {
        let (fd, name) = self.locate(path)?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_error(path, e))?;
        let mut stat = PathStat {
            name,
            size: st.st_size as u64,
            mode: st.st_mode,
            mtime: rfc3339(st.st_mtime, st.st_mtime_nsec as u32),
            link_target: String::new(),
        };
        if stat.is_symlink() {
            stat.link_target = self.link_target(path, &fd);
        }
        Ok(stat)
    }

    /// Where the symbolic link at `path` (pinned as `fd`) leads: the resolved path when it resolves, else its
    /// text made absolute against the link's directory.
    fn link_target(&self, path: &str, fd: &OwnedFd) -> String {
        if let Ok(target) = self.open(path, OFlags::PATH)
            && let Ok(p) = self.path_of(target.as_fd())
            && self.scope == Scope::InRoot
        {
            return p;
        }
        let text = rustix::fs::readlinkat(fd, "", Vec::new())
            .map(|t| {
                OsStr::from_bytes(t.as_bytes())
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        if text.starts_with('/') {
            return text;
        }
        let trimmed = trim_path(path);
        let parent = match trimmed.rsplit_once('/') {
            Some((p, _)) if !p.is_empty() => p,
            _ => "",
        };
        format!("{parent}/{text}")
    }

    /// Where `path` leads in the tree, every symbolic link on the way followed inside it: the object's absolute
    /// path as this process sees it. With [`Scope::InRoot`] neither `..` nor a link (even an absolute one) can
    /// lead out of the tree. A path that does not exist is an error.
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        let fd = self
            .open(path, OFlags::PATH)
            .map_err(|e| io_error(path, e))?;
        let found = self.path_of(fd.as_fd()).map_err(|e| io_error(path, e))?;
        Ok(PathBuf::from(found))
    }

    /// Where `path` leads in the tree, as a path of the tree's own (from its top, `/`): every symbolic link on
    /// the way followed inside the tree (as [`Tree::resolve`], and also a link whose target does not exist yet),
    /// and the parts that do not exist kept as given. For a mount destination that the runtime creates: what is
    /// left has no link to follow, and a link that pointed out of the tree now names the place inside it. A `..`
    /// in the part that does not exist is refused, and so are more than 40 links.
    pub fn resolve_in_tree(&self, path: &str) -> Result<String> {
        let top = self
            .path_of(self.anchor.as_fd())
            .map_err(|e| io_error(path, e))?;
        let top = top.trim_end_matches('/').to_string();
        let mut wanted = path.to_string();
        for _ in 0..40 {
            let parts: Vec<String> = wanted
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(String::from)
                .collect();
            // The longest part that exists, resolved.
            let mut keep = parts.len();
            let base = loop {
                match self.resolve(&format!("/{}", parts[..keep].join("/"))) {
                    Ok(found) => break found.to_string_lossy().into_owned(),
                    Err(e) if e.kind == husk_core::ErrorKind::NotFound && keep > 0 => keep -= 1,
                    Err(e) => return Err(e),
                }
            };
            let mut inside = match base.strip_prefix(top.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_string(),
                _ => {
                    return Err(Error::internal(format!(
                        "{path}: resolved to {base}, outside the tree {top}"
                    )));
                }
            };
            let rest = &parts[keep..];
            // The first part that does not exist may be a link to what does not exist: follow it, in the tree.
            if let Some(next) = rest.first() {
                let name = format!("{inside}/{next}");
                if let Ok(fd) = self.open(&name, OFlags::PATH | OFlags::NOFOLLOW)
                    && let Ok(target) = rustix::fs::readlinkat(&fd, "", Vec::new())
                {
                    let target = target.to_string_lossy().into_owned();
                    let from = if target.starts_with('/') {
                        target
                    } else {
                        format!("{inside}/{target}")
                    };
                    wanted = std::iter::once(from)
                        .chain(rest[1..].iter().cloned())
                        .collect::<Vec<_>>()
                        .join("/");
                    continue;
                }
            }
            for part in rest {
                if part == ".." {
                    return Err(Error::invalid(
                        "path",
                        format!("{path}: `..` after a part that does not exist"),
                    ));
                }
                inside.push('/');
                inside.push_str(part);
            }
            return Ok(if inside.is_empty() {
                "/".into()
            } else {
                inside
            });
        }
        Err(Error::invalid(
            "path",
            format!("{path}: too many symbolic links"),
        ))
    }

    /// Writes a tar archive of `path` to `out`; its top entry is named `top_name`, or after the path's last
    /// component. Directories are walked without following any symbolic link.
    pub fn archive<W: std::io::Write>(
        &self,
        path: &str,
        top_name: Option<&str>,
        out: W,
    ) -> Result<()> {
        let (fd, name) = self.locate(path)?;
        let top =
            top_name
                .map(str::to_string)
                .unwrap_or(if name == "/" { ".".into() } else { name });
        archive::write(self, fd, &top, out)
    }

    /// Unpacks a tar archive into the directory `dir` of the tree (which must exist).
    pub fn extract<R: std::io::Read>(
        &self,
        dir: &str,
        input: R,
        options: &ExtractOptions,
    ) -> Result<()> {
        extract::run(self, dir, input, options)
    }
}

/// Copies the tree at `src_path` in `src` into the directory `dst_dir` of `dst`: contents, owners, modes, times,
/// symbolic links (as links) and hard links; the directory `dst_dir` itself takes the source's owner and mode.
pub fn copy_tree(src: &Tree, src_path: &str, dst: &Tree, dst_dir: &str) -> Result<()> {
    let (reader, writer) = std::io::pipe().map_err(|e| Error::io("create a pipe", e))?;
    std::thread::scope(|s| {
        let producer = s.spawn(move || src.archive(src_path, Some("."), writer));
        let options = ExtractOptions {
            copy_owners: true,
            ..Default::default()
        };
        let consumed = dst.extract(dst_dir, reader, &options);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the copy's reading side panicked")));
        produced.and(consumed)
    })
}

/// Seconds and nanoseconds since the epoch as RFC 3339.
pub(crate) fn rfc3339(secs: i64, nanos: u32) -> String {
    husk_core::Timestamp::from_unix(secs, nanos)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Whether `errno` says a path did not exist.
pub(crate) fn is_missing(e: Errno) -> bool {
    e == Errno::NOENT
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`, `None` when there is nothing by that name.
pub(crate) fn lstat_at<P: rustix::path::Arg>(
    dirfd: BorrowedFd<'_>,
    name: P,
) -> rustix::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(e) if is_missing(e) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
