//! One pod lifecycle through the CRI on every driver, as a RuntimeClass would pick it: a pod of two containers
//! sharing localhost, ExecSync with exit codes, statuses, port forwarding, idempotent stop and remove, and
//! nothing left. The `docker` case needs the test engine (`HUSK_TEST_DOCKER_HOST`, started by `scripts/test`).

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use common::cri::{
    channel, container_config, container_status, pod_config, read_all, spdy_connect,
};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tokio::io::AsyncWriteExt;

async fn pod_lifecycle(d: &Daemon, handler: &str) {
    let mut rt = RuntimeServiceClient::new(channel(d).await);
    let config = pod_config("drivers");
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_inner()
        .pod_sandbox_id;
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
        ("client", vec!["sleep", "600"]),
    ] {
        let id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(name, &args)),
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
    let client = ids[1].clone();

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

    let status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.runtime_handler, handler);
    assert!(!status.network.unwrap().ip.is_empty(), "the pod has an IP");

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
