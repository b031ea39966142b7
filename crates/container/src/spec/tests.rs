use super::*;
use husk_core::{ImageRef, Resources, SecurityConfig};

fn config() -> ContainerConfig {
    ContainerConfig {
        id: "a".repeat(64),
        name: "web".into(),
        image: ImageRef::default(),
        process: ProcessConfig {
            args: vec!["sh".into()],
            cwd: "/".into(),
            ..Default::default()
        },
        hostname: "box".into(),
        resources: Resources {
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            pids_limit: Some(100),
            shm_size_bytes: Some(128 << 20),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: None,
            ..Default::default()
        },
        security: SecurityConfig {
            no_new_privileges: true,
            ..Default::default()
        },
        mounts: vec![],
        network: Default::default(),
        labels: Default::default(),
        stop_signal: None,
        stop_timeout: None,
        ..Default::default()
    }
}

fn daemon_caps() -> Vec<String> {
    let mut d: Vec<String> = security::DEFAULT_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    d.push("CAP_SYS_ADMIN".into());
    d
}

fn input<'a>(c: &'a ContainerConfig, caps: &'a [String]) -> SpecInput<'a> {
    SpecInput {
        config: c,
        process: &c.process,
        rootfs: Path::new("/tmp/rootfs"),
        namespaces: NamespacePlan {
            net: Some("/run/husk/ns/s/net".into()),
            ipc: Some("/run/husk/ns/s/ipc".into()),
            uts: Some("/run/husk/ns/s/uts".into()),
            ..Default::default()
        },
        cgroup_path: "/husk/x".into(),
        user: ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: "/root".into(),
        },
        etc_files: vec![("/etc/hosts".into(), "/run/husk/s/hosts".into())],
        shm: None,
        daemon_capabilities: caps,
        cgroup_v2: false,
    }
}

fn as_json(spec: &Spec) -> Value {
    serde_json::to_value(spec).unwrap()
}

#[test]
fn secure_defaults() {
    let c = config();
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert_eq!(s["process"]["noNewPrivileges"], true);
    assert_eq!(
        s["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        security::DEFAULT_CAPABILITIES.len()
    );
    assert!(seccomp_precompiled(&c));
    assert!(
        s["linux"].get("seccomp").is_none(),
        "the caller installs the precompiled default program"
    );
    // Without no-new-privileges the program cannot be installed last: the spec carries the profile.
    let mut c2 = config();
    c2.security.no_new_privileges = false;
    assert!(!seccomp_precompiled(&c2));
    let s2 = as_json(&container_spec(&input(&c2, &caps)).unwrap());
    assert!(s2["linux"]["seccomp"]["syscalls"].is_array());
    assert_eq!(
        s["linux"]["maskedPaths"].as_array().unwrap().len(),
        MASKED_PATHS.len()
    );
    assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
    assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 512);
    assert_eq!(s["linux"]["resources"]["cpu"]["cpus"], "0");
    assert!(s["linux"]["resources"]["cpu"].get("mems").is_none());
    assert_eq!(s["linux"]["resources"]["pids"]["limit"], 100);
    assert!(
        s["process"].get("rlimits").is_none(),
        "rlimits are never raised"
    );
    assert!(
        s["process"].get("oomScoreAdj").is_none(),
        "oom_score_adj is inherited"
    );
    let env: Vec<&str> = s["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"HOSTNAME=box")
            && env.iter().any(|e| e.starts_with("PATH="))
            && env.contains(&"HOME=/root")
    );
}

#[test]
fn sandbox_namespaces_are_joined_and_mount_is_new() {
    let c = config();
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    let find = |t: &str| ns.iter().find(|n| n["type"] == t).cloned();
    assert_eq!(find("network").unwrap()["path"], "/run/husk/ns/s/net");
    assert_eq!(find("ipc").unwrap()["path"], "/run/husk/ns/s/ipc");
    assert!(find("mount").unwrap().get("path").is_none());
    assert!(find("pid").unwrap().get("path").is_none());
    assert!(find("cgroup").is_none(), "no cgroup namespace on v1");
}

