use bollard::models::{
    ContainerState, EndpointSettings, EventActor, EventMessage, NetworkSettings,
};

use super::*;

fn inspect_with(state: ContainerState) -> ContainerInspectResponse {
    ContainerInspectResponse {
        state: Some(state),
        ..Default::default()
    }
}

#[test]
fn start_times_are_given_to_the_events_api_as_seconds_and_nanoseconds() {
    let t = |s| husk_core::Timestamp::parse(s).unwrap();
    assert_eq!(
        engine_time(t("2026-12-06T23:38:01.123456789Z")),
        "1796600281.123456789"
    );
    assert_eq!(
        engine_time(t("2026-12-06T23:38:01+01:00")),
        "1796596681.000000000"
    );
    assert_eq!(engine_time(husk_core::Timestamp::UNIX_EPOCH), "0.000000000");
}

#[test]
fn engine_states_map_to_observed_states() {
    let s = |status, pid| ContainerState {
        status: Some(status),
        pid: Some(pid),
        ..Default::default()
    };
    assert_eq!(
        observed(&inspect_with(s(ContainerStateStatusEnum::CREATED, 0))),
        ObservedState::Created
    );
    assert_eq!(
        observed(&inspect_with(s(ContainerStateStatusEnum::RUNNING, 42))),
        ObservedState::Running { pid: 42 }
    );
    assert_eq!(
        observed(&inspect_with(s(ContainerStateStatusEnum::PAUSED, 42))),
        ObservedState::Paused { pid: 42 }
    );
    let exited = ContainerState {
        status: Some(ContainerStateStatusEnum::EXITED),
        exit_code: Some(137),
        oom_killed: Some(true),
        finished_at: Some("2024-05-01T10:00:00Z".into()),
        ..Default::default()
    };
    match observed(&inspect_with(exited)) {
        ObservedState::Exited(e) => {
            assert_eq!(
                (e.code, e.oom_killed, e.finished_at.map(|t| t.to_string())),
                (
                    137,
                    true,
                    Some("2024-05-01T10:00:00.000000000Z".to_string())
                )
            );
        }
        other => panic!("{other:?}"),
    }
    let never = ContainerState {
        status: Some(ContainerStateStatusEnum::DEAD),
        finished_at: Some("0001-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    let e = exit_status(&inspect_with(never), 1);
    assert!(e.finished_at.is_none() && e.reason.contains("dead"));
    assert_eq!(
        observed(&ContainerInspectResponse::default()),
        ObservedState::Missing
    );
}

#[test]
fn network_status_from_inspect() {
    let inspect = ContainerInspectResponse {
        network_settings: Some(NetworkSettings {
            networks: Some(HashMap::from([(
                "bridge".to_string(),
                EndpointSettings {
                    ip_address: Some("10.1.2.3".into()),
                    ip_prefix_len: Some(24),
                    gateway: Some("10.1.2.1".into()),
                    mac_address: Some("02:42:0a:01:02:03".into()),
                    ..Default::default()
                },
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let n = network_status(&inspect, &Default::default());
    assert_eq!(n.network, "bridge");
    assert_eq!(n.addresses, vec!["10.1.2.3/24".to_string()]);
    assert_eq!(
        (n.gateway.as_str(), n.interface.as_str()),
        ("10.1.2.1", "eth0")
    );
    let none = network_status(
        &ContainerInspectResponse::default(),
        &husk_core::NetworkConfig {
            mode: "none".into(),
            ..Default::default()
        },
    );
    assert!(none.addresses.is_empty() && none.interface.is_empty());
}

#[test]
fn labelled_summaries_and_events() {
    let summary = ContainerSummary {
        id: Some("e1".into()),
        names: Some(vec!["/husk_c_web".into()]),
        labels: Some(labels::container_labels(
            "husk",
            "cid",
            "web",
            Some("sid"),
            &BTreeMap::new(),
        )),
        state: Some(bollard::models::ContainerSummaryStateEnum::EXITED),
        ..Default::default()
    };
    let o = owned(summary).unwrap();
    assert_eq!(
        (o.engine_name.as_str(), o.role, o.state.as_str()),
        ("husk_c_web", Role::Container, "exited")
    );
    assert_eq!(
        (
            o.container_id.as_deref(),
            o.sandbox_id.as_deref(),
            o.name.as_str()
        ),
        (Some("cid"), Some("sid"), "web")
    );
    assert!(
        owned(ContainerSummary {
            id: Some("x".into()),
            ..Default::default()
        })
        .is_none()
    );

    let m = EventMessage {
        action: Some("die".into()),
        actor: Some(EventActor {
            id: Some("e1".into()),
            attributes: Some(HashMap::from([
                ("exitCode".to_string(), "3".to_string()),
                (labels::CONTAINER_ID.to_string(), "cid".to_string()),
            ])),
        }),
        time_nano: Some(5),
        ..Default::default()
    };
    let e = event(m).unwrap();
    assert_eq!(
        (
            e.action.as_str(),
            e.exit_code,
            e.container_id.as_deref(),
            e.time_nanos
        ),
        ("die", Some(3), Some("cid"), 5)
    );
}
