//! The catalog of configured networks: listing, creating and removing them, the subnet and bridge a new one
//! gets, the host rules husk keeps for the networks it wrote.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::RwLockReadGuard;

use husk_core::{Context, Error, Result};

use crate::cache::Attachment;
use crate::config::validate_bridge_name;
use crate::conflist::{BridgeNetwork, NetworkList, validate_network_name};
use crate::result::CniResult;
use crate::subnet::Subnet;
use crate::{iptables, netns};

use super::*;

impl Networks {
    /// The configured networks, in name order.
    pub fn list(&self) -> Result<Vec<NetworkInfo>> {
        let attachments = self.cache.all()?;
        let catalog = self.read_catalog();
        Ok(catalog
            .lists
            .values()
            .map(|list| self.info(list, &attachments))
            .collect())
    }

    /// One network with its configuration and attached sandboxes.
    pub fn inspect(&self, name: &str) -> Result<NetworkInfo> {
        let list = self.network(name)?;
        Ok(self.info(&list, &self.cache.all()?))
    }

    /// Creates a bridge network (bridge + host-local + portmap + firewall) and writes its list into the
    /// configuration directory. Refuses a taken name, bridge or overlapping subnet.
    pub fn create(&self, request: &NewNetwork) -> Result<NetworkInfo> {
        validate_network_name(&request.name)?;
        if matches!(request.name.as_str(), "bridge" | "host" | "none") {
            return Err(Error::invalid(
                "name",
                format!("{:?} is a network mode, not a network name", request.name),
            ));
        }
        let mut catalog = self.catalog.write().map_err(|_| poisoned())?;
        if catalog.lists.contains_key(&request.name) {
            return Err(Error::conflict(format!(
                "network {:?} already exists",
                request.name
            )));
        }
        let network = plan_network(request, &catalog)?;
        let list = self.write_network(&network)?;
        guard_localnet(&list);
        if let Err(e) = self.ensure_network_rules(&list) {
            let _ = self.remove_generated_parts(&list);
            if let Some(file) = &list.source {
                let _ = std::fs::remove_file(file);
            }
            return Err(e);
        }
        catalog.lists.insert(list.name.clone(), list.clone());
        drop(catalog);
        Ok(self.info(&list, &[]))
    }

