//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for a sandbox (or a standalone container), bind-mounted
//! over the image's files so every container of a sandbox sees the same names.

use std::path::{Path, PathBuf};

use husk_core::{Error, NetworkConfig, Result};

/// The three files, by their path inside containers, with their host paths in `dir`.
pub fn etc_mounts(dir: &Path) -> Vec<(String, PathBuf)> {
    vec![
        ("/etc/hostname".to_string(), dir.join("hostname")),
        ("/etc/hosts".to_string(), dir.join("hosts")),
        ("/etc/resolv.conf".to_string(), dir.join("resolv.conf")),
    ]
}

/// The host's resolver configuration without loopback name servers (which would point into the sandbox).
fn host_resolv_conf() -> String {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            !(f.next() == Some("nameserver")
                && f.next()
                    .is_some_and(|ip| ip.starts_with("127.") || ip == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The `hosts` file: loopback names, the sandbox's own address (if any) with its hostname, and extra entries
/// given as `NAME:IP`.
pub fn hosts_file(hostname: &str, address: Option<&str>, extra: &[String]) -> Result<String> {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match address {
        Some(ip) => text.push_str(&format!("{ip}\t{hostname}\n")),
        None => text.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    for entry in extra {
        let (name, ip) = entry.split_once(':').ok_or_else(|| {
            Error::invalid(
                "add_host",
                format!("invalid host entry {entry:?}: use NAME:IP"),
            )
        })?;
        if ip.parse::<std::net::IpAddr>().is_err() || name.is_empty() {
            return Err(Error::invalid(
                "add_host",
                format!("invalid host entry {entry:?}: use NAME:IP"),
            ));
        }
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(text)
}

/// Writes the three files into `dir`.
pub fn write(
    dir: &Path,
    hostname: &str,
    address: Option<&str>,
    network: &NetworkConfig,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let resolv = if network.dns.is_empty() && network.dns_search.is_empty() {
        host_resolv_conf()
    } else {
        let mut t = String::new();
        for ns in &network.dns {
            if ns.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::invalid(
                    "dns",
                    format!("invalid DNS server {ns:?}: not an IP address"),
                ));
            }
            t.push_str(&format!("nameserver {ns}\n"));
        }
        if !network.dns_search.is_empty() {
            t.push_str(&format!("search {}\n", network.dns_search.join(" ")));
        }
        t
    };
    let files = [
        ("hostname", format!("{hostname}\n")),
        (
            "hosts",
            hosts_file(hostname, address, &network.extra_hosts)?,
        ),
        ("resolv.conf", resolv),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_loopback_self_and_extras() {
        let t = hosts_file("box", Some("10.0.0.5"), &["db:10.0.0.9".into()]).unwrap();
        assert!(t.contains("127.0.0.1\tlocalhost\n"));
        assert!(t.contains("10.0.0.5\tbox\n"));
        assert!(t.contains("10.0.0.9\tdb\n"));
        assert!(hosts_file("box", None, &["nonsense".into()]).is_err());
        assert!(hosts_file("box", None, &["x:not-an-ip".into()]).is_err());
    }

    #[test]
    fn writes_all_three() {
        let dir = tempfile::tempdir().unwrap();
        let net = NetworkConfig {
            dns: vec!["192.0.2.1".into()],
            dns_search: vec!["example.test".into()],
            ..Default::default()
        };
        write(dir.path(), "box", None, &net).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "box\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap(),
            "nameserver 192.0.2.1\nsearch example.test\n"
        );
        let bad = NetworkConfig {
            dns: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(
            write(dir.path(), "box", None, &bad)
                .unwrap_err()
                .field
                .as_deref(),
            Some("dns")
        );
    }
}
