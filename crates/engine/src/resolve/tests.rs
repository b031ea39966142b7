use super::*;
use husk_image::RunConfig;

#[test]
fn log_limits_take_the_daemons_defaults_for_what_the_request_leaves_unset() {
    let defaults = LogLimits {
        max_size_bytes: Some(1000),
        max_files: Some(2),
    };
    let own = LogLimits {
        max_size_bytes: None,
        max_files: Some(5),
    };
    let l = log_limits(own, defaults).unwrap();
    assert_eq!((l.max_size_bytes, l.max_files), (Some(1000), Some(5)));
    assert!(
        log_limits(LogLimits::default(), LogLimits::default())
            .unwrap()
            .is_unbounded()
    );
    let e = log_limits(own, LogLimits::default()).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("log-opt max-file"));
    let mut r = req("x");
    r.log_opts.insert("max-size".into(), "-5".into());
    let e = container_config(&r, "id", "n", &image(&[], &["sh"])).unwrap_err();
    assert_eq!(
        e.field.as_deref(),
        Some("log-opt max-size"),
        "{}",
        e.message
    );
}

fn image(entrypoint: &[&str], cmd: &[&str]) -> Image {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut img: Image = serde_json::from_value(
        serde_json::json!({"Id": "sha256:abc", "RepoTags": ["docker.io/library/busybox:latest"]}),
    )
    .unwrap();
    img.config = RunConfig {
        entrypoint: v(entrypoint),
        cmd: v(cmd),
        env: vec!["PATH=/bin".into(), "A=1".into()],
        working_dir: "/srv".into(),
        ..Default::default()
    };
    img
}

fn req(image: &str) -> ContainerCreate {
    ContainerCreate {
        image: image.into(),
        ..Default::default()
    }
}

#[test]
fn cpu_weights_and_sets_are_checked() {
    let ok = Resources {
        cpu_shares: Some(512),
        cpuset_cpus: Some("0-1,3".into()),
        cpuset_mems: Some("0".into()),
        ..Default::default()
    };
    assert!(validate_resources(&ok).is_ok());
    let bad_shares = Resources {
        cpu_shares: Some(1),
        ..Default::default()
    };
    assert_eq!(
        validate_resources(&bad_shares)
            .unwrap_err()
            .field
            .as_deref(),
        Some("cpu_shares")
    );
    for set in ["", "0-", "3-1", "a", "0,,1"] {
        let r = Resources {
            cpuset_cpus: Some(set.into()),
            ..Default::default()
        };
        assert_eq!(
            validate_resources(&r).unwrap_err().field.as_deref(),
            Some("cpuset_cpus"),
            "{set:?}"
        );
    }
}

#[test]
fn entrypoint_and_cmd_like_docker() {
    let img = image(&["/entry"], &["default"]);
    let c = container_config(&req("x"), "id", "n", &img).unwrap();
    assert_eq!(c.process.args, vec!["/entry", "default"]);
    let mut r = req("x");
    r.command = Some(vec!["other".into()]);
    assert_eq!(
        container_config(&r, "id", "n", &img).unwrap().process.args,
        vec!["/entry", "other"]
    );
    let mut r = req("x");
    r.entrypoint = Some(vec!["/bin/sh".into()]);
    assert_eq!(
        container_config(&r, "id", "n", &img).unwrap().process.args,
        vec!["/bin/sh"],
        "CMD dropped with a new entrypoint"
    );
    let mut r = req("x");
    r.entrypoint = Some(vec![]);
    r.command = Some(vec!["echo".into(), "hi".into()]);
    assert_eq!(
        container_config(&r, "id", "n", &img).unwrap().process.args,
        vec!["echo", "hi"]
    );
    let empty = image(&[], &[]);
    assert_eq!(
        container_config(&req("x"), "id", "n", &empty)
            .unwrap_err()
            .field
            .as_deref(),
        Some("command")
    );
}

