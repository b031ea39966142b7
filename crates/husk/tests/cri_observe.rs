//! What kubelet reads and sets on a node's pods through the CRI: pod stats, metrics, the container event
//! stream, limits and their updates, pulls with a pull secret, runtime handlers from the config, and the clear
//! refusal of checkpoints where CRIU cannot run.

mod common;
use husk_testkit::registry;

use std::time::Duration;

use common::Daemon;
use common::cri::{
    channel, container_config, exited_status, pod_config, run_pod_with, start_in_pod,
    stop_and_remove_pod,
};
use futures::StreamExt;
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_stats_metrics_and_events_follow_the_pods_life() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    // The event stream is open before anything happens.
    let mut events = rt
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    // A container that burns a little CPU and keeps some processes.
    let (pod, busy) = run_pod_with(
        &mut rt,
        "observed",
        container_config(
            "busy",
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 600",
            ],
        ),
    )
    .await;

    let mut seen = Vec::new();
    let wanted = [
        cri::ContainerEventType::ContainerCreatedEvent as i32,
        cri::ContainerEventType::ContainerStartedEvent as i32,
    ];
    let collect = async {
        while !wanted.iter().all(|w| seen.contains(w)) {
            let e = events.next().await.expect("events go on").unwrap();
            assert_eq!(e.container_id, busy);
            assert!(e.created_at > 0);
            assert_eq!(
                e.pod_sandbox_status.as_ref().map(|s| s.id.as_str()),
                Some(pod.as_str())
            );
            assert!(e.containers_statuses.iter().any(|s| s.id == busy));
            seen.push(e.container_event_type);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("created and started events came");

    // Pod stats: the container's CPU time grows; processes are counted; the pod's attributes are kept.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let attributes = stats.attributes.unwrap();
    assert_eq!(attributes.metadata.unwrap().name, "observed");
    assert_eq!(attributes.labels["app"], "observed");
    let linux = stats.linux.unwrap();
    assert!(linux.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    assert_eq!(linux.containers.len(), 1);
    assert_eq!(linux.containers[0].attributes.as_ref().unwrap().id, busy);

    let listed = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                label_selector: [("app".to_string(), "observed".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let none = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                label_selector: [("app".to_string(), "other".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());
    let missing = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Metrics: every descriptor's labels fit every metric, and the container is there.
    let descriptors = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    assert!(
        descriptors
            .iter()
            .any(|d| d.name == "container_cpu_usage_seconds_total")
    );
    let metrics = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let ours = metrics.iter().find(|m| m.pod_sandbox_id == pod).unwrap();
    let container = &ours.container_metrics[0];
    assert_eq!(container.container_id, busy);
    for m in &container.metrics {
        let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
    }
    let memory = container
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .unwrap();
    assert!(memory.value.unwrap().value > 0);

    // A checkpoint is refused, saying why (no CRIU here, or CRIU that cannot run, or none driven by husk).
    let refused = rt
        .checkpoint_container(cri::CheckpointContainerRequest {
            container_id: busy.clone(),
            location: "/tmp/never.tar".into(),
            timeout: 10,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::FailedPrecondition | tonic::Code::Unimplemented
        ),
        "{refused:?}"
    );
    assert!(refused.message().contains("CRIU"), "{}", refused.message());
    assert!(!std::path::Path::new("/tmp/never.tar").exists());

    // Stopped and removed: the stream says so.
    rt.stop_container(cri::StopContainerRequest {
        container_id: busy.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: busy.clone(),
    })
    .await
    .unwrap();
    let wanted = [
        cri::ContainerEventType::ContainerStoppedEvent as i32,
        cri::ContainerEventType::ContainerDeletedEvent as i32,
    ];
    let collect = async {
        while !wanted.iter().all(|w| seen.contains(w)) {
            let e = events.next().await.expect("events go on").unwrap();
            assert_eq!(e.container_id, busy);
            seen.push(e.container_event_type);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("stopped and deleted events came");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_limits_are_set_and_changed_through_the_cri() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let mut config = container_config("limited", &["sleep", "600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 128 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (pod, id) = run_pod_with(&mut rt, "limits", config).await;
    // The container's own cgroup is what it sees under /sys/fs/cgroup (v1 here; v2 names differ).
    let reader = rt.clone();
    let read = |file: &'static str| {
        let mut rt = reader.clone();
        let id = id.clone();
        async move {
            let cmd = format!(
                "cat /sys/fs/cgroup/cpu/{file} /sys/fs/cgroup/cpuset/{file} /sys/fs/cgroup/memory/{file} 2>/dev/null"
            );
            let out = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd: vec!["sh".into(), "-c".into(), cmd],
                    timeout: 10,
                })
                .await
                .unwrap()
                .into_inner();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    if !std::path::Path::new("/sys/fs/cgroup/cpu").exists() {
        eprintln!("cgroup v2 host: the v1 files this test reads are not there");
        return;
    }
    assert_eq!(read("cpu.shares").await, "512");
    assert_eq!(read("cpu.cfs_quota_us").await, "50000");
    assert_eq!(read("cpuset.cpus").await, "0");
    assert_eq!(
        read("memory.limit_in_bytes").await,
        (128u64 << 20).to_string()
    );

    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            cpu_shares: 256,
            cpu_period: 100_000,
            cpu_quota: 100_000,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(read("cpu.shares").await, "256");
    assert_eq!(read("cpu.cfs_quota_us").await, "100000");
    assert_eq!(
        read("memory.limit_in_bytes").await,
        (256u64 << 20).to_string()
    );
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let reported = status.resources.unwrap().linux.unwrap();
    assert_eq!(
        (
            reported.cpu_shares,
            reported.cpu_quota,
            reported.memory_limit_in_bytes
        ),
        (256, 100_000, 256 << 20)
    );
    assert_eq!(reported.cpuset_cpus, "0", "what was not changed stays");

    // A bad value changes nothing and names the field.
    let bad = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpuset_cpus: "zero".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("cpuset_cpus"), "{}", bad.message());
    assert_eq!(read("cpu.shares").await, "256");

    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
}

/// A container over its memory limit is OOM-killed, and ContainerStatus says so as kubelet expects: EXITED, exit
/// code 137, reason `OOMKilled`, a finish time; a container that exits by itself gets `Completed` (0) or `Error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported_with_its_reason() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let limited = |name: &str, script: &str| {
        let mut config = container_config(name, &["sh", "-c", script]);
        config.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    let (pod, hog) = run_pod_with(&mut rt, "oom", limited("hog", common::MEMORY_HOG)).await;
    let mut ids = vec![("hog", hog, 137, "OOMKilled")];
    for (name, script, code, reason) in [
        ("done", "true", 0, "Completed"),
        ("failed", "exit 3", 3, "Error"),
    ] {
        let id = start_in_pod(
            &mut rt,
            &pod,
            limited(name, script),
            Some(pod_config("oom")),
        )
        .await;
        ids.push((name, id, code, reason));
    }
    for (name, id, code, reason) in ids {
        let status = exited_status(&mut rt, &id, Duration::from_secs(60)).await;
        assert_eq!(status.exit_code, code, "{name}: {status:?}");
        assert_eq!(status.reason, reason, "{name}: {status:?}");
        assert!(
            status.finished_at >= status.started_at && status.started_at > 0,
            "{name}: {status:?}"
        );
    }
    stop_and_remove_pod(&mut rt, &pod).await;
    d.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_image_uses_the_requests_credentials() {
    let registry = registry::Registry::start(Some(("cri-user", "s3cret")));
    registry.push_archive(&common::busybox_archive(), "demo/private:1");
    let reference = registry.reference("demo/private:1");
    let d = Daemon::start_with(&[], "", false);
    let mut img =
        husk_cri_api::v1::image_service_client::ImageServiceClient::new(channel(&d).await);
    let pull = |auth: Option<cri::AuthConfig>| cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
        auth,
        sandbox_config: None,
    };
    let anonymous = img.pull_image(pull(None)).await.unwrap_err();
    assert_ne!(anonymous.code(), tonic::Code::Ok);
    let wrong = img
        .pull_image(pull(Some(cri::AuthConfig {
            username: "cri-user".into(),
            password: "nope".into(),
            ..Default::default()
        })))
        .await
        .unwrap_err();
    assert_ne!(wrong.code(), tonic::Code::Ok);
    // kubelet sends an image pull secret as `auth`, base64 of user:password.
    let pulled = img
        .pull_image(pull(Some(cri::AuthConfig {
            auth: "Y3JpLXVzZXI6czNjcmV0".into(),
            ..Default::default()
        })))
        .await
        .unwrap()
        .into_inner();
    let status = img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(status.id, pulled.image_ref);
    // Nothing was stored: the credentials were for that pull alone.
    assert!(!d.root.join("images").join("auth.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_runtime_handlers_pick_the_driver() {
    let d = Daemon::start_with(&[], "[cri.runtimes.fast]\ndriver = \"linux\"\n", true);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert!(names.contains(&"fast") && names.contains(&""), "{names:?}");

    let mut config = common::cri::pod_config("handled");
    config.metadata.as_mut().unwrap().uid = "uid-handled".into();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "fast".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let status = common::cri::pod_status(&mut rt, &pod).await;
    assert_eq!(status.runtime_handler, "fast");
    let driver = d.husk(&["sandbox", "inspect", &pod]).ok();
    assert!(driver.contains("\"linux\""), "{driver}");

    config.metadata.as_mut().unwrap().uid = "uid-unknown".into();
    let unknown = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument);
    assert!(unknown.message().contains("nope"), "{}", unknown.message());
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1, "the refused pod left nothing");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
}

/// Collects a Stream* list RPC's messages.
async fn collect<T>(stream: tonic::Streaming<T>) -> Vec<T> {
    stream
        .map(|m| m.expect("a stream message"))
        .collect::<Vec<T>>()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_lists_pod_resources_and_stop_signals() {
    let d = Daemon::start(&[]);
    let ch = channel(&d).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = husk_cri_api::v1::image_service_client::ImageServiceClient::new(ch);
    // A container that leaves with 42 when it gets SIGUSR1, its stop signal.
    let mut trapper = container_config(
        "trapper",
        &["sh", "-c", "trap 'exit 42' USR1; while :; do sleep 1; done"],
    );
    trapper.stop_signal = cri::Signal::Sigusr1 as i32;
    let (pod, id) = run_pod_with(&mut rt, "streamed", trapper).await;
    let (other_pod, plain) = run_pod_with(
        &mut rt,
        "streamed-2",
        container_config("plain", &["sleep", "600"]),
    )
    .await;

    // Every Stream* RPC carries what its List RPC returns, each item once.
    let mut listed: Vec<String> = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut streamed: Vec<String> = collect(
        rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .into_iter()
    .flat_map(|m| m.pod_sandboxes)
    .map(|p| p.id)
    .collect();
    listed.sort();
    streamed.sort();
    assert_eq!(listed.len(), 2);
    assert_eq!(streamed, listed);
    let filtered = collect(
        rt.stream_containers(cri::StreamContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: other_pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    let ids: Vec<String> = filtered
        .into_iter()
        .flat_map(|m| m.containers)
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, vec![plain.clone()], "the filter applies");
    let stats = collect(
        rt.stream_container_stats(cri::StreamContainerStatsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let mut ids: Vec<String> = stats
        .into_iter()
        .flat_map(|m| m.container_stats)
        .map(|s| s.attributes.unwrap().id)
        .collect();
    ids.sort();
    let mut want = vec![id.clone(), plain.clone()];
    want.sort();
    assert_eq!(ids, want);
    let pod_stats = collect(
        rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await;
    let pod_stats: Vec<cri::PodSandboxStats> = pod_stats
        .into_iter()
        .flat_map(|m| m.pod_sandbox_stats)
        .collect();
    assert_eq!(pod_stats.len(), 1);
    assert_eq!(pod_stats[0].attributes.as_ref().unwrap().id, pod);
    let metrics = collect(
        rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(
        metrics.iter().flat_map(|m| &m.pod_sandbox_metrics).count(),
        2
    );
    let listed_images = img
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let streamed_images: Vec<cri::Image> = collect(
        img.stream_images(cri::StreamImagesRequest::default())
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .into_iter()
    .flat_map(|m| m.images)
    .collect();
    assert!(!listed_images.is_empty());
    assert_eq!(streamed_images, listed_images);

    // UpdatePodSandboxResources: accepted for a pod (kubelet resized its cgroup), checked, and NOT_FOUND for
    // no pod.
    let limits = cri::LinuxContainerResources {
        cpu_shares: 512,
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.clone(),
        overhead: None,
        resources: Some(limits.clone()),
    })
    .await
    .unwrap();
    let e = rt
        .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "no-such-pod".into(),
            overhead: None,
            resources: Some(limits.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let mut twice = limits.clone();
    twice.hugepage_limits = vec![
        cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 0,
        };
        2
    ];
    let e = rt
        .update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.clone(),
            overhead: Some(twice),
            resources: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("overhead: "), "{}", e.message());

    // The writable layer's usage: what the container wrote to its root filesystem.
    let wrote = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "mkdir /scratch && head -c 100000 /dev/zero > /scratch/zeros".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        wrote.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let layer = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .writable_layer
        .expect("the linux driver keeps the layer here");
    let bytes = layer.used_bytes.unwrap().value;
    assert!(
        (100_000..200_000).contains(&bytes),
        "the file and little else: {bytes}"
    );
    assert!(layer.inodes_used.unwrap().value >= 2, "{layer:?}");
    // ImageFsInfo: the image store as walked, and the containers' writable layers (this file among them).
    let fs = img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let (images, layers) = (&fs.image_filesystems[0], &fs.container_filesystems[0]);
    assert!(images.used_bytes.unwrap().value > 100_000, "{images:?}");
    assert!(images.inodes_used.unwrap().value > 10, "{images:?}");
    assert!(layers.used_bytes.unwrap().value >= bytes, "{layers:?}");
    assert!(layers.inodes_used.unwrap().value >= 2, "{layers:?}");

    // The stop signal: reported in the status (SIGTERM where none was asked for) and sent by StopContainer.
    let status = common::cri::container_status(&mut rt, &id).await;
    assert_eq!(status.stop_signal, cri::Signal::Sigusr1 as i32);
    let status = common::cri::container_status(&mut rt, &plain).await;
    assert_eq!(status.stop_signal, cri::Signal::Sigterm as i32);
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 30,
    })
    .await
    .unwrap();
    let status = common::cri::container_status(&mut rt, &id).await;
    assert_eq!(
        (status.state, status.exit_code),
        (cri::ContainerState::ContainerExited as i32, 42),
        "SIGUSR1 reached the trap: {status:?}"
    );
    for p in [pod, other_pod] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: p.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p })
            .await
            .unwrap();
    }
    d.assert_no_leftovers();
}
