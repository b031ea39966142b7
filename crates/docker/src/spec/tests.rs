use husk_core::{ImageRef, PortMapping, ProcessConfig};

use super::*;

fn config() -> ContainerConfig {
    ContainerConfig {
        id: "c".repeat(64),
        name: "web".into(),
        image: ImageRef {
            name: "busybox".into(),
            id: format!("sha256:{}", "a".repeat(64)),
        },
        process: ProcessConfig {
            args: vec!["httpd".into(), "-f".into(), "-p".into(), "80".into()],
            env: vec!["A=1".into()],
            cwd: "/www".into(),
            user: "nobody".into(),
            ..Default::default()
        },
        hostname: "web-host".into(),
        resources: Default::default(),
        security: SecurityConfig {
            no_new_privileges: true,
            ..Default::default()
        },
        mounts: vec![],
        network: NetworkConfig::default(),
        labels: Default::default(),
        stop_signal: Some(2),
        stop_timeout: Some(3),
        ulimits: Vec::new(),
        cri_log_path: None,
        devices: Vec::new(),
        cgroup_parent: None,
        log: Default::default(),
    }
}

#[test]
fn log_limits_go_to_the_engines_json_file_driver() {
    let b = container_body(&config(), Placement::Standalone, HashMap::new(), None).unwrap();
    assert_eq!(
        b.host_config.unwrap().log_config,
        None,
        "the engine's default"
    );
    let mut c = config();
    c.log = husk_core::LogLimits {
        max_size_bytes: Some(10 << 20),
        max_files: Some(3),
    };
    let b = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap();
    let log = b.host_config.unwrap().log_config.unwrap();
    assert_eq!(log.typ.as_deref(), Some("json-file"));
    let opts = log.config.unwrap();
    assert_eq!(opts["max-size"], "10485760");
    assert_eq!(opts["max-file"], "3");
}

#[test]
fn argv_is_run_exactly() {
    let b = container_body(&config(), Placement::Standalone, HashMap::new(), None).unwrap();
    assert_eq!(b.entrypoint, Some(vec!["httpd".to_string()]));
    assert_eq!(
        b.cmd,
        Some(vec!["-f".to_string(), "-p".to_string(), "80".to_string()])
    );
    assert_eq!(
        b.image.as_deref(),
        Some(&*format!("sha256:{}", "a".repeat(64)))
    );
    assert_eq!(b.stop_signal.as_deref(), Some("SIGINT"));
    let mut empty = config();
    empty.process.args.clear();
    assert!(container_body(&empty, Placement::Standalone, HashMap::new(), None).is_err());
}

#[test]
fn sandbox_containers_join_the_infra_container() {
    let b = container_body(
        &config(),
        Placement::Sandbox {
            infra_id: "inf",
            share_pid: true,
            host_pid: false,
            host_ipc: false,
        },
        HashMap::new(),
        None,
    )
    .unwrap();
    let h = b.host_config.unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("container:inf"));
    assert_eq!(h.ipc_mode.as_deref(), Some("container:inf"));
    assert_eq!(h.pid_mode.as_deref(), Some("container:inf"));
    assert_eq!(b.hostname, None, "the hostname is the infra container's");
    let b = container_body(
        &config(),
        Placement::Sandbox {
            infra_id: "inf",
            share_pid: false,
            host_pid: false,
            host_ipc: false,
        },
        HashMap::new(),
        None,
    )
    .unwrap();
    assert_eq!(b.host_config.unwrap().pid_mode, None);
}

#[test]
fn host_pid_and_ipc_sandboxes_use_the_hosts_namespaces() {
    let b = container_body(
        &config(),
        Placement::Sandbox {
            infra_id: "inf",
            share_pid: true,
            host_pid: true,
            host_ipc: true,
        },
        HashMap::new(),
        None,
    )
    .unwrap();
    let h = b.host_config.unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("container:inf"));
    assert_eq!(h.ipc_mode.as_deref(), Some("host"));
    assert_eq!(h.pid_mode.as_deref(), Some("host"));
    let s = SandboxConfig {
        id: "s".repeat(64),
        name: "pod".into(),
        host_pid: true,
        host_ipc: true,
        ..Default::default()
    };
    let h = infra_body(&s, "sha256:p", HashMap::new())
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(h.ipc_mode.as_deref(), Some("host"));
    assert_eq!(h.pid_mode.as_deref(), Some("host"));
}

#[test]
fn strict_groups_are_refused() {
    let mut c = config();
    c.security.groups_policy = GroupsPolicy::Strict;
    let e = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap_err();
    assert_eq!(e.kind, husk_core::ErrorKind::Unsupported, "{}", e.message);
    assert!(e.message.contains("groups_policy"), "{}", e.message);
}

