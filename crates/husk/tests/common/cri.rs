//! What the CRI tests share: a tonic channel to a daemon's CRI socket, pod and container configs as kubelet
//! sends them, and a pod with one running container.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use super::{Daemon, IMAGE};

/// A channel to the daemon's CRI socket (waiting for it to appear).
pub async fn channel(d: &Daemon) -> Channel {
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

/// Stops and removes pod `pod`, as kubelet does when it is done with it.
pub async fn stop_and_remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .expect("stop the pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.to_string(),
    })
    .await
    .expect("remove the pod");
}

/// A pod's config with metadata, hostname, a label and an annotation.
pub fn pod_config(name: &str) -> cri::PodSandboxConfig {
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

/// A container's config running `args` from the test image.
pub fn container_config(name: &str, args: &[&str]) -> cri::ContainerConfig {
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

/// A container's status.
pub async fn container_status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// PodSandboxStatus of pod `id` (not verbose).
pub async fn pod_status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::PodSandboxStatus {
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// Runs a pod `name` on `handler` whose containers' CRI logs go under `<daemon dir>/pod-logs`; returns its id,
/// its config (for CreateContainer) and that directory.
pub async fn run_logged_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    d: &Daemon,
    name: &str,
    handler: &str,
) -> (String, cri::PodSandboxConfig, std::path::PathBuf) {
    let logs = d.dir.path().join("pod-logs");
    let mut config = pod_config(name);
    config.log_directory = logs.display().to_string();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_inner()
        .pod_sandbox_id;
    (pod, config, logs)
}

/// Whether the CRI log at `path` has a line ending in `want` (a missing file has none).
pub fn log_has_line_ending(path: &std::path::Path, want: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .any(|l| l.ends_with(want))
}

/// Runs a pod `pod` and starts one container made from `config` in it; returns (pod id, container id).
pub async fn run_pod_with(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    config: cri::ContainerConfig,
) -> (String, String) {
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config(pod)),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let id = start_in_pod(rt, &pod_id, config, Some(pod_config(pod))).await;
    (pod_id, id)
}

/// Creates a container from `config` in pod `pod` (kubelet sends the pod's config along, when given) and starts
/// it; returns its id.
pub async fn start_in_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox_config: Option<cri::PodSandboxConfig>,
) -> String {
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config),
            sandbox_config,
        })
        .await
        .unwrap_or_else(|e| panic!("create a container in pod {pod}: {e:?}"))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("start container {id}: {e:?}"));
    id
}

/// The status of container `id` once it has exited (panics after `within`).
pub async fn exited_status(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    within: Duration,
) -> cri::ContainerStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = container_status(rt, id).await;
        if status.state == cri::ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "container {id} has not exited: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Upgrades a connection to `url` to SPDY/3.1 offering `protocol`; returns the session and what the server
/// chose.
pub async fn spdy_connect(url: &str, protocol: &str) -> (husk_cri::spdy::Session, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Read the answer's head byte by byte: nothing of the session may be consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            tcp.read(&mut b).await.unwrap(),
            1,
            "the server closed: {head:?}"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let chosen = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-stream-protocol-version")
                .then(|| v.trim().to_string())
        })
        .expect("a chosen protocol");
    let (session, _incoming) = husk_cri::spdy::Session::client(tcp);
    (session, chosen)
}

pub async fn read_all(mut s: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the stream ended in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
