//! The driver conformance suite: the same behaviour, checked through the CLI against a real daemon, for every
//! driver. Each test is written once and instantiated per driver by `conformance!` at the bottom.
//!
//! Checks are made from inside containers where possible (namespace identities via `/proc/self/ns/*`), so they
//! hold for drivers whose containers are not host processes (the `vm` driver).

mod common;
use husk_testkit::registry;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, IMAGE, MEMORY_HOG};

fn daemon(driver: &str) -> Daemon {
    Daemon::start_driver(driver)
}

/// Whether the daemon's `driver` says it can do `feature` (a field of `husk_core::Capabilities`), from `husk info`.
fn can(d: &Daemon, driver: &str, feature: &str) -> bool {
    let info: serde_json::Value =
        serde_json::from_str(&d.husk(&["info", "--format", "json"]).ok()).expect("info JSON");
    info["Drivers"]
        .as_array()
        .and_then(|list| list.iter().find(|x| x["name"] == driver))
        .and_then(|x| x["capabilities"][feature].as_bool())
        .unwrap_or_else(|| panic!("no capability {feature} of driver {driver} in {info}"))
}

/// For a driver without `feature`: checks that `args` is refused with one line naming the driver and `what`, and
/// that nothing was made; returns true (the caller's test ends there). False when the driver has the feature.
fn refused_without(d: &Daemon, driver: &str, feature: &str, what: &str, args: &[&str]) -> bool {
    if can(d, driver, feature) {
        return false;
    }
    let r = d.husk(args);
    assert_ne!(r.code, 0, "{args:?} should be refused");
    assert!(
        r.stderr
            .contains(&format!("driver {driver} does not support {what}")),
        "{args:?}: {}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert_eq!(d.husk(&["ps", "-aq"]).ok(), "", "nothing was made");
    true
}

/// One `stats --no-stream` reading of `container` (the `stats` object of its JSON).
fn stats_of(d: &Daemon, container: &str) -> serde_json::Value {
    let all: serde_json::Value = serde_json::from_str(
        &d.husk(&["stats", "--no-stream", "--format", "json", container])
            .ok(),
    )
    .unwrap();
    all[0]["stats"].clone()
}

/// `top` of `container` once it shows `command`: `run -d` returns when the container is started, and its
/// process may still be in its `execve` (under TCG for a while), when /proc shows no command line yet.
fn top_showing(d: &Daemon, container: &str, command: &str) -> String {
    let mut top = String::new();
    let shown = Daemon::eventually(Duration::from_secs(10), || {
        top = d.husk(&["top", container]).ok();
        top.contains(command)
    });
    assert!(shown, "{top}");
    top
}

fn ns(d: &Daemon, container: &str, kind: &str) -> String {
    d.husk(&[
        "exec",
        container,
        "readlink",
        &format!("/proc/self/ns/{kind}"),
    ])
    .ok()
}

/// `run` streams output and exits with the container's code; `--rm` leaves nothing.
pub fn run_streams_output_and_exit_code(driver: &str) {
    let d = daemon(driver);
    let r = d.husk(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert_eq!(r.stdout, "out\n");
    assert_eq!(r.stderr, "err\n");
    assert_eq!(
        d.husk(&["ps", "-aq"]).ok(),
        "",
        "--rm removed the container"
    );
    assert_eq!(
        d.husk(&["sandbox", "ls", "-q"]).ok(),
        "",
        "--rm removed the sandbox made for it"
    );
}

/// A command the image lacks (127) or cannot execute (126): `run` and `exec` exit as a shell (and Docker) would,
/// with runc's words, and a failed `run --rm` leaves nothing.
pub fn commands_that_cannot_run_exit_as_a_shell_would(driver: &str) {
    let d = daemon(driver);
    let cases = [
        (
            "nonexist",
            127,
            "exec: \"nonexist\": executable file not found in $PATH",
        ),
        (
            "/etc/passwd",
            126,
            "exec: \"/etc/passwd\": permission denied",
        ),
    ];
    for (command, code, words) in cases {
        let r = d.husk(&["run", "--rm", IMAGE, command]);
        assert_eq!(r.code, code, "run {command}: {}", r.stderr);
        assert!(r.stderr.contains(words), "run {command}: {}", r.stderr);
    }
    assert_eq!(d.husk(&["ps", "-aq"]).ok(), "", "nothing left by run --rm");
    assert_eq!(d.husk(&["sandbox", "ls", "-q"]).ok(), "");
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "60"])
        .ok();
    for (command, code, words) in cases {
        let r = d.husk(&["exec", "c", command]);
        assert_eq!(r.code, code, "exec {command}: {}", r.stderr);
        assert!(r.stderr.contains(words), "exec {command}: {}", r.stderr);
    }
    assert_eq!(
        d.husk(&["exec", "c", "true"]).code,
        0,
        "the container runs on"
    );
}

/// Two containers in one sandbox share network, IPC and UTS, not the mount namespace, and talk over localhost.
pub fn sandbox_containers_share_network_ipc_uts(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "sandbox",
        "create",
        "--name",
        "pod",
        "--hostname",
        "podhost",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "web",
        "--sandbox",
        "pod",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "side",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    for kind in ["net", "ipc"] {
        assert_eq!(
            ns(&d, "web", kind),
            ns(&d, "side", kind),
            "{kind} namespace shared"
        );
    }
    // Docker Engine cannot put two containers in one UTS namespace; its containers get the sandbox's hostname
    // (checked below) in namespaces of their own.
    if driver != "docker" {
        assert_eq!(
            ns(&d, "web", "uts"),
            ns(&d, "side", "uts"),
            "uts namespace shared"
        );
    }
    assert_ne!(
        ns(&d, "web", "mnt"),
        ns(&d, "side", "mnt"),
        "each container has its own mount namespace"
    );
    assert_eq!(d.husk(&["exec", "side", "hostname"]).ok(), "podhost");
    let page = d.husk(&["exec", "side", "wget", "-qO-", "http://localhost:8080/"]);
    assert_eq!(page.ok(), "hello from husk");
    d.husk(&["exec", "web", "sh", "-c", "echo private > /tmp/mine"])
        .ok();
    assert_ne!(
        d.husk(&["exec", "side", "cat", "/tmp/mine"]).code,
        0,
        "file systems are separate"
    );
}

/// The boot ID of the kernel a container runs on (the host's for host-process drivers, its guest's for `vm`).
fn boot_id(d: &Daemon, container: &str) -> String {
    d.husk(&["exec", container, "cat", "/proc/sys/kernel/random/boot_id"])
        .ok()
}

/// Standalone containers share no namespace (with the `vm` driver they do not even share a kernel, and namespace
/// identities of two kernels cannot be compared).
pub fn standalone_containers_share_nothing(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--mode",
        "standalone",
        "--name",
        "a",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--mode",
        "standalone",
        "--name",
        "b",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    if boot_id(&d, "a") == boot_id(&d, "b") {
        for kind in ["net", "ipc", "uts", "mnt", "pid"] {
            assert_ne!(
                ns(&d, "a", kind),
                ns(&d, "b", kind),
                "{kind} namespace is private"
            );
        }
    } else {
        assert_eq!(
            driver, "vm",
            "only the vm driver gives containers kernels of their own"
        );
    }
    assert_eq!(d.inspect("a")["Mode"], "standalone");
    assert!(d.inspect("a")["SandboxId"].is_null());
}

/// With a shared PID namespace, containers see each other's processes.
pub fn shared_pid_namespace(driver: &str) {
    let d = daemon(driver);
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
        "4242",
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
    assert_eq!(ns(&d, "a", "pid"), ns(&d, "b", "pid"));
    let ps = d.husk(&["exec", "b", "ps"]).ok();
    assert!(ps.contains("sleep 4242"), "{ps}");
}

/// exec: output, exit code, env, workdir, user, stdin, terminal.
pub fn exec_variants(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        "-e",
        "FROM_RUN=1",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let r = d.husk(&[
        "exec",
        "c",
        "sh",
        "-c",
        "echo $FROM_RUN $EXTRA; pwd; id -u; exit 3",
    ]);
    assert_eq!(r.code, 3);
    assert_eq!(r.stdout, "1\n/\n0\n");
    let r = d.husk(&[
        "exec",
        "-e",
        "EXTRA=x",
        "-w",
        "/tmp",
        "-u",
        "65534",
        "c",
        "sh",
        "-c",
        "echo $EXTRA; pwd; id -u",
    ]);
    assert_eq!(r.ok(), "x\n/tmp\n65534");
    let r = d.husk_input(&["exec", "-i", "c", "sh", "-c", "tr a-z A-Z"], b"shout\n");
    assert_eq!(r.ok(), "SHOUT");
    let r = d.husk(&["exec", "-t", "c", "tty"]);
    assert!(r.ok().starts_with("/dev/pts/"), "{}", r.stdout);
    assert_ne!(d.husk(&["exec", "c", "/no/such/binary"]).code, 0);
}

/// Image defaults and their overrides: entrypoint, command, env, workdir, user, hostname.
pub fn process_settings(driver: &str) {
    let d = daemon(driver);
    let r = d.husk(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/www",
        "-u",
        "nobody",
        "--mode",
        "standalone",
        "--hostname",
        "h1",
        IMAGE,
        "sh",
        "-c",
        "echo $A $(pwd) $(id -un) $(hostname)",
    ]);
    assert_eq!(r.ok(), "1 /www nobody h1");
    let r = d.husk(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        IMAGE,
        "via",
        "entrypoint",
    ]);
    assert_eq!(r.ok(), "via entrypoint");
    let r = d.husk(&["run", "--rm", IMAGE, "sh", "-c", "echo $PATH"]);
    assert!(r.ok().contains("/bin"));
}

