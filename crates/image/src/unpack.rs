//! Safe layer unpacking: a layer tar (uncompressed, gzip or zstd) becomes a directory usable as an overlayfs lower
//! dir, and nothing in the archive can make it write anywhere else.
//!
//! How safety is reached, by construction rather than by string checks alone:
//! - Entry names are split into components; absolute names and `..` components are refused outright.
//! - Every parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//!   RESOLVE_NO_XDEV)` from the layer's root directory, so the kernel refuses any path that leaves the root or
//!   passes through a symbolic link (a symlink to `/` followed by `link/etc/passwd` is refused, as is any chain).
//! - The last component is created with the `*at` calls relative to that parent's descriptor, never following a
//!   link: `O_CREAT | O_EXCL | O_NOFOLLOW` for files, `mkdirat`, `symlinkat` (a link's target is stored, never
//!   followed), `mknodat`, `linkat` without `AT_SYMLINK_FOLLOW`.
//! - Hard links may only point at a file created earlier by the same layer (resolved the same way), so a link to
//!   `/etc/passwd`, to `../x` or through a symlink is refused.
//! - A path may appear once, except directories (a repeated directory entry updates its metadata): an archive that
//!   names a path twice to swap a file for a symlink is refused. Nothing is ever deleted while unpacking, so a
//!   directory opened once stays the directory it was.
//! - Block and character devices are refused unless the store allows them; setuid/setgid/sticky bits are applied
//!   exactly as the archive says (after `chown`, which would clear them); ownership is kept when running as root.
//! - Only `user.*` and `security.capability` extended attributes are applied: `trusted.*` (which overlayfs reads:
//!   opaque, redirect, metacopy) and the rest are dropped.
//! - Whiteouts become overlayfs's own form: `.wh.NAME` a character device 0/0 named `NAME`, `.wh..wh..opq` the
//!   `trusted.overlay.opaque=y` attribute on its directory; other `.wh..wh.` names (aufs metadata) are skipped.
//! - The uncompressed stream is counted: past the layer or image limit the read fails, so a decompression bomb
//!   stops at the limit. The whole stream (including padding after the tar end) is hashed into the diff ID.
//!
//! Why this file is long: kept whole on purpose: it is one security boundary (no layer writes outside its root), and
//! its invariants are easier to check when every write it makes is in one file.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use husk_core::{Error, ErrorKind, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::digest::{Digest, Hashing};

/// Shared count of uncompressed bytes for all layers of one image, checked against the image limit.
#[derive(Debug)]
pub struct ImageBudget {
    used: AtomicU64,
    max: u64,
}

impl ImageBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Arc<ImageBudget> {
        Arc::new(ImageBudget {
            used: AtomicU64::new(0),
            max,
        })
    }

    /// Counts `n` more bytes; false once over the limit.
    pub fn take(&self, n: u64) -> bool {
        self.used.fetch_add(n, Ordering::Relaxed) + n <= self.max
    }

    /// The limit, in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }
}

/// What an unpack may do.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Most bytes of the uncompressed tar stream.
    pub max_size: u64,
    /// Most entries.
    pub max_entries: u64,
    /// Create block and character devices instead of refusing them.
    pub allow_devices: bool,
    /// The image-wide budget this layer also counts against.
    pub image_budget: Option<Arc<ImageBudget>>,
}

/// What an unpack found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// SHA-256 of the uncompressed tar stream (the layer's diff ID).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar stream.
    pub tar_size: u64,
    /// Bytes of regular file content.
    pub content_size: u64,
    /// Entries applied (including whiteouts).
    pub entries: u64,
}

/// The compression of a layer blob, found from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (one or more members).
    Gzip,
    /// zstd (one or more frames).
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a blob.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `blob` in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(mut blob: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = Vec::with_capacity(4);
    (&mut blob).take(4).read_to_end(&mut head)?;
    let kind = Compression::detect(&head);
    let whole = io::Cursor::new(head).chain(blob);
    Ok(match kind {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(256 << 10, whole),
        )),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole)?),
        Compression::None => Box::new(whole),
    })
}

