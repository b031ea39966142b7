//! The docker driver behind husk's back: husk's records follow the engine when someone stops or removes a
//! container with the docker CLI, and a restarted husk leaves no orphan in the engine.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, IMAGE};

fn docker(d: &Daemon, args: &[&str]) -> String {
    let (host, _) = d.docker.as_ref().expect("a docker-driver daemon");
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn engine_id(d: &Daemon, name: &str) -> String {
    let (_, instance) = d.docker.as_ref().unwrap();
    let id = d.inspect(name)["Id"].as_str().unwrap().to_string();
    docker(
        d,
        &[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.husk.instance={instance}"),
            "--filter",
            &format!("label=io.husk.container-id={id}"),
        ],
    )
}

#[test]
fn state_follows_the_engine_behind_husks_back() {
    let d = Daemon::start_driver("docker");
    d.husk(&["run", "-d", "--name", "stopped", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["run", "-d", "--name", "removed", IMAGE, "sleep", "1000"])
        .ok();
    docker(&d, &["kill", &engine_id(&d, "stopped")]);
    docker(&d, &["rm", "-f", &engine_id(&d, "removed")]);
    assert!(
        Daemon::eventually(
            Duration::from_secs(10),
            || d.inspect("stopped")["State"]["Status"] == "exited"
        ),
        "{}",
        d.inspect("stopped")
    );
    assert!(
        Daemon::eventually(
            Duration::from_secs(10),
            || d.inspect("removed")["State"]["Status"] == "dead"
        ),
        "{}",
        d.inspect("removed")
    );
    // A dead container can still be removed, leaving nothing.
    d.husk(&["rm", "-f", "removed", "stopped"]).ok();
    d.assert_no_leftovers();
}

#[test]
fn a_restarted_daemon_removes_orphans_from_the_engine() {
    let mut d = Daemon::start_driver("docker");
    d.husk(&["run", "-d", "--name", "kept", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["run", "-d", "--name", "orphan", IMAGE, "sleep", "1000"])
        .ok();
    let orphan_engine_id = engine_id(&d, "orphan");
    // Forget the record behind the daemon's back, as a crash between the engine call and the record would.
    d.kill9();
    let db = d.root.join("husk.db");
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('{}'); c.execute(\"DELETE FROM objects WHERE kind='container' AND name='orphan'\"); c.commit()",
            db.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.spawn(&[]);
    assert_eq!(d.inspect("kept")["State"]["Status"], "running");
    let all = docker(&d, &["ps", "-aq", "--no-trunc"]);
    assert!(
        !all.contains(&orphan_engine_id),
        "the orphan was removed from the engine"
    );
}

/// An engine of the test's own (`crates/docker/scripts/test-dockerd`), which it may crash and start again;
/// stopped and removed on drop.
struct PrivateEngine {
    dir: std::path::PathBuf,
    host: String,
}

impl PrivateEngine {
    fn script() -> std::path::PathBuf {
        common::repo_root().join("crates/docker/scripts/test-dockerd")
    }

    fn run(&self, what: &str) -> String {
        let out = Command::new(Self::script())
            .arg(what)
            .arg(&self.dir)
            .output()
            .expect("test-dockerd");
        assert!(
            out.status.success(),
            "test-dockerd {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn start() -> PrivateEngine {
        // Short: the engine's socket path must fit in 108 bytes.
        let dir = std::path::PathBuf::from(format!(
            "/tmp/hdc{:x}",
            std::process::id() ^ std::time::UNIX_EPOCH.elapsed().unwrap().subsec_nanos()
        ));
        let mut engine = PrivateEngine {
            dir,
            host: String::new(),
        };
        engine.host = engine.run("start");
        engine
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// `kill -9` of dockerd: while it is down, husk still reports the containers it cannot see as running (no exit
/// is made up) and every request that needs the engine says the engine is not answering; when dockerd is back
/// (it stops, without live-restore, what ran), husk records the exits the engine reports, the sandboxes are not
/// ready, new containers run, a container whose own sandbox it was starts again, and everything is removed
/// without a trace.
#[test]
fn a_crashed_engine_is_waited_for_and_its_verdict_recorded() {
    let engine = PrivateEngine::start();
    let instance = format!("crash{:x}", std::process::id());
    let mut d = Daemon::start_with(
        &[
            "--driver",
            "docker",
            "--docker-host",
            &engine.host,
            "--docker-instance",
            &instance,
        ],
        "",
        true,
    );
    d.docker = Some((engine.host.clone(), instance));
    d.husk(&["run", "-d", "--name", "solo", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["sandbox", "create", "--name", "pod"]).ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "inpod",
        "--sandbox",
        "pod",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();

    engine.run("crash");
    // The waits break at once; give the monitor time to ask.
    std::thread::sleep(Duration::from_secs(2));
    for c in ["solo", "inpod"] {
        assert_eq!(d.inspect(c)["State"]["Status"], "running", "{c}");
    }
    for args in [
        &["exec", "solo", "true"][..],
        &["run", "--rm", IMAGE, "true"],
        &["logs", "solo"],
    ] {
        let r = d.husk(args);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(
            r.stderr.contains("the Docker Engine is not answering"),
            "{args:?}: {}",
            r.stderr
        );
    }

    engine.run("start");
    for c in ["solo", "inpod"] {
        assert!(
            Daemon::eventually(Duration::from_secs(30), || d.inspect(c)["State"]["Status"]
                == "exited"),
            "{c}: {}",
            d.inspect(c)["State"]
        );
        let state = d.inspect(c)["State"].clone();
        eprintln!("{c} after the engine came back: {state}");
        assert!(
            !state["Error"].as_str().unwrap_or("").contains("lost track"),
            "{c}: {state}"
        );
    }
    assert!(Daemon::eventually(Duration::from_secs(10), || {
        d.husk(&["sandbox", "ls"]).ok().contains("notready")
    }));
    assert_eq!(d.husk(&["run", "--rm", IMAGE, "echo", "hi"]).ok(), "hi");
    // A container's own sandbox comes back with it (its infra container started again); a shared one that went
    // with the engine is refused, saying so. Removal takes everything (the leak checker at the drop).
    d.husk(&["start", "solo"]).ok();
    assert_eq!(d.husk(&["exec", "solo", "echo", "back"]).ok(), "back");
    let r = d.husk(&["start", "inpod"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("sandbox pod is gone"), "{}", r.stderr);
    d.husk(&["rm", "-f", "solo", "inpod"]).ok();
    d.husk(&["sandbox", "rm", "pod"]).ok();
}
