use super::catalog::{plan_network, route_overlaps};
use super::*;
use crate::subnet::Subnet;

fn catalog_with(lists: &[&str]) -> Catalog {
    let mut catalog = Catalog::default();
    for text in lists {
        let list = NetworkList::parse(text.as_bytes(), "t").unwrap();
        catalog.lists.insert(list.name.clone(), list);
    }
    catalog
}

const EXISTING: &str = r#"{"name":"a","cniVersion":"1.0.0","plugins":[{"type":"bridge","bridge":"husk1",
        "ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.0.0/24"}]]}}]}"#;

#[test]
fn new_networks_avoid_taken_subnets_and_bridges() {
    let catalog = catalog_with(&[EXISTING]);
    let plan = plan_network(
        &NewNetwork {
            name: "b".into(),
            ..NewNetwork::default()
        },
        &catalog,
    )
    .unwrap();
    assert_ne!(plan.subnet.to_string(), "10.89.0.0/24");
    assert!(plan.subnet.to_string().starts_with("10.89."));
    assert_eq!(plan.gateway, plan.subnet.host(1).unwrap());
    assert_ne!(plan.bridge, "husk1");
    let err = plan_network(
        &NewNetwork {
            name: "b".into(),
            subnet: Some("10.89.0.0/16".into()),
            ..NewNetwork::default()
        },
        &catalog,
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message.contains("overlaps network \"a\""),
        "{}",
        err.message
    );
    let err = plan_network(
        &NewNetwork {
            name: "b".into(),
            bridge: Some("husk1".into()),
            ..NewNetwork::default()
        },
        &catalog,
    )
    .unwrap_err();
    assert!(
        err.message.contains("already used by network \"a\""),
        "{}",
        err.message
    );
    let err = plan_network(
        &NewNetwork {
            name: "b".into(),
            subnet: Some("10.90.0.0/24".into()),
            gateway: Some("10.90.0.255".into()),
            ..NewNetwork::default()
        },
        &catalog,
    )
    .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("gateway"));
}

#[test]
fn host_routes_are_found() {
    let table = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    let on_link = Subnet::parse("192.0.2.0/25").unwrap();
    assert!(route_overlaps(table, &on_link));
    assert!(
        !route_overlaps(table, &Subnet::parse("10.89.0.0/24").unwrap()),
        "the default route does not count"
    );
}

#[test]
fn sandbox_ids_are_checked() {
    assert!(validate_sandbox_id(&"a".repeat(64)).is_ok());
    for bad in ["", "../x", "a/b", ".hidden", "a b"] {
        assert!(validate_sandbox_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn catalog_skips_bad_files_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-a.conflist"), EXISTING).unwrap();
    std::fs::write(dir.path().join("20-a.conflist"), EXISTING).unwrap();
    std::fs::write(dir.path().join("30-bad.conflist"), "{").unwrap();
    std::fs::write(dir.path().join("README"), "ignored").unwrap();
    let catalog = load_catalog(dir.path()).unwrap();
    assert_eq!(catalog.lists.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(catalog.errors.len(), 2);
    assert!(
        catalog.errors[0].contains("already defined by"),
        "{}",
        catalog.errors[0]
    );
    assert!(
        catalog.errors[1].contains("30-bad.conflist"),
        "{}",
        catalog.errors[1]
    );
}
