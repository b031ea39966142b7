//! `commit`: a new image from a container's overlayfs upper directory on top of its image.
//!
//! The upper directory is written as a layer tar with overlayfs's markers turned back into the archive form:
//! a 0/0 character device becomes an empty `.wh.NAME` file, a directory with `trusted.overlay.opaque=y` gets a
//! `.wh..wh..opq` entry. The upper directory belongs to a container and may change under us, so it is read the same
//! careful way layers are written: every directory opened relative to its parent with `O_NOFOLLOW`, every file
//! opened `O_NOFOLLOW` and checked to be the inode that was listed; a symbolic link is recorded, never followed.
//! The layer is stored uncompressed (`application/vnd.oci.image.layer.v1.tar`) and unpacked like any other.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use husk_core::{Error, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde_json::json;

use crate::archive::media;
use crate::blobs::{RemoveOnDrop, StagedBlob};
use crate::digest::{Digest, Hashing};
use crate::image::{BlobRef, ConfigFile, Image, ImageLayer, RunConfig};
use crate::reference;
use crate::store::ImageStore;
use crate::unpack::ImageBudget;

/// Options of [`ImageStore::commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Name for the new image (`repo[:tag]`).
    pub name: Option<String>,
    /// Author recorded in the config.
    pub author: Option<String>,
    /// Comment recorded in the history.
    pub comment: Option<String>,
    /// What the new image runs; None keeps the base image's.
    pub config: Option<RunConfig>,
}

impl ImageStore {
    /// Makes a new image from `base` plus the changes in `upper_dir` (a container's overlayfs upper directory;
    /// pause or stop the container first for a consistent result).
    pub async fn commit(
        &self,
        base: &str,
        upper_dir: &Path,
        options: &CommitOptions,
    ) -> Result<Image> {
        let base = self.resolve(base)?;
        let name = options
            .name
            .as_deref()
            .map(reference::normalize_tag)
            .transpose()?;
        let store = self.clone();
        let upper = upper_dir.to_path_buf();
        let options = options.clone();
        husk_core::spawn_blocking(move || store.commit_blocking(&base, &upper, &options, name))
            .await
            .map_err(|e| Error::internal(format!("commit task: {e}")))?
    }

    fn commit_blocking(
        &self,
        base: &Image,
        upper: &Path,
        options: &CommitOptions,
        name: Option<String>,
    ) -> Result<Image> {
        let _gc = self.hold_gc();
        let (path, file) = self.blobs().temp_file()?;
        let cleanup = RemoveOnDrop(Some(path.clone()));
        let mut out = Hashing::new(std::io::BufWriter::new(file));
        write_layer(upper, &mut out)?;
        out.flush()
            .map_err(|e| Error::io("write committed layer", e))?;
        let (diff_id, size, _) = out.finish();
        let blob_path = self.blobs().commit(
            StagedBlob {
                path,
                digest: diff_id,
                size,
            },
            &diff_id,
            Some(size),
            "layer",
        )?;
        cleanup.keep();
        let budget = ImageBudget::new(self.config().limits.max_image_size);
        let label = format!("committed layer {diff_id}");
        let record = self.ensure_layer(&diff_id, &label, &budget, || {
            File::open(&blob_path)
                .map_err(|e| Error::io(format!("open {}", blob_path.display()), e))
        })?;

        let mut config: serde_json::Value = serde_json::from_slice(&self.raw_config(base)?)
            .map_err(|e| {
                Error::internal(format!("config of image {} is not JSON: {e}", base.id))
            })?;
        let now = husk_core::Timestamp::now();
        config["created"] = json!(now);
        if let Some(author) = &options.author {
            config["author"] = json!(author);
        }
        if let Some(run) = &options.config {
            config["config"] = serde_json::to_value(run)
                .map_err(|e| Error::internal(format!("encode config: {e}")))?;
        }
        match config["rootfs"]["diff_ids"].as_array_mut() {
            Some(ids) => ids.push(json!(diff_id.to_string())),
            None => {
                return Err(Error::internal(format!(
                    "config of image {} has no rootfs.diff_ids",
                    base.id
                )));
            }
        }
        let entry = json!({"created": now, "created_by": "husk commit", "comment": options.comment.clone().unwrap_or_default()});
        match config["history"].as_array_mut() {
            Some(h) => h.push(entry),
            None => config["history"] = json!([entry]),
        }
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::internal(format!("encode config: {e}")))?;
        let id = Digest::of(&bytes);
        let (parsed, _) = ConfigFile::parse(&bytes, "committed config")?;
        self.blobs().put_bytes(&bytes, &id, "config")?;
        let mut layers = base.layers.clone();
        layers.push(ImageLayer {
            diff_id: diff_id.to_string(),
            blob: BlobRef {
                digest: diff_id.to_string(),
                size,
                media_type: media::OCI_LAYER.to_string(),
            },
        });
        let image = Image {
            id: id.to_string(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            created: Some(now.to_string()),
            architecture: parsed.architecture,
            os: parsed.os,
            variant: parsed.variant,
            author: parsed.author,
            config: parsed.config,
            layers,
            size: base.size + record.size,
            manifest: None,
            loaded_at: Some(now),
        };
        let names: Vec<String> = name.into_iter().collect();
        self.record_image(image, &names, &[])?;
        self.resolve(&id.to_string())
    }
}