/// stop (SIGTERM then SIGKILL), kill with a signal, wait, logs.
pub fn stop_kill_wait_logs(driver: &str) {
    let d = daemon(driver);
    // A process that handles TERM exits at once.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "polite",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo bye; exit 5' TERM; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&["logs", "polite"])
        .stdout
        .contains("ready")));
    d.husk(&["stop", "polite"]).ok();
    assert_eq!(d.inspect("polite")["State"]["ExitCode"], 5);
    assert_eq!(d.husk(&["wait", "polite"]).ok(), "5");
    assert_eq!(d.husk(&["logs", "polite"]).ok(), "ready\nbye");
    assert_eq!(d.husk(&["logs", "--tail", "1", "polite"]).ok(), "bye");
    let stamped = d.husk(&["logs", "-t", "polite"]).ok();
    assert!(
        stamped.lines().all(|l| l
            .split(' ')
            .next()
            .is_some_and(|t| t.contains('T') && t.ends_with('Z'))),
        "{stamped}"
    );
    assert_eq!(
        d.husk(&["logs", "--since", "2999-01-01T00:00:00Z", "polite"])
            .ok(),
        ""
    );
    // One that ignores TERM is killed after the timeout.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&["logs", "stubborn"])
        .stdout
        .contains("ready")));
    let t = std::time::Instant::now();
    d.husk(&["stop", "-t", "1", "stubborn"]).ok();
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "waited for the timeout"
    );
    assert_eq!(d.inspect("stubborn")["State"]["ExitCode"], 137);
    // kill with a named signal reaches the process's handler.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "usr",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&["logs", "usr"])
        .stdout
        .contains("ready")));
    d.husk(&["kill", "-s", "USR1", "usr"]).ok();
    assert_eq!(d.husk(&["wait", "usr"]).ok(), "0");
    assert!(d.husk(&["logs", "usr"]).stdout.contains("got-usr1"));
}

/// `run -it` and `exec -it` through a real terminal (util-linux `script` gives the CLI a pty), `start -a`, and
/// `logs -f` that follows until the container exits.
pub fn terminals_attach_and_follow(driver: &str) {
    let d = daemon(driver);
    let host = format!("unix://{}", d.socket.display());
    let husk = common::husk_bin();
    let in_pty = |cmd: &str, input: &str| -> (i32, String) {
        let mut child = std::process::Command::new("script")
            .args(["-qefc", cmd, "/dev/null"])
            .env("HUSK_HOST", &host)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        // Keep stdin open while the command runs, as a terminal would: the CLI must return on the container's
        // exit, not on the end of its input.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = in_pty(
        &format!(
            "{} run --rm -it {IMAGE} sh -c 'tty; read x; echo got $x; exit 4'",
            husk.display()
        ),
        "hello\n",
    );
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("/dev/pts/") && out.contains("got hello"),
        "{out}"
    );
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    let (code, out) = in_pty(
        &format!(
            "{} exec -it c sh -c 'tty; stty size; exit 2'",
            husk.display()
        ),
        "",
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    // start -a attaches to a created container and returns its exit code.
    d.husk(&[
        "create",
        "--name",
        "later",
        IMAGE,
        "sh",
        "-c",
        "echo attached; exit 6",
    ])
    .ok();
    let r = d.husk(&["start", "-a", "later"]);
    assert_eq!((r.code, r.stdout.as_str()), (6, "attached\n"));
    // logs -f follows new output and ends with the container.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "ticker",
        IMAGE,
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick $i; sleep 0.3; done",
    ])
    .ok();
    let r = d.husk(&["logs", "-f", "ticker"]);
    assert_eq!(r.ok(), "tick 1\ntick 2\ntick 3");
}

/// pause and unpause.
pub fn pause_unpause(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        IMAGE,
        "sh",
        "-c",
        "while true; do date +%s%N >> /tmp/ticks; sleep 0.05; done",
    ])
    .ok();
    d.husk(&["pause", "c"]).ok();
    assert_eq!(d.inspect("c")["State"]["Status"], "paused");
    assert_ne!(
        d.husk(&["exec", "c", "true"]).code,
        0,
        "no exec into a paused container"
    );
    d.husk(&["unpause", "c"]).ok();
    assert_eq!(d.inspect("c")["State"]["Status"], "running");
    let a = d.husk(&["exec", "c", "wc", "-l", "/tmp/ticks"]).ok();
    std::thread::sleep(Duration::from_millis(300));
    let b = d.husk(&["exec", "c", "wc", "-l", "/tmp/ticks"]).ok();
    assert_ne!(a, b, "it runs again after unpause");
}

/// Restart policies: on-failure with a limit, always, and no restart after a user's stop.
pub fn restart_policies(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        IMAGE,
        "sh",
        "-c",
        "echo run; exit 1",
    ])
    .ok();
    assert!(
        Daemon::eventually(Duration::from_secs(15), || {
            let v = d.inspect("flaky");
            v["State"]["Status"] == "exited" && v["RestartCount"] == 2
        }),
        "{}",
        d.inspect("flaky")
    );
    assert_eq!(d.husk(&["logs", "flaky"]).ok(), "run\nrun\nrun");
    d.husk(&[
        "run",
        "-d",
        "--name",
        "ok",
        "--restart",
        "on-failure",
        IMAGE,
        "true",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .inspect("ok")["State"]["Status"]
        == "exited"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        d.inspect("ok")["RestartCount"],
        0,
        "a clean exit is not a failure"
    );
    d.husk(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        IMAGE,
        "sh",
        "-c",
        "sleep 0.2",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || d
        .inspect("always")["RestartCount"]
        .as_u64()
        .unwrap_or(0)
        >= 2));
    d.husk(&["stop", "always"]).ok();
    let count = d.inspect("always")["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.inspect("always")["State"]["Status"], "exited");
    assert_eq!(
        d.inspect("always")["RestartCount"],
        count,
        "not restarted after a stop"
    );
}

/// Limits are applied and reported.
pub fn limits_are_reported(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
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
    let v = d.inspect("c");
    assert_eq!(v["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(v["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(v["HostConfig"]["PidsLimit"], 50);
    let stats = stats_of(&d, "c");
    assert_eq!(stats["memory_limit_bytes"], 64 << 20);
    assert_eq!(stats["pids_limit"], 50);
    assert!(stats["pids"].as_u64().unwrap() >= 1);
    top_showing(&d, "c", "sleep 1000");
}

/// A container that needs more memory than its limit is killed by the kernel's OOM killer: it exits 137 and
/// `inspect` says so (`State.OOMKilled`, Docker's field); one that stays under its limit, or that is killed by
/// a signal, is not reported as OOM-killed.
pub fn a_container_over_its_memory_limit_is_oom_killed(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run", "-d", "--name", "hog", "--memory", "32m", IMAGE, "sh", "-c", MEMORY_HOG,
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "calm",
        "--memory",
        "32m",
        IMAGE,
        "sh",
        "-c",
        "head -c 1048576 /dev/zero | tail; exit 3",
    ])
    .ok();
    d.husk(&[
        "run", "-d", "--name", "killed", "--memory", "32m", IMAGE, "sleep", "600",
    ])
    .ok();
    d.husk(&["kill", "killed"]).ok();
    for (name, code, oom) in [
        ("hog", "137", true),
        ("calm", "3", false),
        ("killed", "137", false),
    ] {
        assert_eq!(d.husk(&["wait", name]).ok(), code, "{name}'s exit code");
        let state = &d.inspect(name)["State"];
        assert_eq!(state["OOMKilled"], oom, "{name}: {state}");
        assert_eq!(
            state["ExitCode"].as_i64().unwrap().to_string(),
            code,
            "{name}: {state}"
        );
        let time = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(state[field].as_str().unwrap())
                .unwrap_or_else(|e| panic!("{name}: {field}: {e}: {state}"))
        };
        assert!(
            time("FinishedAt") >= time("StartedAt"),
            "{name} ended before it started: {state}"
        );
    }
}

/// `stats` counts a container's network I/O and block I/O (`BLOCK I/O`, Zun's `BLOCK I/O(B)`). On `linux`, direct writes to its
/// root filesystem count (from the cgroup, or from its processes where the host's cgroup v1 counters count
/// nothing, as here). `docker` reports the engine's numbers, which on such a host stay 0 (as `docker stats`
/// shows); a `vm` guest's writable layer is in its memory, so its block devices see nothing.
pub fn stats_count_network_and_block_io(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        IMAGE,
        "sh",
        "-c",
        "gw=$(ip route | awk '/^default/ {print $3}'); ping -c 2 -W 1 \"$gw\" > /dev/null 2>&1; \
         dd if=/dev/zero of=/written bs=1M count=4 oflag=direct 2>/dev/null; sleep 1000",
    ])
    .ok();
    let reading = || stats_of(&d, "c");
    // The pings to the sandbox's gateway (the test's own bridge) went out through its network namespace.
    let mut first = serde_json::Value::Null;
    let sent = Daemon::eventually(Duration::from_secs(10), || {
        first = reading();
        first["net_tx_bytes"].as_u64().unwrap_or(0) > 0
    });
    assert!(sent, "{first}");
    if driver != "linux" {
        assert!(first["block_write_bytes"].is_u64(), "{first}");
    } else {
        let mut last = serde_json::Value::Null;
        let counted = Daemon::eventually(Duration::from_secs(15), || {
            last = reading();
            last["block_write_bytes"].as_u64().unwrap_or(0) >= 4 << 20
        });
        assert!(counted, "{last}");
    }
    let table = d.husk(&["stats", "--no-stream", "c"]).ok();
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("NET I/O") && header.contains("BLOCK I/O"),
        "{table}"
    );
    if driver == "linux" {
        // `4.19MB` or more written, in Docker's decimal units.
        let row = table.lines().nth(1).unwrap_or_default();
        assert!(row.contains("MB"), "{table}");
    }
    // One reading of several: every running container (none that exited), or the ones named, in their order.
    d.husk(&["run", "-d", "--name", "other", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["run", "--name", "gone", IMAGE, "true"]).ok();
    let names = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["stats", "--no-stream", "--format", "json"];
        all.extend_from_slice(args);
        let list: serde_json::Value = serde_json::from_str(&d.husk(&all).ok()).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let mut running = names(&[]);
    running.sort();
    assert_eq!(running, ["c", "other"]);
    assert_eq!(names(&["other", "c"]), ["other", "c"]);
    for (name, says) in [("gone", "is exited"), ("nosuch", "no such container")] {
        let r = d.husk(&["stats", "--no-stream", "c", name]);
        assert_ne!(r.code, 0, "{name}");
        assert!(
            r.stderr.contains(name) && r.stderr.contains(says),
            "{name}: {}",
            r.stderr
        );
    }
}