#[test]
fn standalone_containers_get_network_hostname_and_ports() {
    let mut c = config();
    c.network.ports = vec![
        PortMapping::parse("127.0.0.1:8080:80").unwrap(),
        PortMapping::parse("8443:80").unwrap(),
    ];
    c.resources.memory_bytes = Some(64 << 20);
    c.resources.nano_cpus = Some(500_000_000);
    c.resources.pids_limit = Some(50);
    let b = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap();
    assert_eq!(b.hostname.as_deref(), Some("web-host"));
    assert_eq!(b.exposed_ports, Some(vec!["80/tcp".to_string()]));
    let h = b.host_config.unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("bridge"));
    let bindings = h.port_bindings.unwrap()["80/tcp"].clone().unwrap();
    assert_eq!(bindings.len(), 2);
    assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(bindings[1].host_port.as_deref(), Some("8443"));
    assert_eq!(
        (h.memory, h.nano_cpus, h.pids_limit),
        (Some(64 << 20), Some(500_000_000), Some(50))
    );
    assert_eq!(
        h.restart_policy.unwrap().name,
        Some(RestartPolicyNameEnum::NO)
    );
    assert_eq!(
        h.security_opt,
        Some(vec!["no-new-privileges:true".to_string()])
    );
}

#[test]
fn ports_need_a_bridge() {
    let mut c = config();
    c.network.mode = "none".into();
    c.network.ports = vec![PortMapping::parse("8080:80").unwrap()];
    assert_eq!(
        container_body(&c, Placement::Standalone, HashMap::new(), None)
            .unwrap_err()
            .field
            .as_deref(),
        Some("ports")
    );
    c.network.ports.clear();
    c.network.mode = "host".into();
    let b = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap();
    assert_eq!(b.hostname, None, "host networking keeps the host's name");
}

#[test]
fn mounts_map_to_engine_mounts_and_tmpfs() {
    let mut c = config();
    c.mounts = vec![
        MountConfig {
            kind: MountKind::Bind,
            source: "/srv".into(),
            destination: "/data".into(),
            readonly: true,
            options: vec!["rslave".into(), "z".into()],
            host_path: "/srv".into(),
            ..Default::default()
        },
        MountConfig {
            kind: MountKind::Volume,
            source: "vol1".into(),
            destination: "/v".into(),
            options: vec!["nocopy".into()],
            host_path: "/var/lib/husk/volumes/vol1/_data".into(),
            ..Default::default()
        },
        MountConfig {
            kind: MountKind::Tmpfs,
            destination: "/t".into(),
            readonly: true,
            options: vec!["size=64m".into(), "mode=1777".into()],
            ..Default::default()
        },
    ];
    c.ulimits = vec![husk_core::Ulimit::parse("nofile=100:200").unwrap()];
    c.security.group_add = vec!["audio".into()];
    let b = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap();
    assert_eq!(
        b.healthcheck.unwrap().test,
        Some(vec!["NONE".to_string()]),
        "husk runs health checks"
    );
    let h = b.host_config.unwrap();
    let m = h.mounts.unwrap();
    assert_eq!(m[0].typ, Some(MountType::BIND));
    assert_eq!(m[0].read_only, Some(true));
    assert_eq!(
        m[0].bind_options.as_ref().unwrap().propagation,
        Some(MountBindOptionsPropagationEnum::RSLAVE)
    );
    assert_eq!(m[1].typ, Some(MountType::BIND), "husk's volumes are binds");
    assert_eq!(
        m[1].source.as_deref(),
        Some("/var/lib/husk/volumes/vol1/_data")
    );
    assert_eq!(h.tmpfs.unwrap()["/t"], "size=64m,mode=1777,ro");
    let u = &h.ulimits.unwrap()[0];
    assert_eq!(
        (u.name.as_deref(), u.soft, u.hard),
        (Some("nofile"), Some(100), Some(200))
    );
    assert_eq!(h.group_add, Some(vec!["audio".to_string()]));

    c.mounts = vec![MountConfig {
        kind: MountKind::Volume,
        source: "unprepared".into(),
        destination: "/d".into(),
        ..Default::default()
    }];
    assert!(container_body(&c, Placement::Standalone, HashMap::new(), None).is_err());
    c.mounts = vec![MountConfig {
        kind: MountKind::Bind,
        source: "/a".into(),
        destination: "/d".into(),
        options: vec!["nosuid".into()],
        host_path: "/a".into(),
        ..Default::default()
    }];
    assert!(
        container_body(&c, Placement::Standalone, HashMap::new(), None)
            .unwrap_err()
            .message
            .contains("nosuid")
    );
    c.mounts = vec![MountConfig {
        kind: MountKind::Tmpfs,
        destination: "/d".into(),
        options: vec!["size=lots".into()],
        ..Default::default()
    }];
    assert!(container_body(&c, Placement::Standalone, HashMap::new(), None).is_err());
    c.mounts = vec![MountConfig {
        kind: MountKind::Image,
        source: "data:1".into(),
        destination: "/d".into(),
        readonly: true,
        ..Default::default()
    }];
    let e = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap_err();
    assert_eq!(e.kind, husk_core::ErrorKind::Unsupported);
    assert!(e.message.contains("linux driver only"), "{}", e.message);
}

