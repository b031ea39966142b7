//! The agent in a real VM (QEMU; TCG on husk's CI, where a boot takes ~5 s): few tests, each checking much.
//! Needs root, qemu-system-x86 and Debian's linux-image kernel in /boot and /lib/modules.

mod common;

use std::time::{Duration, Instant};

use common::{TestVm, as_a_daemon_that_exits, busybox_rootfs, collect, container, run};
use husk_core::ErrorKind;
use husk_vm::AgentClient;

const BOOT_DEADLINE: Duration = Duration::from_secs(120);

async fn boot() -> (TestVm, AgentClient) {
    let vm = TestVm::boot().await;
    let ready = AgentClient::connect_when_ready(&vm.addr(), BOOT_DEADLINE).await;
    let (client, version) = match ready {
        Ok(r) => r,
        Err(e) => panic!("agent did not answer: {e}\nconsole:\n{}", vm.console()),
    };
    eprintln!(
        "agent answered {:?} after QEMU exec (guest uptime at answer {} ms)",
        vm.launched.elapsed(),
        version.uptime_ms
    );
    (vm, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_kernel_runs_containers_from_a_9p_rootfs() {
    let (vm, client) = boot().await;
    let v = client.version().await.unwrap();
    let host = nix::sys::utsname::uname()
        .unwrap()
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(v.kernel_release, common::guest_image().kernel_release);
    assert_ne!(v.kernel_release, host, "the guest runs its own kernel");
    busybox_rootfs(&vm.share.join("c/0"));

    let start = Instant::now();
    let out = run(&client, "husk0", "c/0", "echo", &["echo", "hi"]).await;
    eprintln!(
        "echo hi: create + start + output + exit in {:?}",
        start.elapsed()
    );
    assert_eq!(
        (out.stdout.as_str(), out.code),
        ("hi\n", Some(0)),
        "{out:?}"
    );

    let out = run(&client, "husk0", "c/0", "uname", &["uname", "-r"]).await;
    assert_eq!(
        (out.stdout.trim(), out.code),
        (v.kernel_release.as_str(), Some(0)),
        "{out:?}"
    );

    let out = run(
        &client,
        "husk0",
        "c/0",
        "code",
        &["sh", "-c", "echo oops >&2; exit 7"],
    )
    .await;
    assert_eq!(
        (out.stderr.as_str(), out.code),
        ("oops\n", Some(7)),
        "{out:?}"
    );

    // Two containers of one VM share its network: a server and a client on localhost.
    let server = container("server", &["sh", "-c", "echo pong | nc -l -p 7777"]);
    client
        .create_container(&server, "husk0", vec!["c/0".into()])
        .await
        .unwrap();
    client.start("server").await.unwrap();
    let out = run(&client, "husk0", "c/0", "client", &["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do nc 127.0.0.1 7777 </dev/null && exit 0; sleep 0.3; done; exit 1"]).await;
    assert_eq!((out.stdout.trim(), out.code), ("pong", Some(0)), "{out:?}");

    // The processes of one container are not visible from another.
    client
        .create_container(
            &container("sleeper", &["sleep", "600"]),
            "husk0",
            vec!["c/0".into()],
        )
        .await
        .unwrap();
    client.start("sleeper").await.unwrap();
    let out = run(
        &client,
        "husk0",
        "c/0",
        "ps",
        &["sh", "-c", "ps -o comm | grep -c sleep"],
    )
    .await;
    assert_eq!(out.stdout.trim(), "0", "{out:?}");
    let p = husk_core::ProcessConfig {
        args: vec![
            "sh".into(),
            "-c".into(),
            "ps -o comm | grep -c sleep".into(),
        ],
        ..Default::default()
    };
    client.exec("sleeper", "x", &p).await.unwrap();
    let (_i, o) = client.stdio("sleeper", "x").await.unwrap();
    let out = collect(o, Duration::from_secs(30)).await;
    assert_eq!(
        (out.stdout.trim(), out.code),
        ("1", Some(0)),
        "exec joins the container: {out:?}"
    );

    // A memory limit is enforced in the guest, and an OOM kill is reported as such.
    let mut hog = container(
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 40000000 /dev/zero | tr '\\000' a); echo survived",
        ],
    );
    hog.resources.memory_bytes = Some(12 << 20);
    client
        .create_container(&hog, "husk0", vec!["c/0".into()])
        .await
        .unwrap();
    client.start("hog").await.unwrap();
    let w = client.wait("hog", "").await.unwrap();
    assert_eq!((w.exit_code, w.oom_killed), (137, true), "{w:?}");

    let top = client.top("sleeper").await.unwrap();
    assert_eq!(top.titles[1], "PID");
    assert!(
        top.processes
            .iter()
            .any(|row| row.last().is_some_and(|cmd| cmd == "sleep 600")),
        "{top:?}"
    );

    let stats = client.stats("sleeper").await.unwrap();
    assert!(stats.pids >= 1 && stats.memory_usage_bytes > 0, "{stats:?}");
    client.pause("sleeper", true).await.unwrap();
    assert!(
        client
            .list()
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == "sleeper" && c.status == "paused")
    );
    client.pause("sleeper", false).await.unwrap();
    client
        .signal("sleeper", "", libc::SIGKILL, false)
        .await
        .unwrap();
    assert_eq!(client.wait("sleeper", "").await.unwrap().exit_code, 137);
    for id in [
        "echo", "uname", "code", "server", "client", "ps", "sleeper", "hog",
    ] {
        client.remove_container(id).await.unwrap();
    }
    shutdown_leaves_nothing(vm, client).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_in_the_vm_survives_bad_requests() {
    let (vm, client) = boot().await;
    busybox_rootfs(&vm.share.join("c/0"));
    let e = client.start("ghost").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = client
        .create_container(
            &container("c1", &["true"]),
            "husk0",
            vec!["../../..".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = client
        .create_container(&container("c1", &["true"]), "husk0", vec!["c/nope".into()])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    client
        .create_container(
            &container("c1", &["nosuchcommand"]),
            "husk0",
            vec!["c/0".into()],
        )
        .await
        .unwrap();
    let e = client.start("c1").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert_eq!(e.field.as_deref(), Some("command"), "{e}");
    assert_eq!(e.command_exit_code(), Some(127), "{e}");
    let e = client.resize("c1", "", 10, 10).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
    // A body that is not protobuf: the call fails, the agent stays.
    let mut grpc = tonic::client::Grpc::new(client.channel());
    grpc.ready().await.unwrap();
    let bad = grpc
        .unary::<Vec<u8>, Vec<u8>, _>(
            tonic::Request::new(vec![0xff; 7]),
            http::uri::PathAndQuery::from_static("/husk.agent.v1.Agent/Exec"),
            common::raw::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::Internal);
    let out = run(&client, "husk0", "c/0", "ok", &["echo", "still here"]).await;
    assert_eq!(out.stdout, "still here\n");
    shutdown_leaves_nothing(vm, client).await;
}

async fn shutdown_leaves_nothing(mut vm: TestVm, client: AgentClient) {
    client.shutdown().await.unwrap();
    assert!(
        vm.vm.wait_exit(Duration::from_secs(60)).await,
        "QEMU did not exit after shutdown\n{}",
        vm.console()
    );
    vm.vm.quit(Duration::from_secs(1)).await;
    let pid = vm.vm.pid;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || !vm.vm.is_running(),
        "QEMU {pid} still there"
    );
    let p = vm.vm.paths();
    for f in [&p.qmp, &p.agent, &p.pid] {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    let dir = vm.dir.path().to_path_buf();
    drop(vm);
    assert!(!dir.exists(), "VM directory left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_host_reconnects_to_the_agent() {
    let (vm, client) = boot().await;
    busybox_rootfs(&vm.share.join("c/0"));
    drop(client);
    let addr = vm.addr();
    as_a_daemon_that_exits(async move {
        let (client, _) = AgentClient::connect_when_ready(&addr, Duration::from_secs(30))
            .await
            .unwrap();
        let c = container("long", &["sh", "-c", "echo started; sleep 600"]);
        client
            .create_container(&c, "husk0", vec!["c/0".into()])
            .await
            .unwrap();
        let (_i, mut out) = client.stdio("long", "").await.unwrap();
        client.start("long").await.unwrap();
        assert!(matches!(
            out.recv().await,
            Some(husk_core::stdio::Frame::Stdout(_))
        ));
    });
    for round in 0..3 {
        let addr = vm.addr();
        let console = vm.vm.paths().console;
        as_a_daemon_that_exits(async move {
            let start = Instant::now();
            let r = AgentClient::connect_when_ready(&addr, Duration::from_secs(30)).await;
            let (client, _) = r.unwrap_or_else(|e| {
                panic!(
                    "round {round}: {e}\n{}",
                    std::fs::read_to_string(&console).unwrap_or_default()
                )
            });
            eprintln!("reconnected in {:?}", start.elapsed());
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "reconnecting took {:?}",
                start.elapsed()
            );
            let list = client.list().await.unwrap();
            assert!(
                list.iter().any(|c| c.id == "long" && c.status == "running"),
                "{list:?}"
            );
            let (_i, _out) = client.stdio("long", "").await.unwrap();
        });
    }
    let (client, _) = AgentClient::connect_when_ready(&vm.addr(), Duration::from_secs(30))
        .await
        .unwrap();
    shutdown_leaves_nothing(vm, client).await;
}