/// `update` changes a running container's limits (for its next start too) and its restart policy; a driver that
/// cannot change limits says so and changes nothing.
pub fn update_changes_limits_and_restart_policy(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let limits = |d: &common::Daemon| {
        let stats = stats_of(d, "c");
        (
            stats["memory_limit_bytes"].as_u64(),
            stats["pids_limit"].as_u64(),
        )
    };
    if can(&d, driver, "update_limits") {
        assert_eq!(
            d.husk(&["update", "--memory", "128m", "--pids-limit", "60", "c"])
                .ok(),
            "c"
        );
        assert_eq!(limits(&d), (Some(128 << 20), Some(60)));
        let v = d.inspect("c");
        assert_eq!(v["HostConfig"]["Memory"], 128 << 20);
        assert_eq!(v["HostConfig"]["PidsLimit"], 60);
        d.husk(&["restart", "-t", "0", "c"]).ok();
        assert_eq!(
            limits(&d),
            (Some(128 << 20), Some(60)),
            "after a restart too"
        );
    } else {
        let r = d.husk(&["update", "--memory", "128m", "c"]);
        assert_ne!(r.code, 0);
        assert!(
            r.stderr
                .contains(&format!("driver {driver} does not support changing")),
            "{}",
            r.stderr
        );
        assert_eq!(d.inspect("c")["HostConfig"]["Memory"], 64 << 20);
    }
    d.husk(&["update", "--restart", "on-failure:3", "c"]).ok();
    assert_eq!(
        d.inspect("c")["HostConfig"]["RestartPolicy"],
        "on-failure:3"
    );
    let r = d.husk(&["update", "--memory", "1m", "c"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("minimum memory"), "{}", r.stderr);
}

/// `top CONTAINER [ps OPTIONS]`: the host's `ps` with those options, only the container's processes; a driver
/// whose processes the host's `ps` cannot see (vm) refuses options and still lists them as `ps -ef` does.
pub fn top_takes_ps_options(driver: &str) {
    let d = daemon(driver);
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    top_showing(&d, "c", "sleep 1000");
    let r = d.husk(&["top", "c", "-o", "pid,comm"]);
    if driver == "vm" {
        assert_ne!(r.code, 0);
        assert!(
            r.stderr.contains("driver vm") && r.stderr.contains("no ps options"),
            "{}",
            r.stderr
        );
        return;
    }
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    assert_eq!(lines.len(), 2, "only the container's process: {}", r.stdout);
    assert!(lines[1].ends_with("sleep"), "{}", r.stdout);
}

/// `--shm-size` sizes a container's /dev/shm, or a sandbox's, which its containers share; a driver without it
/// refuses it with its name.
pub fn shm_size_applies(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "shm_size",
        "a /dev/shm size (--shm-size)",
        &["run", "--rm", "--shm-size", "96m", IMAGE, "true"],
    ) {
        return;
    }
    let size_kib = |out: String| -> String {
        out.lines()
            .last()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    let run = d
        .husk(&[
            "run",
            "--rm",
            "--shm-size",
            "96m",
            IMAGE,
            "df",
            "-k",
            "/dev/shm",
        ])
        .ok();
    assert_eq!(size_kib(run), "98304");
    let default = d.husk(&["run", "--rm", IMAGE, "df", "-k", "/dev/shm"]).ok();
    assert_eq!(size_kib(default), "65536", "Docker's 64 MiB without it");
    d.husk(&["sandbox", "create", "--name", "pod", "--shm-size", "80m"])
        .ok();
    let shared = d
        .husk(&[
            "run",
            "--rm",
            "--sandbox",
            "pod",
            IMAGE,
            "df",
            "-k",
            "/dev/shm",
        ])
        .ok();
    assert_eq!(size_kib(shared), "81920");
    let r = d.husk(&[
        "run",
        "--rm",
        "--sandbox",
        "pod",
        "--shm-size",
        "10m",
        IMAGE,
        "true",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("share its /dev/shm"), "{}", r.stderr);
}

/// Bad input: one clear error line, a non-zero exit, nothing changed.
pub fn bad_input_is_refused_cleanly(driver: &str) {
    let d = daemon(driver);
    d.husk(&["run", "-d", "--name", "taken", IMAGE, "sleep", "1000"])
        .ok();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--rm", "--pull", "never", "no/such:image", "true"],
            "no such image",
        ),
        (
            &["run", "--rm", "--memory", "12q", IMAGE, "true"],
            "invalid memory size",
        ),
        (
            &["run", "--rm", "--memory", "1k", IMAGE, "true"],
            "minimum memory",
        ),
        (
            &["run", "--rm", "--cpus", "-1", IMAGE, "true"],
            "invalid cpus",
        ),
        (&["run", "--name", "taken", IMAGE, "true"], "already in use"),
        (
            &["run", "--restart", "sometimes", IMAGE, "true"],
            "restart policy",
        ),
        (&["kill", "-s", "NOPE", "taken"], "invalid signal"),
        (&["stop", "missing"], "no such container"),
        (&["exec", "missing", "true"], "no such container"),
        (
            &["run", "--rm", "--sandbox", "nosuchsandbox", IMAGE, "true"],
            "no such sandbox",
        ),
        (
            &["run", "--rm", "--mode", "sideways", IMAGE, "true"],
            "unknown mode",
        ),
        (&["rm", "taken"], "stop it first"),
        (
            &["run", "--rm", "--driver", "nosuchdriver", IMAGE, "true"],
            "unknown driver",
        ),
    ];
    let before = d.husk(&["ps", "-a", "--format", "json"]).ok();
    let sandboxes = d.husk(&["sandbox", "ls", "-q"]).ok();
    for (args, expect) in cases {
        let r = d.husk(args);
        assert_ne!(r.code, 0, "{args:?} should fail");
        assert!(
            r.stderr.to_lowercase().contains(&expect.to_lowercase()),
            "{args:?}: stderr {:?} lacks {expect:?}",
            r.stderr
        );
        assert_eq!(
            r.stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {:?}",
            r.stderr
        );
    }
    let after = d.husk(&["ps", "-a", "--format", "json"]).ok();
    let ids = |s: &str| {
        serde_json::from_str::<Vec<serde_json::Value>>(s)
            .unwrap()
            .iter()
            .map(|c| (c["Id"].clone(), c["State"]["Status"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&before), ids(&after), "nothing changed");
    assert_eq!(d.husk(&["sandbox", "ls", "-q"]).ok(), sandboxes);
}

/// Deleting sandboxes and containers leaves nothing behind, also of their binds and volumes.
pub fn nothing_left_behind(driver: &str) {
    let d = daemon(driver);
    let host = host_dir();
    std::fs::write(host.path().join("f"), "x").unwrap();
    let mut mounts: Vec<String> = Vec::new();
    if can(&d, driver, "bind_mounts") && can(&d, driver, "volumes") {
        let src = host.path().display();
        for m in [
            format!("{src}:/b"),
            format!("{src}/f:/f:ro"),
            "vol:/v".into(),
        ] {
            mounts.extend(["-v".to_string(), m]);
        }
    }
    let with_mounts = |args: &[&str]| -> Vec<String> {
        let (flags, rest) = args.split_at(args.len() - 3);
        flags
            .iter()
            .map(|s| s.to_string())
            .chain(mounts.iter().cloned())
            .chain(rest.iter().map(|s| s.to_string()))
            .collect()
    };
    let husk = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        d.husk(&args).ok()
    };
    d.husk(&["sandbox", "create", "--name", "pod", "--share-pid"])
        .ok();
    husk(with_mounts(&[
        "run",
        "-d",
        "--name",
        "a",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ]));
    husk(with_mounts(&[
        "run",
        "-d",
        "--name",
        "b",
        "--mode",
        "standalone",
        IMAGE,
        "sleep",
        "1000",
    ]));
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["create", "--name", "never-started", IMAGE, "true"])
        .ok();
    d.husk(&["rm", "-f", "b", "c", "never-started"]).ok();
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    assert_eq!(d.husk(&["ps", "-aq"]).ok(), "");
    assert_eq!(d.husk(&["sandbox", "ls", "-q"]).ok(), "");
    assert!(
        Daemon::eventually(Duration::from_secs(5), || d.leftovers().is_empty()),
        "{:?}",
        d.leftovers()
    );
}

/// Whether husk can read the driver's containers' changes as a directory on this host (the `linux` driver's
/// overlay upper directory); docker keeps them inside the engine and `vm` inside the guest's memory.
fn commits(driver: &str) -> bool {
    driver == "linux"
}

/// `commit` makes an image of a container's changes; a driver whose changes husk cannot read (docker, vm) refuses
/// it with a message naming the driver, and nothing changes (the container keeps running, no image appears).
pub fn commit_or_a_clear_refusal(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "w",
        IMAGE,
        "sh",
        "-c",
        "echo hi > /made && sleep 1000",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || {
        d.husk(&["exec", "w", "cat", "/made"]).stdout.trim() == "hi"
    }));
    let images = d.husk(&["image", "ls", "-q"]).ok();
    let r = d.husk(&["commit", "w", "conf/committed:1"]);
    if !commits(driver) {
        assert_ne!(r.code, 0);
        assert!(
            r.stderr.contains(&format!("driver {driver}")),
            "{}",
            r.stderr
        );
        assert_eq!(d.husk(&["image", "ls", "-q"]).ok(), images, "no image made");
    } else {
        assert!(r.ok().starts_with("sha256:"));
        let out = d.husk(&["run", "--rm", "conf/committed:1", "cat", "/made"]);
        assert_eq!(out.ok(), "hi");
    }
    assert_eq!(
        d.inspect("w")["State"]["Status"],
        "running",
        "not left paused"
    );
}

/// A directory on the host for binds, removed at the end of the test.
fn host_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hkb")
        .tempdir_in("/tmp")
        .expect("temp dir")
}

