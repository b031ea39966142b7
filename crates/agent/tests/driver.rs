//! `husk_vm::VmDriver` through the `husk_core::Driver` trait, with real VMs (TCG here): sandbox mode with two
//! containers on one VM's localhost and a daemon restart in the middle, and standalone mode.

mod common;

use std::time::Duration;

use common::{agent_bin, busybox_rootfs, container};
use husk_core::stdio::{Frame, read_frame};
use husk_core::{
    ContainerConfig, ContainerRecord, ContainerRuntime, ContainerStatus, Driver, LogOptions, Mode,
    ObservedState, RootfsLayers, SandboxConfig, SandboxRecord, SandboxStatus,
};
use husk_vm::{VmDriver, VmDriverConfig};

struct Env {
    dir: tempfile::TempDir,
    layer: std::path::PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("hvd").tempdir().unwrap();
        let layer = dir.path().join("layer");
        busybox_rootfs(&layer);
        Env { dir, layer }
    }

    fn driver(&self) -> VmDriver {
        let mut c = VmDriverConfig::new(
            self.dir.path().join("root"),
            self.dir.path().join("run"),
            agent_bin(),
        );
        c.cache_dir =
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("husk-guest-cache");
        VmDriver::new(c).unwrap()
    }

    fn rootfs(&self) -> RootfsLayers {
        RootfsLayers {
            image_id: "sha256:test".into(),
            image_name: "busybox".into(),
            layers: vec![self.layer.clone()],
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left: QEMUs of this environment and the layer bind mounts.
        let run = self.dir.path().join("run/v");
        if let Ok(vms) = std::fs::read_dir(&run) {
            for vm in vms.flatten() {
                let pid = std::fs::read_to_string(vm.path().join("vm/qemu.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok());
                if let Some(pid) = pid {
                    // SAFETY: kill(2) of a QEMU this test's driver started (its pid file is in our temp dir).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        assert_no_mounts_below(self.dir.path(), true);
    }
}

/// Checks (or, with `clean`, removes) mounts below `dir`.
/// Whether `path` disappears within 10 s (a VM's network and directory are removed after its removal returns).
async fn gone_soon(path: &std::path::Path) -> bool {
    for _ in 0..200 {
        if !path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !path.exists()
}

fn assert_no_mounts_below(dir: &std::path::Path, clean: bool) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.to_string_lossy().into_owned();
    let left: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    if clean {
        for p in &left {
            let _ = nix::mount::umount2(*p, nix::mount::MntFlags::MNT_DETACH);
        }
    } else {
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }
}

fn sandbox_record(config: SandboxConfig, runtime: husk_core::SandboxRuntime) -> SandboxRecord {
    SandboxRecord {
        config,
        driver: "vm".into(),
        status: SandboxStatus::Ready,
        runtime,
        created_at: Default::default(),
        owner_container: None,
        project: String::new(),
    }
}

fn record(
    config: ContainerConfig,
    sandbox: Option<&str>,
    runtime: ContainerRuntime,
) -> ContainerRecord {
    ContainerRecord {
        config,
        driver: "vm".into(),
        mode: if sandbox.is_some() {
            Mode::Sandbox
        } else {
            Mode::Standalone
        },
        sandbox_id: sandbox.map(str::to_string),
        restart_policy: Default::default(),
        auto_remove: false,
        status: ContainerStatus::Created,
        runtime,
        exit: None,
        restart_count: 0,
        stopped_by_user: false,
        created_at: Default::default(),
        started_at: None,
        error: String::new(),
        project: String::new(),
        ..Default::default()
    }
}

async fn output_of(mut stdio: husk_core::stdio::BoxStdio) -> (String, Option<i32>) {
    let (mut out, mut code) = (String::new(), None);
    while let Ok(Ok(Some(f))) =
        tokio::time::timeout(Duration::from_secs(60), read_frame(&mut stdio)).await
    {
        match f {
            Frame::Stdout(b) | Frame::Stderr(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Frame::Exit(c) => {
                code = Some(c);
                break;
            }
            _ => break,
        }
    }
    (out, code)
}

async fn run_in(
    d: &VmDriver,
    env: &Env,
    id: &str,
    sandbox: Option<&SandboxRecord>,
    args: &[&str],
) -> (ContainerRecord, String, Option<i32>) {
    let cfg = container(id, args);
    let rt = d
        .create_container(&cfg, sandbox, &env.rootfs())
        .await
        .unwrap();
    let mut rec = record(cfg, sandbox.map(|s| s.config.id.as_str()), rt);
    let stdio = d.attach(&rec, false).await.unwrap();
    rec.runtime = d.start_container(&rec, sandbox).await.unwrap();
    let (out, code) = output_of(stdio).await;
    (rec, out, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_vm_runs_two_containers_and_survives_a_daemon_restart() {
    let env = std::sync::Arc::new(Env::new());
    // The first daemon: makes the sandbox and its containers, then exits (its runtime and sockets go away).
    let e = env.clone();
    let (sb, r1, server, client, long, peer, release) = common::as_a_daemon_that_exits(
        async move {
            let env = e;
            let d = env.driver();
            let release = d.info().await.unwrap().details["guest_kernel"].clone();
            let sc = SandboxConfig {
                id: "sb1".into(),
                name: "sb1".into(),
                hostname: "capsule".into(),
                share_pid: true,
                ..Default::default()
            };
            let srt = d.create_sandbox(&sc).await.unwrap();
            assert!(srt.pid.is_some());
            let sb = sandbox_record(sc, srt);

            let (r1, out, code) = run_in(
                &d,
                &env,
                "uname",
                Some(&sb),
                &["sh", "-c", "uname -r; hostname"],
            )
            .await;
            assert_eq!(
                (out.as_str(), code),
                (format!("{release}\ncapsule\n").as_str(), Some(0))
            );

            // A server in one container, reached from another over the VM's localhost.
            let scfg = container("server", &["sh", "-c", "echo pong | nc -l -p 8080"]);
            let srt = d
                .create_container(&scfg, Some(&sb), &env.rootfs())
                .await
                .unwrap();
            let mut server = record(scfg, Some("sb1"), srt);
            server.runtime = d.start_container(&server, Some(&sb)).await.unwrap();
            let script = "for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 8080 </dev/null && exit 0; sleep 0.3; done; exit 1";
            let (client, out, code) =
                run_in(&d, &env, "client", Some(&sb), &["sh", "-c", script]).await;
            assert_eq!((out.trim(), code), ("pong", Some(0)));

            let pcfg = container("peer", &["sleep", "4242"]);
            let prt = d
                .create_container(&pcfg, Some(&sb), &env.rootfs())
                .await
                .unwrap();
            let mut peer = record(pcfg, Some("sb1"), prt);
            peer.runtime = d.start_container(&peer, Some(&sb)).await.unwrap();

            let lcfg = container(
                "long",
                &[
                    "sh",
                    "-c",
                    "echo before restart; sleep 2; echo after restart; sleep 600",
                ],
            );
            let lrt = d
                .create_container(&lcfg, Some(&sb), &env.rootfs())
                .await
                .unwrap();
            let mut long = record(lcfg, Some("sb1"), lrt);
            long.runtime = d.start_container(&long, Some(&sb)).await.unwrap();
            // Output a reader had already taken when the daemon died is the one thing that can be lost: wait for it.
            for _ in 0..50 {
                let logs = futures::StreamExt::collect::<Vec<_>>(
                    d.logs(&long, &LogOptions::default()).await.unwrap(),
                )
                .await;
                if !logs.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (sb, r1, server, client, long, peer, release)
        },
    );

    // The restarted daemon finds the VM, its containers, their state and their output.
    let d = env.driver();
    assert!(d.sandbox_alive(&sb).await.unwrap());
    assert!(matches!(
        d.observe(&long).await.unwrap(),
        ObservedState::Running { .. }
    ));
    assert!(matches!(d.observe(&r1).await.unwrap(), ObservedState::Exited(ref e) if e.code == 0));
    let logs =
        futures::StreamExt::collect::<Vec<_>>(d.logs(&r1, &LogOptions::default()).await.unwrap())
            .await;
    let text: String = logs.into_iter().map(|e| e.unwrap().text).collect();
    assert_eq!(text, format!("{release}\ncapsule\n"));
    let stdio = d
        .exec(
            &long,
            &husk_core::ProcessConfig {
                args: vec!["echo".into(), "exec ok".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(output_of(stdio).await, ("exec ok\n".to_string(), Some(0)));
    // The sandbox shares its PID namespace: one container sees another's processes.
    let ps = husk_core::ProcessConfig {
        args: vec!["ps".into(), "-o".into(), "args".into()],
        ..Default::default()
    };
    let (out, code) = output_of(d.exec(&long, &ps).await.unwrap()).await;
    assert!(code == Some(0) && out.contains("sleep 4242"), "{out}");
    d.pause(&long).await.unwrap();
    assert!(matches!(
        d.observe(&long).await.unwrap(),
        ObservedState::Paused { .. }
    ));
    d.unpause(&long).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    d.kill(&long, libc::SIGKILL, false).await.unwrap();
    assert_eq!(d.wait(&long).await.unwrap().code, 137);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs =
        futures::StreamExt::collect::<Vec<_>>(d.logs(&long, &LogOptions::default()).await.unwrap())
            .await;
    let text: String = logs.into_iter().map(|e| e.unwrap().text).collect();
    assert_eq!(
        text, "before restart\nafter restart\n",
        "output written while no daemon ran is not lost"
    );

    for r in [&r1, &server, &client, &long, &peer] {
        d.delete_container(r).await.unwrap();
        d.delete_container(r).await.unwrap(); // twice is fine
    }
    d.delete_sandbox(&sb).await.unwrap();
    d.delete_sandbox(&sb).await.unwrap();
    assert!(!d.sandbox_alive(&sb).await.unwrap());
    assert!(
        gone_soon(&env.dir.path().join("run/v/sb1")).await,
        "the VM's directory is removed (in the background)"
    );
    assert_no_mounts_below(env.dir.path(), false);
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_container_gets_a_vm_of_its_own() {
    let env = Env::new();
    let d = env.driver();
    let release = d.info().await.unwrap().details["guest_kernel"].clone();
    let host = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    let (rec, out, code) = run_in(&d, &env, "solo", None, &["uname", "-r"]).await;
    assert_eq!((out.trim(), code), (release.as_str(), Some(0)));
    assert_ne!(out.trim(), host);
    let pid: i32 = std::fs::read_to_string(env.dir.path().join("run/v/solo/vm/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(d.wait(&rec).await.unwrap().code, 0);
    d.delete_container(&rec).await.unwrap();
    // QEMU got SIGKILL; its exit (the kernel freeing the guest's memory) finishes in the background.
    let mut dead = false;
    for _ in 0..200 {
        dead = !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        if dead {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead, "QEMU {pid} still runs");
    assert!(
        gone_soon(&env.dir.path().join("run/v/solo")).await,
        "the VM's directory is removed (in the background)"
    );
    assert!(!env.dir.path().join("root/c/solo").exists());
    assert_no_mounts_below(env.dir.path(), false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_vm_ends_its_containers_with_a_reason() {
    let env = Env::new();
    let d = env.driver();
    let cfg = container("doomed", &["sleep", "600"]);
    let rt = d.create_container(&cfg, None, &env.rootfs()).await.unwrap();
    let mut rec = record(cfg, None, rt);
    rec.runtime = d.start_container(&rec, None).await.unwrap();
    let pid: i32 = std::fs::read_to_string(env.dir.path().join("run/v/doomed/vm/qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let waiter = {
        let rec = rec.clone();
        let d = std::sync::Arc::new(d);
        let d2 = d.clone();
        (tokio::spawn(async move { d2.wait(&rec).await }), d)
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) of the QEMU this test's driver started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let exit = tokio::time::timeout(Duration::from_secs(30), waiter.0)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, 255, "{exit:?}");
    assert!(exit.reason.contains("VM"), "{exit:?}");
    let d = waiter.1;
    assert!(!matches!(
        d.observe(&rec).await.unwrap(),
        ObservedState::Running { .. }
    ));
    d.delete_container(&rec).await.unwrap();
    assert!(
        gone_soon(&env.dir.path().join("run/v/doomed")).await,
        "the VM's directory is removed (in the background)"
    );
    assert_no_mounts_below(env.dir.path(), false);
}
