//! A sandbox's network: the mode, published ports and what the network gave it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A published port: traffic to `host_ip:host_port` reaches the sandbox's `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on (empty = every address).
    #[serde(default)]
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Port inside the sandbox.
    pub container_port: u16,
    /// The transport protocol.
    pub protocol: PortProtocol,
}

/// The transport protocol of a published port; its JSON form is the lower-case name (`"tcp"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (the CRI can ask for it; husk's networks publish TCP and UDP only, and refuse it by name).
    Sctp,
}

// The lower-case names, as iptables, CNI and Docker spell them.
crate::names::named_values!(PortProtocol {
    Tcp => "tcp",
    Udp => "udp",
    Sctp => "sctp",
});

impl std::str::FromStr for PortProtocol {
    type Err = Error;

    /// Parses `tcp`, `udp` or `sctp` in any case.
    fn from_str(text: &str) -> Result<PortProtocol> {
        PortProtocol::from_name(&text.to_ascii_lowercase()).ok_or_else(|| {
            Error::invalid(
                "protocol",
                format!("unknown protocol {text:?}: use tcp or udp"),
            )
        })
    }
}

impl PortMapping {
    /// Parses Docker's `-p [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]`. Without a host port (`80`, `127.0.0.1::80`)
    /// the host port is 0: one is picked when the port is published, as Docker does.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "ports",
                format!(
                    "invalid port mapping {text:?}: {why}; use [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]"
                ),
            )
        };
        let (spec, protocol) = text.rsplit_once('/').unwrap_or((text, "tcp"));
        let protocol = match protocol.parse() {
            Ok(p @ (PortProtocol::Tcp | PortProtocol::Udp)) => p,
            _ => return Err(bad("protocol must be tcp or udp")),
        };
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("ports are numbers from 1 to 65535"))
        };
        // An IPv6 host address is written in brackets: [::1]:8080:80
        let (host_ip, rest) = if let Some(r) = spec.strip_prefix('[') {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| bad("unclosed IPv6 address"))?;
            (ip.to_string(), rest.to_string())
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (String::new(), spec.to_string()),
                3 => (parts[0].to_string(), format!("{}:{}", parts[1], parts[2])),
                _ => return Err(bad("too many ':'")),
            }
        };
        if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("the host address is not an IP address"));
        }
        let (host_port, container_port) = match rest.split_once(':') {
            Some(("", c)) => (0, port(c)?),
            Some((h, c)) => (port(h)?, port(c)?),
            None => (0, port(&rest)?),
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// How a sandbox (or a standalone container) is connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// `bridge` (default), `host`, `none`, or the name of a configured network.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// DNS servers for `/etc/resolv.conf` (empty = the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// Resolver options (`ndots:5`) for `/etc/resolv.conf` (empty = the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// Extra `/etc/hosts` lines as `NAME:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
}

impl NetworkConfig {
    /// The network mode, defaulting to `bridge`.
    pub fn mode(&self) -> &str {
        if self.mode.is_empty() {
            "bridge"
        } else {
            &self.mode
        }
    }
}

/// The network identity a sandbox or standalone container got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Network name.
    pub network: String,
    /// Interface addresses with prefix (`10.88.0.5/16`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// MAC address of the sandbox's interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Interface name inside the sandbox.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Ports published.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}
