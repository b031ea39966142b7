//! The daemon's logs (`--log-format`, `--log-level`): text or JSON lines on stderr, or the journal's native
//! protocol with every field of the event and of its spans (`REQUEST_ID`, `METHOD`, `ROUTE` ...). Under
//! systemd with stderr connected to the journal (`JOURNAL_STREAM` naming stderr's device and inode), the
//! default `text` goes to the journal that way too; stderr stays the fallback when the journal's socket cannot
//! be opened.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How the daemon writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text an event, its spans' fields before the message (the journal under systemd).
    Text,
    /// One JSON object a line: `timestamp`, `level`, `fields` (with `message`), `target`, `span` (the
    /// innermost span's fields, e.g. `request_id`) and `spans` (all of them, outermost first).
    Json,
    /// The journal, with the fields as journal fields, wherever stderr goes.
    Journald,
}

/// The names `--log-format` takes.
pub const LOG_FORMATS: &[&str] = &["text", "json", "journald"];

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            other => Err(format!(
                "unknown log format {other:?}: use {}",
                LOG_FORMATS.join(", ")
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        })
    }
}

/// What is logged: `level` and up (`HUSK_LOG`, a filter in `EnvFilter`'s syntax, instead when set); the
/// libraries' own chatter (libcontainer, libcgroups) only from errors up.
pub fn env_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let default = format!("{level},libcontainer=error,libcgroups=error");
    tracing_subscriber::EnvFilter::try_from_env("HUSK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`, `DEVICE:INODE` in decimal) names the file
/// whose device and inode are `dev` and `ino`.
fn names_file(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// Whether systemd connected our stderr to the journal, as `JOURNAL_STREAM` tells (a variable inherited by a
/// process whose stderr was redirected since names another file).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| names_file(&stream, m.dev(), m.ino()))
}

/// Sets up the daemon's logging: `format` at `level` (see [`env_filter`]).
pub fn init_daemon_logging(level: &str, format: LogFormat) {
    let to_journal =
        format == LogFormat::Journald || (format == LogFormat::Text && stderr_is_journal());
    let journal_error = if to_journal {
        match tracing_journald::layer() {
            Ok(journal) => {
                let journal = journal
                    .with_syslog_identifier("husk".into())
                    // `REQUEST_ID=...`, not `F_REQUEST_ID=...`: what `journalctl REQUEST_ID=...` finds.
                    .with_field_prefix(None);
                let _ = tracing_subscriber::registry()
                    .with(journal.with_filter(env_filter(level)))
                    .try_init();
                return;
            }
            Err(e) => Some(e),
        }
    } else {
        None
    };
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = if format == LogFormat::Json {
        tracing_subscriber::registry()
            .with(
                stderr
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_filter(env_filter(level)),
            )
            .try_init()
    } else {
        let ansi = nix::unistd::isatty(2).unwrap_or(false);
        tracing_subscriber::registry()
            .with(
                stderr
                    .with_ansi(ansi)
                    .with_target(false)
                    .with_filter(env_filter(level)),
            )
            .try_init()
    };
    if let Some(e) = journal_error {
        tracing::warn!("cannot log to the journal ({e}): logging to stderr");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print_back() {
        for name in LOG_FORMATS {
            assert_eq!(name.parse::<LogFormat>().unwrap().to_string(), *name);
        }
        let e = "xml".parse::<LogFormat>().unwrap_err();
        assert!(
            e.contains("\"xml\"") && e.contains("text, json, journald"),
            "{e}"
        );
        assert!("JSON".parse::<LogFormat>().is_err());
    }

    #[test]
    fn journal_stream_names_one_file() {
        assert!(names_file("2049:1234", 2049, 1234));
        assert!(!names_file("2049:1234", 2049, 1235));
        assert!(!names_file("2049:1234", 2050, 1234));
        for bad in ["", "2049", "2049:", ":1234", "a:b", "2049:1234:5"] {
            assert!(!names_file(bad, 2049, 1234), "{bad:?}");
        }
    }
}
