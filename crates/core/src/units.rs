//! Parsing of the values users type: memory sizes, CPU counts, signals, restart policies, names.

use crate::error::{Error, Result};

/// Parses a memory size as Docker does: a number with an optional unit `b`, `k`, `m`, `g`, `t`
/// (powers of 1024, case-insensitive, an optional trailing `b` as in `64mb`).
pub fn parse_memory(field: &str, text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let bad = || {
        Error::invalid(
            field,
            format!(
                "invalid {field} size {text:?}: expected a number with an optional unit b, k, m, g (e.g. 64m)"
            ),
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = value * mult;
    if !bytes.is_finite() || bytes < 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// Smallest memory limit a container may have, as in Docker (6 MiB).
pub const MIN_MEMORY_BYTES: i64 = 6 * 1024 * 1024;

/// Parses `--cpus` (a positive decimal number of CPUs) into nano-CPUs.
pub fn parse_cpus(text: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(
            "cpus",
            format!("invalid cpus {text:?}: expected a positive number such as 0.5 or 2"),
        )
    };
    let value: f64 = text.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 || value > 4096.0 {
        return Err(bad());
    }
    Ok((value * 1e9).round() as i64)
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Parses a signal given by name (`TERM`, `SIGTERM`, `sigkill`, `RTMIN+3`) or number (`9`).
pub fn parse_signal(text: &str) -> Result<i32> {
    let bad = || {
        Error::invalid(
            "signal",
            format!(
                "invalid signal {text:?}: use a name such as TERM or KILL, or a number from 1 to 64"
            ),
        )
    };
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(s, _)| *s == name) {
        return Ok(n);
    }
    // Real-time signals: RTMIN is 34 with glibc, RTMAX 64.
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')
                .and_then(|r| r.parse().ok())
                .ok_or_else(bad)?
        };
        let n = 34 + off;
        return if n <= 64 { Ok(n) } else { Err(bad()) };
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')
                .and_then(|r| r.parse().ok())
                .ok_or_else(bad)?
        };
        let n = 64 - off;
        return if n >= 34 { Ok(n) } else { Err(bad()) };
    }
    Err(bad())
}

/// The conventional name of signal `n` (`SIGTERM`), or its number as text.
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(s, _)| format!("SIG{s}"))
        .unwrap_or_else(|| n.to_string())
}

/// Checks a container, sandbox or volume name: Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 chars.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("invalid {field} {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ))
    }
}

/// Checks a hostname (RFC 1123 labels, at most 64 characters in all as the kernel allows).
pub fn validate_hostname(name: &str) -> Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !name.is_empty() && name.len() <= 64 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(Error::invalid(
            "hostname",
            format!(
                "invalid hostname {name:?}: use letters, digits, '-' and '.', at most 64 characters"
            ),
        ))
    }
}

/// Parses a Docker-style duration or point in time used by `logs --since`: RFC 3339 time, Unix seconds
/// (`1700000000` or `1700000000.5`), or a duration ago such as `10m`, `1h30m`, `45s`.
/// Returns Unix time in nanoseconds.
pub fn parse_since(text: &str, now_nanos: i64) -> Result<i64> {
    let t = text.trim();
    let bad = || {
        Error::invalid(
            "since",
            format!("invalid time {text:?}: use RFC 3339, Unix seconds or a duration such as 10m"),
        )
    };
    if let Ok(time) = crate::Timestamp::parse(t) {
        // Past 2262 nanoseconds overflow i64: such times are simply "later than everything".
        return Ok(time.unix_nanos());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    let nanos = parse_duration(t).map_err(|_| bad())?;
    Ok(now_nanos - nanos)
}

/// Parses a Go-style duration (`1h30m`, `10s`, `250ms`, `1.5h`) into nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let bad = || {
        Error::bad_request(format!(
            "invalid duration {text:?}: use a number with a unit such as 30s, 10m or 1h"
        ))
    };
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if n == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return Err(bad()),
        };
        total += value * mult;
        rest = &rest[u..];
    }
    Ok(total as i64)
}

/// The lowest and highest `oom_score_adj` the kernel takes.
pub const OOM_SCORE_ADJ_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// The `oom_score_adj` a container gets when it asks for `requested` and the daemon runs with `own`: never
/// below the daemon's own (as containerd does), so no container is harder for the OOM killer to pick than the
/// daemon that manages it, and an unprivileged daemon is never refused (lowering needs `CAP_SYS_RESOURCE`).
pub fn restrict_oom_score_adj(requested: i32, own: i32) -> i32 {
    requested.max(own)
}

