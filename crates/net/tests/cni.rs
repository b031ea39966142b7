//! husk-net against the real CNI plugins, as root, in network namespaces the tests make themselves, on a
//! private bridge and subnet per test.

mod common;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::Command;

use common::*;
use husk_core::{ErrorKind, NetworkConfig, NetworkStatus, PortMapping};
use husk_net::{Mode, Networks, NewNetwork};

fn bridge() -> NetworkConfig {
    NetworkConfig::default()
}

fn with_ports(ports: &[&str]) -> NetworkConfig {
    NetworkConfig {
        ports: ports
            .iter()
            .map(|p| PortMapping::parse(p).unwrap())
            .collect(),
        ..NetworkConfig::default()
    }
}

fn ip_of(status: &NetworkStatus) -> IpAddr {
    status.addresses[0]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The host end of a sandbox's veth, from the cached result (interfaces outside the sandbox, not the bridge).
fn host_veth(net: &TestNet, id: &str) -> String {
    let path = net
        .config
        .state_dir
        .join("attachments")
        .join(format!("{id}.json"));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let interfaces = record["result"]["interfaces"].as_array().unwrap();
    let veth = interfaces
        .iter()
        .find(|i| i.get("sandbox").is_none() && i["name"] != net.config.default_bridge.as_str());
    veth.unwrap()["name"].as_str().unwrap().to_string()
}

/// What a test knows about a sandbox it attached.
struct Attached {
    id: String,
    ip: IpAddr,
    veth: String,
}

fn attached(net: &TestNet, id: &str, status: &NetworkStatus) -> Attached {
    Attached {
        id: id.to_string(),
        ip: ip_of(status),
        veth: host_veth(net, id),
    }
}

/// Asserts that nothing of a torn-down sandbox is left: no cache entry, no files, no iptables rule naming it
/// or its IP, no host-local allocation, no host veth.
fn assert_nothing_left(net: &TestNet, networks: &Networks, sandbox: &Attached) {
    assert_no_trace(net, networks, &sandbox.id);
    let save = iptables_save();
    let ip = sandbox.ip;
    assert!(
        !save.contains(&format!("{ip}/32")) && !save.contains(&format!("{ip}:")),
        "rule with {ip} left:\n{save}"
    );
    assert!(
        !net.allocations().contains(&ip.to_string()),
        "IP allocation {ip} left"
    );
    // A deleted namespace takes its veth pair with it, but the kernel dismantles namespaces asynchronously.
    let veth = std::path::Path::new("/sys/class/net").join(&sandbox.veth);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while veth.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!veth.exists(), "veth {} left", sandbox.veth);
}

/// Asserts that a sandbox has no cache entry, no files and no iptables rule naming it.
fn assert_no_trace(net: &TestNet, networks: &Networks, id: &str) {
    assert_eq!(networks.status(id).unwrap(), None);
    assert!(
        !net.config
            .state_dir
            .join("attachments")
            .join(format!("{id}.json"))
            .exists(),
        "cache entry left"
    );
    assert!(
        !networks.files(id).unwrap().dir.exists(),
        "sandbox files left"
    );
    let save = iptables_save();
    assert!(
        !save.contains(id),
        "iptables rule naming the sandbox left:\n{save}"
    );
}

