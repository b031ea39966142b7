//! Joins an engine attach/exec connection to husk's stdio frame protocol ([`husk_core::stdio`]).
//!
//! The caller gets one end of an in-memory duplex pipe. A task copies the engine's output to it as `Stdout` /
//! `Stderr` frames (terminal output arrives as `Stdout`), and its `Stdin`, `CloseStdin` and `Resize` frames to the
//! engine. When the engine's output ends, the task asks for the exit code and sends it as the last frame (or an
//! `Error` frame). If the caller goes away the engine connection is dropped; the process itself keeps running,
//! as with the engine's own clients.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::LogOutput;
use futures::{Stream, StreamExt};
use husk_core::Result;
use husk_core::stdio::{BoxStdio, Frame, read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The engine's output side of an attach or exec.
pub(crate) type EngineOutput =
    Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>>;
/// The engine's input side of an attach or exec.
pub(crate) type EngineInput = Pin<Box<dyn AsyncWrite + Send>>;

/// Size of the in-memory pipe between the task and the caller.
const PIPE_BYTES: usize = 256 * 1024;

/// What the bridge needs from the engine besides the byte streams.
#[async_trait]
pub(crate) trait Session: Send + Sync + 'static {
    /// Resizes the process's terminal.
    async fn resize(&self, rows: u16, cols: u16) -> Result<()>;
    /// The process's exit code, once its output has ended.
    async fn exit_code(&self) -> Result<i32>;
}

/// Starts the bridge and returns the caller's end.
pub(crate) fn bridge(
    output: EngineOutput,
    input: EngineInput,
    stdin: bool,
    session: Arc<dyn Session>,
) -> BoxStdio {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(run(ours, output, input, stdin, session));
    Box::new(theirs)
}

/// Why copying output stopped early.
enum Stop {
    /// The caller went away.
    Caller,
    /// The engine's stream failed.
    Engine(String),
}

async fn run<S>(
    ours: S,
    output: EngineOutput,
    input: EngineInput,
    stdin: bool,
    session: Arc<dyn Session>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (from_caller, mut to_caller) = tokio::io::split(ours);
    let inbound = tokio::spawn(forward_input(from_caller, input, stdin, session.clone()));
    let last = match forward_output(&mut to_caller, output).await {
        Ok(unrunnable) => match session.exit_code().await {
            // The engine reports every exec that could not start as 126.
            Ok(ENGINE_EXEC_FAILED) => Frame::Exit(unrunnable.unwrap_or(ENGINE_EXEC_FAILED)),
            Ok(code) => Frame::Exit(code),
            Err(e) => Frame::Error(e.message),
        },
        Err(Stop::Engine(message)) => {
            Frame::Error(format!("the engine's stream failed: {message}"))
        }
        Err(Stop::Caller) => {
            inbound.abort();
            return;
        }
    };
    inbound.abort();
    if write_frame(&mut to_caller, &last).await.is_ok() {
        let _ = to_caller.shutdown().await;
    }
}

/// The exit code Docker Engine gives an exec that could not start.
const ENGINE_EXEC_FAILED: i32 = 126;

/// Copies the engine's output to the caller. An exec whose command cannot run gets, from the engine, one line
/// of runc's words on its stdout (`OCI runtime exec failed: ... exec: "x": executable file not found in $PATH:
/// unknown`) and exit code 126 whatever the reason: that line goes out on stderr in the words every driver uses,
/// and the shell's code for it (127 or 126) is returned.
async fn forward_output<W: AsyncWrite + Unpin>(
    to_caller: &mut W,
    mut output: EngineOutput,
) -> std::result::Result<Option<i32>, Stop> {
    let mut first = true;
    let mut unrunnable = None;
    while let Some(item) = output.next().await {
        let frame = match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                let engine_words = std::str::from_utf8(&message)
                    .ok()
                    .filter(|text| first && text.starts_with("OCI runtime exec failed"))
                    .and_then(husk_core::Error::from_exec_failure);
                match engine_words {
                    Some(e) => {
                        unrunnable = e.command_exit_code();
                        Frame::Stderr(format!("{}\n", e.message).into_bytes())
                    }
                    None => Frame::Stdout(message.to_vec()),
                }
            }
            Ok(LogOutput::StdErr { message }) => Frame::Stderr(message.to_vec()),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => return Err(Stop::Engine(e.to_string())),
        };
        first = false;
        write_frame(to_caller, &frame)
            .await
            .map_err(|_| Stop::Caller)?;
    }
    Ok(unrunnable)
}

