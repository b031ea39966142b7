//! What a container may use: CPU, memory and I/O limits, and host devices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Resource limits of a container (or a VM sandbox).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU (Docker's NanoCpus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Most processes/threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Relative CPU weight against other containers (cgroup v1 `cpu.shares`, Docker's `--cpu-shares`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (`0-3,6`; Docker's `--cpuset-cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (`0-1`; Docker's `--cpuset-mems`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
    /// Size of `/dev/shm` in bytes (Docker's `--shm-size`; 64 MiB without it). A sandbox's containers share
    /// the sandbox's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size_bytes: Option<i64>,
    /// The `oom_score_adj` of the container's processes (-1000 to 1000; Docker's `--oom-score-adj`, the CRI's
    /// `oom_score_adj`). The engine never stores a value below the daemon's own (see
    /// [`crate::units::restrict_oom_score_adj`]): a container may not be harder to kill than husk itself.
    /// `None`: inherited from the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// Memory plus swap limit in bytes, `-1` for unlimited swap (Docker's `--memory-swap`, the CRI's
    /// `memory_swap_limit_in_bytes`, the OCI `memory.swap`). Needs `memory_bytes`, and is at least as much. Equal
    /// to `memory_bytes`, it means no swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap_bytes: Option<i64>,
    /// Huge page limits in bytes by page size as the kernel names them (`2MB`, `1GB`; the cgroup's
    /// `hugetlb.<size>.limit_in_bytes` or `hugetlb.<size>.max`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 files and their values, written as they are (the OCI `linux.resources.unified`); only a host
    /// on the unified hierarchy has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

impl Resources {
    /// Whether the resources ask for swap other than none: a memory-plus-swap limit above the memory limit, or
    /// unlimited (`-1`).
    pub fn asks_for_swap(&self) -> bool {
        match (self.memory_swap_bytes, self.memory_bytes) {
            (None, _) => false,
            (Some(swap), Some(memory)) => swap != memory,
            (Some(_), None) => true,
        }
    }
}

/// A host device made available in a container (Docker's `--device HOST[:CONTAINER[:PERMISSIONS]]`, the CRI's
/// `devices`).
///
/// Front ends fill `host_path`, `container_path` and `permissions`; the engine checks that the host path is a
/// character or block device and fills in what it found there (`kind`, `major`, `minor`, `file_mode`), so a
/// driver never looks at the host path again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// The device on the host (`/dev/fuse`).
    pub host_path: String,
    /// Where it appears in the container (empty: the host path).
    #[serde(default)]
    pub container_path: String,
    /// What the container may do with it, some of `r` (read), `w` (write) and `m` (mknod); empty: `rwm`.
    #[serde(default)]
    pub permissions: String,
    /// `c` (character) or `b` (block), as the engine found the host path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The device's major number.
    #[serde(default)]
    pub major: i64,
    /// The device's minor number.
    #[serde(default)]
    pub minor: i64,
    /// The permission bits of the host's device node, which the container's copy gets.
    #[serde(default)]
    pub file_mode: u32,
}

impl DeviceMapping {
    /// Parses Docker's `HOST[:CONTAINER[:PERMISSIONS]]`; `HOST:PERMISSIONS` also works (a second part that is
    /// not a path but permissions).
    pub fn parse(text: &str) -> Result<DeviceMapping> {
        let parts: Vec<&str> = text.split(':').collect();
        let (host, container, permissions) = match parts.as_slice() {
            [h] => (*h, "", ""),
            [h, p] if !p.starts_with('/') && Self::valid_permissions(p) => (*h, "", *p),
            [h, c] => (*h, *c, ""),
            [h, c, p] => (*h, *c, *p),
            _ => {
                return Err(Error::invalid(
                    "devices",
                    format!("invalid device {text:?}: use HOST[:CONTAINER[:PERMISSIONS]]"),
                ));
            }
        };
        let device = DeviceMapping {
            host_path: host.to_string(),
            container_path: container.to_string(),
            permissions: permissions.to_string(),
            ..Default::default()
        };
        device.check_syntax()?;
        Ok(device)
    }

    /// Whether `p` is a set of permissions: `r`, `w` and `m`, each at most once, at least one.
    pub fn valid_permissions(p: &str) -> bool {
        !p.is_empty()
            && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            && p.chars().enumerate().all(|(i, c)| !p[..i].contains(c))
    }

    /// Checks what a front end gave: absolute paths, permissions from `rwm`.
    pub fn check_syntax(&self) -> Result<()> {
        if !self.host_path.starts_with('/') {
            return Err(Error::invalid(
                "devices",
                format!(
                    "devices: the host path {:?} is not an absolute path",
                    self.host_path
                ),
            ));
        }
        if !self.container_path.is_empty() && !self.container_path.starts_with('/') {
            return Err(Error::invalid(
                "devices",
                format!(
                    "devices: the container path {:?} of {} is not an absolute path",
                    self.container_path, self.host_path
                ),
            ));
        }
        if !self.permissions.is_empty() && !Self::valid_permissions(&self.permissions) {
            return Err(Error::invalid(
                "devices",
                format!(
                    "devices: the permissions {:?} of {} are not some of r, w and m",
                    self.permissions, self.host_path
                ),
            ));
        }
        Ok(())
    }

    /// Where the device appears in the container.
    pub fn path_in_container(&self) -> &str {
        if self.container_path.is_empty() {
            &self.host_path
        } else {
            &self.container_path
        }
    }

    /// What the container may do with the device (`rwm` unless restricted).
    pub fn access(&self) -> &str {
        if self.permissions.is_empty() {
            "rwm"
        } else {
            &self.permissions
        }
    }
}
