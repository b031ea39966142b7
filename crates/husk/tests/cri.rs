//! The Kubernetes CRI front end, driven as kubelet drives it: a tonic client on the daemon's CRI socket takes a
//! pod of two containers sharing localhost through its whole life on the `linux` driver, with ExecSync, lists
//! with filters, statuses, idempotent stop and remove, bad requests, image volumes, and nothing left behind.

mod common;
use husk_testkit::registry;

use std::time::{Duration, Instant};

use common::cri::{channel, container_config, pod_config, start_in_pod};
use common::{Daemon, IMAGE};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::image_service_client::ImageServiceClient;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

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
    let ps = common::cri::pod_status(&mut rt, &pod).await;
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

/// Runs `cmd` in `container` through ExecSync; returns its stdout, failing on a non-zero exit.
async fn exec_ok(rt: &mut RuntimeServiceClient<Channel>, container: &str, cmd: &[&str]) -> String {
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|a| a.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

async fn run_pod(rt: &mut RuntimeServiceClient<Channel>, config: cri::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

/// A segment of System V shared memory on the host, removed on drop.
struct HostShm(i32);

impl HostShm {
    fn new() -> HostShm {
        // SAFETY: shmget with IPC_PRIVATE makes a new segment; no memory is touched.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        HostShm(id)
    }
}

impl Drop for HostShm {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID on the segment we made; a null buffer is allowed for IPC_RMID.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// Whether the System V shared memory segment `id` is listed in `/proc/sysvipc/shm` text.
fn lists_segment(text: &str, id: i32) -> bool {
    text.lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_the_hosts_pid_and_ipc_namespaces_sees_the_hosts_processes_and_ipc() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let mut host_sleep = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("start sleep on the host");
    let segment = HostShm::new();
    let shm_file = format!("/dev/shm/husk-cri-test-{}", std::process::id());
    std::fs::write(&shm_file, "from the host").unwrap();

    let mut config = pod_config("hostns");
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Node as i32,
                ipc: cri::NamespaceMode::Node as i32,
                network: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, config).await;
    let options = common::cri::pod_status(&mut rt, &pod)
        .await
        .linux
        .unwrap()
        .namespaces
        .unwrap()
        .options
        .unwrap();
    assert_eq!(
        (options.pid, options.ipc, options.network),
        (
            cri::NamespaceMode::Node as i32,
            cri::NamespaceMode::Node as i32,
            cri::NamespaceMode::Pod as i32
        )
    );
    let c = start_in_pod(
        &mut rt,
        &pod,
        container_config("c", &["sleep", "1000"]),
        None,
    )
    .await;

    // The host's namespaces, by their files' targets; the pod's own network.
    let host_ns = |kind: &str| {
        std::fs::read_link(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    for kind in ["pid", "ipc"] {
        let inside = exec_ok(&mut rt, &c, &["readlink", &format!("/proc/self/ns/{kind}")]).await;
        assert_eq!(inside.trim(), host_ns(kind), "{kind}");
    }
    let net = exec_ok(&mut rt, &c, &["readlink", "/proc/self/ns/net"]).await;
    assert_ne!(net.trim(), host_ns("net"));
    // A process the test started, by its host PID; the host's shared memory, both System V and POSIX.
    let cmdline = exec_ok(
        &mut rt,
        &c,
        &["cat", &format!("/proc/{}/cmdline", host_sleep.id())],
    )
    .await;
    assert_eq!(cmdline, "sleep\u{0}1000\u{0}");
    let shm = exec_ok(&mut rt, &c, &["cat", "/proc/sysvipc/shm"]).await;
    assert!(lists_segment(&shm, segment.0), "{shm}");
    let file = exec_ok(&mut rt, &c, &["cat", &shm_file]).await;
    assert_eq!(file, "from the host");

    // A pod of its own namespaces sees none of it.
    let own = run_pod(&mut rt, pod_config("ownns")).await;
    let o = start_in_pod(
        &mut rt,
        &own,
        container_config("o", &["sleep", "1000"]),
        None,
    )
    .await;
    for kind in ["pid", "ipc"] {
        let inside = exec_ok(&mut rt, &o, &["readlink", &format!("/proc/self/ns/{kind}")]).await;
        assert_ne!(inside.trim(), host_ns(kind), "{kind}");
    }
    let shm = exec_ok(&mut rt, &o, &["cat", "/proc/sysvipc/shm"]).await;
    assert!(!lists_segment(&shm, segment.0), "{shm}");
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: o.clone(),
            cmd: vec!["cat".into(), shm_file.clone()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(r.exit_code, 0, "the pod's /dev/shm is its own");

    for p in [&pod, &own] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: p.to_string(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: p.to_string(),
        })
        .await
        .unwrap();
    }
    // The host's process and files are untouched by the pod's end.
    assert!(
        host_sleep.try_wait().unwrap().is_none(),
        "the host's sleep was killed"
    );
    assert_eq!(std::fs::read_to_string(&shm_file).unwrap(), "from the host");
    let _ = host_sleep.kill();
    let _ = host_sleep.wait();
    let _ = std::fs::remove_file(&shm_file);
    d.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supplemental_groups_policy_strict_leaves_out_the_images_groups() {
    let d = Daemon::start(&[]);
    // An image whose user 1000 belongs to group 50000 in its /etc/group.
    d.husk(&[
        "run",
        "--name",
        "groups",
        IMAGE,
        "sh",
        "-c",
        "echo app:x:1000:1000::/:/bin/sh >> /etc/passwd && \
         printf 'app:x:1000:\\nextra:x:50000:app\\n' >> /etc/group",
    ])
    .ok();
    d.husk(&["commit", "groups", "test/groups:1"]).ok();
    d.husk(&["rm", "groups"]).ok();
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let status = rt
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(status.features.unwrap().supplemental_groups_policy);

    // Each container in its own PID namespace, where its first process is PID 1.
    let mut config = pod_config("groups");
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, config).await;
    for (policy, want) in [
        (
            cri::SupplementalGroupsPolicy::Merge,
            vec![1000, 1234, 50000],
        ),
        (cri::SupplementalGroupsPolicy::Strict, vec![1000, 1234]),
    ] {
        let mut config =
            container_config(&format!("{policy:?}").to_lowercase(), &["sleep", "1000"]);
        config.image = Some(cri::ImageSpec {
            image: "test/groups:1".into(),
            ..Default::default()
        });
        config.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let c = start_in_pod(&mut rt, &pod, config, None).await;
        let text = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(" ");
        // What the first process runs with, and an exec.
        let proc_status = exec_ok(&mut rt, &c, &["cat", "/proc/1/status"]).await;
        let line = |key: &str| {
            proc_status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert_eq!(line("Groups:"), text(&want), "{policy:?}");
        assert_eq!(line("Uid:"), "1000 1000 1000 1000", "{policy:?}");
        assert_eq!(line("Gid:"), "1000 1000 1000 1000", "{policy:?}");
        let id = exec_ok(&mut rt, &c, &["id", "-G"]).await;
        assert_eq!(id.trim(), text(&want), "{policy:?}");
        // The status tells the same.
        let user = rt
            .container_status(cri::ContainerStatusRequest {
                container_id: c.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .user
            .and_then(|u| u.linux)
            .expect("the status has the user");
        let mut groups = user.supplemental_groups.clone();
        groups.sort_unstable();
        assert_eq!(
            (user.uid, user.gid, groups),
            (1000, 1000, want),
            "{policy:?}"
        );
    }
    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
    d.assert_no_leftovers();
}

/// Pod namespace options with `userns_options` (and the pod's own network, IPC and shared PID namespace).
fn userns_pod(name: &str, userns: cri::UserNamespace) -> cri::PodSandboxConfig {
    let mut config = pod_config(name);
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                userns_options: Some(userns),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

fn id_mappings(list: &[(u32, u32, u32)]) -> Vec<cri::IdMapping> {
    list.iter()
        .map(|&(container_id, host_id, length)| cri::IdMapping {
            container_id,
            host_id,
            length,
        })
        .collect()
}

/// The fields of each line of a `uid_map`, without its column padding.
fn map_fields(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .filter(|f: &Vec<String>| !f.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_its_own_user_namespace_maps_its_root_and_shares_a_volume() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let handlers = rt
        .status(cri::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runtime_handlers;
    let linux = handlers.iter().find(|h| h.name == "linux").unwrap();
    assert!(
        linux.features.as_ref().unwrap().user_namespaces,
        "{handlers:?}"
    );

    let ids = id_mappings(&[(0, 1000, 100_000)]);
    let config = userns_pod(
        "userns",
        cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: ids.clone(),
            gids: ids,
        },
    );
    let pod = run_pod(&mut rt, config).await;
    let options = common::cri::pod_status(&mut rt, &pod)
        .await
        .linux
        .unwrap()
        .namespaces
        .unwrap()
        .options
        .unwrap();
    let userns = options.userns_options.unwrap();
    assert_eq!(userns.mode, cri::NamespaceMode::Pod as i32);
    assert_eq!(userns.uids, id_mappings(&[(0, 1000, 100_000)]));

    // An emptyDir: a directory of host root's, bound into both containers.
    let volume = tempfile::tempdir().unwrap();
    let with_volume = |name: &str| {
        let mut c = container_config(name, &["sleep", "1000"]);
        c.mounts = vec![cri::Mount {
            container_path: "/shared".into(),
            host_path: volume.path().display().to_string(),
            ..Default::default()
        }];
        c
    };
    let a = start_in_pod(&mut rt, &pod, with_volume("a"), None).await;
    let b = start_in_pod(&mut rt, &pod, with_volume("b"), None).await;
    for c in [&a, &b] {
        for file in ["/proc/self/uid_map", "/proc/self/gid_map"] {
            let map = exec_ok(&mut rt, c, &["cat", file]).await;
            assert_eq!(map_fields(&map), [["0", "1000", "100000"]], "{file}: {map}");
        }
    }
    let user_ns = exec_ok(&mut rt, &a, &["readlink", "/proc/self/ns/user"]).await;
    assert_eq!(
        user_ns,
        exec_ok(&mut rt, &b, &["readlink", "/proc/self/ns/user"]).await,
        "the containers share the pod's user namespace"
    );
    assert_ne!(
        user_ns.trim(),
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .display()
            .to_string()
    );
    // The image's files are root's inside (id-mapped layers); the root filesystem is writable.
    let ls = exec_ok(&mut rt, &a, &["ls", "-ln", "/bin/sh"]).await;
    assert_eq!(ls.split_whitespace().nth(2), Some("0"), "{ls}");
    exec_ok(&mut rt, &a, &["touch", "/made-in-the-pod"]).await;
    // What one container writes to the volume the other reads, and on the host it is host root's file.
    exec_ok(&mut rt, &a, &["sh", "-c", "echo from-a > /shared/note"]).await;
    assert_eq!(
        exec_ok(&mut rt, &b, &["cat", "/shared/note"]).await,
        "from-a\n"
    );
    let ls = exec_ok(&mut rt, &b, &["ls", "-ln", "/shared/note"]).await;
    assert_eq!(ls.split_whitespace().nth(2), Some("0"), "{ls}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(volume.path().join("note")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    // Root of the pod is not root of the host: the host's root-only files stay closed.
    let r = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: a.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo x > /proc/sys/kernel/hostname".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(r.exit_code, 0, "wrote the host's hostname");

    // A container that prints its map and exits, read back from its CRI log.
    let logs = tempfile::tempdir().unwrap();
    let mut config = userns_pod(
        "userns-log",
        cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: id_mappings(&[(0, 200_000, 65536)]),
            gids: id_mappings(&[(0, 300_000, 65536)]),
        },
    );
    config.log_directory = logs.path().display().to_string();
    if let Some(ns) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = cri::NamespaceMode::Container as i32;
    }
    let logged = run_pod(&mut rt, config).await;
    let mut cat = container_config("cat", &["cat", "/proc/self/uid_map", "/proc/self/gid_map"]);
    cat.log_path = "cat.log".into();
    let c = start_in_pod(&mut rt, &logged, cat, None).await;
    let done = Daemon::eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(logs.path().join("cat.log"))
            .map(|t| t.lines().count() >= 2)
            .unwrap_or(false)
    });
    let log = std::fs::read_to_string(logs.path().join("cat.log")).unwrap_or_default();
    assert!(done, "{log}");
    let printed: Vec<Vec<String>> = log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
        .flat_map(|t| map_fields(&t))
        .collect();
    assert_eq!(
        printed,
        [["0", "200000", "65536"], ["0", "300000", "65536"]],
        "{log}"
    );
    let _ = c;

    for p in [&pod, &logged] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: p.to_string(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: p.to_string(),
        })
        .await
        .unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(volume.path().join("note")).unwrap(),
        "from-a\n",
        "the volume outlives the pod"
    );
    d.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_in_the_hosts_user_namespace_and_refused_user_namespaces() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let node = userns_pod(
        "userns-node",
        cri::UserNamespace {
            mode: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    );
    let pod = run_pod(&mut rt, node).await;
    let c = start_in_pod(
        &mut rt,
        &pod,
        container_config("c", &["sleep", "1000"]),
        None,
    )
    .await;
    let map = exec_ok(&mut rt, &c, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(
        map_fields(&map),
        map_fields(&std::fs::read_to_string("/proc/self/uid_map").unwrap())
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();

    let pod_mode = |uids: &[(u32, u32, u32)]| cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: id_mappings(uids),
        gids: id_mappings(uids),
    };
    let mut host_network = userns_pod("userns-hostnet", pod_mode(&[(0, 1000, 100_000)]));
    if let Some(ns) = host_network
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.network = cri::NamespaceMode::Node as i32;
    }
    let refused = [
        userns_pod(
            "userns-two",
            pod_mode(&[(0, 1000, 100_000), (0, 2000, 100_000)]),
        ),
        userns_pod("userns-no-root", pod_mode(&[(1, 1000, 100_000)])),
        userns_pod(
            "userns-container",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Container as i32,
                ..Default::default()
            },
        ),
        userns_pod(
            "userns-target",
            cri::UserNamespace {
                mode: cri::NamespaceMode::Target as i32,
                ..Default::default()
            },
        ),
        host_network,
    ];
    for config in refused {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let e = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "{name}: {}",
            e.message()
        );
        assert!(
            e.message()
                .starts_with("linux.security_context.namespace_options.userns_options"),
            "{name}: {}",
            e.message()
        );
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

/// Sets this process's `oom_score_adj` (daemons started meanwhile inherit it); the old value comes back on drop.
struct OwnOomScore(String);

impl OwnOomScore {
    fn set(value: i32) -> OwnOomScore {
        let old = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
        std::fs::write("/proc/self/oom_score_adj", value.to_string()).unwrap();
        OwnOomScore(old.trim().to_string())
    }
}

impl Drop for OwnOomScore {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/self/oom_score_adj", &self.0);
    }
}

/// Removes a cgroup parent (deepest first) from every hierarchy on drop.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let parts: Vec<&str> = self.0.trim_matches('/').split('/').collect();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            for depth in (1..=parts.len()).rev() {
                let _ = std::fs::remove_dir(hierarchy.path().join(parts[..depth].join("/")));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_oom_score_swap_and_cgroup_parent_reach_the_container() {
    // The daemon runs with oom_score_adj 100: a container asking for less gets 100.
    let d = {
        let _own = OwnOomScore::set(100);
        Daemon::start(&[])
    };
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let parent = format!("/{}-kubepods/besteffort/pod-uid-1", d.cgroup_parent);
    let _parent_cleanup = CgroupParent(parent.clone());
    let mut pod = pod_config("limits");
    pod.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: parent.clone(),
        ..Default::default()
    });
    let pod_id = run_pod(&mut rt, pod).await;

    // A made-up character device 240:17 (a major for local use), and /dev/fuse readable only.
    let nodes = tempfile::tempdir().unwrap();
    let made_up = nodes.path().join("madeup");
    nix::sys::stat::mknod(
        &made_up,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o640),
        nix::sys::stat::makedev(240, 17),
    )
    .unwrap();
    let fuse = std::path::Path::new("/dev/fuse").exists();
    let mut devices = vec![cri::Device {
        host_path: made_up.display().to_string(),
        container_path: "/dev/madeup".into(),
        permissions: "rwm".into(),
    }];
    if fuse {
        devices.push(cri::Device {
            host_path: "/dev/fuse".into(),
            container_path: "/dev/fuse".into(),
            permissions: "r".into(),
        });
    }
    let limits = |oom_score_adj| cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 128 << 20,
        oom_score_adj,
        ..Default::default()
    };
    let mut config = container_config("c", &["sleep", "600"]);
    config.devices = devices;
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(limits(-998)),
        ..Default::default()
    });
    let id = start_in_pod(&mut rt, &pod_id, config, None).await;

    assert_eq!(
        exec_ok(&mut rt, &id, &["cat", "/proc/self/oom_score_adj"])
            .await
            .trim(),
        "100",
        "-998 is raised to the daemon's own"
    );
    let status = common::cri::container_status(&mut rt, &id).await;
    let reported = status.resources.unwrap().linux.unwrap();
    assert_eq!(reported.oom_score_adj, 100);
    assert_eq!(reported.memory_swap_limit_in_bytes, 128 << 20);
    assert_eq!(
        exec_ok(&mut rt, &id, &["stat", "-c", "%t:%T %F %a", "/dev/madeup"])
            .await
            .trim(),
        "f0:11 character special file 640"
    );
    if fuse {
        exec_ok(&mut rt, &id, &["sh", "-c", "exec 3</dev/fuse"]).await;
        let write = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), "exec 3>/dev/fuse".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(write.exit_code, 0, "the device cgroup allows reading only");
    }
    // The container's cgroup is under the pod's parent, in every hierarchy it joined.
    let cgroups = exec_ok(&mut rt, &id, &["cat", "/proc/self/cgroup"]).await;
    let memory = cgroups
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .unwrap_or_else(|| cgroups.lines().next().unwrap());
    let path = memory.splitn(3, ':').nth(2).unwrap();
    assert_eq!(path, format!("{parent}/{id}"), "{cgroups}");
    let memsw = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(path.trim_start_matches('/'))
        .join("memory.memsw.limit_in_bytes");
    if memsw.exists() {
        assert_eq!(
            std::fs::read_to_string(&memsw).unwrap().trim(),
            (128u64 << 20).to_string()
        );
    }

    // A score above the daemon's is kept as asked.
    let mut config = container_config("high", &["sleep", "600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(limits(500)),
        ..Default::default()
    });
    let high = start_in_pod(&mut rt, &pod_id, config, None).await;
    assert_eq!(
        exec_ok(&mut rt, &high, &["cat", "/proc/self/oom_score_adj"])
            .await
            .trim(),
        "500"
    );

    for c in [&id, &high] {
        rt.stop_container(cri::StopContainerRequest {
            container_id: c.to_string(),
            timeout: 0,
        })
        .await
        .unwrap();
    }
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = hierarchy
            .path()
            .join(format!("{}/{id}", parent.trim_start_matches('/')));
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    d.assert_no_leftovers();
}

