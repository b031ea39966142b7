//! `husk cp`: copies between a container and this machine as tar streams, with `docker cp`'s path rules.
//!
//! The daemon archives or unpacks one path at a time; this side decides names, as Docker's CLI does:
//! - into an existing directory, the source keeps its name (`SRC/.` copies only its contents);
//! - onto a path that does not exist (its parent must), the copy takes that name;
//! - a file may replace a file, a directory never replaces a file;
//! - a destination that is a symbolic link in the container is followed (inside the container); a source link
//!   is copied as a link unless `-L` is given.
//!
//! Archives coming from a container are unpacked here beneath the destination only: an entry that would leave
//! it (`..`, or through a link the archive made) is refused.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::Method;
use husk_core::PathStat;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::args::CpArgs;
use crate::client::{Client, DaemonError, encode};

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// `-`: a tar stream on stdin or stdout.
    Stream,
    /// A path here.
    Local(String),
    /// `CONTAINER:PATH`.
    Container(String, String),
}

/// Parses a copy argument as Docker does: `NAME:PATH` is a container path when `NAME` has no `/` (write
/// `./a:b` for a local path with a colon).
fn location(arg: &str) -> Location {
    if arg == "-" {
        return Location::Stream;
    }
    match arg.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') && !name.starts_with('.') => {
            Location::Container(name.to_string(), path.to_string())
        }
        _ => Location::Local(arg.to_string()),
    }
}

/// Runs `husk cp`.
pub async fn cp(client: &Client, a: CpArgs) -> Result<i32> {
    match (location(&a.source), location(&a.destination)) {
        (Location::Container(c, p), Location::Stream) => copy_out(client, &c, &p, None, &a).await,
        (Location::Container(c, p), Location::Local(l)) => {
            copy_out(client, &c, &p, Some(&l), &a).await
        }
        (Location::Stream, Location::Container(c, p)) => copy_stream_in(client, &c, &p, &a).await,
        (Location::Local(l), Location::Container(c, p)) => copy_in(client, &l, &c, &p, &a).await,
        (Location::Container(..), Location::Container(..)) => {
            bail!("copying between containers is not supported: copy to this machine first")
        }
        _ => bail!("one of source and destination must be CONTAINER:PATH"),
    }
}

fn container_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// The container path's description; `None` when it does not exist.
async fn stat(client: &Client, container: &str, path: &str) -> Result<Option<PathStat>> {
    let url = format!(
        "/husk/v1/containers/{container}/archive/stat?path={}",
        encode(path)
    );
    match client.get::<PathStat>(&url).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.downcast_ref::<DaemonError>() {
            Some(d) if d.0.kind == husk_core::ErrorKind::NotFound => Ok(None),
            _ => Err(e),
        },
    }
}

/// The last component of a path (without a trailing `/` or `/.`).
fn base_name(path: &str) -> String {
    let trimmed = path.trim_end_matches("/.").trim_end_matches('/');
    trimmed
        .rsplit('/')
        .next()
        .filter(|b| !b.is_empty())
        .unwrap_or(".")
        .to_string()
}

/// The directory part of a path (`/` at the top, `.` for a bare name).
fn parent_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((p, _)) => p.to_string(),
        None => ".".into(),
    }
}

/// Copies `path` of `container` to `local` (stdout when `None`).
async fn copy_out(
    client: &Client,
    container: &str,
    path: &str,
    local: Option<&str>,
    a: &CpArgs,
) -> Result<i32> {
    let mut src = container_path(path);
    let mut src_stat = stat(client, container, &src)
        .await?
        .ok_or_else(|| anyhow!("no such file or directory in container {container}: {src}"))?;
    if a.follow_link && src_stat.is_symlink() && !src_stat.link_target.is_empty() {
        src = src_stat.link_target.clone();
        src_stat = stat(client, container, &src)
            .await?
            .ok_or_else(|| anyhow!("the link {path} in container {container} leads nowhere"))?;
    }
    let url = format!(
        "/husk/v1/containers/{container}/archive?path={}",
        encode(&src)
    );
    let Some(local) = local else {
        let mut archive = client.get_stream(&url).await?;
        let mut out = tokio::io::stdout();
        tokio::io::copy(&mut archive, &mut out)
            .await
            .context("copy the archive to stdout")?;
        tokio::io::AsyncWriteExt::flush(&mut out).await?;
        return Ok(0);
    };
    let top = if src.trim_end_matches('/').is_empty() {
        ".".to_string()
    } else {
        base_name(&src)
    };
    let contents = src.ends_with("/.") || top == ".";
    let (dir, rename) = match std::fs::metadata(local) {
        Ok(m) if m.is_dir() => (
            PathBuf::from(local),
            contents.then(|| (top.clone(), ".".to_string())),
        ),
        Ok(_) if src_stat.is_dir() => bail!("cannot copy a directory to a file: {local}"),
        Ok(_) => (
            PathBuf::from(parent_of(local)),
            Some((top.clone(), base_name(local))),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if local.ends_with('/') {
                bail!("the destination directory {local} does not exist");
            }
            let parent = parent_of(local);
            if !Path::new(&parent).is_dir() {
                bail!("the destination's directory {parent} does not exist");
            }
            if top == "." {
                // The container's root: its entries go into a new directory of that name.
                std::fs::create_dir(local).with_context(|| format!("create {local}"))?;
                (PathBuf::from(local), None)
            } else {
                (PathBuf::from(parent), Some((top.clone(), base_name(local))))
            }
        }
        Err(e) => return Err(anyhow!("{local}: {e}")),
    };
    let archive = client.get_stream(&url).await?;
    let options = husk_fs::ExtractOptions {
        copy_owners: a.archive,
        no_overwrite_dir_non_dir: true,
        rename_top: rename,
    };
    extract_here(archive, dir, options).await?;
    Ok(0)
}