/// Which limit a stream ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitHit {
    Layer(u64),
    Image(u64),
}

/// Counts the uncompressed stream and fails the read past the limits.
struct Limited<'a, R> {
    inner: R,
    count: u64,
    max: u64,
    budget: Option<Arc<ImageBudget>>,
    hit: &'a Cell<Option<LimitHit>>,
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.max {
            self.hit.set(Some(LimitHit::Layer(self.max)));
            return Err(io::Error::other("size limit reached"));
        }
        if let Some(b) = &self.budget
            && !b.take(n as u64)
        {
            self.hit.set(Some(LimitHit::Image(b.max())));
            return Err(io::Error::other("size limit reached"));
        }
        Ok(n)
    }
}

/// Unpacks the layer `blob` (a tar stream, possibly compressed) into the empty directory `dest`.
///
/// `label` names the layer in errors (`layer sha256:...`). On error `dest` holds a partial tree: callers unpack
/// into a temporary directory and remove it.
pub fn unpack_layer<R: Read>(
    blob: R,
    dest: &Path,
    label: &str,
    options: &UnpackOptions,
) -> Result<UnpackStats> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open layer directory {}", dest.display()), e.into()))?;
    let hit = Cell::new(None);
    let decompressed = decompress(blob).map_err(|e| corrupt(label, &e))?;
    let limited = Limited {
        inner: decompressed,
        count: 0,
        max: options.max_size,
        budget: options.image_budget.clone(),
        hit: &hit,
    };
    let mut stream = Hashing::new(limited);
    let mut unpacker = Unpacker::new(root, label, options);
    let applied = unpacker.apply_all(&mut stream);
    // Hash what follows the end-of-archive blocks too: it is part of the diff ID.
    let drained = applied.and_then(|()| {
        io::copy(&mut stream, &mut io::sink())
            .map(|_| ())
            .map_err(|e| read_error(label, e, hit.get()))
    });
    if let Err(e) = drained {
        return Err(match hit.get() {
            Some(limit) => limit_error(label, limit),
            None => e,
        });
    }
    unpacker.finish_directories()?;
    let (diff_id, tar_size, _) = stream.finish();
    Ok(UnpackStats {
        diff_id,
        tar_size,
        content_size: unpacker.content_size,
        entries: unpacker.entries,
    })
}

fn corrupt(label: &str, e: &io::Error) -> Error {
    Error::bad_request(format!("{label} is corrupt or truncated: {e}"))
}

fn read_error(label: &str, e: io::Error, hit: Option<LimitHit>) -> Error {
    match hit {
        Some(limit) => limit_error(label, limit),
        None => corrupt(label, &e),
    }
}

fn limit_error(label: &str, hit: LimitHit) -> Error {
    let message = match hit {
        LimitHit::Layer(max) => {
            format!("{label} is larger than the layer size limit of {max} bytes (max_layer_size)")
        }
        LimitHit::Image(max) => format!(
            "{label}: the image is larger than the image size limit of {max} bytes (max_image_size)"
        ),
    };
    Error::new(ErrorKind::LimitExceeded, message)
}

/// The last part of an entry's name, split from its parent directory (both cleaned).
struct Target<'p> {
    /// Cleaned full path (`a/b/c`), empty for the layer root.
    path: &'p [u8],
    /// Cleaned parent path (`a/b`), empty at the root.
    parent: &'p [u8],
    /// Last component (`c`).
    name: &'p [u8],
}

