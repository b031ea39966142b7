//! Reading a container's cgroup: resource usage, its processes, OOM kills, and whether anything is left.

use std::path::{Path, PathBuf};

use husk_core::{Error, Result, Stats, Top};
use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup};

/// The cgroup manager (v1 or v2 by what the host runs) for an absolute cgroup path such as `/husk/<id>`.
pub fn manager(cgroup_path: &str) -> Result<AnyCgroupManager> {
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroup_path),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| Error::backend(format!("open cgroup {cgroup_path}: {e}")))
}

/// Sets the memory, CPU and PIDs limits in `resources` (an OCI `linux.resources` object without device rules)
/// on the existing cgroup `cgroup_path`. Blocking.
pub fn set_limits(cgroup_path: &str, resources: &serde_json::Value) -> Result<()> {
    let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(resources.clone())
        .map_err(|e| Error::internal(format!("limits for cgroup {cgroup_path}: {e}")))?;
    manager(cgroup_path)?
        .apply(&libcgroups::common::ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| Error::backend(format!("set the limits of cgroup {cgroup_path}: {e}")))
}

/// The host's cgroup layout (`legacy`, `hybrid` or `unified`).
pub fn setup() -> Result<CgroupSetup> {
    libcgroups::common::get_cgroup_setup()
        .map_err(|e| Error::backend(format!("detect the cgroup layout: {e}")))
}

/// Whether the host uses the unified (v2) hierarchy for controllers.
pub fn is_v2() -> bool {
    matches!(setup(), Ok(CgroupSetup::Unified))
}

/// How many times the kernel's OOM killer struck inside the cgroup (0 when unknown).
pub fn oom_kill_count(cgroup_path: &str) -> u64 {
    let rel = cgroup_path.trim_start_matches('/');
    let candidates = [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ];
    for file in candidates {
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("oom_kill ") {
                    return n.trim().parse().unwrap_or(0);
                }
            }
        }
    }
    0
}

/// Directories the cgroup occupies on the host (one per v1 hierarchy, or one on v2); used to prove cleanup.
pub fn cgroup_dirs(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let dir = e.path().join(rel);
            if dir.is_dir() {
                dirs.push(dir);
            }
        }
    }
    let unified = Path::new("/sys/fs/cgroup").join(rel);
    if unified.is_dir() && !dirs.contains(&unified) {
        dirs.push(unified);
    }
    dirs
}

/// PIDs of the processes in the cgroup, read straight from `cgroup.procs` of one hierarchy (cheap: no cgroup
/// manager, which parses the mount table once per controller).
pub fn procs(cgroup_path: &str) -> Vec<i32> {
    for dir in cgroup_dirs(cgroup_path) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            return text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        }
    }
    Vec::new()
}

/// Removes the cgroup's directory in every hierarchy, retrying while the kernel still tears exited processes
/// down (`EBUSY`). A cgroup that is not there is not an error.
pub fn remove(cgroup_path: &str) -> Result<()> {
    for dir in cgroup_dirs(cgroup_path) {
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 200 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(Error::io(format!("remove cgroup {}", dir.display()), e)),
            }
        }
    }
    Ok(())
}

fn host_cpu_ns() -> u64 {
    // The first line of /proc/stat is the total of all CPUs in USER_HZ ticks (100 per second on Linux).
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = text.lines().next() else {
        return 0;
    };
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks * 10_000_000
}

fn interface_bytes(pid: i32) -> (u64, u64) {
    // /proc/<pid>/net/dev shows the counters of the process's network namespace.
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return (0, 0);
    };
    let mut rx = 0;
    let mut tx = 0;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// Resource usage of the cgroup now; `pid` (the main process) is used for network counters.
