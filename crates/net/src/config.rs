//! Where husk's networking keeps its files, and the shape of the default network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use husk_core::{Error, Result};

use crate::subnet::Subnet;

/// Settings of [`Networks`](crate::Networks). Every path and name is configurable so that several daemons (or
/// tests) can run side by side with their own bridge, subnet and directories.
#[derive(Debug, Clone, PartialEq)]
pub struct CniConfig {
    /// Directory of the CNI configuration lists (`*.conflist`, and single-plugin `*.conf` / `*.json`).
    pub conf_dir: PathBuf,
    /// Directories searched, in order, for plugin binaries (`CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// husk's own network state: cached ADD results (`attachments/`), host-local IP allocations of the networks
    /// husk generates (`ipam/`) and the per-sandbox `hosts`, `resolv.conf` and `hostname` (`sandboxes/`).
    /// Lives under the daemon's state root so that it survives a daemon restart.
    pub state_dir: PathBuf,
    /// Name of the network that mode `bridge` means; created on first start when no list has this name.
    pub default_network: String,
    /// Subnet of the default network when husk creates it.
    pub default_subnet: String,
    /// Linux bridge of the default network when husk creates it (at most 15 bytes).
    pub default_bridge: String,
    /// The host's resolver configuration, the base of each sandbox's `resolv.conf`.
    pub host_resolv_conf: PathBuf,
    /// The longest one plugin may run before it is killed and the operation fails.
    pub plugin_timeout: Duration,
    /// Runs the `bridge` plugin (with host-local addresses) inside the daemon for the configurations it
    /// implements (husk's generated bridge networks) instead of exec'ing the binaries ([`crate::builtin`]).
    pub builtin_bridge: bool,
}

/// Default directory of configuration lists.
pub const DEFAULT_CONF_DIR: &str = "/etc/husk/cni";
/// Default plugin directories: Debian's `containernetworking-plugins`, then the upstream release layout.
pub const DEFAULT_PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// Default network name.
pub const DEFAULT_NETWORK: &str = "husk";
/// Default subnet of the default network.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// Default bridge of the default network.
pub const DEFAULT_BRIDGE: &str = "husk0";

impl CniConfig {
    /// The defaults, with the state kept under `root` (the daemon's state root, e.g. `/var/lib/husk`) in
    /// `root/net`.
    pub fn with_root(root: impl AsRef<Path>) -> Self {
        CniConfig {
            conf_dir: PathBuf::from(DEFAULT_CONF_DIR),
            plugin_dirs: DEFAULT_PLUGIN_DIRS.iter().map(PathBuf::from).collect(),
            state_dir: root.as_ref().join("net"),
            default_network: DEFAULT_NETWORK.to_string(),
            default_subnet: DEFAULT_SUBNET.to_string(),
            default_bridge: DEFAULT_BRIDGE.to_string(),
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            plugin_timeout: Duration::from_secs(60),
            builtin_bridge: true,
        }
    }

    /// Checks names and the subnet before anything is written.
    pub fn validate(&self) -> Result<()> {
        crate::conflist::validate_network_name(&self.default_network)
            .map_err(|e| e.context("default network"))?;
        Subnet::parse(&self.default_subnet).map_err(|e| e.context("default network"))?;
        validate_bridge_name(&self.default_bridge)?;
        if self.plugin_dirs.is_empty() {
            return Err(Error::bad_request("no CNI plugin directory configured"));
        }
        Ok(())
    }

    /// Cached ADD results, one file per sandbox.
    pub(crate) fn attachments_dir(&self) -> PathBuf {
        self.state_dir.join("attachments")
    }

    /// host-local's data directory for the networks husk generates.
    pub(crate) fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }

    /// Per-sandbox DNS and name files.
    pub(crate) fn sandboxes_dir(&self) -> PathBuf {
        self.state_dir.join("sandboxes")
    }
}

/// Checks a Linux interface name for a bridge: 1 to 15 bytes, no `/`, `:`, whitespace, not `.` or `..`.
pub fn validate_bridge_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "bridge",
            format!("invalid bridge name {name:?}: use 1 to 15 letters, digits, '-', '_' or '.'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_live_under_the_root() {
        let c = CniConfig::with_root("/var/lib/husk");
        assert_eq!(c.state_dir, Path::new("/var/lib/husk/net"));
        assert_eq!(c.conf_dir, Path::new("/etc/husk/cni"));
        assert_eq!(c.default_bridge, "husk0");
        assert!(c.validate().is_ok());
        assert_eq!(
            c.attachments_dir(),
            Path::new("/var/lib/husk/net/attachments")
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut c = CniConfig::with_root("/r");
        c.default_bridge = "a-very-long-bridge-name".into();
        assert!(c.validate().is_err());
        let mut c = CniConfig::with_root("/r");
        c.default_subnet = "10.88.0.0".into();
        assert!(c.validate().is_err());
        let mut c = CniConfig::with_root("/r");
        c.default_network = "has space".into();
        assert!(c.validate().is_err());
        assert!(validate_bridge_name("br/0").is_err());
        assert!(validate_bridge_name("hk-test_1").is_ok());
    }
}
