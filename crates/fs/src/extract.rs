//! Unpacking a tar archive into a directory of a [`Tree`]: each entry's parent is resolved in the tree's scope,
//! the entry itself is created in that pinned parent without following anything (`O_EXCL | O_NOFOLLOW`,
//! `*at` calls on the name), and directories get their metadata last (their children change their times).

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use husk_core::{Error, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use tar::EntryType;

use crate::{Tree, io_error, lstat_at};

/// How an archive is unpacked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractOptions {
    /// Give files the archive's owners (otherwise they belong to whoever unpacks).
    pub copy_owners: bool,
    /// Refuse to replace a directory with a non-directory, or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// Rename the archive's top-level entry `from` to `to` (`.` = its contents go straight into the directory).
    pub rename_top: Option<(String, String)>,
}

/// Metadata to give a directory once everything inside it is written.
struct DirMeta {
    path: Vec<Vec<u8>>,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
}

struct Extractor<'t> {
    tree: &'t Tree,
    dir: String,
    options: &'t ExtractOptions,
    /// The last parent resolved: its components and descriptor.
    cached: Option<(Vec<Vec<u8>>, OwnedFd)>,
    dirs: Vec<DirMeta>,
}

/// The archive path `raw` as components, with the top entry renamed; `..` is refused.
fn entry_components(raw: &Path, rename: &Option<(String, String)>) -> Result<Vec<Vec<u8>>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.as_bytes().to_vec()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(Error::invalid(
                    "archive",
                    format!(
                        "archive entry {} leaves the destination ('..')",
                        raw.display()
                    ),
                ));
            }
        }
    }
    if let Some((from, to)) = rename
        && parts
            .first()
            .is_some_and(|p| p.as_slice() == from.as_bytes())
    {
        let replacement: Vec<Vec<u8>> = to
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(|c| c.as_bytes().to_vec())
            .collect();
        parts.splice(0..1, replacement);
    }
    Ok(parts)
}

fn show(parts: &[Vec<u8>]) -> String {
    let joined: Vec<u8> = parts.join(&b'/');
    let text = OsStr::from_bytes(&joined).to_string_lossy().into_owned();
    if text.is_empty() { ".".into() } else { text }
}

/// Runs the extraction of `input` into `dir`.
pub(crate) fn run<R: Read>(
    tree: &Tree,
    dir: &str,
    input: R,
    options: &ExtractOptions,
) -> Result<()> {
    let dest = tree
        .open(dir, OFlags::PATH | OFlags::DIRECTORY)
        .map_err(|e| io_error(format!("destination {dir}"), e))?;
    drop(dest);
    let mut x = Extractor {
        tree,
        dir: dir.to_string(),
        options,
        cached: None,
        dirs: Vec::new(),
    };
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| Error::invalid("archive", format!("read the archive: {e}")))?;
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::invalid("archive", format!("read the archive: {e}")))?;
        x.entry(entry)?;
    }
    x.finish_dirs()
}

