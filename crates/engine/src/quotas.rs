//! Per-project quotas on containers, CPUs, memory and disk, enforced when a container is created.
//!
//! A project's limits are its own where set, else its quota class's (`default`, whose own values fall back to
//! Zun's defaults: 40 containers, 20 CPUs, 51200 MiB, 100 GiB). `-1` means unlimited. The built-in default
//! project (local root's, and the one of an API without authentication) is unlimited unless a quota is set for
//! it explicitly: it belongs to the operator, not to a tenant.

use std::collections::BTreeMap;

use husk_core::{ContainerRecord, Error, ErrorKind, Resources, Result};
use husk_store::Object;
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_PROJECT, Engine};

/// The resources quotas limit.
pub const RESOURCES: [&str; 4] = ["containers", "cpu", "memory", "disk"];

/// Limits by resource (`containers`, `cpu`, `memory` in MiB, `disk` in GiB); -1 is unlimited.
pub type Limits = BTreeMap<String, i64>;

/// Zun's default limits.
pub fn builtin_defaults() -> Limits {
    Limits::from([
        ("containers".into(), 40),
        ("cpu".into(), 20),
        ("memory".into(), 51200),
        ("disk".into(), 100),
    ])
}

/// A project's own limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// Project ID.
    pub project: String,
    /// The limits set for it.
    pub limits: Limits,
}

impl Object for QuotaRecord {
    const KIND: &'static str = "quota";
    fn id(&self) -> &str {
        &self.project
    }
    fn project(&self) -> &str {
        &self.project
    }
}

/// A quota class's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaClassRecord {
    /// Class name (`default`).
    pub name: String,
    /// The limits set for it.
    pub limits: Limits,
}

impl Object for QuotaClassRecord {
    const KIND: &'static str = "quota_class";
    fn id(&self) -> &str {
        &self.name
    }
}

/// What a project uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Containers.
    pub containers: i64,
    /// CPUs (sum of the containers' limits).
    pub cpu: f64,
    /// MiB (sum of the containers' limits).
    pub memory: i64,
    /// GiB (husk sets no disk limits: always 0).
    pub disk: i64,
}

impl Usage {
    /// The value for a resource name.
    pub fn get(&self, resource: &str) -> f64 {
        match resource {
            "containers" => self.containers as f64,
            "cpu" => self.cpu,
            "memory" => self.memory as f64,
            _ => self.disk as f64,
        }
    }
}

/// Checks an update: known resources, values of -1 or more.
fn check_limits(updates: &Limits) -> Result<()> {
    for (k, v) in updates {
        if !RESOURCES.contains(&k.as_str()) {
            return Err(Error::invalid(
                k,
                format!("unknown quota resource {k:?}: use containers, cpu, memory or disk"),
            ));
        }
        if *v < -1 {
            return Err(Error::invalid(
                k,
                format!("{v} is not a limit: use -1 (unlimited) or more"),
            ));
        }
    }
    Ok(())
}

impl Engine {
    /// The limits of quota class `name` (`default`).
    pub fn quota_class(&self, name: &str) -> Result<Limits> {
        let mut limits = builtin_defaults();
        if let Some(c) = self.inner.store.get::<QuotaClassRecord>(name)? {
            limits.extend(c.limits);
        }
        Ok(limits)
    }

    /// Sets some limits of quota class `name`.
    pub fn set_quota_class(&self, name: &str, updates: &Limits) -> Result<Limits> {
        husk_core::units::validate_name("name", name)?;
        check_limits(updates)?;
        let mut rec = self
            .inner
            .store
            .get::<QuotaClassRecord>(name)?
            .unwrap_or_else(|| QuotaClassRecord {
                name: name.to_string(),
                limits: Limits::new(),
            });
        rec.limits.extend(updates.clone());
        self.inner.store.upsert(&rec)?;
        self.quota_class(name)
    }

    /// The limits in force for `project`.
    pub fn quota(&self, project: &str) -> Result<Limits> {
        let own = self.inner.store.get::<QuotaRecord>(project)?;
        if project == DEFAULT_PROJECT && own.is_none() {
            return Ok(RESOURCES.iter().map(|r| (r.to_string(), -1)).collect());
        }
        let mut limits = self.quota_class("default")?;
        if let Some(q) = own {
            limits.extend(q.limits);
        }
        Ok(limits)
    }

    /// Sets some of `project`'s limits.
    pub fn set_quota(&self, project: &str, updates: &Limits) -> Result<Limits> {
        check_limits(updates)?;
        let mut rec = self
            .inner
            .store
            .get::<QuotaRecord>(project)?
            .unwrap_or_else(|| QuotaRecord {
                project: project.to_string(),
                limits: Limits::new(),
            });
        rec.limits.extend(updates.clone());
        self.inner.store.upsert(&rec)?;
        self.quota(project)
    }

    /// Drops `project`'s own limits (back to its class's).
    pub fn reset_quota(&self, project: &str) -> Result<()> {
        self.inner.store.delete::<QuotaRecord>(project)?;
        Ok(())
    }

    /// What `project` uses.
    pub fn quota_usage(&self, project: &str) -> Result<Usage> {
        // The project's containers from the store's project index (each create of a project with limits read
        // every container of every project); the default project's also hold those made before projects.
        let also = (project == DEFAULT_PROJECT).then_some("");
        let mut u = Usage::default();
        for c in self
            .inner
            .store
            .in_project::<ContainerRecord>(project, also)?
        {
            u.containers += 1;
            u.cpu += c.config.resources.nano_cpus.unwrap_or(0) as f64 / 1e9;
            u.memory += c.config.resources.memory_bytes.unwrap_or(0) >> 20;
        }
        Ok(u)
    }

    /// Refuses a new container with `resources` that would take `project` over a limit.
    pub(crate) fn check_quota(&self, project: &str, resources: &Resources) -> Result<()> {
        self.check_quota_growth(project, 1, resources)
    }

    /// Refuses `containers` more containers and `resources` more CPU and memory that would take `project` over a
    /// limit.
    pub(crate) fn check_quota_growth(
        &self,
        project: &str,
        containers: u32,
        resources: &Resources,
    ) -> Result<()> {
        let limits = self.quota(project)?;
        if limits.values().all(|v| *v == -1) {
            return Ok(());
        }
        let used = self.quota_usage(project)?;
        let wanted = [
            ("containers", f64::from(containers)),
            ("cpu", resources.nano_cpus.unwrap_or(0) as f64 / 1e9),
            ("memory", (resources.memory_bytes.unwrap_or(0) >> 20) as f64),
            ("disk", 0.0),
        ];
        let over: Vec<&str> = wanted
            .iter()
            .filter(|(r, add)| {
                let limit = limits.get(*r).copied().unwrap_or(-1);
                limit >= 0 && *add > 0.0 && used.get(r) + add > limit as f64
            })
            .map(|(r, _)| *r)
            .collect();
        if over.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "Quota exceeded for resources: {:?} (project {project}: {})",
                over,
                over.iter()
                    .map(|r| format!("{r} limit {}, in use {}", limits[*r], used.get(r)))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_checked() {
        assert!(check_limits(&Limits::from([("containers".into(), 5)])).is_ok());
        assert!(check_limits(&Limits::from([("containers".into(), -1)])).is_ok());
        assert_eq!(
            check_limits(&Limits::from([("gpus".into(), 1)]))
                .unwrap_err()
                .field
                .as_deref(),
            Some("gpus")
        );
        assert!(check_limits(&Limits::from([("cpu".into(), -2)])).is_err());
    }
}
