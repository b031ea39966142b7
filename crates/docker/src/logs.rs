//! The engine's container logs as husk log entries.
//!
//! The engine is always asked for timestamps; each chunk it sends is one line (`<RFC 3339 nanos> <text>`). The
//! engine's `since`/`until` take whole seconds, so they are rounded outwards and the exact nanosecond bounds are
//! applied here.

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;
use husk_core::{Error, LogEntry, LogOptions, LogStream, OutputStream, Timestamp};
use tracing::warn;

use crate::client::engine_error;

const NANOS: i64 = 1_000_000_000;

/// The engine's query for `options`.
pub(crate) fn query(options: &LogOptions) -> LogsOptions {
    let since = options
        .since_nanos
        .map(|n| n.div_euclid(NANOS))
        .unwrap_or(0);
    let until = options
        .until_nanos
        .map(|n| n.div_euclid(NANOS) + i64::from(n.rem_euclid(NANOS) != 0))
        .unwrap_or(0);
    LogsOptions {
        follow: options.follow,
        stdout: true,
        stderr: true,
        since: since.clamp(0, i64::from(i32::MAX)) as i32,
        until: until.clamp(0, i64::from(i32::MAX)) as i32,
        timestamps: true,
        tail: options
            .tail
            .map(|n| n.to_string())
            .unwrap_or_else(|| "all".to_string()),
    }
}

/// One chunk of the engine's log stream, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamped {
    /// The stream (a terminal's output is the standard output).
    pub stream: OutputStream,
    /// When the engine read it (None when it was not stamped).
    pub time: Option<Timestamp>,
    /// The output itself, with its newline if it had one.
    pub bytes: bytes::Bytes,
}

/// Splits a chunk of the engine's (timestamped) log stream; `None` for stdin echoes.
pub(crate) fn stamped(output: LogOutput) -> Option<Stamped> {
    let stream = match &output {
        LogOutput::StdErr { .. } => OutputStream::Stderr,
        LogOutput::StdOut { .. } | LogOutput::Console { .. } => OutputStream::Stdout,
        LogOutput::StdIn { .. } => return None,
    };
    let bytes = output.into_bytes();
    let space = bytes.iter().position(|b| *b == b' ');
    let stamp = space
        .and_then(|i| std::str::from_utf8(&bytes[..i]).ok())
        .and_then(|t| Timestamp::parse(t).ok());
    Some(match (stamp, space) {
        (Some(t), Some(i)) => Stamped {
            stream,
            time: Some(t),
            bytes: bytes.slice(i + 1..),
        },
        // Not stamped (should not happen when asking for timestamps): keep the line, timeless.
        _ => Stamped {
            stream,
            time: None,
            bytes,
        },
    })
}

impl Stamped {
    /// Its time in Unix nanoseconds (0 when it was not stamped).
    pub fn nanos(&self) -> i64 {
        self.time.map_or(0, Timestamp::unix_nanos)
    }
}

/// One chunk of the engine's log stream as an entry with its time in nanoseconds; `None` for stdin echoes.
pub(crate) fn entry(output: LogOutput) -> Option<(i64, LogEntry)> {
    let s = stamped(output)?;
    Some((
        s.nanos(),
        LogEntry {
            // A line without a stamp gets the epoch, as its nanoseconds are 0.
            time: s.time.unwrap_or_default(),
            stream: s.stream,
            text: String::from_utf8_lossy(&s.bytes).into_owned(),
        },
    ))
}

/// Whether an entry written at `nanos` is within the asked bounds.
pub(crate) fn within(nanos: i64, options: &LogOptions) -> bool {
    options.since_nanos.is_none_or(|s| nanos >= s) && options.until_nanos.is_none_or(|u| nanos < u)
}

/// How many delivered entries [`Recent`] remembers.
const RECENT: usize = 65_536;

/// The entries a log stream delivered lately, by time and stream: the engine's follower of a rotated json-file
/// log sends some lines again after a rotation (with their original times), and those are dropped.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    order: std::collections::VecDeque<(i64, bool)>,
    keys: std::collections::HashSet<(i64, bool)>,
}

