//! Container logs: JSON lines (`{"time", "stream", "text"}`), written by the shim, read by the daemon.
//!
//! One line of output is one entry; a line longer than [`MAX_ENTRY`] is split, and a last line without a newline
//! is written when its stream ends. Reading supports `--tail`, `--since`/`--until` and following.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use husk_core::{Error, LogEntry, LogOptions, Result};

/// The CRI log writer (kubelet's format), shared with the drivers that write CRI logs from the daemon.
pub use husk_core::cri_log::CriLog;

/// The longest text of one entry; longer lines are split into several entries (as Docker does at 16 KiB).
pub const MAX_ENTRY: usize = 16 * 1024;

/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// Appends entries to a container's log file (and to a [`CriLog`] when kubelet asked for one).
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
    cri: Option<CriLog>,
}

fn stream_name(index: usize) -> &'static str {
    if index == 0 { "stdout" } else { "stderr" }
}

impl LogWriter {
    /// Opens (creating) the log at `path` for appending.
    pub fn open(path: &Path) -> Result<LogWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("open log {}", path.display()), e))?;
        Ok(LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
            cri: None,
        })
    }

    /// Writes every entry to the CRI log at `path` too.
    pub fn also_cri(&mut self, path: &Path) -> Result<()> {
        self.cri = Some(CriLog::open(path)?);
        Ok(())
    }

    /// Whether entries go to a CRI log too.
    pub fn has_cri(&self) -> bool {
        self.cri.is_some()
    }

    /// Reopens the CRI log (kubelet's ReopenContainerLog); nothing without one.
    pub fn reopen_cri(&mut self) -> Result<()> {
        match &mut self.cri {
            Some(cri) => cri.reopen(),
            None => Ok(()),
        }
    }

    fn emit(&mut self, stream: usize, bytes: &[u8]) {
        if let Some(cri) = &mut self.cri {
            cri.write(stream_name(stream), bytes);
        }
        let entry = LogEntry {
            time: husk_core::now_rfc3339(),
            stream: stream_name(stream).into(),
            text: String::from_utf8_lossy(bytes).into_owned(),
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            // A full disk must not stop the container; the output still reaches attached clients.
            let _ = self.file.write_all(&line);
        }
    }

    /// Records output of `stream` (0 = stdout, 1 = stderr): complete lines at once, a partial line when it
    /// completes or grows past [`MAX_ENTRY`].
    pub fn write(&mut self, stream: usize, mut data: &[u8]) {
        let stream = stream.min(1);
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let (line, rest) = data.split_at(nl + 1);
            let mut pending = std::mem::take(&mut self.partial[stream]);
            pending.extend_from_slice(line);
            for chunk in pending.chunks(MAX_ENTRY) {
                self.emit(stream, chunk);
            }
            data = rest;
        }
        self.partial[stream].extend_from_slice(data);
        while self.partial[stream].len() >= MAX_ENTRY {
            let chunk: Vec<u8> = self.partial[stream].drain(..MAX_ENTRY).collect();
            self.emit(stream, &chunk);
        }
    }

    /// Writes what is left of a partial line of `stream`.
    pub fn flush_stream(&mut self, stream: usize) {
        let stream = stream.min(1);
        let pending = std::mem::take(&mut self.partial[stream]);
        if !pending.is_empty() {
            self.emit(stream, &pending);
        }
    }
}

fn entry_nanos(entry: &LogEntry) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&entry.time)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or(0)
}

fn wanted(entry: &LogEntry, options: &LogOptions) -> bool {
    let t = entry_nanos(entry);
    options.since_nanos.is_none_or(|s| t >= s) && options.until_nanos.is_none_or(|u| t < u)
}

/// Reads the entries of the log at `path` that `options` selects (without following); returns them and the
/// file offset reached, for a follower to continue from.
pub fn read_entries(path: &Path, options: &LogOptions) -> Result<(Vec<LogEntry>, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(Error::io(format!("open log {}", path.display()), e)),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::io("read log", e))?;
        if n == 0 || !line.ends_with('\n') {
            break; // a line still being written is read next time
        }
        offset += n as u64;
        if let Ok(entry) = serde_json::from_str::<LogEntry>(&line)
            && wanted(&entry, options)
        {
            entries.push(entry);
        }
    }
    if let Some(n) = options.tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    Ok((entries, offset))
}

