//! Tests of the `linux` driver that look at the host itself: namespace files and inodes, cgroup files,
//! security settings as the kernel reports them, and the daemon's durability.

mod common;

use std::time::Duration;

use common::{Daemon, IMAGE, alive, file_inode, ns_inode};

#[test]
fn sandbox_namespaces_are_pinned_files_that_containers_join() {
    let d = Daemon::start(&[]);
    d.husk(&["sandbox", "create", "--name", "pod"]).ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "a",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "b",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let sb = d.inspect("pod");
    let (a, b) = (d.pid("a"), d.pid("b"));
    for kind in ["net", "ipc", "uts"] {
        let pinned = sb["Namespaces"][kind].as_str().expect("namespace path");
        assert_eq!(ns_inode(a, kind), file_inode(pinned), "{kind}");
        assert_eq!(ns_inode(b, kind), file_inode(pinned), "{kind}");
        assert_ne!(
            ns_inode(a, kind),
            ns_inode(std::process::id() as i32, kind),
            "{kind} is not the host's"
        );
    }
    assert_ne!(ns_inode(a, "mnt"), ns_inode(b, "mnt"));
    assert_ne!(
        ns_inode(a, "pid"),
        ns_inode(b, "pid"),
        "no shared PID namespace unless asked"
    );
    assert!(
        sb["Pid"].is_null(),
        "no process holds a sandbox without a shared PID namespace"
    );
}

#[test]
fn standalone_namespaces_are_all_private() {
    let d = Daemon::start(&["--mode", "standalone"]);
    d.husk(&["run", "-d", "--name", "a", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["run", "-d", "--name", "b", IMAGE, "sleep", "1000"])
        .ok();
    assert_eq!(
        d.inspect("a")["Mode"],
        "standalone",
        "the daemon's default mode applies"
    );
    let (a, b) = (d.pid("a"), d.pid("b"));
    for kind in ["net", "ipc", "uts", "mnt", "pid"] {
        assert_ne!(ns_inode(a, kind), ns_inode(b, kind), "{kind}");
        assert_ne!(
            ns_inode(a, kind),
            ns_inode(std::process::id() as i32, kind),
            "{kind}"
        );
    }
}

/// The sandbox `run` makes for one container pins only its network namespace (its address survives a
/// restart); IPC, UTS and `/dev/shm` are the container's own, made at each start, as Docker's private IPC.
/// Two mounts in the daemon's namespace (root and network pin) instead of five: every container's start copies
/// that table.
#[test]
fn a_run_container_s_own_sandbox_pins_only_its_network() {
    let d = Daemon::start(&[]);
    let run_root = d.run_root.display().to_string();
    let mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let before = mounts().lines().filter(|l| l.contains(&run_root)).count();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "a",
        "--hostname",
        "web",
        "--shm-size",
        "8m",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let sb = d.inspect("a")["SandboxId"].as_str().unwrap().to_string();
    let sandbox = d.inspect(&sb);
    let ours: Vec<String> = mounts()
        .lines()
        .filter(|l| l.contains(&run_root))
        .map(str::to_string)
        .collect();
    assert_eq!(
        ours.len() - before,
        2,
        "root and network pin only:\n{}",
        ours.join("\n")
    );
    let namespaces = sandbox["Namespaces"].as_object().unwrap();
    assert_eq!(namespaces.keys().collect::<Vec<_>>(), ["net"], "{sandbox}");
    let pid = d.pid("a");
    assert_eq!(
        ns_inode(pid, "net"),
        file_inode(namespaces["net"].as_str().unwrap())
    );
    for kind in ["ipc", "uts"] {
        assert_ne!(
            ns_inode(pid, kind),
            ns_inode(std::process::id() as i32, kind),
            "{kind}"
        );
    }
    let inside = |cmd: &str| d.husk(&["exec", "a", "sh", "-c", cmd]).ok();
    assert_eq!(inside("hostname").trim(), "web");
    assert!(
        inside("df -k /dev/shm | tail -1").contains(" 8192 "),
        "its own /dev/shm, sized"
    );
    let address = inside("ip -4 addr show eth0 | grep inet");
    // (A new UTS namespace's inode number may be the freed one's: the kernel reuses them, so none is compared.)
    d.husk(&["restart", "-t", "1", "a"]).ok();
    assert_eq!(inside("hostname").trim(), "web", "the hostname comes back");
    assert_eq!(
        inside("ip -4 addr show eth0 | grep inet"),
        address,
        "the address stays"
    );
    d.husk(&["rm", "-f", "a"]).ok();
    assert!(
        Daemon::eventually(Duration::from_secs(5), || {
            mounts().lines().filter(|l| l.contains(&run_root)).count() == before
        }),
        "nothing of it left mounted"
    );
}

/// A sandbox on the host's network with a shared PID namespace: its pause joins only the namespaces it pinned
/// (there is no network namespace of its own). It used to panic the daemon's request task.
#[test]
fn host_network_sandbox_can_share_its_pid_namespace() {
    let d = Daemon::start(&[]);
    d.husk(&[
        "sandbox",
        "create",
        "--name",
        "hostpod",
        "--network",
        "host",
        "--share-pid",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "a",
        "--sandbox",
        "hostpod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let me = std::process::id() as i32;
    assert_eq!(
        ns_inode(d.pid("a"), "net"),
        ns_inode(me, "net"),
        "the host's network"
    );
    let pause = d.inspect("hostpod")["Pid"].as_i64().expect("pause pid") as i32;
    assert_eq!(ns_inode(d.pid("a"), "pid"), ns_inode(pause, "pid"));
    d.husk(&["sandbox", "rm", "-f", "hostpod"]).ok();
    d.assert_no_leftovers();
}

#[test]
fn shared_pid_sandbox_has_a_reaping_pause_process() {
    let d = Daemon::start(&[]);
    d.husk(&["sandbox", "create", "--name", "pod", "--share-pid"])
        .ok();
    let pause = d.inspect("pod")["Pid"].as_i64().expect("pause pid") as i32;
    assert!(alive(pause));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pause}/cmdline")).unwrap(),
        "husk\0sandbox-pause\0"
    );
    d.husk(&[
        "run",
        "-d",
        "--name",
        "a",
        "--sandbox",
        "pod",
        IMAGE,
        "sh",
        "-c",
        "(sleep 0.2 &); exec sleep 1000",
    ])
    .ok();
    assert_eq!(ns_inode(d.pid("a"), "pid"), ns_inode(pause, "pid"));
    let first = d.husk(&["exec", "a", "ps", "-o", "pid,comm"]).ok();
    assert!(
        first
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "husk"]),
        "pause is PID 1: {first}"
    );
    // The orphaned sleep was re-parented to the pause process, which must reap it.
    std::thread::sleep(Duration::from_millis(600));
    let stat = d.husk(&["exec", "a", "ps", "-o", "stat,comm"]).ok();
    assert!(
        !stat.lines().any(|l| l.trim_start().starts_with('Z')),
        "no zombies: {stat}"
    );
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    assert!(
        Daemon::eventually(Duration::from_secs(5), || !alive(pause)),
        "the pause process is gone with its sandbox"
    );
    assert!(
        Daemon::eventually(Duration::from_secs(5), || d.leftovers().is_empty()),
        "{:?}",
        d.leftovers()
    );
}

