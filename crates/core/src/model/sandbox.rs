//! Sandboxes: what the engine decided for one (namespaces, user namespace, network) and what is known of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Everything a driver needs to make a sandbox real.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Hostname inside the sandbox.
    pub hostname: String,
    /// Whether the sandbox's containers share one PID namespace.
    #[serde(default)]
    pub share_pid: bool,
    /// Whether the sandbox's containers run in the host's PID namespace (then `share_pid` is moot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_pid: bool,
    /// Whether the sandbox's containers run in the host's IPC namespace (and see the host's `/dev/shm`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ipc: bool,
    /// IPC and UTS namespaces (and `/dev/shm`) are each container's own, made at each start, not the
    /// sandbox's: set on the sandbox `run` makes for one container, which has nobody to share them with (Docker's
    /// default private IPC). The `linux` driver then pins only the network namespace, which keeps the
    /// container's address across restarts; other drivers ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private_ipc_uts: bool,
    /// A user namespace of the sandbox's own, which every container of it joins; `None` = the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespaceConfig>,
    /// Network.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Limits for the sandbox as a whole (the VM size for the `vm` driver).
    #[serde(default)]
    pub resources: Resources,
    /// The cgroup (a cgroupfs path such as `/kubepods/besteffort/pod<uid>`) its containers' cgroups are made
    /// under, instead of the driver's own parent (the CRI's `LinuxPodSandboxConfig.cgroup_parent`); see
    /// [`crate::units::validate_cgroup_parent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// User labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations: free-form data for the front end that made it (the CRI keeps a pod's here), never
    /// interpreted by husk.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `size` consecutive IDs: `container_id` and on inside a user namespace are `host_id` and on outside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// The first ID inside the namespace.
    pub container_id: u32,
    /// The ID it is on the host.
    pub host_id: u32,
    /// How many IDs the range holds.
    pub size: u32,
}

impl IdMapping {
    /// The host ID of `id` inside the namespace, if this range maps it.
    pub fn host_of(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.container_id)?;
        (offset < self.size).then(|| self.host_id + offset)
    }

    /// The line of `/proc/PID/uid_map` (or `gid_map`) for this range.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.size)
    }
}

/// A sandbox's own user namespace: the containers' root is an unprivileged ID on the host.
///
/// One range for user IDs and one for group IDs, each mapping the namespace's ID 0 (as Kubernetes asks for a
/// pod with `hostUsers: false`); see [`UserNamespaceConfig::validate`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespaceConfig {
    /// User ID ranges (exactly one).
    pub uid_mappings: Vec<IdMapping>,
    /// Group ID ranges (exactly one).
    pub gid_mappings: Vec<IdMapping>,
}

impl UserNamespaceConfig {
    /// Checks the mappings: exactly one range each for users and groups, not empty, not wrapping around, and
    /// mapping ID 0 inside (the containers' root must be someone). `field` names the request field in errors.
    pub fn validate(&self, field: &str) -> Result<()> {
        for (kind, maps) in [("uids", &self.uid_mappings), ("gids", &self.gid_mappings)] {
            let [m] = maps.as_slice() else {
                return Err(Error::invalid(
                    format!("{field}.{kind}"),
                    format!(
                        "{field}.{kind}: a pod's user namespace takes exactly one {kind} mapping, not {}",
                        maps.len()
                    ),
                ));
            };
            if m.size == 0
                || m.container_id.checked_add(m.size - 1).is_none()
                || m.host_id.checked_add(m.size - 1).is_none()
            {
                return Err(Error::invalid(
                    format!("{field}.{kind}"),
                    format!(
                        "{field}.{kind}: the mapping {} {} {} is empty or goes past the largest ID",
                        m.container_id, m.host_id, m.size
                    ),
                ));
            }
            if m.host_of(0).is_none() {
                return Err(Error::invalid(
                    format!("{field}.{kind}"),
                    format!(
                        "{field}.{kind}: the mapping {} {} {} does not map the container's ID 0",
                        m.container_id, m.host_id, m.size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The host user ID of the namespace's root.
    pub fn host_root_uid(&self) -> Option<u32> {
        self.uid_mappings.iter().find_map(|m| m.host_of(0))
    }

    /// The host group ID of the namespace's root.
    pub fn host_root_gid(&self) -> Option<u32> {
        self.gid_mappings.iter().find_map(|m| m.host_of(0))
    }
}

/// What a driver reports about a sandbox it made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxRuntime {
    /// Namespace files by type (`net`, `ipc`, `uts`, `pid`), where the driver has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespaces: BTreeMap<String, String>,
    /// PID of the process that holds the sandbox (pause process, infra container, QEMU), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Network state (addresses, ports) when the sandbox has networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// The driver's own data (infra container ID, VM sockets ...), opaque to everyone else.
    #[serde(default)]
    pub driver_data: serde_json::Value,
}

/// Where a sandbox is in its life; its JSON form is the lower-case name (`"notready"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    /// Being made: stored before the driver makes it, so a crash leaves a record to clean up.
    Creating,
    /// Made, with every namespace (or its VM) alive.
    Ready,
    /// Stopped, being removed, or found dead (its pause process, infra container or VM gone).
    NotReady,
    /// The driver failed to make or find it.
    Error,
    /// Found on the host with no record (a leftover the driver reports; never stored).
    Orphan,
}

crate::names::named_values!(SandboxStatus {
    Creating => "creating",
    Ready => "ready",
    NotReady => "notready",
    Error => "error",
    Orphan => "orphan",
});

/// A stored sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// What was asked for.
    pub config: SandboxConfig,
    /// The driver that made it.
    pub driver: String,
    /// Where the sandbox is in its life.
    pub status: SandboxStatus,
    /// What the driver made.
    #[serde(default)]
    pub runtime: SandboxRuntime,
    /// When it was created.
    pub created_at: Timestamp,
    /// The container this sandbox was made for, when `husk run` made it implicitly; it goes with that container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_container: Option<String>,
    /// The project that owns it.
    #[serde(default)]
    pub project: String,
}
