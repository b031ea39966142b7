//! The leak checker: what a test daemon still has on the host. `Drop for Daemon` removes every container and
//! sandbox the daemon still lists, then asks this module what is left and fails the test if anything is, so no
//! test can forget the check. A test may also call [`Daemon::assert_no_leftovers`] in its middle.
//!
//! What counts: mounts under the daemon's directories, cgroups under its parent (every v1 hierarchy and the
//! unified one), its per-object run and state directories, veths on its bridge, its networks' state files and IP
//! allocations, iptables rules naming an address of its subnet (CNI's per-container NAT and port rules), QEMU
//! processes, shims and pause processes (the daemon's children and any process naming its directories), the
//! docker engine's objects labelled with its instance, and, at the end, file descriptors the daemon opened since
//! it came up and still holds.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use super::Daemon;

/// The daemon's open file descriptors by what they point at (`socket:[123]` and `pipe:[4]` as `socket` and
/// `pipe`, paths as they are), with how many of each. Sockets whose other end this test process holds (its own
/// connections to the daemon, which a client may close only after the test) are left out.
pub type FdCensus = BTreeMap<String, usize>;

/// Reads the open descriptors of process `pid` ([`FdCensus`]); empty when the process is gone.
pub fn fd_census(pid: u32) -> FdCensus {
    let ours = socket_inodes(std::process::id());
    let peers = socket_peers();
    let mut census = FdCensus::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy().to_string();
        if let Some(inode) = socket_inode(&target)
            && peers.get(&inode).is_some_and(|peer| ours.contains(peer))
        {
            continue;
        }
        let kind = match target.split_once(":[") {
            Some((kind, _)) if !target.starts_with('/') => kind.to_string(),
            _ => target,
        };
        *census.entry(kind).or_default() += 1;
    }
    census
}

/// The inode of a `socket:[N]` descriptor target.
fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The socket inodes process `pid` holds.
fn socket_inodes(pid: u32) -> std::collections::HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|t| socket_inode(&t.to_string_lossy()))
        .collect()
}

/// Each connected unix or TCP socket's inode, mapped to the inode of its other end (from `ss`).
fn socket_peers() -> std::collections::HashMap<u64, u64> {
    let ss = |args: &[&str]| {
        Command::new("ss")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut peers = std::collections::HashMap::new();
    // `u_str ESTAB 0 0 LOCAL INODE PEER PEER_INODE`
    for line in ss(&["-xn"]).lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let (Some(Ok(local)), Some(Ok(peer))) = (
            f.get(5).map(|x| x.parse::<u64>()),
            f.get(7).map(|x| x.parse::<u64>()),
        ) {
            peers.insert(local, peer);
        }
    }
    // `ESTAB 0 0 LOCAL:PORT PEER:PORT ... ino:N ...`: join the two ends by their addresses.
    let mut by_address = std::collections::HashMap::new();
    let mut tcp = Vec::new();
    for line in ss(&["-tne"]).lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let inode = f
            .iter()
            .find_map(|x| x.strip_prefix("ino:").and_then(|n| n.parse::<u64>().ok()));
        if let (Some(local), Some(peer), Some(inode)) = (f.get(3), f.get(4), inode) {
            by_address.insert(local.to_string(), inode);
            tcp.push((inode, peer.to_string()));
        }
    }
    for (inode, peer) in tcp {
        if let Some(peer_inode) = by_address.get(&peer) {
            peers.insert(inode, *peer_inode);
        }
    }
    peers
}

/// Descriptors a daemon opens once, at their first use, and keeps for its life: not leaks, so the census allows
/// this many beyond the baseline. `/` is the private procfs that libpathrs mounts (detached, so it reads as `/`)
/// and caches the first time libcgroups opens a file through it (e.g. `husk update`).
const PROCESS_LIFETIME_FDS: &[(&str, usize)] = &[("/", 1)];

