//! Container logs: JSON lines (`{"time", "stream", "text"}`), written by the shim, read by the daemon.
//!
//! One line of output is one entry; a line longer than [`MAX_ENTRY`] is split, and a last line without a newline
//! is written when its stream ends. Reading supports `--tail`, `--since`/`--until` and following.
//!
//! With [`LogLimits`] the log is rotated as Docker's `json-file` driver does: before a line would take the file
//! past `max_size_bytes`, `log.(n-2)` becomes `log.(n-1)` (the oldest is dropped), …, `log` becomes `log.1`, and
//! a new `log` is started; with one file, a new empty `log` replaces the old one. Readers go through the files
//! oldest first and follow a file by what they hold open, not by its name: when the file they read has been
//! renamed away they finish it, then go on with the file that came after it, so a follower sees every line once
//! (unless it falls so far behind that the files it has not read yet were dropped). The writer never waits
//! for a reader.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use husk_core::{Error, LogEntry, LogLimits, LogOptions, OutputStream, Result};

/// The CRI log writer (kubelet's format), shared with the drivers that write CRI logs from the daemon.
pub use husk_core::cri_log::CriLog;

/// The longest text of one entry; longer lines are split into several entries (as Docker does at 16 KiB).
pub const MAX_ENTRY: usize = 16 * 1024;

/// How often a follower looks for new lines at most when none come (sooner while they do).
const FOLLOW_POLL: Duration = Duration::from_millis(25);

/// How long a reader waits for a rotation in progress to finish (the next file to appear) between looks.
const ROTATION_POLL: Duration = Duration::from_millis(2);

/// How many times a reader that does not follow looks for the next file of a rotation in progress.
const ROTATION_TRIES: u32 = 500;

/// The most entries one read returns, so a reader far behind holds a bounded batch at once.
const BATCH: usize = 4096;

/// The name of file `k` of the log at `path`: `path` itself for 0 (the current one), `path.k` for older ones.
pub fn rotated_path(path: &Path, k: u32) -> PathBuf {
    if k == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// Appends entries to a container's log file (and to a [`CriLog`] when kubelet asked for one), rotating it
/// within its [`LogLimits`].
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    /// The current file's size, counted here: writes never stat the file.
    size: u64,
    limits: LogLimits,
    partial: [Vec<u8>; 2],
    cri: Option<CriLog>,
}

fn output_stream(index: usize) -> OutputStream {
    if index == 0 {
        OutputStream::Stdout
    } else {
        OutputStream::Stderr
    }
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("open log {}", path.display()), e))
}

impl LogWriter {
    /// Opens (creating) the log at `path` for appending, never rotated.
    pub fn open(path: &Path) -> Result<LogWriter> {
        LogWriter::open_limited(path, LogLimits::default())
    }

