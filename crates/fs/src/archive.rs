//! Writing a tar archive of a subtree: every object pinned with `O_PATH` and described by `fstat`, directories
//! listed through a descriptor, files read by re-opening their descriptor, symbolic links stored as links.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use husk_core::{Error, Result};
use rustix::fs::{FileType, OFlags, Stat};
use tar::{EntryType, Header};

use crate::{Tree, io_error};

/// The walk's state: the archive and the hard links seen so far.
struct Writer<'t, W: Write> {
    tree: &'t Tree,
    tar: tar::Builder<W>,
    /// `(device, inode)` of files with more than one link -> the archive path of the first one.
    links: HashMap<(u64, u64), PathBuf>,
}

/// Writes the archive of the object `fd` (pinned with `O_PATH`) named `top` to `out`.
pub(crate) fn write<W: Write>(tree: &Tree, fd: OwnedFd, top: &str, out: W) -> Result<()> {
    let mut w = Writer {
        tree,
        tar: tar::Builder::new(out),
        links: HashMap::new(),
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| io_error(top, e))?;
    w.add(fd, &st, PathBuf::from(top))?;
    w.tar
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|e| Error::io("finish the archive", e))?;
    Ok(())
}

fn header(st: &Stat, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

/// Reads exactly `len` bytes: the file's, then zeros if it shrank meanwhile (the header already says `len`).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

impl<W: Write> Writer<'_, W> {
    fn append(&mut self, h: &mut Header, path: &Path, data: impl Read) -> Result<()> {
        self.tar
            .append_data(h, path, data)
            .map_err(|e| Error::io(format!("archive {}", path.display()), e))
    }

    fn add(&mut self, fd: OwnedFd, st: &Stat, path: PathBuf) -> Result<()> {
        let what = path.display().to_string();
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => self.add_dir(fd, st, path),
            FileType::RegularFile => self.add_file(fd, st, path),
            FileType::Symlink => {
                let target =
                    rustix::fs::readlinkat(&fd, "", Vec::new()).map_err(|e| io_error(&what, e))?;
                let mut h = header(st, EntryType::Symlink);
                self.tar
                    .append_link(&mut h, &path, OsStr::from_bytes(target.as_bytes()))
                    .map_err(|e| Error::io(format!("archive {what}"), e))
            }
            kind @ (FileType::CharacterDevice | FileType::BlockDevice) => {
                let entry = if kind == FileType::CharacterDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                };
                let mut h = header(st, entry);
                let dev = st.st_rdev;
                h.set_device_major(rustix::fs::major(dev))
                    .and_then(|_| h.set_device_minor(rustix::fs::minor(dev)))
                    .map_err(|e| Error::io(format!("archive {what}"), e))?;
                self.append(&mut h, &path, std::io::empty())
            }
            FileType::Fifo => {
                let mut h = header(st, EntryType::Fifo);
                self.append(&mut h, &path, std::io::empty())
            }
            // Sockets (and anything else) have no archive form: left out, as tar does.
            _ => Ok(()),
        }
    }

    fn add_file(&mut self, fd: OwnedFd, st: &Stat, path: PathBuf) -> Result<()> {
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key).cloned() {
                let mut h = header(st, EntryType::Link);
                return self
                    .tar
                    .append_link(&mut h, &path, &first)
                    .map_err(|e| Error::io(format!("archive {}", path.display()), e));
            }
            self.links.insert(key, path.clone());
        }
        let file = self
            .tree
            .reopen(fd.as_fd(), OFlags::RDONLY | OFlags::NOCTTY)
            .map_err(|e| io_error(path.display(), e))?;
        let mut h = header(st, EntryType::Regular);
        h.set_size(st.st_size as u64);
        let data = Exact {
            inner: std::fs::File::from(file),
            left: st.st_size as u64,
        };
        self.append(&mut h, &path, data)
    }

    fn add_dir(&mut self, fd: OwnedFd, st: &Stat, path: PathBuf) -> Result<()> {
        let what = path.display().to_string();
        let mut h = header(st, EntryType::Directory);
        let mut dir_path = path.clone().into_os_string();
        dir_path.push("/");
        self.append(&mut h, Path::new(&dir_path), std::io::empty())?;
        let dir = self
            .tree
            .reopen(fd.as_fd(), OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| io_error(&what, e))?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir).map_err(|e| io_error(&what, e))? {
            let entry = entry.map_err(|e| io_error(&what, e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            let name = OsStr::from_bytes(&name);
            let child_path = path.join(name);
            let child = match rustix::fs::openat(
                &dir,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Gone since the listing (a running container): leave it out.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io_error(child_path.display(), e)),
            };
            let st = rustix::fs::fstat(&child).map_err(|e| io_error(child_path.display(), e))?;
            self.add(child, &st, child_path)?;
        }
        Ok(())
    }
}
