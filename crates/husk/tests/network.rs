//! Networking through CNI: sandboxes on the daemon's own bridge, published ports, DNS files, network modes,
//! cleanup. Traffic stays on loopback and on the test daemon's own bridge.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, IMAGE};

fn ip_of(d: &Daemon, name: &str) -> String {
    let v = d.inspect(name);
    let addr = v["NetworkSettings"]["addresses"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no address: {v}"))
        .to_string();
    addr.split('/').next().unwrap().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn iptables_dump() -> String {
    let mut all = String::new();
    for table in ["nat", "filter"] {
        if let Ok(o) = Command::new("iptables-save").args(["-t", table]).output() {
            all.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    all
}

#[test]
fn sandboxes_get_addresses_and_reach_each_other_over_the_bridge() {
    let d = Daemon::start(&[]);
    d.husk(&["sandbox", "create", "--name", "a"]).ok();
    d.husk(&["sandbox", "create", "--name", "b"]).ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "web",
        "--sandbox",
        "a",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    let web_ip = ip_of(&d, "web");
    assert!(
        web_ip.starts_with(d.subnet.rsplit_once('.').unwrap().0),
        "{web_ip} in {}",
        d.subnet
    );
    let sb = d.inspect("a");
    assert_eq!(sb["NetworkSettings"]["interface"], "eth0");
    assert!(!sb["NetworkSettings"]["mac"].as_str().unwrap().is_empty());
    assert!(
        !sb["NetworkSettings"]["gateway"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let page = d.husk(&[
        "run",
        "--rm",
        "--sandbox",
        "b",
        IMAGE,
        "wget",
        "-qO-",
        &format!("http://{web_ip}:8080/"),
    ]);
    assert_eq!(page.ok(), "hello from husk");
    // The sandbox's own name files.
    let hosts = d.husk(&["exec", "web", "cat", "/etc/hosts"]).ok();
    assert!(
        hosts.contains(&web_ip) && hosts.contains("localhost"),
        "{hosts}"
    );
}

#[test]
fn published_ports_answer_on_the_host() {
    let d = Daemon::start(&[]);
    let port = free_port();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    assert!(
        Daemon::eventually(Duration::from_secs(5), || http_get(port)
            .is_some_and(|b| b.contains("hello from husk"))),
        "port {port} answers"
    );
    let ps = d.husk(&["ps"]).ok();
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");
    // All addresses (no IP given) also answer on loopback.
    let port2 = free_port();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "web2",
        "-p",
        &format!("{port2}:8080"),
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    assert!(
        Daemon::eventually(Duration::from_secs(5), || http_get(port2).is_some()),
        "port {port2} answers"
    );
    // A port already taken fails clearly and leaves nothing.
    let r = d.husk(&[
        "run",
        "-d",
        "--name",
        "clash",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(&port.to_string()), "{}", r.stderr);
    assert_eq!(d.husk(&["ps", "-aq", "--filter", "name=clash"]).ok(), "");
    // -P publishes what the image exposes on a host port husk picks.
    d.husk(&[
        "run", "-d", "--name", "auto", "-P", IMAGE, "httpd", "-f", "-p", "8080", "-h", "/www",
    ])
    .ok();
    let bindings = d.inspect("auto")["HostConfig"]["PortBindings"].clone();
    let host_port = bindings[0]["host_port"].as_u64().expect("a picked port") as u16;
    assert!(host_port >= 32768, "{bindings}");
    assert!(Daemon::eventually(Duration::from_secs(5), || http_get(
        host_port
    )
    .is_some()));
    // -p without a host port picks one too, as Docker's does; `port` says which.
    d.husk(&[
        "run",
        "-d",
        "--name",
        "picked",
        "-p",
        "127.0.0.1::8080",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    let published = d.husk(&["port", "picked", "8080"]).ok();
    let (ip, picked) = published.rsplit_once(':').unwrap();
    let picked: u16 = picked.parse().unwrap();
    assert!(
        ip == "127.0.0.1" && picked >= 32768 && picked != host_port,
        "{published}"
    );
    assert!(Daemon::eventually(Duration::from_secs(5), || http_get(
        picked
    )
    .is_some()));
}

#[test]
fn network_modes_none_and_host() {
    let d = Daemon::start(&[]);
    let links = d
        .husk(&[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "ip",
            "-o",
            "link",
        ])
        .ok();
    let names: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, vec!["lo"], "{links}");
    assert!(
        links.contains("UP") || links.contains("LOOPBACK,UP"),
        "lo is up: {links}"
    );
    let host_links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let host_names: Vec<String> = host_links
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap().to_string())
        })
        .collect();
    let inside = d
        .husk(&[
            "run",
            "--rm",
            "--network",
            "host",
            IMAGE,
            "ip",
            "-o",
            "link",
        ])
        .ok();
    // Interfaces of other tests come and go meanwhile: check those present before and after.
    let after = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for n in host_names
        .iter()
        .filter(|n| !n.starts_with("veth") && after.contains(&format!(": {n}")))
    {
        assert!(
            inside.contains(n.as_str()),
            "host interface {n} visible in host mode: {inside}"
        );
    }
    // Standalone containers get their own network too.
    d.husk(&[
        "run",
        "-d",
        "--mode",
        "standalone",
        "--name",
        "solo",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(!ip_of(&d, "solo").is_empty());
}

#[test]
fn dns_options_reach_the_name_files() {
    let d = Daemon::start(&[]);
    let out = d
        .husk(&[
            "run",
            "--rm",
            "--hostname",
            "box",
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "example.test",
            "--add-host",
            "db:192.0.2.7",
            IMAGE,
            "sh",
            "-c",
            "cat /etc/resolv.conf /etc/hosts /etc/hostname",
        ])
        .ok();
    assert!(out.contains("nameserver 192.0.2.53"), "{out}");
    assert!(out.contains("search example.test"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("192.0.2.7") && l.ends_with("db")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.ends_with("box")), "{out}");
    let bad = d.husk(&["run", "--rm", "--dns", "not-an-ip", IMAGE, "true"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.to_lowercase().contains("dns"), "{}", bad.stderr);
}

#[test]
fn networks_can_be_created_used_and_removed() {
    let d = Daemon::start(&[]);
    let list = d.husk(&["network", "ls", "-q"]).ok();
    assert!(
        list.lines().any(|l| l == "husk"),
        "the default network exists: {list}"
    );
    let bridge = format!("{}x", &d.bridge[..d.bridge.len() - 1]);
    d.husk(&["network", "create", "--bridge", &bridge, "backend"])
        .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "backend",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let info: serde_json::Value =
        serde_json::from_str(&d.husk(&["network", "inspect", "backend"]).ok()).unwrap();
    assert_eq!(info[0]["attached"].as_array().unwrap().len(), 1);
    let r = d.husk(&["network", "rm", "backend"]);
    assert_ne!(r.code, 0, "in use");
    d.husk(&["rm", "-f", "c"]).ok();
    d.husk(&["network", "rm", "backend"]).ok();
    assert!(!d.husk(&["network", "ls", "-q"]).ok().contains("backend"));
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
}

#[test]
fn deleting_releases_addresses_veths_and_rules_even_across_a_restart() {
    let mut d = Daemon::start(&[]);
    let port = free_port();
    let sb = d
        .husk(&[
            "sandbox",
            "create",
            "--name",
            "pod",
            "-p",
            &format!("127.0.0.1:{port}:8080"),
        ])
        .ok();
    d.husk(&[
        "run",
        "-d",
        "--sandbox",
        "pod",
        "--name",
        "web",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--mode",
        "standalone",
        "--name",
        "solo",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let solo = d.inspect("solo")["Id"].as_str().unwrap().to_string();
    let ip = ip_of(&d, "web");
    assert!(iptables_dump().contains(&ip), "rules exist while running");
    d.kill9();
    d.spawn(&[]);
    assert_eq!(
        ip_of(&d, "web"),
        ip,
        "the address survives a daemon restart"
    );
    assert!(Daemon::eventually(Duration::from_secs(5), || http_get(
        port
    )
    .is_some()));
    d.husk(&["sandbox", "rm", "-f", "pod"]).ok();
    d.husk(&["rm", "-f", "solo"]).ok();
    assert!(
        Daemon::eventually(Duration::from_secs(5), || d.leftovers().is_empty()),
        "{:?}",
        d.leftovers()
    );
    let rules = iptables_dump();
    for needle in [&sb[..12], &solo[..12], &ip] {
        assert!(!rules.contains(needle), "no rule mentions {needle}");
    }
}

/// The pool entries (`RUN_ROOT/pool/pool-*`) of a daemon.
fn pool_entries(d: &Daemon) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(d.run_root.join("pool"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

/// Who host-local gave `ip` to (its allocation file holds the CNI container ID).
fn ip_owner(d: &Daemon, ip: &str) -> String {
    let ipam = d.root.join("net").join("ipam");
    for net in std::fs::read_dir(&ipam).unwrap().flatten() {
        if let Ok(owner) = std::fs::read_to_string(net.path().join(ip)) {
            return owner.lines().next().unwrap_or_default().to_string();
        }
    }
    panic!("no allocation of {ip} under {}", ipam.display());
}

#[test]
fn a_sandbox_pool_serves_the_default_network_and_leaves_nothing_behind() {
    let mut d = Daemon::start_with(&[], "sandbox_pool = 2\n", true);
    assert!(
        Daemon::eventually(Duration::from_secs(20), || pool_entries(&d).len() == 2),
        "the pool fills: {:?}\n{}",
        pool_entries(&d),
        d.log()
    );
    let ready = pool_entries(&d);

    // A sandbox on the default network takes a ready namespace: its address is the one made for that entry.
    d.husk(&["sandbox", "create", "--name", "a"]).ok();
    d.husk(&[
        "run",
        "-d",
        "--sandbox",
        "a",
        "--name",
        "web",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    let web_ip = ip_of(&d, "web");
    let owner = ip_owner(&d, &web_ip);
    assert!(
        ready.contains(&owner),
        "{web_ip} was made for pool entry {owner}, one of {ready:?}"
    );
    assert!(
        !pool_entries(&d).contains(&owner),
        "a taken entry leaves the pool"
    );
    assert!(
        Daemon::eventually(Duration::from_secs(20), || pool_entries(&d).len() == 2),
        "the pool refills: {:?}",
        pool_entries(&d)
    );

    // It is a working network: another sandbox (also from the pool) reaches it over the bridge.
    d.husk(&["sandbox", "create", "--name", "b"]).ok();
    let page = d.husk(&[
        "run",
        "--rm",
        "--sandbox",
        "b",
        IMAGE,
        "wget",
        "-qO-",
        &format!("http://{web_ip}:8080/"),
    ]);
    assert_eq!(page.ok(), "hello from husk");

    // Published ports need their own ADD (portmap): such a sandbox never takes from the pool.
    let port = free_port();
    d.husk(&[
        "sandbox",
        "create",
        "--name",
        "p",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--sandbox",
        "p",
        "--name",
        "pweb",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ])
    .ok();
    let p_id = d.inspect("p")["Id"].as_str().unwrap().to_string();
    assert_eq!(ip_owner(&d, &ip_of(&d, "pweb")), p_id);
    assert!(Daemon::eventually(Duration::from_secs(5), || http_get(
        port
    )
    .is_some()));

    // Removing a pooled sandbox releases the address it adopted.
    d.husk(&["sandbox", "rm", "-f", "a"]).ok();
    let released = |ip: &str| {
        std::fs::read_dir(d.root.join("net").join("ipam"))
            .unwrap()
            .flatten()
            .all(|net| !net.path().join(ip).exists())
    };
    assert!(Daemon::eventually(Duration::from_secs(5), || released(
        &web_ip
    )));

    // A crash leaves ready entries behind; the next start removes them and fills the pool afresh.
    let pweb_ip = ip_of(&d, "pweb");
    let before_crash = pool_entries(&d);
    assert_eq!(before_crash.len(), 2, "{before_crash:?}");
    d.kill9();
    d.spawn(&[]);
    assert!(
        Daemon::eventually(Duration::from_secs(20), || {
            let now = pool_entries(&d);
            now.len() == 2 && now.iter().all(|id| !before_crash.contains(id))
        }),
        "old entries replaced: {:?} then {:?}",
        before_crash,
        pool_entries(&d)
    );
    for id in &before_crash {
        let ipam = d.root.join("net").join("ipam");
        for net in std::fs::read_dir(&ipam).unwrap().flatten() {
            for e in std::fs::read_dir(net.path()).unwrap().flatten() {
                let owner = std::fs::read_to_string(e.path()).unwrap_or_default();
                assert!(
                    !owner.starts_with(id.as_str()),
                    "{} still allocated to {id}",
                    e.path().display()
                );
            }
        }
    }
    assert_eq!(
        ip_of(&d, "pweb"),
        pweb_ip,
        "the other sandboxes keep their addresses"
    );
    assert_eq!(ip_owner(&d, &pweb_ip), p_id);

    // A clean stop empties the pool: nothing of it is left on the host.
    d.husk(&["sandbox", "rm", "-f", "b"]).ok();
    d.husk(&["sandbox", "rm", "-f", "p"]).ok();
    d.terminate();
    assert!(pool_entries(&d).is_empty(), "{:?}", pool_entries(&d));
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}
