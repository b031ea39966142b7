//! Networks as the API shows them, and what `network create` asks for.

use std::path::PathBuf;

use husk_core::PortMapping;
use serde::Serialize;
use serde_json::Value;

/// A network as `network ls` and `network inspect` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkInfo {
    /// Network name.
    pub name: String,
    /// Whether this is the network of mode `bridge`.
    pub default: bool,
    /// The list's CNI version.
    pub cni_version: String,
    /// Plugin types, in order.
    pub plugins: Vec<String>,
    /// The Linux bridge, for bridge networks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Subnets of its IPAM ranges.
    pub subnets: Vec<String>,
    /// Gateways of its IPAM ranges.
    pub gateways: Vec<String>,
    /// The configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The configuration list.
    pub config: Value,
    /// Sandboxes attached to it now.
    pub attached: Vec<AttachedSandbox>,
}

/// A sandbox attached to a network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttachedSandbox {
    /// Sandbox ID.
    pub sandbox_id: String,
    /// Its addresses (empty while an ADD is under way or after one failed half-way).
    pub addresses: Vec<String>,
    /// Its MAC address.
    pub mac: String,
    /// Its published ports.
    pub ports: Vec<PortMapping>,
}

/// What `network create` asks for. Unset fields are chosen by husk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewNetwork {
    /// Network name.
    pub name: String,
    /// Subnet in CIDR notation (default: the first free `10.89.N.0/24`).
    pub subnet: Option<String>,
    /// Gateway (default: the first address of the subnet).
    pub gateway: Option<String>,
    /// Linux bridge (default: the first free `huskN`).
    pub bridge: Option<String>,
}