/// What `now` holds beyond `baseline` (and [`PROCESS_LIFETIME_FDS`]): one line per kind of descriptor that grew,
/// naming the growth.
pub fn fd_growth(baseline: &FdCensus, now: &FdCensus) -> Vec<String> {
    now.iter()
        .filter_map(|(kind, &n)| {
            let allowed = PROCESS_LIFETIME_FDS
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, extra)| *extra);
            let before = baseline.get(kind).copied().unwrap_or(0) + allowed;
            (n > before).then(|| format!("{} more open fd(s) to {kind}", n - before))
        })
        .collect()
}

/// A process on the host, as `/proc` shows it.
pub struct Process {
    /// Its process ID.
    pub pid: u32,
    /// Its parent's process ID.
    pub parent: u32,
    /// Its command line, arguments joined by spaces.
    pub cmdline: String,
}

/// Every process on the host now (those that end while it reads are left out).
pub fn processes() -> Vec<Process> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the command may hold spaces and parentheses, so split after the last `)`.
        let Some(parent) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        all.push(Process {
            pid,
            parent,
            cmdline,
        });
    }
    all
}

impl Daemon {
    /// Asserts that [`Self::leftovers`] becomes empty within 10 seconds (network teardown finishes in the
    /// background after a removal returns).
    pub fn assert_no_leftovers(&self) {
        let clean = Daemon::eventually(Duration::from_secs(10), || self.leftovers().is_empty());
        assert!(clean, "left behind: {:?}", self.leftovers());
    }

