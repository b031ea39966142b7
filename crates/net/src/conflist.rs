//! CNI network configuration lists: loading and checking them, building the per-plugin stdin, and generating
//! the bridge networks husk creates itself.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use husk_core::{Error, Result};
use serde_json::{Map, Value, json};

use crate::subnet::Subnet;

/// CNI specification versions the plugins of `containernetworking-plugins` 1.1 understand and husk drives.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The version husk writes into the lists it generates.
pub const GENERATED_VERSION: &str = "1.0.0";

/// A loaded network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// Network name (the list's `name`).
    pub name: String,
    /// The list's `cniVersion`, passed to every plugin.
    pub cni_version: String,
    /// `disableCheck`: CHECK is skipped for this network.
    pub disable_check: bool,
    /// The plugin configurations, in order; each has a string `type`.
    pub plugins: Vec<Map<String, Value>>,
    /// The file it was loaded from, when it came from a file.
    pub source: Option<PathBuf>,
}

impl NetworkList {
    /// Parses a configuration list (`{"name","cniVersion","plugins":[...]}`) or a single plugin configuration
    /// (`{"name","cniVersion","type",...}`, the `.conf` format), naming `source` in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<NetworkList> {
        let bad =
            |why: String| Error::bad_request(format!("bad CNI configuration {source}: {why}"));
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        let Value::Object(top) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        let name = string_field(&top, "name")
            .ok_or_else(|| bad("missing string field \"name\"".into()))?;
        validate_network_name(&name).map_err(|e| bad(e.message))?;
        let cni_version = string_field(&top, "cniVersion")
            .ok_or_else(|| bad(format!("network {name:?}: missing \"cniVersion\"")))?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(bad(format!(
                "network {name:?}: cniVersion {cni_version:?} is not supported (use one of {})",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        let plugins = match top.get("plugins") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|p| {
                    p.as_object()
                        .cloned()
                        .ok_or_else(|| bad(format!("network {name:?}: a plugin is not an object")))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(bad(format!(
                    "network {name:?}: \"plugins\" must be an array"
                )));
            }
            None if top.contains_key("type") => vec![top.clone()],
            None => {
                return Err(bad(format!(
                    "network {name:?}: no \"plugins\" list and no \"type\""
                )));
            }
        };
        if plugins.is_empty() {
            return Err(bad(format!("network {name:?}: the plugin list is empty")));
        }
        for (i, plugin) in plugins.iter().enumerate() {
            let ty = plugin.get("type").and_then(Value::as_str).ok_or_else(|| {
                bad(format!(
                    "network {name:?}: plugin #{} has no string \"type\"",
                    i + 1
                ))
            })?;
            validate_plugin_type(ty)
                .map_err(|e| bad(format!("network {name:?}: {}", e.message)))?;
        }
        let disable_check = top
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(NetworkList {
            name,
            cni_version,
            disable_check,
            plugins,
            source: None,
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<NetworkList> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::io(format!("read CNI configuration {}", path.display()), e))?;
        let mut list = NetworkList::parse(&bytes, &path.display().to_string())?;
        list.source = Some(path.to_path_buf());
        Ok(list)
    }

    /// The list as JSON (the form cached with each attachment and written to disk).
    pub fn to_json(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    /// The plugin `type` at `index`.
    pub fn plugin_type(&self, index: usize) -> &str {
        self.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The plugin types in order.
    pub fn plugin_types(&self) -> Vec<String> {
        (0..self.plugins.len())
            .map(|i| self.plugin_type(i).to_string())
            .collect()
    }

    /// Whether some plugin declares the capability `name` (e.g. `portMappings`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.plugins.iter().any(|p| declares(p, name))
    }

    /// Whether plugin `index` has nothing to do for these capability arguments, so running it would only cost
    /// a process start. That is true of `portmap` without `portMappings`: its ADD prints the previous result
    /// unchanged, and its DEL and CHECK touch no rule (it reads nothing but `runtimeConfig.portMappings`;
    /// checked against containernetworking-plugins 1.1.1, which starts no `iptables` then). Skipping it saves
    /// one of the three plugin runs of every sandbox without published ports. Every other plugin always runs.
    pub fn plugin_idle(&self, index: usize, capability_args: &Map<String, Value>) -> bool {
        self.plugin_type(index) == "portmap" && !capability_args.contains_key("portMappings")
    }

    /// Whether CHECK applies: the spec defines it from 0.4.0 on, and a list may disable it.
    pub fn supports_check(&self) -> bool {
        !self.disable_check && !self.cni_version.starts_with("0.3.")
    }

    /// The stdin of plugin `index`: its configuration plus the list's `name` and `cniVersion`, the previous
    /// result, and `runtimeConfig` with those of `capability_args` the plugin declares in `capabilities`.
    pub fn plugin_stdin(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let mut conf = self.plugins[index].clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        match prev_result {
            Some(prev) => conf.insert("prevResult".into(), prev.clone()),
            None => conf.remove("prevResult"),
        };
        let runtime: Map<String, Value> = capability_args
            .iter()
            .filter(|(key, _)| declares(&self.plugins[index], key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }

    /// What the first `bridge` plugin of the list says: the bridge name and the subnets and gateways of its
    /// host-local IPAM, as far as the configuration states them.
    pub fn bridge_summary(&self) -> BridgeSummary {
        let Some(bridge) = self
            .plugins
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        else {
            return BridgeSummary::default();
        };
        let mut summary = BridgeSummary {
            bridge: Some(
                bridge
                    .get("bridge")
                    .and_then(Value::as_str)
                    .unwrap_or("cni0")
                    .to_string(),
            ),
            ..BridgeSummary::default()
        };
        let Some(ipam) = bridge.get("ipam").and_then(Value::as_object) else {
            return summary;
        };
        let mut push = |range: &Map<String, Value>| {
            if let Some(subnet) = range
                .get("subnet")
                .and_then(Value::as_str)
                .and_then(|s| Subnet::parse(s).ok())
            {
                summary.subnets.push(subnet);
                let gateway = range
                    .get("gateway")
                    .and_then(Value::as_str)
                    .and_then(|g| g.parse().ok());
                summary.gateways.push(gateway.or_else(|| subnet.host(1)));
            }
        };
        if let Some(ranges) = ipam.get("ranges").and_then(Value::as_array) {
            for set in ranges.iter().filter_map(Value::as_array) {
                set.iter().filter_map(Value::as_object).for_each(&mut push);
            }
        } else {
            push(ipam);
        }
        summary.ipam_data_dir = ipam
            .get("dataDir")
            .and_then(Value::as_str)
            .map(PathBuf::from);
        summary
    }
}

/// The bridge and addressing of a bridge network, read from its configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BridgeSummary {
    /// Linux bridge name (`None` when the list has no `bridge` plugin).
    pub bridge: Option<String>,
    /// Subnets of the host-local ranges.
    pub subnets: Vec<Subnet>,
    /// Gateway of each subnet (the configured one, else the first host address, as the bridge plugin does).
    pub gateways: Vec<Option<IpAddr>>,
    /// host-local's `dataDir`, when set.
    pub ipam_data_dir: Option<PathBuf>,
}

/// A bridge network husk writes itself: bridge + host-local + portmap.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeNetwork {
    /// Network name.
    pub name: String,
    /// Subnet addresses are allocated from.
    pub subnet: Subnet,
    /// Gateway (the bridge's address).
    pub gateway: IpAddr,
    /// Linux bridge name.
    pub bridge: String,
}

impl BridgeNetwork {
    /// The configuration list: `bridge` (gateway, hairpin) with `host-local` IPAM keeping its allocations in
    /// `ipam_dir/<name>`, and `portmap` for published ports. Masquerade and acceptance in FORWARD are rules
    /// husk keeps once per network (`iptables::ensure_network_rules`), not per sandbox: the `bridge` plugin's
    /// `ipMasq` and the `firewall` plugin cost a dozen iptables commands per sandbox, on ADD and on DEL.
    pub fn conflist(&self, ipam_dir: &Path) -> Value {
        let default_route = if self.subnet.is_ipv4() {
            "0.0.0.0/0"
        } else {
            "::/0"
        };
        json!({
            "cniVersion": GENERATED_VERSION,
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet.to_string(), "gateway": self.gateway.to_string()}]],
                        "routes": [{"dst": default_route}],
                        "dataDir": ipam_dir.to_string_lossy(),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
    }
}

/// Checks a network name as the CNI specification asks: letters, digits, `-`, `_`, `.`; not `.` or `..`.
pub fn validate_network_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("invalid network name {name:?}: use letters, digits, '-', '_' or '.'"),
        ))
    }
}

