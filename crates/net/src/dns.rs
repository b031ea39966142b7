//! The name files of a sandbox: `hosts`, `resolv.conf` and `hostname`, written into a per-sandbox directory
//! that the drivers bind-mount over the containers' `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
//!
//! `resolv.conf` follows Docker: the `--dns` / `--dns-search` values when given, else the host's; the host's
//! loopback nameservers (127.0.0.0/8, `::1`: a local resolver such as systemd-resolved's 127.0.0.53) are dropped
//! because they mean the sandbox itself, not the host; IPv6 nameservers are dropped when the sandbox has no IPv6
//! address. When nothing is left, husk does not fall back to a public resolver: a bridge sandbox gets its
//! gateway (the host's side of the bridge, where a resolver such as dnsmasq can listen; without one, lookups
//! fail at once instead of timing out), and a sandbox without a network gets no nameserver line at all.
//! In `host` mode the host's nameservers are kept as they are, loopback included, since the sandbox shares the
//! host's localhost.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use husk_core::{Context, Error, NetworkConfig, Result};

/// The paths of a sandbox's name files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxFiles {
    /// The directory holding the three files.
    pub dir: PathBuf,
    /// For `/etc/hosts`.
    pub hosts: PathBuf,
    /// For `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// For `/etc/hostname`.
    pub hostname: PathBuf,
}

impl SandboxFiles {
    /// The files in `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        SandboxFiles {
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            hostname: dir.join("hostname"),
            dir,
        }
    }
}

/// What the sandbox's files are made from, besides the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NameContext<'a> {
    /// The sandbox's hostname.
    pub hostname: &'a str,
    /// Its addresses on its network (empty for `none` and `host`).
    pub addresses: Vec<IpAddr>,
    /// Its gateway, when on a network.
    pub gateway: Option<IpAddr>,
    /// Whether it shares the host's network namespace.
    pub host_mode: bool,
}

/// A parsed `resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Resolv {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Resolv {
    /// Parses the lines husk cares about; anything else (comments, `sortlist` ...) is left out.
    pub fn parse(text: &str) -> Resolv {
        let mut resolv = Resolv::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    // A zone index (fe80::1%eth0) names a host interface: meaningless in a sandbox.
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        resolv.nameservers.push(ip);
                    }
                }
                // `domain` and `search` override each other; the last one wins.
                Some("search") | Some("domain") => {
                    resolv.search = words.map(str::to_string).collect()
                }
                Some("options") => resolv.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        resolv
    }
}

/// Checks the DNS fields of a request before anything is set up.
pub(crate) fn validate(net: &NetworkConfig) -> Result<()> {
    for dns in &net.dns {
        dns.parse::<IpAddr>().map_err(|_| {
            Error::invalid(
                "dns",
                format!("invalid DNS server {dns:?}: expected an IP address"),
            )
        })?;
    }
    for domain in &net.dns_search {
        if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "dns_search",
                format!("invalid DNS search domain {domain:?}"),
            ));
        }
    }
    for option in &net.dns_options {
        if option.is_empty() || option.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                "dns_options",
                format!("invalid resolver option {option:?}"),
            ));
        }
    }
    parse_extra_hosts(&net.extra_hosts, Some(IpAddr::from([0, 0, 0, 0]))).map(|_| ())
}

/// Parses `--add-host NAME:IP` entries; `host-gateway` as the IP means the sandbox's gateway (the host as seen
/// from the sandbox).
pub(crate) fn parse_extra_hosts(
    entries: &[String],
    gateway: Option<IpAddr>,
) -> Result<Vec<(String, IpAddr)>> {
    entries
        .iter()
        .map(|entry| {
            let bad = |why: &str| {
                Error::invalid(
                    "extra_hosts",
                    format!("invalid extra host {entry:?}: {why}"),
                )
            };
            let (name, ip) = entry
                .split_once(':')
                .ok_or_else(|| bad("expected NAME:IP"))?;
            if !valid_host_name(name) {
                return Err(bad("the name is empty or has spaces"));
            }
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let ip = if ip == "host-gateway" {
                gateway.ok_or_else(|| bad("host-gateway needs a network with a gateway"))?
            } else {
                ip.parse().map_err(|_| bad("not an IP address"))?
            };
            Ok((name.to_string(), ip))
        })
        .collect()
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
}

