//! [`Networks`]: the configured CNI networks and the sandboxes attached to them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, RwLock};

use husk_core::{Context, Error, ErrorKind, NetworkConfig, NetworkStatus, PortMapping, Result};
use serde_json::{Map, Value};

pub use husk_api_types::networks::{AttachedSandbox, NetworkInfo, NewNetwork};

use crate::cache::{Attachment, Cache};
use crate::config::CniConfig;
use crate::conflist::NetworkList;
use crate::dns::{self, NameContext, SandboxFiles};
use crate::plugin::{CniCommand, Invocation, PluginRunner};
use crate::result::{CniResult, address_of};
use crate::{iptables, netns, ports};

mod catalog;

use catalog::load_catalog;

/// The interface name a sandbox gets on a CNI network.
pub const SANDBOX_IFNAME: &str = "eth0";

/// How a sandbox is connected, from [`NetworkConfig::mode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Shares the host's network namespace: nothing to set up.
    Host,
    /// Only a loopback interface.
    None,
    /// Attached to the named CNI network (`bridge` means the default network).
    Cni(String),
}

#[derive(Debug, Default)]
struct Catalog {
    lists: BTreeMap<String, NetworkList>,
    /// Files that could not be loaded, as "path: why".
    errors: Vec<String>,
}

/// husk's CNI networks: loads the configuration lists, attaches and detaches sandboxes, keeps the cache that
/// lets DEL work after a restart, and writes each sandbox's name files.
///
/// Every method blocks (plugins are processes); call them from a blocking context (`spawn_blocking` in the
/// daemon). One `Networks` may be shared by threads.
#[derive(Debug)]
pub struct Networks {
    config: CniConfig,
    runner: PluginRunner,
    cache: Cache,
    catalog: RwLock<Catalog>,
    /// Serialises "is the host port free?" with recording the port, so two setups cannot both take it.
    ports_lock: Mutex<()>,
}

impl Networks {
    /// Opens husk's networking: creates the directories, loads the configuration lists (a file that cannot be
    /// loaded is skipped and reported by [`load_errors`](Self::load_errors)), and writes the default bridge
    /// network on first start.
    pub fn open(config: CniConfig) -> Result<Networks> {
        config.validate()?;
        for dir in [
            &config.conf_dir,
            &config.state_dir,
            &config.ipam_dir(),
            &config.sandboxes_dir(),
        ] {
            std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
        }
        let networks = Networks {
            runner: PluginRunner::new(config.plugin_dirs.clone(), config.plugin_timeout)
                .with_builtin_bridge(config.builtin_bridge),
            cache: Cache::open(config.attachments_dir())?,
            catalog: RwLock::new(Catalog::default()),
            ports_lock: Mutex::new(()),
            config,
        };
        networks.reload()?;
        if !networks
            .read_catalog()
            .lists
            .contains_key(&networks.config.default_network)
        {
            networks.create_default()?;
        }
        let lists: Vec<NetworkList> = networks.read_catalog().lists.values().cloned().collect();
        for list in &lists {
            guard_localnet(list);
            networks.ensure_network_rules(list)?;
        }
        Ok(networks)
    }

    /// The settings this instance runs with.
    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// Reads the configuration directory again (files are `*.conflist`, `*.conf`, `*.json`, in name order; the
    /// first file defining a name wins).
    pub fn reload(&self) -> Result<()> {
        let catalog = load_catalog(&self.config.conf_dir)?;
        for error in &catalog.errors {
            tracing::warn!("skipping CNI configuration: {error}");
        }
        *self.catalog.write().map_err(|_| poisoned())? = catalog;
        Ok(())
    }

    /// The files that could not be loaded, as "path: why".
    pub fn load_errors(&self) -> Vec<String> {
        self.read_catalog().errors.clone()
    }

    /// What `mode` means: `bridge` (or empty) is the default network, `host` and `none` are themselves, any other
    /// name is a configured network.
    pub fn mode_of(&self, net: &NetworkConfig) -> Mode {
        match net.mode() {
            "host" => Mode::Host,
            "none" => Mode::None,
            "bridge" => Mode::Cni(self.config.default_network.clone()),
            name => Mode::Cni(name.to_string()),
        }
    }