/// The resources of a container config made with some.
fn limits_of(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    c.linux
        .as_mut()
        .and_then(|l| l.resources.as_mut())
        .expect("a config with resources")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unservable_linux_fields_are_refused_by_name_and_leave_nothing() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);

    let mut slice = pod_config("slice");
    slice.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: "kubepods-besteffort-pod1.slice".into(),
        ..Default::default()
    });
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(slice),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().starts_with("cgroup_parent:") && e.message().contains("cgroupfs"),
        "{}",
        e.message()
    );
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");

    let pod_id = run_pod(&mut rt, pod_config("refused")).await;
    let not_a_device = d.dir.path().join("plain-file");
    std::fs::write(&not_a_device, "").unwrap();
    let cgroup_v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let v1_hugetlb = std::path::Path::new("/sys/fs/cgroup/hugetlb").exists();
    let with = |edit: &dyn Fn(&mut cri::ContainerConfig)| {
        let mut c = container_config("bad", &["true"]);
        c.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources::default()),
            security_context: Some(cri::LinuxContainerSecurityContext::default()),
        });
        edit(&mut c);
        c
    };
    let mut cases: Vec<(cri::ContainerConfig, tonic::Code, &str)> = vec![
        (
            with(&|c| {
                c.devices = vec![cri::Device {
                    host_path: not_a_device.display().to_string(),
                    container_path: "/dev/x".into(),
                    permissions: "rw".into(),
                }]
            }),
            tonic::Code::InvalidArgument,
            "devices",
        ),
        (
            with(&|c| {
                let r = limits_of(c);
                r.oom_score_adj = 1001;
            }),
            tonic::Code::InvalidArgument,
            "oom_score_adj",
        ),
        (
            with(&|c| {
                let r = limits_of(c);
                r.memory_limit_in_bytes = 64 << 20;
                r.memory_swap_limit_in_bytes = 32 << 20;
            }),
            tonic::Code::InvalidArgument,
            "memory_swap",
        ),
    ];
    if !std::path::Path::new("/sys/module/apparmor").exists() {
        cases.push((
            with(&|c| {
                if let Some(s) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                    s.apparmor = Some(cri::SecurityProfile {
                        profile_type: cri::security_profile::ProfileType::Localhost as i32,
                        localhost_ref: "my-profile".into(),
                    });
                }
            }),
            tonic::Code::FailedPrecondition,
            "AppArmor is not enabled on this host",
        ));
    }
    if !cgroup_v2 {
        cases.push((
            with(&|c| {
                let r = limits_of(c);
                r.unified = [("memory.high".to_string(), "max".to_string())].into();
            }),
            tonic::Code::FailedPrecondition,
            "unified",
        ));
        if !v1_hugetlb {
            cases.push((
                with(&|c| {
                    let r = limits_of(c);
                    r.hugepage_limits = vec![cri::HugepageLimit {
                        page_size: "2MB".into(),
                        limit: 4 << 20,
                    }];
                }),
                tonic::Code::FailedPrecondition,
                "hugepage_limits",
            ));
        }
    }
    for (config, code, words) in cases {
        let e = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config),
                sandbox_config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{words}: {}", e.message());
        assert!(e.message().contains(words), "{words}: {}", e.message());
        let left = rt
            .list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(left.is_empty(), "{words}: a refused create left {left:?}");
    }
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    d.assert_no_leftovers();
}

