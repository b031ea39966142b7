//! The CRI log of the driver's containers (`ContainerConfig::cri_log_path`): the engine keeps a container's
//! output in its own log, so the daemon follows that log (with the engine's timestamps) and appends each line
//! to the CRI log, from when the container starts until its output ends.
//!
//! A follower that starts again (a daemon restart, the container started again) resumes after the last line
//! already written: the CRI log's last line, or, when kubelet rotated the file since and the new one has no line
//! yet, the point recorded at the rotation (`<state_dir>/cri-logs/<container id>`). The engine's `since` takes
//! whole seconds, so the follower asks from the second of that line and skips the lines it already wrote (see
//! [`Resume`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use husk_core::cri_log::{CriLog, Resume, Stamp, last_stamp};
use husk_core::{Error, Result};
use tokio::task::JoinHandle;

use crate::client::status;
use crate::logs;

/// How long a new follower of a container waits for the previous one to write what it still reads.
const HANDOVER: Duration = Duration::from_secs(5);
/// How long a follower whose stream broke waits before asking the engine again.
const RETRY: Duration = Duration::from_secs(1);

const NANOS: i64 = 1_000_000_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One container's CRI log and where it ends, shared by its followers and [`CriLogs::reopen`].
#[derive(Debug)]
struct Sink {
    log: CriLog,
    /// The last line written by this daemon.
    last: Option<Stamp>,
    /// Where the resume point is recorded at a rotation, when the driver has a state directory.
    mark: Option<PathBuf>,
}

impl Sink {
    fn write(&mut self, line: &logs::Stamped) {
        self.log.write_at(
            &line.time.map(|t| t.to_string()).unwrap_or_default(),
            line.stream.as_str(),
            &line.bytes,
        );
        self.last = Some(Stamp::after(self.last, line.nanos()));
    }

    /// Where a follower starting now resumes: after what this daemon wrote, else after the file's last line
    /// or the point recorded at the last rotation, whichever is later.
    fn resume_point(&self) -> Option<Stamp> {
        if self.last.is_some() {
            return self.last;
        }
        let in_file = last_stamp(self.log.path()).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        });
        let marked = self
            .mark
            .as_ref()
            .and_then(|m| std::fs::read_to_string(m).ok())
            .and_then(|t| Stamp::parse(&t));
        Stamp::latest(in_file, marked)
    }

    /// Opens the file again (kubelet renamed it), recording first where the renamed one ends.
    fn reopen(&mut self) -> Result<()> {
        let end = self.resume_point();
        if let (Some(mark), Some(end)) = (&self.mark, end) {
            if let Some(dir) = mark.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            }
            std::fs::write(mark, end.format())
                .map_err(|e| Error::io(format!("write {}", mark.display()), e))?;
        }
        self.last = end;
        self.log.reopen()
    }
}

#[derive(Debug)]
struct Follower {
    sink: Arc<Mutex<Sink>>,
    task: JoinHandle<()>,
}

/// The CRI log followers of a driver's containers, by husk container ID.
#[derive(Debug)]
pub(crate) struct CriLogs {
    state_dir: Option<PathBuf>,
    followers: Mutex<HashMap<String, Follower>>,
}

impl CriLogs {
    /// Followers whose rotation points are kept under `state_dir` (none kept without one).
    pub(crate) fn new(state_dir: Option<PathBuf>) -> CriLogs {
        CriLogs {
            state_dir,
            followers: Mutex::new(HashMap::new()),
        }
    }

    fn mark(&self, container_id: &str) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|d| d.join("cri-logs").join(container_id))
    }

    /// Follows engine container `engine_id`'s log into the CRI log at `path` for husk container
    /// `container_id`. With `again` (the container was just started) a follower always starts, after the
    /// previous one has written what it still reads; without it (the daemon found the container after a
    /// restart) only when this daemon has followed none yet.
    pub(crate) fn follow(
        &self,
        docker: &Docker,
        container_id: &str,
        engine_id: &str,
        path: &Path,
        again: bool,
    ) -> Result<()> {
        let mut followers = lock(&self.followers);
        let (sink, previous) = match followers.remove(container_id) {
            Some(f) if !again => {
                followers.insert(container_id.to_string(), f);
                return Ok(());
            }
            Some(f) => (f.sink, Some(f.task)),
            None => {
                let sink = Sink {
                    log: CriLog::open(path)?,
                    last: None,
                    mark: self.mark(container_id),
                };
                (Arc::new(Mutex::new(sink)), None)
            }
        };
        let task = tokio::spawn(follow(
            docker.clone(),
            engine_id.to_string(),
            sink.clone(),
            previous,
        ));
        followers.insert(container_id.to_string(), Follower { sink, task });
        Ok(())
    }

    /// Opens the container's CRI log again (kubelet's ReopenContainerLog after it renamed the file).
    pub(crate) fn reopen(&self, container_id: &str) -> Result<()> {
        let sink = lock(&self.followers)
            .get(container_id)
            .map(|f| f.sink.clone())
            .ok_or_else(|| {
                Error::conflict(format!(
                    "container {container_id} has no CRI log follower in this daemon"
                ))
            })?;
        lock(&sink).reopen()
    }

    /// Stops following the container (it is being removed) and forgets its rotation point.
    pub(crate) fn forget(&self, container_id: &str) {
        if let Some(f) = lock(&self.followers).remove(container_id) {
            f.task.abort();
        }
        if let Some(mark) = self.mark(container_id) {
            let _ = std::fs::remove_file(mark);
        }
    }
}