fn validate_plugin_type(ty: &str) -> Result<()> {
    let ok = !ty.is_empty() && ty != "." && ty != ".." && !ty.contains('/') && !ty.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!("invalid plugin type {ty:?}")))
    }
}

fn string_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

fn declares(plugin: &Map<String, Value>, capability: &str) -> bool {
    plugin
        .get("capabilities")
        .and_then(|c| c.get(capability))
        .and_then(Value::as_bool)
        == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> NetworkList {
        let net = BridgeNetwork {
            name: "husk".into(),
            subnet: Subnet::parse("10.88.0.0/16").unwrap(),
            gateway: "10.88.0.1".parse().unwrap(),
            bridge: "husk0".into(),
        };
        let text = net
            .conflist(Path::new("/var/lib/husk/net/ipam"))
            .to_string();
        NetworkList::parse(text.as_bytes(), "generated").unwrap()
    }

    #[test]
    fn generated_bridge_list_has_the_plugins_and_addressing() {
        let list = generated();
        assert_eq!(list.plugin_types(), ["bridge", "portmap"]);
        assert_eq!(list.cni_version, "1.0.0");
        assert!(list.has_capability("portMappings"));
        assert!(list.supports_check());
        let bridge = &list.plugins[0];
        assert_eq!(bridge["bridge"], "husk0");
        assert_eq!(bridge["isGateway"], true);
        assert_eq!(bridge["ipam"]["type"], "host-local");
        assert_eq!(bridge["ipam"]["dataDir"], "/var/lib/husk/net/ipam");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
        let summary = list.bridge_summary();
        assert_eq!(summary.bridge.as_deref(), Some("husk0"));
        assert_eq!(summary.subnets[0].to_string(), "10.88.0.0/16");
        assert_eq!(summary.gateways[0], Some("10.88.0.1".parse().unwrap()));
    }

    #[test]
    fn plugin_stdin_chains_results_and_passes_only_declared_capabilities() {
        let list = generated();
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        let bridge = list.plugin_stdin(0, None, &caps);
        assert_eq!(bridge["name"], "husk");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("prevResult").is_none());
        assert!(bridge.get("runtimeConfig").is_none());
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let portmap = list.plugin_stdin(1, Some(&prev), &caps);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert_eq!(portmap["type"], "portmap");
    }

    #[test]
    fn only_portmap_without_port_mappings_is_idle() {
        let list = generated();
        let none = Map::new();
        assert!(!list.plugin_idle(0, &none), "bridge always runs");
        assert!(list.plugin_idle(1, &none));
        let mut caps = Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort": 8080}]));
        assert!(!list.plugin_idle(1, &caps));
    }

    #[test]
    fn single_plugin_conf_becomes_a_list() {
        let text = br#"{"cniVersion":"0.4.0","name":"old","type":"bridge","bridge":"br9",
            "ipam":{"type":"host-local","subnet":"10.77.0.0/24"}}"#;
        let list = NetworkList::parse(text, "old.conf").unwrap();
        assert_eq!(list.plugin_types(), ["bridge"]);
        let summary = list.bridge_summary();
        assert_eq!(summary.subnets[0].to_string(), "10.77.0.0/24");
        assert_eq!(summary.gateways[0], Some("10.77.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_lists_are_refused_with_the_file_and_network_named() {
        let cases: [(&[u8], &str); 7] = [
            (b"{", "not valid JSON"),
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                "missing string field \"name\"",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
                "missing \"cniVersion\"",
            ),
            (
                br#"{"name":"n","cniVersion":"2.0.0","plugins":[{"type":"bridge"}]}"#,
                "not supported",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#,
                "empty",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"ipam":{}}]}"#,
                "plugin #1 has no string \"type\"",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../../bin/sh"}]}"#,
                "invalid plugin type",
            ),
        ];
        for (text, want) in cases {
            let err = NetworkList::parse(text, "/etc/husk/cni/n.conflist").unwrap_err();
            assert!(
                err.message.contains(want),
                "{} should contain {want}",
                err.message
            );
            assert!(
                err.message.contains("/etc/husk/cni/n.conflist"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn check_follows_the_version_and_disable_check() {
        let list = NetworkList::parse(
            br#"{"name":"n","cniVersion":"0.3.1","plugins":[{"type":"bridge"}]}"#,
            "x",
        )
        .unwrap();
        assert!(!list.supports_check());
        let list = NetworkList::parse(
            br#"{"name":"n","cniVersion":"1.0.0","disableCheck":true,"plugins":[{"type":"bridge"}]}"#,
            "x",
        )
        .unwrap();
        assert!(!list.supports_check());
    }
}
