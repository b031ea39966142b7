//! The `bridge` CNI plugin (with `host-local` addresses) run inside the daemon instead of exec'd.
//!
//! Why: the two plugin binaries are Go programs that cost ~3.5 ms each just to start and exit on a 2-core host,
//! and a bridge ADD took ~13 ms of a sandbox's ~21 ms (docs/benchmarks.md); the same work over netlink takes
//! well under a millisecond. What: the configurations husk generates for its bridge networks (the default one
//! and `network create`), and only those: a list whose `bridge` plugin has any option this code does not
//! implement, an IPv6 or multi-range IPAM, or another CNI version runs the binary as before. Same contract as
//! the binary (configuration in, CNI 1.0.0 result out, errors named `CNI plugin "bridge" failed ADD`), the same
//! host veth names (`veth` + 8 hex digits) and host-local's on-disk allocations, so the binary and the built-in
//! can take turns on one network: a sandbox attached by one is detached by the other (tests/cni.rs).
//! `[network] builtin_bridge = false` turns it off.

mod bridge;
mod host_local;
mod netlink;

use std::net::IpAddr;
use std::path::PathBuf;

use husk_core::{Error, Result};
use serde_json::{Map, Value};

use crate::plugin::{CniCommand, Invocation};
use crate::subnet::Subnet;

/// host-local's default `dataDir`.
const HOST_LOCAL_DEFAULT_DIR: &str = "/var/lib/cni/networks";

/// A `bridge` plugin configuration the built-in implements, read from the plugin's stdin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BridgeConf {
    /// The network's name (host-local's directory under `data_dir`).
    pub network: String,
    /// `cniVersion` of the result.
    pub cni_version: String,
    /// The Linux bridge.
    pub bridge: String,
    /// `hairpinMode`: a sandbox may reach itself through the bridge (its own published ports).
    pub hairpin: bool,
    /// The single IPv4 range.
    pub subnet: Subnet,
    /// Its gateway (the bridge's address).
    pub gateway: IpAddr,
    /// Routes in the sandbox, through the gateway: destination subnets.
    pub routes: Vec<Subnet>,
    /// host-local's `dataDir`.
    pub data_dir: PathBuf,
    /// The previous result (CHECK and DEL get the attachment's).
    pub prev_result: Option<Value>,
}

impl BridgeConf {
    /// The configuration when the built-in implements every field of it; `None` sends it to the binary.
    pub(crate) fn parse(stdin: &Value) -> Option<BridgeConf> {
        let conf = stdin.as_object()?;
        let known = [
            "type",
            "cniVersion",
            "name",
            "bridge",
            "isGateway",
            "ipMasq",
            "hairpinMode",
            "ipam",
            "prevResult",
        ];
        if conf.keys().any(|k| !known.contains(&k.as_str()))
            || str_of(conf, "type")? != "bridge"
            || str_of(conf, "cniVersion")? != "1.0.0"
            || !conf.get("isGateway")?.as_bool()?
            || conf
                .get("ipMasq")
                .is_some_and(|v| v.as_bool() != Some(false))
        {
            return None;
        }
        let ipam = conf.get("ipam")?.as_object()?;
        if ipam
            .keys()
            .any(|k| !["type", "ranges", "routes", "dataDir"].contains(&k.as_str()))
            || str_of(ipam, "type")? != "host-local"
        {
            return None;
        }
        let [set] = ipam.get("ranges")?.as_array()?.as_slice() else {
            return None;
        };
        let [range] = set.as_array()?.as_slice() else {
            return None;
        };
        let range = range.as_object()?;
        if range.keys().any(|k| k != "subnet" && k != "gateway") {
            return None;
        }
        let subnet = Subnet::parse(str_of(range, "subnet")?).ok()?;
        if !subnet.is_ipv4() || subnet.prefix() > 30 {
            return None;
        }
        let gateway = match range.get("gateway") {
            Some(g) => g.as_str()?.parse().ok()?,
            None => subnet.host(1)?,
        };
        if !subnet.contains(gateway) {
            return None;
        }
        let mut routes = Vec::new();
        for route in ipam
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let route = route.as_object()?;
            if route.keys().any(|k| k != "dst") {
                return None;
            }
            let dst = Subnet::parse(str_of(route, "dst")?).ok()?;
            if !dst.is_ipv4() {
                return None;
            }
            routes.push(dst);
        }
        Some(BridgeConf {
            network: str_of(conf, "name")?.to_string(),
            cni_version: "1.0.0".into(),
            bridge: conf
                .get("bridge")
                .map_or(Some("cni0"), Value::as_str)?
                .to_string(),
            hairpin: conf
                .get("hairpinMode")
                .map_or(Some(false), Value::as_bool)?,
            subnet,
            gateway,
            routes,
            data_dir: ipam
                .get("dataDir")
                .map_or(Some(HOST_LOCAL_DEFAULT_DIR), Value::as_str)
                .map(PathBuf::from)?,
            prev_result: conf.get("prevResult").cloned(),
        })
    }

    /// Runs `call` as the binary would: ADD returns the result.
    pub(crate) fn run(&self, call: &Invocation<'_>) -> Result<Option<Value>> {
        let done = match call.command {
            CniCommand::Add => bridge::add(self, call).map(Some),
            CniCommand::Check => bridge::check(self, call).map(|_| None),
            CniCommand::Del => bridge::del(self, call).map(|_| None),
        };
        done.map_err(|e| {
            Error::new(
                e.kind,
                format!(
                    "network {:?}: CNI plugin \"bridge\" failed {} (built in): {}",
                    self.network,
                    call.command.as_str(),
                    e.message
                ),
            )
        })
    }
}

fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)?.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn generated() -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "husk", "type": "bridge", "bridge": "husk0",
            "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/var/lib/husk/net/ipam"}
        })
    }

    #[test]
    fn husk_s_generated_bridge_configuration_is_served() {
        let conf = BridgeConf::parse(&generated()).unwrap();
        assert_eq!(conf.network, "husk");
        assert_eq!(conf.bridge, "husk0");
        assert!(conf.hairpin);
        assert_eq!(conf.subnet.to_string(), "10.88.0.0/16");
        assert_eq!(conf.gateway.to_string(), "10.88.0.1");
        assert_eq!(conf.routes.len(), 1);
        assert_eq!(conf.data_dir, PathBuf::from("/var/lib/husk/net/ipam"));
    }

    #[test]
    fn anything_it_does_not_implement_goes_to_the_binary() {
        let changed = |f: &dyn Fn(&mut Value)| {
            let mut v = generated();
            f(&mut v);
            BridgeConf::parse(&v)
        };
        assert!(changed(&|v| v["ipMasq"] = json!(true)).is_none());
        assert!(changed(&|v| v["mtu"] = json!(1400)).is_none());
        assert!(changed(&|v| v["isGateway"] = json!(false)).is_none());
        assert!(changed(&|v| v["cniVersion"] = json!("0.4.0")).is_none());
        assert!(changed(&|v| v["type"] = json!("macvlan")).is_none());
        assert!(changed(&|v| v["ipam"]["type"] = json!("dhcp")).is_none());
        assert!(changed(&|v| v["ipam"]["ranges"][0][0]["subnet"] = json!("fd00::/64")).is_none());
        assert!(
            changed(&|v| v["ipam"]["ranges"][0][0]["rangeStart"] = json!("10.88.0.10")).is_none()
        );
        assert!(
            changed(&|v| v["ipam"]["ranges"] =
                json!([[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]))
            .is_none()
        );
        assert!(
            changed(&|v| v["ipam"]["routes"] = json!([{"dst": "10.0.0.0/8", "gw": "10.88.0.9"}]))
                .is_none()
        );
        assert!(changed(&|v| v["ipam"]["ranges"][0][0]["gateway"] = json!("192.0.2.1")).is_none());
        // What it implements beyond husk's own: a missing gateway is the first host, a missing dataDir host-local's.
        let conf = changed(&|v| {
            v["ipam"]["ranges"][0][0]
                .as_object_mut()
                .unwrap()
                .remove("gateway");
            v["ipam"].as_object_mut().unwrap().remove("dataDir");
        })
        .unwrap();
        assert_eq!(conf.gateway.to_string(), "10.88.0.1");
        assert_eq!(conf.data_dir, PathBuf::from(HOST_LOCAL_DEFAULT_DIR));
    }
}