#[test]
fn a_new_uts_namespace_gets_the_hostname_and_a_joined_one_does_not() {
    let c = config();
    let caps = daemon_caps();
    // Joined (pinned with its hostname already set): no hostname in the spec, which would be an error.
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert!(s.get("hostname").is_none(), "{}", s["hostname"]);
    // Private IPC and UTS (the sandbox `run` makes): both new, the hostname from the spec, a /dev/shm of its
    // own with the requested size.
    let mut private = input(&c, &caps);
    private.namespaces.ipc = None;
    private.namespaces.uts = None;
    let s = as_json(&container_spec(&private).unwrap());
    assert_eq!(s["hostname"], "box");
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    let find = |t: &str| ns.iter().find(|n| n["type"] == t).cloned();
    assert!(find("uts").unwrap().get("path").is_none());
    assert!(find("ipc").unwrap().get("path").is_none());
    let shm = s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/dev/shm")
        .unwrap();
    assert_eq!(shm["type"], "tmpfs");
    assert!(
        shm["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "size=134217728"),
        "{shm}"
    );
}

#[test]
fn a_sandbox_user_namespace_is_joined_with_its_mappings() {
    let c = config();
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert!(s["linux"].get("uidMappings").is_none());
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    assert!(
        !ns.iter().any(|n| n["type"] == "user"),
        "the host's by default"
    );
    let mut i = input(&c, &caps);
    let map = |host_id| {
        vec![husk_core::IdMapping {
            container_id: 0,
            host_id,
            size: 65536,
        }]
    };
    let userns = husk_core::UserNamespaceConfig {
        uid_mappings: map(100_000),
        gid_mappings: map(200_000),
    };
    i.namespaces.user = Some(("/run/husk/s/x/ns/user".into(), userns));
    let s = as_json(&container_spec(&i).unwrap());
    let ns = s["linux"]["namespaces"].as_array().unwrap();
    let user: Vec<&Value> = ns.iter().filter(|n| n["type"] == "user").collect();
    assert_eq!(
        user,
        [&json!({"type": "user", "path": "/run/husk/s/x/ns/user"})]
    );
    assert_eq!(
        s["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": 100_000, "size": 65536}])
    );
    assert_eq!(
        s["linux"]["gidMappings"],
        json!([{"containerID": 0, "hostID": 200_000, "size": 65536}])
    );
}

#[test]
fn privileged_opts_out_of_confinement() {
    let mut c = config();
    c.security.privileged = true;
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert!(s["linux"].get("seccomp").is_none());
    assert!(s["linux"].get("maskedPaths").is_none());
    assert!(
        s["process"].get("noNewPrivileges").is_none(),
        "no-new-privileges off is left out, not false"
    );
    assert_eq!(
        s["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        caps.len()
    );
}

#[test]
fn host_network_binds_sys_and_omits_netns() {
    let c = config();
    let caps = daemon_caps();
    let mut i = input(&c, &caps);
    i.namespaces.host_network = true;
    i.namespaces.net = None;
    let s = as_json(&container_spec(&i).unwrap());
    assert!(
        !s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network")
    );
    assert!(
        s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/sys" && m["type"] == "bind")
    );
}

#[test]
fn host_pid_and_ipc_leave_their_namespaces_out() {
    let c = config();
    let caps = daemon_caps();
    let kinds = |i: &SpecInput<'_>| -> Vec<String> {
        as_json(&container_spec(i).unwrap())["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect()
    };
    let mut i = input(&c, &caps);
    i.namespaces.pid = Some("/run/husk/ns/s/pid".into());
    assert!(kinds(&i).contains(&"pid".to_string()));
    assert!(kinds(&i).contains(&"ipc".to_string()));
    i.namespaces.host_pid = true;
    i.namespaces.host_ipc = true;
    let k = kinds(&i);
    assert!(!k.contains(&"pid".to_string()), "{k:?}");
    assert!(!k.contains(&"ipc".to_string()), "{k:?}");
    assert!(k.contains(&"uts".to_string()) && k.contains(&"mount".to_string()));
}

#[test]
fn bad_inputs_are_refused() {
    let mut c = config();
    c.process.args.clear();
    let caps = daemon_caps();
    assert_eq!(
        container_spec(&input(&c, &caps))
            .unwrap_err()
            .field
            .as_deref(),
        Some("command")
    );
    let mut c = config();
    c.process.cwd = "relative".into();
    assert_eq!(
        container_spec(&input(&c, &caps))
            .unwrap_err()
            .field
            .as_deref(),
        Some("workdir")
    );
    let mut c = config();
    c.security.seccomp = Some("{not json".into());
    assert_eq!(
        container_spec(&input(&c, &caps))
            .unwrap_err()
            .field
            .as_deref(),
        Some("security_opt")
    );
}

fn mount_of<'a>(s: &'a Value, dest: &str) -> &'a Value {
    s["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
        .unwrap_or_else(|| panic!("no mount on {dest}"))
}

#[test]
fn user_mounts_binds_volumes_and_tmpfs() {
    let mut c = config();
    c.mounts = vec![
        MountConfig {
            kind: MountKind::Bind,
            source: "/srv".into(),
            destination: "/data".into(),
            readonly: true,
            host_path: "/srv".into(),
            ..Default::default()
        },
        MountConfig {
            kind: MountKind::Volume,
            source: "db".into(),
            destination: "/db".into(),
            host_path: "/var/lib/husk/volumes/db/_data".into(),
            ..Default::default()
        },
        MountConfig {
            kind: MountKind::Tmpfs,
            destination: "/scratch".into(),
            options: vec!["size=1048576".into(), "mode=1770".into(), "nosuid".into()],
            ..Default::default()
        },
    ];
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    let bind = mount_of(&s, "/data");
    assert_eq!(bind["source"], "/srv");
    assert_eq!(
        bind["options"],
        json!(["rbind", "ro", "rro"]),
        "read-only all the way down"
    );
    let vol = mount_of(&s, "/db");
    assert_eq!(
        (vol["type"].as_str(), vol["source"].as_str()),
        (Some("bind"), Some("/var/lib/husk/volumes/db/_data"))
    );
    assert_eq!(vol["options"], json!(["rbind", "rw"]));
    let t = mount_of(&s, "/scratch");
    assert_eq!(
        t["options"],
        json!(["rw", "size=1048576", "mode=1770", "nosuid"])
    );
    assert_eq!(s["linux"]["rootfsPropagation"], "private");
    assert!(
        bind_propagations(&c).is_empty(),
        "default propagation needs no fix-up"
    );
    c.mounts[1].host_path.clear();
    assert!(
        container_spec(&input(&c, &caps)).is_err(),
        "an unprepared volume is refused"
    );
}