#[test]
fn env_workdir_user_merge() {
    let img = image(&[], &["sh"]);
    let mut r = req("x");
    r.env = vec!["A=2".into(), "B=3".into()];
    r.user = Some("nobody".into());
    let c = container_config(&r, "id", "n", &img).unwrap();
    assert_eq!(c.process.env, vec!["PATH=/bin", "A=2", "B=3"]);
    assert_eq!(c.process.cwd, "/srv");
    assert_eq!(c.process.user, "nobody");
    let mut r = req("x");
    r.env = vec!["=bad".into()];
    assert_eq!(
        container_config(&r, "id", "n", &img)
            .unwrap_err()
            .field
            .as_deref(),
        Some("env")
    );
    let mut r = req("x");
    r.workdir = Some("rel".into());
    assert_eq!(
        container_config(&r, "id", "n", &img)
            .unwrap_err()
            .field
            .as_deref(),
        Some("workdir")
    );
}

#[test]
fn limits_are_checked() {
    assert_eq!(
        validate_resources(&Resources {
            memory_bytes: Some(1024),
            ..Default::default()
        })
        .unwrap_err()
        .field
        .as_deref(),
        Some("memory")
    );
    assert_eq!(
        validate_resources(&Resources {
            nano_cpus: Some(1_000_000_000_000),
            ..Default::default()
        })
        .unwrap_err()
        .field
        .as_deref(),
        Some("cpus")
    );
    assert!(
        validate_resources(&Resources {
            pids_limit: Some(0),
            ..Default::default()
        })
        .is_err()
    );
    assert!(
        validate_resources(&Resources {
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            pids_limit: Some(-1),
            shm_size_bytes: Some(128 << 20),
            ..Default::default()
        })
        .is_ok()
    );
    let e = validate_resources(&Resources {
        shm_size_bytes: Some(0),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("shm_size"));
}

#[test]
fn new_limits_are_checked() {
    let field = |r: Resources| validate_resources(&r).unwrap_err().field;
    assert_eq!(
        field(Resources {
            oom_score_adj: Some(1001),
            ..Default::default()
        })
        .as_deref(),
        Some("oom_score_adj")
    );
    assert_eq!(
        field(Resources {
            memory_swap_bytes: Some(1 << 30),
            ..Default::default()
        })
        .as_deref(),
        Some("memory_swap")
    );
    assert_eq!(
        field(Resources {
            memory_bytes: Some(1 << 30),
            memory_swap_bytes: Some(1 << 29),
            ..Default::default()
        })
        .as_deref(),
        Some("memory_swap")
    );
    assert_eq!(
        field(Resources {
            hugepage_limits: [("2M".to_string(), 1 << 21)].into(),
            ..Default::default()
        })
        .as_deref(),
        Some("hugepage_limits")
    );
    assert_eq!(
        field(Resources {
            unified: [("../memory.max".to_string(), "1".to_string())].into(),
            ..Default::default()
        })
        .as_deref(),
        Some("unified")
    );
    validate_resources(&Resources {
        memory_bytes: Some(1 << 30),
        memory_swap_bytes: Some(-1),
        oom_score_adj: Some(-1000),
        hugepage_limits: [("2MB".to_string(), 1 << 21)].into(),
        unified: [("memory.high".to_string(), "max".to_string())].into(),
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn oom_score_adj_is_restricted_to_the_daemons() {
    let img = image(&[], &["sh"]);
    let mut r = req("x");
    r.resources.oom_score_adj = Some(-1000);
    let own = units::daemon_oom_score_adj();
    let c = container_config(&r, "id", "n", &img).unwrap();
    assert_eq!(c.resources.oom_score_adj, Some(own.max(-1000)));
    r.resources.oom_score_adj = Some(1000);
    let c = container_config(&r, "id", "n", &img).unwrap();
    assert_eq!(c.resources.oom_score_adj, Some(1000));
}

#[test]
fn devices_must_be_device_nodes() {
    let null = |container: &str, permissions: &str| DeviceMapping {
        host_path: "/dev/null".into(),
        container_path: container.into(),
        permissions: permissions.into(),
        ..Default::default()
    };
    let found = check_devices(&[null("/dev/n", "rw")]).unwrap();
    assert_eq!(
        (found[0].kind.as_str(), found[0].major, found[0].minor),
        ("c", 1, 3)
    );
    assert_eq!(found[0].file_mode & 0o666, 0o666);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let bad = [
        vec![DeviceMapping {
            host_path: file.display().to_string(),
            ..Default::default()
        }],
        vec![DeviceMapping {
            host_path: dir.path().join("missing").display().to_string(),
            ..Default::default()
        }],
        vec![null("/dev/n", "rx")],
        vec![null("/dev/n", ""), null("/dev/n", "r")],
    ];
    for devices in bad {
        let e = check_devices(&devices).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("devices"), "{}", e.message);
        assert!(e.message.starts_with("devices: "), "{}", e.message);
    }
}

#[test]
fn security_options() {
    let img = image(&[], &["sh"]);
    let mut r = req("x");
    r.security_opt = vec![
        "seccomp=unconfined".into(),
        "no-new-privileges=false".into(),
    ];
    let c = container_config(&r, "id", "n", &img).unwrap();
    assert_eq!(c.security.seccomp.as_deref(), Some("unconfined"));
    assert!(!c.security.no_new_privileges);
    assert_eq!(c.security.masked_paths, None, "the defaults");
    r.security_opt = vec!["systempaths=unconfined".into()];
    let c = container_config(&r, "id", "n", &img).unwrap();
    assert_eq!(c.security.masked_paths, Some(Vec::new()));
    assert_eq!(c.security.readonly_paths, Some(Vec::new()));
    let mut r = req("x");
    r.security_opt = vec!["apparmor=x".into()];
    assert_eq!(
        container_config(&r, "id", "n", &img)
            .unwrap_err()
            .field
            .as_deref(),
        Some("security_opt")
    );
    let mut r = req("x");
    r.stop_signal = Some("NOPE".into());
    assert_eq!(
        container_config(&r, "id", "n", &img)
            .unwrap_err()
            .field
            .as_deref(),
        Some("stop_signal")
    );
}

#[test]
fn ulimits_are_checked_against_the_daemons_own() {
    let ok = check_ulimits(&[Ulimit::parse("nofile=64:128").unwrap()]).unwrap();
    assert_eq!(ok.len(), 1);
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .expect("a finite nofile hard limit");
    let above = Ulimit {
        name: "nofile".into(),
        soft: 1,
        hard: hard as i64 + 1,
    };
    let e = check_ulimits(&[above]).unwrap_err();
    assert!(
        e.message.contains("daemon's own hard limit"),
        "{}",
        e.message
    );
    let twice = [
        Ulimit::parse("core=0").unwrap(),
        Ulimit::parse("core=1").unwrap(),
    ];
    assert!(check_ulimits(&twice).is_err());
}

#[test]
fn health_checks_merge_the_request_over_the_image() {
    let mut img = image(&[], &["sh"]);
    assert_eq!(healthcheck(None, &img).unwrap(), None);
    img.config.healthcheck = Some(husk_image::Healthcheck {
        test: vec!["CMD-SHELL".into(), "check".into()],
        interval: 2_000_000_000,
        retries: 5,
        ..Default::default()
    });
    let h = healthcheck(None, &img).unwrap().unwrap();
    assert_eq!(
        (h.interval_ns, h.retries, h.timeout_ns),
        (2_000_000_000, 5, DEFAULT_TIMEOUT_NS)
    );
    let r = HealthcheckRequest {
        test: vec!["CMD".into(), "true".into()],
        interval: Some("250ms".into()),
        on_failure: Some("kill".into()),
        ..Default::default()
    };
    let h = healthcheck(Some(&r), &img).unwrap().unwrap();
    assert_eq!(h.test, vec!["CMD", "true"]);
    assert_eq!(
        (h.interval_ns, h.retries),
        (250_000_000, 5),
        "unset fields keep the image's"
    );
    assert_eq!(h.on_failure, HealthAction::Kill);
    let none = HealthcheckRequest {
        test: vec!["NONE".into()],
        ..Default::default()
    };
    assert_eq!(healthcheck(Some(&none), &img).unwrap(), None);
    let plain = image(&[], &["sh"]);
    let orphan = HealthcheckRequest {
        retries: Some(2),
        ..Default::default()
    };
    assert_eq!(
        healthcheck(Some(&orphan), &plain)
            .unwrap_err()
            .field
            .as_deref(),
        Some("healthcheck")
    );
    let bad = HealthcheckRequest {
        test: vec!["CMD".into(), "true".into()],
        interval: Some("soon".into()),
        ..Default::default()
    };
    assert!(healthcheck(Some(&bad), &img).is_err());
}