pub fn stats(cgroup_path: &str, pid: i32) -> Result<Stats> {
    let m = manager(cgroup_path)?;
    let s = m
        .stats()
        .map_err(|e| Error::backend(format!("read cgroup {cgroup_path}: {e}")))?;
    let (net_rx_bytes, net_tx_bytes) = interface_bytes(pid);
    let limit = s.memory.memory.limit;
    // v1 reports "no limit" as a huge page-aligned number.
    let memory_limit_bytes = if limit >= (i64::MAX as u64) / 2 {
        0
    } else {
        limit
    };
    // Like Docker, report usage without the page cache the kernel can drop.
    let inactive = s
        .memory
        .stats
        .get("total_inactive_file")
        .or_else(|| s.memory.stats.get("inactive_file"))
        .copied()
        .unwrap_or(0);
    Ok(Stats {
        read_at: husk_core::now_rfc3339(),
        cpu_usage_ns: s.cpu.usage.usage_total,
        system_cpu_ns: host_cpu_ns(),
        online_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_usage_bytes: s.memory.memory.usage.saturating_sub(inactive),
        memory_limit_bytes,
        pids: s.pids.current,
        pids_limit: if s.pids.limit >= i64::MAX as u64 {
            0
        } else {
            s.pids.limit
        },
        net_rx_bytes,
        net_tx_bytes,
    })
}

/// The rows of the host's `ps` output `text` whose PID is one of `pids`, as Docker's `top` shows them: the
/// header's words are the titles, the last column keeps its spaces. The output must have a PID column.
pub fn top_of_ps(text: &str, pids: &[i32]) -> Result<Top> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_column = titles.iter().position(|t| t == "PID").ok_or_else(|| {
        Error::invalid(
            "ps_args",
            "the ps options leave out the PID column, which tells the container's processes",
        )
    })?;
    let mut processes = Vec::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(pid) = words.get(pid_column).and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !pids.contains(&pid) || words.len() < titles.len() {
            continue;
        }
        let mut row: Vec<String> = words[..titles.len() - 1]
            .iter()
            .map(|w| w.to_string())
            .collect();
        row.push(words[titles.len() - 1..].join(" "));
        processes.push(row);
    }
    Ok(Top { titles, processes })
}

/// The container's processes, as `ps -ef` would show them.
pub fn top(cgroup_path: &str) -> Result<Top> {
    let m = manager(cgroup_path)?;
    let mut pids: Vec<i32> = m
        .get_all_pids()
        .map_err(|e| Error::backend(format!("list cgroup {cgroup_path}: {e}")))?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    let boot = boot_time();
    let ticks = 100u64;
    let mut processes = Vec::new();
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces: split after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.len() < 20 {
            continue;
        }
        let ppid = fields[1];
        let utime: u64 = fields[11].parse().unwrap_or(0);
        let stime: u64 = fields[12].parse().unwrap_or(0);
        let start: u64 = fields[19].parse().unwrap_or(0);
        let uid = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            })
            .unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|p| !p.is_empty())
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let started = chrono::DateTime::from_timestamp((boot + start / ticks) as i64, 0)
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_default();
        let cpu = (utime + stime) / ticks;
        processes.push(vec![
            uid,
            pid.to_string(),
            ppid.to_string(),
            started,
            format!("{:02}:{:02}:{:02}", cpu / 3600, (cpu / 60) % 60, cpu % 60),
            cmd,
        ]);
    }
    Ok(Top {
        titles: ["UID", "PID", "PPID", "STIME", "TIME", "CMD"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        processes,
    })
}

fn boot_time() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("btime "))
                .and_then(|l| l[6..].trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_is_filtered_by_pid_and_keeps_the_last_columns_spaces() {
        let text = "  PID USER     COMMAND\n    1 root     /sbin/init splash\n   42 app      sleep 1000\n   43 app      sh -c echo hi\n";
        let top = top_of_ps(text, &[42, 43]).unwrap();
        assert_eq!(top.titles, ["PID", "USER", "COMMAND"]);
        assert_eq!(
            top.processes,
            [["42", "app", "sleep 1000"], ["43", "app", "sh -c echo hi"]]
        );
        let e = top_of_ps("USER COMMAND\nroot init\n", &[1]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ps_args"));
    }
}