/// A name no other test (or host file) uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

fn volumes(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = d
        .husk(&["volume", "ls", "-q"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Data written to a named volume outlives the container and a daemon killed with SIGKILL.
pub fn volume_data_survives_removal_and_daemon_restart(driver: &str) {
    let mut d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "volumes",
        "volumes",
        &["run", "--rm", "-v", "v:/data", IMAGE, "true"],
    ) {
        return;
    }
    d.husk(&[
        "run",
        "--rm",
        "-v",
        "keep:/data",
        IMAGE,
        "sh",
        "-c",
        "echo persisted > /data/f",
    ])
    .ok();
    assert_eq!(
        volumes(&d),
        vec!["keep"],
        "the named volume stays after --rm"
    );
    d.husk(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "keep:/data",
        IMAGE,
        "sh",
        "-c",
        "echo more >> /data/f; sleep 1000",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&["exec", "writer", "cat", "/data/f"])
        .stdout
        .contains("more")));
    d.kill9();
    d.spawn(&[]);
    assert_eq!(
        d.husk(&["exec", "writer", "cat", "/data/f"]).ok(),
        "persisted\nmore",
        "the running container still has its volume"
    );
    d.husk(&["rm", "-f", "writer"]).ok();
    assert_eq!(
        d.husk(&["run", "--rm", "-v", "keep:/data", IMAGE, "cat", "/data/f"])
            .ok(),
        "persisted\nmore"
    );
    let v = d.husk(&["volume", "inspect", "keep"]).ok();
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v[0]["Driver"], "local");
    let data = v[0]["Mountpoint"].as_str().unwrap();
    assert!(data.ends_with("/volumes/keep/_data"), "{data}");
    assert_eq!(
        std::fs::read_to_string(format!("{data}/f")).unwrap(),
        "persisted\nmore\n"
    );
}

/// A read-only bind (`:ro` or `--mount ...,readonly`) refuses every write; a read-write one reaches the host.
pub fn read_only_binds_refuse_writes(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "bind_mounts",
        "bind mounts",
        &["run", "--rm", "-v", "/tmp:/b:ro", IMAGE, "true"],
    ) {
        return;
    }
    let host = host_dir();
    std::fs::write(host.path().join("in"), "from the host").unwrap();
    let src = host.path().to_str().unwrap();
    // One container (a VM boot on `vm`): the same directory read-only twice (`-v` at /b, `--mount` at /c), then
    // read-write at /w.
    let script = "for d in /b /c; do cat $d/in; echo; echo x > $d/new 2>/dev/null && echo WROTE; rm $d/in 2>/dev/null && echo REMOVED; mkdir $d/d 2>/dev/null && echo MADE; done; echo back > /w/back";
    let vflag = format!("{src}:/b:ro");
    let mflag = format!("type=bind,src={src},dst=/c,readonly");
    let rw = format!("{src}:/w");
    let out = d
        .husk(&[
            "run", "--rm", "-v", &vflag, "--mount", &mflag, "-v", &rw, IMAGE, "sh", "-c", script,
        ])
        .ok();
    assert_eq!(
        out, "from the host\nfrom the host",
        "-v ...:ro and --mount ...,readonly"
    );
    assert!(host.path().join("in").exists());
    assert!(!host.path().join("new").exists() && !host.path().join("d").exists());
    assert_eq!(
        std::fs::read_to_string(host.path().join("back")).unwrap(),
        "back\n"
    );
    let r = d.husk(&["run", "--rm", "-v", "/no/such/host/path:/b", IMAGE, "true"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("/no/such/host/path"), "{}", r.stderr);
}

/// A tree with file modes (set-ID bits included), owners, empty and sticky directories, relative and absolute
/// symbolic links, a hard link and a long name.
fn sample_tree(dir: &std::path::Path) {
    use std::os::unix::fs::{PermissionsExt, lchown, symlink};
    let set = |p: &str, mode: u32| {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    std::fs::create_dir_all(dir.join("tree/sub/empty")).unwrap();
    std::fs::create_dir_all(dir.join("tree/sticky")).unwrap();
    std::fs::write(dir.join("tree/sub/file"), "file content\n").unwrap();
    std::fs::write(dir.join("tree/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(dir.join("tree").join("n".repeat(140)), "long").unwrap();
    std::fs::hard_link(dir.join("tree/sub/file"), dir.join("tree/hard")).unwrap();
    symlink("../sub/file", dir.join("tree/sub/rel")).unwrap();
    symlink("sub/file", dir.join("tree/rel")).unwrap();
    symlink("/etc/passwd", dir.join("tree/abs")).unwrap();
    lchown(dir.join("tree/sub/file"), Some(1000), Some(2000)).unwrap();
    lchown(dir.join("tree/abs"), Some(7), Some(8)).unwrap();
    lchown(dir.join("tree/sub"), Some(33), Some(33)).unwrap();
    set("tree/sub/file", 0o640);
    set("tree/run.sh", 0o2755);
    set("tree/sticky", 0o1777);
    set("tree/sub/empty", 0o700);
}

/// `path mode uid gid [link target | content]` for everything under `root`.
fn describe_tree(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            format!(
                "{:?} links={}",
                std::fs::read_to_string(&p).unwrap(),
                m.nlink()
            )
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:o} {}:{} {what}",
            m.mode(),
            m.uid(),
            m.gid()
        ));
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out.sort();
    out
}

/// `cp -a` into a container and back keeps contents, modes, owners, links and hard links; running or not.
pub fn cp_round_trips_a_tree(driver: &str) {
    let d = daemon(driver);
    let local = host_dir();
    if !can(&d, driver, "copy") {
        // Refused in both directions with one line naming the driver; nothing is written.
        d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
            .ok();
        std::fs::write(local.path().join("f"), "x").unwrap();
        let into = local.path().join("f");
        let out = local.path().join("out");
        for args in [
            ["cp", into.to_str().unwrap(), "c:/srv"],
            ["cp", "c:/etc/hostname", out.to_str().unwrap()],
        ] {
            let r = d.husk(&args);
            assert_ne!(r.code, 0, "{args:?} should be refused");
            assert!(
                r.stderr
                    .contains(&format!("driver {driver} does not support")),
                "{args:?}: {}",
                r.stderr
            );
        }
        assert!(!out.exists());
        d.husk(&["rm", "-f", "c"]).ok();
        return;
    }
    sample_tree(local.path());
    let src = local.path().join("tree");
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["cp", "-a", src.to_str().unwrap(), "c:/srv"]).ok();
    assert_eq!(
        d.husk(&[
            "exec",
            "c",
            "stat",
            "-c",
            "%a %u:%g",
            "/srv/sub/file",
            "/srv/run.sh",
            "/srv/sticky"
        ])
        .ok(),
        "640 1000:2000\n2755 0:0\n1777 0:0"
    );
    assert_eq!(
        d.husk(&["exec", "c", "readlink", "/srv/abs"]).ok(),
        "/etc/passwd"
    );
    let back = host_dir();
    let out = back.path().join("tree");
    d.husk(&["cp", "-a", "c:/srv", out.to_str().unwrap()]).ok();
    assert_eq!(
        describe_tree(&src),
        describe_tree(&out),
        "running container"
    );
    // Without -a, files copied in belong to root.
    d.husk(&["cp", src.join("sub/file").to_str().unwrap(), "c:/owned"])
        .ok();
    assert_eq!(
        d.husk(&["exec", "c", "stat", "-c", "%u:%g %a", "/owned"])
            .ok(),
        "0:0 640"
    );
    // `DIR/.` copies the contents; a stopped container copies the same.
    d.husk(&["exec", "c", "mkdir", "/contents"]).ok();
    d.husk(&["cp", "-a", &format!("{}/.", src.display()), "c:/contents"])
        .ok();
    d.husk(&["stop", "-t", "1", "c"]).ok();
    let stopped = back.path().join("stopped");
    d.husk(&["cp", "-a", "c:/contents", stopped.to_str().unwrap()])
        .ok();
    assert_eq!(
        describe_tree(&src)[1..],
        describe_tree(&stopped)[1..],
        "stopped container"
    );
    // Into a stopped container, then read back from the running one.
    d.husk(&["cp", "-a", src.join("sub").to_str().unwrap(), "c:/later"])
        .ok();
    d.husk(&["start", "c"]).ok();
    assert_eq!(
        d.husk(&["exec", "c", "cat", "/later/file"]).ok(),
        "file content"
    );
    // Tar streams on stdin and stdout.
    let tar = d.husk(&["cp", "c:/later/file", "-"]);
    assert_eq!(tar.code, 0, "{}", tar.stderr);
    let r = d.husk(&["cp", "c:/no/such/file", "-"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no such file"), "{}", r.stderr);
}

/// A tar archive of one file named `name` holding `content`.
fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

/// A raw tar header naming `name` (any bytes, `..` included), as a hostile archive would.
fn raw_entry(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(content);
    out.resize(512 + content.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0; 1024]);
    out
}

fn tar_file_content(tar: &[u8]) -> String {
    let mut a = tar::Archive::new(tar);
    let mut e = a.entries().unwrap().next().expect("an entry").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut e, &mut text).unwrap();
    text
}

