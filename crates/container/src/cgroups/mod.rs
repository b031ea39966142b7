//! Reading a container's cgroup: resource usage, its processes, OOM kills, and whether anything is left.

use std::path::{Path, PathBuf};

use husk_core::{Error, Result, Top};

mod usage;
use libcgroups::common::{AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup};
pub use usage::stats;

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

/// The cgroup and cgroup2 lines of this process's mount table, read once (the kernel formats the whole table on
/// every read, and cgroup file systems are not remounted under a running daemon): where [`stats`] finds the
/// hierarchies, and what a shim is given so that a container's start does not read the table again (libcgroups'
/// `seed_cgroup_mounts` keeps the v1 lines of it).
pub fn cgroup_mount_lines() -> &'static [String] {
    static LINES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    LINES.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|table| {
                table
                    .lines()
                    .filter(|l| {
                        l.split_once(" - ").is_some_and(|(_, t)| {
                            t.starts_with("cgroup ") || t.starts_with("cgroup2 ")
                        })
                    })
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    })
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

/// Sends SIGKILL to every process in the cgroup; returns how many there were.
pub fn kill_all(cgroup_path: &str) -> usize {
    let pids = procs(cgroup_path);
    for &pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids.len()
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

/// Where the host's cgroups stand on `favordynmods`, the kernel's switch between fast forks/exits and fast moves
/// of processes between cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DynamicChanges {
    /// The switch was already on (set by the host or by an earlier daemon).
    AlreadyFavored,
    /// This daemon turned it on by remounting the cgroup2 file system at this path.
    Favored(PathBuf),
    /// Left as it is, and why.
    Unchanged(String),
}

impl std::fmt::Display for DynamicChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DynamicChanges::AlreadyFavored => write!(f, "on"),
            DynamicChanges::Favored(at) => write!(f, "on (set by husk on {})", at.display()),
            DynamicChanges::Unchanged(why) => write!(f, "off ({why})"),
        }
    }
}

/// A cgroup2 mount as `/proc/self/mountinfo` gives it, and what remounting it with `favordynmods` takes.
#[derive(Debug, PartialEq, Eq)]
struct Cgroup2Mount {
    target: PathBuf,
    /// Per-mount flags to keep (`MS_NOSUID`, `MS_RDONLY`, ...), as a remount replaces them.
    mount_flags: nix::mount::MsFlags,
    /// The file system's own options (`nsdelegate`, `memory_recursiveprot`, ...), as a remount replaces them.
    fs_options: Vec<String>,
}

impl Cgroup2Mount {
    /// The first cgroup2 mount of a mount table in `/proc/self/mountinfo` form.
    fn find(mountinfo: &str) -> Option<Cgroup2Mount> {
        use nix::mount::MsFlags;
        mountinfo.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            if fields.get(dash + 1) != Some(&"cgroup2") {
                return None;
            }
            let mut mount_flags = MsFlags::empty();
            for option in fields.get(5)?.split(',') {
                mount_flags |= match option {
                    "ro" => MsFlags::MS_RDONLY,
                    "nosuid" => MsFlags::MS_NOSUID,
                    "nodev" => MsFlags::MS_NODEV,
                    "noexec" => MsFlags::MS_NOEXEC,
                    "noatime" => MsFlags::MS_NOATIME,
                    "nodiratime" => MsFlags::MS_NODIRATIME,
                    "relatime" => MsFlags::MS_RELATIME,
                    "strictatime" => MsFlags::MS_STRICTATIME,
                    _ => MsFlags::empty(),
                };
            }
            let fs_options = fields
                .get(dash + 3)?
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro"))
                .map(str::to_string)
                .collect();
            Some(Cgroup2Mount {
                target: PathBuf::from(unescape_mount_path(fields.get(4)?)),
                mount_flags,
                fs_options,
            })
        })
    }

    fn favors_dynamic_changes(&self) -> bool {
        self.fs_options.iter().any(|o| o == "favordynmods")
    }
}