    /// Removes a network's configuration file; for networks husk generated also the bridge, its guard rule and
    /// the IP allocations. Refuses the default network and networks that sandboxes are attached to.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut catalog = self.catalog.write().map_err(|_| poisoned())?;
        let list = catalog
            .lists
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("network {name:?}")))?;
        if name == self.config.default_network {
            return Err(Error::conflict(format!(
                "network {name:?} is the default network and cannot be removed"
            )));
        }
        let users: Vec<String> = self
            .cache
            .all()?
            .into_iter()
            .filter(|a| a.network == name)
            .map(|a| short(&a.sandbox_id).to_string())
            .collect();
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "network {name:?} is in use by sandbox(es) {}",
                users.join(", ")
            )));
        }
        if let Some(file) = &list.source {
            std::fs::remove_file(file).context(format!("remove {}", file.display()))?;
        }
        catalog.lists.remove(name);
        drop(catalog);
        self.remove_generated_parts(&list)
    }

    // ---- internals ----

    pub(super) fn read_catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        // A panic while holding the lock cannot leave the catalog half-written (it is replaced whole), so a
        // poisoned lock is still safe to read.
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The list named `name`, reading the directory again once if it is not known yet (an administrator may
    /// have added a file since).
    pub(super) fn network(&self, name: &str) -> Result<NetworkList> {
        if let Some(list) = self.read_catalog().lists.get(name) {
            return Ok(list.clone());
        }
        self.reload()?;
        let catalog = self.read_catalog();
        catalog.lists.get(name).cloned().ok_or_else(|| {
            let mut e = Error::not_found(format!("network {name:?}"));
            e.field = Some("network".into());
            if !catalog.errors.is_empty() {
                e.message.push_str(&format!(
                    " (files that could not be loaded: {})",
                    catalog.errors.join("; ")
                ));
            }
            e
        })
    }

    pub(super) fn create_default(&self) -> Result<()> {
        let subnet = Subnet::parse(&self.config.default_subnet)?;
        let gateway = subnet.host(1).ok_or_else(|| {
            Error::invalid("subnet", format!("subnet {subnet} has no host addresses"))
        })?;
        let network = BridgeNetwork {
            name: self.config.default_network.clone(),
            subnet,
            gateway,
            bridge: self.config.default_bridge.clone(),
        };
        let list = self.write_network(&network)?;
        tracing::info!(network = %list.name, bridge = %network.bridge, subnet = %subnet, "created the default network");
        self.catalog
            .write()
            .map_err(|_| poisoned())?
            .lists
            .insert(list.name.clone(), list);
        Ok(())
    }

    pub(super) fn write_network(&self, network: &BridgeNetwork) -> Result<NetworkList> {
        let path = self
            .config
            .conf_dir
            .join(format!("{}.conflist", network.name));
        let text = serde_json::to_string_pretty(&network.conflist(&self.config.ipam_dir()))
            .map_err(|e| Error::internal(format!("encode network list: {e}")))?;
        let tmp = self
            .config
            .conf_dir
            .join(format!(".{}.conflist.tmp", network.name));
        std::fs::write(&tmp, format!("{text}\n")).context(format!("write {}", tmp.display()))?;
        // A link (not a rename) so an existing file, perhaps one an administrator broke, is never replaced.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // (The catalog may be locked by our caller: name the file's own problem, not the catalog's.)
                let why = NetworkList::load(&path).err().map(|e| e.message);
                return Err(Error::conflict(format!(
                    "cannot write network {:?}: {} already exists ({})",
                    network.name,
                    path.display(),
                    why.unwrap_or_else(|| "it defines another network".into())
                )));
            }
            other => other.context(format!("write {}", path.display()))?,
        }
        NetworkList::load(&path)
    }

    /// Whether husk wrote `list` itself (its host-local data lives in husk's own directory).
    pub(super) fn generated(&self, list: &NetworkList) -> bool {
        list.bridge_summary().ipam_data_dir.as_deref() == Some(self.config.ipam_dir().as_path())
    }

    /// Ensures the per-network masquerade and forward rules of a network husk generated (the lists it writes
    /// leave those to husk, see `iptables`); other networks are their author's business.
    pub(super) fn ensure_network_rules(&self, list: &NetworkList) -> Result<()> {
        if !self.generated(list) {
            return Ok(());
        }
        let summary = list.bridge_summary();
        if let Some(bridge) = &summary.bridge {
            for subnet in &summary.subnets {
                iptables::ensure_network_rules(bridge, subnet)
                    .map_err(|e| e.context(format!("network {:?}", list.name)))?;
            }
        }
        Ok(())
    }

    pub(super) fn remove_generated_parts(&self, list: &NetworkList) -> Result<()> {
        if !self.generated(list) {
            return Ok(());
        }
        let summary = list.bridge_summary();
        if let Some(bridge) = &summary.bridge {
            iptables::remove_localnet_guard(bridge)?;
            for subnet in &summary.subnets {
                iptables::remove_network_rules(bridge, subnet)?;
            }
            netns::delete_bridge(bridge)?;
        }
        let ipam = self.config.ipam_dir().join(&list.name);
        match std::fs::remove_dir_all(&ipam) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", ipam.display()), e))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn info(&self, list: &NetworkList, attachments: &[Attachment]) -> NetworkInfo {
        let summary = list.bridge_summary();
        let attached = attachments
            .iter()
            .filter(|a| a.network == list.name)
            .map(|a| {
                let status = a
                    .result
                    .as_ref()
                    .and_then(|r| CniResult::from_value(r, &a.network, "").ok())
                    .map(|r| r.to_status(&a.network, &a.ifname, &a.ports))
                    .unwrap_or_default();
                AttachedSandbox {
                    sandbox_id: a.sandbox_id.clone(),
                    addresses: status.addresses,
                    mac: status.mac,
                    ports: a.ports.clone(),
                }
            })
            .collect();
        NetworkInfo {
            name: list.name.clone(),
            default: list.name == self.config.default_network,
            cni_version: list.cni_version.clone(),
            plugins: list.plugin_types(),
            bridge: summary.bridge,
            subnets: summary.subnets.iter().map(Subnet::to_string).collect(),
            gateways: summary
                .gateways
                .iter()
                .flatten()
                .map(IpAddr::to_string)
                .collect(),
            file: list.source.clone(),
            config: list.to_json(),
            attached,
        }
    }
}