/// The daemon's own `oom_score_adj` (`/proc/self/oom_score_adj`; 0 when unreadable, the kernel's default).
pub fn daemon_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks a cgroup parent given in request field `field` and returns it normalised (`/a/b`): an absolute
/// cgroupfs path of plain names. A systemd slice (`kubepods-besteffort.slice`) is refused: husk makes cgroups
/// with the cgroupfs driver (the CRI's RuntimeConfig says so), and PID 1 here need not be systemd.
pub fn validate_cgroup_parent(field: &str, text: &str) -> Result<String> {
    let bad = |why: &str| Error::invalid(field, format!("{field}: {text:?} {why}"));
    if text.ends_with(".slice") || text.split('/').any(|c| c.ends_with(".slice")) {
        return Err(bad(
            "is a systemd slice, but husk's cgroup driver is cgroupfs: give a cgroupfs path such as \
             /kubepods/besteffort/pod<uid> (and set kubelet's cgroupDriver to cgroupfs)",
        ));
    }
    if !text.starts_with('/') {
        return Err(bad(
            "is not an absolute cgroup path such as /kubepods/pod<uid>",
        ));
    }
    let parts: Vec<&str> = text.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() {
        return Err(bad("names no cgroup below the root"));
    }
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(bad("may not hold . or .. components"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("may not hold spaces or control characters"));
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The size in bytes of a huge page size as the kernel names them in cgroup files (`64KB`, `2MB`, `1GB`).
pub fn parse_hugepage_size(field: &str, text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(
            field,
            format!("{field}: {text:?} is not a huge page size such as 2MB or 1GB"),
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit {
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        _ => return Err(bad()),
    };
    if n == 0 || !n.is_power_of_two() {
        return Err(bad());
    }
    n.checked_shl(shift)
        .filter(|b| b >> shift == n)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("memory", "64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("memory", "1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("memory", "512kb").unwrap(), 512 << 10);
        assert_eq!(parse_memory("memory", "1000").unwrap(), 1000);
        assert_eq!(parse_memory("memory", "1.5g").unwrap(), 3 << 29);
        for bad in ["", "m", "12q", "-5m", "1e400", "abc"] {
            let e = parse_memory("memory", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("memory"), "{bad}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5").unwrap(), 500_000_000);
        assert_eq!(parse_cpus("2").unwrap(), 2_000_000_000);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("x").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), 10);
        assert_eq!(parse_signal("RTMIN+2").unwrap(), 36);
        assert_eq!(parse_signal("RTMAX").unwrap(), 64);
        for bad in ["0", "65", "FOO", "SIG", "RTMIN+40", ""] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
        assert_eq!(signal_name(15), "SIGTERM");
    }

    #[test]
    fn names() {
        assert!(validate_name("name", "web-1.a_b").is_ok());
        for bad in ["", "-x", "a b", "a/b", ".x"] {
            assert!(validate_name("name", bad).is_err(), "{bad}");
        }
        assert!(validate_hostname("my-host.local").is_ok());
        assert!(validate_hostname("-bad").is_err());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
    }

    #[test]
    fn durations_and_since() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5400 * 1_000_000_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250_000_000);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("m").is_err());
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_since("10s", now).unwrap(), now - 10_000_000_000);
        assert_eq!(parse_since("5", now).unwrap(), 5_000_000_000);
        assert_eq!(
            parse_since("1970-01-01T00:00:01Z", now).unwrap(),
            1_000_000_000
        );
        assert!(parse_since("yesterday", now).is_err());
        assert_eq!(parse_since("2999-01-01T00:00:00Z", now).unwrap(), i64::MAX);
    }

    #[test]
    fn oom_score_adj_is_never_below_the_daemons() {
        assert_eq!(restrict_oom_score_adj(-998, 0), 0);
        assert_eq!(restrict_oom_score_adj(1000, 0), 1000);
        assert_eq!(restrict_oom_score_adj(-500, -999), -500);
        assert_eq!(restrict_oom_score_adj(100, 300), 300);
        assert!(OOM_SCORE_ADJ_RANGE.contains(&daemon_oom_score_adj()));
    }

    #[test]
    fn cgroup_parents_are_cgroupfs_paths() {
        assert_eq!(
            validate_cgroup_parent("cgroup_parent", "/kubepods/besteffort/pod1-2").unwrap(),
            "/kubepods/besteffort/pod1-2"
        );
        assert_eq!(
            validate_cgroup_parent("cgroup_parent", "//kubepods//x/").unwrap(),
            "/kubepods/x"
        );
        for bad in [
            "kubepods-besteffort.slice",
            "/kubepods.slice/kubepods-besteffort.slice",
            "kubepods/x",
            "/",
            "/a/../b",
            "/a b",
        ] {
            let e = validate_cgroup_parent("cgroup_parent", bad).unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.starts_with("cgroup_parent: "), "{}", e.message);
        }
        let e = validate_cgroup_parent("cgroup_parent", "kubepods-besteffort.slice").unwrap_err();
        assert!(e.message.contains("cgroupfs"), "{}", e.message);
    }

    #[test]
    fn hugepage_sizes() {
        assert_eq!(parse_hugepage_size("h", "2MB").unwrap(), 2 << 20);
        assert_eq!(parse_hugepage_size("h", "1GB").unwrap(), 1 << 30);
        assert_eq!(parse_hugepage_size("h", "64KB").unwrap(), 64 << 10);
        for bad in ["2M", "MB", "3MB", "0GB", "2mb", "", "99999999999GB"] {
            assert!(parse_hugepage_size("h", bad).is_err(), "{bad}");
        }
    }
}
