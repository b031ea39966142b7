//! What the agent reads of the guest's `/proc` and cgroups for stats, `top` and its version.

use std::path::PathBuf;

/// The sum over every device of one `io.stat` counter (`rbytes=` or `wbytes=`).
pub(super) fn io_stat_bytes(io_stat: &str, key: &str) -> u64 {
    io_stat
        .split_whitespace()
        .filter_map(|field| field.strip_prefix(key))
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

pub(super) fn read_u64(path: PathBuf) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A `ps`-like row for `pid` from /proc (UID, PID, PPID, STIME, TIME, CMD), or `None` if it is gone.
pub(super) fn process_row(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let (ppid, cpu_ticks, start_ticks) = (
        rest.get(1).copied().unwrap_or("0"),
        field(11) + field(12),
        field(19),
    );
    let hz = 100; // USER_HZ on Linux
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("");
    let cmd: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let boot_secs = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<i64>().ok())
        })
        .unwrap_or(0);
    let started = chrono_like_hhmm(boot_secs + (start_ticks / hz) as i64);
    let cpu = cpu_ticks / hz;
    Some(vec![
        uid.to_string(),
        pid.to_string(),
        ppid.to_string(),
        started,
        format!("{:02}:{:02}:{:02}", cpu / 3600, (cpu / 60) % 60, cpu % 60),
        cmd.join(" "),
    ])
}

/// `HH:MM` (UTC) of a Unix time.
pub(super) fn chrono_like_hhmm(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}", day / 3600, (day / 60) % 60)
}

/// Time since the (guest) kernel booted, from /proc/uptime.
pub(super) fn guest_uptime_ms() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

pub(super) fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}