pub(super) fn load_catalog(dir: &Path) -> Result<Catalog> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .context(format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut catalog = Catalog::default();
    for path in files {
        match NetworkList::load(&path) {
            Ok(list) => match catalog.lists.get(&list.name) {
                Some(first) => catalog.errors.push(format!(
                    "{}: network {:?} is already defined by {}",
                    path.display(),
                    list.name,
                    first.source.as_deref().unwrap_or(Path::new("?")).display()
                )),
                None => {
                    catalog.lists.insert(list.name.clone(), list);
                }
            },
            Err(e) => catalog.errors.push(e.message),
        }
    }
    Ok(catalog)
}

/// Picks the subnet, gateway and bridge of a new network, refusing clashes with the configured ones.
pub(super) fn plan_network(request: &NewNetwork, catalog: &Catalog) -> Result<BridgeNetwork> {
    let summaries: Vec<(String, crate::conflist::BridgeSummary)> = catalog
        .lists
        .values()
        .map(|l| (l.name.clone(), l.bridge_summary()))
        .collect();
    let clash = |subnet: &Subnet| {
        summaries
            .iter()
            .find(|(_, s)| s.subnets.iter().any(|o| o.overlaps(subnet)))
            .map(|(name, _)| name.clone())
    };
    let subnet = match &request.subnet {
        Some(text) => {
            let subnet = Subnet::parse(text)?;
            if let Some(other) = clash(&subnet) {
                return Err(Error::conflict(format!(
                    "subnet {subnet} overlaps network {other:?}"
                )));
            }
            if routed_on_host(&subnet) {
                return Err(Error::conflict(format!(
                    "subnet {subnet} overlaps a route of the host; pick another"
                )));
            }
            subnet
        }
        None => (0..=255u8)
            .map(|n| Subnet::parse(&format!("10.89.{n}.0/24")))
            .filter_map(Result::ok)
            .find(|s| clash(s).is_none() && !routed_on_host(s))
            .ok_or_else(|| Error::conflict("no free subnet in 10.89.0.0/16; pass one"))?,
    };
    let gateway = match &request.gateway {
        Some(text) => {
            let ip: IpAddr = text
                .parse()
                .map_err(|_| Error::invalid("gateway", format!("invalid gateway {text:?}")))?;
            if !subnet.is_usable_host(ip) {
                return Err(Error::invalid(
                    "gateway",
                    format!("gateway {ip} is not a host address of {subnet}"),
                ));
            }
            ip
        }
        None => subnet.host(1).ok_or_else(|| {
            Error::invalid("subnet", format!("subnet {subnet} has no host addresses"))
        })?,
    };
    let used_bridge = |b: &str| {
        summaries
            .iter()
            .find(|(_, s)| s.bridge.as_deref() == Some(b))
            .map(|(n, _)| n.clone())
    };
    let bridge = match &request.bridge {
        Some(bridge) => {
            validate_bridge_name(bridge)?;
            if let Some(other) = used_bridge(bridge) {
                return Err(Error::conflict(format!(
                    "bridge {bridge:?} is already used by network {other:?}"
                )));
            }
            bridge.clone()
        }
        None => (1..1000)
            .map(|n| format!("husk{n}"))
            .find(|b| used_bridge(b).is_none() && !netns::link_exists(b))
            .ok_or_else(|| Error::conflict("no free bridge name; pass one"))?,
    };
    Ok(BridgeNetwork {
        name: request.name.clone(),
        subnet,
        gateway,
        bridge,
    })
}

/// Whether the host already routes `subnet` somewhere (an IPv4 route in the main table overlapping it), so a new
/// network there would cut the host off from it. Default routes do not count.
pub(super) fn routed_on_host(subnet: &Subnet) -> bool {
    std::fs::read_to_string("/proc/net/route").is_ok_and(|table| route_overlaps(&table, subnet))
}

/// Whether a route of a `/proc/net/route` table other than the default route overlaps `subnet`.
pub(super) fn route_overlaps(table: &str, subnet: &Subnet) -> bool {
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(dst), Some(mask)) = (fields.get(1), fields.get(7)) else {
            return false;
        };
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(dst, 16), u32::from_str_radix(mask, 16))
        else {
            return false;
        };
        // /proc/net/route prints the address as the kernel stores it (network order) read as a native integer.
        let dst = std::net::Ipv4Addr::from(dst.to_ne_bytes());
        let prefix = mask.count_ones();
        prefix > 0
            && Subnet::parse(&format!("{dst}/{prefix}")).is_ok_and(|route| route.overlaps(subnet))
    })
}
