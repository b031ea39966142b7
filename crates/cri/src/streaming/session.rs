//! A remote-command session (exec or attach), whatever transport carries it: which channels it has, how the
//! client's input reaches the process and the process's output and end reach the client.

use std::future::Future;
use std::pin::Pin;

use husk_api_types::ExecCreate;
use husk_core::stdio::{BoxStdio, Frame, read_frame, write_frame};
use husk_core::{Error, Result};
use husk_engine::Engine;
use serde::Deserialize;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::*;

/// The remote-command protocol version a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Version {
    /// Errors as plain text, no terminal resizing.
    V2,
    /// Terminal resizing.
    V3,
    /// The end as a JSON `Status` carrying the exit code.
    V4,
    /// WebSocket only: a message closes the client's stdin.
    V5,
}

impl Version {
    pub(super) fn of(protocol: &str) -> Version {
        match protocol {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            _ => Version::V2,
        }
    }
}

/// The channels a remote command uses, from its request.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Channels {
    pub(super) stdin: bool,
    pub(super) stdout: bool,
    pub(super) stderr: bool,
    pub(super) tty: bool,
}

impl Channels {
    pub(super) fn of(pending: &Pending) -> Channels {
        let (stdin, stdout, stderr, tty) = match pending {
            Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::PortForward(_) => (false, false, false, false),
        };
        // With a terminal, all output is one stream.
        Channels {
            stdin,
            stdout,
            stderr: stderr && !tty,
            tty,
        }
    }
}

/// How a remote command ended, as told to the client.
pub(super) enum End {
    /// The exec'd process exited with this code (attach: the container's main process ended).
    Exit(i32),
    /// The session failed.
    Failed(String),
}

impl End {
    /// The Kubernetes `Status` object v4 and later put on the error channel.
    pub(super) fn status_json(&self, exec: bool) -> String {
        let status = match self {
            End::Exit(code) if *code != 0 && exec => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            End::Exit(_) => serde_json::json!({"metadata": {}, "status": "Success"}),
            End::Failed(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        status.to_string()
    }

    /// What v2 and v3 put on the error channel: nothing on success, else a message.
    pub(super) fn plain(&self, exec: bool) -> Option<String> {
        match self {
            End::Exit(code) if *code != 0 && exec => Some(format!(
                "command terminated with non-zero exit code: exit code {code}"
            )),
            End::Exit(_) => None,
            End::Failed(m) => Some(m.clone()),
        }
    }
}

/// A terminal size as the client sends it on the resize channel.
#[derive(Debug, Deserialize)]
pub(super) struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Decodes the resize channel: a sequence of JSON objects, possibly split across reads.
#[derive(Default)]
pub(super) struct ResizeDecoder {
    buffer: Vec<u8>,
}

impl ResizeDecoder {
    /// Adds bytes; returns the sizes now complete, or an error for bytes that are not JSON sizes.
    pub(super) fn push(&mut self, data: &[u8]) -> std::result::Result<Vec<Frame>, String> {
        self.buffer.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let mut it =
                serde_json::Deserializer::from_slice(&self.buffer).into_iter::<TerminalSize>();
            match it.next() {
                Some(Ok(size)) => {
                    let used = it.byte_offset();
                    self.buffer.drain(..used);
                    out.push(Frame::Resize {
                        rows: size.height,
                        cols: size.width,
                    });
                }
                Some(Err(e)) if e.is_eof() => return Ok(out),
                Some(Err(e)) => return Err(format!("resize channel: {e}")),
                None => {
                    self.buffer.clear();
                    return Ok(out);
                }
            }
        }
    }
}

/// Starts the process a remote-command session is for.
pub(super) async fn open_stdio(engine: &Engine, pending: &Pending) -> Result<BoxStdio> {
    match pending {
        Pending::Exec(r) => {
            let exec = ExecCreate {
                command: r.cmd.clone(),
                tty: r.tty,
                stdin: r.stdin,
                ..Default::default()
            };
            engine.exec(&r.container_id, &exec).await
        }
        Pending::Attach(r) => engine.attach(&r.container_id, r.stdin).await,
        Pending::PortForward(_) => Err(Error::internal("a port forward is no remote command")),
    }
}

/// What the client's end of input does to the process's stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InputEnd {
    /// Closes it (exec: the process is the session's own).
    Close,
    /// Closes it, and ends the attach stream's input (attach to a container made with `stdin_once`).
    Hangup,
    /// Leaves it open for the next client (attach otherwise).
    Keep,
}