#[test]
fn image_mounts_are_read_only_binds_without_suid_or_devices() {
    let mut c = config();
    c.mounts = vec![MountConfig {
        kind: MountKind::Image,
        source: "data:1".into(),
        destination: "/data".into(),
        readonly: true,
        host_path: "/run/husk/c/x/images/m0".into(),
        ..Default::default()
    }];
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    let m = mount_of(&s, "/data");
    assert_eq!(
        (m["type"].as_str(), m["source"].as_str()),
        (Some("bind"), Some("/run/husk/c/x/images/m0"))
    );
    assert_eq!(
        m["options"],
        json!(["rbind", "ro", "rro", "nosuid", "nodev"])
    );
    assert!(bind_propagations(&c).is_empty());
    c.mounts[0].host_path.clear();
    let e = container_spec(&input(&c, &caps)).unwrap_err();
    assert!(e.message.contains("did not mount it"), "{}", e.message);
}

#[test]
fn propagation_and_rlimits() {
    let mut c = config();
    c.mounts = vec![
        MountConfig {
            kind: MountKind::Bind,
            source: "/a".into(),
            destination: "/a".into(),
            options: vec!["rslave".into()],
            host_path: "/a".into(),
            ..Default::default()
        },
        MountConfig {
            kind: MountKind::Bind,
            source: "/b".into(),
            destination: "/b".into(),
            host_path: "/b".into(),
            ..Default::default()
        },
    ];
    c.ulimits = vec![
        husk_core::Ulimit::parse("nofile=100:200").unwrap(),
        husk_core::Ulimit::parse("core=0:unlimited").unwrap(),
    ];
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert_eq!(s["linux"]["rootfsPropagation"], "slave");
    assert_eq!(
        bind_propagations(&c),
        vec![
            ("/a".to_string(), "rslave".to_string()),
            ("/b".to_string(), "rprivate".to_string())
        ]
    );
    assert_eq!(
        s["process"]["rlimits"],
        json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}, {"type": "RLIMIT_CORE", "soft": 0, "hard": u64::MAX}])
    );
}

#[test]
fn devices_oom_score_and_limits_reach_the_spec() {
    let mut c = config();
    c.devices = vec![husk_core::DeviceMapping {
        host_path: "/dev/fuse".into(),
        container_path: "/dev/f".into(),
        permissions: "rw".into(),
        kind: "c".into(),
        major: 10,
        minor: 229,
        file_mode: 0o666,
    }];
    c.resources.oom_score_adj = Some(500);
    c.resources.memory_swap_bytes = Some(128 << 20);
    c.resources.hugepage_limits = [("2MB".to_string(), 4u64 << 20)].into();
    c.resources.unified = [("memory.high".to_string(), "max".to_string())].into();
    let caps = daemon_caps();
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert_eq!(s["process"]["oomScoreAdj"], 500);
    let dev = &s["linux"]["devices"][0];
    assert_eq!(
        (&dev["path"], &dev["type"], &dev["major"], &dev["minor"]),
        (&json!("/dev/f"), &json!("c"), &json!(10), &json!(229))
    );
    assert_eq!(dev["fileMode"], 0o666);
    let rules = s["linux"]["resources"]["devices"].as_array().unwrap();
    let last = rules.last().unwrap();
    assert_eq!(
        (
            &last["allow"],
            &last["type"],
            &last["major"],
            &last["minor"],
            &last["access"]
        ),
        (
            &json!(true),
            &json!("c"),
            &json!(10),
            &json!(229),
            &json!("rw")
        )
    );
    assert_eq!(rules[0]["allow"], false, "everything else stays denied");
    let res = &s["linux"]["resources"];
    assert_eq!(res["memory"]["swap"], 128 << 20);
    assert_eq!(res["hugepageLimits"][0]["pageSize"], "2MB");
    assert_eq!(res["hugepageLimits"][0]["limit"], 4 << 20);
    assert_eq!(res["unified"]["memory.high"], "max");
    // A privileged container may use every device already; its own still appear as nodes.
    c.security.privileged = true;
    let s = as_json(&container_spec(&input(&c, &caps)).unwrap());
    assert_eq!(
        s["linux"]["resources"]["devices"].as_array().unwrap().len(),
        1
    );
    assert_eq!(s["linux"]["devices"][0]["path"], "/dev/f");
}