/// `cp` resolves paths inside the container: a link to `/etc` (absolute, or `../../..` climbing past the root)
/// reads and writes the container's `/etc`, never the host's; archives cannot climb out either.
pub fn cp_never_follows_links_out_of_the_container(driver: &str) {
    let d = daemon(driver);
    if !can(&d, driver, "copy") {
        // The engine refuses cp for such a driver (capabilities.copy); showing it needs a container, a VM boot.
        return;
    }
    d.husk(&["run", "-d", "--name", "c", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&[
        "exec",
        "c",
        "sh",
        "-c",
        "ln -s /etc /evil; mkdir -p /a/b; ln -s ../../../../../../etc /a/b/up",
    ])
    .ok();
    let container_passwd = d.husk(&["exec", "c", "cat", "/etc/passwd"]).ok();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert_ne!(container_passwd.trim(), host_passwd.trim());
    let local = host_dir();
    for stopped in [false, true] {
        if stopped {
            d.husk(&["stop", "-t", "1", "c"]).ok();
        }
        for path in ["c:/evil/passwd", "c:/a/b/up/passwd"] {
            let out = std::process::Command::new(common::husk_bin())
                .args(["cp", path, "-"])
                .env("HUSK_HOST", format!("unix://{}", d.socket.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                tar_file_content(&out.stdout).trim(),
                container_passwd,
                "{path} (stopped: {stopped})"
            );
        }
        let marker = unique("husk-cp-escape");
        let file = local.path().join(&marker);
        std::fs::write(&file, "escaped?").unwrap();
        for dest in ["c:/evil/", "c:/a/b/up/"] {
            d.husk(&["cp", file.to_str().unwrap(), dest]).ok();
        }
        d.husk(&[
            "cp",
            file.to_str().unwrap(),
            &format!("c:/a/b/up/{marker}.renamed"),
        ])
        .ok();
        let r = d.husk_input(
            &["cp", "-", "c:/evil"],
            &tar_of(&format!("{marker}.streamed"), b"x"),
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        let r = d.husk_input(
            &["cp", "-", "c:/a/b"],
            &raw_entry(&format!("../../../../etc/{marker}.climb"), b"x"),
        );
        assert_ne!(r.code, 0, "an archive entry with .. is refused");
        for name in [
            marker.clone(),
            format!("{marker}.renamed"),
            format!("{marker}.streamed"),
            format!("{marker}.climb"),
        ] {
            assert!(
                !std::path::Path::new("/etc").join(&name).exists(),
                "/etc/{name} appeared on the host"
            );
        }
        assert_eq!(std::fs::read_to_string("/etc/passwd").unwrap(), host_passwd);
        if stopped {
            d.husk(&["start", "c"]).ok();
        }
        let inside = d.husk(&["exec", "c", "ls", "/etc"]).ok();
        for name in [
            marker.clone(),
            format!("{marker}.renamed"),
            format!("{marker}.streamed"),
        ] {
            assert!(
                inside.lines().any(|l| l == name),
                "{name} in the container's /etc: {inside}"
            );
        }
    }
}

/// Files copied into a running container's volume land in the volume.
pub fn cp_into_a_running_containers_volume(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "volumes",
        "volumes",
        &["run", "--rm", "-v", "v:/data", IMAGE, "true"],
    ) {
        return;
    }
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        "-v",
        "vol:/data",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let local = host_dir();
    std::fs::write(local.path().join("f"), "into the volume").unwrap();
    d.husk(&["cp", local.path().join("f").to_str().unwrap(), "c:/data/f"])
        .ok();
    assert_eq!(
        d.husk(&["exec", "c", "cat", "/data/f"]).ok(),
        "into the volume"
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.husk(&["volume", "inspect", "vol"]).ok()).unwrap();
    let data = v[0]["Mountpoint"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{data}/f")).unwrap(),
        "into the volume"
    );
}

fn health(d: &Daemon, name: &str) -> String {
    d.inspect(name)["State"]["Health"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn ps_status(d: &Daemon, name: &str) -> String {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&d.husk(&["ps", "-a", "--format", "json"]).ok()).unwrap();
    assert!(list.iter().any(|c| c["Name"] == name));
    d.husk(&["ps", "-a"])
        .ok()
        .lines()
        .find(|l| l.ends_with(name))
        .unwrap_or_default()
        .to_string()
}

/// The health state follows the check (starting, unhealthy, healthy, unhealthy), shows in `ps` and
/// `inspect`, and with `--health-on-failure kill` an unhealthy container is restarted by its policy.
pub fn health_states_follow_the_check(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "h",
        "--health-cmd",
        "test -e /tmp/healthy",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert_eq!(health(&d, "h"), "starting");
    assert!(
        ps_status(&d, "h").contains("(health: starting)"),
        "{}",
        ps_status(&d, "h")
    );
    assert!(Daemon::eventually(Duration::from_secs(10), || health(
        &d, "h"
    ) == "unhealthy"));
    assert!(
        ps_status(&d, "h").contains("(unhealthy)"),
        "{}",
        ps_status(&d, "h")
    );
    d.husk(&["exec", "h", "touch", "/tmp/healthy"]).ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || health(
        &d, "h"
    ) == "healthy"));
    assert!(
        ps_status(&d, "h").contains("(healthy)"),
        "{}",
        ps_status(&d, "h")
    );
    let state = &d.inspect("h")["State"]["Health"];
    assert_eq!(state["FailingStreak"], 0);
    let log = state["Log"].as_array().unwrap();
    assert!(!log.is_empty() && log.len() <= 5);
    assert_eq!(log.last().unwrap()["ExitCode"], 0);
    d.husk(&["exec", "h", "rm", "/tmp/healthy"]).ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || health(
        &d, "h"
    ) == "unhealthy"));
    assert!(
        d.inspect("h")["State"]["Health"]["FailingStreak"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert_eq!(
        d.inspect("h")["State"]["Status"],
        "running",
        "an unhealthy container keeps running, as with Docker"
    );
    // Asked for: kill it when unhealthy, and its restart policy restarts it.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "k",
        "--restart",
        "on-failure",
        "--health-cmd",
        "false",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--health-on-failure",
        "kill",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(
        Daemon::eventually(Duration::from_secs(15), || d.inspect("k")["RestartCount"]
            .as_u64()
            .unwrap_or(0)
            >= 1),
        "{}",
        d.inspect("k")
    );
    // A check that outlives its timeout fails, and is killed rather than left behind.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 100",
        "--health-timeout",
        "300ms",
        "--health-interval",
        "400ms",
        "--health-retries",
        "1",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || health(
        &d, "slow"
    ) == "unhealthy"));
    let log = d.inspect("slow")["State"]["Health"]["Log"].clone();
    let last = log.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1);
    assert!(
        last["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{last}"
    );
    // Probes that were not killed would pile up (one more each interval, each living 100 s); killed ones leave
    // at most the one in flight, though on a loaded host the kill of the last may still be under way (the
    // docker driver's kill goes through the engine), so look a few times.
    std::thread::sleep(Duration::from_millis(2500));
    let mut probes = 0;
    let killed = Daemon::eventually(Duration::from_secs(5), || {
        probes = d
            .husk(&["exec", "slow", "ps"])
            .ok()
            .lines()
            .filter(|l| l.ends_with("sleep 100"))
            .count();
        probes <= 1
    });
    assert!(killed, "timed-out probes are killed ({probes} left)");
    // No check at all.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "n",
        "--no-healthcheck",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(d.inspect("n")["State"]["Health"].is_null());
}

/// The orphaned zombies in container `name`: processes in state Z whose parent is the container's PID 1 (a
/// command's own child that just ended and that its shell has not waited for yet is not one).
fn zombies(d: &Daemon, name: &str) -> usize {
    let out = d
        .husk(&[
            "exec",
            name,
            "sh",
            "-c",
            "cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3, $4}'",
        ])
        .ok();
    out.lines().filter(|l| *l == "Z 1").count()
}

/// `--init` runs husk's init as PID 1: orphans are reaped, SIGTERM reaches the command.
pub fn init_reaps_zombies_and_forwards_signals(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "init",
        "--init",
        &["run", "--rm", "--init", IMAGE, "true"],
    ) {
        return;
    }
    d.husk(&[
        "run",
        "-d",
        "--name",
        "i",
        "--init",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    d.husk(&["run", "-d", "--name", "plain", IMAGE, "sleep", "1000"])
        .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&["logs", "i"])
        .stdout
        .contains("ready")));
    assert!(
        d.husk(&["exec", "i", "cat", "/proc/1/cmdline"])
            .ok()
            .contains("husk-init")
    );
    for c in ["i", "plain"] {
        d.husk(&["exec", c, "sh", "-c", "sleep 0.2 & exit 0"]).ok();
    }
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        zombies(&d, "plain") >= 1,
        "without an init the orphan stays a zombie (the check can fail)"
    );
    assert_eq!(zombies(&d, "i"), 0, "the init reaped the orphan");
    assert_eq!(d.inspect("i")["HostConfig"]["Init"], true);
    assert_eq!(
        d.inspect("i")["Config"]["Cmd"][0],
        "sh",
        "users see their command"
    );
    let t = std::time::Instant::now();
    d.husk(&["stop", "-t", "10", "i"]).ok();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "SIGTERM was forwarded, no SIGKILL needed"
    );
    assert_eq!(d.inspect("i")["State"]["ExitCode"], 3);
    assert!(d.husk(&["logs", "i"]).ok().contains("got-term"));
}

