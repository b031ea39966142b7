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
