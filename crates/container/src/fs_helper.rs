//! The daemon's side of the container-fs helper ([`crate::container_fs`]): starting it with the right
//! descriptors, streaming its archive out (an archive that ends early ends with the helper's error), and feeding
//! it an archive.

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll, ready};

use husk_core::{ArchiveReader, Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;

use crate::container_fs::{FsRequest, PIDFD, helper_args, helper_error};

/// A pidfd of process `pid`.
pub fn pidfd(pid: i32) -> Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| Error::internal(format!("invalid process ID {pid}")))?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| Error::backend(format!("open the container's process: {e}")))
}

/// The helper's command: `husk container-fs REQUEST`, stdout and stderr piped, stdin piped when `input`, and the
/// pidfd (if any) as descriptor [`PIDFD`].
pub fn command(
    husk: &Path,
    req: &FsRequest,
    pidfd: Option<&OwnedFd>,
    input: bool,
) -> Result<Command> {
    let mut cmd = Command::from(std_command(husk, req, pidfd, input)?);
    cmd.kill_on_drop(true);
    Ok(cmd)
}

/// [`command`] as a standard library command, for a caller that reaps its children itself (the VM agent, which
/// is PID 1 of its guest): `husk` is the executable that runs the helper (`husk container-fs` or
/// `husk-agent container-fs`). The pidfd must stay open until the command is spawned.
pub fn std_command(
    husk: &Path,
    req: &FsRequest,
    pidfd: Option<&OwnedFd>,
    input: bool,
) -> Result<std::process::Command> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(husk);
    cmd.arg0("husk")
        .args(helper_args(req)?)
        .stdin(if input { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(fd) = pidfd {
        let raw = fd.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) on a descriptor that the
        // parent keeps open until `spawn` returns.
        unsafe {
            cmd.pre_exec(move || {
                if raw == PIDFD {
                    if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, PIDFD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    Ok(cmd)
}

/// Waits for the helper and reads its stderr: `Ok` when it succeeded, its error otherwise.
async fn verdict(mut child: Child) -> Result<()> {
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr).await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| Error::io("wait for the container-fs helper", e))?;
    if status.success() {
        Ok(())
    } else {
        Err(helper_error(&stderr, status))
    }
}

/// The helper's stdout as an archive stream whose end carries the helper's verdict.
pub struct HelperOutput {
    stdout: ChildStdout,
    verdict: Option<oneshot::Receiver<Result<()>>>,
}

impl HelperOutput {
    /// Takes the child's stdout; a task waits for the child.
    pub fn new(mut child: Child) -> Result<HelperOutput> {
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::internal("the helper's stdout is not piped"))?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(verdict(child).await);
        });
        Ok(HelperOutput {
            stdout,
            verdict: Some(rx),
        })
    }
}

impl AsyncRead for HelperOutput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stdout).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            return Poll::Ready(Ok(()));
        }
        let Some(rx) = self.verdict.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let outcome = ready!(Pin::new(rx).poll(cx));
        self.verdict = None;
        Poll::Ready(match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e.message)),
            Err(_) => Err(std::io::Error::other("the container-fs helper vanished")),
        })
    }
}

/// Feeds `archive` to the helper's stdin and returns its verdict (its own error wins over a broken pipe).
pub async fn feed(mut child: Child, mut archive: ArchiveReader) -> Result<()> {
    let copied = match child.stdin.take() {
        Some(mut stdin) => {
            let r = tokio::io::copy(&mut archive, &mut stdin).await;
            drop(stdin);
            r.map(|_| ())
        }
        None => Ok(()),
    };
    verdict(child).await?;
    copied.map_err(|e| Error::io("send the archive to the container", e))
}