async fn forward_input<R: AsyncRead + Unpin>(
    mut from_caller: R,
    mut input: EngineInput,
    stdin: bool,
    session: Arc<dyn Session>,
) {
    let mut open = stdin;
    loop {
        let frame = match read_frame(&mut from_caller).await {
            Ok(Some(f)) => f,
            // The caller has no more to say: the process sees the end of its input.
            Ok(None) | Err(_) => break,
        };
        match frame {
            Frame::Stdin(bytes) if open => {
                let written = input.write_all(&bytes).await.is_ok() && input.flush().await.is_ok();
                open = written;
            }
            Frame::CloseStdin if open => {
                let _ = input.shutdown().await;
                open = false;
            }
            Frame::Resize { rows, cols } => {
                if let Err(e) = session.resize(rows, cols).await {
                    tracing::debug!("resizing a terminal: {e}");
                }
            }
            _ => {}
        }
    }
    if open {
        let _ = input.shutdown().await;
    }
    // Keep the engine connection's write half alive until the output side finishes (this task is aborted then):
    // dropping it would close the connection under the output.
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use tokio::io::AsyncReadExt;

    use super::*;

    struct Recorder {
        sizes: Mutex<Vec<(u16, u16)>>,
        code: i32,
    }

    #[async_trait]
    impl Session for Recorder {
        async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
            self.sizes.lock().unwrap().push((rows, cols));
            Ok(())
        }
        async fn exit_code(&self) -> Result<i32> {
            Ok(self.code)
        }
    }

    #[tokio::test]
    async fn output_becomes_frames_and_ends_with_the_exit_code() {
        let (engine_in, mut engine_in_reader) = tokio::io::duplex(1024);
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let items = vec![
            Ok(LogOutput::StdOut {
                message: Bytes::from_static(b"out"),
            }),
            Ok(LogOutput::StdErr {
                message: Bytes::from_static(b"err"),
            }),
            Ok(LogOutput::Console {
                message: Bytes::from_static(b"tty"),
            }),
        ];
        // The output ends only once the test has sent its input, as a process would after reading it.
        let output = futures::stream::iter(items).chain(futures::stream::once(async move {
            let _ = released.await;
            Ok(LogOutput::StdIn {
                message: Bytes::new(),
            })
        }));
        let session = Arc::new(Recorder {
            sizes: Mutex::new(vec![]),
            code: 7,
        });
        let mut caller = bridge(Box::pin(output), Box::pin(engine_in), true, session.clone());

        write_frame(
            &mut caller,
            &Frame::Resize {
                rows: 30,
                cols: 100,
            },
        )
        .await
        .unwrap();
        write_frame(&mut caller, &Frame::Stdin(b"hello".to_vec()))
            .await
            .unwrap();
        write_frame(&mut caller, &Frame::CloseStdin).await.unwrap();
        let mut got = Vec::new();
        engine_in_reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello", "stdin reached the engine and was closed");
        release.send(()).unwrap();

        let mut frames = Vec::new();
        while let Some(f) = read_frame(&mut caller).await.unwrap() {
            frames.push(f);
        }
        assert_eq!(
            frames,
            vec![
                Frame::Stdout(b"out".to_vec()),
                Frame::Stderr(b"err".to_vec()),
                Frame::Stdout(b"tty".to_vec()),
                Frame::Exit(7)
            ]
        );
        assert_eq!(*session.sizes.lock().unwrap(), vec![(30, 100)]);
    }

    /// The frames the caller gets for `output`, with the engine reporting exit `code`.
    async fn frames_of(output: Vec<LogOutput>, code: i32) -> Vec<Frame> {
        let (engine_in, _keep) = tokio::io::duplex(16);
        let session = Arc::new(Recorder {
            sizes: Mutex::new(vec![]),
            code,
        });
        let output = futures::stream::iter(output.into_iter().map(Ok));
        let mut caller = bridge(Box::pin(output), Box::pin(engine_in), false, session);
        let mut frames = Vec::new();
        while let Some(f) = read_frame(&mut caller).await.unwrap() {
            frames.push(f);
        }
        frames
    }

    #[tokio::test]
    async fn an_exec_the_engine_could_not_start_ends_as_on_every_driver() {
        let engine_line = |what: &str| LogOutput::StdOut {
            message: Bytes::from(format!(
                "OCI runtime exec failed: exec failed: unable to start container process: {what}: unknown\r\n"
            )),
        };
        assert_eq!(
            frames_of(
                vec![engine_line(
                    "exec: \"nope\": executable file not found in $PATH"
                )],
                126
            )
            .await,
            vec![
                Frame::Stderr(b"exec: \"nope\": executable file not found in $PATH\n".to_vec()),
                Frame::Exit(127)
            ]
        );
        assert_eq!(
            frames_of(vec![engine_line("exec: \"/etc\": permission denied")], 126).await,
            vec![
                Frame::Stderr(b"exec: \"/etc\": permission denied\n".to_vec()),
                Frame::Exit(126)
            ]
        );
        // A process that prints the same words after other output is only a process: untouched.
        let printed = vec![
            LogOutput::StdOut {
                message: Bytes::from_static(b"hi\n"),
            },
            engine_line("exec: \"nope\": executable file not found in $PATH"),
        ];
        let frames = frames_of(printed, 126).await;
        assert!(matches!(frames[1], Frame::Stdout(_)), "{frames:?}");
        assert_eq!(frames[2], Frame::Exit(126));
    }

    #[tokio::test]
    async fn a_failing_engine_stream_ends_with_an_error_frame() {
        let (engine_in, _keep) = tokio::io::duplex(16);
        let output = futures::stream::iter(vec![Err(bollard::errors::Error::RequestTimeoutError)]);
        let session = Arc::new(Recorder {
            sizes: Mutex::new(vec![]),
            code: 0,
        });
        let mut caller = bridge(Box::pin(output), Box::pin(engine_in), false, session);
        match read_frame(&mut caller).await.unwrap() {
            Some(Frame::Error(m)) => assert!(m.contains("stream failed"), "{m}"),
            other => panic!("expected an error frame, got {other:?}"),
        }
        assert_eq!(read_frame(&mut caller).await.unwrap(), None);
    }
}