/// A `Read` over chunks sent from async code.
struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Unpacks the archive read from `archive` into `dir` (beneath it only).
async fn extract_here(
    mut archive: impl tokio::io::AsyncRead + Unpin,
    dir: PathBuf,
    options: husk_fs::ExtractOptions,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let unpack = tokio::task::spawn_blocking(move || {
        let tree = husk_fs::Tree::beneath(&dir)?;
        tree.extract(
            ".",
            ChunkReader {
                rx,
                chunk: Bytes::new(),
            },
            &options,
        )
    });
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match archive.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if tx
                    .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    break; // the unpacking failed: its error says why
                }
            }
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                break;
            }
        }
    }
    drop(tx);
    unpack
        .await
        .map_err(|e| anyhow!("the unpacking task failed: {e}"))?
        .map_err(|e| anyhow!("{}", e.message))
}

/// A `Write` that sends chunks to async code.
struct ChunkWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends the tar stream on stdin into the directory `path` of `container`.
async fn copy_stream_in(client: &Client, container: &str, path: &str, a: &CpArgs) -> Result<i32> {
    let dst = container_path(path);
    let url = format!(
        "/husk/v1/containers/{container}/archive?path={}&copy_uid_gid={}",
        encode(&dst),
        a.archive
    );
    client
        .upload_with(Method::PUT, &url, tokio::io::stdin())
        .await?;
    Ok(0)
}

/// Copies the local `local` to `path` of `container`.
async fn copy_in(
    client: &Client,
    local: &str,
    container: &str,
    path: &str,
    a: &CpArgs,
) -> Result<i32> {
    let mut src = if Path::new(local).is_absolute() {
        PathBuf::from(local)
    } else {
        std::env::current_dir()?.join(local)
    };
    if a.follow_link {
        src = std::fs::canonicalize(&src).with_context(|| local.to_string())?;
    }
    let meta = std::fs::symlink_metadata(&src).with_context(|| local.to_string())?;
    let contents = local.ends_with("/.") && meta.is_dir();
    let mut dst = container_path(path);
    let mut dst_stat = stat(client, container, &dst).await?;
    if let Some(s) = &dst_stat
        && s.is_symlink()
        && !s.link_target.is_empty()
    {
        dst = s.link_target.clone();
        dst_stat = stat(client, container, &dst).await?;
    }
    let (dir, top) = match &dst_stat {
        Some(s) if s.is_dir() => (
            dst.clone(),
            if contents {
                ".".into()
            } else {
                base_name(local)
            },
        ),
        Some(_) if meta.is_dir() => bail!("cannot copy a directory to a file: {container}:{dst}"),
        Some(_) => (parent_of(&dst), base_name(&dst)),
        None if path.ends_with('/') => {
            bail!("the destination directory {container}:{dst} does not exist")
        }
        None => (parent_of(&dst), base_name(&dst)),
    };
    let src_text = src
        .to_str()
        .ok_or_else(|| anyhow!("{} is not valid UTF-8", src.display()))?
        .to_string();
    let src_arg = if contents {
        format!("{src_text}/.")
    } else {
        src_text
    };
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let producer = tokio::task::spawn_blocking(move || {
        let here = husk_fs::Tree::in_root(Path::new("/"))?;
        let out = std::io::BufWriter::with_capacity(256 * 1024, ChunkWriter(tx.clone()));
        let result = here.archive(&src_arg, Some(&top), out);
        if let Err(e) = &result {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.message.clone())));
        }
        result
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
    let url = format!(
        "/husk/v1/containers/{container}/archive?path={}&copy_uid_gid={}",
        encode(&dir),
        a.archive
    );
    let uploaded = client.upload_with(Method::PUT, &url, reader).await;
    let produced = producer
        .await
        .map_err(|e| anyhow!("the archiving task failed: {e}"))?;
    produced.map_err(|e| anyhow!("{}", e.message))?;
    uploaded?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_like_dockers() {
        assert_eq!(location("-"), Location::Stream);
        assert_eq!(
            location("web:/etc/x"),
            Location::Container("web".into(), "/etc/x".into())
        );
        assert_eq!(location("/tmp/a:b"), Location::Local("/tmp/a:b".into()));
        assert_eq!(location("./a:b"), Location::Local("./a:b".into()));
        assert_eq!(location("plain"), Location::Local("plain".into()));
    }

    #[test]
    fn names_and_parents() {
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(base_name("/a/b/."), "b");
        assert_eq!(base_name("b"), "b");
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/b"), "/");
        assert_eq!(parent_of("b"), ".");
    }
}