/// `--ulimit` applies; a hard limit above the daemon's own is refused, naming both.
pub fn ulimits_apply_and_are_bounded(driver: &str) {
    let d = daemon(driver);
    let out = d.husk(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=123:456",
        IMAGE,
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn",
    ]);
    assert_eq!(out.ok(), "123\n456");
    // The test daemon inherits this process's limits.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let too_high = format!("nofile=1024:{}", hard + 1);
    let r = d.husk(&["run", "--rm", "--ulimit", &too_high, IMAGE, "true"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("above the daemon's own hard limit"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    let r = d.husk(&["run", "--rm", "--ulimit", "nofile=10:5", IMAGE, "true"]);
    assert!(r.stderr.contains("soft limit"), "{}", r.stderr);
}

/// A volume some container uses, running or not, cannot be removed.
pub fn volume_in_use_cannot_be_removed(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "volumes",
        "volumes",
        &["run", "--rm", "-v", "v:/data", IMAGE, "true"],
    ) {
        return;
    }
    d.husk(&["volume", "create", "busy"]).ok();
    d.husk(&["create", "--name", "idle", "-v", "busy:/d", IMAGE, "true"])
        .ok();
    let r = d.husk(&["volume", "rm", "busy"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("in use") && r.stderr.contains("idle"),
        "{}",
        r.stderr
    );
    d.husk(&[
        "run", "-d", "--name", "live", "-v", "busy:/d", IMAGE, "sleep", "1000",
    ])
    .ok();
    d.husk(&["rm", "idle"]).ok();
    assert!(d.husk(&["volume", "rm", "busy"]).stderr.contains("live"));
    assert_ne!(d.husk(&["volume", "prune", "-a", "-f"]).code, 1);
    assert_eq!(volumes(&d), vec!["busy"], "prune leaves used volumes");
    d.husk(&["rm", "-f", "live"]).ok();
    d.husk(&["volume", "rm", "busy"]).ok();
    assert!(volumes(&d).is_empty());
}

/// `--rm` (and `rm -v`) removes anonymous volumes and keeps named ones; plain `rm` keeps both.
pub fn rm_removes_anonymous_volumes_and_keeps_named(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "volumes",
        "volumes",
        &["run", "--rm", "-v", "v:/data", IMAGE, "true"],
    ) {
        return;
    }
    d.husk(&[
        "run",
        "--rm",
        "-v",
        "named:/n",
        "-v",
        "/anon",
        IMAGE,
        "sh",
        "-c",
        "echo > /n/x; echo > /anon/y",
    ])
    .ok();
    assert_eq!(volumes(&d), vec!["named"]);
    d.husk(&[
        "run", "-d", "--name", "k", "-v", "/anon", IMAGE, "sleep", "1000",
    ])
    .ok();
    assert_eq!(volumes(&d).len(), 2);
    d.husk(&["rm", "-f", "k"]).ok();
    assert_eq!(
        volumes(&d).len(),
        2,
        "plain rm keeps the anonymous volume, as Docker does"
    );
    d.husk(&["volume", "prune", "-f"]).ok();
    assert_eq!(
        volumes(&d),
        vec!["named"],
        "prune removes unused anonymous volumes"
    );
    d.husk(&[
        "run", "-d", "--name", "k", "-v", "/anon", IMAGE, "sleep", "1000",
    ])
    .ok();
    d.husk(&["rm", "-f", "-v", "k"]).ok();
    assert_eq!(volumes(&d), vec!["named"]);
}

/// `--tmpfs` and `--mount type=tmpfs` mounts get their size and mode.
pub fn tmpfs_size_and_mode_apply(driver: &str) {
    let d = daemon(driver);
    let out = d
        .husk(&[
            "run", "--rm", "--tmpfs", "/t:size=2m,mode=1770", "--mount", "type=tmpfs,dst=/m,tmpfs-size=1m",
            IMAGE, "sh", "-c",
            "stat -c %a /t; df -k /t | tail -1 | awk '{print $2}'; df -k /m | tail -1 | awk '{print $2}'; dd if=/dev/zero of=/t/big bs=1k count=4096 2>/dev/null || echo full",
        ])
        .ok();
    assert_eq!(out, "1770\n2048\n1024\nfull");
}

/// `--label` is recorded and `ps --filter label=` selects by it.
pub fn labels_filter_ps(driver: &str) {
    let d = daemon(driver);
    let a = d
        .husk(&[
            "run", "-d", "--name", "a", "--label", "tier=web", "--label", "flag", IMAGE, "sleep",
            "1000",
        ])
        .ok();
    let b = d
        .husk(&[
            "run", "-d", "--name", "b", "--label", "tier=db", IMAGE, "sleep", "1000",
        ])
        .ok();
    let ids = |filter: &str| {
        let mut v: Vec<String> = d
            .husk(&["ps", "-q", "--no-trunc", "--filter", filter])
            .ok()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids("label=tier=web"), vec![a.clone()]);
    assert_eq!(ids("label=flag"), vec![a.clone()]);
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(ids("label=tier"), both);
    assert!(ids("label=tier=none").is_empty());
    assert_eq!(d.inspect("a")["Config"]["Labels"]["tier"], "web");
}

fn status_field(d: &Daemon, args: &[&str], field: &str) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[IMAGE, "sh", "-c", "cat /proc/self/status"]);
    let out = d.husk(&all).ok();
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {out}"))
        .trim()
        .to_string()
}

/// `--cap-add`/`--cap-drop`, `--security-opt seccomp=unconfined|PROFILE` and `no-new-privileges`.
pub fn security_options_apply(driver: &str) {
    let d = daemon(driver);
    let caps = |args: &[&str]| u64::from_str_radix(&status_field(&d, args, "CapEff"), 16).unwrap();
    let (chown, net_admin) = (1u64 << 0, 1u64 << 12);
    let default = caps(&[]);
    assert!(default & chown != 0 && default & net_admin == 0);
    assert_eq!(caps(&["--cap-drop", "CHOWN"]) & chown, 0);
    assert_ne!(caps(&["--cap-add", "NET_ADMIN"]) & net_admin, 0);
    let r = d.husk(&[
        "run",
        "--rm",
        "--cap-drop",
        "CHOWN",
        IMAGE,
        "chown",
        "65534",
        "/tmp",
    ]);
    assert_ne!(r.code, 0, "chown without CAP_CHOWN fails");
    assert_eq!(status_field(&d, &[], "Seccomp"), "2");
    assert_eq!(
        status_field(&d, &["--security-opt", "seccomp=unconfined"], "Seccomp"),
        "0"
    );
    let dir = host_dir();
    let profile = dir.path().join("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let r = d.husk(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        IMAGE,
        "sh",
        "-c",
        "mkdir /tmp/x && echo made; touch /tmp/y && echo touched",
    ]);
    assert_eq!(r.ok(), "touched", "the profile denies mkdir only");
    assert_eq!(
        status_field(&d, &[], "NoNewPrivs"),
        "1",
        "husk sets no-new-privileges by default"
    );
    assert_eq!(
        status_field(
            &d,
            &["--security-opt", "no-new-privileges=false"],
            "NoNewPrivs"
        ),
        "0"
    );
}

/// `--stop-signal` is what `stop` sends; `--stop-timeout` is how long it waits before SIGKILL.
pub fn stop_signal_and_timeout_apply(driver: &str) {
    let d = daemon(driver);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "s",
        "--stop-signal",
        "USR1",
        IMAGE,
        "sh",
        "-c",
        "trap 'exit 4' USR1; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "t",
        "--stop-timeout",
        "1",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    ])
    .ok();
    for c in ["s", "t"] {
        assert!(Daemon::eventually(Duration::from_secs(5), || d
            .husk(&["logs", c])
            .stdout
            .contains("ready")));
    }
    d.husk(&["stop", "s"]).ok();
    assert_eq!(d.inspect("s")["State"]["ExitCode"], 4);
    let t = std::time::Instant::now();
    d.husk(&["stop", "t"]).ok();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(d.inspect("t")["State"]["ExitCode"], 137);
    assert_eq!(d.inspect("t")["Config"]["StopTimeout"], 1);
}

/// `--group-add` adds supplementary groups, by number or by the image's group name.
pub fn group_add_applies(driver: &str) {
    let d = daemon(driver);
    let out = d.husk(&[
        "run",
        "--rm",
        "--group-add",
        "4242",
        "--group-add",
        "nogroup",
        "-u",
        "nobody",
        IMAGE,
        "id",
        "-G",
    ]);
    let groups: Vec<String> = out.ok().split_whitespace().map(str::to_string).collect();
    assert!(groups.contains(&"4242".to_string()), "{groups:?}");
    let out = d
        .husk(&["run", "--rm", "--group-add", "nogroup", IMAGE, "id", "-G"])
        .ok();
    assert!(out.split_whitespace().any(|g| g == "65534"), "{out}");
    let r = d.husk(&["run", "--rm", "--group-add", "nosuchgroup", IMAGE, "true"]);
    assert_ne!(r.code, 0);
}

/// `--read-only` makes the root file system read-only; a `--tmpfs /tmp` stays writable.
pub fn read_only_rootfs(driver: &str) {
    let d = daemon(driver);
    let out = d
        .husk(&[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            IMAGE,
            "sh",
            "-c",
            "touch /x 2>/dev/null && echo root-writable; touch /tmp/x && echo tmp-writable",
        ])
        .ok();
    assert_eq!(out, "tmp-writable");
}

/// A sandbox's volume is shared by its containers and goes with the sandbox; others cannot mount it.
pub fn sandbox_volumes_are_shared(driver: &str) {
    let d = daemon(driver);
    if refused_without(
        &d,
        driver,
        "volumes",
        "volumes",
        &["sandbox", "create", "--name", "pod", "--volume", "cache"],
    ) {
        return;
    }
    d.husk(&["sandbox", "create", "--name", "pod", "--volume", "cache"])
        .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "w",
        "--sandbox",
        "pod",
        "-v",
        "cache:/c",
        IMAGE,
        "sh",
        "-c",
        "echo shared > /c/f; sleep 1000",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&[
            "run",
            "--rm",
            "--sandbox",
            "pod",
            "-v",
            "cache:/other",
            IMAGE,
            "cat",
            "/other/f"
        ])
        .stdout
        .contains("shared")));
    let r = d.husk(&["run", "--rm", "-v", "pod_cache:/c", IMAGE, "true"]);
    assert_ne!(
        r.code, 0,
        "a container outside the sandbox cannot mount its volume"
    );
    let v: serde_json::Value =
        serde_json::from_str(&d.husk(&["sandbox", "inspect", "pod"]).ok()).unwrap();
    assert_eq!(v[0]["Volumes"], serde_json::json!(["cache"]));
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    assert!(volumes(&d).is_empty(), "the sandbox's volume went with it");
}

/// The scenarios of `source` (this file): every function taking only `driver: &str` and returning nothing,
/// `pub` or not, `async` or not.
fn scenarios(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("pub ").unwrap_or(line);
            let line = line.strip_prefix("async ").unwrap_or(line);
            let (name, rest) = line.strip_prefix("fn ")?.split_once('(')?;
            (rest.trim_end() == "driver: &str) {").then(|| name.to_string())
        })
        .collect()
}

/// The scenarios `conformance!` instantiates in `source`, and the names of tests whose name differs from the
/// scenario they call.
fn registered(source: &str) -> (Vec<String>, Vec<String>) {
    let body = source
        .split_once(concat!("macro_rules! ", "conformance"))
        .map_or("", |(_, body)| body);
    let mut listed = Vec::new();
    let mut misnamed = Vec::new();
    for line in body.lines() {
        let Some((test, call)) = line
            .trim_start()
            .strip_prefix("#[test] fn ")
            .and_then(|l| l.split_once("() { super::"))
        else {
            continue;
        };
        let Some((called, _)) = call.split_once('(') else {
            continue;
        };
        if test != called {
            misnamed.push(format!("{test} (calls {called})"));
        }
        listed.push(called.to_string());
    }
    (listed, misnamed)
}