fn cgroup_file(d: &Daemon, controller: &str, id: &str, file: &str) -> String {
    let path = format!(
        "/sys/fs/cgroup/{controller}/{}/{id}/{file}",
        d.cgroup_parent
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn limits_are_applied_in_the_cgroup() {
    let d = Daemon::start(&[]);
    let id = d
        .husk(&[
            "run",
            "-d",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    if std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(
            cgroup_file(&d, "memory", &id, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(cgroup_file(&d, "cpu", &id, "cpu.cfs_quota_us"), "50000");
        assert_eq!(cgroup_file(&d, "cpu", &id, "cpu.cfs_period_us"), "100000");
        assert_eq!(cgroup_file(&d, "pids", &id, "pids.max"), "50");
    } else {
        let path = format!("/sys/fs/cgroup/{}/{id}", d.cgroup_parent);
        assert_eq!(
            std::fs::read_to_string(format!("{path}/memory.max"))
                .unwrap()
                .trim(),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            std::fs::read_to_string(format!("{path}/cpu.max"))
                .unwrap()
                .trim(),
            "50000 100000"
        );
        assert_eq!(
            std::fs::read_to_string(format!("{path}/pids.max"))
                .unwrap()
                .trim(),
            "50"
        );
    }
    // The limit is real: a burst of 80 background processes stops at 50, and the kernel counts the refusals.
    d.husk(&[
        "exec",
        "-d",
        &id,
        "sh",
        "-c",
        "for i in $(seq 1 80); do sleep 3 & done 2>/dev/null; sleep 3",
    ])
    .ok();
    let pids_dir = if std::path::Path::new("/sys/fs/cgroup/pids").is_dir() {
        "pids"
    } else {
        ""
    };
    assert!(
        Daemon::eventually(Duration::from_secs(5), || {
            let events = cgroup_file(&d, pids_dir, &id, "pids.events");
            events
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
                > 0
        }),
        "forks were refused at the limit"
    );
    let current: u64 = cgroup_file(&d, pids_dir, &id, "pids.current")
        .parse()
        .unwrap();
    assert!(current <= 50, "{current} processes");
}

fn status_field(text: &str, field: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn secure_defaults_and_privileged() {
    let d = Daemon::start(&[]);
    let status = d
        .husk(&["run", "--rm", IMAGE, "cat", "/proc/self/status"])
        .ok();
    // Docker's 14 default capabilities.
    assert_eq!(status_field(&status, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&status, "CapBnd"), "00000000a80425fb");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    // Masked and read-only paths.
    // Processes started by exec get the same confinement.
    d.husk(&["run", "-d", "--name", "confined", IMAGE, "sleep", "1000"])
        .ok();
    let status = d
        .husk(&["exec", "confined", "cat", "/proc/self/status"])
        .ok();
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "CapEff"), "00000000a80425fb");
    assert_ne!(
        d.husk(&["exec", "confined", "unshare", "-n", "true"]).code,
        0
    );
    // An added capability widens the default seccomp profile as Docker's does: with CAP_SYS_ADMIN, unshare works.
    let r = d.husk(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        IMAGE,
        "unshare",
        "-m",
        "echo",
        "widened",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "widened");
    // Masked: each listed path that has content on the host reads empty in a container.
    for path in [
        "/proc/timer_list",
        "/proc/keys",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/sched_debug",
    ] {
        if std::fs::read(path).is_ok_and(|c| !c.is_empty()) {
            let script = format!("wc -c < {path}");
            assert_eq!(
                d.husk(&["run", "--rm", IMAGE, "sh", "-c", &script]).ok(),
                "0",
                "{path}"
            );
        }
    }
    assert_ne!(
        d.husk(&[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "echo 1 > /proc/sys/kernel/domainname"
        ])
        .code,
        0
    );
    // The default seccomp profile refuses mount and unshare even with CAP_SYS_CHROOT etc.
    assert_ne!(
        d.husk(&["run", "--rm", IMAGE, "unshare", "-n", "true"])
            .code,
        0
    );
    // Privileged: every capability the daemon has (never more), no seccomp filter, no_new_privs off.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let status = d
        .husk(&[
            "run",
            "--rm",
            "--privileged",
            IMAGE,
            "cat",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(
        status_field(&status, "CapEff"),
        status_field(&own, "CapEff")
    );
    assert_eq!(status_field(&status, "Seccomp"), "0");
    assert_eq!(status_field(&status, "NoNewPrivs"), "0");
    assert_eq!(
        d.husk(&[
            "run",
            "--rm",
            "--privileged",
            IMAGE,
            "unshare",
            "-n",
            "true"
        ])
        .code,
        0
    );
    // cap-add and cap-drop; seccomp=unconfined.
    let status = d
        .husk(&[
            "run",
            "--rm",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CHOWN",
            IMAGE,
            "cat",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(status_field(&status, "CapEff"), "0000000000000001");
    let status = d
        .husk(&[
            "run",
            "--rm",
            "--security-opt",
            "seccomp=unconfined",
            IMAGE,
            "cat",
            "/proc/self/status",
        ])
        .ok();
    assert_eq!(status_field(&status, "Seccomp"), "0");
    // rlimits and oom_score_adj are inherited, never raised or lowered.
    let limits = d
        .husk(&["run", "--rm", IMAGE, "cat", "/proc/self/oom_score_adj"])
        .ok();
    assert_eq!(
        limits,
        std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
    );
}

#[test]
fn daemon_kill9_loses_nothing() {
    let mut d = Daemon::start(&[]);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "long",
        IMAGE,
        "sh",
        "-c",
        "echo before; while true; do sleep 0.1; done",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "short",
        IMAGE,
        "sh",
        "-c",
        "sleep 1; exit 42",
    ])
    .ok();
    let long_pid = d.pid("long");
    d.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(alive(long_pid), "containers outlive the daemon");
    d.spawn(&[]);
    let ps = d.husk(&["ps"]).ok();
    assert!(ps.contains("long") && !ps.contains("short"), "{ps}");
    assert_eq!(
        d.inspect("short")["State"]["ExitCode"],
        42,
        "an exit while the daemon was down is recorded"
    );
    assert_eq!(d.inspect("short")["State"]["Status"], "exited");
    assert_eq!(
        d.husk(&["exec", "long", "echo", "still here"]).ok(),
        "still here"
    );
    assert!(d.husk(&["logs", "long"]).ok().contains("before"));
    d.husk(&["stop", "-t", "1", "long"]).ok();
    assert!(!alive(long_pid));
    assert_eq!(d.inspect("long")["State"]["Status"], "exited");
}

#[test]
fn sigterm_leaves_containers_running() {
    let mut d = Daemon::start(&[]);
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    let pid = d.pid("c");
    let status = d.terminate();
    assert!(status.success(), "clean shutdown: {status}");
    assert!(alive(pid));
    d.spawn(&[]);
    assert_eq!(d.inspect("c")["State"]["Status"], "running");
}

#[test]
fn interrupted_create_is_rolled_back_on_restart() {
    for point in [
        "create_container:sandbox_ready",
        "create_container:driver_created",
    ] {
        let mut d = Daemon::start(&[]);
        d.kill9();
        d.spawn(&[("HUSK_FAILPOINT", point)]);
        let r = d.husk(&["run", "-d", "--name", "half", IMAGE, "sleep", "1000"]);
        assert_ne!(r.code, 0, "the daemon died mid-create at {point}");
        d.kill9();
        d.spawn(&[]);
        assert_eq!(
            d.husk(&["ps", "-aq"]).ok(),
            "",
            "{point}: the half-made container is gone"
        );
        assert_eq!(
            d.husk(&["sandbox", "ls", "-q"]).ok(),
            "",
            "{point}: its sandbox too"
        );
        assert!(
            Daemon::eventually(Duration::from_secs(5), || d.leftovers().is_empty()),
            "{point}: {:?}",
            d.leftovers()
        );
        // The name is free again.
        d.husk(&["run", "-d", "--name", "half", IMAGE, "sleep", "1000"])
            .ok();
    }
}

#[test]
fn interrupted_remove_is_finished_on_restart() {
    let mut d = Daemon::start(&[]);
    d.kill9();
    d.spawn(&[("HUSK_FAILPOINT", "remove_container:marked")]);
    d.husk(&["run", "-d", "--name", "gone", IMAGE, "sleep", "1000"])
        .ok();
    let pid = d.pid("gone");
    assert_ne!(d.husk(&["rm", "-f", "gone"]).code, 0);
    d.kill9();
    d.spawn(&[]);
    assert_eq!(d.husk(&["ps", "-aq"]).ok(), "");
    assert!(!alive(pid));
    assert!(
        Daemon::eventually(Duration::from_secs(5), || d.leftovers().is_empty()),
        "{:?}",
        d.leftovers()
    );
}

#[test]
fn second_daemon_on_the_same_root_is_refused() {
    let d = Daemon::start(&[]);
    let out = std::process::Command::new(common::husk_bin())
        .args(["daemon", "--root"])
        .arg(&d.root)
        .arg("--run-root")
        .arg(d.dir.path().join("run2"))
        .arg("--socket")
        .arg(d.dir.path().join("other.sock"))
        .arg("--config")
        .arg(d.dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another husk daemon"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn info_reports_driver_modes_and_cgroups() {
    let d = Daemon::start(&[]);
    let info: serde_json::Value =
        serde_json::from_str(&d.husk(&["info", "--format", "json"]).ok()).unwrap();
    assert_eq!(info["DefaultDriver"], "linux");
    assert_eq!(info["DefaultMode"], "sandbox");
    let linux = &info["Drivers"][0];
    assert_eq!(linux["name"], "linux");
    assert_eq!(linux["capabilities"]["sandbox"], true);
    assert_eq!(linux["capabilities"]["standalone"], true);
    let v = linux["details"]["cgroup_version"].as_str().unwrap();
    assert!(v == "1" || v == "2");
    // The daemon turned favordynmods on (or found it on): the host's cgroup2 mount says so.
    let favored = linux["details"]["cgroup_favordynmods"].as_str().unwrap();
    assert!(favored.starts_with("on"), "{favored}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2 = mounts
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .expect("the test hosts have a cgroup2 mount");
    assert!(cgroup2.contains("favordynmods"), "{cgroup2}");
    assert!(d.husk(&["version"]).ok().contains("Server: husk"));
}

#[test]
fn names_and_id_prefixes_resolve() {
    let d = Daemon::start(&[]);
    let id = d
        .husk(&["run", "-d", "--name", "named", IMAGE, "sleep", "1000"])
        .ok();
    assert_eq!(d.inspect(&id[..8])["Name"], "named");
    assert_eq!(d.inspect("named")["Id"], id.as_str());
    d.husk(&["rename", "named", "renamed"]).ok();
    assert_eq!(d.inspect(&id)["Name"], "renamed");
}

/// `--format` takes table, json or a Go template over Docker's fields, as Docker's does; anything else is refused.
#[test]
fn format_templates_print_dockers_fields() {
    let d = Daemon::start(&[]);
    let id = d
        .husk(&[
            "run", "-d", "--name", "fmt", "--label", "tier=web", IMAGE, "sleep", "1000",
        ])
        .ok();
    let pid = d.inspect("fmt")["State"]["Pid"].as_i64().unwrap();
    assert_eq!(
        d.husk(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Pid}} {{.Config.Cmd}}",
            "fmt"
        ])
        .ok(),
        format!("running {pid} [sleep 1000]")
    );
    assert_eq!(
        d.husk(&["inspect", "--format", "{{json .Config.Labels}}", "fmt"])
            .ok(),
        r#"{"tier":"web"}"#
    );
    assert_eq!(
        d.husk(&["ps", "--format", "{{.Names}}\\t{{.State}}\\t{{.Labels}}"])
            .ok(),
        "fmt\trunning\ttier=web"
    );
    let table = d
        .husk(&["ps", "--format", "table {{.ID}}\\t{{.Names}}"])
        .ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("CONTAINER ID") && lines[0].ends_with("NAMES"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(&id[..12]) && lines[1].ends_with("fmt"),
        "{table}"
    );
    let images = d
        .husk(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert!(images.lines().any(|l| l == IMAGE), "{images} names {IMAGE}");
    for (args, words) in [
        (
            vec!["ps", "--format", "yaml"],
            "neither table, json nor a Go template",
        ),
        (vec!["ps", "--format", "{{.ID"], "bad template"),
        (
            vec!["stats", "--no-stream", "--format", "{{.ID}}"],
            "use table or json",
        ),
    ] {
        let r = d.husk(&args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(r.stderr.contains(words), "{args:?}: {}", r.stderr);
    }
    // A reader that goes away ends the CLI quietly, as it ends Docker's: SIGPIPE's code, no panic, no message.
    // The reader is gone before the CLI starts (a reader closed after the spawn could lose the race with a CLI
    // that already wrote everything into the pipe's buffer, as it once did in a loaded CI run).
    for args in [vec!["ps", "-a"], vec!["images"], vec!["inspect", "fmt"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(common::husk_bin())
            .args(&args)
            .env("HUSK_HOST", format!("unix://{}", d.socket.display()))
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(141), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
    // A template that fails on an object says so and exits non-zero.
    let r = d.husk(&["inspect", "-f", "{{.State.Status.Nope}}", "fmt"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("template"), "{}", r.stderr);
}

/// Docker's `attach`, `port`, `tag` and `rmi`.
#[test]
fn attach_port_tag_and_rmi() {
    let d = Daemon::start(&[]);
    // attach: the rest of the output and the exit code; input when the container has it open.
    // It ends only once told to (a busy machine can take seconds to get to the attach).
    d.husk(&[
        "run",
        "-d",
        "--name",
        "late",
        IMAGE,
        "sh",
        "-c",
        "until [ -e /tmp/go ]; do sleep 0.1; done; echo hello; exit 4",
    ])
    .ok();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let r = d.husk(&["exec", "late", "touch", "/tmp/go"]);
            if r.code != 0 {
                // Seen once in CI ("container late is not running"): say what became of it.
                let state = d.inspect("late");
                let id = state["Id"].as_str().unwrap_or_default();
                panic!(
                    "exec failed ({}): {}\nstate: {}\nshim.log: {}",
                    r.code,
                    r.stderr,
                    state["State"],
                    std::fs::read_to_string(d.root.join("c").join(id).join("shim.log"))
                        .unwrap_or_default()
                );
            }
        });
        d.husk(&["attach", "late"])
    });
    assert_eq!((r.code, r.stdout.as_str()), (4, "hello\n"), "{}", r.stderr);
    let r = d.husk(&["attach", "late"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("stopped container"), "{}", r.stderr);
    d.husk(&[
        "run",
        "-d",
        "-i",
        "--name",
        "reader",
        IMAGE,
        "sh",
        "-c",
        "read x; echo got $x",
    ])
    .ok();
    let r = d.husk_input(&["attach", "reader"], b"abc\n");
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "got abc\n"),
        "{}",
        r.stderr
    );

    // port: every published port, or where one is.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:8080");
    d.husk(&[
        "run", "-d", "--name", "web", "-p", &publish, IMAGE, "sleep", "1000",
    ])
    .ok();
    assert_eq!(
        d.husk(&["port", "web"]).ok(),
        format!("8080/tcp -> 127.0.0.1:{port}")
    );
    assert_eq!(
        d.husk(&["port", "web", "8080"]).ok(),
        format!("127.0.0.1:{port}")
    );
    let r = d.husk(&["port", "web", "9/udp"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no public port '9/udp'"), "{}", r.stderr);

    // tag and rmi, as `image tag` and `image rm`.
    d.husk(&["tag", IMAGE, "other/name:2"]).ok();
    assert!(d.husk(&["images", "-q"]).ok().lines().count() == 1);
    let listed = d
        .husk(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert!(listed.lines().any(|l| l == "other/name:2"), "{listed}");
    d.husk(&["rmi", "other/name:2"]).ok();
    let listed = d
        .husk(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .ok();
    assert!(!listed.contains("other/name"), "{listed}");
}

/// `husk container ...` is Docker's management form of the container commands; `container prune` removes the
/// stopped containers (and the sandboxes made for them), asking first.
#[test]
fn container_commands_and_prune() {
    let d = Daemon::start(&[]);
    let done = d.husk(&["container", "run", "-d", IMAGE, "true"]).ok();
    let created = d.husk(&["container", "create", IMAGE, "true"]).ok();
    let running = d
        .husk(&["run", "-d", "--name", "keep", IMAGE, "sleep", "1000"])
        .ok();
    assert_eq!(d.husk(&["container", "wait", &done]).ok(), "0");
    let listed = d.husk(&["container", "ls", "-aq", "--no-trunc"]).ok();
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert_eq!(
        d.husk(&["container", "ps", "-q", "--no-trunc"]).ok(),
        running
    );

    let asked = d.husk(&["container", "prune"]).ok();
    assert!(
        asked.starts_with("WARNING! This will remove:\n  - all stopped containers"),
        "{asked}"
    );
    assert_eq!(
        d.husk(&["ps", "-aq"]).ok().lines().count(),
        3,
        "no answer is no"
    );

    let out = d.husk(&["container", "prune", "-f"]).ok();
    assert!(out.starts_with("Deleted Containers:"), "{out}");
    assert!(out.contains(&done) && out.contains(&created), "{out}");
    assert!(!out.contains(&running), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert_eq!(d.husk(&["ps", "-aq", "--no-trunc"]).ok(), running);
    assert_eq!(
        d.husk(&["sandbox", "ls", "-q"]).ok().lines().count(),
        1,
        "the sandboxes made for the pruned containers went with them"
    );
    // Nothing left to prune.
    assert_eq!(
        d.husk(&["container", "prune", "-f"]).ok(),
        "Total reclaimed space: 0B"
    );

    // system prune: stopped containers, nameless images and, with --volumes, unused anonymous volumes.
    let stopped = d.husk(&["run", "-d", "-v", "/data", IMAGE, "true"]).ok();
    assert_eq!(d.husk(&["wait", &stopped]).ok(), "0");
    let volume = d.inspect(&stopped)["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    let asked = d.husk_input(&["system", "prune", "--volumes"], b"n\n").ok();
    assert!(
        asked.contains("all stopped containers")
            && asked.contains("all nameless images")
            && asked.contains("anonymous volumes"),
        "{asked}"
    );
    assert!(d.husk(&["ps", "-aq"]).ok().contains(&stopped[..12]));
    let out = d.husk_input(&["system", "prune", "--volumes"], b"y\n").ok();
    assert!(out.contains(&stopped) && out.contains(&volume), "{out}");
    assert_eq!(d.husk(&["ps", "-aq", "--no-trunc"]).ok(), running);
    assert_eq!(d.husk(&["volume", "ls", "-q"]).ok(), "");
    assert!(
        d.husk(&["images", "-q"]).ok().lines().count() == 1,
        "a named image stays"
    );
}

/// `husk events` streams what happens to containers as Docker names it, with name, image and exit code.
#[test]
fn events_stream_what_happens_to_containers() {
    let d = Daemon::start(&[]);
    let mut child = std::process::Command::new(common::husk_bin())
        .args(["events", "--format", "json"])
        .env("HUSK_HOST", format!("unix://{}", d.socket.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                return;
            }
        }
    });
    // The stream is live only: wait until it sees a probe container.
    let mut seen = Vec::new();
    for _ in 0..50 {
        d.husk(&["create", "--name", "probe", IMAGE, "true"]).ok();
        d.husk(&["rm", "probe"]).ok();
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(e);
            break;
        }
    }
    assert!(!seen.is_empty(), "the event stream never started");
    let r = d.husk(&["run", "--rm", "--name", "ev", IMAGE, "sh", "-c", "exit 3"]);
    assert_eq!(r.code, 3);
    d.husk(&["run", "-d", "--name", "ev2", IMAGE, "sleep", "100"])
        .ok();
    d.husk(&["pause", "ev2"]).ok();
    d.husk(&["unpause", "ev2"]).ok();
    d.husk(&["rm", "-f", "ev2"]).ok();
    let mut got: Vec<String> = Vec::new();
    while let Ok(e) = rx.recv_timeout(Duration::from_secs(5)) {
        assert_eq!(e["Type"], "container");
        let attributes = &e["Actor"]["Attributes"];
        assert_eq!(attributes["image"], IMAGE, "{e}");
        let name = attributes["name"].as_str().unwrap().to_string();
        if name == "probe" {
            continue;
        }
        let action = e["Action"].as_str().unwrap().to_string();
        got.push(match attributes["exitCode"].as_str() {
            Some(code) => format!("{name} {action} {code}"),
            None => format!("{name} {action}"),
        });
        if got.last().is_some_and(|l| l == "ev2 destroy") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        got,
        [
            "ev create",
            "ev start",
            "ev die 3",
            "ev destroy",
            "ev2 create",
            "ev2 start",
            "ev2 pause",
            "ev2 unpause",
            "ev2 die 137",
            "ev2 destroy",
        ],
    );
}

#[test]
fn the_daemons_debug_log_stays_out_of_container_output() {
    let mut d = Daemon::start(&[]);
    d.kill9();
    d.spawn(&[("HUSK_LOG", "debug")]);
    let run = d.husk(&["run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("out\n", "err\n")
    );
    d.husk(&["run", "-d", "--name", "quiet", IMAGE, "sleep", "1000"])
        .ok();
    let exec = d.husk(&["exec", "quiet", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!(exec.code, 0, "{}", exec.stderr);
    assert_eq!(
        (exec.stdout.as_str(), exec.stderr.as_str()),
        ("out\n", "err\n")
    );
    d.husk(&["rm", "-f", "quiet"]).ok();
    d.assert_no_leftovers();
}

#[test]
fn cpu_shares_and_cpusets_from_the_command_line() {
    if !std::path::Path::new("/sys/fs/cgroup/cpu").is_dir() {
        return; // cgroup v1 files are read below; the CRI tests cover cgroup v2 weights
    }
    let d = Daemon::start(&[]);
    let id = d
        .husk(&[
            "run",
            "-d",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--cpuset-mems",
            "0",
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    assert_eq!(cgroup_file(&d, "cpu", &id, "cpu.shares"), "512");
    assert_eq!(cgroup_file(&d, "cpuset", &id, "cpuset.cpus"), "0");
    assert_eq!(cgroup_file(&d, "cpuset", &id, "cpuset.mems"), "0");
    d.husk(&["update", "--cpu-shares", "256", &id]).ok();
    assert_eq!(cgroup_file(&d, "cpu", &id, "cpu.shares"), "256");
    let bad = d.husk(&["run", "--rm", "--cpu-shares", "1", IMAGE, "true"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("CPU shares"), "{}", bad.stderr);
    d.husk(&["rm", "-f", &id]).ok();
    d.assert_no_leftovers();
}

/// The leak checker every test ends with (tests/common/leaks.rs) sees what a daemon leaves: a mount under its
/// directories, a process naming them, a cgroup under its parent, an iptables rule naming one of its addresses.
#[test]
fn the_leak_checker_finds_what_is_left_behind() {
    use std::os::unix::process::CommandExt;
    let d = Daemon::start(&[]);
    assert_eq!(d.leftovers(), Vec::<String>::new());
    let base = d.dir.path().to_path_buf();
    let (source, target) = (base.join("stray-src"), base.join("stray-mnt"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["--bind"])
        .arg(&source)
        .arg(&target)
        .status()
        .unwrap();
    assert!(mounted.success());
    // A process whose command line names the daemon's directory, as a shim's does.
    let mut stray = std::process::Command::new("sleep")
        .arg0(base.join("stray"))
        .arg("1000")
        .spawn()
        .unwrap();
    let cgroup = std::path::Path::new("/sys/fs/cgroup/pids")
        .join(&d.cgroup_parent)
        .join("stray");
    let has_pids_v1 = std::path::Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists();
    if has_pids_v1 {
        std::fs::create_dir_all(&cgroup).unwrap();
    }
    let host = format!("{}.77/32", d.subnet.strip_suffix(".0/24").unwrap());
    let rule = ["FORWARD", "-d", &host, "-j", "ACCEPT"];
    let iptables = |op: &str| {
        std::process::Command::new("iptables")
            .args(["-w", op])
            .args(rule)
            .status()
            .unwrap()
            .success()
    };
    assert!(iptables("-A"));

    let left = d.leftovers();
    let found = |what: &str| left.iter().any(|l| l.contains(what));
    assert!(found(&format!("mount {}", target.display())), "{left:#?}");
    assert!(found(&format!("process {}", stray.id())), "{left:#?}");
    assert!(found(&host), "{left:#?}");
    if has_pids_v1 {
        assert!(found(&format!("cgroup {}", cgroup.display())), "{left:#?}");
    }

    let _ = stray.kill();
    let _ = stray.wait();
    assert!(iptables("-D"));
    if has_pids_v1 {
        std::fs::remove_dir(&cgroup).unwrap();
    }
    assert!(
        std::process::Command::new("umount")
            .arg(&target)
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(d.leftovers(), Vec::<String>::new());
}

#[test]
fn a_rule_names_a_leaked_host_only_by_its_whole_address() {
    let names = common::leaks::names_a_host_of;
    assert!(names(
        "-A CNI-DN-1 -p tcp --dport 8080 -j DNAT --to-destination 10.101.7.5:80",
        "10.101.7"
    ));
    assert!(names(
        "-A POSTROUTING -s 10.101.7.12/32 -m comment --comment \"x\" -j CNI-abc",
        "10.101.7"
    ));
    assert!(!names(
        "-A POSTROUTING -s 10.101.7.0/24 ! -o hk1 -j MASQUERADE",
        "10.101.7"
    ));
    assert!(!names("-A X -d 110.101.7.5/32 -j ACCEPT", "10.101.7"));
    assert!(!names("-A X -d 10.101.70.5/32 -j ACCEPT", "10.101.7"));
    assert!(!names("-A X -d 10.101.7.128/25 -j ACCEPT", "10.101.7"));
}

#[test]
fn fd_growth_names_what_grew_beyond_the_process_lifetime_handles() {
    use common::leaks::{FdCensus, fd_growth};
    let census = |items: &[(&str, usize)]| -> FdCensus {
        items.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    let baseline = census(&[("socket", 3), ("pipe", 2), ("/dev/null", 1)]);
    assert!(fd_growth(&baseline, &baseline).is_empty());
    assert!(fd_growth(&baseline, &census(&[("socket", 1), ("/", 1)])).is_empty());
    assert_eq!(
        fd_growth(
            &baseline,
            &census(&[("socket", 4), ("pipe", 2), ("/", 2), ("anon_inode", 1)])
        ),
        vec![
            "1 more open fd(s) to /",
            "1 more open fd(s) to anon_inode",
            "1 more open fd(s) to socket"
        ]
    );
}

/// `kill -9` of a container's shim (its monitor): the container's processes are killed rather than left to run
/// unmanaged, the container is reported exited with code 255 and why, and its removal leaves nothing behind.
#[test]
fn a_killed_shim_ends_its_container_with_a_reason() {
    let d = Daemon::start(&[]);
    let id = d
        .husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    let pid = d.pid("c");
    let shim = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("husk\0shim\0") && c.contains(&id)
            })
        })
        .expect("the container's shim");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        Daemon::eventually(
            Duration::from_secs(10),
            || d.inspect("c")["State"]["Status"] == "exited"
        ),
        "{}",
        d.inspect("c")
    );
    let state = d.inspect("c")["State"].clone();
    assert_eq!(state["ExitCode"], 255, "{state}");
    assert!(state["Error"].as_str().unwrap().contains("shim"), "{state}");
    assert!(
        Daemon::eventually(Duration::from_secs(5), || !alive(pid)),
        "the container's process was left running without its monitor"
    );
    d.husk(&["rm", "c"]).ok();
    d.assert_no_leftovers();
}

/// `kill -9` of a shared-PID sandbox's pause process ends the PID namespace and with it every container of the
/// sandbox: they are reported exited, the sandbox not ready, a start into it is refused naming why, and removing
/// the sandbox leaves nothing behind.
#[test]
fn a_killed_pause_process_leaves_its_sandbox_not_ready() {
    let d = Daemon::start(&[]);
    d.husk(&["sandbox", "create", "--name", "pod", "--share-pid"])
        .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "a",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let pause: serde_json::Value =
        serde_json::from_str(&d.husk(&["sandbox", "inspect", "pod"]).ok()).unwrap();
    let pause = pause[0]["Pid"].as_i64().expect("pause pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = || {
        let v: serde_json::Value =
            serde_json::from_str(&d.husk(&["sandbox", "inspect", "pod"]).ok()).unwrap();
        v[0]["Status"].as_str().unwrap_or_default().to_string()
    };
    assert!(
        Daemon::eventually(Duration::from_secs(10), || status() == "notready"),
        "sandbox status {}",
        status()
    );
    // The sandbox is marked at once (the pause process's death is watched); each container's exit follows when
    // its monitor reports it.
    assert!(
        Daemon::eventually(
            Duration::from_secs(10),
            || d.inspect("a")["State"]["Status"] == "exited"
        ),
        "{}",
        d.inspect("a")["State"]
    );
    let start = d.husk(&["start", "a"]);
    assert_ne!(start.code, 0);
    assert!(
        start.stderr.contains("sandbox pod is gone"),
        "{}",
        start.stderr
    );
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    assert_eq!(d.husk(&["ps", "-aq"]).ok(), "");
    d.assert_no_leftovers();
}

/// A pause process killed while its sandbox holds no container is noticed at once (not at the next container's
/// exit or the next daemon start): the sandbox is marked not ready, as kubelet's next status call must see.
#[test]
fn a_pause_process_dying_in_an_empty_sandbox_is_noticed_at_once() {
    let d = Daemon::start(&[]);
    d.husk(&["sandbox", "create", "--name", "empty", "--share-pid"])
        .ok();
    let inspect = || -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&d.husk(&["sandbox", "inspect", "empty"]).ok()).unwrap();
        v[0].clone()
    };
    let pause = inspect()["Pid"].as_i64().expect("pause pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        Daemon::eventually(Duration::from_secs(5), || inspect()["Status"] == "notready"),
        "{}",
        inspect()
    );
    // A removal is not a death: another sandbox removed leaves no warning behind.
    d.husk(&["sandbox", "create", "--name", "gone", "--share-pid"])
        .ok();
    d.husk(&["sandbox", "rm", "gone"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.log().matches("marked not ready").count(),
        1,
        "{}",
        d.log()
    );
    d.husk(&["sandbox", "rm", "-f", "empty"]).ok();
}

/// A container's own sandbox (the one `run` made for it) that died comes back when the container starts again,
/// as a Docker container's namespaces do after a reboot: same hostname, a network address again.
#[test]
fn a_containers_own_sandbox_comes_back_when_it_starts_again() {
    let d = Daemon::start(&[]);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "solo",
        "--share-pid",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let hostname = d.husk(&["exec", "solo", "hostname"]).ok();
    let sandbox = |what: &str| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&d.husk(&["sandbox", "inspect", "solo"]).ok()).unwrap();
        v[0][what].clone()
    };
    let pause = sandbox("Pid").as_i64().expect("pause pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        Daemon::eventually(Duration::from_secs(10), || sandbox("Status") == "notready"),
        "{}",
        sandbox("Status")
    );
    assert_eq!(d.inspect("solo")["State"]["Status"], "exited");

    d.husk(&["start", "solo"]).ok();
    assert_eq!(sandbox("Status"), "ready");
    assert_ne!(
        sandbox("Pid").as_i64(),
        Some(i64::from(pause)),
        "a new pause process"
    );
    assert_eq!(d.husk(&["exec", "solo", "hostname"]).ok(), hostname);
    let addresses = d
        .husk(&["exec", "solo", "ip", "-4", "-o", "addr", "show", "eth0"])
        .ok();
    assert!(addresses.contains("inet "), "{addresses}");
    // Its PID namespace is whole again: the new pause process is its PID 1.
    let init = d.husk(&["exec", "solo", "cat", "/proc/1/cmdline"]).ok();
    assert!(init.contains("pause"), "{init:?}");
    d.husk(&["rm", "-f", "solo"]).ok();
}

/// What a reboot of the host takes from a stopped daemon, as far as a test can take it: every process of its
/// containers and shims, every mount under its directories (the run root is a tmpfs at boot), its cgroups, its
/// bridge and iptables rules.
fn reboot_under(d: &Daemon) {
    let base = d.dir.path().to_string_lossy().to_string();
    let mut pids = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let parent = hierarchy.path().join(&d.cgroup_parent);
        for procs in walk_files(&parent, "cgroup.procs") {
            let text = std::fs::read_to_string(procs).unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.parse::<i32>().ok()));
        }
    }
    pids.extend(
        common::leaks::processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(&base))
            .map(|p| p.pid as i32),
    );
    for &pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(Daemon::eventually(Duration::from_secs(10), || pids
        .iter()
        .all(|p| !common::alive(*p))));
    common::unmount_all_under(d.dir.path());
    std::fs::remove_dir_all(&d.run_root).unwrap();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let parent = hierarchy.path().join(&d.cgroup_parent);
        let mut dirs: Vec<std::path::PathBuf> = walk_files(&parent, "cgroup.procs")
            .into_iter()
            .filter_map(|p| p.parent().map(|p| p.to_path_buf()))
            .collect();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
    common::remove_bridge_rules(&d.bridge);
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &d.bridge])
        .status();
}

/// Every file named `name` under `dir`, at any depth.
fn walk_files(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(walk_files(&path, name));
        } else if e.file_name() == name {
            found.push(path);
        }
    }
    found
}

/// After a reboot of the host, as with Docker: a container with `--restart always` runs again by itself when the
/// daemon starts, one without is exited and starts on `husk start`; each gets its own sandbox back, with a
/// network address, and everything is removed without a trace.
#[test]
fn after_a_reboot_containers_start_again_as_with_docker() {
    let mut d = Daemon::start(&[]);
    for (name, restart) in [("always", "always"), ("manual", "no")] {
        d.husk(&[
            "run",
            "-d",
            "--name",
            name,
            "--restart",
            restart,
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    }
    let before = [d.pid("always"), d.pid("manual")];
    assert!(d.terminate().success());
    reboot_under(&d);
    assert!(before.iter().all(|p| !common::alive(*p)));
    assert!(!d.run_root.exists());
    d.spawn(&[]);

    let status = |name: &str| {
        d.inspect(name)["State"]["Status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        Daemon::eventually(Duration::from_secs(20), || status("always") == "running"),
        "{}",
        d.inspect("always")["State"]
    );
    assert_ne!(d.pid("always"), before[0]);
    assert_eq!(
        status("manual"),
        "exited",
        "{}",
        d.inspect("manual")["State"]
    );
    d.husk(&["start", "manual"]).ok();
    for name in ["always", "manual"] {
        let addresses = d
            .husk(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"])
            .ok();
        assert!(addresses.contains("inet "), "{name}: {addresses}");
    }
    d.husk(&["rm", "-f", "always", "manual"]).ok();
}

#[test]
fn inspect_with_the_daemon_down_says_so_rather_than_no_such_object() {
    // Found by the soak test: `inspect` of a running container, in flight as the daemon stopped, said "no such
    // object" (every kind's lookup failed to connect, and each failure read as not found).
    let mut d = Daemon::start(&[]);
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    let status = d.terminate();
    assert!(status.success(), "{status}");
    let r = d.husk(&["inspect", "c"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot connect to the husk daemon") && !r.stderr.contains("no such"),
        "{}",
        r.stderr
    );
    d.spawn(&[]);
    assert_eq!(d.inspect("c")["State"]["Status"], "running");
    let missing = d.husk(&["inspect", "nothing-by-this-name"]);
    assert!(
        missing.code != 0
            && missing
                .stderr
                .contains("no such object: nothing-by-this-name"),
        "{}",
        missing.stderr
    );
}
