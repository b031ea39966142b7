//! The container log kubelet reads (the CRI's format): one line per entry, `<time> <stream> <tag> <text>`, the
//! time in RFC 3339 with nanoseconds, the stream `stdout` or `stderr`, the tag `F` for a full line and `P` for
//! part of one (a line split because it was too long, or a last line without its newline), the text without its
//! newline. Every driver that writes a CRI log ([`crate::ContainerConfig::cri_log_path`]) writes it with
//! [`CriLog`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A CRI log file open for appending.
#[derive(Debug)]
pub struct CriLog {
    path: PathBuf,
    file: File,
}

impl CriLog {
    /// Opens (creating it and its directory) the CRI log at `path` for appending: what it holds stays.
    pub fn open(path: &Path) -> Result<CriLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("open CRI log {}", path.display()), e))?;
        Ok(CriLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file again by its path (kubelet renamed it to rotate it: the next lines go to a new file).
    pub fn reopen(&mut self) -> Result<()> {
        *self = CriLog::open(&self.path)?;
        Ok(())
    }

    /// The line for one entry of `stream` whose text is `bytes` (a trailing newline makes it a full line).
    pub fn line(time: &str, stream: &str, bytes: &[u8]) -> Vec<u8> {
        let (text, tag) = match bytes.strip_suffix(b"\n") {
            Some(text) => (text, "F"),
            None => (bytes, "P"),
        };
        let mut line = format!("{time} {stream} {tag} ").into_bytes();
        line.extend_from_slice(text);
        line.push(b'\n');
        line
    }

    /// Appends the line of one entry of `stream` (`stdout` or `stderr`) written now.
    pub fn write(&mut self, stream: &str, bytes: &[u8]) {
        self.write_at(&crate::Timestamp::now().to_string(), stream, bytes);
    }

    /// Appends the line of one entry of `stream` written at `time` (RFC 3339 with nanoseconds).
    pub fn write_at(&mut self, time: &str, stream: &str, bytes: &[u8]) {
        // A full disk must not stop the container (nor the reader of its output).
        let _ = self.file.write_all(&CriLog::line(time, stream, bytes));
    }
}

/// Where a CRI log ends: the time of its last line (Unix nanoseconds) and how many lines at its end have that
/// very time. A reader of a container's output that resumes after it skips exactly those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The last line's time, in nanoseconds since the Unix epoch.
    pub nanos: i64,
    /// How many lines at the end were written at `nanos` (at least 1).
    pub count: usize,
}

impl Stamp {
    /// The stamp after one more line written at `nanos`.
    pub fn after(previous: Option<Stamp>, nanos: i64) -> Stamp {
        match previous {
            Some(s) if s.nanos == nanos => Stamp {
                nanos,
                count: s.count + 1,
            },
            _ => Stamp { nanos, count: 1 },
        }
    }

    /// The later of two stamps.
    pub fn latest(a: Option<Stamp>, b: Option<Stamp>) -> Option<Stamp> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.nanos > a.nanos { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// `nanos count`, as [`Stamp::parse`] reads it.
    pub fn format(&self) -> String {
        format!("{} {}", self.nanos, self.count)
    }

    /// Reads what [`Stamp::format`] wrote.
    pub fn parse(text: &str) -> Option<Stamp> {
        let mut parts = text.split_whitespace();
        let nanos = parts.next()?.parse().ok()?;
        let count = parts.next()?.parse().ok().filter(|c| *c > 0)?;
        Some(Stamp { nanos, count })
    }
}

/// Decides which entries of a container's output a resumed reader writes: those after `resume`, given in the
/// order they were written. Entries stamped before it are skipped, and so are the first `count` entries
/// stamped at its very nanosecond (they are the lines already written).
#[derive(Debug, Clone)]
pub struct Resume {
    after: Option<Stamp>,
    seen_at: usize,
}

impl Resume {
    /// Resumes after `after` (`None`: from the first entry).
    pub fn new(after: Option<Stamp>) -> Resume {
        Resume { after, seen_at: 0 }
    }

