//! A container's processes in the agent: their output hubs (buffered until a reader comes), exit and stdio.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use husk_core::ContainerConfig;
use husk_core::stdio::{Frame, read_frame, write_frame};
use tokio::sync::{mpsc, watch};

use crate::runtime::ContainerSetup;

use super::*;

/// Output not yet read by anyone is kept up to this many bytes (older output is dropped).
pub(super) const BUFFER_LIMIT: usize = 1 << 20;

/// A process's output and who reads it.
#[derive(Debug, Default)]
pub(super) struct Hub {
    pub(super) buffered: Vec<Frame>,
    pub(super) buffered_bytes: usize,
    pub(super) readers: Vec<mpsc::Sender<Frame>>,
    /// The last frame (Exit or Error), once the process ended; every later reader gets it.
    pub(super) end: Option<Frame>,
}

impl Hub {
    pub(super) fn publish(&mut self, frame: Frame) {
        self.readers.retain(|r| !r.is_closed());
        if matches!(frame, Frame::Exit(_) | Frame::Error(_)) {
            for r in self.readers.drain(..) {
                let _ = r.try_send(frame.clone());
            }
            self.end = Some(frame);
            return;
        }
        if self.readers.is_empty() {
            if let Frame::Stdout(b) | Frame::Stderr(b) = &frame {
                self.buffered_bytes += b.len();
            }
            self.buffered.push(frame);
            while self.buffered_bytes > BUFFER_LIMIT && !self.buffered.is_empty() {
                if let Frame::Stdout(b) | Frame::Stderr(b) = self.buffered.remove(0) {
                    self.buffered_bytes -= b.len();
                }
            }
            return;
        }
        for r in &self.readers {
            // A reader that cannot keep up loses frames rather than stalling the process.
            let _ = r.try_send(frame.clone());
        }
    }

    pub(super) fn subscribe(&mut self) -> mpsc::Receiver<Frame> {
        let (tx, rx) = mpsc::channel(1024 + self.buffered.len());
        for f in self.buffered.drain(..) {
            let _ = tx.try_send(f);
        }
        self.buffered_bytes = 0;
        match &self.end {
            Some(end) => {
                let _ = tx.try_send(end.clone());
            }
            None => self.readers.push(tx),
        }
        rx
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ExitInfo {
    pub(super) code: i32,
    pub(super) at_ns: i64,
    pub(super) oom_killed: bool,
}

/// One process (main or exec) of a container.
#[derive(Debug)]
pub(super) struct Proc {
    pub(super) tty: bool,
    pub(super) pid: Mutex<i32>,
    pub(super) hub: Mutex<Hub>,
    /// Frames for the process (stdin, end of input, terminal size), sent on its shim connection.
    pub(super) input: Mutex<Option<mpsc::UnboundedSender<Frame>>>,
    pub(super) exit: watch::Sender<Option<ExitInfo>>,
}

impl Proc {
    pub(super) fn new(tty: bool) -> Arc<Proc> {
        Arc::new(Proc {
            tty,
            pid: Mutex::new(0),
            hub: Mutex::new(Hub::default()),
            input: Mutex::new(None),
            exit: watch::channel(None).0,
        })
    }

    pub(super) fn pid(&self) -> i32 {
        *lock(&self.pid)
    }

    pub(super) fn running(&self) -> bool {
        self.pid() > 0 && self.exit.borrow().is_none()
    }

    /// Sends a frame to the process; false when it has no input any more.
    pub(super) fn send(&self, frame: Frame) -> bool {
        lock(&self.input)
            .as_ref()
            .is_some_and(|tx| tx.send(frame).is_ok())
    }

    /// Records the end of the process: no more input, the exit frame last, then the exit for waiters.
    pub(super) fn finish(&self, code: i32, oom_killed: bool) {
        *lock(&self.input) = None;
        let at_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        lock(&self.hub).publish(Frame::Exit(code));
        self.exit.send_replace(Some(ExitInfo {
            code,
            at_ns,
            oom_killed,
        }));
    }

    /// Takes over a shim connection that carries the process's stdio: frames from [`Proc::send`] go out on it,
    /// output frames go to the hub. The task ends with the stream and yields the exit code, when one came.
    pub(super) fn connect(
        self: &Arc<Proc>,
        conn: tokio::io::BufReader<tokio::net::UnixStream>,
    ) -> tokio::task::JoinHandle<Option<i32>> {
        let (mut r, mut w) = tokio::io::split(conn);
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        *lock(&self.input) = Some(tx);
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let last = f == Frame::CloseStdin;
                if write_frame(&mut w, &f).await.is_err() {
                    break;
                }
                if last {
                    // The shim closes the process's stdin when its client's input ends (as the daemon's does).
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                    break;
                }
            }
        });
        let p = self.clone();
        tokio::spawn(async move {
            loop {
                match read_frame(&mut r).await {
                    Ok(Some(Frame::Exit(code))) => return Some(code),
                    Ok(Some(f @ (Frame::Stdout(_) | Frame::Stderr(_)))) => lock(&p.hub).publish(f),
                    Ok(Some(Frame::Error(msg))) => {
                        lock(&p.hub)
                            .publish(Frame::Stderr(format!("husk-agent: {msg}\n").into_bytes()));
                        return None;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return None,
                }
            }
        })
    }
}

#[derive(Debug)]
pub(super) struct Container {
    pub(super) setup: ContainerSetup,
    pub(super) config: ContainerConfig,
    /// Its memory, CPU and PIDs limits: the configuration's until an `update_limits` changes them.
    pub(super) limits: Mutex<husk_core::Resources>,
    pub(super) main: Mutex<Arc<Proc>>,
    pub(super) execs: Mutex<HashMap<String, Arc<Proc>>>,
    pub(super) paused: Mutex<bool>,
}
