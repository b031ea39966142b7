//! The client end of an attach or exec stream: the terminal, stdin, output and the exit code.

use std::io::Write;
use std::os::fd::AsRawFd;

use anyhow::{Result, anyhow};
use husk_core::stdio::{Frame, read_frame, write_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Puts the terminal on stdin in raw mode while alive.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ fills a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0
            && ws.ws_row > 0
        {
            Some((ws.ws_row, ws.ws_col))
        } else {
            None
        }
    }
}

fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty has no preconditions.
    unsafe { libc::isatty(fd) == 1 }
}

/// Runs the stream until the process's exit frame: stdin to the process (with `interactive`), its output to
/// ours, terminal size changes when `tty`. Returns the exit code.
pub async fn pump<S>(stream: S, interactive: bool, tty: bool) -> Result<i32>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, writer) = tokio::io::split(stream);
    let writer = std::sync::Arc::new(tokio::sync::Mutex::new(writer));
    let _raw = if tty && interactive && is_terminal(0) {
        RawMode::enable()
    } else {
        None
    };
    if tty && let Some((rows, cols)) = terminal_size() {
        let _ = write_frame(&mut *writer.lock().await, &Frame::Resize { rows, cols }).await;
    }
    if tty {
        let w = writer.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal_size()
                    && write_frame(&mut *w.lock().await, &Frame::Resize { rows, cols })
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
    }
    if interactive {
        let w = writer.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = write_frame(&mut *w.lock().await, &Frame::CloseStdin).await;
                        return;
                    }
                    Ok(n) => {
                        if write_frame(&mut *w.lock().await, &Frame::Stdin(buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
    }
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    loop {
        match read_frame(&mut reader).await {
            Ok(Some(Frame::Stdout(data))) => {
                let mut o = stdout.lock();
                o.write_all(&data)?;
                o.flush()?;
            }
            Ok(Some(Frame::Stderr(data))) => {
                let mut e = stderr.lock();
                e.write_all(&data)?;
                e.flush()?;
            }
            Ok(Some(Frame::Exit(code))) => return Ok(code),
            Ok(Some(Frame::Error(message))) => return Err(anyhow!("{message}")),
            Ok(Some(_)) => {}
            // The daemon always ends the stream with the exit code or an error: a stream that stops before
            // either is a daemon that went away (stopped, killed) or a connection cut.
            Ok(None) => {
                return Err(anyhow!(
                    "read the daemon's stream: it ended before the process's exit code arrived (the daemon stopped or the connection was cut)"
                ));
            }
            Err(e) => return Err(anyhow!("read the daemon's stream: {e}")),
        }
    }
}