/// Follows a log file from `offset`: returns the complete entries appended since, and the new offset.
pub fn read_from(path: &Path, offset: u64, options: &LogOptions) -> Result<(Vec<LogEntry>, u64)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(Error::io(format!("open log {}", path.display()), e)),
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io("seek log", e))?;
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut offset = offset;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| Error::io("read log", e))?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Ok(entry) = serde_json::from_str::<LogEntry>(&line)
            && wanted(&entry, options)
        {
            entries.push(entry);
        }
    }
    Ok((entries, offset))
}

/// A stream of log entries: the selected ones, then (when following) new ones as they are written until
/// `running()` says the writer is gone and the file has been read to its end.
pub fn stream(
    path: PathBuf,
    options: LogOptions,
    running: impl Fn() -> bool + Send + Sync + 'static,
) -> husk_core::LogStream {
    enum State {
        Start,
        Following(u64),
        Done,
    }
    let running: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(running);
    let init = (State::Start, VecDeque::new(), path, options, running);
    Box::pin(futures::stream::unfold(
        init,
        |(mut state, mut queue, path, options, running)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((Ok(e), (state, queue, path, options, running)));
                }
                match state {
                    State::Done => return None,
                    State::Start => match read_entries(&path, &options) {
                        Ok((entries, off)) => {
                            queue.extend(entries);
                            state = if options.follow {
                                State::Following(off)
                            } else {
                                State::Done
                            };
                        }
                        Err(e) => {
                            return Some((Err(e), (State::Done, queue, path, options, running)));
                        }
                    },
                    State::Following(off) => {
                        // Ask before reading, so whatever was written before the writer went away is still read.
                        let alive = running();
                        match read_from(&path, off, &options) {
                            Ok((entries, new_off)) => {
                                if entries.is_empty() && new_off == off {
                                    if !alive {
                                        return None;
                                    }
                                    tokio::time::sleep(FOLLOW_POLL).await;
                                }
                                queue.extend(entries);
                                state = State::Following(new_off);
                            }
                            Err(e) => {
                                return Some((
                                    Err(e),
                                    (State::Done, queue, path, options, running),
                                ));
                            }
                        }
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_cri_log_has_kubelets_format_and_reopens_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let cri = dir.path().join("pod/c.log");
        let mut w = LogWriter::open(&dir.path().join("log")).unwrap();
        w.also_cri(&cri).unwrap();
        w.write(0, b"hello\nhal");
        w.write(1, b"oops\n");
        w.flush_stream(0);
        let text = std::fs::read_to_string(&cri).unwrap();
        let lines: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let time = f.next().unwrap();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
                    "{time}"
                );
                (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("stdout", "F", "hello"),
                ("stderr", "F", "oops"),
                ("stdout", "P", "hal")
            ]
        );
        // kubelet renames the file and asks for a reopen: new lines go to a new file.
        std::fs::rename(&cri, dir.path().join("pod/c.log.1")).unwrap();
        w.reopen_cri().unwrap();
        w.write(0, b"after\n");
        let text = std::fs::read_to_string(&cri).unwrap();
        assert!(text.ends_with(" stdout F after\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn lines_partial_lines_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(0, b"one\ntw");
        w.write(0, b"o\nthree");
        w.write(1, b"err\n");
        w.write(0, &vec![b'x'; MAX_ENTRY + 10]);
        w.flush_stream(0);
        let (entries, _) = read_entries(&path, &LogOptions::default()).unwrap();
        let texts: Vec<(&str, usize)> = entries
            .iter()
            .map(|e| (e.stream.as_str(), e.text.len()))
            .collect();
        assert_eq!(entries[0].text, "one\n");
        assert_eq!(entries[1].text, "two\n");
        assert_eq!(entries[2].stream, "stderr");
        // "three" + 16 KiB of x: one full entry, then the rest.
        assert_eq!(texts[3], ("stdout", MAX_ENTRY));
        assert_eq!(texts[4].1, 5 + 10);
        let (tail, _) = read_entries(
            &path,
            &LogOptions {
                tail: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(tail.len(), 2);
        let future = LogOptions {
            since_nanos: Some(i64::MAX),
            ..Default::default()
        };
        assert!(read_entries(&path, &future).unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn follow_sees_new_lines_and_ends_when_writer_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write(0, b"a\n");
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let mut s = stream(
            path.clone(),
            LogOptions {
                follow: true,
                ..Default::default()
            },
            move || r.load(std::sync::atomic::Ordering::SeqCst),
        );
        assert_eq!(s.next().await.unwrap().unwrap().text, "a\n");
        w.write(1, b"b\n");
        assert_eq!(s.next().await.unwrap().unwrap().text, "b\n");
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(s.next().await.is_none());
    }
}
