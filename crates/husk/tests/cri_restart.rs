//! The daemon dies (SIGKILL) and comes back while kubelet's pods run: the pods and containers are still there,
//! in the same states, reachable by ExecSync and streaming, and stop and remove as usual, leaving nothing.

mod common;

use std::time::Duration;

use common::Daemon;
use common::cri::{channel, container_config, container_status, run_pod_with};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_survive_a_daemon_restart_and_stay_manageable() {
    let mut d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let (pod, id) = run_pod_with(
        &mut rt,
        "survivor",
        container_config(
            "sleeper",
            &["sh", "-c", "echo $$ > /tmp/pid; exec sleep 600"],
        ),
    )
    .await;
    let exited = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("quick", &["true"])),
            sandbox_config: Some(common::cri::pod_config("survivor")),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: exited.clone(),
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while container_status(&mut rt, &exited).await.state
        != cri::ContainerState::ContainerExited as i32
    {
        assert!(std::time::Instant::now() < deadline, "quick never exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = container_status(&mut rt, &id).await;

    d.kill9();
    d.spawn(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);

    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxReady as i32);
    let after = container_status(&mut rt, &id).await;
    assert_eq!(after.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(
        after.started_at, before.started_at,
        "the same process, not a new one"
    );
    let quick = container_status(&mut rt, &exited).await;
    assert_eq!(quick.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((quick.exit_code, quick.reason.as_str()), (0, "Completed"));

    // Still reachable: the same shell's pid, through ExecSync.
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["cat".into(), "/tmp/pid".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0);
    assert!(!out.stdout.is_empty());
    // Streaming works on the new daemon's server.
    let url = rt
        .exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // Stop and remove as kubelet does; nothing is left.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        container_status(&mut rt, &id).await.state,
        cri::ContainerState::ContainerExited as i32
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty());
    d.assert_no_leftovers();
}
