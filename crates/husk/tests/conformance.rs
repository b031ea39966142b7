//! The driver conformance suite: the same behaviour, checked through the CLI against a real daemon, for every
//! driver. Each test is written once and instantiated per driver by `conformance!` at the bottom.
//!
//! Checks are made from inside containers where possible (namespace identities via `/proc/self/ns/*`), so they
//! hold for drivers whose containers are not host processes (the `vm` driver).

mod common;

use std::time::Duration;

use common::{Daemon, IMAGE};

fn daemon(driver: &str) -> Daemon {
    Daemon::start_driver(driver)
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

/// Standalone containers share no namespace.
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
    for kind in ["net", "ipc", "uts", "mnt", "pid"] {
        assert_ne!(
            ns(&d, "a", kind),
            ns(&d, "b", kind),
            "{kind} namespace is private"
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
    let stats: serde_json::Value = serde_json::from_str(
        &d.husk(&["stats", "--no-stream", "--format", "json", "c"])
            .ok(),
    )
    .unwrap();
    assert_eq!(stats[0]["stats"]["memory_limit_bytes"], 64 << 20);
    assert_eq!(stats[0]["stats"]["pids_limit"], 50);
    assert!(stats[0]["stats"]["pids"].as_u64().unwrap() >= 1);
    let top = d.husk(&["top", "c"]).ok();
    assert!(top.contains("sleep 1000"), "{top}");
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

/// Deleting sandboxes and containers leaves nothing behind.
pub fn nothing_left_behind(driver: &str) {
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
        "1000",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "b",
        "--mode",
        "standalone",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
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

/// `commit` makes an image of a container's changes; a driver whose changes husk cannot read (docker) refuses it
/// with a message naming the driver, and nothing changes (the container keeps running, no image appears).
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
    if driver == "docker" {
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("driver docker"), "{}", r.stderr);
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

macro_rules! conformance {
    ($($driver:ident),*) => {
        $(
            mod $driver {
                #[test] fn run_streams_output_and_exit_code() { super::run_streams_output_and_exit_code(stringify!($driver)) }
                #[test] fn sandbox_containers_share_network_ipc_uts() { super::sandbox_containers_share_network_ipc_uts(stringify!($driver)) }
                #[test] fn standalone_containers_share_nothing() { super::standalone_containers_share_nothing(stringify!($driver)) }
                #[test] fn shared_pid_namespace() { super::shared_pid_namespace(stringify!($driver)) }
                #[test] fn exec_variants() { super::exec_variants(stringify!($driver)) }
                #[test] fn process_settings() { super::process_settings(stringify!($driver)) }
                #[test] fn stop_kill_wait_logs() { super::stop_kill_wait_logs(stringify!($driver)) }
                #[test] fn pause_unpause() { super::pause_unpause(stringify!($driver)) }
                #[test] fn terminals_attach_and_follow() { super::terminals_attach_and_follow(stringify!($driver)) }
                #[test] fn restart_policies() { super::restart_policies(stringify!($driver)) }
                #[test] fn limits_are_reported() { super::limits_are_reported(stringify!($driver)) }
                #[test] fn bad_input_is_refused_cleanly() { super::bad_input_is_refused_cleanly(stringify!($driver)) }
                #[test] fn nothing_left_behind() { super::nothing_left_behind(stringify!($driver)) }
                #[test] fn commit_or_a_clear_refusal() { super::commit_or_a_clear_refusal(stringify!($driver)) }
            }
        )*
    };
}

conformance!(linux, docker);
