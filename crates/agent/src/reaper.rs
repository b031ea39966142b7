//! The agent's one owner of child reaping.
//!
//! As PID 1 the agent inherits every orphan of the guest, so it must collect them all (`waitpid(-1)`), and it
//! must hand the exits of the processes it started to whoever waits for them. Nothing else in the agent may call
//! `waitpid`. A child can exit before its starter has registered it; such exits are kept until registration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

/// Dispatches child exits by PID.
#[derive(Debug, Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<i32, oneshot::Sender<i32>>,
    early: HashMap<i32, i32>,
}

impl Reaper {
    /// A reaper that collects children when SIGCHLD arrives (and every second, in case a signal was merged).
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper::default());
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                r.reap_all();
            }
        });
        Ok(reaper)
    }

    /// Runs `spawn` (which starts a child and returns its PID) with exits held back, and registers the PID, so
    /// an exit cannot be missed however fast the child is. Returns the PID and a receiver of its wait status.
    pub fn spawn<E>(
        &self,
        spawn: impl FnOnce() -> Result<i32, E>,
    ) -> Result<(i32, oneshot::Receiver<i32>), E> {
        let mut inner = self.lock();
        let pid = spawn()?;
        let (tx, rx) = oneshot::channel();
        match inner.early.remove(&pid) {
            Some(status) => {
                let _ = tx.send(status);
            }
            None => {
                inner.waiting.insert(pid, tx);
            }
        }
        Ok((pid, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Collects every exited child now.
    pub fn reap_all(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
            if pid <= 0 {
                return;
            }
            let mut inner = self.lock();
            match inner.waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(status);
                }
                None => {
                    // An orphan, or a child whose starter has not registered yet. Keep a bounded record.
                    if inner.early.len() > 4096 {
                        inner.early.clear();
                    }
                    inner.early.insert(pid, status);
                }
            }
        }
    }
}