impl<'p> Target<'p> {
    fn new(path: &'p [u8]) -> Target<'p> {
        match path.iter().rposition(|b| *b == b'/') {
            Some(i) => Target {
                path,
                parent: &path[..i],
                name: &path[i + 1..],
            },
            None => Target {
                path,
                parent: b"",
                name: path,
            },
        }
    }
}

/// Cleans an entry name: drops empty and `.` components, refuses absolute names and `..`.
pub fn clean_path(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("it is an absolute path");
    }
    if raw.len() > 4096 {
        return Err("the name is longer than 4096 bytes");
    }
    let mut out = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => return Err("it has a '..' component"),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS)
    .union(ResolveFlags::NO_XDEV);
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Metadata of an entry that is applied after it is created.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker<'a> {
    root: OwnedFd,
    label: &'a str,
    options: &'a UnpackOptions,
    /// Paths created by explicit entries: true for directories.
    seen: HashMap<Vec<u8>, bool>,
    /// Directories whose times are set at the end (adding children changes them).
    dir_times: Vec<(Vec<u8>, i64)>,
    chown: bool,
    entries: u64,
    content_size: u64,
    buf: Vec<u8>,
}

impl<'a> Unpacker<'a> {
    fn new(root: OwnedFd, label: &'a str, options: &'a UnpackOptions) -> Self {
        Unpacker {
            root,
            label,
            options,
            seen: HashMap::new(),
            dir_times: Vec::new(),
            chown: rustix::process::geteuid().is_root(),
            entries: 0,
            content_size: 0,
            buf: vec![0; 1 << 20],
        }
    }

    fn refuse(&self, path: &[u8], why: impl std::fmt::Display) -> Error {
        Error::bad_request(format!(
            "{}: entry {} refused: {why}",
            self.label,
            show(path)
        ))
    }

    fn fs_error(&self, path: &[u8], what: &str, e: Errno) -> Error {
        let why = match e {
            Errno::LOOP => "the path goes through a symbolic link".to_string(),
            Errno::XDEV => "the path leads outside the layer".to_string(),
            Errno::NOTDIR => match self.symlink_prefix(path) {
                Some(link) => format!("the path goes through the symbolic link {}", show(link)),
                None => "a parent is not a directory".to_string(),
            },
            Errno::EXIST => "the path already exists in this layer".to_string(),
            other => format!("{what}: {}", io::Error::from(other)),
        };
        self.refuse(path, why)
    }