impl Extractor<'_> {
    /// The path of `parts` (relative to the destination) in the tree.
    fn tree_path(&self, parts: &[Vec<u8>]) -> String {
        let mut p = self.dir.trim_end_matches('/').to_string();
        for c in parts {
            p.push('/');
            p.push_str(&OsStr::from_bytes(c).to_string_lossy());
        }
        if p.is_empty() { "/".into() } else { p }
    }

    fn open_dir(&self, parts: &[Vec<u8>]) -> rustix::io::Result<OwnedFd> {
        self.tree
            .open(&self.tree_path(parts), OFlags::PATH | OFlags::DIRECTORY)
    }

    /// The directory `parts` (relative to the destination), made (mode 0755) where missing.
    fn parent(&mut self, parts: &[Vec<u8>]) -> Result<BorrowedFd<'_>> {
        let hit = matches!(&self.cached, Some((p, _)) if p.as_slice() == parts);
        if !hit {
            let fd = match self.open_dir(parts) {
                Ok(fd) => fd,
                Err(e) if crate::is_missing(e) => self.make_dirs(parts)?,
                Err(e) => return Err(io_error(show(parts), e)),
            };
            self.cached = Some((parts.to_vec(), fd));
        }
        match &self.cached {
            Some((_, fd)) => Ok(fd.as_fd()),
            None => Err(Error::internal("extract: no parent directory")),
        }
    }

    fn make_dirs(&self, parts: &[Vec<u8>]) -> Result<OwnedFd> {
        let mut fd = self.open_dir(&[]).map_err(|e| io_error(&self.dir, e))?;
        for i in 0..parts.len() {
            fd = match self.open_dir(&parts[..=i]) {
                Ok(next) => next,
                Err(e) if crate::is_missing(e) => {
                    match rustix::fs::mkdirat(
                        &fd,
                        OsStr::from_bytes(&parts[i]),
                        Mode::from_raw_mode(0o755),
                    ) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_error(show(&parts[..=i]), e)),
                    }
                    self.open_dir(&parts[..=i])
                        .map_err(|e| io_error(show(&parts[..=i]), e))?
                }
                Err(e) => return Err(io_error(show(&parts[..=i]), e)),
            };
        }
        Ok(fd)
    }

    fn owner(&self, h: &tar::Header) -> Result<Option<(u32, u32)>> {
        if !self.options.copy_owners {
            return Ok(None);
        }
        let uid = h
            .uid()
            .map_err(|e| Error::invalid("archive", format!("bad owner in the archive: {e}")))?;
        let gid = h
            .gid()
            .map_err(|e| Error::invalid("archive", format!("bad group in the archive: {e}")))?;
        Ok(Some((uid as u32, gid as u32)))
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| Error::invalid("archive", format!("bad entry name: {e}")))?
            .into_owned();
        let parts = entry_components(&raw, &self.options.rename_top)?;
        let h = entry.header().clone();
        let kind = h.entry_type();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
        let owner = self.owner(&h)?;
        let Some((name, parent_parts)) = parts.split_last() else {
            // The destination itself (`.`): only its metadata, and only from a directory entry.
            if kind == EntryType::Directory {
                self.dirs.push(DirMeta {
                    path: Vec::new(),
                    mode,
                    owner,
                    mtime,
                });
            }
            return Ok(());
        };
        let what = show(&parts);
        let name = OsStr::from_bytes(name).to_os_string();
        let parent_parts = parent_parts.to_vec();
        match kind {
            EntryType::Directory => {
                self.make_dir(&parent_parts, &name, &what)?;
                self.dirs.push(DirMeta {
                    path: parts,
                    mode,
                    owner,
                    mtime,
                });
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(&parent_parts, &name, &what, false)?;
                let parent = self.parent(&parent_parts)?;
                let fd = rustix::fs::openat(
                    parent,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io_error(&what, e))?;
                let mut file = std::fs::File::from(fd);
                std::io::copy(&mut entry, &mut file)
                    .map_err(|e| Error::io(format!("write {what}"), e))?;
                set_meta(file.as_fd(), mode, owner, mtime).map_err(|e| io_error(&what, e))
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| Error::invalid("archive", format!("bad link in {what}: {e}")))?
                    .ok_or_else(|| {
                        Error::invalid("archive", format!("symbolic link {what} has no target"))
                    })?
                    .into_owned();
                self.clear(&parent_parts, &name, &what, false)?;
                let parent = self.parent(&parent_parts)?;
                rustix::fs::symlinkat(target.as_os_str(), parent, &name)
                    .map_err(|e| io_error(&what, e))?;
                if let Some((uid, gid)) = owner {
                    rustix::fs::chownat(
                        parent,
                        &name,
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io_error(&what, e))?;
                }
                let times = timestamps(mtime);
                let _ = rustix::fs::utimensat(parent, &name, &times, AtFlags::SYMLINK_NOFOLLOW);
                // A new link may change what later paths resolve to.
                self.cached = None;
                Ok(())
            }
            EntryType::Link => self.hard_link(&entry, &parent_parts, &name, &what),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    EntryType::Char | EntryType::Block => {
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let t = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (t, rustix::fs::makedev(major, minor))
                    }
                    _ => (FileType::Fifo, 0),
                };
                self.clear(&parent_parts, &name, &what, false)?;
                let parent = self.parent(&parent_parts)?;
                rustix::fs::mknodat(parent, &name, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| io_error(&what, e))?;
                let node = rustix::fs::openat(
                    parent,
                    &name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_error(&what, e))?;
                if let Some((uid, gid)) = owner {
                    rustix::fs::chownat(
                        &node,
                        "",
                        Some(Uid::from_raw(uid)),
                        Some(Gid::from_raw(gid)),
                        AtFlags::EMPTY_PATH,
                    )
                    .map_err(|e| io_error(&what, e))?;
                }
                rustix::fs::chmodat(parent, &name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| io_error(&what, e))?;
                Ok(())
            }
            // PAX and GNU metadata entries are consumed by the reader; anything else is not ours to make.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => Ok(()),
            other => Err(Error::invalid(
                "archive",
                format!("archive entry {what} has a type this copy cannot create ({other:?})"),
            )),
        }
    }

    /// Makes way for a new entry named `name`: removes a non-directory there; a directory is kept for a
    /// directory entry (`keep_dir`), else refused or removed as the options say.
    fn clear(
        &mut self,
        parent_parts: &[Vec<u8>],
        name: &OsStr,
        what: &str,
        keep_dir: bool,
    ) -> Result<bool> {
        let no_overwrite = self.options.no_overwrite_dir_non_dir;
        let parent = self.parent(parent_parts)?;
        let existing = lstat_at(parent, name).map_err(|e| io_error(what, e))?;
        let Some(st) = existing else {
            return Ok(false);
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && keep_dir {
            return Ok(true);
        }
        if is_dir != keep_dir && no_overwrite {
            return Err(Error::invalid(
                "archive",
                if is_dir {
                    format!("cannot overwrite directory {what} with a non-directory")
                } else {
                    format!("cannot overwrite non-directory {what} with a directory")
                },
            ));
        }
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rustix::fs::unlinkat(parent, name, flags).map_err(|e| io_error(what, e))?;
        self.cached = None;
        Ok(false)
    }

    fn make_dir(&mut self, parent_parts: &[Vec<u8>], name: &OsStr, what: &str) -> Result<()> {
        if self.clear(parent_parts, name, what, true)? {
            return Ok(());
        }
        let parent = self.parent(parent_parts)?;
        match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(io_error(what, e)),
        }
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent_parts: &[Vec<u8>],
        name: &OsStr,
        what: &str,
    ) -> Result<()> {
        let target = entry
            .link_name()
            .map_err(|e| Error::invalid("archive", format!("bad link in {what}: {e}")))?
            .ok_or_else(|| Error::invalid("archive", format!("hard link {what} has no target")))?
            .into_owned();
        let target_parts = entry_components(&target, &self.options.rename_top)?;
        let Some((target_name, target_parent)) = target_parts.split_last() else {
            return Err(Error::invalid(
                "archive",
                format!("hard link {what} points at the destination itself"),
            ));
        };
        let target_dir = self
            .open_dir(target_parent)
            .map_err(|e| io_error(show(&target_parts), e))?;
        self.clear(parent_parts, name, what, false)?;
        let parent = self.parent(parent_parts)?;
        rustix::fs::linkat(
            &target_dir,
            OsStr::from_bytes(target_name),
            parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| io_error(what, e))
    }

    /// Gives directories their modes, owners and times, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        self.cached = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.len()));
        for d in dirs {
            let what = show(&d.path);
            // The destination itself may be reached through a link; what the archive made never is.
            let nofollow = if d.path.is_empty() {
                OFlags::empty()
            } else {
                OFlags::NOFOLLOW
            };
            let pinned = self
                .tree
                .open(
                    &self.tree_path(&d.path),
                    OFlags::PATH | OFlags::DIRECTORY | nofollow,
                )
                .map_err(|e| io_error(&what, e))?;
            let dir = self
                .tree
                .reopen(pinned.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| io_error(&what, e))?;
            set_meta(dir.as_fd(), d.mode, d.owner, d.mtime).map_err(|e| io_error(&what, e))?;
        }
        Ok(())
    }
}

fn timestamps(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner first (changing it clears set-ID bits), then mode, then times.
fn set_meta(
    fd: BorrowedFd<'_>,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
) -> rustix::io::Result<()> {
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(fd, &timestamps(mtime))
}
