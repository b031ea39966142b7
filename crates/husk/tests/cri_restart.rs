//! The daemon dies (SIGKILL) and comes back while kubelet's pods run: the pods and containers are still there,
//! in the same states, reachable by ExecSync and streaming, and stop and remove as usual, leaving nothing; a pod
//! stopped before a restart is still not ready after it.

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
    let exited = common::cri::start_in_pod(
        &mut rt,
        &pod,
        container_config("quick", &["true"]),
        Some(common::cri::pod_config("survivor")),
    )
    .await;
    common::cri::exited_status(&mut rt, &exited, Duration::from_secs(20)).await;
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
    // A stopped pod stays stopped across another restart (its namespaces live on until it is removed).
    d.kill9();
    d.spawn(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let status = common::cri::pod_status(&mut rt, &pod).await;
    assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
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

/// The stdout lines of CRI log files, in order, each checked to be `<RFC 3339 time> stdout F|P <text>`.
fn stdout_lines(files: &[&std::path::Path]) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for path in files {
        for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            assert!(
                f.len() == 4
                    && chrono::DateTime::parse_from_rfc3339(f[0]).is_ok()
                    && f[1] == "stdout"
                    && (f[2] == "F" || f[2] == "P"),
                "not a CRI stdout line: {l:?}"
            );
            lines.push((f[2].to_string(), f[3].to_string()));
        }
    }
    lines
}

/// A container's CRI log through a rotation and a daemon restart (SIGKILL) on `handler`: the file is appended
/// to, never truncated, and no line is written twice. With `lossless`, no line is missing either (the output
/// while no daemon ran is kept outside the daemon: by the shim on `linux`, in the engine's log on `docker`; the
/// `vm` agent buffers it, but what it sent to the dying daemon's connection is gone with it).
async fn the_cri_log_survives_a_restart(mut d: Daemon, handler: &str, lossless: bool) {
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let (pod, pod_config, logs) =
        common::cri::run_logged_pod(&mut rt, &d, "ticking", handler).await;
    let mut config = container_config(
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while :; do echo tick $i; i=$((i+1)); [ -e /tmp/stop ] && break; sleep 0.1; done; printf end",
        ],
    );
    config.log_path = "ticker/0.log".into();
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(pod_config),
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
    let log = logs.join("ticker/0.log");
    let rotated = logs.join("ticker/0.log.1");
    let has = common::cri::log_has_line_ending;
    assert!(
        Daemon::eventually(Duration::from_secs(120), || has(&log, " F tick 3")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    std::fs::rename(&log, &rotated).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:?}"));
    let first = stdout_lines(&[&rotated]);

    d.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await; // it ticks on with no daemon
    d.spawn(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["touch".into(), "/tmp/stop".into()],
            timeout: 30,
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_inner();
    assert_eq!(r.exit_code, 0, "{r:?}");
    assert!(
        Daemon::eventually(Duration::from_secs(60), || has(&log, " P end")),
        "{:?}",
        std::fs::read_to_string(&log)
    );
    tokio::time::sleep(Duration::from_secs(1)).await; // a line written twice would come late
    let lines = stdout_lines(&[&rotated, &log]);
    assert_eq!(
        lines[..first.len()],
        first[..],
        "the renamed file was not rewritten"
    );
    let (last, ticks) = lines.split_last().unwrap();
    assert_eq!(last, &("P".to_string(), "end".to_string()));
    let numbers: Vec<u32> = ticks
        .iter()
        .map(|(tag, text)| {
            assert_eq!(tag, "F", "{text}");
            text.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a tick: {text:?}"))
        })
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice: {numbers:?}"
    );
    assert!(numbers.len() >= 4, "{numbers:?}");
    if lossless {
        assert_eq!(
            numbers,
            (0..numbers.len() as u32).collect::<Vec<_>>(),
            "none missing"
        );
    }

    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
    d.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cri_log_survives_a_restart_on_linux() {
    the_cri_log_survives_a_restart(Daemon::start(&[]), "linux", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cri_log_survives_a_restart_on_docker() {
    the_cri_log_survives_a_restart(Daemon::start_driver("docker"), "docker", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cri_log_survives_a_restart_in_a_vm() {
    the_cri_log_survives_a_restart(Daemon::start_driver("vm"), "vm", false).await;
}
