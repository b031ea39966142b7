use super::lifecycle::unchanged_on_update;
use super::*;
use husk_core::Resources;

#[test]
fn what_is_fixed_at_create_may_be_repeated_but_not_changed() {
    let old = Resources {
        memory_bytes: Some(1 << 30),
        memory_swap_bytes: Some(1 << 30),
        oom_score_adj: Some(1000),
        hugepage_limits: [("2MB".to_string(), 1 << 21)].into(),
        ..Default::default()
    };
    unchanged_on_update(&old, &old).unwrap();
    unchanged_on_update(&Resources::default(), &old).unwrap();
    for (new, field) in [
        (
            Resources {
                oom_score_adj: Some(999),
                ..old.clone()
            },
            "oom_score_adj",
        ),
        (
            Resources {
                memory_swap_bytes: Some(-1),
                ..old.clone()
            },
            "memory_swap",
        ),
        (
            Resources {
                hugepage_limits: [("1GB".to_string(), 1 << 30)].into(),
                ..old.clone()
            },
            "hugepage_limits",
        ),
        (
            Resources {
                unified: [("memory.high".to_string(), "1".to_string())].into(),
                ..old.clone()
            },
            "unified",
        ),
    ] {
        let e = unchanged_on_update(&new, &old).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field));
    }
}

#[test]
fn options_a_driver_lacks_are_refused_by_name() {
    let none = Capabilities::default();
    let cases: Vec<(ContainerCreate, &str)> = vec![
        (
            ContainerCreate {
                init: true,
                ..Default::default()
            },
            "--init",
        ),
        (
            ContainerCreate {
                ulimits: vec![husk_core::Ulimit::parse("nofile=1").unwrap()],
                ..Default::default()
            },
            "ulimit",
        ),
        (
            ContainerCreate {
                group_add: vec!["audio".into()],
                ..Default::default()
            },
            "--group-add",
        ),
        (
            ContainerCreate {
                read_only: true,
                ..Default::default()
            },
            "--read-only",
        ),
        (
            ContainerCreate {
                cap_add: vec!["NET_ADMIN".into()],
                ..Default::default()
            },
            "--cap-add",
        ),
    ];
    for (req, option) in cases {
        let e = check_options(&req, "vm", &none).unwrap_err();
        assert_eq!(e.kind, husk_core::ErrorKind::Unsupported);
        assert!(
            e.message.contains("driver vm") && e.message.contains(option),
            "{}",
            e.message
        );
    }
    let all = Capabilities {
        init: true,
        ulimits: true,
        group_add: true,
        readonly_rootfs: true,
        security_options: true,
        ..Default::default()
    };
    let req = ContainerCreate {
        init: true,
        read_only: true,
        cap_drop: vec!["ALL".into()],
        ..Default::default()
    };
    assert!(check_options(&req, "linux", &all).is_ok());
}