    /// Opens (creating) the log at `path` for appending, rotated within `limits`. Only a regular file is
    /// rotated (a log sent to `/dev/null` is left alone).
    pub fn open_limited(path: &Path, limits: LogLimits) -> Result<LogWriter> {
        let file = open_append(path)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("stat log {}", path.display()), e))?;
        let limits = if meta.is_file() {
            limits
        } else {
            LogLimits::default()
        };
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size: meta.len(),
            limits,
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

    /// Starts a new current file: the older ones move up one name (the oldest is overwritten, so dropped) and
    /// the current one becomes `path.1`; with one file a new empty file replaces it. Renames go oldest first,
    /// so while a file keeps its name the name below it holds the file written after it (readers rely on
    /// this).
    fn rotate(&mut self) -> Result<()> {
        let files = self.limits.files();
        if files > 1 {
            for k in (1..files - 1).rev() {
                match std::fs::rename(rotated_path(&self.path, k), rotated_path(&self.path, k + 1))
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("rotate log", e)),
                }
            }
            std::fs::rename(&self.path, rotated_path(&self.path, 1))
                .map_err(|e| Error::io("rotate log", e))?;
            self.file = open_append(&self.path)?;
        } else {
            let mut fresh = self.path.as_os_str().to_os_string();
            fresh.push(".new");
            let fresh = PathBuf::from(fresh);
            let file = open_append(&fresh)?;
            file.set_len(0).map_err(|e| Error::io("rotate log", e))?;
            std::fs::rename(&fresh, &self.path).map_err(|e| Error::io("rotate log", e))?;
            self.file = file;
        }
        self.size = 0;
        Ok(())
    }

    fn append(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        if let Some(max) = self.limits.max_size_bytes
            && self.size > 0
            && self.size + len > max
            && let Err(e) = self.rotate()
        {
            // Keep the bound even so: start the current file over.
            tracing::warn!("{e}");
            if self.file.set_len(0).is_ok() {
                self.size = 0;
            }
        }
        // A full disk must not stop the container; the output still reaches attached clients.
        if self.file.write_all(line).is_ok() {
            self.size += len;
        }
    }

    fn emit(&mut self, stream: usize, bytes: &[u8]) {
        let time = husk_core::Timestamp::now();
        if let Some(cri) = &mut self.cri {
            cri.write_at(&time.to_string(), output_stream(stream).as_str(), bytes);
        }
        let entry = LogEntry {
            time,
            stream: output_stream(stream),
            text: String::from_utf8_lossy(bytes).into_owned(),
        };
        if let Ok(mut line) = serde_json::to_vec(&entry) {
            line.push(b'\n');
            self.append(&line);
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

fn wanted(entry: &LogEntry, options: &LogOptions) -> bool {
    let t = entry.time.unix_nanos();
    options.since_nanos.is_none_or(|s| t >= s) && options.until_nanos.is_none_or(|u| t < u)
}

/// A file's identity while it is open: device and inode.
type FileId = (u64, u64);

fn id_of_path(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// The file a [`LogCursor`] reads.
#[derive(Debug)]
struct OpenFile {
    reader: BufReader<File>,
    id: FileId,
    /// A line read only in part (its writer has not finished it yet).
    pending: Vec<u8>,
}

impl OpenFile {
    fn new(file: File) -> Result<OpenFile> {
        let meta = file.metadata().map_err(|e| Error::io("stat log", e))?;
        Ok(OpenFile {
            reader: BufReader::new(file),
            id: (meta.dev(), meta.ino()),
            pending: Vec::new(),
        })
    }

    /// Reads the complete lines written since the last read (at most [`BATCH`] entries).
    fn read(&mut self, out: &mut Vec<LogEntry>) -> Result<usize> {
        let mut lines = 0;
        while lines < BATCH {
            let n = self
                .reader
                .read_until(b'\n', &mut self.pending)
                .map_err(|e| Error::io("read log", e))?;
            if n == 0 || self.pending.last() != Some(&b'\n') {
                break; // a line still being written is read next time
            }
            lines += 1;
            if let Ok(entry) = serde_json::from_slice::<LogEntry>(&self.pending) {
                out.push(entry);
            }
            self.pending.clear();
        }
        Ok(lines)
    }
}

/// What one [`LogCursor::step`] found.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Lines were read (possibly none the options select).
    Read(Vec<LogEntry>),
    /// Everything written so far has been read.
    AtEnd,
    /// The file read so far was rotated away and the next one is not there yet (a rotation in progress).
    Rotating,
}

/// A reader of a container's log across its rotated files: oldest first, each line once, following the files
/// it reads through renames (see the module's documentation).
#[derive(Debug)]
pub struct LogCursor {
    path: PathBuf,
    files: u32,
    current: Option<OpenFile>,
}

impl LogCursor {
    /// A cursor at the start of the oldest file of the log at `path`, which spans up to `files` files
    /// ([`LogLimits::files`]).
    pub fn new(path: PathBuf, files: u32) -> LogCursor {
        LogCursor {
            path,
            files: files.max(1),
            current: None,
        }
    }

    fn open_oldest(&self) -> Result<Option<OpenFile>> {
        for k in (0..self.files).rev() {
            match File::open(rotated_path(&self.path, k)) {
                Ok(f) => return OpenFile::new(f).map(Some),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("open log {}", self.path.display()), e)),
            }
        }
        Ok(None)
    }

    /// The file written after the one with `id` (which is no longer the current one), if it is there yet.
    fn successor(&self, open: &OpenFile) -> Result<Option<OpenFile>> {
        for k in 1..self.files {
            let name = rotated_path(&self.path, k);
            if id_of_path(&name) != Some(open.id) {
                continue;
            }
            let Ok(next) = File::open(rotated_path(&self.path, k - 1)) else {
                return Ok(None);
            };
            // Still under the same name after the next one was opened: that one was the file after it.
            return if id_of_path(&name) == Some(open.id) {
                OpenFile::new(next).map(Some)
            } else {
                Ok(None)
            };
        }
        let links = open
            .reader
            .get_ref()
            .metadata()
            .map_err(|e| Error::io("stat log", e))?
            .nlink();
        if links == 0 {
            // Dropped (with one file: replaced); what comes next is the oldest file there is.
            self.open_oldest()
        } else {
            Ok(None) // it moved while the names were looked at
        }
    }

    /// Reads what is there to read next.
    pub fn step(&mut self) -> Result<Step> {
        let mut out = Vec::new();
        loop {
            let current = match &mut self.current {
                Some(c) => c,
                None => match self.open_oldest()? {
                    Some(c) => self.current.insert(c),
                    None => return Ok(Step::AtEnd),
                },
            };
            if current.read(&mut out)? > 0 {
                return Ok(Step::Read(out));
            }
            if id_of_path(&self.path) == Some(current.id) {
                return Ok(Step::AtEnd);
            }
            // Rotated away: whatever was written to it before the rename is read first.
            if current.read(&mut out)? > 0 {
                return Ok(Step::Read(out));
            }
            let Some(current) = &self.current else {
                return Ok(Step::AtEnd);
            };
            match self.successor(current)? {
                Some(next) => self.current = Some(next),
                None => return Ok(Step::Rotating),
            }
        }
    }
}