#[test]
fn devices_oom_score_swap_and_cgroup_parent_reach_the_engine() {
    let mut c = config();
    c.devices = vec![husk_core::DeviceMapping {
        host_path: "/dev/fuse".into(),
        container_path: "/dev/f".into(),
        permissions: "r".into(),
        kind: "c".into(),
        major: 10,
        minor: 229,
        file_mode: 0o666,
    }];
    c.resources.memory_bytes = Some(64 << 20);
    c.resources.memory_swap_bytes = Some(128 << 20);
    c.resources.oom_score_adj = Some(800);
    c.cgroup_parent = Some("/kubepods/pod1".into());
    let h = container_body(&c, Placement::Standalone, HashMap::new(), None)
        .unwrap()
        .host_config
        .unwrap();
    let d = &h.devices.unwrap()[0];
    assert_eq!(
        (
            d.path_on_host.as_deref(),
            d.path_in_container.as_deref(),
            d.cgroup_permissions.as_deref()
        ),
        (Some("/dev/fuse"), Some("/dev/f"), Some("r"))
    );
    assert_eq!(
        (h.memory_swap, h.oom_score_adj),
        (Some(128 << 20), Some(800))
    );
    assert_eq!(h.cgroup_parent.as_deref(), Some("/kubepods/pod1"));
    for field in ["hugepage_limits", "unified"] {
        let mut c = config();
        if field == "unified" {
            c.resources.unified = [("memory.high".to_string(), "1".to_string())].into();
        } else {
            c.resources.hugepage_limits = [("2MB".to_string(), 1 << 21)].into();
        }
        let e = container_body(&c, Placement::Standalone, HashMap::new(), None).unwrap_err();
        assert!(e.message.starts_with(field), "{}", e.message);
    }
}

#[test]
fn security_settings() {
    let mut c = config();
    c.security.cap_add = vec!["net_admin".into(), "CAP_SYS_TIME".into()];
    c.security.cap_drop = vec!["all".into()];
    c.security.seccomp = Some("unconfined".into());
    c.security.no_new_privileges = false;
    let h = container_body(&c, Placement::Standalone, HashMap::new(), None)
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(
        h.cap_add,
        Some(vec![
            "CAP_NET_ADMIN".to_string(),
            "CAP_SYS_TIME".to_string()
        ])
    );
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(h.security_opt, Some(vec!["seccomp=unconfined".to_string()]));
    c.security.seccomp = Some("{not json".into());
    assert_eq!(
        container_body(&c, Placement::Standalone, HashMap::new(), None)
            .unwrap_err()
            .field
            .as_deref(),
        Some("seccomp")
    );
}

#[test]
fn privileged_is_emulated() {
    let mut c = config();
    c.security.privileged = true;
    assert!(
        container_body(&c, Placement::Standalone, HashMap::new(), None).is_err(),
        "needs the host's privileges"
    );
    let p = Privileges {
        capabilities: vec!["CAP_SYS_ADMIN".into()],
        devices: vec![DeviceMapping {
            path_on_host: Some("/dev/kvm".into()),
            path_in_container: Some("/dev/kvm".into()),
            cgroup_permissions: Some("rwm".into()),
        }],
    };
    let h = container_body(&c, Placement::Standalone, HashMap::new(), Some(&p))
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(
        h.privileged, None,
        "Docker's own flag fails where the bounding set lacks capabilities"
    );
    assert_eq!(h.cap_add, Some(vec!["CAP_SYS_ADMIN".to_string()]));
    assert_eq!(h.masked_paths, Some(vec![]));
    assert_eq!(h.readonly_paths, Some(vec![]));
    assert_eq!(
        h.device_cgroup_rules,
        Some(vec![ALLOW_ALL_DEVICES.to_string()])
    );
    assert!(
        h.security_opt
            .unwrap()
            .contains(&"seccomp=unconfined".to_string())
    );
    assert_eq!(h.devices.unwrap().len(), 1);
}

#[test]
fn infra_container_holds_the_namespaces() {
    let s = SandboxConfig {
        id: "s".repeat(64),
        name: "pod".into(),
        hostname: "pod-host".into(),
        share_pid: true,
        network: NetworkConfig {
            ports: vec![PortMapping::parse("9090:90/udp").unwrap()],
            dns: vec!["192.0.2.53".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let b = infra_body(&s, "sha256:p", HashMap::new()).unwrap();
    assert_eq!(b.hostname.as_deref(), Some("pod-host"));
    assert_eq!(b.exposed_ports, Some(vec!["90/udp".to_string()]));
    assert_eq!(b.cmd, None);
    let h = b.host_config.unwrap();
    assert_eq!(h.ipc_mode.as_deref(), Some("shareable"));
    assert_eq!(h.network_mode.as_deref(), Some("bridge"));
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(h.dns, Some(vec!["192.0.2.53".to_string()]));
    assert_eq!(h.init, Some(false), "husk-pause must be PID 1 to reap");
}
