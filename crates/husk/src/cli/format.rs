//! Tables and human-readable times and sizes, as Docker prints them.

use husk_api_types::ContainerSummary;
use husk_core::{ContainerStatus, Timestamp};

/// Docker's human duration (`5 seconds`, `About a minute`, `3 hours` ...).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86_400),
        1_209_600..=4_838_399 => format!("{} weeks", s / 604_800),
        4_838_400..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

/// Seconds since a time (0 when there is none).
pub fn seconds_since(time: impl Into<Option<Timestamp>>) -> i64 {
    time.into()
        .map_or(0, |t| (Timestamp::now() - t).num_seconds())
}

/// `ps`'s STATUS column.
pub fn status_text(s: &ContainerSummary) -> String {
    match s.status {
        ContainerStatus::Running => format!(
            "Up {}{}",
            human_duration(seconds_since(s.started_at)),
            health_suffix(s)
        ),
        ContainerStatus::Paused => format!(
            "Up {} (Paused)",
            human_duration(seconds_since(s.started_at))
        ),
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            human_duration(seconds_since(s.finished_at))
        ),
        ContainerStatus::Restarting => format!(
            "Restarting ({}) {} ago",
            s.exit_code,
            human_duration(seconds_since(s.finished_at))
        ),
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Creating => "Creating".into(),
        ContainerStatus::Removing => "Removal In Progress".into(),
        ContainerStatus::Dead => "Dead".into(),
    }
}

/// ` (healthy)`, ` (unhealthy)`, ` (health: starting)`, or nothing without a health check.
fn health_suffix(c: &ContainerSummary) -> String {
    match c.health.as_deref() {
        Some("starting") => " (health: starting)".into(),
        Some(status) => format!(" ({status})"),
        None => String::new(),
    }
}

/// Bytes in Docker's units (`1.5MiB`, `12kB` as 1000s for disk sizes when `si`).
pub fn human_size(bytes: u64, binary: bool) -> String {
    let (base, units): (f64, &[&str]) = if binary {
        (1024.0, &["B", "KiB", "MiB", "GiB", "TiB"])
    } else {
        (1000.0, &["B", "kB", "MB", "GB", "TB"])
    };
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i + 1 < units.len() {
        v /= base;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}{}", units[0])
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + units[i]
    }
}

/// Prints rows as a left-aligned table with three spaces between columns.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The first 12 characters of an ID.
pub fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(512, true), "512B");
        assert_eq!(human_size(1536, true), "1.5KiB");
        assert_eq!(human_size(2_000_000, false), "2MB");
    }
}