impl Recent {
    /// Whether the entry of `stream` stamped `nanos` is new (then it is remembered).
    pub(crate) fn first_time(&mut self, nanos: i64, stream: OutputStream) -> bool {
        let key = (nanos, stream == OutputStream::Stderr);
        if !self.keys.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > RECENT
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        true
    }
}

/// The message of an engine's system-error frame (stream type 3: the engine's own failure, such as its json-file
/// follower losing a file to rotation, `Error grabbing logs: ...`). The decoder knows only types 0-2 and hands
/// such a frame over whole, header included, as console output.
pub(crate) fn engine_failure(output: &LogOutput) -> Option<String> {
    let LogOutput::Console { message } = output else {
        return None;
    };
    if message.len() < 8 || message[0] != 3 || message[1..4] != [0, 0, 0] {
        return None;
    }
    Some(
        String::from_utf8_lossy(&message[8..])
            .trim_end()
            .to_string(),
    )
}

/// How many times in a row a follower is re-opened after an engine failure without an entry in between.
const RESUMES: u32 = 5;

/// The engine's log stream of container `id` (`name` in errors) for `options`, as husk entries. A follower
/// the engine gives up on (its json-file follower can lose a file as it rotates) is re-opened from the time of
/// the last entry delivered; entries delivered already are dropped, so the reader sees each line once, in order.
pub(crate) fn stream(docker: Docker, id: String, name: String, options: LogOptions) -> LogStream {
    struct Reader {
        docker: Docker,
        id: String,
        name: String,
        options: LogOptions,
        seen: Recent,
        last: Option<i64>,
        failures: u32,
        open:
            Option<futures::stream::BoxStream<'static, Result<LogOutput, bollard::errors::Error>>>,
        done: bool,
    }
    impl Reader {
        /// The query for the next opening: after a failure, everything since the last entry delivered.
        fn next_query(&self) -> LogsOptions {
            match self.last {
                Some(nanos) if self.failures > 0 => query(&LogOptions {
                    since_nanos: Some(self.options.since_nanos.map_or(nanos, |s| s.max(nanos))),
                    tail: None,
                    ..self.options.clone()
                }),
                _ => query(&self.options),
            }
        }
    }
    let reader = Reader {
        docker,
        id,
        name,
        options,
        seen: Recent::default(),
        last: None,
        failures: 0,
        open: None,
        done: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        if r.done {
            return None;
        }
        loop {
            let open = match &mut r.open {
                Some(open) => open,
                None => {
                    let q = r.next_query();
                    r.open.insert(r.docker.logs(&r.id, Some(q)).boxed())
                }
            };
            let chunk = match open.next().await? {
                Ok(chunk) => chunk,
                Err(e) => {
                    r.done = true;
                    let e = engine_error(format!("read the logs of container {}", r.name), e);
                    return Some((Err(e), r));
                }
            };
            if let Some(failure) = engine_failure(&chunk) {
                r.open = None;
                if r.options.follow && r.failures < RESUMES {
                    r.failures += 1;
                    warn!(container = %r.name, "the engine's log follower failed ({failure}); following again");
                    tokio::time::sleep(std::time::Duration::from_millis(
                        20 * u64::from(r.failures),
                    ))
                    .await;
                    continue;
                }
                r.done = true;
                let e = Error::backend(format!(
                    "read the logs of container {}: the engine says: {failure}",
                    r.name
                ));
                return Some((Err(e), r));
            }
            let Some((nanos, entry)) = entry(chunk) else {
                continue;
            };
            if !within(nanos, &r.options) || !r.seen.first_time(nanos, entry.stream) {
                continue;
            }
            r.last = Some(nanos);
            r.failures = 0;
            return Some((Ok(entry), r));
        }
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn an_engine_failure_frame_is_told_from_output() {
        let mut frame = vec![3, 0, 0, 0, 0, 0, 0, 47];
        frame.extend_from_slice(b"Error grabbing logs: no such file or directory\n");
        let failure = engine_failure(&LogOutput::Console {
            message: Bytes::from(frame),
        });
        assert_eq!(
            failure.as_deref(),
            Some("Error grabbing logs: no such file or directory")
        );
        for output in [
            LogOutput::Console {
                message: Bytes::from_static(b"\x03 a terminal's line\n"),
            },
            LogOutput::StdOut {
                message: Bytes::from_static(b"\x03\0\0\0\0\0\0\x01x"),
            },
        ] {
            assert_eq!(engine_failure(&output), None, "{output:?}");
        }
    }

    #[test]
    fn bounds_round_outwards() {
        let q = query(&LogOptions {
            since_nanos: Some(1_700_000_000_500_000_000),
            until_nanos: Some(1_700_000_010_000_000_001),
            tail: Some(5),
            follow: true,
        });
        assert_eq!((q.since, q.until), (1_700_000_000, 1_700_000_011));
        assert_eq!(q.tail, "5");
        assert!(q.timestamps && q.follow && q.stdout && q.stderr);
        let q = query(&LogOptions::default());
        assert_eq!((q.since, q.until, q.tail.as_str()), (0, 0, "all"));
    }

    #[test]
    fn chunks_become_entries() {
        let (n, e) = entry(LogOutput::StdErr {
            message: Bytes::from_static(b"2024-05-01T10:00:00.000000123Z oops\n"),
        })
        .unwrap();
        assert_eq!(e.stream, OutputStream::Stderr);
        assert_eq!(e.text, "oops\n");
        assert_eq!(e.time.to_string(), "2024-05-01T10:00:00.000000123Z");
        assert_eq!(n % NANOS, 123);
        let (_, e) = entry(LogOutput::Console {
            message: Bytes::from_static(b"2024-05-01T10:00:00Z tty line\r\n"),
        })
        .unwrap();
        assert_eq!(
            (e.stream.as_str(), e.text.as_str()),
            ("stdout", "tty line\r\n")
        );
        assert!(
            entry(LogOutput::StdIn {
                message: Bytes::new()
            })
            .is_none()
        );
        // Bytes stay bytes (no lossy text), and a last line keeps the absence of its newline.
        let s = stamped(LogOutput::StdOut {
            message: Bytes::from_static(b"2024-05-01T10:00:00.5+00:00 \xffhal"),
        })
        .unwrap();
        assert_eq!(
            (s.stream, s.time.unwrap().to_string(), &s.bytes[..]),
            (
                OutputStream::Stdout,
                "2024-05-01T10:00:00.500000000Z".to_string(),
                &b"\xffhal"[..]
            )
        );
        let s = stamped(LogOutput::StdOut {
            message: Bytes::from_static(b"no stamp"),
        })
        .unwrap();
        assert_eq!(
            (s.nanos(), s.time, &s.bytes[..]),
            (0, None, &b"no stamp"[..])
        );
    }

    #[test]
    fn nanosecond_bounds() {
        let o = LogOptions {
            since_nanos: Some(10),
            until_nanos: Some(20),
            ..Default::default()
        };
        assert!(!within(9, &o) && within(10, &o) && within(19, &o) && !within(20, &o));
        assert!(within(0, &LogOptions::default()));
    }

    #[test]
    fn a_line_sent_again_is_dropped() {
        let mut recent = Recent::default();
        assert!(recent.first_time(1, OutputStream::Stdout));
        assert!(recent.first_time(1, OutputStream::Stderr), "another stream");
        assert!(recent.first_time(2, OutputStream::Stdout));
        assert!(!recent.first_time(1, OutputStream::Stdout), "sent again");
        for n in 3..(RECENT as i64 + 3) {
            assert!(recent.first_time(n, OutputStream::Stdout));
        }
        assert!(
            recent.first_time(1, OutputStream::Stdout),
            "forgotten after RECENT more"
        );
    }
}