    /// The shortest leading part of `path` that is a symbolic link in the layer, to explain a refusal. Only
    /// `lstat`s, shortest first, so no link is followed before it is found.
    fn symlink_prefix<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        let ends = path
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i)
            .chain([path.len()]);
        for end in ends {
            let prefix = &path[..end];
            match rustix::fs::statat(&self.root, os(prefix), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    return Some(prefix);
                }
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => continue,
                _ => return None,
            }
        }
        None
    }

    fn apply_all<R: Read>(&mut self, stream: &mut R) -> Result<()> {
        let mut archive = tar::Archive::new(stream);
        let entries = archive.entries().map_err(|e| corrupt(self.label, &e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| corrupt(self.label, &e))?;
            self.entries += 1;
            if self.entries > self.options.max_entries {
                return Err(Error::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "{} has more than {} entries (max_layer_entries)",
                        self.label, self.options.max_entries
                    ),
                ));
            }
            self.apply(&mut entry)?;
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> Result<Meta> {
        let header = entry.header();
        let bad =
            |what: &str, e: io::Error| self.refuse(path, format!("bad {what} in header: {e}"));
        let mut uid = header.uid().map_err(|e| bad("uid", e))?;
        let mut gid = header.gid().map_err(|e| bad("gid", e))?;
        let mut mtime = header.mtime().map_err(|e| bad("mtime", e))? as i64;
        let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut xattrs = Vec::new();
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| corrupt(self.label, &e))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| corrupt(self.label, &e))?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<i64>().ok())
                };
                match key {
                    "uid" => {
                        uid = number()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or_else(|| self.refuse(path, "bad PAX uid"))?
                    }
                    "gid" => {
                        gid = number()
                            .and_then(|n| u64::try_from(n).ok())
                            .ok_or_else(|| self.refuse(path, "bad PAX gid"))?
                    }
                    "mtime" => mtime = number().unwrap_or(mtime),
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if name.starts_with("user.") || name == "security.capability" {
                                xattrs.push((name.to_string(), value.to_vec()));
                            } else {
                                tracing::debug!(label = self.label, entry = %show(path), xattr = name, "extended attribute dropped");
                            }
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| self.refuse(path, format!("{what} {v} is out of range")))
        };
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime,
            xattrs,
        })
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let path = clean_path(&raw).map_err(|why| self.refuse(&raw, why))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let target = Target::new(&path);
        if let Some(hidden) = target.name.strip_prefix(b".wh.") {
            return self.whiteout(&target, hidden);
        }
        let is_dir = kind == tar::EntryType::Directory;
        self.check_new(&path, is_dir)?;
        let meta = self.meta(entry, &path)?;
        if path.is_empty() {
            if !is_dir {
                return Err(self.refuse(&raw, "the layer root can only be a directory"));
            }
            let root = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)
                .map_err(|e| self.fs_error(&raw, "open", e))?;
            self.set_meta_fd(&root, &path, &meta)?;
            self.dir_times.push((path, meta.mtime));
            return Ok(());
        }
        let parent = self
            .open_dir(target.parent, true)
            .map_err(|e| self.fs_error(&path, "open parent directory", e))?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(entry, &parent, &target, &meta)?
            }
            tar::EntryType::Directory => self.directory(&parent, &target, &meta)?,
            tar::EntryType::Symlink => self.symlink(entry, &parent, &target, &meta)?,
            tar::EntryType::Link => self.hardlink(entry, &parent, &target)?,
            tar::EntryType::Char | tar::EntryType::Block => {
                self.device(entry, &parent, &target, &meta)?
            }
            tar::EntryType::Fifo => {
                rustix::fs::mknodat(
                    &parent,
                    os(target.name),
                    FileType::Fifo,
                    Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| self.fs_error(&path, "create fifo", e))?;
                self.set_meta_at(&parent, &target, &meta, true)?;
            }
            other => {
                return Err(self.refuse(
                    &path,
                    format!("entries of type {other:?} are not supported"),
                ));
            }
        }
        self.seen.insert(path, is_dir);
        Ok(())
    }

    /// Refuses a second entry for a path, except a directory repeated as a directory.
    fn check_new(&self, path: &[u8], is_dir: bool) -> Result<()> {
        match self.seen.get(path) {
            None => Ok(()),
            Some(true) if is_dir => Ok(()),
            Some(_) => Err(self.refuse(path, "the path appears more than once in the layer")),
        }
    }

    /// Opens the directory `rel` under the root without following any symlink; creates missing ones if `create`.
    fn open_dir(&self, rel: &[u8], create: bool) -> std::result::Result<OwnedFd, Errno> {
        if rel.is_empty() {
            return rustix::io::fcntl_dupfd_cloexec(&self.root, 0);
        }
        match rustix::fs::openat2(&self.root, os(rel), DIR_FLAGS, Mode::empty(), RESOLVE) {
            Err(Errno::NOENT) if create => {}
            other => return other,
        }
        let mut dir = rustix::io::fcntl_dupfd_cloexec(&self.root, 0)?;
        for part in rel.split(|b| *b == b'/') {
            match rustix::fs::mkdirat(&dir, os(part), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            dir = rustix::fs::openat2(&dir, os(part), DIR_FLAGS, Mode::empty(), RESOLVE)?;
        }
        Ok(dir)
    }

    fn whiteout(&mut self, target: &Target<'_>, hidden: &[u8]) -> Result<()> {
        if hidden == b".wh..opq" {
            self.check_new(target.path, false)?;
            let dir = self
                .open_dir(target.parent, true)
                .map_err(|e| self.fs_error(target.path, "open directory", e))?;
            rustix::fs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| {
                    self.fs_error(
                        target.path,
                        "mark directory opaque (trusted.overlay.opaque)",
                        e,
                    )
                })?;
            self.seen.insert(target.path.to_vec(), false);
            return Ok(());
        }
        if hidden.starts_with(b".wh.") {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless to overlayfs.
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.refuse(target.path, "the whiteout names no file"));
        }
        let mut hidden_path = target.parent.to_vec();
        if !hidden_path.is_empty() {
            hidden_path.push(b'/');
        }
        hidden_path.extend_from_slice(hidden);
        self.check_new(&hidden_path, false)?;
        let parent = self
            .open_dir(target.parent, true)
            .map_err(|e| self.fs_error(target.path, "open parent directory", e))?;
        rustix::fs::mknodat(
            &parent,
            os(hidden),
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| self.fs_error(target.path, "create whiteout", e))?;
        self.seen.insert(hidden_path, false);
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &OwnedFd,
        target: &Target<'_>,
        meta: &Meta,
    ) -> Result<()> {
        let size = entry.size();
        if size > self.options.max_size {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "{}: entry {} declares {size} bytes, more than the layer size limit of {} bytes (max_layer_size)",
                    self.label,
                    show(target.path),
                    self.options.max_size
                ),
            ));
        }
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, os(target.name), flags, Mode::from_raw_mode(0o600))
            .map_err(|e| self.fs_error(target.path, "create file", e))?;
        let mut file = File::from(fd);
        let mut written = 0u64;
        loop {
            let n = entry
                .read(&mut self.buf)
                .map_err(|e| corrupt(self.label, &e))?;
            if n == 0 {
                break;
            }
            file.write_all(&self.buf[..n]).map_err(|e| {
                Error::io(format!("{}: write {}", self.label, show(target.path)), e)
            })?;
            written += n as u64;
        }
        if written != size {
            return Err(Error::bad_request(format!(
                "{} is truncated: entry {} has {written} of its {size} bytes",
                self.label,
                show(target.path)
            )));
        }
        self.content_size += size;
        self.set_meta_fd(&OwnedFd::from(file), target.path, meta)
    }

    fn directory(&mut self, parent: &OwnedFd, target: &Target<'_>, meta: &Meta) -> Result<()> {
        match rustix::fs::mkdirat(parent, os(target.name), Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.fs_error(target.path, "create directory", e)),
        }
        let dir = rustix::fs::openat2(parent, os(target.name), DIR_FLAGS, Mode::empty(), RESOLVE)
            .map_err(|e| self.fs_error(target.path, "open directory", e))?;
        self.set_meta_fd(&dir, target.path, meta)?;
        self.dir_times.push((target.path.to_vec(), meta.mtime));
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: &OwnedFd,
        target: &Target<'_>,
        meta: &Meta,
    ) -> Result<()> {
        let link = entry
            .link_name_bytes()
            .ok_or_else(|| self.refuse(target.path, "symbolic link without a target"))?;
        if link.is_empty() {
            return Err(self.refuse(target.path, "symbolic link without a target"));
        }
        rustix::fs::symlinkat(os(&link), parent, os(target.name))
            .map_err(|e| self.fs_error(target.path, "create symbolic link", e))?;
        self.set_meta_at(parent, target, meta, false)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: &OwnedFd,
        target: &Target<'_>,
    ) -> Result<()> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| self.refuse(target.path, "hard link without a target"))?;
        let to = clean_path(&raw).map_err(|why| {
            self.refuse(
                target.path,
                format!("hard link target {}: {why}", show(&raw)),
            )
        })?;
        if self.seen.get(&to) != Some(&false) {
            return Err(self.refuse(
                target.path,
                format!(
                    "hard link target {} is not a file created earlier in this layer",
                    show(&raw)
                ),
            ));
        }
        let to_target = Target::new(&to);
        let to_parent = self
            .open_dir(to_target.parent, false)
            .map_err(|e| self.fs_error(target.path, "open hard link target", e))?;
        rustix::fs::linkat(
            &to_parent,
            os(to_target.name),
            parent,
            os(target.name),
            AtFlags::empty(),
        )
        .map_err(|e| self.fs_error(target.path, "create hard link", e))
    }

    fn device<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parent: &OwnedFd,
        target: &Target<'_>,
        meta: &Meta,
    ) -> Result<()> {
        let header = entry.header();
        let (major, minor) = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        let (file_type, what) = if header.entry_type() == tar::EntryType::Char {
            (FileType::CharacterDevice, "character")
        } else {
            (FileType::BlockDevice, "block")
        };
        if !self.options.allow_devices {
            return Err(self.refuse(target.path, format!("{what} device {major}:{minor}: device nodes are not allowed in layers (allow_devices)")));
        }
        rustix::fs::mknodat(
            parent,
            os(target.name),
            file_type,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(major, minor),
        )
        .map_err(|e| self.fs_error(target.path, "create device", e))?;
        self.set_meta_at(parent, target, meta, true)
    }

    /// Owner, mode, extended attributes and times of an open file or directory.
    fn set_meta_fd(&self, fd: &OwnedFd, path: &[u8], meta: &Meta) -> Result<()> {
        let fail = |what: &str, e: Errno| self.fs_error(path, what, e);
        if self.chown {
            rustix::fs::fchown(fd, Some(uid(meta.uid)), Some(gid(meta.gid)))
                .map_err(|e| fail("set owner", e))?;
        }
        // After chown, which clears setuid and setgid bits.
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(|e| fail("set mode", e))?;
        for (name, value) in &meta.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
                // A filesystem without user xattrs must not make an image unusable.
                tracing::warn!(label = self.label, entry = %show(path), xattr = name.as_str(), error = %e, "extended attribute not applied");
            }
        }
        rustix::fs::futimens(fd, &times(meta.mtime)).map_err(|e| fail("set times", e))
    }

    /// Owner, mode and times of a symlink, fifo or device, by name in its parent (never following a link).
    fn set_meta_at(
        &self,
        parent: &OwnedFd,
        target: &Target<'_>,
        meta: &Meta,
        chmod: bool,
    ) -> Result<()> {
        let name = os(target.name);
        let fail = |what: &str, e: Errno| self.fs_error(target.path, what, e);
        if self.chown {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid(meta.uid)),
                Some(gid(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| fail("set owner", e))?;
        }
        if chmod {
            // Only for nodes this unpack just made (fifos, devices): never a symlink, so following is not possible.
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| fail("set mode", e))?;
        }
        rustix::fs::utimensat(parent, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail("set times", e))
    }

    /// Sets directory times last, deepest first (creating children changed them).
    fn finish_directories(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dir_times);
        for (path, mtime) in dirs.iter().rev() {
            let dir = self
                .open_dir(path, false)
                .map_err(|e| self.fs_error(path, "open directory", e))?;
            rustix::fs::futimens(&dir, &times(*mtime))
                .map_err(|e| self.fs_error(path, "set times", e))?;
        }
        Ok(())
    }
}

fn uid(id: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id)
}

fn gid(id: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_refuses_escapes() {
        assert_eq!(clean_path(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(clean_path(b"./").unwrap(), b"");
        assert!(clean_path(b"/etc/passwd").is_err());
        assert!(clean_path(b"a/../../b").is_err());
        assert!(clean_path(b"..").is_err());
        assert!(clean_path(&[b'a'; 5000]).is_err());
    }

    #[test]
    fn compression_is_detected_from_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"bin/"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
    }

    #[test]
    fn image_budget_counts_across_layers() {
        let b = ImageBudget::new(10);
        assert!(b.take(6));
        assert!(b.take(4));
        assert!(!b.take(1));
    }
}
