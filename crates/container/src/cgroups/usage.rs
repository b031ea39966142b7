//! A cgroup's resource usage, read straight from its files.
//!
//! Not through libcgroups' managers: making one reads the whole mount table (`/proc/self/mountinfo`), which the
//! kernel formats afresh on every read, and the daemon's table grows by a mount or more per container. With
//! 1,000 containers that read was most of each `stats` call. The hierarchies are found once per process here:
//! cgroup file systems are not remounted under a running daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use husk_core::{Error, Result, Stats};

use super::interface_counters;

/// Where the host's cgroup hierarchies are mounted.
#[derive(Debug, Default, PartialEq, Eq)]
struct Hierarchies {
    /// v1 controller (`memory`, `cpuacct`, ...) → the mount point of its hierarchy.
    v1: HashMap<String, PathBuf>,
    /// The cgroup2 mount, when there is one.
    unified: Option<PathBuf>,
}

/// The controllers a usage reading needs.
const V1_CONTROLLERS: [&str; 4] = ["cpuacct", "memory", "pids", "blkio"];

impl Hierarchies {
    /// The hierarchies of this process's mount table (its cgroup lines, read once).
    fn of_this_process() -> &'static Hierarchies {
        static HIERARCHIES: OnceLock<Hierarchies> = OnceLock::new();
        HIERARCHIES.get_or_init(|| Hierarchies::parse(&super::cgroup_mount_lines().join("\n")))
    }

    /// The first mount of each v1 controller and the first cgroup2 mount in `mountinfo` (the format of
    /// `/proc/self/mountinfo`: `ID PARENT DEV ROOT TARGET OPTIONS [TAGS...] - FSTYPE SOURCE SUPER_OPTIONS`).
    /// Only mounts of a hierarchy's root count: a bind mount of a sub-cgroup would shift every path.
    fn parse(mountinfo: &str) -> Hierarchies {
        let mut found = Hierarchies::default();
        for line in mountinfo.lines() {
            let Some((head, tail)) = line.split_once(" - ") else {
                continue;
            };
            let head: Vec<&str> = head.split(' ').collect();
            let tail: Vec<&str> = tail.split(' ').collect();
            if head.len() < 5 || tail.len() < 3 || head[3] != "/" {
                continue;
            }
            let target = PathBuf::from(super::unescape_mount_path(head[4]));
            match tail[0] {
                "cgroup2" => {
                    found.unified.get_or_insert(target);
                }
                "cgroup" => {
                    for option in tail[2].split(',') {
                        if V1_CONTROLLERS.contains(&option) {
                            found
                                .v1
                                .entry(option.to_string())
                                .or_insert_with(|| target.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The directory of `cgroup_path` in the hierarchy of v1 `controller`.
    fn v1_dir(&self, controller: &str, cgroup_path: &str) -> Option<PathBuf> {
        self.v1
            .get(controller)
            .map(|root| root.join(cgroup_path.trim_start_matches('/')))
    }
}

/// Resource usage of the cgroup now; `pid` (the main process) is used for network counters. Controllers come
/// from v1 where the host mounts its memory controller there (v1 and hybrid hosts), otherwise from cgroup2.
pub fn stats(cgroup_path: &str, pid: i32) -> Result<Stats> {
    let hierarchies = Hierarchies::of_this_process();
    let usage = if hierarchies.v1.contains_key("memory") {
        read_v1(hierarchies, cgroup_path)?
    } else if let Some(root) = &hierarchies.unified {
        read_v2(&root.join(cgroup_path.trim_start_matches('/')))?
    } else {
        return Err(Error::backend(format!(
            "read cgroup {cgroup_path}: no cgroup hierarchy with a memory controller is mounted"
        )));
    };
    let net = interface_counters(pid);
    // The cgroup's own counters, as `docker stats` reads them; where they count nothing (see
    // `process_io_bytes`), what the container's processes did.
    let (block_read_bytes, block_write_bytes) = match usage.block {
        (0, 0) => process_io_bytes(&usage.procs_dir),
        counted => counted,
    };
    Ok(Stats {
        read_at: Some(husk_core::Timestamp::now()),
        cpu_usage_ns: usage.cpu_ns,
        system_cpu_ns: host_cpu_ns(),
        online_cpus: online_cpus(),
        // Like Docker, usage without the page cache the kernel can drop.
        memory_usage_bytes: usage.memory.saturating_sub(usage.inactive_file),
        memory_limit_bytes: usage.memory_limit,
        pids: usage.pids,
        pids_limit: usage.pids_limit,
        net_rx_bytes: net.rx_bytes,
        net_tx_bytes: net.tx_bytes,
        net_rx_errors: net.rx_errors,
        net_tx_errors: net.tx_errors,
        block_read_bytes,
        block_write_bytes,
    })
}

/// What the cgroup's files say, in one shape for both versions (limits: 0 = none).
#[derive(Debug, Default, PartialEq, Eq)]
struct Usage {
    cpu_ns: u64,
    memory: u64,
    memory_limit: u64,
    inactive_file: u64,
    pids: u64,
    pids_limit: u64,
    /// Bytes read and written, summed over devices.
    block: (u64, u64),
    /// A directory of the cgroup holding its `cgroup.procs`.
    procs_dir: PathBuf,
}

/// Reads a cgroup file; the error names the file.
fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// A file holding one number, or `max` (no limit: 0).
fn number(dir: &Path, file: &str) -> Result<u64> {
    let text = read(dir, file)?;
    let text = text.trim();
    if text == "max" {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        Error::backend(format!(
            "read {}: not a number: {text:?}",
            dir.join(file).display()
        ))
    })
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`: `key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_v1(h: &Hierarchies, cgroup_path: &str) -> Result<Usage> {
    let dir = |controller: &str| {
        h.v1_dir(controller, cgroup_path).ok_or_else(|| {
            Error::backend(format!(
                "read cgroup {cgroup_path}: the {controller} controller is not mounted"
            ))
        })
    };
    let memory = dir("memory")?;
    let memory_stat = read(&memory, "memory.stat")?;
    let limit = number(&memory, "memory.limit_in_bytes")?;
    let pids = dir("pids")?;
    // Block I/O: the weight policy's counters where the kernel keeps them, else the throttling policy's.
    let block = match dir("blkio") {
        Ok(blkio) => read(&blkio, "blkio.io_service_bytes_recursive")
            .or_else(|_| read(&blkio, "blkio.throttle.io_service_bytes"))
            .map(|t| v1_block_bytes(&t))
            .unwrap_or_default(),
        Err(_) => (0, 0),
    };
    Ok(Usage {
        cpu_ns: number(&dir("cpuacct")?, "cpuacct.usage")?,
        memory: number(&memory, "memory.usage_in_bytes")?,
        // v1 reports "no limit" as a huge page-aligned number.
        memory_limit: if limit >= (i64::MAX as u64) / 2 {
            0
        } else {
            limit
        },
        inactive_file: keyed(&memory_stat, "total_inactive_file")
            .or_else(|| keyed(&memory_stat, "inactive_file"))
            .unwrap_or(0),
        pids: number(&pids, "pids.current")?,
        pids_limit: number(&pids, "pids.max")?,
        block,
        procs_dir: pids,
    })
}

fn read_v2(dir: &Path) -> Result<Usage> {
    let memory_stat = read(dir, "memory.stat")?;
    let cpu_stat = read(dir, "cpu.stat")?;
    Ok(Usage {
        cpu_ns: keyed(&cpu_stat, "usage_usec").unwrap_or(0) * 1000,
        memory: number(dir, "memory.current")?,
        memory_limit: number(dir, "memory.max")?,
        inactive_file: keyed(&memory_stat, "inactive_file").unwrap_or(0),
        // Controllers the parent does not delegate leave their files out.
        pids: number(dir, "pids.current").unwrap_or(0),
        pids_limit: number(dir, "pids.max").unwrap_or(0),
        block: read(dir, "io.stat")
            .map(|t| v2_block_bytes(&t))
            .unwrap_or_default(),
        procs_dir: dir.to_path_buf(),
    })
}

/// Bytes read and written over every device, from v1's `MAJ:MIN Read|Write|... BYTES` lines (the `Total`
/// line of each device and the file's last `Total BYTES` line left out).
fn v1_block_bytes(text: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, op, value] = fields[..] else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        if op.eq_ignore_ascii_case("read") {
            sum.0 += value;
        } else if op.eq_ignore_ascii_case("write") {
            sum.1 += value;
        }
    }
    sum
}

/// Bytes read and written over every device, from v2's `MAJ:MIN rbytes=N wbytes=N ...` lines.
fn v2_block_bytes(text: &str) -> (u64, u64) {
    let mut sum = (0, 0);
    for field in text.split_whitespace() {
        let value = |v: &str| v.parse::<u64>().unwrap_or(0);
        if let Some(v) = field.strip_prefix("rbytes=") {
            sum.0 += value(v);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            sum.1 += value(v);
        }
    }
    sum
}

/// Bytes the processes of the cgroup read from and wrote to the storage layer, from each one's `/proc/PID/io`
/// (which holds the process's threads and the children it has reaped, so a shell's finished commands count).
/// For hosts whose cgroup v1 block I/O counters stay at zero: on this kernel `blkio.throttle.*` only count I/O
/// of cgroups that have throttling rules, and the per-cgroup `blkio.io_service_bytes` went with CFQ.
fn process_io_bytes(procs_dir: &Path) -> (u64, u64) {
    let procs = std::fs::read_to_string(procs_dir.join("cgroup.procs")).unwrap_or_default();
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/io")).ok())
        .map(|io| {
            let field = |name: &str| {
                io.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (field("read_bytes:"), field("write_bytes:"))
        })
        .fold((0, 0), |(r, w), (pr, pw)| (r + pr, w + pw))
}

/// The CPUs this process may run on, found once: the standard library's answer reads the process's cgroup and,
/// on v1, the whole mount table, every time.
fn online_cpus() -> u32 {
    static CPUS: OnceLock<u32> = OnceLock::new();
    *CPUS.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    })
}

/// CPU time of the whole host, in nanoseconds: the first line of `/proc/stat` totals all CPUs in USER_HZ ticks
/// (100 per second on Linux).
fn host_cpu_ns() -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_are_found_in_a_hybrid_mount_table() {
        let table = "\
30 1 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
37 30 0:30 /husk /mnt/some\\040where rw - cgroup cgroup rw,memory
38 30 0:33 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let h = Hierarchies::parse(table);
        assert_eq!(h.unified, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            h.v1_dir("cpuacct", "/husk/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/husk/abc"))
        );
        assert_eq!(
            h.v1_dir("memory", "/husk/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/husk/abc"))
        );
        assert_eq!(h.v1.len(), 4, "{h:?}");
        let unified = Hierarchies::parse("31 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert!(unified.v1.is_empty());
        assert_eq!(unified.unified, Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn v1_files_are_read_with_no_limit_as_zero() {
        let root = tempfile::tempdir().unwrap();
        let mut h = Hierarchies::default();
        for (controller, files) in [
            ("cpuacct", vec![("cpuacct.usage", "123456789\n")]),
            (
                "memory",
                vec![
                    ("memory.usage_in_bytes", "10485760\n"),
                    ("memory.limit_in_bytes", "9223372036854771712\n"),
                    (
                        "memory.stat",
                        "cache 4096\ninactive_file 1\ntotal_inactive_file 1048576\n",
                    ),
                ],
            ),
            ("pids", vec![("pids.current", "3\n"), ("pids.max", "max\n")]),
            (
                "blkio",
                vec![(
                    "blkio.throttle.io_service_bytes",
                    "8:0 Read 100\n8:0 Write 7\n8:0 Total 107\n8:16 Read 1\nTotal 108\n",
                )],
            ),
        ] {
            let dir = root.path().join(controller).join("husk/c");
            std::fs::create_dir_all(&dir).unwrap();
            for (file, text) in files {
                std::fs::write(dir.join(file), text).unwrap();
            }
            h.v1.insert(controller.into(), root.path().join(controller));
        }
        let usage = read_v1(&h, "/husk/c").unwrap();
        assert_eq!(
            usage,
            Usage {
                cpu_ns: 123456789,
                memory: 10485760,
                memory_limit: 0,
                inactive_file: 1048576,
                pids: 3,
                pids_limit: 0,
                block: (101, 7),
                procs_dir: root.path().join("pids/husk/c"),
            }
        );
        let missing = read_v1(&h, "/husk/gone").unwrap_err().to_string();
        assert!(missing.contains("/husk/gone"), "{missing}");
    }

    #[test]
    fn v2_files_are_read_with_max_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in [
            ("cpu.stat", "usage_usec 7730\nuser_usec 5000\n"),
            ("memory.current", "2097152\n"),
            ("memory.max", "max\n"),
            ("memory.stat", "anon 100\ninactive_file 4096\n"),
            ("pids.current", "2\n"),
            ("pids.max", "100\n"),
            (
                "io.stat",
                "7:10 rbytes=18432 wbytes=16842 rios=12 wios=0\n8:0 rbytes=2 wbytes=3 rios=1 wios=1\n",
            ),
        ] {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        assert_eq!(
            read_v2(dir.path()).unwrap(),
            Usage {
                cpu_ns: 7_730_000,
                memory: 2097152,
                memory_limit: 0,
                inactive_file: 4096,
                pids: 2,
                pids_limit: 100,
                block: (18434, 16845),
                procs_dir: dir.path().to_path_buf(),
            }
        );
    }

    #[test]
    fn a_live_cgroup_reads_as_libcgroups_reads_it() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        use libcgroups::common::CgroupManager;
        let path = format!("/husk-test-usage-{}", std::process::id());
        let manager = super::super::manager(&path).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        manager.add_task(pid).unwrap();
        // Counters that only grow may move on between the two reads; the rest may not.
        let theirs = manager.stats().unwrap();
        let ours = stats(&path, pid.as_raw()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        super::super::remove(&path).unwrap();
        assert!(ours.cpu_usage_ns >= theirs.cpu.usage.usage_total);
        assert_eq!(ours.pids, 1);
        assert_eq!(ours.pids, theirs.pids.current);
        let limit = theirs.memory.memory.limit;
        let limit = if limit >= (i64::MAX as u64) / 2 {
            0
        } else {
            limit
        };
        assert_eq!(ours.memory_limit_bytes, limit);
    }
}