impl Drop for CriLogs {
    fn drop(&mut self) {
        for (_, f) in lock(&self.followers).drain() {
            f.task.abort();
        }
    }
}

/// The engine's query for a follower resuming after `after` (`follow`: and waiting for more).
fn query(after: Option<Stamp>, follow: bool) -> LogsOptions {
    let since = after.map_or(0, |s| s.nanos.div_euclid(NANOS));
    LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        since: since.clamp(0, i64::from(i32::MAX)) as i32,
        until: 0,
        timestamps: true,
        tail: "all".to_string(),
    }
}

/// Copies the engine's log of `engine_id` into the sink until the engine ends it (the container stopped, or was
/// removed). A stream that breaks while the container runs is asked for again, from the last line written.
async fn follow(
    docker: Docker,
    engine_id: String,
    sink: Arc<Mutex<Sink>>,
    previous: Option<JoinHandle<()>>,
) {
    if let Some(mut previous) = previous
        && tokio::time::timeout(HANDOVER, &mut previous).await.is_err()
    {
        previous.abort();
    }
    loop {
        let Err(e) = copy(&docker, &engine_id, &sink, true).await else {
            // The engine ends a follow when the container stops, and may end it before its last line when
            // that line has no newline (the engine writes it at the exit): what the log holds now is read
            // once more, without following.
            if let Err(e) = copy(&docker, &engine_id, &sink, false).await
                && status(&e) != Some(404)
            {
                tracing::warn!(
                    engine_id = %engine_id,
                    "reading the engine's log after the container stopped: {e}; the CRI log may miss its last line"
                );
            }
            return;
        };
        if status(&e) == Some(404) {
            return;
        }
        tokio::time::sleep(RETRY).await;
        let running = match docker.inspect_container(&engine_id, None).await {
            Ok(i) => i.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        };
        if !running {
            tracing::warn!(
                engine_id = %engine_id,
                "the engine's log stream broke ({e}); the CRI log may miss the container's last lines"
            );
            return;
        }
        tracing::info!(
            engine_id = %engine_id,
            "the engine's log stream broke ({e}); following it again"
        );
    }
}

/// Copies the lines of the engine's log of `engine_id` after the sink's resume point into the sink, until the
/// engine ends the stream (`follow`: the container stopped; else: the log's end now).
async fn copy(
    docker: &Docker,
    engine_id: &str,
    sink: &Mutex<Sink>,
    follow: bool,
) -> std::result::Result<(), bollard::errors::Error> {
    let after = lock(sink).resume_point();
    let mut resume = Resume::new(after);
    let mut stream = Box::pin(docker.logs(engine_id, Some(query(after, follow))));
    while let Some(item) = stream.next().await {
        let Some(line) = logs::stamped(item?) else {
            continue;
        };
        if !resume.skip(line.nanos()) {
            lock(sink).write(&line);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(nanos: i64, text: &'static [u8]) -> logs::Stamped {
        logs::Stamped {
            stream: husk_core::OutputStream::Stdout,
            time: Some(husk_core::Timestamp::from_unix_nanos(nanos)),
            bytes: bytes::Bytes::from_static(text),
        }
    }

    #[test]
    fn a_rotation_records_where_the_renamed_file_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/0.log");
        let mark = dir.path().join("state/cri-logs/c1");
        let new_sink = || Sink {
            log: CriLog::open(&path).unwrap(),
            last: None,
            mark: Some(mark.clone()),
        };
        let mut sink = new_sink();
        assert_eq!(sink.resume_point(), None);
        sink.write(&stamped(5 * NANOS, b"a\n"));
        sink.write(&stamped(5 * NANOS, b"b\n"));
        sink.write(&stamped(6 * NANOS + 1, b"c"));
        let end = Stamp {
            nanos: 6 * NANOS + 1,
            count: 1,
        };
        assert_eq!(sink.resume_point(), Some(end));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("1970-01-01T00:00:05.000000000Z stdout F a\n"),
            "{text}"
        );
        assert!(text.ends_with(" stdout P c\n"), "{text}");

        // A new daemon finds the end in the file.
        assert_eq!(new_sink().resume_point(), Some(end));

        // kubelet renames the file and asks for a reopen: the new file is empty, the point is recorded.
        std::fs::rename(&path, dir.path().join("pod/0.log.1")).unwrap();
        sink.reopen().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(
            Stamp::parse(&std::fs::read_to_string(&mark).unwrap()),
            Some(end)
        );
        // A daemon started now resumes after the renamed file's end, not from the start.
        assert_eq!(new_sink().resume_point(), Some(end));
        let mut again = new_sink();
        again.write(&stamped(7 * NANOS, b"d\n"));
        assert_eq!(
            new_sink().resume_point(),
            Some(Stamp {
                nanos: 7 * NANOS,
                count: 1
            })
        );
    }

    #[test]
    fn the_query_asks_from_the_second_of_the_resume_point() {
        let q = query(
            Some(Stamp {
                nanos: 12 * NANOS + 999,
                count: 1,
            }),
            true,
        );
        assert_eq!(q.since, 12);
        assert!(q.follow && q.timestamps && q.stdout && q.stderr && q.tail == "all");
        assert_eq!(query(None, false).since, 0);
        assert!(!query(None, false).follow);
    }
}
