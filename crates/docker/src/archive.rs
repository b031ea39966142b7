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
    let query = UploadToContainerOptionsBuilder::default()
        .path(dir)
        .no_overwrite_dir_non_dir(if options.no_overwrite_dir_non_dir {
            "1"
        } else {
            "0"
        })
        .copy_uidgid(if options.copy_owners { "1" } else { "0" })
        .build();
    let body = tokio_util::io::ReaderStream::with_capacity(archive, 256 * 1024);
    docker
        .upload_to_container(id, Some(query), bollard::body_try_stream(body))
        .await
        .map_err(|e| engine_error(format!("copy into {dir} in the container"), e))
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
}
