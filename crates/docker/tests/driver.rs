//! The docker driver against a real dockerd (see `common` for how it is started).

mod common;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{collect, harness, namespace, process};
use husk_core::stdio::{Frame, write_frame};
use husk_core::{
    Driver, ErrorKind, LogEntry, LogOptions, MountConfig, MountKind, ObservedState, PortMapping,
};
use husk_docker::{DockerDriver, DockerDriverConfig, Role};

const SLEEP: &[&str] = &["sleep", "1000"];

#[tokio::test(flavor = "multi_thread")]
async fn connect_checks_the_engine() {
    let h = harness("conn").await;
    let info = h.driver.info().await.unwrap();
    assert_eq!(info.name, "docker");
    assert!(
        info.capabilities.sandbox && info.capabilities.standalone && info.capabilities.pid_sharing
    );
    assert!(
        info.details["api_version"].starts_with("1."),
        "{:?}",
        info.details
    );
    assert_eq!(info.details["instance"], h.instance);

    let images = h.images.clone();
    let gone = DockerDriverConfig::new(
        "unix:///nonexistent/docker.sock",
        "x",
        common::pause_binary(),
        images.clone(),
    );
    let e = DockerDriver::connect(gone)
        .await
        .err()
        .expect("no engine there");
    assert_eq!(e.kind, ErrorKind::Backend);
    assert!(
        e.message.contains("unix:///nonexistent/docker.sock"),
        "{}",
        e.message
    );

    let bad = DockerDriverConfig::new("docker.sock", "x", common::pause_binary(), images.clone());
    assert_eq!(
        DockerDriver::connect(bad).await.err().unwrap().kind,
        ErrorKind::InvalidArgument
    );
    let bad_instance = DockerDriverConfig::new(
        &common::engine().host,
        "a_b",
        common::pause_binary(),
        images.clone(),
    );
    assert_eq!(
        DockerDriver::connect(bad_instance)
            .await
            .err()
            .unwrap()
            .field
            .as_deref(),
        Some("instance")
    );
    let no_pause =
        DockerDriverConfig::new(&common::engine().host, "x", "/nonexistent/pause", images);
    assert!(
        DockerDriver::connect(no_pause)
            .await
            .err()
            .unwrap()
            .message
            .contains("/nonexistent/pause")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_containers_share_the_infra_namespaces() {
    let h = harness("sbx").await;
    let sandbox = h.sandbox(h.sandbox_config("pod", true)).await;
    let infra_pid = sandbox.runtime.pid.expect("infra pid");
    assert!(infra_pid > 0);
    let (pause_id, _) = h.driver.pause_image();
    assert!(
        h.docker.inspect_image(pause_id).await.is_ok(),
        "the infra image was loaded"
    );

    let a = h.run(h.container_config("a", SLEEP), Some(&sandbox)).await;
    let b = h.run(h.container_config("b", SLEEP), Some(&sandbox)).await;
    assert!(
        h.images.exports.load(Ordering::SeqCst) <= 1,
        "the image is loaded at most once"
    );
    for c in [&a, &b] {
        let pid = c.runtime.pid;
        assert!(pid > 0);
        for kind in ["net", "ipc", "pid"] {
            assert_eq!(
                namespace(pid, kind),
                namespace(infra_pid, kind),
                "{kind} namespace of {}",
                c.name()
            );
        }
        // Docker cannot join another container's UTS namespace; it gives the container the infra container's
        // hostname instead (checked below).
        assert_ne!(
            namespace(pid, "mnt"),
            namespace(infra_pid, "mnt"),
            "the mount namespace is the container's own"
        );
    }
    assert_ne!(
        namespace(a.runtime.pid, "mnt"),
        namespace(b.runtime.pid, "mnt")
    );
    assert_ne!(
        namespace(a.runtime.pid, "net"),
        namespace(std::process::id() as i32, "net"),
        "not the host's network"
    );

    // The hostname is the sandbox's; with a shared PID namespace the pause process is PID 1.
    let out = collect(
        h.driver
            .exec(
                &a,
                &process(&["sh", "-c", "hostname; cat /proc/1/cmdline"], false, false),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.exit, Some(0), "{out:?}");
    assert!(out.stdout.starts_with("pod-host\n/pause"), "{out:?}");

    let owned = h.driver.list_owned().await.unwrap();
    assert_eq!(owned.len(), 3);
    assert_eq!(owned.iter().filter(|o| o.role == Role::Infra).count(), 1);
    assert!(
        owned
            .iter()
            .all(|o| o.sandbox_id.as_deref() == Some(&*sandbox.config.id) && o.state == "running")
    );

    h.driver.delete_container(&a).await.unwrap();
    // Deleting the sandbox removes what is left in it, the infra container last; twice is fine.
    h.driver.delete_sandbox(&sandbox).await.unwrap();
    h.driver.delete_sandbox(&sandbox).await.unwrap();
    assert!(!h.driver.sandbox_alive(&sandbox).await.unwrap());
    assert_eq!(h.leftovers().await, Vec::<String>::new());
    assert_eq!(h.driver.observe(&b).await.unwrap(), ObservedState::Missing);
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_without_shared_pids_and_without_network() {
    let h = harness("nopid").await;
    let mut config = h.sandbox_config("iso", false);
    config.network.mode = "none".into();
    let sandbox = h.sandbox(config).await;
    let infra_pid = sandbox.runtime.pid.unwrap();
    assert!(!sandbox.runtime.namespaces.contains_key("pid"));
    let a = h.run(h.container_config("a", SLEEP), Some(&sandbox)).await;
    assert_eq!(namespace(a.runtime.pid, "net"), namespace(infra_pid, "net"));
    assert_ne!(namespace(a.runtime.pid, "pid"), namespace(infra_pid, "pid"));
    let out = collect(
        h.driver
            .exec(
                &a,
                &process(&["sh", "-c", "ls /sys/class/net"], false, false),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.stdout.trim(), "lo", "network none: loopback only");
    h.driver.delete_sandbox(&sandbox).await.unwrap();
    assert!(h.leftovers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_containers_share_nothing() {
    let h = harness("std").await;
    let a = h.run(h.container_config("a", SLEEP), None).await;
    let b = h.run(h.container_config("b", SLEEP), None).await;
    for kind in ["net", "ipc", "uts", "pid", "mnt"] {
        assert_ne!(
            namespace(a.runtime.pid, kind),
            namespace(b.runtime.pid, kind),
            "{kind}"
        );
        assert_ne!(
            namespace(a.runtime.pid, kind),
            namespace(std::process::id() as i32, kind),
            "{kind} is not the host's"
        );
    }
    let out = collect(
        h.driver
            .exec(&a, &process(&["hostname"], false, false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.stdout, "a-host\n");
    assert_eq!(
        h.driver
            .list_owned()
            .await
            .unwrap()
            .iter()
            .filter(|o| o.role == Role::Container && o.sandbox_id.is_none())
            .count(),
        2
    );
    for c in [&a, &b] {
        h.driver.delete_container(c).await.unwrap();
        h.driver.delete_container(c).await.unwrap();
    }
    assert!(h.leftovers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_with_and_without_a_terminal() {
    let h = harness("exec").await;
    let c = h.run(h.container_config("x", SLEEP), None).await;

    let out = collect(
        h.driver
            .exec(
                &c,
                &process(
                    &["sh", "-c", "echo out; echo err >&2; exit 3"],
                    false,
                    false,
                ),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit),
        ("out\n", "err\n", Some(3))
    );

    let mut p = process(&["sh", "-c", "pwd; id -un; echo $GREETING"], false, false);
    p.cwd = "/tmp".into();
    p.user = "nobody".into();
    p.env = vec!["GREETING=hi".into()];
    let out = collect(h.driver.exec(&c, &p).await.unwrap()).await;
    assert_eq!(out.stdout, "/tmp\nnobody\nhi\n");

    // A terminal: output (stdout and stderr alike) arrives as Stdout, with CRLF line ends; resizes reach it.
    let mut stdio = h
        .driver
        .exec(
            &c,
            &process(
                &["sh", "-c", "tty; sleep 1; stty size; echo e >&2; exit 4"],
                true,
                false,
            ),
        )
        .await
        .unwrap();
    write_frame(
        &mut stdio,
        &Frame::Resize {
            rows: 33,
            cols: 111,
        },
    )
    .await
    .unwrap();
    let out = collect(stdio).await;
    assert!(out.stdout.starts_with("/dev/pts/"), "{out:?}");
    assert!(
        out.stdout.contains("33 111\r\n") && out.stdout.contains("e\r\n") && out.stderr.is_empty(),
        "{out:?}"
    );
    assert_eq!(out.exit, Some(4));

    // Standard input, then its end.
    let mut stdio = h
        .driver
        .exec(&c, &process(&["sh", "-c", "cat; echo done"], false, true))
        .await
        .unwrap();
    write_frame(&mut stdio, &Frame::Stdin(b"hello ".to_vec()))
        .await
        .unwrap();
    write_frame(&mut stdio, &Frame::Stdin(b"world\n".to_vec()))
        .await
        .unwrap();
    write_frame(&mut stdio, &Frame::CloseStdin).await.unwrap();
    let out = collect(stdio).await;
    assert_eq!(
        (out.stdout.as_str(), out.exit),
        ("hello world\ndone\n", Some(0))
    );

    let missing = collect(
        h.driver
            .exec(&c, &process(&["/no/such/program"], false, false))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        matches!(missing.exit, Some(code) if code != 0),
        "{missing:?}"
    );
    h.driver.delete_container(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_the_main_process() {
    let h = harness("att").await;
    let mut config = h.container_config(
        "x",
        &[
            "sh",
            "-c",
            "read line; echo got $line; echo bye >&2; exit 5",
        ],
    );
    config.process.stdin = true;
    let c = h.create(config, None).await;
    let mut stdio = h.driver.attach(&c, true).await.unwrap();
    h.driver.start_container(&c, None).await.unwrap();
    write_frame(&mut stdio, &Frame::Stdin(b"ping\n".to_vec()))
        .await
        .unwrap();
    let out = collect(stdio).await;
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit),
        ("got ping\n", "bye\n", Some(5))
    );
    let exit = h.driver.wait(&c).await.unwrap();
    assert_eq!(exit.code, 5);
    assert!(exit.finished_at.is_some());
    h.driver.delete_container(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_with_streams_times_and_bounds() {
    let h = harness("logs").await;
    let c = h
        .run(
            h.container_config(
                "x",
                &[
                    "sh",
                    "-c",
                    "echo one; sleep 0.2; echo two >&2; sleep 1.2; echo three",
                ],
            ),
            None,
        )
        .await;
    assert_eq!(h.driver.wait(&c).await.unwrap().code, 0);

    let all = read_logs(&h, &c, LogOptions::default()).await;
    let texts: Vec<(&str, &str)> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("stdout", "one\n"),
            ("stderr", "two\n"),
            ("stdout", "three\n")
        ]
    );
    assert!(
        all.iter()
            .all(|e| e.time > husk_core::Timestamp::UNIX_EPOCH),
        "{all:?}"
    );

    let last = read_logs(
        &h,
        &c,
        LogOptions {
            tail: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        last.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
        vec!["three\n"]
    );

    // Nanosecond bounds: from the third line's time on; before it.
    let third = all[2].time.unix_nanos();
    let since = read_logs(
        &h,
        &c,
        LogOptions {
            since_nanos: Some(third),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(since.len(), 1);
    let until = read_logs(
        &h,
        &c,
        LogOptions {
            until_nanos: Some(third),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(until.len(), 2);

    // Following an exited container ends.
    let followed = read_logs(
        &h,
        &c,
        LogOptions {
            follow: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(followed.len(), 3);
    h.driver.delete_container(&c).await.unwrap();
}

async fn read_logs(
    h: &common::Harness,
    c: &husk_core::ContainerRecord,
    options: LogOptions,
) -> Vec<LogEntry> {
    use futures::TryStreamExt;
    let stream = h.driver.logs(c, &options).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), stream.try_collect())
        .await
        .expect("logs ended")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_stats_and_top() {
    let h = harness("lim").await;
    let mut config = h.container_config("x", SLEEP);
    config.resources.memory_bytes = Some(64 << 20);
    config.resources.nano_cpus = Some(500_000_000);
    config.resources.pids_limit = Some(50);
    let c = h.run(config, None).await;

    let engine_id = DockerDriver::engine_id(&c).unwrap();
    let host = h
        .docker
        .inspect_container(&engine_id, None)
        .await
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(
        (host.memory, host.nano_cpus, host.pids_limit),
        (Some(64 << 20), Some(500_000_000), Some(50))
    );
    assert_eq!(
        host.restart_policy
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .as_deref(),
        Some("no")
    );
    // The kernel enforces them: the container's own cgroups (v1) say so.
    assert_eq!(
        cgroup_value(c.runtime.pid, "memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cgroup_value(c.runtime.pid, "pids", "pids.max"), "50");
    assert_eq!(
        cgroup_value(c.runtime.pid, "cpu", "cpu.cfs_quota_us")
            .parse::<i64>()
            .unwrap()
            * 1_000_000_000
            / cgroup_value(c.runtime.pid, "cpu", "cpu.cfs_period_us")
                .parse::<i64>()
                .unwrap(),
        500_000_000
    );

    let stats = h.driver.stats(&c).await.unwrap();
    assert_eq!(stats.memory_limit_bytes, 64 << 20);
    assert_eq!(stats.pids_limit, 50);
    assert!(
        stats.pids >= 1 && stats.memory_usage_bytes > 0 && stats.cpu_usage_ns > 0,
        "{stats:?}"
    );
    assert!(stats.read_at.is_some());

    let top = h.driver.top(&c).await.unwrap();
    let cmd = top
        .titles
        .iter()
        .position(|t| t == "CMD")
        .expect("CMD column");
    assert!(
        top.processes.iter().any(|p| p[cmd].contains("sleep 1000")),
        "{top:?}"
    );

    let unlimited = h.run(h.container_config("y", SLEEP), None).await;
    let stats = h.driver.stats(&unlimited).await.unwrap();
    assert_eq!((stats.memory_limit_bytes, stats.pids_limit), (0, 0));
    for x in [&c, &unlimited] {
        h.driver.delete_container(x).await.unwrap();
    }
}

fn cgroup_value(pid: i32, controller: &str, file: &str) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cgroups}"));
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_pause_wait_and_observe() {
    let h = harness("sig").await;
    let script = "trap 'exit 42' USR1; while :; do sleep 0.1; done";
    let c = h
        .run(h.container_config("x", &["sh", "-c", script]), None)
        .await;
    assert!(
        matches!(h.driver.observe(&c).await.unwrap(), ObservedState::Running { pid } if pid == c.runtime.pid)
    );

    h.driver.pause(&c).await.unwrap();
    assert_eq!(
        h.driver.observe(&c).await.unwrap(),
        ObservedState::Paused { pid: c.runtime.pid }
    );
    let frozen = cgroup_value(c.runtime.pid, "freezer", "freezer.state");
    assert_eq!(frozen, "FROZEN");
    assert_eq!(
        h.driver.pause(&c).await.unwrap_err().kind,
        ErrorKind::Conflict,
        "already paused"
    );
    h.driver.unpause(&c).await.unwrap();
    assert!(matches!(
        h.driver.observe(&c).await.unwrap(),
        ObservedState::Running { .. }
    ));

    let waiter = {
        let (driver, record) = (h.driver.clone(), c.clone());
        tokio::spawn(async move { driver.wait(&record).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.driver.kill(&c, 10, false).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((exit.code, exit.oom_killed), (42, false));
    match h.driver.observe(&c).await.unwrap() {
        ObservedState::Exited(e) => assert_eq!(e.code, 42),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.driver.kill(&c, 9, false).await.unwrap_err().kind,
        ErrorKind::Conflict,
        "not running"
    );

    // Started again, then SIGKILL to every process.
    let restarted = h.driver.start_container(&c, None).await.unwrap();
    assert!(restarted.pid > 0 && restarted.pid != c.runtime.pid);
    h.driver.kill(&c, 9, true).await.unwrap();
    assert_eq!(h.driver.wait(&c).await.unwrap().code, 137);

    // Every process with a signal other than SIGKILL.
    let group = h
        .run(
            h.container_config("g", &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]),
            None,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.driver.kill(&group, 15, true).await.unwrap();
    // sh is PID 1 and ignores SIGTERM; it ends (0) only because its children got the signal too.
    let exit = tokio::time::timeout(Duration::from_secs(20), h.driver.wait(&group))
        .await
        .expect("the children were signalled");
    assert_eq!(exit.unwrap().code, 0);
    for x in [&c, &group] {
        h.driver.delete_container(x).await.unwrap();
    }
    assert!(h.leftovers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_behind_our_back_are_seen() {
    let h = harness("back").await;
    let sandbox = h.sandbox(h.sandbox_config("pod", false)).await;
    let c = h.run(h.container_config("x", SLEEP), Some(&sandbox)).await;
    let engine_id = DockerDriver::engine_id(&c).unwrap();

    // Stopped with the docker CLI's API call.
    h.docker
        .kill_container(
            &engine_id,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    let exit = h.driver.wait(&c).await.unwrap();
    assert_eq!(exit.code, 137);
    assert!(matches!(
        h.driver.observe(&c).await.unwrap(),
        ObservedState::Exited(_)
    ));

    // Removed: the driver reports it missing, and it no longer shows among the owned containers.
    let rm = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    h.docker
        .remove_container(&engine_id, Some(rm))
        .await
        .unwrap();
    assert_eq!(h.driver.observe(&c).await.unwrap(), ObservedState::Missing);
    assert_eq!(
        h.driver
            .start_container(&c, Some(&sandbox))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    let owned = h.driver.list_owned().await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].role, Role::Infra);
    h.driver.delete_container(&c).await.unwrap();

    // The infra container stopped behind our back: the sandbox is not alive, and joining it fails clearly.
    let infra_id = DockerDriver::infra_id(&sandbox).unwrap();
    h.docker
        .kill_container(
            &infra_id,
            None::<bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.driver.sandbox_alive(&sandbox).await.unwrap());
    let late = h
        .create(h.container_config("late", SLEEP), Some(&sandbox))
        .await;
    let e = h
        .driver
        .start_container(&late, Some(&sandbox))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    h.driver.delete_sandbox(&sandbox).await.unwrap();
    assert!(h.leftovers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_keep_to_their_own_objects() {
    let a = harness("insta").await;
    let b = harness("instb").await;
    let ca = a.run(a.container_config("x", SLEEP), None).await;
    let cb = b.create(b.container_config("x", SLEEP), None).await;
    let owned_a = a.driver.list_owned().await.unwrap();
    assert_eq!(owned_a.len(), 1);
    assert_eq!(owned_a[0].container_id.as_deref(), Some(ca.id()));
    let foreign = DockerDriver::engine_id(&cb).unwrap();
    assert_eq!(
        a.driver.remove_owned(&foreign).await.unwrap_err().kind,
        ErrorKind::Forbidden
    );
    // An orphan (an engine container with no husk record) is removed by the instance that owns it.
    b.driver.remove_owned(&foreign).await.unwrap();
    assert!(b.leftovers().await.is_empty());
    a.driver.delete_container(&ca).await.unwrap();
    assert!(a.leftovers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_create_is_rolled_forward() {
    let h = harness("roll").await;
    let config = h.container_config("x", SLEEP);
    let first = h.create(config.clone(), None).await;
    // The daemon died before recording the engine ID; the retry replaces the half-made container.
    let second = h.create(config.clone(), None).await;
    assert_ne!(
        DockerDriver::engine_id(&first),
        DockerDriver::engine_id(&second)
    );
    assert_eq!(h.leftovers().await.len(), 1);
    // Deleting a record without driver data still finds the engine container by its labels.
    let mut unrecorded = second.clone();
    unrecorded.runtime = Default::default();
    assert_eq!(
        h.driver.observe(&unrecorded).await.unwrap(),
        ObservedState::Created
    );
    h.driver.delete_container(&unrecorded).await.unwrap();
    assert!(h.leftovers().await.is_empty());

    // A name held by something that is not this husk object is a conflict, and is left alone.
    let other = h.container_config("y", SLEEP);
    let body = bollard::models::ContainerCreateBody {
        image: Some(h.busybox.id.clone()),
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    let name = husk_docker::labels::container_name(&h.instance, &other.name);
    let options = bollard::query_parameters::CreateContainerOptions {
        name: Some(name.clone()),
        platform: String::new(),
    };
    let stranger = h
        .docker
        .create_container(Some(options), body)
        .await
        .unwrap()
        .id;
    let rootfs = husk_core::RootfsLayers::default();
    let e = h
        .driver
        .create_container(&other, None, &rootfs)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    assert!(h.docker.inspect_container(&stranger, None).await.is_ok());
    h.docker.remove_container(&stranger, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn published_ports_mounts_and_security() {
    let h = harness("net").await;
    // Below the kernel's ephemeral range (32768-60999), where outgoing connections of parallel tests take
    // ports, and free when chosen.
    let port = loop {
        let p = 20000 + rand::random::<u16>() % 12000;
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            break p;
        }
    };
    let mut sandbox_config = h.sandbox_config("web", false);
    sandbox_config.network.ports =
        vec![PortMapping::parse(&format!("127.0.0.1:{port}:80")).unwrap()];
    let sandbox = h.sandbox(sandbox_config).await;
    let net = sandbox.runtime.network.clone().unwrap();
    assert_eq!(net.network, "bridge");
    assert_eq!(net.addresses.len(), 1, "{net:?}");

    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "from a bind mount\n").unwrap();
    let mut config = h.container_config("httpd", &["httpd", "-f", "-p", "80", "-h", "/srv"]);
    config.mounts = vec![
        MountConfig {
            kind: MountKind::Bind,
            source: www.path().to_string_lossy().into(),
            destination: "/srv".into(),
            readonly: true,
            options: vec![],
            host_path: www.path().to_string_lossy().into(),
            ..Default::default()
        },
        MountConfig {
            kind: MountKind::Tmpfs,
            source: String::new(),
            destination: "/scratch".into(),
            readonly: false,
            options: vec!["size=8m".into()],
            host_path: String::new(),
            ..Default::default()
        },
    ];
    config.security.readonly_rootfs = true;
    let c = h.run(config, Some(&sandbox)).await;

    let body = tokio::task::spawn_blocking(move || http_get(port))
        .await
        .unwrap();
    assert!(body.ends_with("from a bind mount\n"), "{body}");

    let check = "touch /srv/x 2>/dev/null && echo srv-writable; touch /x 2>/dev/null && echo root-writable; touch /scratch/x && echo scratch-ok; grep NoNewPrivs /proc/self/status";
    let out = collect(
        h.driver
            .exec(&c, &process(&["sh", "-c", check], false, false))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.stdout, "scratch-ok\nNoNewPrivs:\t1\n", "{out:?}");
    h.driver.delete_sandbox(&sandbox).await.unwrap();
    assert!(h.leftovers().await.is_empty());
}

fn http_get(port: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if !body.is_empty() => return body,
            _ if std::time::Instant::now() > deadline => {
                panic!("no answer on 127.0.0.1:{port}: {attempt:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_is_emulated_with_the_daemons_capabilities() {
    let h = harness("priv").await;
    let mut config = h.container_config("p", &["sh", "-c", "grep CapEff /proc/self/status; ls /dev/kvm 2>/dev/null; ip link set lo down && echo net-admin"]);
    config.security.privileged = true;
    config.security.no_new_privileges = false;
    let c = h.run(config, None).await;
    assert_eq!(h.driver.wait(&c).await.unwrap().code, 0);
    let logs = read_logs(&h, &c, LogOptions::default()).await;
    let text: String = logs.iter().map(|e| e.text.as_str()).collect();
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("CapEff:"))
            .map(|l| u64::from_str_radix(l[7..].trim(), 16).unwrap())
            .unwrap()
    };
    let (theirs, mine) = (eff(&text), eff(&ours));
    // Every capability it got is ours, and it got all of ours the engine knows (older engines know fewer).
    assert_eq!(theirs & !mine, 0, "{text}");
    assert_eq!(theirs & 0x3f_ffff_ffff, mine & 0x3f_ffff_ffff, "{text}");
    if std::path::Path::new("/dev/kvm").exists() {
        assert!(text.contains("/dev/kvm"), "host devices are passed: {text}");
    }
    assert!(text.contains("net-admin"), "{text}");
    h.driver.delete_container(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn images_come_from_the_image_store_once() {
    let h = harness("img").await;
    let dir = tempfile::tempdir().unwrap();
    let (image, tar) = common::unique_image(&common::engine().busybox_tar, dir.path());
    assert!(
        h.docker.inspect_image(&image.id).await.is_err(),
        "the engine does not have it yet"
    );
    let (driver, images) =
        common::driver_with_images(&h.instance, [(image.id.clone(), tar.clone())].into()).await;

    // Two containers of the new image created at once: one export, one load.
    let mut a = h.container_config("a", SLEEP);
    a.image = image.clone();
    let mut b = h.container_config("b", SLEEP);
    b.image = image.clone();
    let rootfs = husk_core::RootfsLayers::default();
    let (ra, rb) = tokio::join!(
        driver.create_container(&a, None, &rootfs),
        driver.create_container(&b, None, &rootfs)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(images.exports.load(Ordering::SeqCst), 1);
    assert!(h.docker.inspect_image(&image.id).await.is_ok());
    let ra = common::container_record(a, None, ra);
    let rb = common::container_record(b, None, rb);
    driver.start_container(&ra, None).await.unwrap();
    assert!(matches!(
        driver.observe(&ra).await.unwrap(),
        ObservedState::Running { .. }
    ));

    // An image the store does not have, and an archive that is not the image asked for.
    let mut c = h.container_config("c", SLEEP);
    c.image = husk_core::ImageRef {
        name: "nope".into(),
        id: format!("sha256:{}", "0".repeat(64)),
    };
    assert_eq!(
        driver
            .create_container(&c, None, &rootfs)
            .await
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    let wrong_id = format!("sha256:{}", "1".repeat(64));
    let (liar, _) = common::driver_with_images(&h.instance, [(wrong_id.clone(), tar)].into()).await;
    c.image.id = wrong_id;
    let e = liar.create_container(&c, None, &rootfs).await.unwrap_err();
    assert!(e.message.contains("not the image store's"), "{e}");

    for r in [&ra, &rb] {
        driver.delete_container(r).await.unwrap();
    }
    assert!(h.leftovers().await.is_empty());
    let rmi = bollard::query_parameters::RemoveImageOptions {
        force: true,
        ..Default::default()
    };
    h.docker
        .remove_image(&image.id, Some(rmi), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_output_starting_with_low_bytes() {
    let h = harness("tty").await;
    let c = h.run(h.container_config("x", SLEEP), None).await;
    let out = collect(
        h.driver
            .exec(
                &c,
                &process(
                    &[
                        "sh",
                        "-c",
                        "printf '\\001\\002abc'; sleep 0.3; printf '\\000x\\n'",
                    ],
                    true,
                    false,
                ),
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.exit, Some(0), "{out:?}");
    assert_eq!(out.stdout.as_bytes(), b"\x01\x02abc\x00x\r\n", "{out:?}");
    h.driver.delete_container(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_terminal() {
    let h = harness("atty").await;
    let mut config = h.container_config(
        "x",
        &[
            "sh",
            "-c",
            "printf '\\001hi\\n'; read line; echo got $line; exit 6",
        ],
    );
    config.process.stdin = true;
    config.process.tty = true;
    let c = h.create(config, None).await;
    let mut stdio = h.driver.attach(&c, true).await.unwrap();
    h.driver.start_container(&c, None).await.unwrap();
    h.driver.resize(&c, 40, 120).await.unwrap();
    write_frame(&mut stdio, &Frame::Stdin(b"yo\n".to_vec()))
        .await
        .unwrap();
    let out = collect(stdio).await;
    assert_eq!(out.exit, Some(6), "{out:?}");
    assert!(
        out.stdout.starts_with("\u{1}hi\r\n") && out.stdout.contains("got yo\r\n"),
        "{out:?}"
    );
    h.driver.delete_container(&c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn events_oom_and_waiting_for_a_first_run() {
    use futures::StreamExt;
    let h = harness("evt").await;
    let mut events = h.driver.events();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if tx.send(e).is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut config = h.container_config(
        "oom",
        &[
            "sh",
            "-c",
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    config.resources.memory_bytes = Some(16 << 20);
    let c = h.create(config, None).await;
    let waiter = {
        let (driver, record) = (h.driver.clone(), c.clone());
        tokio::spawn(async move { driver.wait(&record).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "waiting on a created container waits for its first run"
    );
    h.driver.start_container(&c, None).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.code, 137);
    h.driver.delete_container(&c).await.unwrap();

    let engine_id = DockerDriver::engine_id(&c).unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&"destroy".to_string()) {
        let e = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        assert_eq!(
            e.engine_id, engine_id,
            "only this instance's containers: {e:?}"
        );
        assert_eq!(
            (e.role, e.container_id.as_deref()),
            (Some(Role::Container), Some(c.id()))
        );
        if e.action == "die" {
            assert_eq!(e.exit_code, Some(137));
        }
        seen.push(e.action);
    }
    for action in ["create", "start", "oom", "die", "destroy"] {
        assert!(seen.iter().any(|a| a == action), "{action} in {seen:?}");
    }
    follower.abort();
}