    /// Connects sandbox `sandbox_id` whose network namespace is `netns` as `net` asks, and returns what it got.
    ///
    /// - `host`: nothing is done (the caller shares the host's namespace); published ports are refused.
    /// - `none`: `lo` is brought up; published ports are refused.
    /// - `bridge` or a network name: `lo` is brought up, then ADD runs for each plugin of the network's list with
    ///   the previous plugin's result and, for plugins declaring the `portMappings` capability, the published
    ///   ports. Ports are checked first (another sandbox of this daemon, another CNI user's rule, a host process
    ///   listening): a taken port fails with an error naming it, before anything is created. A host port of 0
    ///   asks husk to pick a free one from 32768-60999 (what `-P` needs); the returned status has the real
    ///   ports. The inputs and each step's result are cached so [`teardown`](Self::teardown) works after a
    ///   restart; when a plugin fails, everything done so far is deleted again.
    pub fn setup(
        &self,
        sandbox_id: &str,
        netns: &Path,
        net: &NetworkConfig,
    ) -> Result<NetworkStatus> {
        validate_sandbox_id(sandbox_id)?;
        dns::validate(net)?;
        ports::validate(&net.ports)?;
        let network = match self.mode_of(net) {
            Mode::Host => {
                refuse_ports(net, "host")?;
                return Ok(NetworkStatus {
                    network: "host".into(),
                    ..NetworkStatus::default()
                });
            }
            Mode::None => {
                refuse_ports(net, "none")?;
                netns::loopback_up(netns)?;
                return Ok(NetworkStatus {
                    network: "none".into(),
                    ..NetworkStatus::default()
                });
            }
            Mode::Cni(name) => name,
        };
        self.forget_unfinished(sandbox_id)?;
        netns::loopback_up(netns)?;
        let record = self.record_intent(sandbox_id, &network, netns, &net.ports)?;
        // Plugin errors name the network and the plugin already.
        self.add(record, netns)
            .map_err(|e| e.context(format!("attach sandbox {}", short(sandbox_id))))
    }

