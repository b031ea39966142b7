use std::collections::BTreeMap;

use super::*;

#[test]
fn log_opts_are_read_checked_and_merged() {
    let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let l = LogLimits::from_opts(&opts(&[("max-size", "10m"), ("max-file", "3")])).unwrap();
    assert_eq!(l.max_size_bytes, Some(10 << 20));
    assert_eq!(l.max_files, Some(3));
    assert_eq!(l.files(), 3);
    assert_eq!(
        l.opts(),
        opts(&[("max-size", "10485760"), ("max-file", "3")])
    );
    assert!(LogLimits::from_opts(&opts(&[])).unwrap().is_unbounded());
    let size_only = LogLimits::from_opts(&opts(&[("max-size", "1k")])).unwrap();
    assert_eq!(size_only.files(), 1, "one file when only max-size is set");
    let merged = size_only.or(l);
    assert_eq!(
        (merged.max_size_bytes, merged.max_files),
        (Some(1024), Some(3)),
        "the request's own first, the defaults for the rest"
    );
    for (pairs, field) in [
        (&[("max-size", "0")][..], "log-opt max-size"),
        (&[("max-size", "lots")][..], "log-opt max-size"),
        (&[("max-file", "0")][..], "log-opt max-file"),
        (&[("max-file", "-1")][..], "log-opt max-file"),
        (&[("mode", "non-blocking")][..], "log-opt"),
    ] {
        let e = LogLimits::from_opts(&opts(pairs)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{}", e.message);
        assert!(e.message.contains(pairs[0].0), "{}", e.message);
    }
    // Records written before the field existed load as unbounded.
    let old: super::ContainerConfig = serde_json::from_str(
        r#"{"id":"c","name":"n","image":{"name":"i","id":"x"},"process":{"args":["sh"]}}"#,
    )
    .unwrap();
    assert!(old.log.is_unbounded());
}

#[test]
fn restart_policies_parse_and_decide() {
    assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
    assert_eq!(
        RestartPolicy::parse("on-failure:3").unwrap(),
        RestartPolicy::OnFailure { max_retries: 3 }
    );
    assert_eq!(
        RestartPolicy::parse("unless-stopped").unwrap(),
        RestartPolicy::UnlessStopped
    );
    assert!(RestartPolicy::parse("sometimes").is_err());
    assert!(RestartPolicy::parse("on-failure:x").is_err());
    assert!(RestartPolicy::parse("always:2").is_err());
    let p = RestartPolicy::OnFailure { max_retries: 2 };
    assert!(p.should_restart(1, 0, false));
    assert!(p.should_restart(1, 1, false));
    assert!(!p.should_restart(1, 2, false));
    assert!(!p.should_restart(0, 0, false));
    assert!(RestartPolicy::Always.should_restart(0, 100, false));
    assert!(!RestartPolicy::Always.should_restart(0, 0, true));
    assert_eq!(p.to_string(), "on-failure:2");
}

#[test]
fn allowed_state_table() {
    use ContainerStatus as S;
    assert!(Action::Start.allowed_in(S::Created));
    assert!(Action::Start.allowed_in(S::Exited));
    assert!(!Action::Start.allowed_in(S::Running));
    assert!(!Action::Delete.allowed_in(S::Running));
    assert!(Action::Unpause.allowed_in(S::Paused));
    assert!(!Action::Exec.allowed_in(S::Paused));
    let e = Action::Delete.check("web", S::Running).unwrap_err();
    assert!(e.message.contains("rm -f"), "{}", e.message);
}

#[test]
fn port_mappings() {
    let p = PortMapping::parse("8080:80").unwrap();
    assert_eq!(
        (p.host_port, p.container_port, p.protocol.as_str()),
        (8080, 80, "tcp")
    );
    let p = PortMapping::parse("127.0.0.1:8080:80/udp").unwrap();
    assert_eq!(
        (p.host_ip.as_str(), p.protocol.as_str()),
        ("127.0.0.1", "udp")
    );
    let p = PortMapping::parse("[::1]:8080:80").unwrap();
    assert_eq!(p.host_ip, "::1");
    // No host port: one is picked when the port is published.
    let p = PortMapping::parse("80").unwrap();
    assert_eq!((p.host_port, p.container_port), (0, 80));
    let p = PortMapping::parse("127.0.0.1::80/udp").unwrap();
    assert_eq!(
        (p.host_ip.as_str(), p.host_port, p.container_port),
        ("127.0.0.1", 0, 80)
    );
    for bad in [
        "0:80",
        "x:80",
        "1:2:3:4",
        "8080:80/sctp",
        "nothost:1:2",
        "70000:80",
    ] {
        assert!(PortMapping::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn ids_and_names() {
    let id = new_id();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(crate::units::validate_name("name", &random_name()).is_ok());
}

#[test]
fn user_namespace_mappings_are_checked() {
    let one = |container_id, host_id, size| {
        vec![IdMapping {
            container_id,
            host_id,
            size,
        }]
    };
    let userns = |uids: Vec<IdMapping>, gids: Vec<IdMapping>| UserNamespaceConfig {
        uid_mappings: uids,
        gid_mappings: gids,
    };
    let good = userns(one(0, 1000, 100_000), one(0, 1000, 100_000));
    good.validate("userns_options").unwrap();
    assert_eq!(good.host_root_uid(), Some(1000));
    assert_eq!(good.uid_mappings[0].map_line(), "0 1000 100000\n");
    assert_eq!(good.uid_mappings[0].host_of(99_999), Some(100_999));
    assert_eq!(good.uid_mappings[0].host_of(100_000), None);
    let mut two = one(0, 1000, 100_000);
    two.extend(one(0, 2000, 100_000));
    let cases = [
        (
            userns(two.clone(), two),
            "userns_options.uids",
            "exactly one",
        ),
        (userns(vec![], one(0, 1, 1)), "userns_options.uids", "not 0"),
        (
            userns(one(0, 1, 1), one(1, 1000, 10)),
            "userns_options.gids",
            "ID 0",
        ),
        (
            userns(one(1, 1000, 100_000), one(0, 1, 1)),
            "userns_options.uids",
            "ID 0",
        ),
        (
            userns(one(0, 1, 0), one(0, 1, 1)),
            "userns_options.uids",
            "empty",
        ),
        (
            userns(one(0, u32::MAX, 2), one(0, 1, 1)),
            "userns_options.uids",
            "largest",
        ),
    ];
    for (config, field, words) in cases {
        let e = config.validate("userns_options").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
        assert_eq!(e.field.as_deref(), Some(field), "{}", e.message);
        assert!(
            e.message.starts_with(field) && e.message.contains(words),
            "{}",
            e.message
        );
    }
}

#[test]
fn modes_parse() {
    assert_eq!("standalone".parse::<Mode>().unwrap(), Mode::Standalone);
    assert!("vm".parse::<Mode>().is_err());
}

#[test]
fn device_flags_parse_as_docker_reads_them() {
    let d = DeviceMapping::parse("/dev/fuse").unwrap();
    assert_eq!((d.path_in_container(), d.access()), ("/dev/fuse", "rwm"));
    let d = DeviceMapping::parse("/dev/fuse:r").unwrap();
    assert_eq!((d.path_in_container(), d.access()), ("/dev/fuse", "r"));
    let d = DeviceMapping::parse("/dev/fuse:/dev/f").unwrap();
    assert_eq!((d.path_in_container(), d.access()), ("/dev/f", "rwm"));
    let d = DeviceMapping::parse("/dev/fuse:/dev/f:rw").unwrap();
    assert_eq!((d.path_in_container(), d.access()), ("/dev/f", "rw"));
    for bad in [
        "dev/fuse",
        "/dev/fuse:f:rw",
        "/dev/fuse:/f:rwx",
        "/dev/fuse:/f:rr",
        "/a:/b:r:w",
    ] {
        let e = DeviceMapping::parse(bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("devices"), "{bad}");
    }
}

#[test]
fn swap_equal_to_memory_is_no_swap() {
    let r = |memory, swap| Resources {
        memory_bytes: memory,
        memory_swap_bytes: swap,
        ..Default::default()
    };
    assert!(!r(Some(1 << 30), None).asks_for_swap());
    assert!(!r(Some(1 << 30), Some(1 << 30)).asks_for_swap());
    assert!(r(Some(1 << 30), Some(2 << 30)).asks_for_swap());
    assert!(r(Some(1 << 30), Some(-1)).asks_for_swap());
    assert!(r(None, Some(1 << 30)).asks_for_swap());
}

#[test]
fn every_vocabulary_name_is_its_json_form() {
    use crate::names::assert_names_are_serde_names;
    assert_names_are_serde_names(ContainerStatus::ALL, ContainerStatus::as_str);
    assert_names_are_serde_names(SandboxStatus::ALL, SandboxStatus::as_str);
    assert_names_are_serde_names(MountKind::ALL, MountKind::as_str);
    assert_names_are_serde_names(PortProtocol::ALL, PortProtocol::as_str);
    assert_names_are_serde_names(OutputStream::ALL, OutputStream::as_str);
    assert_names_are_serde_names(crate::CommandFailure::ALL, crate::CommandFailure::as_str);
    assert_eq!(
        SandboxStatus::from_name("notready"),
        Some(SandboxStatus::NotReady)
    );
    assert_eq!(SandboxStatus::from_name("NotReady"), None);
    assert_eq!("UDP".parse::<PortProtocol>().unwrap(), PortProtocol::Udp);
    assert_eq!(ContainerStatus::Exited.to_string(), "exited");
}

#[test]
fn stored_times_keep_their_text() {
    let t = |s| crate::Timestamp::parse(s).unwrap();
    let mut rec = ContainerRecord {
        created_at: t("2024-05-01T12:00:00.000000001Z"),
        exit: Some(ExitStatus {
            code: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let json = serde_json::to_value(&rec).unwrap();
    assert_eq!(json["created_at"], "2024-05-01T12:00:00.000000001Z");
    assert_eq!(
        json["started_at"], "",
        "never started: empty, as older husk wrote it"
    );
    assert!(json["exit"].get("finished_at").is_none(), "{json}");
    rec.started_at = Some(t("2024-05-01T12:00:01Z"));
    rec.exit.as_mut().unwrap().finished_at = Some(t("2024-05-01T12:00:02.5Z"));
    let text = serde_json::to_string(&rec).unwrap();
    assert!(
        text.contains(r#""started_at":"2024-05-01T12:00:01.000000000Z""#),
        "{text}"
    );
    assert!(
        text.contains(r#""finished_at":"2024-05-01T12:00:02.500000000Z""#),
        "{text}"
    );
    let back: ContainerRecord = serde_json::from_str(&text).unwrap();
    assert_eq!(back, rec);
    assert_eq!(serde_json::to_string(&back).unwrap(), text);

    // A record older husk wrote: empty times, a stats reading of a stopped container, a log line.
    let mut old = serde_json::to_value(&rec).unwrap();
    old["started_at"] = "".into();
    old["exit"]["finished_at"] = "".into();
    let old: ContainerRecord = serde_json::from_value(old).unwrap();
    assert_eq!(
        (old.started_at, old.exit.unwrap().finished_at),
        (None, None)
    );
    let stats = serde_json::to_value(Stats::default()).unwrap();
    assert_eq!(stats["read_at"], "");
    assert_eq!(
        serde_json::from_value::<Stats>(stats).unwrap(),
        Stats::default()
    );
    let line: LogEntry = serde_json::from_str(
        r#"{"time":"2024-05-01T12:00:00.123456789Z","stream":"stdout","text":"hi\n"}"#,
    )
    .unwrap();
    assert_eq!(
        serde_json::to_string(&line).unwrap(),
        r#"{"time":"2024-05-01T12:00:00.123456789Z","stream":"stdout","text":"hi\n"}"#
    );
}