    /// What this daemon still has on the host (see the module's comment), apart from file descriptors (see
    /// [`Self::fd_leaks`]). Empty when everything was cleaned up.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = self.leftover_mounts_and_dirs();
        left.extend(self.leftover_network());
        left.extend(self.leftover_processes());
        left.extend(self.leftover_engine_objects());
        left
    }

    /// The daemon's descriptors beyond those it had when it came up (empty when it is not running).
    pub fn fd_leaks(&self) -> Vec<String> {
        match (&self.child, &self.fd_baseline) {
            (Some(child), Some(baseline)) => fd_growth(baseline, &fd_census(child.id())),
            _ => Vec::new(),
        }
    }

    fn leftover_mounts_and_dirs(&self) -> Vec<String> {
        let mut left = Vec::new();
        let base = self.dir.path().to_string_lossy().to_string();
        for line in std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
        {
            // A filesystem the test put the root on is the test's (the daemon never mounts on its root); the
            // run root bound onto itself and the base mount namespace's pin are the daemon's for its life and
            // the next one's (husk_container::base_ns).
            if let Some(mp) = line.split_whitespace().nth(4)
                && mp.starts_with(&base)
                && std::path::Path::new(mp) != self.root
                && std::path::Path::new(mp) != self.run_root
                && std::path::Path::new(mp) != self.run_root.join("base.mnt")
            {
                left.push(format!("mount {mp}"));
            }
        }
        // v1 hierarchies and the unified one below /sys/fs/cgroup; the root itself on a cgroup v2 host.
        let mut hierarchies: Vec<std::path::PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .map(|h| h.path())
            .collect();
        hierarchies.push("/sys/fs/cgroup".into());
        for hierarchy in hierarchies {
            let dir = hierarchy.join(&self.cgroup_parent);
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        left.push(format!("cgroup {}", c.path().display()));
                    }
                }
            }
        }
        for sub in ["c", "s", "lc", "v"] {
            if let Ok(entries) = std::fs::read_dir(self.run_root.join(sub)) {
                for e in entries.flatten() {
                    left.push(format!("run dir {}", e.path().display()));
                }
            }
        }
        for dir in [
            self.root.join("linux/c"),
            self.root.join("linux/s"),
            self.root.join("vm/c"),
            self.root.join("docker/cri-logs"),
        ] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    left.push(format!("state dir {}", e.path().display()));
                }
            }
        }
        left
    }

    /// Veths on the daemon's bridge, its networks' attachment and sandbox state, IP allocations, and iptables
    /// rules that name one of its subnet's addresses (the network's own rules name the subnet, which lives as
    /// long as the network).
    fn leftover_network(&self) -> Vec<String> {
        let mut left = Vec::new();
        if let Ok(out) = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                left.push(format!("veth {line}"));
            }
        }
        for sub in ["attachments", "sandboxes"] {
            if let Ok(entries) = std::fs::read_dir(self.root.join("net").join(sub)) {
                for e in entries.flatten() {
                    left.push(format!("network state {}", e.path().display()));
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.root.join("net").join("ipam")) {
            for net in entries.flatten() {
                for e in std::fs::read_dir(net.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.parse::<std::net::IpAddr>().is_ok() {
                        left.push(format!("IP allocation {}", e.path().display()));
                    }
                }
            }
        }
        let prefix = self
            .subnet
            .strip_suffix(".0/24")
            .expect("test subnets are /24s ending in .0");
        for table in ["filter", "nat"] {
            let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
                continue;
            };
            for rule in String::from_utf8_lossy(&out.stdout).lines() {
                if names_a_host_of(rule, prefix) {
                    left.push(format!("iptables -t {table} {rule}"));
                }
            }
        }
        left
    }

    /// The daemon's children (shims and pause processes while it runs; none should outlive what they serve),
    /// any other process whose command line names the daemon's directories (shims of an earlier daemon on the
    /// same root), and QEMU processes of a `vm`-driver daemon (their command lines name its run root).
    fn leftover_processes(&self) -> Vec<String> {
        let mut left = Vec::new();
        let base = self.dir.path().to_string_lossy().to_string();
        let daemon = self.child.as_ref().map(|c| c.id());
        for Process {
            pid,
            parent,
            cmdline,
        } in processes()
        {
            if Some(pid) == daemon || pid == std::process::id() {
                continue;
            }
            // The CLI calls of this test and the plugins a background teardown runs are short-lived children
            // of the test and of the daemon: only processes that stay count, which `eventually` sorts out.
            let child_of_daemon = Some(parent) == daemon;
            if child_of_daemon || (cmdline.contains(&base) && !cmdline.starts_with("husk daemon")) {
                let what = if cmdline.contains("qemu-system") {
                    "QEMU process"
                } else {
                    "process"
                };
                left.push(format!("{what} {pid}: {}", cmdline.trim_end()));
            }
        }
        left
    }

    /// Containers and networks of the docker engine labelled with this daemon's instance (docker driver).
    fn leftover_engine_objects(&self) -> Vec<String> {
        let mut left = Vec::new();
        let Some((host, instance)) = &self.docker else {
            return left;
        };
        for (kind, args) in [
            ("engine container", &["ps", "-aq"][..]),
            ("engine network", &["network", "ls", "-q"][..]),
            ("engine volume", &["volume", "ls", "-q"][..]),
        ] {
            let out = Command::new("docker")
                .args(["-H", host])
                .args(args)
                .args(["--filter", &format!("label=io.husk.instance={instance}")])
                .output()
                .expect("docker CLI");
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                left.push(format!("{kind} {id}"));
            }
        }
        left
    }
}

/// Whether an iptables rule names one host address of the /24 whose first three octets are `prefix` (an address
/// followed by `/32`, a port, a quote, a space or the end), not the subnet itself.
pub fn names_a_host_of(rule: &str, prefix: &str) -> bool {
    let needle = format!("{prefix}.");
    rule.match_indices(&needle).any(|(at, _)| {
        // A longer address that merely ends in the prefix (`110.1.2.` for `10.1.2`) is not ours.
        let before = rule[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_digit() || c == '.') {
            return false;
        }
        let rest = &rule[at + needle.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let tail = &rest[digits.len()..];
        if digits.is_empty() || digits == "0" {
            return false;
        }
        match tail.chars().next() {
            Some('/') => tail.starts_with("/32"),
            Some(c) => !c.is_ascii_digit() && c != '.',
            None => true,
        }
    })
}
