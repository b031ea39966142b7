//! Published ports: checking a request, and finding out whether a host port is already taken, by another sandbox
//! of this daemon, by another CNI user's forwarding rule, or by a process listening on the host. The `portmap`
//! plugin itself never checks: its DNAT rule would silently shadow the other user.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use husk_core::{Error, ErrorKind, PortMapping, PortProtocol, Result};
use serde_json::{Value, json};

use crate::iptables::ForwardedPort;

/// Where host ports are picked for mappings that ask for any (host port 0, as `-P` does): Linux's default
/// dynamic range, as Docker uses.
pub(crate) const DYNAMIC_RANGE: std::ops::RangeInclusive<u16> = 32768..=60999;

/// The host address of a mapping, `None` for every address.
pub(crate) fn host_ip(port: &PortMapping) -> Result<Option<IpAddr>> {
    if port.host_ip.is_empty() {
        return Ok(None);
    }
    let ip: IpAddr = port.host_ip.parse().map_err(|_| {
        Error::invalid(
            "ports",
            format!(
                "invalid host address {:?} in port mapping {port}",
                port.host_ip
            ),
        )
    })?;
    Ok((!ip.is_unspecified()).then_some(ip))
}

/// Checks each mapping and that no two of the request's mappings take the same host port.
pub(crate) fn validate(ports: &[PortMapping]) -> Result<()> {
    for (i, port) in ports.iter().enumerate() {
        if port.protocol == PortProtocol::Sctp {
            return Err(Error::invalid(
                "ports",
                format!("port mapping {port}: protocol must be tcp or udp"),
            ));
        }
        if port.container_port == 0 {
            return Err(Error::invalid(
                "ports",
                format!("port mapping {port}: ports are numbers from 1 to 65535"),
            ));
        }
        let ip = host_ip(port)?;
        if ip.is_some_and(|ip| ip.is_ipv6()) {
            return Err(Error::invalid(
                "ports",
                format!(
                    "port mapping {port}: IPv6 host addresses are not supported (husk networks are IPv4)"
                ),
            ));
        }
        if let Some(other) = ports[..i].iter().find(|o| {
            port.host_port != 0 && overlaps(o, ip, port.host_port, port.protocol.as_str())
        }) {
            return Err(Error::invalid(
                "ports",
                format!("port mappings {other} and {port} take the same host port"),
            ));
        }
    }
    Ok(())
}

/// Whether `port` and a mapping of host address `ip`, `host_port`, `protocol` need the same host port.
pub(crate) fn overlaps(
    port: &PortMapping,
    ip: Option<IpAddr>,
    host_port: u16,
    protocol: &str,
) -> bool {
    let mine = host_ip(port).ok().flatten();
    port.host_port == host_port
        && port.protocol.as_str() == protocol
        && (mine.is_none() || ip.is_none() || mine == ip)
}

/// A clear error for a port another sandbox of this daemon publishes.
pub(crate) fn taken_by_sandbox(port: &PortMapping, sandbox_id: &str) -> Error {
    Error::about(
        ErrorKind::Conflict,
        "ports",
        format!(
            "host port {}/{} is already published by sandbox {}",
            port.host_port,
            port.protocol,
            short(sandbox_id)
        ),
    )
}

/// The forwarding rule of another CNI user that takes `port`, if any.
pub(crate) fn find_forwarded<'a>(
    port: &PortMapping,
    rules: &'a [ForwardedPort],
    own_id: &str,
) -> Option<&'a ForwardedPort> {
    rules
        .iter()
        .find(|r| r.owner != own_id && overlaps(port, r.host_ip, r.port, &r.protocol))
}

/// A clear error for a port forwarded by another CNI user.
pub(crate) fn taken_by_rule(port: &PortMapping, rule: &ForwardedPort) -> Error {
    Error::about(
        ErrorKind::Conflict,
        "ports",
        format!(
            "host port {}/{} is already forwarded to container {} of CNI network {:?} (another husk daemon or CNI runtime)",
            port.host_port,
            port.protocol,
            short(&rule.owner),
            rule.network
        ),
    )
}