/// Every scenario of `source` that `conformance!` leaves out.
fn unregistered(source: &str) -> Vec<String> {
    let (listed, _) = registered(source);
    scenarios(source)
        .into_iter()
        .filter(|s| !listed.contains(s))
        .collect()
}

/// A scenario written here but left out of `conformance!` would never run: this fails naming it. Needs no daemon.
#[test]
fn every_scenario_is_registered_for_every_driver() {
    let source = include_str!("conformance.rs");
    assert!(
        scenarios(source).len() >= 30,
        "the scenario finder no longer finds the scenarios: {:?}",
        scenarios(source)
    );
    let missing = unregistered(source);
    assert!(
        missing.is_empty(),
        "scenarios missing from conformance!(...) at the bottom of tests/conformance.rs: {}",
        missing.join(", ")
    );
    let (_, misnamed) = registered(source);
    assert!(
        misnamed.is_empty(),
        "conformance! tests named apart from the scenario they call: {}",
        misnamed.join(", ")
    );
}

/// The check above finds a scenario left out (so it can fail), and takes helpers for none.
#[test]
fn the_registration_check_names_a_scenario_left_out() {
    let source = concat!(
        "fn daemon(driver: &str) -> Daemon {\n}\n",
        "pub fn listed(driver: &str) {\n}\n",
        "async fn forgotten(driver: &str) {\n}\n",
        "macro_rules! ",
        "conformance {\n",
        "    #[test] fn listed() { super::listed(stringify!($driver)) }\n",
        "}\n",
    );
    assert_eq!(scenarios(source), ["listed", "forgotten"]);
    assert_eq!(unregistered(source), ["forgotten"]);
}

/// The log files of container `id` where this daemon keeps them (`None` where the engine keeps them), with
/// their sizes.
fn log_files(d: &Daemon, driver: &str, id: &str) -> Option<Vec<(String, u64)>> {
    let dir = match driver {
        "linux" => d.root.join("linux/c").join(id),
        "vm" => d.root.join("vm/c").join(id),
        _ => return None,
    };
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ctr.log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    Some(files)
}

/// Follows container `name`'s log from before it writes until it exits; returns the numbers of the lines the
/// follower saw (the last line, `end N`, as N) and the number of lines written (N, from the log as kept).
fn follow_numbered(d: &Daemon, name: &str) -> (Vec<u64>, u64) {
    let follower = Command::new(common::husk_bin())
        .args(["logs", "-f", name])
        .env("HUSK_HOST", format!("unix://{}", d.socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = follower.wait_with_output().unwrap();
    assert_eq!(d.husk(&["wait", name]).ok(), "0");
    let number = |l: &str| -> u64 {
        l.strip_prefix("end ")
            .unwrap_or(l)
            .parse()
            .unwrap_or_else(|_| panic!("not a numbered line: {l:?}"))
    };
    let last = d.husk(&["logs", "--tail", "1", name]).ok();
    assert!(last.starts_with("end "), "{last:?}");
    let numbers = String::from_utf8_lossy(&followed.stdout)
        .lines()
        .map(number)
        .collect();
    (numbers, number(&last))
}

/// `--log-opt max-size/max-file` and the daemon's `[logs]` defaults bound what a flood of output leaves on disk;
/// `logs -f` started before the output follows it across rotations, never twice or out of order, and loses
/// nothing while it keeps within the files kept.
pub fn logs_are_bounded_and_followed_across_rotation(driver: &str) {
    let d = Daemon::start_driver_with(driver, "[logs]\nmax_size = \"50k\"\nmax_file = 2\n");
    // `lines` numbered lines (after a second for the follower to start), `burst` at a time with `pause`
    // between: counted, not timed, so a slow guest (TCG) writes as many as a fast host.
    let numbered = |name: &str, lines: u32, burst: u32, pause: &str, opts: &[&str]| {
        let script = format!(
            "sleep 1; i=0; \
             while [ $i -lt {lines} ]; do j=0; while [ $j -lt {burst} ]; do echo $i; i=$((i+1)); j=$((j+1)); done; {pause}; done; \
             echo end $i"
        );
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMAGE, "sh", "-c", &script]);
        d.husk(&args).ok()
    };
    let limits = ["--log-opt", "max-size=100k", "--log-opt", "max-file=3"];
    // As fast as the shell writes.
    let id = numbered("flood", 15_000, 500, "true", &limits);
    let (numbers, total) = follow_numbered(&d, "flood");
    assert_eq!(total, 15_000, "the log keeps the last line of a flood");
    let disordered = numbers.windows(2).filter(|w| w[0] >= w[1]).count();
    eprintln!(
        "flood: {total} lines written, {} seen by logs -f, {disordered} repeated or out of order",
        numbers.len()
    );
    // The engine follows its own json-file log, and may repeat or miss lines around its rotations under a
    // flood; husk's follower never does.
    if driver != "docker" {
        assert_eq!(disordered, 0, "logs -f saw a line twice or out of order");
        assert_eq!(numbers.last(), Some(&total), "logs -f saw the last line");
    }
    // One line of the log is at most ~60 bytes here.
    if let Some(files) = log_files(&d, driver, &id) {
        let bytes: u64 = files.iter().map(|f| f.1).sum();
        eprintln!("{total} lines; on disk: {files:?} = {bytes} bytes");
        assert_eq!(files.len(), 3, "rotated into 3 files: {files:?}");
        assert!(bytes <= 3 * (100 * 1024 + 60), "{files:?}");
    }
    // Fast (~2000 lines a second, a 100k file every ~0.7 s), but not faster than a follower reads.
    numbered("paced", 4000, 200, "sleep 0.1", &limits);
    let (numbers, total) = follow_numbered(&d, "paced");
    assert_eq!(total, 4000);
    let first_gap = numbers.iter().enumerate().find(|(i, n)| *i as u64 != **n);
    assert!(
        first_gap.is_none() && numbers.len() as u64 == total + 1,
        "logs -f saw {} of {total} lines, first out of place: {first_gap:?}",
        numbers.len()
    );
    let inspect = d.inspect("flood");
    assert_eq!(
        inspect["HostConfig"]["LogConfig"]["Config"],
        serde_json::json!({"max-size": "102400", "max-file": "3"})
    );
    // What the request leaves unset comes from [logs].
    let id = numbered("defaults", 3000, 500, "true", &[]);
    assert_eq!(d.husk(&["wait", "defaults"]).ok(), "0");
    assert_eq!(
        d.inspect("defaults")["HostConfig"]["LogConfig"]["Config"],
        serde_json::json!({"max-size": "51200", "max-file": "2"})
    );
    if let Some(files) = log_files(&d, driver, &id) {
        let bytes: u64 = files.iter().map(|f| f.1).sum();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(bytes <= 2 * (50 * 1024 + 60), "{files:?}");
    }
    let tail = d.husk(&["logs", "--tail", "2", "defaults"]).ok();
    let tail: Vec<&str> = tail.lines().collect();
    assert!(tail.len() == 2 && tail[1].starts_with("end "), "{tail:?}");
    assert_eq!(
        tail[0].parse::<u64>().unwrap() + 1,
        tail[1][4..].parse::<u64>().unwrap()
    );
    d.husk(&[
        "create",
        "--name",
        "more",
        "--log-opt",
        "max-file=4",
        IMAGE,
        "true",
    ])
    .ok();
    assert_eq!(
        d.inspect("more")["HostConfig"]["LogConfig"]["Config"],
        serde_json::json!({"max-size": "51200", "max-file": "4"})
    );
    // Bad values are refused naming the option, and nothing is made.
    for (opt, named) in [
        ("max-size=0", "log-opt max-size"),
        ("max-size=ten", "log-opt max-size"),
        ("max-file=0", "log-opt max-file"),
        ("compress=true", "compress"),
    ] {
        let r = d.husk(&["create", "--name", "bad", "--log-opt", opt, IMAGE, "true"]);
        assert_eq!(r.code, 125, "{opt}: {}", r.stderr);
        assert!(r.stderr.contains(named), "{opt}: {}", r.stderr);
    }
    assert_ne!(d.husk(&["inspect", "bad"]).code, 0);
}