/// Writes the tar of an overlayfs upper directory, whiteouts and opaque markers in archive form.
pub fn write_layer(upper: &Path, out: &mut dyn Write) -> Result<()> {
    let root = rustix::fs::open(
        upper,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        Error::io(
            format!("open upper directory {}", upper.display()),
            e.into(),
        )
    })?;
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let mut walker = Walker {
        tar,
        hardlinks: HashMap::new(),
    };
    walker.dir(&root, "")?;
    walker.tar.finish().map_err(|e| Error::io("write layer", e))
}

struct Walker<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
    /// (dev, inode) of files with several links -> the path written first.
    hardlinks: HashMap<(u64, u64), String>,
}

fn fail(path: &str, what: &str, e: rustix::io::Errno) -> Error {
    Error::io(format!("commit: {what} {path:?}"), e.into())
}

impl Walker<'_> {
    fn dir(&mut self, dir: &OwnedFd, prefix: &str) -> Result<()> {
        if is_opaque(dir) {
            self.empty_file(&format!("{prefix}.wh..wh..opq"))?;
        }
        let mut names = Vec::new();
        let listing = rustix::fs::Dir::read_from(dir).map_err(|e| fail(prefix, "list", e))?;
        for entry in listing {
            let entry = entry.map_err(|e| fail(prefix, "list", e))?;
            let name = entry.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let Ok(name_text) = String::from_utf8(name.clone()) else {
                return Err(Error::bad_request(format!(
                    "commit: {prefix}{:?} is not UTF-8",
                    String::from_utf8_lossy(&name)
                )));
            };
            self.entry(dir, &name, &format!("{prefix}{name_text}"))?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &OwnedFd, name: &[u8], path: &str) -> Result<()> {
        let os_name = OsStr::from_bytes(name);
        let st = rustix::fs::statat(dir, os_name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail(path, "stat", e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        let mut header = tar::Header::new_gnu();
        header.set_mode(st.st_mode & 0o7777);
        header.set_uid(st.st_uid as u64);
        header.set_gid(st.st_gid as u64);
        header.set_mtime(st.st_mtime.max(0) as u64);
        header.set_size(0);
        let io = |e: std::io::Error| Error::io(format!("commit: write {path:?}"), e);
        match kind {
            FileType::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                self.tar
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .map_err(io)?;
                let child = rustix::fs::openat(
                    dir,
                    os_name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail(path, "open directory", e))?;
                self.dir(&child, &format!("{path}/"))
            }
            FileType::CharacterDevice if st.st_rdev == 0 => {
                // overlayfs whiteout.
                let (parent, base) = match path.rsplit_once('/') {
                    Some((p, b)) => (format!("{p}/"), b),
                    None => (String::new(), path),
                };
                self.empty_file(&format!("{parent}.wh.{base}"))
            }
            FileType::RegularFile => self.file(dir, os_name, path, &st, header),
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, os_name, Vec::new())
                    .map_err(|e| fail(path, "read link", e))?;
                header.set_entry_type(tar::EntryType::Symlink);
                self.tar
                    .append_link(&mut header, path, OsStr::from_bytes(target.as_bytes()))
                    .map_err(io)
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                let is_char = kind == FileType::CharacterDevice;
                header.set_entry_type(if is_char {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                header
                    .set_device_major(rustix::fs::major(st.st_rdev))
                    .map_err(io)?;
                header
                    .set_device_minor(rustix::fs::minor(st.st_rdev))
                    .map_err(io)?;
                self.tar
                    .append_data(&mut header, path, std::io::empty())
                    .map_err(io)
            }
            FileType::Fifo => {
                header.set_entry_type(tar::EntryType::Fifo);
                self.tar
                    .append_data(&mut header, path, std::io::empty())
                    .map_err(io)
            }
            _ => {
                tracing::debug!(path, "commit: socket or unknown file type skipped");
                Ok(())
            }
        }
    }

    fn file(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        path: &str,
        st: &rustix::fs::Stat,
        mut header: tar::Header,
    ) -> Result<()> {
        let io = |e: std::io::Error| Error::io(format!("commit: write {path:?}"), e);
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.hardlinks.get(&key) {
                header.set_entry_type(tar::EntryType::Link);
                return self.tar.append_link(&mut header, path, first).map_err(io);
            }
            self.hardlinks.insert(key, path.to_string());
        }
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(path, "open", e))?;
        let now = rustix::fs::fstat(&fd).map_err(|e| fail(path, "stat", e))?;
        if now.st_ino != st.st_ino || FileType::from_raw_mode(now.st_mode) != FileType::RegularFile
        {
            return Err(Error::conflict(format!(
                "commit: {path:?} changed while it was read: pause the container and try again"
            )));
        }
        let size = now.st_size.max(0) as u64;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        let mut reader = ExactReader {
            inner: File::from(fd).take(size),
            left: size,
            path: path.to_string(),
        };
        self.tar
            .append_data(&mut header, path, &mut reader)
            .map_err(io)
    }

    fn empty_file(&mut self, path: &str) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_mtime(0);
        self.tar
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| Error::io(format!("commit: write {path:?}"), e))
    }
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::fgetxattr(dir, "trusted.overlay.opaque", &mut value[..]), Ok(1) if value[0] == b'y')
}

/// Fails instead of producing a short entry when a file shrinks while it is read.
struct ExactReader<R> {
    inner: R,
    left: u64,
    path: String,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::other(format!(
                "{} shrank while it was read",
                self.path
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
