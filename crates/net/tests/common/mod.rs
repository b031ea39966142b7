//! Helpers for the root-only integration tests: a private network (own bridge, subnet, directories) and
//! network namespaces, all removed on drop, even when a test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use husk_net::{CniConfig, Networks};

/// Fails the test unless it runs as root (CI runs as root; a skipped test could not fail).
pub fn require_root() {
    // SAFETY: geteuid has no arguments and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the husk-net integration tests need root");
}

pub fn suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A private default network: its own bridge, subnet and directories. Drop removes the bridge, every iptables
/// rule naming the bridge, network or subnet, and the directories.
pub struct TestNet {
    pub dir: tempfile::TempDir,
    pub config: CniConfig,
    pub subnet_prefix: String,
}

impl TestNet {
    pub fn new() -> TestNet {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let s = suffix();
        let (a, b) = free_subnet();
        let mut config = CniConfig::with_root(dir.path());
        config.conf_dir = dir.path().join("cni");
        config.default_network = format!("hkt-{s}");
        config.default_bridge = format!("hkt{}", &s[..8]);
        config.default_subnet = format!("10.{a}.{b}.0/24");
        TestNet {
            dir,
            config,
            subnet_prefix: format!("10.{a}.{b}."),
        }
    }

    pub fn open(&self) -> Networks {
        Networks::open(self.config.clone()).expect("open networks")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.config
            .state_dir
            .join("ipam")
            .join(&self.config.default_network)
    }

    /// Addresses host-local has handed out (files named by IP).
    pub fn allocations(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Sandboxes a failed test left attached: tear them down as the daemon would after a restart.
        let left: Vec<String> = std::fs::read_dir(self.config.state_dir.join("attachments"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !left.is_empty()
            && let Ok(networks) = Networks::open(self.config.clone())
        {
            for id in &left {
                let _ = networks.teardown(id, None);
            }
        }
        // Every bridge a list of this test names (the default one and those the test wrote), with its rules.
        let mut needles = vec![
            self.config.default_bridge.clone(),
            self.config.default_network.clone(),
            self.subnet_prefix.clone(),
        ];
        if let Ok(entries) = std::fs::read_dir(&self.config.conf_dir) {
            for entry in entries.flatten() {
                if let Ok(list) = husk_net::conflist::NetworkList::load(&entry.path())
                    && let Some(bridge) = list.bridge_summary().bridge
                {
                    needles.push(bridge);
                }
            }
        }
        for bridge in needles.iter().filter(|n| n.starts_with("hk")) {
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        remove_rules_mentioning(&needles);
    }
}

/// A subnet 10.A.B.0/24 with A in 200..250 that the host does not route yet (tests run in parallel).
fn free_subnet() -> (u8, u8) {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    loop {
        let a = 200 + (rand::random::<u8>() % 50);
        let b = rand::random::<u8>();
        let hex = format!("{:02X}{:02X}{:02X}{:02X}", 0, b, a, 10);
        if !routes.contains(&hex) {
            return (a, b);
        }
    }
}

/// Deletes every iptables rule (filter and nat) whose text contains one of `needles`, and the chains they
/// jump to that start with CNI- (the per-sandbox ones), ignoring errors: for cleanup only.
pub fn remove_rules_mentioning(needles: &[&str]) {
    for table in ["filter", "nat"] {
        let save = iptables_save_table(table);
        let mut script = format!("*{table}\n");
        let mut chains = Vec::new();
        for line in save
            .lines()
            .filter(|l| l.starts_with("-A ") && needles.iter().any(|n| l.contains(n)))
        {
            script.push_str(&line.replacen("-A ", "-D ", 1));
            script.push('\n');
            let target = line
                .split(" -j ")
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .unwrap_or("");
            if target.starts_with("CNI-")
                && !target.starts_with("CNI-HOSTPORT")
                && !chains.contains(&target)
            {
                chains.push(target);
            }
        }
        for chain in chains {
            script.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        script.push_str("COMMIT\n");
        let mut child = Command::new("iptables-restore")
            .arg("--noflush")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("iptables-restore");
        let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
        let _ = child.wait();
    }
}

pub fn iptables_save() -> String {
    iptables_save_table("filter") + &iptables_save_table("nat")
}

fn iptables_save_table(table: &str) -> String {
    let out = Command::new("iptables-save")
        .args(["-t", table])
        .output()
        .expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
    pub path: PathBuf,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("hkt-{}", suffix());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add")
            .success();
        assert!(ok, "ip netns add {name}");
        Netns {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        }
    }

    /// Runs `ip netns exec NAME args...` and returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Interface names inside the namespace.
    pub fn links(&self) -> Vec<String> {
        self.exec(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(':')
                    .nth(1)
                    .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            })
            .collect()
    }

    pub fn delete(&self) {
        if !self.path.exists() {
            return;
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Runs `f` on a fresh thread that entered the network namespace at `path`.
pub fn in_netns<T: Send + 'static>(path: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(path).expect("open netns");
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on a namespace file we hold open; only this thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in netns")
}

/// A TCP server inside a namespace that answers `count` connections with `greeting`, then closes (so the
/// namespace holds no socket afterwards).
pub fn serve_in(netns: &Path, port: u16, greeting: &'static str, count: usize) {
    let listener: TcpListener = in_netns(netns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind in netns")
    });
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(count) {
            let _ = conn.write_all(greeting.as_bytes());
        }
    });
}

/// Connects to `addr` and reads what the server says.
pub fn read_from(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text)
}

/// A TCP port that nothing on the host uses right now.
pub fn free_port() -> u16 {
    loop {
        let port = 20000 + rand::random::<u16>() % 30000;
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

/// The sandbox ID tests use: 64 hex digits like husk's.
pub fn sandbox_id() -> String {
    (0..8).map(|_| suffix()).collect()
}