#[test]
fn two_sandboxes_on_one_bridge_reach_each_other_by_ip() {
    let net = TestNet::new();
    let networks = net.open();
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let (id_a, id_b) = (sandbox_id(), sandbox_id());
    let a = networks.setup(&id_a, &ns_a.path, &bridge()).unwrap();
    let b = networks.setup(&id_b, &ns_b.path, &bridge()).unwrap();

    assert_eq!(a.network, net.config.default_network);
    assert_eq!(a.interface, "eth0");
    assert_eq!(a.gateway, format!("{}1", net.subnet_prefix));
    assert!(
        a.addresses[0].starts_with(&net.subnet_prefix) && a.addresses[0].ends_with("/24"),
        "{a:?}"
    );
    assert_eq!(a.mac.len(), 17, "{a:?}");
    assert_ne!(a.addresses, b.addresses);
    assert_eq!(networks.status(&id_a).unwrap(), Some(a.clone()));
    let mut links = ns_a.links();
    links.sort();
    assert_eq!(links, ["eth0", "lo"]);

    serve_in(&ns_b.path, 7000, "hello from b", 1);
    let target = SocketAddr::new(ip_of(&b), 7000);
    let got = in_netns(&ns_a.path, move || read_from(target));
    assert_eq!(got.unwrap(), "hello from b");
    // Inside one sandbox, localhost works (lo is up): what its containers use to talk to each other.
    serve_in(&ns_a.path, 7001, "hello over localhost", 1);
    let got = in_netns(&ns_a.path, || read_from(([127, 0, 0, 1], 7001).into()));
    assert_eq!(got.unwrap(), "hello over localhost");

    networks.check(&id_a, &ns_a.path).unwrap();
    let (sandbox_a, sandbox_b) = (attached(&net, &id_a, &a), attached(&net, &id_b, &b));
    networks.teardown(&id_a, Some(&ns_a.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox_a);
    networks.teardown(&id_b, Some(&ns_b.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox_b);
}

#[test]
fn the_built_in_bridge_and_the_plugin_binary_take_turns_on_one_network() {
    // The built-in needs no binary: its networks open on a plugin directory that is empty (portmap is idle
    // without published ports).
    let net = TestNet::new();
    let empty = net.dir.path().join("no-plugins");
    std::fs::create_dir_all(&empty).unwrap();
    let mut builtin_config = net.config.clone();
    builtin_config.plugin_dirs = vec![empty];
    assert!(builtin_config.builtin_bridge, "on by default");
    let builtin = Networks::open(builtin_config).unwrap();
    let mut binary_config = net.config.clone();
    binary_config.builtin_bridge = false;
    let binary = Networks::open(binary_config).unwrap();

    // One attached by each, on one bridge, one allocation directory: distinct addresses, and they talk.
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let (id_a, id_b) = (sandbox_id(), sandbox_id());
    let a = builtin.setup(&id_a, &ns_a.path, &bridge()).unwrap();
    let b = binary.setup(&id_b, &ns_b.path, &bridge()).unwrap();
    assert_ne!(a.addresses, b.addresses);
    assert_eq!(
        (a.gateway.as_str(), a.interface.as_str()),
        (b.gateway.as_str(), "eth0")
    );
    assert_eq!(a.mac.len(), 17, "{a:?}");
    let mut links = ns_a.links();
    links.sort();
    assert_eq!(links, ["eth0", "lo"]);
    assert!(
        host_veth(&net, &id_a).starts_with("veth"),
        "the binary's naming"
    );
    serve_in(&ns_b.path, 7002, "hello from the binary's sandbox", 1);
    let target = SocketAddr::new(ip_of(&b), 7002);
    assert_eq!(
        in_netns(&ns_a.path, move || read_from(target)).unwrap(),
        "hello from the binary's sandbox"
    );
    serve_in(&ns_a.path, 7003, "hello from the built-in's sandbox", 1);
    let target = SocketAddr::new(ip_of(&a), 7003);
    assert_eq!(
        in_netns(&ns_b.path, move || read_from(target)).unwrap(),
        "hello from the built-in's sandbox"
    );
    // Each checks and detaches what the other attached.
    binary.check(&id_a, &ns_a.path).unwrap();
    builtin.check(&id_b, &ns_b.path).unwrap();
    let (sandbox_a, sandbox_b) = (attached(&net, &id_a, &a), attached(&net, &id_b, &b));
    binary.teardown(&id_a, Some(&ns_a.path)).unwrap();
    assert_nothing_left(&net, &binary, &sandbox_a);
    builtin.teardown(&id_b, Some(&ns_b.path)).unwrap();
    assert_nothing_left(&net, &builtin, &sandbox_b);

    // The built-in's CHECK finds a broken attachment as the binary's does, and its DEL works without the
    // namespace.
    let ns = Netns::new();
    let id = sandbox_id();
    let status = builtin.setup(&id, &ns.path, &bridge()).unwrap();
    ns.exec(&["ip", "addr", "flush", "dev", "eth0"]);
    let err = builtin.check(&id, &ns.path).unwrap_err();
    assert!(
        err.message.contains("CNI plugin \"bridge\" failed CHECK")
            && err.message.contains("does not have"),
        "{}",
        err.message
    );
    let sandbox = attached(&net, &id, &status);
    ns.delete();
    builtin.teardown(&id, None).unwrap();
    assert_nothing_left(&net, &builtin, &sandbox);
}

#[test]
fn published_port_answers_on_localhost_and_teardown_removes_everything() {
    let net = TestNet::new();
    let networks = net.open();
    let ns = Netns::new();
    let id = sandbox_id();
    let (local, any) = (free_port(), free_port());
    let mut request = with_ports(&[&format!("127.0.0.1:{local}:80"), &format!("{any}:81")]);
    // Host port 0 (what -P asks for): husk picks a free one.
    let picked = PortMapping {
        host_ip: "127.0.0.1".into(),
        host_port: 0,
        container_port: 82,
        protocol: husk_core::PortProtocol::Tcp,
    };
    request.ports.push(picked);
    let status = networks.setup(&id, &ns.path, &request).unwrap();
    assert_eq!(status.ports[..2], request.ports[..2]);
    let chosen = status.ports[2].host_port;
    assert!((32768..=60999).contains(&chosen), "{:?}", status.ports);
    assert_eq!(networks.status(&id).unwrap().unwrap().ports, status.ports);
    networks.check(&id, &ns.path).unwrap();

    serve_in(&ns.path, 80, "published", 1);
    serve_in(&ns.path, 81, "published on every address", 1);
    serve_in(&ns.path, 82, "published on a picked port", 1);
    assert_eq!(
        read_from(([127, 0, 0, 1], chosen).into()).unwrap(),
        "published on a picked port"
    );
    assert_eq!(
        read_from(([127, 0, 0, 1], local).into()).unwrap(),
        "published"
    );
    assert_eq!(
        read_from(([127, 0, 0, 1], any).into()).unwrap(),
        "published on every address"
    );
    let route_localnet = format!(
        "/proc/sys/net/ipv4/conf/{}/route_localnet",
        net.config.default_bridge
    );
    assert_eq!(
        std::fs::read_to_string(route_localnet).unwrap().trim(),
        "1",
        "portmap sets route_localnet"
    );
    assert!(iptables_save().contains(&format!(
        "husk: no localnet access from {}",
        net.config.default_bridge
    )));

    let sandbox = attached(&net, &id, &status);
    assert!(iptables_save().contains(&id));
    assert_eq!(net.allocations(), [sandbox.ip.to_string()]);
    networks.teardown(&id, Some(&ns.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox);
    assert_eq!(ns.links(), ["lo"], "the sandbox's eth0 is gone");
    networks.teardown(&id, Some(&ns.path)).unwrap();
    networks.teardown(&id, None).unwrap();
}

#[test]
fn none_has_only_lo_and_host_sets_up_nothing() {
    let net = TestNet::new();
    let networks = net.open();
    let ns = Netns::new();
    let id = sandbox_id();
    let none = NetworkConfig {
        mode: "none".into(),
        ..NetworkConfig::default()
    };
    assert_eq!(networks.mode_of(&none), Mode::None);
    let status = networks.setup(&id, &ns.path, &none).unwrap();
    assert_eq!(status.network, "none");
    assert!(status.addresses.is_empty());
    assert_eq!(ns.links(), ["lo"]);
    assert!(
        ns.exec(&["ip", "-o", "link", "show", "lo"]).contains(",UP"),
        "lo is up"
    );
    assert_eq!(networks.status(&id).unwrap(), None);
    let err = networks
        .setup(
            &sandbox_id(),
            &ns.path,
            &NetworkConfig {
                ports: with_ports(&["8080:80"]).ports,
                ..none
            },
        )
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("ports"));

    let host = NetworkConfig {
        mode: "host".into(),
        ..NetworkConfig::default()
    };
    let id_host = sandbox_id();
    let status = networks.setup(&id_host, &ns.path, &host).unwrap();
    assert_eq!(
        status,
        NetworkStatus {
            network: "host".into(),
            ..NetworkStatus::default()
        }
    );
    assert_eq!(networks.status(&id_host).unwrap(), None);
    networks.teardown(&id, Some(&ns.path)).unwrap();
    networks.teardown(&id_host, None).unwrap();
}

#[test]
fn teardown_after_a_restart_and_without_the_namespace() {
    let net = TestNet::new();
    let ns_kept = Netns::new();
    let ns_gone = Netns::new();
    let (id_kept, id_gone) = (sandbox_id(), sandbox_id());
    let (kept, gone) = {
        let networks = net.open();
        let kept = networks
            .setup(
                &id_kept,
                &ns_kept.path,
                &with_ports(&[&format!("127.0.0.1:{}:80", free_port())]),
            )
            .unwrap();
        let gone = networks
            .setup(
                &id_gone,
                &ns_gone.path,
                &with_ports(&[&format!("{}:80", free_port())]),
            )
            .unwrap();
        (kept, gone)
    };
    let (sandbox_kept, sandbox_gone) = (
        attached(&net, &id_kept, &kept),
        attached(&net, &id_gone, &gone),
    );
    // "Daemon restart": a new instance that knows only what is on disk.
    let networks = net.open();
    assert_eq!(networks.status(&id_kept).unwrap(), Some(kept.clone()));
    networks.teardown(&id_kept, Some(&ns_kept.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox_kept);

    // The namespace is deleted before the network: the bridge plugin cannot see the interface any more.
    ns_gone.delete();
    assert!(!ns_gone.path.exists());
    assert!(
        iptables_save().contains(&id_gone),
        "the masquerade rules are still there"
    );
    networks.teardown(&id_gone, Some(&ns_gone.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox_gone);
}

#[test]
fn a_taken_host_port_fails_clearly_and_leaves_nothing() {
    let net = TestNet::new();
    let networks = net.open();
    let ns = Netns::new();

    // Held by a host process.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let id = sandbox_id();
    let err = networks
        .setup(&id, &ns.path, &with_ports(&[&format!("{port}:80")]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(err.field.as_deref(), Some("ports"));
    assert!(
        err.message.contains(&format!(
            "host port {port}/tcp is already in use on the host"
        )),
        "{}",
        err.message
    );
    assert_eq!(ns.links(), ["lo"]);
    assert_no_trace(&net, &networks, &id);
    assert!(net.allocations().is_empty());
    drop(listener);

    // Published by another sandbox of this daemon.
    let owner = sandbox_id();
    let ns_owner = Netns::new();
    let port = free_port();
    networks
        .setup(
            &owner,
            &ns_owner.path,
            &with_ports(&[&format!("{port}:80")]),
        )
        .unwrap();
    let err = networks
        .setup(
            &id,
            &ns.path,
            &with_ports(&[&format!("127.0.0.1:{port}:8080")]),
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(
        err.message.contains(&format!(
            "host port {port}/tcp is already published by sandbox {}",
            &owner[..12]
        )),
        "{}",
        err.message
    );
    assert_no_trace(&net, &networks, &id);
    assert_eq!(ns.links(), ["lo"]);

    // Forwarded by another daemon (another instance with its own state, same host).
    let other = TestNet::new();
    let other_networks = other.open();
    let err = other_networks
        .setup(&id, &ns.path, &with_ports(&[&format!("{port}:80")]))
        .unwrap_err();
    assert!(
        err.message.contains(&format!(
            "host port {port}/tcp is already forwarded to container {}",
            &owner[..12]
        )),
        "{}",
        err.message
    );
    assert_no_trace(&other, &other_networks, &id);
    assert!(other.allocations().is_empty());

    networks.teardown(&owner, Some(&ns_owner.path)).unwrap();
    assert!(net.allocations().is_empty());
}

#[test]
fn sandboxes_set_up_in_parallel_get_distinct_addresses() {
    let net = TestNet::new();
    let networks = std::sync::Arc::new(net.open());
    let namespaces: Vec<Netns> = (0..4).map(|_| Netns::new()).collect();
    let ids: Vec<String> = (0..4).map(|_| sandbox_id()).collect();
    let statuses: Vec<NetworkStatus> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .zip(&ids)
            .map(|(ns, id)| {
                let networks = networks.clone();
                s.spawn(move || networks.setup(id, &ns.path, &bridge()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let sandboxes: Vec<Attached> = ids
        .iter()
        .zip(&statuses)
        .map(|(id, status)| attached(&net, id, status))
        .collect();
    let mut addresses: Vec<&String> = statuses.iter().map(|s| &s.addresses[0]).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 4);
    std::thread::scope(|s| {
        for (ns, id) in namespaces.iter().zip(&ids) {
            let networks = networks.clone();
            s.spawn(move || networks.teardown(id, Some(&ns.path)).unwrap());
        }
    });
    for sandbox in &sandboxes {
        assert_nothing_left(&net, &networks, sandbox);
    }
}

#[test]
fn networks_are_created_inspected_and_removed() {
    let net = TestNet::new();
    let networks = net.open();
    let default = networks.inspect(&net.config.default_network).unwrap();
    assert!(default.default);
    assert_eq!(default.plugins, ["bridge", "portmap"]);
    assert_eq!(
        default.subnets,
        std::slice::from_ref(&net.config.default_subnet)
    );

    let name = format!("hkt-extra-{}", suffix());
    let bridge = format!("hkx{}", &suffix()[..8]);
    let extra = TestNet::new(); // for a second free subnet (never opened)
    let request = NewNetwork {
        name: name.clone(),
        subnet: Some(extra.config.default_subnet.clone()),
        gateway: Some(format!("{}254", extra.subnet_prefix)),
        bridge: Some(bridge.clone()),
    };
    let created = networks.create(&request).unwrap();
    let _cleanup = BridgeCleanup(bridge.clone());
    assert_eq!(created.gateways, [format!("{}254", extra.subnet_prefix)]);
    assert!(
        net.config
            .conf_dir
            .join(format!("{name}.conflist"))
            .exists()
    );
    assert_eq!(
        networks.create(&request).unwrap_err().kind,
        ErrorKind::Conflict
    );
    // A file of that name that does not load is never overwritten.
    let squatter = format!("hkt-squat-{}", suffix());
    std::fs::write(
        net.config.conf_dir.join(format!("{squatter}.conflist")),
        "{",
    )
    .unwrap();
    let err = networks
        .create(&NewNetwork {
            name: squatter.clone(),
            ..NewNetwork::default()
        })
        .unwrap_err();
    assert!(
        err.message.contains("already exists") && err.message.contains("not valid JSON"),
        "{}",
        err.message
    );
    assert_eq!(
        std::fs::read_to_string(net.config.conf_dir.join(format!("{squatter}.conflist"))).unwrap(),
        "{"
    );
    let names: Vec<String> = networks
        .list()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert!(
        names.contains(&name) && names.contains(&net.config.default_network),
        "{names:?}"
    );

    let ns = Netns::new();
    let id = sandbox_id();
    let status = networks
        .setup(
            &id,
            &ns.path,
            &NetworkConfig {
                mode: name.clone(),
                ..NetworkConfig::default()
            },
        )
        .unwrap();
    assert_eq!(status.network, name);
    assert_eq!(status.gateway, format!("{}254", extra.subnet_prefix));
    let inspected = networks.inspect(&name).unwrap();
    assert_eq!(inspected.attached.len(), 1);
    assert_eq!(inspected.attached[0].sandbox_id, id);
    assert_eq!(inspected.attached[0].addresses, status.addresses);

    let err = networks.remove(&name).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains(&id[..12]), "{}", err.message);
    assert_eq!(
        networks
            .remove(&net.config.default_network)
            .unwrap_err()
            .kind,
        ErrorKind::Conflict
    );

    networks.teardown(&id, Some(&ns.path)).unwrap();
    networks.remove(&name).unwrap();
    assert!(
        !net.config
            .conf_dir
            .join(format!("{name}.conflist"))
            .exists()
    );
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&bridge)
            .exists(),
        "bridge removed"
    );
    assert!(!iptables_save().contains(&bridge), "guard rule removed");
    assert_eq!(
        networks.inspect(&name).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

struct BridgeCleanup(String);

impl Drop for BridgeCleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
        remove_rules_mentioning(&[&self.0]);
    }
}

#[test]
fn errors_name_the_network_and_plugin_and_leave_nothing() {
    let net = TestNet::new();
    let networks = net.open();
    let ns = Netns::new();
    let id = sandbox_id();

    // A list whose second plugin does not exist: the bridge plugin's work is undone.
    let other_bridge = format!("hkb{}", &suffix()[..8]);
    let _cleanup = BridgeCleanup(other_bridge.clone());
    let broken = format!("hkt-missing-{}", suffix());
    let text = format!(
        r#"{{"cniVersion":"1.0.0","name":"{broken}","plugins":[
            {{"type":"bridge","bridge":"{}","ipam":{{"type":"host-local","ranges":[[{{"subnet":"{}"}}]],"dataDir":"{}"}}}},
            {{"type":"no-such-plugin"}}]}}"#,
        other_bridge,
        net.config.default_subnet,
        net.config.state_dir.join("ipam").display()
    );
    std::fs::write(net.config.conf_dir.join(format!("{broken}.conflist")), text).unwrap();
    let request = NetworkConfig {
        mode: broken.clone(),
        ..NetworkConfig::default()
    };
    let err = networks.setup(&id, &ns.path, &request).unwrap_err();
    assert!(
        err.message.contains(&format!(
            "network \"{broken}\": CNI plugin \"no-such-plugin\" not found"
        )),
        "{}",
        err.message
    );
    assert_eq!(
        ns.links(),
        ["lo"],
        "the bridge plugin's veth was removed again"
    );
    assert_eq!(networks.status(&id).unwrap(), None);
    assert!(
        std::fs::read_dir(net.config.state_dir.join("ipam").join(&broken))
            .map(|d| d
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count())
            .unwrap_or(0)
            == 0
    );

    // A plugin's own error object: host-local refuses a subnet that is not one.
    let bad_ipam = format!("hkt-badipam-{}", suffix());
    let text = format!(
        r#"{{"cniVersion":"1.0.0","name":"{bad_ipam}","plugins":[
            {{"type":"bridge","bridge":"{}","ipam":{{"type":"host-local","ranges":[[{{"subnet":"10.0.0.0/99"}}]],"dataDir":"{}"}}}}]}}"#,
        other_bridge,
        net.config.state_dir.join("ipam").display()
    );
    std::fs::write(
        net.config.conf_dir.join(format!("{bad_ipam}.conflist")),
        text,
    )
    .unwrap();
    let err = networks
        .setup(
            &id,
            &ns.path,
            &NetworkConfig {
                mode: bad_ipam.clone(),
                ..NetworkConfig::default()
            },
        )
        .unwrap_err();
    assert!(
        err.message.contains(&format!(
            "network \"{bad_ipam}\": CNI plugin \"bridge\" failed ADD"
        )),
        "{}",
        err.message
    );
    assert_eq!(ns.links(), ["lo"]);

    // An unreadable file is skipped at open and named when its network is asked for.
    std::fs::write(
        net.config.conf_dir.join("zz-garbage.conflist"),
        "{ not json",
    )
    .unwrap();
    let reopened = net.open();
    assert!(
        reopened
            .load_errors()
            .iter()
            .any(|e| e.contains("zz-garbage.conflist")),
        "{:?}",
        reopened.load_errors()
    );
    let err = reopened
        .setup(
            &id,
            &ns.path,
            &NetworkConfig {
                mode: "garbage".into(),
                ..NetworkConfig::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);
    assert!(
        err.message.contains("zz-garbage.conflist"),
        "{}",
        err.message
    );
    assert_no_trace(&net, &networks, &id);

    // Plugins gone after the ADD: teardown fails naming the plugin and keeps the cache for a retry. (With a
    // published port, so portmap has work to do and runs.)
    let published = NetworkConfig {
        ports: vec![PortMapping::parse(&format!("127.0.0.1:{}:80", free_port())).unwrap()],
        ..NetworkConfig::default()
    };
    let status = networks.setup(&id, &ns.path, &published).unwrap();
    let mut without_plugins = net.config.clone();
    without_plugins.plugin_dirs = vec![net.dir.path().join("no-plugins")];
    without_plugins.builtin_bridge = false; // else the built-in bridge needs no binary
    let crippled = Networks::open(without_plugins).unwrap();
    let err = crippled.teardown(&id, Some(&ns.path)).unwrap_err();
    assert!(
        err.message.contains("2 plugins failed") && err.message.contains("\"portmap\" not found"),
        "{}",
        err.message
    );
    assert_eq!(networks.status(&id).unwrap(), Some(status.clone()));
    let sandbox = attached(&net, &id, &status);
    networks.teardown(&id, Some(&ns.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox);
}

#[test]
fn portmap_runs_only_for_published_ports() {
    // A plugin directory without portmap: a sandbox without ports never needs it, one with ports does.
    let net = TestNet::new();
    let plugins = net.dir.path().join("plugins-without-portmap");
    std::fs::create_dir_all(&plugins).unwrap();
    for ty in ["bridge", "host-local"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{ty}"), plugins.join(ty)).unwrap();
    }
    let mut config = net.config.clone();
    config.plugin_dirs = vec![plugins];
    let networks = Networks::open(config).unwrap();
    let ns = Netns::new();
    let id = sandbox_id();
    let status = networks
        .setup(&id, &ns.path, &NetworkConfig::default())
        .unwrap();
    networks.check(&id, &ns.path).unwrap();
    let sandbox = attached(&net, &id, &status);
    networks.teardown(&id, Some(&ns.path)).unwrap();
    assert_nothing_left(&net, &networks, &sandbox);

    let published = NetworkConfig {
        ports: vec![PortMapping::parse(&format!("127.0.0.1:{}:80", free_port())).unwrap()],
        ..NetworkConfig::default()
    };
    let err = networks.setup(&id, &ns.path, &published).unwrap_err();
    assert!(
        err.message.contains("\"portmap\" not found"),
        "{}",
        err.message
    );
    assert_no_trace(&net, &networks, &id);
}

#[test]
fn check_finds_a_broken_attachment() {
    let net = TestNet::new();
    let networks = net.open();
    let ns = Netns::new();
    let id = sandbox_id();
    networks.setup(&id, &ns.path, &bridge()).unwrap();
    networks.check(&id, &ns.path).unwrap();
    ns.exec(&["ip", "link", "del", "eth0"]);
    let err = networks.check(&id, &ns.path).unwrap_err();
    assert!(
        err.message.contains(&format!(
            "network \"{}\": CNI plugin \"bridge\" failed CHECK",
            net.config.default_network
        )),
        "{}",
        err.message
    );
    networks.teardown(&id, Some(&ns.path)).unwrap();
    assert_eq!(
        networks.check(&id, &ns.path).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn name_files_have_the_sandbox_s_address_and_the_request_s_entries() {
    let net = TestNet::new();
    let networks = net.open();
    let ns = Netns::new();
    let id = sandbox_id();
    let request = NetworkConfig {
        dns: vec!["192.0.2.53".into()],
        dns_search: vec!["example.test".into()],
        extra_hosts: vec!["db:192.0.2.10".into(), "gw:host-gateway".into()],
        ..NetworkConfig::default()
    };
    let status = networks.setup(&id, &ns.path, &request).unwrap();
    let files = networks
        .write_files(&id, "web-1", &request, &status)
        .unwrap();
    let hosts = std::fs::read_to_string(&files.hosts).unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
    assert!(
        hosts.contains(&format!("{}\tweb-1\n", ip_of(&status))),
        "{hosts}"
    );
    assert!(
        hosts.contains("192.0.2.10\tdb\n") && hosts.contains(&format!("{}\tgw\n", status.gateway)),
        "{hosts}"
    );
    assert_eq!(
        std::fs::read_to_string(&files.resolv_conf).unwrap(),
        "nameserver 192.0.2.53\nsearch example.test\n"
    );
    assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web-1\n");
    networks.teardown(&id, Some(&ns.path)).unwrap();
    assert!(!files.dir.exists());
}

#[test]
fn a_cni_0_4_0_list_attaches_checks_and_detaches() {
    let net = TestNet::new();
    let networks = net.open();
    let spare = TestNet::new(); // for a second free subnet and bridge (never opened)
    let name = format!("hkt-v040-{}", suffix());
    let bridge = spare.config.default_bridge.clone();
    let text = format!(
        r#"{{"cniVersion":"0.4.0","name":"{name}","plugins":[
            {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":true,
              "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{}"}}]],"dataDir":"{}"}}}},
            {{"type":"portmap","capabilities":{{"portMappings":true}}}},
            {{"type":"firewall"}}]}}"#,
        spare.config.default_subnet,
        net.config.state_dir.join("ipam").display()
    );
    std::fs::write(net.config.conf_dir.join(format!("{name}.conflist")), text).unwrap();
    let ns = Netns::new();
    let id = sandbox_id();
    let port = free_port();
    let request = NetworkConfig {
        mode: name.clone(),
        ports: vec![PortMapping::parse(&format!("127.0.0.1:{port}:80")).unwrap()],
        ..NetworkConfig::default()
    };
    let status = networks.setup(&id, &ns.path, &request).unwrap();
    assert_eq!(status.network, name);
    assert!(
        status.addresses[0].starts_with(&spare.subnet_prefix),
        "{status:?}"
    );
    assert_eq!(status.gateway, format!("{}1", spare.subnet_prefix));
    networks.check(&id, &ns.path).unwrap();
    serve_in(&ns.path, 80, "v0.4.0", 1);
    assert_eq!(read_from(([127, 0, 0, 1], port).into()).unwrap(), "v0.4.0");
    let sandbox = attached(&net, &id, &status);
    networks.teardown(&id, Some(&ns.path)).unwrap();
    assert_no_trace(&net, &networks, &id);
    let save = iptables_save();
    assert!(!save.contains(&format!("{}/32", sandbox.ip)), "{save}");
}
