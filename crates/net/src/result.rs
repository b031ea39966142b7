//! CNI results (spec 0.3.x, 0.4.0 and 1.0.0 shapes) and what husk reports from them.

use std::net::IpAddr;

use husk_core::{Error, NetworkStatus, PortMapping, Result};
use serde::Deserialize;
use serde_json::Value;

/// The parts of a CNI ADD result husk reads. The raw JSON is what is cached and chained, so fields husk does not
/// know pass through untouched.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CniResult {
    /// Interfaces the plugins made (host side, bridge, and the one in the sandbox).
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
}

/// One interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, if any.
    #[serde(default)]
    pub mac: String,
    /// Network namespace path when the interface is inside the sandbox, empty for host interfaces.
    #[serde(default)]
    pub sandbox: String,
}

/// One address of a result.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct IpConfig {
    /// Address with prefix, e.g. `10.88.0.5/16`.
    pub address: String,
    /// Gateway, if any.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Index into `interfaces` of the interface holding the address.
    #[serde(default)]
    pub interface: Option<usize>,
}

impl CniResult {
    /// Reads the result a plugin printed, naming the network and plugin in errors.
    pub fn from_value(value: &Value, network: &str, plugin: &str) -> Result<CniResult> {
        CniResult::deserialize(value).map_err(|e| {
            Error::backend(format!(
                "network {network:?}: plugin {plugin:?} printed a result husk cannot read: {e}"
            ))
        })
    }

    /// The index of the sandbox's interface `ifname` (the one with a `sandbox` path).
    fn sandbox_interface(&self, ifname: &str) -> Option<usize> {
        let inside = |i: &Interface| !i.sandbox.is_empty();
        self.interfaces
            .iter()
            .position(|i| inside(i) && i.name == ifname)
            .or_else(|| self.interfaces.iter().position(inside))
    }

    /// The addresses on the sandbox's interface (or on no named interface).
    pub fn sandbox_ips(&self, ifname: &str) -> Vec<&IpConfig> {
        let index = self.sandbox_interface(ifname);
        self.ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index)
            .collect()
    }

    /// The sandbox's addresses without prefix.
    pub fn sandbox_addresses(&self, ifname: &str) -> Vec<IpAddr> {
        self.sandbox_ips(ifname)
            .iter()
            .filter_map(|ip| address_of(&ip.address))
            .collect()
    }

    /// What a sandbox reports: addresses, gateway, MAC and interface, with the published `ports`.
    pub fn to_status(&self, network: &str, ifname: &str, ports: &[PortMapping]) -> NetworkStatus {
        let iface = self.sandbox_interface(ifname).map(|i| &self.interfaces[i]);
        let ips = self.sandbox_ips(ifname);
        NetworkStatus {
            network: network.to_string(),
            addresses: ips.iter().map(|ip| ip.address.clone()).collect(),
            gateway: ips
                .iter()
                .find_map(|ip| ip.gateway.clone())
                .unwrap_or_default(),
            mac: iface.map(|i| i.mac.clone()).unwrap_or_default(),
            interface: iface
                .map(|i| i.name.clone())
                .unwrap_or_else(|| ifname.to_string()),
            ports: ports.to_vec(),
        }
    }
}

/// The address part of `10.88.0.5/16`.
pub fn address_of(cidr: &str) -> Option<IpAddr> {
    cidr.split('/').next()?.parse().ok()
}

/// A plugin's error (`{"code", "msg", "details"}` on stdout with a non-zero exit), if the output is one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PluginError {
    /// Error code (1-99 reserved by the spec, 100+ plugin-specific).
    #[serde(default)]
    pub code: u32,
    /// Short message.
    #[serde(default)]
    pub msg: String,
    /// Longer explanation.
    #[serde(default)]
    pub details: String,
}

impl PluginError {
    /// Parses the error object a plugin printed; `None` when the output is not one.
    pub fn parse(stdout: &[u8]) -> Option<PluginError> {
        let err: PluginError = serde_json::from_slice(stdout).ok()?;
        (!err.msg.is_empty() || err.code != 0).then_some(err)
    }

    /// The spec's meaning of the well-known codes.
    pub fn code_meaning(&self) -> Option<&'static str> {
        Some(match self.code {
            1 => "incompatible CNI version",
            2 => "unsupported field in network configuration",
            3 => "container unknown or does not exist",
            4 => "invalid necessary environment variables",
            5 => "I/O failure",
            6 => "failed to decode content",
            7 => "invalid network config",
            11 => "try again later",
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge_result(version: &str) -> Value {
        let mut ip = json!({"interface": 2, "address": "10.231.0.2/24", "gateway": "10.231.0.1"});
        if version != "1.0.0" {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cnix0", "mac": "86:04:6d:92:2e:99"},
                {"name": "veth1d6cbfb0", "mac": "32:81:2b:9e:51:b8"},
                {"name": "eth0", "mac": "86:dc:50:48:c1:24", "sandbox": "/run/netns/cnix1"}
            ],
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        })
    }

    #[test]
    fn status_from_a_bridge_result_in_each_version() {
        for version in ["0.3.1", "0.4.0", "1.0.0"] {
            let result = CniResult::from_value(&bridge_result(version), "n", "bridge").unwrap();
            let ports = vec![PortMapping::parse("127.0.0.1:8080:80").unwrap()];
            let status = result.to_status("n", "eth0", &ports);
            assert_eq!(status.addresses, ["10.231.0.2/24"]);
            assert_eq!(status.gateway, "10.231.0.1");
            assert_eq!(status.mac, "86:dc:50:48:c1:24");
            assert_eq!(status.interface, "eth0");
            assert_eq!(status.ports, ports);
            assert_eq!(
                result.sandbox_addresses("eth0"),
                ["10.231.0.2".parse::<IpAddr>().unwrap()]
            );
        }
    }

    #[test]
    fn host_side_addresses_are_not_the_sandbox_s() {
        let value = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"interface": 0, "address": "10.1.0.1/24"}, {"interface": 1, "address": "10.1.0.7/24"}]
        });
        let result = CniResult::from_value(&value, "n", "p").unwrap();
        assert_eq!(
            result.to_status("n", "eth0", &[]).addresses,
            ["10.1.0.7/24"]
        );
    }

    #[test]
    fn unreadable_result_names_network_and_plugin() {
        let err = CniResult::from_value(&json!({"ips": "nope"}), "web", "bridge").unwrap_err();
        assert!(
            err.message.contains("\"web\"") && err.message.contains("\"bridge\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn plugin_errors_parse() {
        let err =
            PluginError::parse(br#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"more"}"#)
                .unwrap();
        assert_eq!(
            (err.code, err.msg.as_str(), err.details.as_str()),
            (7, "bad", "more")
        );
        assert_eq!(err.code_meaning(), Some("invalid network config"));
        assert!(PluginError::parse(b"panic: oops").is_none());
        assert!(PluginError::parse(b"{}").is_none());
    }
}
