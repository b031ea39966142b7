//! Running a process in a container to completion and keeping what it printed (Zun's `execute`, the CRI's
//! `ExecSync`): no stdin, output collected up to a limit.

use std::time::Duration;

use husk_core::stdio::{Frame, read_frame};
use husk_core::{Error, Result};

use crate::Engine;
use husk_api_types::containers::ExecCreate;

/// What a finished process printed and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output (everything, with a terminal), cut at the limit.
    pub stdout: Vec<u8>,
    /// Standard error, cut at the limit.
    pub stderr: Vec<u8>,
    /// Both streams interleaved as they arrived, cut at the limit.
    pub combined: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
    /// Whether output was dropped at the limit.
    pub truncated: bool,
}

impl Engine {
    /// Runs `req` in the running container `key` until it exits (at most `timeout`), keeping up to `limit`
    /// bytes of each output stream.
    pub async fn exec_output(
        &self,
        key: &str,
        req: &ExecCreate,
        limit: usize,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        if req.stdin {
            return Err(Error::invalid(
                "stdin",
                "a process whose output is collected gets no input",
            ));
        }
        // The process is killed at the deadline too, not only left behind by this call.
        let started = std::time::Instant::now();
        let mut stream = match self.exec_until(key, req, Some(timeout)).await {
            Ok(s) => s,
            // The command cannot run (no such executable, not executable): as with Docker, that is the process's
            // failure, reported with the shell's codes and the runtime's words as output.
            Err(e) => {
                let Some(exit_code) = e.command_exit_code() else {
                    return Err(e);
                };
                let text = format!("{}\n", e.message).into_bytes();
                return Ok(ExecOutput {
                    exit_code,
                    stdout: Vec::new(),
                    combined: text.clone(),
                    stderr: text,
                    truncated: false,
                });
            }
        };
        let collect = async {
            let mut out = ExecOutput::default();
            loop {
                let frame = read_frame(&mut stream)
                    .await
                    .map_err(|e| Error::backend(format!("read the exec's output: {e}")))?;
                let (buf, data) = match frame {
                    Some(Frame::Stdout(d)) => (&mut out.stdout, d),
                    Some(Frame::Stderr(d)) => (&mut out.stderr, d),
                    Some(Frame::Exit(code)) => {
                        out.exit_code = code;
                        return Ok(out);
                    }
                    Some(Frame::Error(m)) => return Err(Error::backend(m)),
                    Some(_) => continue,
                    None => {
                        return Err(Error::backend(
                            "the exec's stream ended without an exit code",
                        ));
                    }
                };
                let room = limit.saturating_sub(buf.len());
                out.truncated |= data.len() > room;
                buf.extend_from_slice(&data[..data.len().min(room)]);
                let room = limit.saturating_sub(out.combined.len());
                out.combined
                    .extend_from_slice(&data[..data.len().min(room)]);
            }
        };
        let timed_out = || {
            Error::timeout(format!(
                "the process {:?} did not finish within {} s",
                req.command.join(" "),
                timeout.as_secs()
            ))
        };
        let out = tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| timed_out())??;
        // Killed at the deadline by the driver (just before this call's own timer fired): still a timeout.
        if out.exit_code == 128 + 9 && started.elapsed() >= timeout {
            return Err(timed_out());
        }
        Ok(out)
    }
}