    /// Runs CHECK for the sandbox's attachment with the cached configuration and result. Fails with `NotFound`
    /// when the sandbox has no attachment (modes `host` and `none` have none). Lists older than CNI 0.4.0 and
    /// lists with `disableCheck` pass without running plugins.
    pub fn check(&self, sandbox_id: &str, netns: &Path) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        let record = self
            .cache
            .get(sandbox_id)?
            .filter(|r| r.complete)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "network attachment of sandbox {}",
                    short(sandbox_id)
                ))
            })?;
        if !netns.exists() {
            return Err(Error::not_found(format!(
                "network namespace {}",
                netns.display()
            )));
        }
        let list = record.list()?;
        if !list.supports_check() {
            return Ok(());
        }
        let caps = capability_args(&record.ports);
        let call = Invocation {
            command: CniCommand::Check,
            container_id: record.cni_container_id(),
            netns: Some(netns),
            ifname: &record.ifname,
        };
        let has_ipv6 = parse_result(&record, &list)?
            .sandbox_addresses(&record.ifname)
            .iter()
            .any(IpAddr::is_ipv6);
        for index in 0..list.plugins.len() {
            if list.plugin_idle(index, &caps) {
                continue;
            }
            let ty = list.plugin_type(index);
            let stdin = list.plugin_stdin(index, record.result.as_ref(), &caps);
            match self.runner.run(&list.name, ty, &call, &stdin) {
                Err(e) if ty == "portmap" && !has_ipv6 && is_portmap_ipv6_check_bug(&e) => {
                    tracing::debug!(sandbox = %sandbox_id, "ignoring portmap's IPv6 CHECK of an IPv4-only sandbox: {e}");
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Disconnects a sandbox: DEL for each plugin, last first, with the cached configuration and result. Works
    /// without the namespace (`netns` `None` or already deleted) and after a daemon restart; does nothing for a
    /// sandbox without an attachment, so it may be called any number of times. Releases the address, removes
    /// the veth, the iptables rules and the cache entry, and removes the sandbox's name files. When a plugin
    /// fails the cache entry is kept, so a later call can finish the job (see [`forget`](Self::forget) for one
    /// that never can).
    pub fn teardown(&self, sandbox_id: &str, netns: Option<&Path>) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        if let Some(record) = self.cache.get(sandbox_id)? {
            self.delete(&record, netns)?;
            self.cache.remove(sandbox_id)?;
        }
        self.remove_files(sandbox_id)
    }

    /// Hands the finished attachment of `from_id` (made ahead of time, for a pool of ready network namespaces)
    /// to sandbox `to_id`, whose network namespace (the same one) is now pinned at `netns`, and returns its
    /// status. Only when `net` asks for what the attachment has: the same network, configured as it was at ADD
    /// (an edited or recreated network is never served from an older attachment), and no published ports.
    /// Otherwise returns `None` and changes nothing. The plugins keep knowing the attachment by `from_id`
    /// (`CNI_CONTAINERID`), which CHECK and DEL go on using.
    pub fn adopt(
        &self,
        from_id: &str,
        to_id: &str,
        netns: &Path,
        net: &NetworkConfig,
    ) -> Result<Option<NetworkStatus>> {
        validate_sandbox_id(from_id)?;
        validate_sandbox_id(to_id)?;
        dns::validate(net)?;
        let Mode::Cni(name) = self.mode_of(net) else {
            return Ok(None);
        };
        let Some(record) = self.cache.get(from_id)?.filter(|r| r.complete) else {
            return Ok(None);
        };
        if !net.ports.is_empty() || !record.ports.is_empty() || record.network != name {
            return Ok(None);
        }
        let list = match self.network(&name) {
            Ok(list) => list,
            Err(e) if e.kind == husk_core::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if list.to_json() != record.config {
            return Ok(None);
        }
        let status = parse_result(&record, &list)?.to_status(&record.network, &record.ifname, &[]);
        let adopted = Attachment {
            container_id: record.cni_container_id().to_string(),
            sandbox_id: to_id.to_string(),
            netns: netns.to_path_buf(),
            ..record
        };
        self.cache.put(&adopted)?;
        self.cache.remove(from_id)?;
        Ok(Some(status))
    }

    /// The `CNI_CONTAINERID`s that attachments of other sandboxes took over with [`adopt`](Self::adopt).
    pub fn adopted_container_ids(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .cache
            .all()?
            .into_iter()
            .filter(|r| !r.container_id.is_empty() && r.container_id != r.sandbox_id)
            .map(|r| r.container_id)
            .collect())
    }

    /// Forgets a sandbox's attachment without running any plugin: removes its cache entry and name files. The
    /// last resort when [`teardown`](Self::teardown) keeps failing for a reason that cannot go away (the cached
    /// configuration is one the plugins refuse); whatever the plugins made stays behind.
    pub fn forget(&self, sandbox_id: &str) -> Result<()> {
        validate_sandbox_id(sandbox_id)?;
        if let Some(record) = self.cache.get(sandbox_id)? {
            tracing::warn!(sandbox = %sandbox_id, network = %record.network, "forgetting a network attachment without DEL");
        }
        self.cache.remove(sandbox_id)?;
        self.remove_files(sandbox_id)
    }

    /// The network identity recorded for a sandbox (after a restart, for example); `None` without a finished
    /// attachment.
    pub fn status(&self, sandbox_id: &str) -> Result<Option<NetworkStatus>> {
        validate_sandbox_id(sandbox_id)?;
        let Some(record) = self.cache.get(sandbox_id)?.filter(|r| r.complete) else {
            return Ok(None);
        };
        let list = record.list()?;
        let result = parse_result(&record, &list)?;
        Ok(Some(result.to_status(
            &record.network,
            &record.ifname,
            &record.ports,
        )))
    }

    /// The paths of a sandbox's `hosts`, `resolv.conf` and `hostname` (whether written or not).
    pub fn files(&self, sandbox_id: &str) -> Result<SandboxFiles> {
        validate_sandbox_id(sandbox_id)?;
        Ok(SandboxFiles::in_dir(
            self.config.sandboxes_dir().join(sandbox_id),
        ))
    }

    /// Writes a sandbox's `hosts` (localhost, `--add-host` entries, its own addresses with `hostname`),
    /// `resolv.conf` (see [`crate::dns`] for the rules) and `hostname`; `status` is what
    /// [`setup`](Self::setup) returned. The drivers bind-mount the files into the containers.
    pub fn write_files(
        &self,
        sandbox_id: &str,
        hostname: &str,
        net: &NetworkConfig,
        status: &NetworkStatus,
    ) -> Result<SandboxFiles> {
        dns::validate_hostname(hostname)?;
        dns::validate(net)?;
        let files = self.files(sandbox_id)?;
        let host_mode = self.mode_of(net) == Mode::Host;
        let gateway = status.gateway.parse().ok();
        let ctx = NameContext {
            hostname,
            addresses: status
                .addresses
                .iter()
                .filter_map(|a| address_of(a))
                .collect(),
            gateway,
            host_mode,
        };
        let extra = dns::parse_extra_hosts(&net.extra_hosts, gateway)?;
        let host_hosts = if host_mode {
            std::fs::read_to_string("/etc/hosts").context("read /etc/hosts")?
        } else {
            String::new()
        };
        let resolv = dns::host_resolv(&self.config.host_resolv_conf)?;
        let hosts = dns::hosts_content(&ctx, &extra, &host_hosts);
        let resolv_conf = dns::resolv_conf_content(&ctx, net, &resolv);
        dns::write(&files, &hosts, &resolv_conf, hostname)?;
        Ok(files)
    }

    /// A record left by an ADD that never finished (the daemon died in the middle) is undone before a new
    /// setup; a finished one means the sandbox is already attached.
    fn forget_unfinished(&self, sandbox_id: &str) -> Result<()> {
        match self.cache.get(sandbox_id)? {
            Some(record) if record.complete => Err(Error::conflict(format!(
                "sandbox {} is already attached to network {:?}; tear it down first",
                short(sandbox_id),
                record.network
            ))),
            Some(record) => {
                self.roll_back(&record, &record.netns);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Checks the ports and writes the intent record, under the ports lock so no other setup can take the
    /// same port in between.
    fn record_intent(
        &self,
        sandbox_id: &str,
        network: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Attachment> {
        let list = self.network(network)?;
        let _ports = self.ports_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !ports.is_empty() && !list.has_capability("portMappings") {
            return Err(Error::invalid(
                "ports",
                format!(
                    "network {network:?} has no plugin with the portMappings capability (such as \
                     portmap); cannot publish ports"
                ),
            ));
        }
        let ports = if ports.is_empty() {
            Vec::new()
        } else {
            self.claim_ports(sandbox_id, ports)?
        };
        // Hold the catalog (read) until the record exists, so `remove` cannot delete the network in between.
        let _catalog = self.read_catalog();
        let record = Attachment::new(sandbox_id, &list, SANDBOX_IFNAME, netns, &ports);
        self.cache.put(&record)?;
        Ok(record)
    }

    /// The request's ports, in order, with every host port 0 (`-P`) replaced by a free one from the dynamic
    /// range, after checking that each is free:
    /// not published by another sandbox of this daemon, not forwarded by another CNI user's rule, not bound
    /// by a host process.
    fn claim_ports(&self, sandbox_id: &str, wanted: &[PortMapping]) -> Result<Vec<PortMapping>> {
        let others: Vec<Attachment> = self
            .cache
            .all()?
            .into_iter()
            .filter(|a| a.sandbox_id != sandbox_id)
            .collect();
        let rules = iptables::forwarded_ports().unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read forwarded ports from iptables, checking only this daemon's: {e}"
            );
            Vec::new()
        });
        let taken = |port: &PortMapping| -> Result<()> {
            for other in &others {
                for theirs in &other.ports {
                    let ip = ports::host_ip(theirs)?;
                    if ports::overlaps(port, ip, theirs.host_port, theirs.protocol.as_str()) {
                        return Err(ports::taken_by_sandbox(port, &other.sandbox_id));
                    }
                }
            }
            if let Some(rule) = ports::find_forwarded(port, &rules, sandbox_id) {
                return Err(ports::taken_by_rule(port, rule));
            }
            ports::check_bindable(port)
        };
        // Fixed host ports first, so a picked one never takes a port the request names itself.
        let mut claimed: Vec<PortMapping> = Vec::with_capacity(wanted.len());
        for port in wanted.iter().filter(|p| p.host_port != 0) {
            taken(port)?;
            claimed.push(port.clone());
        }
        let mut result = Vec::with_capacity(wanted.len());
        for port in wanted {
            if port.host_port != 0 {
                result.push(port.clone());
                continue;
            }
            let is_free = |candidate: &PortMapping| {
                let ip = ports::host_ip(candidate).ok().flatten();
                let clash = claimed.iter().any(|c| {
                    ports::overlaps(c, ip, candidate.host_port, candidate.protocol.as_str())
                });
                !clash && taken(candidate).is_ok()
            };
            let free = ports::DYNAMIC_RANGE
                .map(|host_port| PortMapping {
                    host_port,
                    ..port.clone()
                })
                .find(is_free)
                .ok_or_else(|| {
                    let what = format!("{}/{}", port.container_port, port.protocol);
                    Error::conflict(format!("no free host port to publish {what}"))
                })?;
            claimed.push(free.clone());
            result.push(free);
        }
        Ok(result)
    }

    fn add(&self, mut record: Attachment, netns: &Path) -> Result<NetworkStatus> {
        let list = record.list()?;
        let caps = capability_args(&record.ports);
        let call = Invocation {
            command: CniCommand::Add,
            container_id: &record.sandbox_id.clone(),
            netns: Some(netns),
            ifname: SANDBOX_IFNAME,
        };
        for index in 0..list.plugins.len() {
            if list.plugin_idle(index, &caps) {
                record.plugins_added = index + 1;
                continue;
            }
            let stdin = list.plugin_stdin(index, record.result.as_ref(), &caps);
            let step = self
                .runner
                .run(&list.name, list.plugin_type(index), &call, &stdin)
                .and_then(|result| {
                    record.result = result;
                    record.plugins_added = index + 1;
                    self.cache.put(&record)
                });
            if let Err(err) = step {
                self.roll_back(&record, netns);
                return Err(err);
            }
        }
        let result = parse_result(&record, &list);
        let status = result.map(|r| r.to_status(&record.network, SANDBOX_IFNAME, &record.ports));
        record.complete = true;
        match status.and_then(|s| self.cache.put(&record).map(|_| s)) {
            Ok(status) => Ok(status),
            Err(err) => {
                self.roll_back(&record, netns);
                Err(err)
            }
        }
    }

    /// Undoes a setup that failed (or was cut off by a crash): DEL, then the record goes whatever DEL said. A DEL
    /// that fails here would fail the same way on every later try with the same cached inputs (typically the
    /// configuration the ADD already choked on), and keeping the record would block the sandbox for good.
    fn roll_back(&self, record: &Attachment, netns: &Path) {
        if let Err(e) = self.delete(record, Some(netns)) {
            tracing::warn!("undoing a failed network setup: {e}");
        }
        if let Err(e) = self.cache.remove(&record.sandbox_id) {
            tracing::warn!("{e}");
        }
    }

    /// DEL for the plugins of the record's list that ran ADD (all of them once it completed; up to the one that
    /// failed or was cut off otherwise), last first; every plugin is tried even after one failed.
    fn delete(&self, record: &Attachment, netns: Option<&Path>) -> Result<()> {
        let list = record.list()?;
        let caps = capability_args(&record.ports);
        let netns = netns
            .filter(|p| p.exists())
            .or_else(|| Some(record.netns.as_path()).filter(|p| p.exists()));
        let call = Invocation {
            command: CniCommand::Del,
            container_id: record.cni_container_id(),
            netns,
            ifname: &record.ifname,
        };
        let ran = if record.complete {
            list.plugins.len()
        } else {
            (record.plugins_added + 1).min(list.plugins.len())
        };
        let mut errors: Vec<Error> = Vec::new();
        for index in (0..ran).rev() {
            if list.plugin_idle(index, &caps) {
                continue;
            }
            let unfinished = !record.complete && index == record.plugins_added;
            let stdin = list.plugin_stdin(index, record.result.as_ref(), &caps);
            if unfinished
                && !self
                    .runner
                    .can_run(&list.name, list.plugin_type(index), &stdin)
            {
                continue; // its ADD failed because the binary is missing: it never ran
            }
            if let Err(e) = self
                .runner
                .run(&list.name, list.plugin_type(index), &call, &stdin)
            {
                errors.push(e);
            }
        }
        if netns.is_none() && list.plugin_types().iter().any(|t| t == "bridge") {
            match iptables::remove_masquerade_rules(&list.name, record.cni_container_id()) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(sandbox = %record.sandbox_id, rules = n, "removed masquerade rules the bridge plugin left")
                }
                Err(e) => errors.push(e.context("remove the bridge plugin's masquerade rules")),
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors
                .remove(0)
                .context(format!("detach sandbox {}", short(&record.sandbox_id)))),
            n => {
                let all: Vec<String> = errors.iter().map(|e| e.message.clone()).collect();
                Err(Error::new(
                    errors[0].kind,
                    format!(
                        "detach sandbox {}: {n} plugins failed: {}",
                        short(&record.sandbox_id),
                        all.join("; ")
                    ),
                ))
            }
        }
    }

    fn remove_files(&self, sandbox_id: &str) -> Result<()> {
        let dir = self.files(sandbox_id)?.dir;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// portmap up to containernetworking-plugins 1.1 checks its IPv6 chain whenever ip6tables works, even for a
/// sandbox without an IPv6 address, where ADD never made that chain (fixed upstream after 1.1.1, "Only check
/// ipv6 when an IPv6 is configured"). Its CHECK then fails with this message for every IPv4 sandbox with ports.
fn is_portmap_ipv6_check_bug(err: &Error) -> bool {
    err.message.contains("could not check ipv6 dnat")
}

fn guard_localnet(list: &NetworkList) {
    if !list.has_capability("portMappings") {
        return;
    }
    if let Some(bridge) = list.bridge_summary().bridge
        && let Err(e) = iptables::ensure_localnet_guard(&bridge)
    {
        tracing::warn!("network {:?}: {e}", list.name);
    }
}

fn capability_args(ports: &[PortMapping]) -> Map<String, Value> {
    let mut caps = Map::new();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), ports::runtime_config(ports));
    }
    caps
}

fn parse_result(record: &Attachment, list: &NetworkList) -> Result<CniResult> {
    let last = list.plugin_type(list.plugins.len() - 1);
    let value = record.result.as_ref().ok_or_else(|| {
        Error::backend(format!(
            "network {:?}: the plugins returned no result",
            record.network
        ))
    })?;
    CniResult::from_value(value, &record.network, last)
}

fn refuse_ports(net: &NetworkConfig, mode: &str) -> Result<()> {
    if net.ports.is_empty() {
        return Ok(());
    }
    let why = if mode == "host" {
        "the sandbox uses the host's ports directly"
    } else {
        "the sandbox has no network"
    };
    Err(Error::invalid(
        "ports",
        format!("ports cannot be published in network mode {mode} ({why})"),
    ))
}

/// Sandbox IDs name files and appear in iptables comments: letters, digits, `-`, `_`, `.`, at most 128.
fn validate_sandbox_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("id", format!("invalid sandbox ID {id:?}")))
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn poisoned() -> Error {
    Error::new(ErrorKind::Internal, "the network catalog lock is poisoned")
}
#[cfg(test)]
mod tests;