/// Reads the entries of the log at `path` (spanning up to `files` files) that `options` selects, without
/// following; returns them and the cursor at the end, for a follower to continue from.
pub fn read_entries(
    path: &Path,
    files: u32,
    options: &LogOptions,
) -> Result<(Vec<LogEntry>, LogCursor)> {
    let mut cursor = LogCursor::new(path.to_path_buf(), files);
    let mut entries = VecDeque::new();
    let mut tries = 0;
    loop {
        match cursor.step()? {
            Step::Read(batch) => {
                for entry in batch {
                    if wanted(&entry, options) {
                        entries.push_back(entry);
                        if options.tail.is_some_and(|n| entries.len() > n) {
                            entries.pop_front();
                        }
                    }
                }
            }
            Step::AtEnd => break,
            Step::Rotating if tries < ROTATION_TRIES => {
                tries += 1;
                std::thread::sleep(ROTATION_POLL);
            }
            Step::Rotating => break,
        }
    }
    Ok((entries.into(), cursor))
}

/// A stream of log entries of the log at `path` (spanning up to `files` files): the selected ones, then (when
/// following) new ones as they are written until `running()` says the writer is gone and the log has been read
/// to its end.
pub fn stream(
    path: PathBuf,
    files: u32,
    options: LogOptions,
    running: impl Fn() -> bool + Send + Sync + 'static,
) -> husk_core::LogStream {
    enum State {
        Start,
        Following(LogCursor, Duration),
        Done,
    }
    let running: Arc<dyn Fn() -> bool + Send + Sync> = Arc::new(running);
    let init = (State::Start, VecDeque::new(), path, options, running);
    Box::pin(futures::stream::unfold(
        init,
        move |(mut state, mut queue, path, options, running)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((Ok(e), (state, queue, path, options, running)));
                }
                match state {
                    State::Done => return None,
                    State::Start => match read_entries(&path, files, &options) {
                        Ok((entries, cursor)) => {
                            queue.extend(entries);
                            state = if options.follow {
                                State::Following(cursor, ROTATION_POLL)
                            } else {
                                State::Done
                            };
                        }
                        Err(e) => {
                            return Some((Err(e), (State::Done, queue, path, options, running)));
                        }
                    },
                    State::Following(mut cursor, mut idle) => {
                        // Ask before reading, so whatever was written before the writer went away is still read.
                        let alive = running();
                        match cursor.step() {
                            Ok(Step::Read(entries)) => {
                                idle = ROTATION_POLL;
                                queue.extend(entries.into_iter().filter(|e| wanted(e, &options)));
                            }
                            Ok(Step::AtEnd) if alive => {
                                // Soon again while lines come (the files this one is rotated to are dropped in
                                // time), less often while none do.
                                tokio::time::sleep(idle).await;
                                idle = (idle * 2).min(FOLLOW_POLL);
                            }
                            Ok(Step::Rotating) if alive => tokio::time::sleep(ROTATION_POLL).await,
                            Ok(_) => return None,
                            Err(e) => {
                                return Some((
                                    Err(e),
                                    (State::Done, queue, path, options, running),
                                ));
                            }
                        }
                        state = State::Following(cursor, idle);
                    }
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests;