/// Fails when a host process holds the port: binds it for a moment on the mapping's address (every address when
/// none is given).
pub(crate) fn check_bindable(port: &PortMapping) -> Result<()> {
    let ip = host_ip(port)?.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, port.host_port);
    let bound = if port.protocol == PortProtocol::Udp {
        UdpSocket::bind(addr).map(drop)
    } else {
        TcpListener::bind(addr).map(drop)
    };
    match bound {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::about(
            ErrorKind::Conflict,
            "ports",
            format!(
                "host port {}/{} is already in use on the host (a process is bound to {addr})",
                port.host_port, port.protocol
            ),
        )
        .with_source(e)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Err(Error::invalid(
            "ports",
            format!("port mapping {port}: {ip} is not an address of this host"),
        )),
        Err(e) => Err(Error::io(
            format!("check host port {addr}/{}", port.protocol),
            e,
        )),
    }
}

/// The `runtimeConfig.portMappings` value for the portmap plugin.
pub(crate) fn runtime_config(ports: &[PortMapping]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut entry = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.as_str()});
                if !p.host_ip.is_empty() {
                    entry["hostIP"] = json!(p.host_ip);
                }
                entry
            })
            .collect(),
    )
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> PortMapping {
        PortMapping::parse(text).unwrap()
    }

    #[test]
    fn overlapping_mappings() {
        assert!(overlaps(
            &p("8080:80"),
            Some("127.0.0.1".parse().unwrap()),
            8080,
            "tcp"
        ));
        assert!(overlaps(&p("127.0.0.1:8080:80"), None, 8080, "tcp"));
        assert!(!overlaps(
            &p("127.0.0.1:8080:80"),
            Some("127.0.0.2".parse().unwrap()),
            8080,
            "tcp"
        ));
        assert!(!overlaps(&p("8080:80"), None, 8080, "udp"));
        assert!(!overlaps(&p("8080:80"), None, 8081, "tcp"));
        assert!(overlaps(
            &p("0.0.0.0:8080:80"),
            Some("10.0.0.1".parse().unwrap()),
            8080,
            "tcp"
        ));
    }

    #[test]
    fn requests_are_validated() {
        assert!(
            validate(&[
                p("8080:80"),
                p("8080:80/udp"),
                p("127.0.0.1:8081:80"),
                p("127.0.0.2:8081:81")
            ])
            .is_ok()
        );
        let err = validate(&[p("8080:80"), p("127.0.0.1:8080:81")]).unwrap_err();
        assert!(
            err.message.contains("take the same host port"),
            "{}",
            err.message
        );
        assert!(validate(&[p("[::1]:8080:80")]).is_err());
        let any = PortMapping {
            host_port: 0,
            ..p("9000:80")
        };
        assert!(
            validate(&[any.clone(), any]).is_ok(),
            "host port 0 means: pick one"
        );
    }

    #[test]
    fn runtime_config_has_the_portmap_fields() {
        let value = runtime_config(&[p("127.0.0.1:8080:80/udp"), p("9090:90")]);
        assert_eq!(
            value,
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}
            ])
        );
    }

    #[test]
    fn a_listening_process_is_found() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = check_bindable(&p(&format!("127.0.0.1:{port}:80"))).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert!(
            err.message
                .contains(&format!("host port {port}/tcp is already in use")),
            "{}",
            err.message
        );
        assert!(
            check_bindable(&p(&format!("{port}:80"))).is_err(),
            "wildcard overlaps 127.0.0.1"
        );
        drop(listener);
        assert!(check_bindable(&p(&format!("127.0.0.1:{port}:80"))).is_ok());
    }

    #[test]
    fn forwarded_rules_of_others_are_found() {
        let rule = ForwardedPort {
            owner: "other".into(),
            network: "n".into(),
            host_ip: None,
            port: 8080,
            protocol: "tcp".into(),
        };
        let rules = vec![rule];
        assert!(find_forwarded(&p("8080:80"), &rules, "me").is_some());
        assert!(find_forwarded(&p("8080:80"), &rules, "other").is_none());
        let err = taken_by_rule(&p("8080:80"), &rules[0]);
        assert!(
            err.message.contains("8080/tcp") && err.message.contains("\"n\""),
            "{}",
            err.message
        );
    }
}
