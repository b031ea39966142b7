//! `cp` through the engine's archive API (`HEAD`, `GET` and `PUT /containers/{id}/archive`): the engine resolves
//! paths inside the container's root itself (`chroot`ed, volumes and binds mounted), as `docker cp` relies on.

use bollard::Docker;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};
use husk_core::{ArchiveReader, ExtractOptions, PathStat, Result};

use crate::client::engine_error;

/// Go's `os.FileMode` bits the engine reports, as a Unix `st_mode`.
pub(crate) fn unix_mode(go_mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let kind = if go_mode & DIR != 0 {
        0o040000
    } else if go_mode & SYMLINK != 0 {
        0o120000
    } else if go_mode & DEVICE != 0 {
        if go_mode & CHAR != 0 {
            0o020000
        } else {
            0o060000
        }
    } else if go_mode & PIPE != 0 {
        0o010000
    } else if go_mode & SOCKET != 0 {
        0o140000
    } else {
        0o100000
    };
    let mut mode = kind | (go_mode & 0o777);
    for (go, unix) in [(SETUID, 0o4000), (SETGID, 0o2000), (STICKY, 0o1000)] {
        if go_mode & go != 0 {
            mode |= unix;
        }
    }
    mode
}

/// The engine takes `P/.` as "the contents of P" and names the archive's top entry `.`; husk's contract names
/// it after P and follows a final link, which the engine does for `P/`.
fn engine_path(path: &str) -> String {
    match path.strip_suffix("/.") {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => path.to_string(),
    }
}

/// Describes `path` in container `id`.
pub(crate) async fn stat(docker: &Docker, id: &str, path: &str) -> Result<PathStat> {
    let options = ContainerArchiveInfoOptionsBuilder::default()
        .path(&engine_path(path))
        .build();
    let s = docker
        .get_container_archive_info(id, Some(options))
        .await
        .map_err(|e| engine_error(format!("stat {path} in the container"), e))?;
    Ok(PathStat {
        name: s.name,
        size: s.size.max(0) as u64,
        mode: unix_mode(s.file_mode),
        mtime: s.modification_time.unwrap_or_default(),
        link_target: s.link_target,
    })
}

/// A tar archive of `path` in container `id`; an engine error mid-stream ends the reader with an error.
pub(crate) fn download(docker: &Docker, id: &str, path: &str) -> ArchiveReader {
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(&engine_path(path))
        .build();
    let what = format!("archive {path} in the container");
    let stream = docker
        .download_from_container(id, Some(options))
        .map_err(move |e| std::io::Error::other(engine_error(&what, e).message));
    Box::pin(tokio_util::io::StreamReader::new(stream.boxed()))
}

/// Unpacks `archive` into the directory `dir` of container `id`.
pub(crate) async fn upload(
    docker: &Docker,
    id: &str,
    dir: &str,
    archive: ArchiveReader,
    options: &ExtractOptions,
) -> Result<()> {
    // The engine's `copyUIDGID` gives files the container user's IDs; husk's contract is the archive's owners
    // with `-a` (the engine's behaviour without the flag) and root's otherwise.
    let query = UploadToContainerOptionsBuilder::default()
        .path(dir)
        .no_overwrite_dir_non_dir(if options.no_overwrite_dir_non_dir {
            "1"
        } else {
            "0"
        })
        .copy_uidgid("0")
        .build();
    let archive = if options.copy_owners {
        archive
    } else {
        owned_by_root(archive)
    };
    let body = tokio_util::io::ReaderStream::with_capacity(archive, 256 * 1024);
    docker
        .upload_to_container(id, Some(query), bollard::body_try_stream(body))
        .await
        .map_err(|e| engine_error(format!("copy into {dir} in the container"), e))
}

/// Sends what it is given as chunks to an async reader.
struct ChunkWriter(tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>);

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Copies `input`'s entries to `output` with owner and group 0.
fn rewrite_owners(input: impl std::io::Read, output: impl std::io::Write) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut out = tar::Builder::new(output);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut h = entry.header().clone();
        h.set_uid(0);
        h.set_gid(0);
        let _ = h.set_username("");
        let _ = h.set_groupname("");
        match h.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                out.append_link(&mut h, &path, &target)?;
            }
            _ => out.append_data(&mut h, &path, &mut entry)?,
        }
    }
    std::io::Write::flush(&mut out.into_inner()?)
}

/// `archive` with every entry owned by root; a malformed archive ends the stream with an error.
fn owned_by_root(archive: ArchiveReader) -> ArchiveReader {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(16);
    husk_core::spawn_blocking(move || {
        let input = tokio_util::io::SyncIoBridge::new(archive);
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChunkWriter(tx.clone()));
        if let Err(e) = rewrite_owners(std::io::BufReader::with_capacity(256 * 1024, input), out) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Box::pin(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes_become_unix_modes() {
        assert_eq!(unix_mode((1 << 31) | 0o755), 0o040755);
        assert_eq!(unix_mode((1 << 27) | 0o777), 0o120777);
        assert_eq!(unix_mode(0o644), 0o100644);
        assert_eq!(unix_mode((1 << 23) | 0o755), 0o104755);
        assert_eq!(unix_mode((1 << 26) | (1 << 21) | 0o666), 0o020666);
        assert_eq!(engine_path("/a/b/."), "/a/b/");
        assert_eq!(engine_path("/a"), "/a");
        assert_eq!(engine_path("/."), "/.");
    }

    #[test]
    fn owners_are_rewritten_to_root() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o640);
        h.set_uid(1000);
        h.set_gid(2000);
        b.append_data(&mut h, "d/file", &b"hi"[..]).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        l.set_mode(0o777);
        l.set_uid(5);
        l.set_gid(5);
        b.append_link(&mut l, "d/link", "file").unwrap();
        let input = b.into_inner().unwrap();
        let mut output = Vec::new();
        rewrite_owners(input.as_slice(), &mut output).unwrap();
        let mut a = tar::Archive::new(output.as_slice());
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(
                (e.header().uid().unwrap(), e.header().gid().unwrap()),
                (0, 0)
            );
            if e.header().entry_type() == tar::EntryType::Regular {
                assert_eq!(e.header().mode().unwrap(), 0o640);
            } else {
                assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("file"));
            }
        }
    }
}