/// Undoes the octal escapes (`\040` for a space) the kernel writes into mount paths.
fn unescape_mount_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            out.push(
                (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0'),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns on the kernel's `favordynmods` for cgroups, unless it is on already.
///
/// Every container start moves a process into its cgroup (a write to `cgroup.procs`). By default the kernel
/// makes such a move wait for an RCU grace period (the lock that guards moves is tuned for forks and exits):
/// 3 to 11 ms on this host, half of a whole `run --rm IMAGE true`. `favordynmods` (Linux 6.0) keeps that lock in
/// its slow-reader mode instead: moves stop waiting, forks and exits take a shared counter more. The switch is
/// global (one lock for every hierarchy) and only the cgroup2 file system may change it on a remount, so husk
/// remounts the host's cgroup2 mount (on a hybrid host the one holding no controller) with the options it has
/// plus `favordynmods`. The kernel keeps it after the daemon stops, as Docker leaves `ip_forward` on. A host
/// without a cgroup2 mount, or a kernel that refuses the option, is left as it is.
pub fn favor_dynamic_changes() -> DynamicChanges {
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        Err(e) => return DynamicChanges::Unchanged(format!("read the mount table: {e}")),
    };
    let Some(mount) = Cgroup2Mount::find(&mountinfo) else {
        return DynamicChanges::Unchanged("the host has no cgroup2 mount".into());
    };
    if mount.favors_dynamic_changes() {
        return DynamicChanges::AlreadyFavored;
    }
    let mut options = mount.fs_options.clone();
    options.push("favordynmods".into());
    let options = options.join(",");
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        &mount.target,
        None::<&str>,
        nix::mount::MsFlags::MS_REMOUNT | mount.mount_flags,
        Some(options.as_str()),
    ) {
        return DynamicChanges::Unchanged(format!(
            "remount {} with {options}: {e}",
            mount.target.display()
        ));
    }
    // The kernel applies what a remount names and clears the rest: check that nothing else changed.
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| Cgroup2Mount::find(&t));
    match after {
        Some(a) if a.favors_dynamic_changes() => {
            let mut expected = mount.fs_options.clone();
            expected.push("favordynmods".into());
            expected.sort();
            let mut got = a.fs_options.clone();
            got.sort();
            if got != expected {
                tracing::warn!(before = ?mount.fs_options, after = ?a.fs_options, "cgroup2 options changed on remount");
            }
            DynamicChanges::Favored(mount.target)
        }
        _ => DynamicChanges::Unchanged(format!(
            "the kernel took the remount of {} but did not keep favordynmods",
            mount.target.display()
        )),
    }
}

/// What the network interfaces of a network namespace counted (`lo` left out).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// The counters of the network namespace of process `pid`, summed over its interfaces but `lo` (all zero
/// when the process is gone).
pub fn interface_counters(pid: i32) -> InterfaceCounters {
    // /proc/<pid>/net/dev shows the counters of the process's network namespace.
    std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .map(|text| parse_net_dev(&text))
        .unwrap_or_default()
}

/// Sums the counters of `/proc/net/dev`'s text over its interfaces but `lo`: after the interface's name, the
/// receive columns (bytes, packets, errs, ...: 8 of them) then the transmit ones (bytes, packets, errs, ...).
fn parse_net_dev(text: &str) -> InterfaceCounters {
    let mut sum = InterfaceCounters::default();
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
        if f.len() >= 16 {
            sum.rx_bytes += f[0];
            sum.rx_errors += f[2];
            sum.tx_bytes += f[8];
            sum.tx_errors += f[10];
        }
    }
    sum
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

/// Whether huge page limits can be kept on this host (`v2`: the host runs the unified hierarchy), or why not.
pub fn hugetlb_available(v2: bool) -> std::result::Result<(), String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("read /proc/self/mountinfo: {e}"))?;
    hugetlb_home(&mountinfo, v2, |mount| {
        std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
    })
}

/// Where the hugetlb controller is, from a mount table in `/proc/self/mountinfo` form and a reader of a cgroup2
/// mount's `cgroup.controllers`: fine on a v1 hierarchy of its own, or on the unified hierarchy of a v2 host; a
/// hybrid host's cgroup2 mount holds it out of reach of the v1 manager libcgroups picks there.
fn hugetlb_home(
    mountinfo: &str,
    v2: bool,
    controllers: impl Fn(&Path) -> String,
) -> std::result::Result<(), String> {
    let mut cgroup2 = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(target), Some(fs), Some(options)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 3))
        else {
            continue;
        };
        match *fs {
            "cgroup" if !v2 && options.split(',').any(|o| o == "hugetlb") => return Ok(()),
            "cgroup2" if cgroup2.is_none() => {
                cgroup2 = Some(PathBuf::from(unescape_mount_path(target)))
            }
            _ => {}
        }
    }
    let on_cgroup2 = cgroup2
        .as_deref()
        .filter(|m| controllers(m).split_whitespace().any(|c| c == "hugetlb"));
    match (v2, on_cgroup2) {
        (true, Some(_)) => Ok(()),
        (true, None) => Err("this host's cgroup v2 hierarchy has no hugetlb controller".into()),
        (false, Some(m)) => Err(format!(
            "this host's hugetlb controller is on the cgroup2 mount {} of a hybrid cgroup layout, which husk's \
             cgroup v1 manager does not drive (it drives v1 hierarchies only)",
            m.display()
        )),
        (false, None) => Err("this host has no hugetlb cgroup controller".into()),
    }
}