/// Pulls `reference` through the CRI; returns its `image_ref`, as kubelet then passes it on.
async fn pull(img: &mut ImageServiceClient<Channel>, reference: &str) -> String {
    img.pull_image(cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    })
    .await
    .unwrap()
    .into_inner()
    .image_ref
}

/// Whether the image `reference` names is here.
async fn image_here(img: &mut ImageServiceClient<Channel>, reference: &str) -> bool {
    img.image_status(cri::ImageStatusRequest {
        image: Some(cri::ImageSpec {
            image: reference.into(),
            ..Default::default()
        }),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
    .is_some()
}

/// An image volume (`mounts[].image`) as kubelet sends it.
fn image_volume(path: &str, image_ref: &str) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image_ref.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The host's mount points under `dir`.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|mp| mp.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_show_another_image_read_only_and_keep_it_in_use() {
    // Two images in a registry: the app (one layer) and the data (two layers, so its mount is an overlay).
    let registry = registry::Registry::start(None);
    registry.push_archive(&common::busybox_archive(), "demo/app:1");
    let scratch = tempfile::tempdir().unwrap();
    let data_archive = scratch.path().join("data.tar");
    let made = std::process::Command::new(common::repo_root().join("scripts/make-busybox-image"))
        .arg(&data_archive)
        .arg("test/data:1")
        .args(["--layers", "2"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    registry.push_archive(&data_archive, "demo/data:1");
    let d = Daemon::start_with(&[], "", false);
    let ch = channel(&d).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let app_ref = pull(&mut img, &registry.reference("demo/app:1")).await;
    let data_reference = registry.reference("demo/data:1");
    let data_ref = pull(&mut img, &data_reference).await;
    assert_ne!(app_ref, data_ref, "two different images");

    // A container of the app with the data image at /data and the app's own image (one layer: a bind) at /app.
    let mut config = container_config("reader", &["sleep", "3600"]);
    config.image = Some(cri::ImageSpec {
        image: app_ref.clone(),
        ..Default::default()
    });
    // Two parts of the data image through image_sub_path: a directory, and one that tries to climb out of the
    // image (it is resolved inside the image, as if the image were the root).
    let mut www = image_volume("/www", &data_ref);
    www.image_sub_path = "www".into();
    let mut climber = image_volume("/image-etc", &data_ref);
    climber.image_sub_path = "../../../../etc".into();
    config.mounts = vec![
        image_volume("/data", &data_ref),
        image_volume("/app", &app_ref),
        www,
        climber,
    ];
    let (pod, id) = common::cri::run_pod_with(&mut rt, "imgvol", config.clone()).await;
    assert_eq!(
        exec_ok(&mut rt, &id, &["cat", "/data/www/index.html"])
            .await
            .trim(),
        "hello from husk"
    );
    assert!(
        exec_ok(&mut rt, &id, &["ls", "/data/bin"])
            .await
            .contains("wget"),
        "both layers"
    );
    exec_ok(&mut rt, &id, &["/app/bin/busybox", "true"]).await;
    assert_eq!(
        exec_ok(&mut rt, &id, &["cat", "/www/index.html"])
            .await
            .trim(),
        "hello from husk",
        "the sub path is the mount's root"
    );
    let image_passwd = exec_ok(&mut rt, &id, &["cat", "/image-etc/passwd"]).await;
    assert_eq!(
        image_passwd,
        exec_ok(&mut rt, &id, &["cat", "/data/etc/passwd"]).await,
        "the image's /etc"
    );
    assert_ne!(
        image_passwd,
        std::fs::read_to_string("/etc/passwd").unwrap(),
        "never the host's"
    );
    for (cmd, what) in [
        ("echo changed > /data/www/index.html", "an image's file"),
        ("touch /data/new", "a new file"),
        ("rm /app/etc/passwd", "a removal"),
        ("mkdir /app/dir", "a directory"),
    ] {
        let r = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), cmd.into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(r.exit_code, 0, "{what} was written: {cmd}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("Read-only file system"), "{cmd}: {err}");
    }
    let mounts = exec_ok(&mut rt, &id, &["cat", "/proc/self/mounts"]).await;
    for path in ["/data", "/app"] {
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(path))
            .unwrap_or_else(|| panic!("no mount on {path}: {mounts}"));
        let options: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
        for want in ["ro", "nosuid", "nodev"] {
            assert!(options.contains(&want), "{want} on {path}: {line}");
        }
    }
    assert_eq!(
        exec_ok(&mut rt, &id, &["cat", "/data/www/index.html"])
            .await
            .trim(),
        "hello from husk",
        "the file is as it was"
    );
    let status = common::cri::container_status(&mut rt, &id).await;
    let reported: Vec<(String, String, bool)> = status
        .mounts
        .iter()
        .map(|m| {
            (
                m.container_path.clone(),
                m.image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                m.readonly,
            )
        })
        .collect();
    assert!(
        reported.contains(&("/data".into(), data_ref.clone(), true)),
        "{reported:?}"
    );
    assert!(
        reported.contains(&("/app".into(), app_ref.clone(), true)),
        "{reported:?}"
    );
    let sub_paths: Vec<(&str, &str)> = status
        .mounts
        .iter()
        .map(|m| (m.container_path.as_str(), m.image_sub_path.as_str()))
        .collect();
    assert!(sub_paths.contains(&("/www", "www")), "{sub_paths:?}");
    assert!(sub_paths.contains(&("/data", "")), "{sub_paths:?}");
    let state_dir = d.run_root.join("c").join(&id);
    assert_eq!(
        mounts_under(&state_dir.join("images")).len(),
        4,
        "{:?}",
        mounts_under(&state_dir)
    );

    // The data image is in use: RemoveImage untags it and keeps its content while the container exists.
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: data_reference.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    assert!(!image_here(&mut img, &data_reference).await, "untagged");
    assert!(
        image_here(&mut img, &data_ref).await,
        "kept while the container uses it"
    );
    assert_eq!(
        exec_ok(&mut rt, &id, &["cat", "/data/www/index.html"])
            .await
            .trim(),
        "hello from husk"
    );
    let rmi = d.husk(&["rmi", &data_ref]);
    assert_ne!(rmi.code, 0, "husk rmi of an image a container mounts");
    assert!(rmi.stderr.contains("a container uses it"), "{}", rmi.stderr);

    // A missing image is NOT_FOUND naming the field, and makes nothing.
    let mut bad = config.clone();
    bad.metadata.as_mut().unwrap().name = "bad".into();
    bad.mounts = vec![image_volume("/data", "nothing/here:1")];
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad.clone()),
            sandbox_config: Some(pod_config("imgvol")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("mounts[].image") && e.message().contains("nothing/here:1"),
        "{}",
        e.message()
    );
    bad.mounts = vec![image_volume("/data", "")];
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad),
            sandbox_config: Some(pod_config("imgvol")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("mounts[].image"), "{}", e.message());
    // A sub path the image does not have fails the create (KEP-4639), naming it.
    let mut missing = image_volume("/data", &data_ref);
    missing.image_sub_path = "no/such/dir".into();
    let mut bad = config.clone();
    bad.metadata.as_mut().unwrap().name = "bad-sub-path".into();
    bad.mounts = vec![missing];
    let e = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(bad),
            sandbox_config: Some(pod_config("imgvol")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("image-subpath") && e.message().contains("no/such/dir"),
        "{}",
        e.message()
    );
    let listed = rt
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()],
        "no container left by the refused creates"
    );

    // Removing the container unmounts its image volumes; the data image can go then.
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let gone = Daemon::eventually(Duration::from_secs(10), || {
        mounts_under(&state_dir).is_empty()
    });
    assert!(gone, "left mounted: {:?}", mounts_under(&state_dir));
    img.remove_image(cri::RemoveImageRequest {
        image: Some(cri::ImageSpec {
            image: data_ref.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    assert!(
        !image_here(&mut img, &data_ref).await,
        "removed once unused"
    );
    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
    d.assert_no_leftovers();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_paths_cannot_be_run_or_read() {
    // critest's MaskedPaths spec runs `sh -c ls`, which this image's shell answers with its own applet: run the
    // masked file by its path instead, and read it.
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let mut config = container_config("masked", &["sleep", "600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            masked_paths: vec!["/bin/ls".into()],
            readonly_paths: vec!["/tmp".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let (pod, id) = common::cri::run_pod_with(&mut rt, "masked", config).await;
    let run = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "/bin/ls /".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(run.exit_code, 0, "the masked /bin/ls ran");
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "/bin/sh: /bin/ls: Permission denied\n"
    );
    assert_eq!(
        exec_ok(&mut rt, &id, &["cat", "/bin/ls"]).await,
        "",
        "reads as empty"
    );
    let write = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["touch".into(), "/tmp/x".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(write.exit_code, 0, "a read-only path was written");
    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
    d.assert_no_leftovers();
}