/// The crash matrix: for every failpoint the engine lists (`husk_engine::FAILPOINTS`), the daemon aborts there in
/// the middle of an operation, as a power cut would. After a restart, a container that was running still runs and
/// answers exec, logs and stop; the interrupted object is either finished (running) or gone, never half-made;
/// and nothing of either is left on the host once they are removed. A failpoint whose operation this test has no
/// scenario for fails it, naming the failpoint.
pub fn the_daemon_recovers_from_a_crash_at_every_failpoint(driver: &str) {
    let mut d = daemon(driver);
    // Started for the first pull scenario, with the test image pushed as crash/pull:1.
    let mut pull_source: Option<registry::Registry> = None;
    for &point in husk_engine::FAILPOINTS {
        d.husk(&[
            "run",
            "-d",
            "--name",
            "keeper",
            IMAGE,
            "sh",
            "-c",
            "echo up; exec sleep 1000",
        ])
        .ok();
        d.kill9();
        d.spawn(&[("HUSK_FAILPOINT", point)]);
        let reached_before = d
            .log()
            .matches(&format!("failpoint {point} reached"))
            .count();
        let run_half = || {
            d.husk(&["run", "-d", "--name", "half", IMAGE, "sleep", "1000"])
                .ok()
        };
        let interrupted = match point.split(':').next().unwrap() {
            "create_container" => d.husk(&["run", "-d", "--name", "half", IMAGE, "sleep", "1000"]),
            "start_container" => {
                d.husk(&["create", "--name", "half", IMAGE, "sleep", "1000"])
                    .ok();
                d.husk(&["start", "half"])
            }
            "stop_container" => {
                run_half();
                d.husk(&["stop", "half"])
            }
            // The exec'd process runs on in the container, ownerless: it must not keep the container from being
            // managed (exec, stop, removal) by the next daemon.
            "exec_container" => {
                run_half();
                d.husk(&["exec", "half", "sh", "-c", "sleep 2"])
            }
            "remove_container" => {
                run_half();
                d.husk(&["rm", "-f", "half"])
            }
            "commit_container" => {
                run_half();
                d.husk(&["commit", "half", "crash/commit:1"])
            }
            "create_sandbox" => d.husk(&["sandbox", "create", "--name", "half"]),
            "remove_sandbox" => {
                d.husk(&["sandbox", "create", "--name", "half"]).ok();
                d.husk(&["sandbox", "rm", "-f", "half"])
            }
            "pull_image" => {
                let source = pull_source.get_or_insert_with(|| {
                    let r = registry::Registry::start(None);
                    r.push_archive(&common::busybox_archive(), "crash/pull:1");
                    r
                });
                d.husk(&["pull", "-q", &source.reference("crash/pull:1")])
            }
            // A name of its own: `inspect` finds a volume too.
            "create_volume" => d.husk(&["volume", "create", "halfvol"]),
            "remove_volume" => {
                d.husk(&["volume", "create", "halfvol"]).ok();
                d.husk(&[
                    "run",
                    "--rm",
                    "-v",
                    "halfvol:/data",
                    IMAGE,
                    "sh",
                    "-c",
                    "echo kept > /data/f",
                ])
                .ok();
                d.husk(&["volume", "rm", "halfvol"])
            }
            other => panic!(
                "no crash scenario for failpoint {point}: add one for operation {other} to this test"
            ),
        };
        assert_ne!(interrupted.code, 0, "{point}: {}", interrupted.stdout);
        let reached = d
            .log()
            .matches(&format!("failpoint {point} reached"))
            .count()
            > reached_before;
        // Another driver may refuse the operation before the failpoint (commit on `docker` and `vm`: the
        // conformance scenarios check those refusals); then the daemon lives on. `linux` does everything.
        assert!(
            reached || (driver != "linux" && d.husk(&["info"]).code == 0),
            "{point}: neither reached nor refused: {}",
            interrupted.stderr
        );
        d.kill9();
        d.spawn(&[]);

        assert_eq!(d.inspect("keeper")["State"]["Status"], "running", "{point}");
        assert_eq!(
            d.husk(&["exec", "keeper", "echo", "alive"]).ok(),
            "alive",
            "{point}"
        );
        assert!(d.husk(&["logs", "keeper"]).ok().contains("up"), "{point}");
        d.husk(&["stop", "-t", "1", "keeper"]).ok();
        let half = d.husk(&["inspect", "half"]);
        if half.code == 0 {
            // What the store says is what the host has: a running container answers exec, a stopped one
            // runs nothing.
            let status = d.inspect("half")["State"]["Status"].clone();
            match status.as_str() {
                Some("running") => {
                    assert_eq!(d.husk(&["exec", "half", "true"]).code, 0, "{point}")
                }
                Some("exited" | "created") => {
                    assert_ne!(d.husk(&["exec", "half", "true"]).code, 0, "{point}")
                }
                _ => panic!(
                    "{point}: an interrupted container that stays is whole: {}",
                    half.stdout
                ),
            }
            d.husk(&["rm", "-f", "half"]).ok();
        }
        if d.husk(&["sandbox", "inspect", "half"]).code == 0 {
            let shown: serde_json::Value =
                serde_json::from_str(&d.husk(&["sandbox", "inspect", "half"]).ok()).unwrap();
            assert_eq!(
                shown[0]["Status"], "ready",
                "{point}: an interrupted sandbox that stays is whole: {shown}"
            );
            d.husk(&["sandbox", "rm", "-f", "half"]).ok();
        }
        // A pull cut short is done again whole, and what it pulled runs.
        if let Some(source) = &pull_source {
            let reference = source.reference("crash/pull:1");
            d.husk(&["pull", "-q", &reference]).ok();
            assert_eq!(
                d.husk(&["run", "--rm", &reference, "echo", "pulled"]).ok(),
                "pulled",
                "{point}"
            );
            d.husk(&["rmi", &reference]).ok();
        }
        // A volume is whole (its data all there) or gone (no directory left).
        let volumes = d.root.join("volumes");
        if d.husk(&["volume", "inspect", "halfvol"]).code == 0 {
            let kept = volumes.join("halfvol/_data/f");
            if point.starts_with("remove_volume") {
                assert_eq!(
                    std::fs::read_to_string(&kept).ok().as_deref(),
                    Some("kept\n"),
                    "{point}"
                );
            }
            assert!(volumes.join("halfvol/_data").is_dir(), "{point}");
            d.husk(&["volume", "rm", "halfvol"]).ok();
        }
        assert!(
            !volumes.join("halfvol").exists(),
            "{point}: a volume directory without a volume"
        );
        d.husk(&["rm", "-f", "keeper"]).ok();
        let _ = d.husk(&["rmi", "crash/commit:1"]);
        assert_eq!(d.husk(&["ps", "-aq"]).ok(), "", "{point}");
        assert_eq!(d.husk(&["sandbox", "ls", "-q"]).ok(), "", "{point}");
        d.assert_no_leftovers();
    }
}

macro_rules! conformance {
    ($($driver:ident),*) => {
        $(
            mod $driver {
                #[test] fn run_streams_output_and_exit_code() { super::run_streams_output_and_exit_code(stringify!($driver)) }
                #[test] fn commands_that_cannot_run_exit_as_a_shell_would() { super::commands_that_cannot_run_exit_as_a_shell_would(stringify!($driver)) }
                #[test] fn sandbox_containers_share_network_ipc_uts() { super::sandbox_containers_share_network_ipc_uts(stringify!($driver)) }
                #[test] fn standalone_containers_share_nothing() { super::standalone_containers_share_nothing(stringify!($driver)) }
                #[test] fn shared_pid_namespace() { super::shared_pid_namespace(stringify!($driver)) }
                #[test] fn exec_variants() { super::exec_variants(stringify!($driver)) }
                #[test] fn process_settings() { super::process_settings(stringify!($driver)) }
                #[test] fn stop_kill_wait_logs() { super::stop_kill_wait_logs(stringify!($driver)) }
                #[test] fn logs_are_bounded_and_followed_across_rotation() { super::logs_are_bounded_and_followed_across_rotation(stringify!($driver)) }
                #[test] fn pause_unpause() { super::pause_unpause(stringify!($driver)) }
                #[test] fn terminals_attach_and_follow() { super::terminals_attach_and_follow(stringify!($driver)) }
                #[test] fn restart_policies() { super::restart_policies(stringify!($driver)) }
                #[test] fn limits_are_reported() { super::limits_are_reported(stringify!($driver)) }
                #[test] fn a_container_over_its_memory_limit_is_oom_killed() { super::a_container_over_its_memory_limit_is_oom_killed(stringify!($driver)) }
                #[test] fn stats_count_network_and_block_io() { super::stats_count_network_and_block_io(stringify!($driver)) }
                #[test] fn shm_size_applies() { super::shm_size_applies(stringify!($driver)) }
                #[test] fn top_takes_ps_options() { super::top_takes_ps_options(stringify!($driver)) }
                #[test] fn update_changes_limits_and_restart_policy() { super::update_changes_limits_and_restart_policy(stringify!($driver)) }
                #[test] fn bad_input_is_refused_cleanly() { super::bad_input_is_refused_cleanly(stringify!($driver)) }
                #[test] fn nothing_left_behind() { super::nothing_left_behind(stringify!($driver)) }
                #[test] fn commit_or_a_clear_refusal() { super::commit_or_a_clear_refusal(stringify!($driver)) }
                #[test] fn volume_data_survives_removal_and_daemon_restart() { super::volume_data_survives_removal_and_daemon_restart(stringify!($driver)) }
                #[test] fn read_only_binds_refuse_writes() { super::read_only_binds_refuse_writes(stringify!($driver)) }
                #[test] fn cp_round_trips_a_tree() { super::cp_round_trips_a_tree(stringify!($driver)) }
                #[test] fn cp_never_follows_links_out_of_the_container() { super::cp_never_follows_links_out_of_the_container(stringify!($driver)) }
                #[test] fn cp_into_a_running_containers_volume() { super::cp_into_a_running_containers_volume(stringify!($driver)) }
                #[test] fn health_states_follow_the_check() { super::health_states_follow_the_check(stringify!($driver)) }
                #[test] fn init_reaps_zombies_and_forwards_signals() { super::init_reaps_zombies_and_forwards_signals(stringify!($driver)) }
                #[test] fn ulimits_apply_and_are_bounded() { super::ulimits_apply_and_are_bounded(stringify!($driver)) }
                #[test] fn volume_in_use_cannot_be_removed() { super::volume_in_use_cannot_be_removed(stringify!($driver)) }
                #[test] fn rm_removes_anonymous_volumes_and_keeps_named() { super::rm_removes_anonymous_volumes_and_keeps_named(stringify!($driver)) }
                #[test] fn tmpfs_size_and_mode_apply() { super::tmpfs_size_and_mode_apply(stringify!($driver)) }
                #[test] fn labels_filter_ps() { super::labels_filter_ps(stringify!($driver)) }
                #[test] fn security_options_apply() { super::security_options_apply(stringify!($driver)) }
                #[test] fn stop_signal_and_timeout_apply() { super::stop_signal_and_timeout_apply(stringify!($driver)) }
                #[test] fn group_add_applies() { super::group_add_applies(stringify!($driver)) }
                #[test] fn read_only_rootfs() { super::read_only_rootfs(stringify!($driver)) }
                #[test] fn sandbox_volumes_are_shared() { super::sandbox_volumes_are_shared(stringify!($driver)) }
                #[test] fn the_daemon_recovers_from_a_crash_at_every_failpoint() { super::the_daemon_recovers_from_a_crash_at_every_failpoint(stringify!($driver)) }
            }
        )*
    };
}

conformance!(linux, docker, vm);