/// Whether the kernel can hand out no huge pages of the size whose sysfs directory is `dir`
/// (`/sys/kernel/mm/hugepages/hugepages-2048kB`): none reserved and none to overcommit.
pub fn hugepage_pool_is_empty(dir: &Path) -> bool {
    ["nr_hugepages", "nr_overcommit_hugepages"]
        .iter()
        .all(|f| std::fs::read_to_string(dir.join(f)).is_ok_and(|t| t.trim() == "0"))
}

/// Whether a cgroup v1 host accounts swap (`memory.memsw.limit_in_bytes`: the kernel's `swapaccount`), so a
/// memory plus swap limit can be kept.
pub fn swap_accounted_v1() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_given_to_a_process_are_used_instead_of_its_mount_table() {
        for line in cgroup_mount_lines() {
            assert!(
                line.contains(" - cgroup ") || line.contains(" - cgroup2 "),
                "{line}"
            );
        }
        // A mount that is not in this host's table: seen only if the given lines are what libcgroups uses.
        libcgroups::v1::util::seed_cgroup_mounts(&[
            "99 30 0:99 / /nowhere/memory rw,nosuid - cgroup cgroup rw,memory",
            "98 30 0:98 / /nowhere/unified rw - cgroup2 cgroup2 rw",
        ]);
        let mounts = libcgroups::v1::util::cgroup_mounts().unwrap();
        let points: Vec<&Path> = mounts.iter().map(|m| m.mount_point.as_path()).collect();
        assert_eq!(points, [Path::new("/nowhere/memory")]);
    }

    #[test]
    fn net_dev_counters_are_summed_without_lo() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    9000      90    0    0    0     0          0         0     9000      90    0    0    0     0       0          0
  eth0:    1500      12    3    0    0     0          0         0      700       7    1    0    0     0       0          0
  eth1:     500       2    1    0    0     0          0         0      300       3    0    0    0     0       0          0
";
        assert_eq!(
            parse_net_dev(text),
            InterfaceCounters {
                rx_bytes: 2000,
                rx_errors: 4,
                tx_bytes: 1000,
                tx_errors: 1,
            }
        );
        assert_eq!(interface_counters(-1), InterfaceCounters::default());
    }

    #[test]
    fn the_cgroup2_mount_is_found_with_the_options_a_remount_must_repeat() {
        let table = "\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
44 25 0:39 / /sys/fs/cgroup/my\\040unified rw,nosuid,nodev,noexec,relatime shared:19 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        let mount = Cgroup2Mount::find(table).unwrap();
        use nix::mount::MsFlags;
        assert_eq!(
            mount,
            Cgroup2Mount {
                target: PathBuf::from("/sys/fs/cgroup/my unified"),
                mount_flags: MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_RELATIME,
                fs_options: vec!["nsdelegate".into(), "memory_recursiveprot".into()],
            }
        );
        assert!(!mount.favors_dynamic_changes());
        let on = table.replace("memory_recursiveprot", "memory_recursiveprot,favordynmods");
        assert!(Cgroup2Mount::find(&on).unwrap().favors_dynamic_changes());
        assert_eq!(
            Cgroup2Mount::find(&table.lines().take(2).collect::<Vec<_>>().join("\n")),
            None
        );
    }

    #[test]
    fn dynamic_changes_are_favored_on_the_hosts_cgroup2_mount() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let state = favor_dynamic_changes();
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| Cgroup2Mount::find(&t));
        match mount {
            // Every test host here has a cgroup2 mount and a kernel that knows the option.
            Some(m) => {
                assert!(m.favors_dynamic_changes(), "{state}");
                assert!(
                    matches!(
                        state,
                        DynamicChanges::AlreadyFavored | DynamicChanges::Favored(_)
                    ),
                    "{state}"
                );
                assert_eq!(favor_dynamic_changes(), DynamicChanges::AlreadyFavored);
            }
            None => assert!(matches!(state, DynamicChanges::Unchanged(_))),
        }
    }

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

    #[test]
    fn hugetlb_is_found_where_the_cgroup_manager_reaches() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,favordynmods\n";
        let hugetlb = |_: &Path| "hugetlb".to_string();
        let none = |_: &Path| String::new();
        let e = hugetlb_home(hybrid, false, hugetlb).unwrap_err();
        assert!(
            e.contains("/sys/fs/cgroup/unified") && e.contains("hybrid"),
            "{e}"
        );
        assert!(
            hugetlb_home(hybrid, false, none)
                .unwrap_err()
                .contains("no hugetlb")
        );
        let v1 = format!(
            "{hybrid}42 31 0:39 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb\n"
        );
        hugetlb_home(&v1, false, none).unwrap();
        let v2 = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        hugetlb_home(v2, true, |m: &Path| {
            assert_eq!(m, Path::new("/sys/fs/cgroup"));
            "cpu memory hugetlb pids".to_string()
        })
        .unwrap();
        assert!(hugetlb_home(v2, true, none).is_err());
    }
}
