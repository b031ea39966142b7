//! One pod lifecycle through the CRI on every driver, as a RuntimeClass would pick it: a pod of containers
//! sharing localhost, ExecSync with exit codes, statuses, the CRI log files (exact lines, rotation), port
//! forwarding, idempotent stop and remove, and nothing left. The `docker` case needs the test engine (`HUSK_TEST_DOCKER_HOST`, started by `scripts/test`).

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use common::cri::{
    channel, container_config, container_status, log_has_line_ending, read_all, run_logged_pod,
    spdy_connect,
};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tokio::io::AsyncWriteExt;

async fn pod_lifecycle(d: &Daemon, handler: &str) {
    let mut rt = RuntimeServiceClient::new(channel(d).await);
    let (pod, config, logs) = run_logged_pod(&mut rt, d, "drivers", handler).await;
    let mut ids = Vec::new();
    for (name, args) in [
        (
            "server",
            vec![
                "sh",
                "-c",
                "mkdir -p /tmp/w && echo served in the pod > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w",
            ],
        ),
        // It says "said" whenever /tmp/say appears.
        (
            "client",
            vec![
                "sh",
                "-c",
                "echo client up; while sleep 0.2; do [ -e /tmp/say ] && { echo said; rm /tmp/say; }; done",
            ],
        ),
        // Known lines on both streams, the last one without its newline, then it exits.
        (
            "printer",
            vec![
                "sh",
                "-c",
                "echo out one; echo err one >&2; echo out two; echo err two >&2; printf 'no newline'",
            ],
        ),
    ] {
        let mut container = container_config(name, &args);
        container.log_path = format!("{name}/0.log");
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .into_inner()
            .container_id;
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        ids.push(id);
    }
    let (client, printer) = (ids[1].clone(), ids[2].clone());

    // The client reaches the server on the pod's localhost.
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let r = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: client.clone(),
                cmd: vec![
                    "wget".into(),
                    "-qO-".into(),
                    "http://127.0.0.1:8080/".into(),
                ],
                timeout: 20,
            })
            .await
            .unwrap()
            .into_inner();
        if r.exit_code == 0 {
            break String::from_utf8_lossy(&r.stdout).into_owned();
        }
        assert!(Instant::now() < deadline, "never fetched: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(page.trim(), "served in the pod");
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: client.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo bad >&2; exit 7".into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.exit_code, r.stderr.as_slice()), (7, b"bad\n".as_slice()));

    let status = common::cri::pod_status(&mut rt, &pod).await;
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.runtime_handler, handler);
    assert!(!status.network.unwrap().ip.is_empty(), "the pod has an IP");

    cri_logs(&mut rt, &logs, &client, &printer).await;

    // Port forwarding over SPDY reaches the server.
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let page = forward_get(&url, 8080).await;
    assert!(page.contains("served in the pod"), "{page:?}");

    // Stop twice, remove twice: kubelet retries.
    for _ in 0..2 {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    }
    for id in &ids {
        let s = container_status(&mut rt, id).await;
        assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    }
    for _ in 0..2 {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    }
    let left = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "{left:?}");
    d.assert_no_leftovers();
}

/// The lines of a CRI log file as (stream, tag, text), each checked to start with an RFC 3339 time in UTC.
fn cri_lines(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let time = f.next().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
                "not a CRI line: {l:?}"
            );
            let mut next = || {
                f.next()
                    .unwrap_or_else(|| panic!("not a CRI line: {l:?}"))
                    .to_string()
            };
            (next(), next(), next())
        })
        .collect()
}

/// The CRI log files of the pod's `client` (running) and `printer` (exits at once) hold exactly what they printed
/// in kubelet's format; after a rotation (rename + ReopenContainerLog) the client's new lines go to a new file.
async fn cri_logs(
    rt: &mut RuntimeServiceClient<tonic::transport::Channel>,
    logs: &std::path::Path,
    client: &str,
    printer: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while container_status(rt, printer).await.state != cri::ContainerState::ContainerExited as i32 {
        assert!(Instant::now() < deadline, "the printer never exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let path = logs.join("printer/0.log");
    let stream = |lines: &[(String, String, String)], name: &str| -> Vec<(String, String)> {
        lines
            .iter()
            .filter(|l| l.0 == name)
            .map(|l| (l.1.clone(), l.2.clone()))
            .collect()
    };
    let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let mut text = String::new();
    Daemon::eventually(Duration::from_secs(30), || {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines().count() >= 5
    });
    // A line written twice would show up late: look again after a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines = cri_lines(&text);
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        stream(&lines, "stdout"),
        pairs(&[("F", "out one"), ("F", "out two"), ("P", "no newline")]),
        "{text}"
    );
    assert_eq!(
        stream(&lines, "stderr"),
        pairs(&[("F", "err one"), ("F", "err two")]),
        "{text}"
    );
    let status = container_status(rt, printer).await;
    assert_eq!(status.log_path, path.display().to_string());

    // Rotation: kubelet renames the file, then asks for a reopen; the next lines go to a new file.
    let log = logs.join("client/0.log");
    let has = log_has_line_ending;
    assert!(
        Daemon::eventually(Duration::from_secs(30), || has(&log, " stdout F client up")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    let rotated = logs.join("client/0.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: client.to_string(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: client.to_string(),
            cmd: vec!["touch".into(), "/tmp/say".into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(
        Daemon::eventually(Duration::from_secs(30), || has(&log, " stdout F said")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    let new = cri_lines(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(
        new.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
        ["said"],
        "the new file has the new line alone"
    );
    let old = cri_lines(&std::fs::read_to_string(&rotated).unwrap());
    assert_eq!(
        old.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(),
        ["client up"],
        "the renamed file keeps what came before"
    );
}

/// GET / through a SPDY port-forward session to `port`.
async fn forward_get(url: &str, port: u16) -> String {
    let (session, _) = spdy_connect(url, "portforward.k8s.io").await;
    let port = port.to_string();
    let headers = |kind| {
        [
            ("streamType", kind),
            ("port", port.as_str()),
            ("requestID", "0"),
        ]
    };
    let mut error = session.open(&headers("error")).await.unwrap();
    let mut data = session.open(&headers("data")).await.unwrap();
    error.shutdown().await.unwrap();
    data.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    data.shutdown().await.unwrap();
    let page = read_all(&mut data).await;
    session.close().await;
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lives_through_the_cri_on_the_linux_handler() {
    let d = Daemon::start(&[]);
    pod_lifecycle(&d, "linux").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lives_through_the_cri_in_a_vm() {
    let d = Daemon::start_driver("vm");
    pod_lifecycle(&d, "vm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lives_through_the_cri_on_docker() {
    let d = Daemon::start_driver("docker");
    pod_lifecycle(&d, "docker").await;
}