/// The `hosts` file of a sandbox with its own network: localhost lines, the `--add-host` entries, then the
/// sandbox's own addresses with its hostname.
pub(crate) fn hosts_content(
    ctx: &NameContext<'_>,
    extra: &[(String, IpAddr)],
    host_hosts: &str,
) -> String {
    let mut out = String::new();
    if ctx.host_mode {
        out.push_str(host_hosts);
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    } else {
        out.push_str(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
    }
    for (name, ip) in extra {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    for ip in &ctx.addresses {
        out.push_str(&format!("{ip}\t{}\n", ctx.hostname));
    }
    out
}

/// The `resolv.conf` of a sandbox (see the module documentation for the rules).
pub(crate) fn resolv_conf_content(
    ctx: &NameContext<'_>,
    net: &NetworkConfig,
    host: &Resolv,
) -> String {
    let has_v6 = ctx.addresses.iter().any(IpAddr::is_ipv6);
    let mut nameservers: Vec<IpAddr> = if net.dns.is_empty() {
        host.nameservers
            .iter()
            .copied()
            .filter(|ip| ctx.host_mode || (!ip.is_loopback() && (has_v6 || ip.is_ipv4())))
            .collect()
    } else {
        net.dns.iter().filter_map(|d| d.parse().ok()).collect()
    };
    let mut out = String::new();
    if nameservers.is_empty() {
        match ctx.gateway {
            Some(gateway) => {
                out.push_str("# The host has no nameserver a sandbox can reach; using the gateway. Set one with --dns.\n");
                nameservers.push(gateway);
            }
            None => {
                out.push_str("# No nameserver: the sandbox has no network. Set one with --dns.\n")
            }
        }
    }
    for ip in nameservers {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    let search = if net.dns_search.is_empty() {
        &host.search
    } else {
        &net.dns_search
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    let options = if net.dns_options.is_empty() {
        &host.options
    } else {
        &net.dns_options
    };
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Reads the host's resolver configuration from `path`; when it lists only loopback nameservers (a local
/// stub resolver) and systemd-resolved's upstream list exists, that list is used instead, as Docker does.
pub(crate) fn host_resolv(path: &Path) -> Result<Resolv> {
    let read = |p: &Path| match std::fs::read_to_string(p) {
        Ok(text) => Ok(Some(Resolv::parse(&text))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    };
    let resolv = read(path)?.unwrap_or_default();
    if resolv.nameservers.iter().all(IpAddr::is_loopback)
        && let Some(upstream) = read(Path::new("/run/systemd/resolve/resolv.conf"))?
        && !upstream.nameservers.is_empty()
    {
        return Ok(Resolv {
            options: resolv.options,
            ..upstream
        });
    }
    Ok(resolv)
}

/// Writes the three files into `files.dir` (created if missing). Each file is written to a temporary name and
/// renamed, so a reader never sees half a file.
pub(crate) fn write(files: &SandboxFiles, hosts: &str, resolv: &str, hostname: &str) -> Result<()> {
    std::fs::create_dir_all(&files.dir).context(format!("create {}", files.dir.display()))?;
    for (path, text) in [
        (&files.hosts, hosts),
        (&files.resolv_conf, resolv),
        (&files.hostname, &format!("{hostname}\n")),
    ] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .context(format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Checks a hostname for the files: 1 to 253 characters, no whitespace or control characters.
pub(crate) fn validate_hostname(hostname: &str) -> Result<()> {
    if valid_host_name(hostname) {
        Ok(())
    } else {
        Err(Error::invalid(
            "hostname",
            format!("invalid hostname {hostname:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn bridge_ctx() -> NameContext<'static> {
        NameContext {
            hostname: "web",
            addresses: vec![ip("10.88.0.5")],
            gateway: Some(ip("10.88.0.1")),
            host_mode: false,
        }
    }

    #[test]
    fn hosts_has_localhost_extra_hosts_and_the_sandbox() {
        let extra = parse_extra_hosts(
            &[
                "db:10.0.0.9".into(),
                "v6:[fd00::2]".into(),
                "gw:host-gateway".into(),
            ],
            Some(ip("10.88.0.1")),
        )
        .unwrap();
        let text = hosts_content(&bridge_ctx(), &extra, "");
        assert!(
            text.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        );
        assert!(text.contains("10.0.0.9\tdb\n"));
        assert!(text.contains("fd00::2\tv6\n"));
        assert!(text.contains("10.88.0.1\tgw\n"));
        assert!(text.ends_with("10.88.0.5\tweb\n"));
    }

    #[test]
    fn host_mode_hosts_starts_from_the_host_s() {
        let ctx = NameContext {
            hostname: "h",
            host_mode: true,
            ..NameContext::default()
        };
        let text = hosts_content(
            &ctx,
            &[("x".into(), ip("1.2.3.4"))],
            "127.0.0.1 localhost\n10.0.0.1 myhost",
        );
        assert_eq!(text, "127.0.0.1 localhost\n10.0.0.1 myhost\n1.2.3.4\tx\n");
    }

    #[test]
    fn bad_extra_hosts_and_dns_are_refused() {
        for bad in ["noip", ":1.2.3.4", "a b:1.2.3.4", "x:999.1.1.1"] {
            assert!(
                parse_extra_hosts(&[bad.to_string()], None).is_err(),
                "{bad}"
            );
        }
        assert!(parse_extra_hosts(&["gw:host-gateway".into()], None).is_err());
        let net = NetworkConfig {
            dns: vec!["dns.example".into()],
            ..NetworkConfig::default()
        };
        assert_eq!(validate(&net).unwrap_err().field.as_deref(), Some("dns"));
        let net = NetworkConfig {
            dns_search: vec!["a b".into()],
            ..NetworkConfig::default()
        };
        assert_eq!(
            validate(&net).unwrap_err().field.as_deref(),
            Some("dns_search")
        );
        assert!(validate_hostname("ok-name").is_ok());
        assert!(validate_hostname("bad\nname").is_err());
    }

    #[test]
    fn resolv_drops_loopback_and_v6_and_keeps_search_and_options() {
        let host = Resolv::parse(
            "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\nnameserver fd00::53\n\
             search corp.example lan\noptions edns0 trust-ad\n",
        );
        let text = resolv_conf_content(&bridge_ctx(), &NetworkConfig::default(), &host);
        assert_eq!(
            text,
            "nameserver 10.255.255.53\nsearch corp.example lan\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn resolv_uses_the_request_s_dns_and_search() {
        let host = Resolv::parse("nameserver 10.255.255.53\nsearch lan\n");
        let net = NetworkConfig {
            dns: vec!["192.0.2.53".into(), "2001:db8::53".into()],
            dns_search: vec!["svc.example".into()],
            ..NetworkConfig::default()
        };
        let text = resolv_conf_content(&bridge_ctx(), &net, &host);
        assert_eq!(
            text,
            "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch svc.example\n"
        );
    }

    #[test]
    fn resolv_options_of_the_request_replace_the_hosts() {
        let host = Resolv::parse("nameserver 10.255.255.53\noptions edns0\n");
        let net = NetworkConfig {
            dns: vec!["192.0.2.53".into()],
            dns_options: vec!["ndots:8".into(), "timeout:2".into()],
            ..NetworkConfig::default()
        };
        let text = resolv_conf_content(&bridge_ctx(), &net, &host);
        assert_eq!(text, "nameserver 192.0.2.53\noptions ndots:8 timeout:2\n");
        let bad = NetworkConfig {
            dns_options: vec!["ndots:1\nnameserver 6.6.6.6".into()],
            ..NetworkConfig::default()
        };
        assert_eq!(
            validate(&bad).unwrap_err().field.as_deref(),
            Some("dns_options")
        );
    }

    #[test]
    fn resolv_falls_back_to_the_gateway_never_a_public_resolver() {
        let host = Resolv::parse("nameserver 127.0.0.53\noptions edns0\n");
        let text = resolv_conf_content(&bridge_ctx(), &NetworkConfig::default(), &host);
        assert!(text.contains("nameserver 10.88.0.1\n"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("nameserver "))
                .count(),
            1
        );
        let none = NameContext {
            hostname: "x",
            ..NameContext::default()
        };
        let text = resolv_conf_content(&none, &NetworkConfig::default(), &host);
        assert!(!text.contains("nameserver "), "{text}");
    }

    #[test]
    fn host_mode_keeps_loopback_nameservers() {
        let host = Resolv::parse("nameserver 127.0.0.53\n");
        let ctx = NameContext {
            hostname: "h",
            host_mode: true,
            ..NameContext::default()
        };
        assert_eq!(
            resolv_conf_content(&ctx, &NetworkConfig::default(), &host),
            "nameserver 127.0.0.53\n"
        );
    }

    #[test]
    fn files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = SandboxFiles::in_dir(dir.path().join("s1"));
        write(&files, "h\n", "r\n", "web").unwrap();
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "web\n");
        assert_eq!(std::fs::read_to_string(&files.hosts).unwrap(), "h\n");
        assert_eq!(std::fs::read_to_string(&files.resolv_conf).unwrap(), "r\n");
    }
}
