//! This host as a compute node: its CPUs, memory, disk, kernel and runtimes, what its containers hold, and the
//! state of its compute service (enabled, disabled with a reason, forced down). A disabled service takes no new
//! containers, as a disabled Zun compute host gets none from the scheduler.

use husk_core::{ContainerRecord, ContainerStatus, Error, Result};
use husk_store::Object;
use serde::{Deserialize, Serialize};

use crate::Engine;

/// The name of the compute service.
pub const COMPUTE_BINARY: &str = "zun-compute";

/// Facts about the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Stable ID (a UUID).
    pub uuid: String,
    /// Host name.
    pub hostname: String,
    /// Memory in MiB.
    pub mem_total: u64,
    /// Memory in use in MiB (total less available).
    pub mem_used: u64,
    /// Memory available in MiB.
    pub mem_free: u64,
    /// CPUs online.
    pub cpus: u32,
    /// CPUs reserved by containers' limits.
    pub cpu_used: f64,
    /// Disk of the state root in GiB.
    pub disk_total: u64,
    /// Disk used in GiB.
    pub disk_used: u64,
    /// Containers on the host.
    pub total_containers: usize,
    /// Running containers.
    pub running_containers: usize,
    /// The distribution (`Debian GNU/Linux 12 (bookworm)`).
    pub os: String,
    /// `linux`.
    pub os_type: String,
    /// `x86_64`.
    pub architecture: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Runtimes (drivers) this daemon runs.
    pub runtimes: Vec<String>,
}

/// The state of the host's compute service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// `zun-compute`.
    pub binary: String,
    /// The host.
    pub host: String,
    /// Takes no new containers.
    pub disabled: bool,
    /// Why.
    pub disabled_reason: Option<String>,
    /// Reported down by an operator.
    pub forced_down: bool,
    /// When it first registered.
    pub created_at: husk_core::Timestamp,
    /// When an operator last changed it.
    pub updated_at: Option<husk_core::Timestamp>,
}

impl Object for ServiceRecord {
    const KIND: &'static str = "service";
    fn id(&self) -> &str {
        &self.binary
    }
}

/// The host's stable ID, kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HostIdRecord {
    id: String,
    uuid: String,
}

impl Object for HostIdRecord {
    const KIND: &'static str = "host";
    fn id(&self) -> &str {
        &self.id
    }
}

/// What a change to the service sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// Take new containers again.
    Enable,
    /// Take none, for this reason.
    Disable(Option<String>),
    /// Report (or stop reporting) the service down.
    ForceDown(bool),
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `MemTotal` and `MemAvailable` from /proc/meminfo, in KiB.
fn meminfo() -> (u64, u64) {
    let text = read("/proc/meminfo");
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn os_name() -> String {
    read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The host name.
pub fn hostname() -> String {
    let h = read("/proc/sys/kernel/hostname").trim().to_string();
    if h.is_empty() { "localhost".into() } else { h }
}

impl Engine {
    fn host_uuid(&self) -> Result<String> {
        if let Some(r) = self.inner.store.get::<HostIdRecord>("self")? {
            return Ok(r.uuid);
        }
        let h = husk_core::new_id();
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        );
        self.inner.store.upsert(&HostIdRecord {
            id: "self".into(),
            uuid: uuid.clone(),
        })?;
        Ok(uuid)
    }

    /// Facts about this host and what its containers use.
    pub fn host_info(&self) -> Result<HostInfo> {
        let (total_kib, available_kib) = meminfo();
        let containers = self.inner.store.list::<ContainerRecord>()?;
        let active: Vec<&ContainerRecord> =
            containers.iter().filter(|c| c.status.is_active()).collect();
        let (disk_total, disk_used) = match rustix::fs::statvfs(&self.inner.config.root) {
            Ok(s) => {
                let block = s.f_frsize;
                let gib = 1u64 << 30;
                (
                    s.f_blocks * block / gib,
                    (s.f_blocks - s.f_bfree) * block / gib,
                )
            }
            Err(_) => (0, 0),
        };
        Ok(HostInfo {
            uuid: self.host_uuid()?,
            hostname: hostname(),
            mem_total: total_kib / 1024,
            mem_used: total_kib.saturating_sub(available_kib) / 1024,
            mem_free: available_kib / 1024,
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            cpu_used: active
                .iter()
                .map(|c| c.config.resources.nano_cpus.unwrap_or(0) as f64 / 1e9)
                .sum(),
            disk_total,
            disk_used,
            total_containers: containers.len(),
            running_containers: active
                .iter()
                .filter(|c| c.status == ContainerStatus::Running)
                .count(),
            os: os_name(),
            os_type: "linux".into(),
            architecture: std::env::consts::ARCH.into(),
            kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
            runtimes: self.inner.drivers.keys().cloned().collect(),
        })
    }

    /// The compute service's state (registered, enabled, the first time it is asked for).
    pub fn compute_service(&self) -> Result<ServiceRecord> {
        if let Some(s) = self.inner.store.get::<ServiceRecord>(COMPUTE_BINARY)? {
            return Ok(s);
        }
        let s = ServiceRecord {
            binary: COMPUTE_BINARY.into(),
            host: hostname(),
            disabled: false,
            disabled_reason: None,
            forced_down: false,
            created_at: husk_core::Timestamp::now(),
            updated_at: None,
        };
        self.inner.store.upsert(&s)?;
        Ok(s)
    }

    /// Changes the compute service's state.
    pub fn change_service(
        &self,
        host: &str,
        binary: &str,
        change: ServiceChange,
    ) -> Result<ServiceRecord> {
        let mut s = self.compute_service()?;
        if binary != COMPUTE_BINARY || host != s.host {
            return Err(Error::not_found(format!("service {binary} on host {host}")));
        }
        match change {
            ServiceChange::Enable => {
                s.disabled = false;
                s.disabled_reason = None;
            }
            ServiceChange::Disable(reason) => {
                s.disabled = true;
                s.disabled_reason = reason;
            }
            ServiceChange::ForceDown(down) => s.forced_down = down,
        }
        s.updated_at = Some(husk_core::Timestamp::now());
        self.inner.store.upsert(&s)?;
        Ok(s)
    }

    /// Forgets the service's state: it registers again, enabled, as a restarted Zun compute service does.
    pub fn reset_service(&self, host: &str, binary: &str) -> Result<()> {
        let s = self.compute_service()?;
        if binary != COMPUTE_BINARY || host != s.host {
            return Err(Error::not_found(format!("service {binary} on host {host}")));
        }
        self.inner.store.delete::<ServiceRecord>(COMPUTE_BINARY)?;
        self.compute_service().map(|_| ())
    }

    /// Refuses new containers while the compute service is disabled or forced down.
    pub(crate) fn check_service(&self) -> Result<()> {
        let Some(s) = self.inner.store.get::<ServiceRecord>(COMPUTE_BINARY)? else {
            return Ok(());
        };
        if s.disabled || s.forced_down {
            return Err(Error::conflict(format!(
                "There are not enough hosts available: the compute service of {} is {}{}",
                s.host,
                if s.forced_down {
                    "forced down"
                } else {
                    "disabled"
                },
                s.disabled_reason
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_read() {
        let (total, available) = meminfo();
        assert!(total > 0 && available > 0 && available <= total);
        assert!(!os_name().is_empty());
        assert!(!hostname().is_empty());
    }
}
