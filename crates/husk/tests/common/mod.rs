//! Test harness: a real `husk daemon` in its own temporary root, run root, socket and cgroup parent, driven
//! through the real `husk` CLI. Every daemon is independent, so tests run in parallel.

#![allow(dead_code)]

pub mod cri;
pub mod leaks;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The husk binary under test: `HUSK_TEST_BINARY` when set (a build of one's own when several worktrees share a
/// target directory, whose `debug/husk` is whichever built last), else the one Cargo built for these tests.
pub fn husk_bin() -> PathBuf {
    std::env::var_os("HUSK_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_husk")))
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Whether we run as root (every test here needs it; CI is root).
pub fn require_root() {
    assert!(
        nix_is_root(),
        "these tests need root (namespaces, mounts, cgroups)"
    );
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A busybox image archive built once per test run by `scripts/make-busybox-image` (`NAME` = `test/busybox:1`,
/// exposing 8080/tcp).
pub fn busybox_archive() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("husk-test-busybox-2.tar");
    if path.exists() {
        return path;
    }
    let tmp = dir.join(format!("husk-test-busybox.{}.tar", std::process::id()));
    let out = Command::new(repo_root().join("scripts/make-busybox-image"))
        .arg(&tmp)
        .arg("test/busybox:1")
        .args(["--expose", "8080"])
        .output()
        .expect("run make-busybox-image");
    assert!(
        out.status.success(),
        "make-busybox-image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // rename is atomic: concurrent builders all end with one complete file.
    std::fs::rename(&tmp, &path).expect("publish the test image");
    path
}

/// A config file for `vm`-driver daemons: every test daemon shares one guest image cache (the image is named by
/// its content, so concurrent builders agree), instead of each building its own.
pub fn vm_config() -> String {
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("husk-vm-cache");
    let agent = husk_bin().with_file_name("husk-agent");
    assert!(
        agent.exists(),
        "{} is missing: build it first (cargo build -p husk-agent; scripts/test builds every binary)",
        agent.display()
    );
    format!("[vm]\ncache_dir = {:?}\n", cache.display().to_string())
}

/// The image name tests use.
pub const IMAGE: &str = "test/busybox:1";

/// A command of the test image that needs 256 MiB: busybox `tail` holds a line whole until it ends, and 256 MiB of
/// zeros has no newline.
#[allow(dead_code)]
pub const MEMORY_HOG: &str = "head -c 268435456 /dev/zero | tail";

/// A running daemon and its private directories.
pub struct Daemon {
    /// Temporary directory holding everything.
    pub dir: tempfile::TempDir,
    /// `--root`.
    pub root: PathBuf,
    /// `--run-root`.
    pub run_root: PathBuf,
    /// `--socket`.
    pub socket: PathBuf,
    /// `--cgroup-parent`.
    pub cgroup_parent: String,
    /// Extra daemon flags.
    pub flags: Vec<String>,
    /// The default network's bridge (unique per daemon).
    pub bridge: String,
    /// The default network's subnet (unique per daemon).
    pub subnet: String,
    /// For the docker driver: the engine's address and this daemon's instance name.
    pub docker: Option<(String, String)>,
    child: Option<Child>,
    /// The daemon's open descriptors when it last came up (the leak checker's baseline).
    fd_baseline: Option<leaks::FdCensus>,
}

/// What a CLI call returned.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Panics with the output unless the command succeeded; returns trimmed stdout.
    pub fn ok(&self) -> String {
        assert_eq!(
            self.code, 0,
            "command failed (code {}):\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self.stdout.trim().to_string()
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Daemon {
    /// Starts a daemon whose default driver is `driver`. The `docker` driver uses the shared test engine at
    /// `HUSK_TEST_DOCKER_HOST` (started by `scripts/test` with `crates/docker/scripts/test-dockerd`), with an
    /// instance name of its own.
    pub fn start_driver(driver: &str) -> Daemon {
        Daemon::start_driver_with(driver, "")
    }

    /// Starts a daemon whose default driver is `driver` (as [`Daemon::start_driver`]) with `config` in its config
    /// file.
    pub fn start_driver_with(driver: &str, config: &str) -> Daemon {
        match driver {
            "docker" => {
                let host = std::env::var("HUSK_TEST_DOCKER_HOST").expect(
                    "HUSK_TEST_DOCKER_HOST is not set: start an engine with `crates/docker/scripts/test-dockerd start /tmp/hdk` and export its address",
                );
                let instance = format!(
                    "t{:x}{:x}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .subsec_nanos()
                );
                let mut d = Daemon::start_with(
                    &[
                        "--driver",
                        "docker",
                        "--docker-host",
                        &host,
                        "--docker-instance",
                        &instance,
                    ],
                    config,
                    true,
                );
                d.docker = Some((host, instance));
                d
            }
            "vm" => Daemon::start_with(
                &["--driver", "vm"],
                &format!("{}\n{config}", vm_config()),
                true,
            ),
            other => Daemon::start_with(&["--driver", other], config, true),
        }
    }

    /// Starts a daemon with `flags` (e.g. `--driver linux --mode standalone`) and loads the busybox image.
    pub fn start(flags: &[&str]) -> Daemon {
        Daemon::start_with(flags, "", true)
    }

    /// Starts a daemon with `flags` and `config` as its config file's text; loads the busybox image if `busybox`
    /// (else its image store starts empty).
    pub fn start_with(flags: &[&str], config: &str, busybox: bool) -> Daemon {
        let mut d = Daemon::stopped(flags, config);
        d.spawn(&[]);
        if busybox {
            d.husk(&["image", "load", "-i", busybox_archive().to_str().unwrap()])
                .ok();
        }
        d
    }

    /// A daemon's directories and settings (`flags`, `config` as its config file's text), not started yet:
    /// `spawn` starts it, or a test starts `command()` its own way and hands the process to `adopt`.
    pub fn stopped(flags: &[&str], config: &str) -> Daemon {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("hk")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let id: String = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        // A bridge and subnet of our own, so daemons of parallel tests never share addresses.
        let seed: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            ^ ((std::process::id() as u64) << 20);
        let mix = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bridge = format!("hk{:08x}", (mix >> 32) as u32);
        let subnet = format!("10.{}.{}.0/24", 100 + (mix >> 8) % 150, mix % 256);
        let d = Daemon {
            bridge,
            subnet,
            docker: None,
            root: dir.path().join("root"),
            run_root: dir.path().join("run"),
            socket: dir.path().join("husk.sock"),
            cgroup_parent: format!("husk-test-{id}"),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            dir,
            child: None,
            fd_baseline: None,
        };
        std::fs::write(d.dir.path().join("none.toml"), config).unwrap();
        d
    }

    /// Starts the daemon process with extra environment; waits until it answers.
    pub fn spawn(&mut self, env: &[(&str, &str)]) {
        let mut cmd = self.command();
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.adopt(cmd.spawn().expect("start husk daemon"));
        self.wait_until_up();
    }

    /// Takes `child`, a daemon started from `command()`, as this daemon's process (stopped and cleaned up
    /// after as any other).
    pub fn adopt(&mut self, child: Child) {
        self.child = Some(child);
    }

    /// The daemon's process ID.
    pub fn daemon_pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// `husk daemon` with this daemon's directories, flags and config file, its output going to its log.
    pub fn command(&self) -> Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(husk_bin());
        cmd.arg("daemon")
            .arg("--root")
            .arg(&self.root)
            .arg("--run-root")
            .arg(&self.run_root)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--cgroup-parent")
            .arg(&self.cgroup_parent)
            .arg("--config")
            .arg(self.dir.path().join("none.toml"))
            .arg("--cni-conf-dir")
            .arg(self.dir.path().join("cni"))
            .arg("--bridge")
            .arg(&self.bridge)
            .arg("--subnet")
            .arg(&self.subnet)
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if !self.dir.path().join("none.toml").exists() {
            std::fs::write(self.dir.path().join("none.toml"), "").unwrap();
        }
        cmd
    }

    /// Waits until the started daemon answers (panics with its log if it exits or takes too long).
    pub fn wait_until_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.husk(&["version"]).stdout.contains("Server: husk") {
                self.fd_baseline = Some(leaks::fd_census(self.daemon_pid()));
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the daemon exited ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not come up: {}", self.log());
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Runs `husk ARGS` against this daemon.
    pub fn husk(&self, args: &[&str]) -> Run {
        Command::new(husk_bin())
            .args(args)
            .env("HUSK_HOST", format!("unix://{}", self.socket.display()))
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    }

    /// Runs `husk ARGS` with `input` on stdin.
    pub fn husk_input(&self, args: &[&str], input: &[u8]) -> Run {
        use std::io::Write;
        let mut child = Command::new(husk_bin())
            .args(args)
            .env("HUSK_HOST", format!("unix://{}", self.socket.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap().into()
    }

    /// `husk inspect` of one object, as JSON.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.husk(&["inspect", name]).ok();
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
        v[0].clone()
    }

    /// The host PID of a running container's main process.
    pub fn pid(&self, name: &str) -> i32 {
        self.inspect(name)["State"]["Pid"].as_i64().expect("pid") as i32
    }

    /// Kills the daemon with SIGKILL (containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        c.wait().unwrap()
    }

    /// Polls `f` until it is true or `timeout` passes.
    pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        f()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test shows what the daemon said (its directory goes with it).
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- last lines of the daemon's log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        // Remove everything this daemon made even when the test failed: containers, sandboxes, then the daemon;
        // then check that nothing of them is left (leaks.rs), and fail the test if something is.
        let mut leaks = Vec::new();
        if self.child.is_some() {
            if let Ok(list) = std::process::Command::new(husk_bin())
                .args(["ps", "-aq", "--no-trunc"])
                .env("HUSK_HOST", format!("unix://{}", self.socket.display()))
                .output()
            {
                for id in String::from_utf8_lossy(&list.stdout).lines() {
                    let _ = self.husk(&["rm", "-f", id]);
                }
            }
            if let Ok(list) = std::process::Command::new(husk_bin())
                .args(["sandbox", "ls", "-q"])
                .env("HUSK_HOST", format!("unix://{}", self.socket.display()))
                .output()
            {
                for id in String::from_utf8_lossy(&list.stdout).lines() {
                    let _ = self.husk(&["sandbox", "rm", "-f", id]);
                }
            }
            // Network teardown finishes in the background: let it, so no CNI rule outlives the test.
            let clean = Daemon::eventually(Duration::from_secs(10), || {
                self.leftovers().is_empty() && self.fd_leaks().is_empty()
            });
            if !clean && !std::thread::panicking() {
                leaks = self.leftovers();
                leaks.extend(self.fd_leaks());
            }
            self.kill9();
        }
        remove_bridge_rules(&self.bridge);
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let dir = hierarchy.path().join(&self.cgroup_parent);
            if dir.is_dir() {
                if let Ok(children) = std::fs::read_dir(&dir) {
                    for c in children.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        // Unmount anything left under our directory so the temp dir can go.
        unmount_all_under(self.dir.path());
        assert!(
            leaks.is_empty(),
            "the daemon left behind, after removing every container and sandbox: {leaks:#?}"
        );
    }
}

/// Unmounts (lazily) every mount at or below `dir`, deepest first.
pub fn unmount_all_under(dir: &Path) {
    let base = dir.to_string_lossy().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&base))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

/// Deletes the iptables rules (filter and nat) that name `bridge`: husk's localnet guard and its per-network
/// masquerade and forward rules, left when a test deletes the bridge without removing its network.
pub fn remove_bridge_rules(bridge: &str) {
    for table in ["filter", "nat"] {
        let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rule) = line.strip_prefix("-A ")
                && (line.contains(&format!(" {bridge} ")) || line.contains(&format!(" {bridge}\"")))
            {
                let mut args = vec![
                    "-w".to_string(),
                    "-t".to_string(),
                    table.to_string(),
                    "-D".to_string(),
                ];
                args.extend(shell_words(rule));
                let _ = Command::new("iptables").args(&args).status();
            }
        }
    }
}

/// Splits an iptables-save rule into arguments (double-quoted words keep their spaces).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// The inode of a process's namespace of `kind`.
pub fn ns_inode(pid: i32, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("ns {kind} of {pid}: {e}"))
        .ino()
}

/// The inode of a namespace file (a pinned one).
pub fn file_inode(path: &str) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
