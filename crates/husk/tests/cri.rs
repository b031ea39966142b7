//! The Kubernetes CRI front end, driven as kubelet drives it: a tonic client on the daemon's CRI socket takes a
//! pod of two containers sharing localhost through its whole life on the `linux` driver, with ExecSync, lists
//! with filters, statuses, idempotent stop and remove, bad requests, and nothing left behind.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, IMAGE};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

async fn channel(d: &Daemon) -> Channel {
    let socket = d.run_root.join("cri.sock");
    assert!(
        Daemon::eventually(Duration::from_secs(10), || socket.exists()),
        "no CRI socket at {}",
        socket.display()
    );
    Endpoint::from_static("http://husk-cri")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to the CRI socket")
}

fn pod_config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "kept".to_string())].into(),
        ..Default::default()
    }
}

fn container_config(name: &str, args: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: args.iter().map(|a| a.to_string()).collect(),
        labels: [("role".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_two_containers_lives_and_goes_through_the_cri() {
    let d = Daemon::start(&[]);
    let ch = channel(&d).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);

    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("husk", "v1")
    );
    let status = rt
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    assert!(conditions.iter().all(|c| c.status), "{conditions:?}");
    assert!(status.runtime_handlers.iter().any(|h| h.name == "linux"));
    let config = rt
        .runtime_config(cri::RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );

    let image = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("the test image is here");
    assert!(
        image
            .repo_tags
            .iter()
            .any(|t| t.ends_with("test/busybox:1")),
        "{image:?}"
    );
    let missing = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "nothing/here:1".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        missing.image.is_none(),
        "a missing image is no error, and no image"
    );

    // The pod and its two containers.
    let logs = d.dir.path().join("pod-logs");
    let mut web = pod_config("web");
    web.log_directory = logs.display().to_string();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(web),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let server = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(
                "server",
                &["sh", "-c", "mkdir -p /tmp/w && echo hello from the pod > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w"],
            )),
            sandbox_config: Some(pod_config("web")),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    // The client's output goes to a CRI log under the pod's log directory; it says "said" whenever
    // /tmp/say appears.
    let mut client_config = container_config(
        "client",
        &[
            "sh",
            "-c",
            "echo client up; echo warming >&2; while sleep 0.1; do [ -e /tmp/say ] && { echo said; rm /tmp/say; }; done",
        ],
    );
    client_config.log_path = "client/0.log".into();
    let client = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(client_config),
            sandbox_config: Some(pod_config("web")),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let created = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: client.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(created.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(created.metadata.unwrap().name, "client");
    for id in [&server, &client] {
        rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }

    // The two share localhost: the client fetches the server's page.
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let r = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: client.clone(),
                cmd: vec![
                    "wget".into(),
                    "-qO-".into(),
                    "http://127.0.0.1:8080/".into(),
                ],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        if r.exit_code == 0 {
            break String::from_utf8_lossy(&r.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "never fetched: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(page.trim(), "hello from the pod");

    // The CRI log, in kubelet's format; after a rotation (rename + ReopenContainerLog) new lines go to a new file.
    let log = logs.join("client/0.log");
    let read_log = |want: &str| {
        let mut text = String::new();
        let found = Daemon::eventually(Duration::from_secs(10), || {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines().any(|l| l.ends_with(want))
        });
        assert!(
            found,
            "no line ending {want:?} in {}: {text:?}",
            log.display()
        );
        text
    };
    let text = read_log(" stdout F client up");
    read_log(" stderr F warming");
    let first = text.lines().next().unwrap();
    let time = first.split(' ').next().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(time).is_ok(),
        "{first}"
    );
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: client.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.log_path, log.display().to_string());
    std::fs::rename(&log, logs.join("client/0.log.1")).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: client.clone(),
    })
    .await
    .unwrap();
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: client.clone(),
        cmd: vec!["touch".into(), "/tmp/say".into()],
        timeout: 10,
    })
    .await
    .unwrap();
    let rotated = read_log(" stdout F said");
    assert!(
        !rotated.contains("client up"),
        "the new file is new: {rotated}"
    );

    // ExecSync's exit code and stderr; its timeout ends the call and the process.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: client.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo oops >&2; exit 3".into()],
            timeout: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.exit_code, r.stderr.as_slice()),
        (3, b"oops\n".as_slice())
    );
    let started = Instant::now();
    let timed_out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: client.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the timeout did not end the call"
    );
    assert_eq!(timed_out.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    let gone = Daemon::eventually(Duration::from_secs(5), || {
        d.husk(&["exec", &client, "ps", "-o", "args"])
            .ok()
            .lines()
            .all(|l| l != "sleep 30")
    });
    assert!(gone, "the timed-out process still runs");

    // Lists and statuses, with filters.
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let by_label = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: [("role".to_string(), "server".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        by_label.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [server.as_str()]
    );
    let ps = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ps.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(ps.metadata.unwrap().uid, "uid-web");
    assert_eq!(ps.labels["app"], "web");
    assert_eq!(ps.annotations.get("note").map(String::as_str), Some("kept"));
    assert!(
        ps.annotations.keys().all(|k| !k.starts_with("io.husk.")),
        "{:?}",
        ps.annotations
    );
    assert!(!ps.network.unwrap().ip.is_empty(), "the pod has an IP");

    // Stop: the container exits with a reason; the pod goes NotReady; both again are no error.
    rt.stop_container(cri::StopContainerRequest {
        container_id: server.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    let stopped = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: server.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(stopped.state, cri::ContainerState::ContainerExited as i32);
    assert!(
        ["Error", "Completed"].contains(&stopped.reason.as_str()),
        "{stopped:?}"
    );
    assert!(stopped.finished_at >= stopped.started_at && stopped.started_at > 0);
    rt.stop_container(cri::StopContainerRequest {
        container_id: server.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    for _ in 0..2 {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    }
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue {
                    state: cri::PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [pod.as_str()]
    );

    // Remove, twice; then nothing is left.
    for _ in 0..2 {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: client.clone(),
        })
        .await
        .unwrap();
    }
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    d.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses_and_change_nothing() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);

    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig::default()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("metadata"), "{}", e.message());

    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("h")),
            runtime_handler: "no-such-handler".into(),
        })
        .await
        .unwrap_err();
    assert_ne!(e.code(), tonic::Code::Ok);
    assert!(e.message().contains("no-such-handler"), "{}", e.message());

    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "0".repeat(64),
            config: Some(container_config("c", &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("bad")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut config = container_config("c", &["true"]);
    config.image = Some(cri::ImageSpec {
        image: "nothing/here:1".into(),
        ..Default::default()
    });
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    let left = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(left.is_empty(), "a failed create left {left:?}");

    // Stop and remove of what does not exist succeed (kubelet retries them).
    rt.stop_container(cri::StopContainerRequest {
        container_id: "f".repeat(64),
        timeout: 1,
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: "f".repeat(64),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: "f".repeat(64),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    d.assert_no_leftovers();
}