    /// Whether the entry stamped `nanos` was written already.
    pub fn skip(&mut self, nanos: i64) -> bool {
        let Some(after) = self.after else {
            return false;
        };
        if nanos < after.nanos {
            return true;
        }
        if nanos == after.nanos && self.seen_at < after.count {
            self.seen_at += 1;
            return true;
        }
        false
    }
}

fn line_nanos(line: &[u8]) -> Option<i64> {
    let time = line.split(|b| *b == b' ').next()?;
    let time = std::str::from_utf8(time).ok()?;
    crate::Timestamp::parse(time)
        .ok()
        .map(crate::Timestamp::unix_nanos)
}

/// The [`Stamp`] of the CRI log at `path`: `None` when it is missing or holds no complete line. Reads the file
/// backwards, only as far as needed.
pub fn last_stamp(path: &Path) -> Result<Option<Stamp>> {
    const BLOCK: u64 = 64 * 1024;
    let what = || format!("read CRI log {}", path.display());
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(what(), e)),
    };
    let len = file.metadata().map_err(|e| Error::io(what(), e))?.len();
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let step = BLOCK.min(start);
        start -= step;
        let mut block = vec![0; step as usize];
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut block))
            .map_err(|e| Error::io(what(), e))?;
        block.extend_from_slice(&tail);
        tail = block;
        // Whole lines only: the first one may be cut by the block's start, the last one may be torn.
        let end = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let first = if start == 0 {
            0
        } else {
            tail.iter()
                .position(|b| *b == b'\n')
                .map_or(end, |i| i + 1)
                .min(end)
        };
        let mut stamp: Option<Stamp> = None;
        let mut bounded = false;
        for line in tail[first..end].rsplit(|b| *b == b'\n').skip(1) {
            let Some(nanos) = line_nanos(line) else {
                continue;
            };
            match stamp {
                None => stamp = Some(Stamp { nanos, count: 1 }),
                Some(ref mut s) if s.nanos == nanos => s.count += 1,
                Some(_) => {
                    bounded = true;
                    break;
                }
            }
        }
        if bounded || start == 0 {
            return Ok(stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-02T03:04:05.000000001Z";
    const T2: &str = "2026-01-02T03:04:05.000000002Z";

    fn nanos(t: &str) -> i64 {
        crate::Timestamp::parse(t).unwrap().unix_nanos()
    }

    #[test]
    fn lines_are_full_or_partial() {
        assert_eq!(
            CriLog::line(T1, "stdout", b"hi\n"),
            format!("{T1} stdout F hi\n").into_bytes()
        );
        assert_eq!(
            CriLog::line(T1, "stderr", b"hal"),
            format!("{T1} stderr P hal\n").into_bytes()
        );
        assert_eq!(
            CriLog::line(T1, "stdout", b"\n"),
            format!("{T1} stdout F \n").into_bytes()
        );
    }

    #[test]
    fn the_last_stamp_counts_the_lines_of_the_last_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/0.log");
        assert_eq!(last_stamp(&path).unwrap(), None);
        let mut log = CriLog::open(&path).unwrap();
        assert_eq!(last_stamp(&path).unwrap(), None);
        log.write_at(T1, "stdout", b"a\n");
        assert_eq!(
            last_stamp(&path).unwrap(),
            Some(Stamp {
                nanos: nanos(T1),
                count: 1
            })
        );
        log.write_at(T2, "stdout", b"b\n");
        log.write_at(T2, "stderr", b"c");
        assert_eq!(
            last_stamp(&path).unwrap(),
            Some(Stamp {
                nanos: nanos(T2),
                count: 2
            })
        );
        // A torn last line (a crash while writing) is not a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2027-01-01T00:00:00Z stdout F torn")
            .unwrap();
        assert_eq!(
            last_stamp(&path).unwrap(),
            Some(Stamp {
                nanos: nanos(T2),
                count: 2
            })
        );
    }

    #[test]
    fn the_last_stamp_of_a_long_log_is_found_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = CriLog::open(&path).unwrap();
        let long = vec![b'x'; 50_000];
        log.write_at(T1, "stdout", &long);
        for _ in 0..5 {
            log.write_at(T2, "stdout", &long);
        }
        assert_eq!(
            last_stamp(&path).unwrap(),
            Some(Stamp {
                nanos: nanos(T2),
                count: 5
            })
        );
        // Reopening appends: nothing is truncated.
        log.reopen().unwrap();
        log.write_at(T2, "stdout", b"more\n");
        assert_eq!(
            last_stamp(&path).unwrap(),
            Some(Stamp {
                nanos: nanos(T2),
                count: 6
            })
        );
    }

    #[test]
    fn a_resumed_reader_skips_exactly_what_was_written() {
        let mut r = Resume::new(Some(Stamp {
            nanos: 10,
            count: 2,
        }));
        let kept: Vec<i64> = [5, 9, 10, 10, 10, 11, 10]
            .into_iter()
            .filter(|n| !r.skip(*n))
            .collect();
        assert_eq!(kept, [10, 11, 10]);
        let mut all = Resume::new(None);
        assert!(!all.skip(0));
    }

    #[test]
    fn stamps_advance_compare_and_round_trip() {
        let s = Stamp::after(None, 7);
        assert_eq!(s, Stamp { nanos: 7, count: 1 });
        let s = Stamp::after(Some(s), 7);
        assert_eq!(s.count, 2);
        assert_eq!(Stamp::after(Some(s), 8), Stamp { nanos: 8, count: 1 });
        assert_eq!(Stamp::parse(&s.format()), Some(s));
        assert_eq!(Stamp::parse("7 0"), None);
        assert_eq!(Stamp::parse("x"), None);
        let later = Stamp { nanos: 9, count: 1 };
        assert_eq!(Stamp::latest(Some(s), Some(later)), Some(later));
        assert_eq!(Stamp::latest(Some(later), Some(s)), Some(later));
        assert_eq!(Stamp::latest(None, Some(s)), Some(s));
        assert_eq!(Stamp::latest(None, None), None);
    }
}
