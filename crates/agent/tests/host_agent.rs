//! The agent's service run on the host (no VM): the protocol, error handling and the namespace runtime, fast.
//! Needs root (overlay mounts, namespaces), as husk's CI is.

mod common;

use std::time::Duration;

use common::{HostAgent, busybox_rootfs, collect, container, run};
use husk_agent_protocol::proto;
use husk_core::{ErrorKind, MountKind};

/// Sends `body` to `method` of the agent service and returns the status code.
pub async fn raw_call(
    channel: tonic::transport::Channel,
    method: &'static str,
    body: Vec<u8>,
) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(method);
    match grpc
        .unary(tonic::Request::new(body), path, common::raw::RawCodec)
        .await
    {
        Ok(_) => tonic::Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_the_agent_keeps_serving() {
    let agent = HostAgent::start();
    let client = agent.client();
    assert_eq!(
        client.version().await.unwrap().protocol,
        proto::PROTOCOL_VERSION
    );
    busybox_rootfs(&agent.share.join("c1/0"));

    let e = client.start("ghost").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(e.message.contains("ghost"), "{e}");
    let e = client
        .create_container(&container("../x", &["true"]), "share0", vec!["c1/0".into()])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = client
        .create_container(&container("c1", &[]), "share0", vec!["c1/0".into()])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = client
        .create_container(
            &container("c1", &["true"]),
            "share0",
            vec!["../../etc".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = client
        .create_container(
            &container("c1", &["true"]),
            "nosuchshare",
            vec!["c1/0".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = client
        .create_container(
            &container("c1", &["true"]),
            "share0",
            vec!["c1/missing".into()],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = client.signal("ghost", "", 0, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    let e = client
        .exec(
            "ghost",
            "e1",
            &husk_core::ProcessConfig {
                args: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

    // Not protobuf at all, and a valid message on the wrong method.
    let code = raw_call(
        client.channel(),
        "/husk.agent.v1.Agent/CreateContainer",
        vec![0xff, 0xff, 0xff, 0x0f, 0x01],
    )
    .await;
    assert_eq!(code, tonic::Code::Internal);
    let code = raw_call(client.channel(), "/husk.agent.v1.Agent/NoSuchCall", vec![]).await;
    assert_eq!(code, tonic::Code::Unimplemented);

    // A command that does not exist fails at start with a clear error; the container can still be removed.
    client
        .create_container(
            &container("c1", &["/no/such/program"]),
            "share0",
            vec!["c1/0".into()],
        )
        .await
        .unwrap();
    let e = client.start("c1").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    assert_eq!(
        e.message,
        "exec: \"/no/such/program\": stat /no/such/program: no such file or directory"
    );
    assert_eq!(e.command_exit_code(), Some(127), "{e}");
    client.remove_container("c1").await.unwrap();

    let v = client.version().await.unwrap();
    assert_eq!(v.containers, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_run_in_their_own_namespaces_with_stdio_exec_and_signals() {
    let agent = HostAgent::start();
    let client = agent.client();
    busybox_rootfs(&agent.share.join("c/0"));

    let out = run(&client, "share0", "c/0", "echo", &["echo", "hi"]).await;
    assert_eq!(
        (out.stdout.as_str(), out.code),
        ("hi\n", Some(0)),
        "{out:?}"
    );
    let out = run(
        &client,
        "share0",
        "c/0",
        "exit3",
        &["sh", "-c", "echo err >&2; exit 3"],
    )
    .await;
    assert_eq!(
        (out.stderr.as_str(), out.code),
        ("err\n", Some(3)),
        "{out:?}"
    );
    // PID 1 of its own PID namespace, in its own root.
    let out = run(
        &client,
        "share0",
        "c/0",
        "ns",
        &["sh", "-c", "echo $$; ls /"],
    )
    .await;
    assert!(out.stdout.starts_with("1\n"), "{out:?}");
    assert!(
        out.stdout.contains("bin") && !out.stdout.contains("lib64"),
        "{out:?}"
    );

    client
        .create_container(
            &container("long", &["sleep", "60"]),
            "share0",
            vec!["c/0".into()],
        )
        .await
        .unwrap();
    client.start("long").await.unwrap();
    let proc_ = husk_core::ProcessConfig {
        args: vec![
            "sh".into(),
            "-c".into(),
            "ps -o pid,comm | grep -c sleep".into(),
        ],
        ..Default::default()
    };
    client.exec("long", "e1", &proc_).await.unwrap();
    let (_i, o) = client.stdio("long", "e1").await.unwrap();
    let out = collect(o, Duration::from_secs(20)).await;
    assert_eq!(
        (out.stdout.trim(), out.code),
        ("1", Some(0)),
        "exec sees the container's processes: {out:?}"
    );
    let top = client.top("long").await.unwrap();
    assert!(
        top.processes
            .iter()
            .any(|row| row.last().is_some_and(|cmd| cmd == "sleep 60")),
        "{top:?}"
    );
    let listed = client.list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|c| c.id == "long" && c.status == "running"),
        "{listed:?}"
    );
    client
        .signal("long", "", libc::SIGKILL, false)
        .await
        .unwrap();
    let w = tokio::time::timeout(Duration::from_secs(10), client.wait("long", "")).await;
    if w.is_err() {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,stat,comm"])
            .output()
            .unwrap();
        eprintln!("{}", String::from_utf8_lossy(&ps.stdout));
        eprintln!("{:?}", client.list().await);
    }
    let w = w.unwrap().unwrap();
    assert_eq!(w.exit_code, 128 + libc::SIGKILL);
    for id in ["echo", "exit3", "ns", "long"] {
        client.remove_container(id).await.unwrap();
    }
    assert!(
        std::fs::read_dir(agent.dir.path().join("run/containers"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_and_terminals_reach_the_process() {
    let agent = HostAgent::start();
    let client = agent.client();
    busybox_rootfs(&agent.share.join("c/0"));

    // stdin through pipes, closed by CloseStdin.
    let mut cat = container("cat", &["cat"]);
    cat.process.stdin = true;
    client
        .create_container(&cat, "share0", vec!["c/0".into()])
        .await
        .unwrap();
    let (input, output) = client.stdio("cat", "").await.unwrap();
    client.start("cat").await.unwrap();
    input
        .send(husk_core::stdio::Frame::Stdin(
            b"hello through stdin\n".to_vec(),
        ))
        .await
        .unwrap();
    input
        .send(husk_core::stdio::Frame::CloseStdin)
        .await
        .unwrap();
    let out = collect(output, Duration::from_secs(20)).await;
    assert_eq!(
        (out.stdout.as_str(), out.code),
        ("hello through stdin\n", Some(0)),
        "{out:?}"
    );

    // A terminal: the process sees a tty of the size the host set.
    let mut sh = container(
        "tty",
        &["sh", "-c", "read line; tty; stty size; echo got $line"],
    );
    sh.process.stdin = true;
    sh.process.tty = true;
    client
        .create_container(&sh, "share0", vec!["c/0".into()])
        .await
        .unwrap();
    let (input, output) = client.stdio("tty", "").await.unwrap();
    client.start("tty").await.unwrap();
    client.resize("tty", "", 33, 99).await.unwrap();
    input
        .send(husk_core::stdio::Frame::Stdin(b"x\n".to_vec()))
        .await
        .unwrap();
    let out = collect(output, Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("/dev/pts/"), "{out:?}");
    assert!(out.stdout.contains("33 99"), "{out:?}");
    assert!(out.stdout.contains("got x"), "{out:?}");
    for id in ["cat", "tty"] {
        client.remove_container(id).await.unwrap();
    }
}

/// The entries of a tar archive as `path content` (content empty for non-files).
fn tar_entries(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    let mut out: Vec<String> = a
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            format!("{path} {text}")
        })
        .collect();
    out.sort();
    out
}

/// A tar archive of one file `name` holding `content`.
fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

async fn archive(
    client: &husk_vm::AgentClient,
    id: &str,
    path: &str,
) -> husk_core::Result<Vec<u8>> {
    let mut r = client.archive(id, path).await?;
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut bytes)
        .await
        .map_err(|e| husk_core::Error::io("read the archive", e))?;
    Ok(bytes)
}

/// Binds from the mounts share, and `cp` (stat, archive, extract) in a running and in a stopped container: the
/// bind is part of the container's files either way, and a link to `/etc` leads to the container's `/etc`.
#[tokio::test(flavor = "multi_thread")]
async fn binds_from_the_mounts_share_and_cp_running_or_stopped() {
    let agent = HostAgent::start();
    let client = agent.client();
    assert!(client.version().await.unwrap().minor >= 1);
    busybox_rootfs(&agent.share.join("c/0"));
    let bind = agent.share.join("m/c/0");
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::write(bind.join("f"), "from the share").unwrap();
    let mut config = container("c", &["sleep", "1000"]);
    config.mounts.push(husk_core::MountConfig {
        kind: MountKind::Bind,
        source: "/somewhere/on/the/host".into(),
        destination: "/b".into(),
        host_path: "m/c/0".into(),
        ..Default::default()
    });
    // A share path that climbs out is refused.
    let mut bad = config.clone();
    bad.mounts[0].host_path = "m/../../x".into();
    let e = client
        .create_container_with_mounts(&bad, "share0", vec!["c/0".into()], "share0")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    client
        .create_container_with_mounts(&config, "share0", vec!["c/0".into()], "share0")
        .await
        .unwrap();
    let never_started = archive(&client, "c", "/b").await.unwrap();
    assert_eq!(tar_entries(&never_started), ["b/ ", "b/f from the share"]);
    client.start("c").await.unwrap();
    let out = exec_output(&client, "c", &["sh", "-c", "cat /b/f; ln -s /etc /evil"]).await;
    assert_eq!(out, "from the share");

    // An archive the host stops reading: the agent's helper ends (on its broken pipe) rather than hanging.
    exec_output(
        &client,
        "c",
        &["dd", "if=/dev/zero", "of=/big", "bs=1M", "count=8"],
    )
    .await;
    let mut r = client.archive("c", "/big").await.unwrap();
    let mut some = vec![0u8; 4096];
    tokio::io::AsyncReadExt::read_exact(&mut r, &mut some)
        .await
        .unwrap();
    let agent_pid = agent.child.id() as i32;
    assert_eq!(helpers_of(agent_pid), 1, "the helper writes the archive");
    drop(r);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while helpers_of(agent_pid) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the helper outlived its reader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stat = client.stat_path("c", "/b/f").await.unwrap();
    assert_eq!((stat.name.as_str(), stat.size), ("f", 14));
    assert!(client.stat_path("c", "/evil").await.unwrap().is_symlink());
    let marker = format!("husk-agent-cp-{}", std::process::id());
    for stopped in [false, true] {
        let name = format!("{marker}-{stopped}");
        client
            .extract(
                "c",
                "/evil",
                Box::pin(std::io::Cursor::new(tar_of(&name, b"inside"))),
                &husk_core::ExtractOptions::default(),
            )
            .await
            .unwrap();
        assert!(
            !std::path::Path::new("/etc").join(&name).exists(),
            "/etc/{name} appeared on the host"
        );
        let back = archive(&client, "c", &format!("/evil/{name}"))
            .await
            .unwrap();
        assert_eq!(tar_entries(&back), [format!("{name} inside")]);
        client
            .extract(
                "c",
                "/b",
                Box::pin(std::io::Cursor::new(tar_of(&name, b"into the bind"))),
                &husk_core::ExtractOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(bind.join(&name)).unwrap(),
            "into the bind"
        );
        let e = archive(&client, "c", "/no/such").await.unwrap_err();
        assert!(e.message.contains("no such"), "{e}");
        if !stopped {
            client.signal("c", "", 9, false).await.unwrap();
            client.wait("c", "").await.unwrap();
        }
    }
    client.remove_container("c").await.unwrap();
}

/// Running container-fs helpers whose parent is `parent`.
fn helpers_of(parent: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let mut fields = after.split_whitespace();
            let (state, ppid) = (fields.next(), fields.next());
            state != Some("Z")
                && ppid == Some(parent.to_string().as_str())
                && std::fs::read(p.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("container-fs"))
        })
        .count()
}

/// Runs `args` in container `id` and returns its output, checking it exited 0.
async fn exec_output(client: &husk_vm::AgentClient, id: &str, args: &[&str]) -> String {
    let process = husk_core::ProcessConfig {
        args: args.iter().map(|s| s.to_string()).collect(),
        cwd: "/".into(),
        ..Default::default()
    };
    client.exec(id, "e", &process).await.unwrap();
    let (_input, output) = client.stdio(id, "e").await.unwrap();
    let out = collect(output, Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout.trim().to_string()
}