impl InputEnd {
    pub(super) fn of(engine: &Engine, pending: &Pending) -> InputEnd {
        match pending {
            Pending::Attach(r) => {
                let once = engine
                    .container(&r.container_id)
                    .is_ok_and(|rec| crate::convert::stdin_once(&rec));
                if once {
                    InputEnd::Hangup
                } else {
                    InputEnd::Keep
                }
            }
            _ => InputEnd::Close,
        }
    }
}

/// Where a session's output goes, whatever carries it.
pub(super) trait Output: Send {
    /// Sends process output on the stdout channel (`stderr` false) or the stderr channel.
    fn output(
        &mut self,
        stderr: bool,
        data: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<()>> + Send + '_>>;
    /// Ends the session, telling the client how.
    fn finish(self: Box<Self>, end: End) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Runs a remote-command session: the process's output to `output`, the client's `input` (stdin, its end,
/// terminal sizes) to the process, until the process ends or `gone` (the client left).
pub(super) async fn pump(
    stdio: BoxStdio,
    mut input: mpsc::Receiver<Frame>,
    mut output: Box<dyn Output>,
    gone: Pin<Box<dyn Future<Output = ()> + Send>>,
    input_end: InputEnd,
) {
    let (mut from_process, mut to_process): (ReadHalf<BoxStdio>, WriteHalf<BoxStdio>) =
        tokio::io::split(stdio);
    let feeder = tokio::spawn(async move {
        while let Some(frame) = input.recv().await {
            let end = frame == Frame::CloseStdin;
            tracing::debug!(?input_end, end, "CRI streaming: input for the process");
            match input_end {
                InputEnd::Keep if end => continue,
                // An attached client closes the container's stdin by ending its side of the stream.
                InputEnd::Hangup if end => {
                    let _ = write_frame(&mut to_process, &frame).await;
                    let _ = to_process.shutdown().await;
                    break;
                }
                _ => {}
            }
            if write_frame(&mut to_process, &frame).await.is_err() {
                break;
            }
        }
        // Keep the write half (and so the process's input) open until the session ends.
        std::future::pending::<()>().await;
    });
    let ended = async {
        loop {
            match read_frame(&mut from_process).await {
                Ok(Some(Frame::Stdout(data))) => {
                    if output.output(false, data).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(Frame::Stderr(data))) => {
                    if output.output(true, data).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(Frame::Exit(code))) => return Some(End::Exit(code)),
                Ok(Some(Frame::Error(message))) => return Some(End::Failed(message)),
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Some(End::Failed(
                        "the process's stream ended without an exit code".into(),
                    ));
                }
                Err(e) => return Some(End::Failed(format!("the process's stream: {e}"))),
            }
        }
    };
    let end = tokio::select! {
        end = ended => end,
        _ = gone => None,
    };
    feeder.abort();
    if let Some(end) = end {
        output.finish(end).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_split_anywhere_are_decoded() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(br#"{"Width":80,"#).unwrap().is_empty());
        let frames = d.push(br#""Height":24}{"Width":100,"Height":50}"#).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Resize { rows: 24, cols: 80 },
                Frame::Resize {
                    rows: 50,
                    cols: 100
                }
            ]
        );
        assert!(d.push(b"not json").is_err());
    }

    #[test]
    fn the_exit_code_travels_as_a_kubernetes_status() {
        let ok: serde_json::Value = serde_json::from_str(&End::Exit(0).status_json(true)).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_str(&End::Exit(3).status_json(true)).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        // An attached container's end is no failure of the session.
        let attach: serde_json::Value =
            serde_json::from_str(&End::Exit(3).status_json(false)).unwrap();
        assert_eq!(attach["status"], "Success");
        assert_eq!(End::Exit(0).plain(true), None);
        assert!(End::Exit(2).plain(true).unwrap().contains("exit code 2"));
    }

    #[test]
    fn channels_follow_the_request() {
        let tty = Channels::of(&Pending::Exec(cri::ExecRequest {
            stdout: true,
            stderr: true,
            tty: true,
            ..Default::default()
        }));
        assert!(
            tty.stdout && !tty.stderr,
            "a terminal has one output stream"
        );
        assert_eq!(Version::of("v4.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of("v5.channel.k8s.io"), Version::V5);
        assert_eq!(Version::of("v2.channel.k8s.io"), Version::V2);
    }
}
