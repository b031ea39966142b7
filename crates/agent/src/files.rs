//! A container's files from the agent: `cp` (stat, archive, extract) and the propagation of bind mounts, done by
//! the `linux` driver's container-fs helper ([`husk_container::container_fs`]) run as `husk-agent container-fs
//! REQUEST`, exactly as the `linux` driver runs `husk container-fs` on a host. So the path-safe code is the same
//! on both drivers: every path is resolved inside the container's root (`RESOLVE_IN_ROOT`), never following a
//! symbolic link out of it.
//!
//! The helper joins the mount namespace of the container's main process while it exists (its volumes, binds
//! and tmpfs mounts are then where the container sees them); for a container that is not running it builds a
//! view of the root filesystem with its binds and volumes attached (the guest paths of the mounts share).
//!
//! The agent is PID 1 and reaps every child itself ([`Reaper`]), so the helper is started with the standard
//! library's `Command` and waited for through the reaper; its pipes are driven by tokio through [`FdStream`].

use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;

use husk_container::container_fs::{FsOp, FsRequest, FsTarget, helper_error};
use husk_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::fdio::FdStream;
use crate::reaper::Reaper;

/// A running container-fs helper.
pub struct Helper {
    /// Its stdin (an archive to unpack), when it was asked for.
    pub stdin: Option<FdStream>,
    /// Its stdout (JSON or an archive).
    pub stdout: FdStream,
    stderr: FdStream,
    exit: oneshot::Receiver<i32>,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper").finish_non_exhaustive()
    }
}

fn stream(fd: impl Into<OwnedFd>, what: &str) -> Result<FdStream> {
    FdStream::new(fd.into()).map_err(|e| Error::io(format!("the helper's {what}"), e))
}

impl Helper {
    /// Starts the helper for `op` on `target` (with `pidfd`, the container's main process, for
    /// [`FsTarget::Process`]); its stdin is a pipe when `input`. Must run inside the tokio runtime.
    pub fn start(
        reaper: &Reaper,
        target: FsTarget,
        op: FsOp,
        pidfd: Option<&OwnedFd>,
        input: bool,
    ) -> Result<Helper> {
        let req = FsRequest { target, op };
        let mut cmd =
            husk_container::fs_helper::std_command(&crate::exe::path()?, &req, pidfd, input)?;
        let mut child = None;
        let (_, exit) = reaper.spawn(|| -> Result<i32> {
            let c = cmd
                .spawn()
                .map_err(|e| Error::io("start the container-fs helper", e))?;
            let pid = c.id() as i32;
            child = Some(c);
            Ok(pid)
        })?;
        let mut child = child.ok_or_else(|| Error::internal("the helper was not started"))?;
        let stdin = match child.stdin.take() {
            Some(s) => Some(stream(s, "stdin")?),
            None => None,
        };
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::internal("the helper's stdout is not piped"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Error::internal("the helper's stderr is not piped"))?;
        // The reaper, not the Child handle, collects the helper.
        Ok(Helper {
            stdin,
            stdout: stream(stdout, "stdout")?,
            stderr: stream(stderr, "stderr")?,
            exit,
        })
    }

    /// Waits for the helper to exit: `Ok` when it succeeded, else its error (the JSON line on its stderr). Its
    /// stdin and stdout are closed first: a helper still writing an archive nobody reads (the host went away)
    /// ends on the broken pipe instead of waiting forever.
    pub async fn verdict(self) -> Result<()> {
        let Helper {
            stdin,
            stdout,
            mut stderr,
            exit,
        } = self;
        drop((stdin, stdout));
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text).await;
        let stderr = text;
        let status = exit
            .await
            .map_err(|_| Error::internal("the container-fs helper's exit was lost"))?;
        let status = std::process::ExitStatus::from_raw(status);
        if status.success() {
            Ok(())
        } else {
            Err(helper_error(&stderr, status))
        }
    }

    /// Reads all of stdout, then waits for the verdict.
    pub async fn output(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let read = self.stdout.read_to_end(&mut out).await;
        self.verdict().await?;
        read.map_err(|e| Error::io("read the container-fs helper's answer", e))?;
        Ok(out)
    }

    /// Feeds `input` to stdin (closing it at the end), then waits for the verdict: the helper's own error wins
    /// over a broken pipe.
    pub async fn feed(mut self, mut input: impl AsyncRead + Unpin) -> Result<()> {
        let copied = match self.stdin.take() {
            Some(mut stdin) => {
                let r = tokio::io::copy(&mut input, &mut stdin).await;
                let _ = stdin.shutdown().await;
                r.map(drop)
            }
            None => Ok(()),
        };
        self.verdict().await?;
        copied.map_err(|e| Error::io("send the archive to the container-fs helper", e))
    }
}

/// Sets the propagation of a just-created container's binds and volumes, when one asks for more than
/// `rprivate` (libcontainer mounts them without it), from inside its mount namespace (`init_pid`: its init).
pub async fn apply_propagation(
    reaper: &Reaper,
    config: &husk_core::ContainerConfig,
    init_pid: i32,
) -> Result<()> {
    let mounts = husk_container::spec::bind_propagations(config);
    if mounts.is_empty() {
        return Ok(());
    }
    let pidfd = husk_container::fs_helper::pidfd(init_pid)?;
    Helper::start(
        reaper,
        FsTarget::Process,
        FsOp::Propagation { mounts },
        Some(&pidfd),
        false,
    )?
    .verdict()
    .await
    .map_err(|e| e.context("set the propagation of the container's mounts"))
}
