//! Capsules (Zun's word; Kubernetes says pod): one sandbox, the volumes its containers share, init containers
//! that run to completion in order, then the containers, started together. Front ends translate Zun's
//! template or a Kubernetes `Pod` into a [`CapsuleCreate`].
//!
//! Volumes are the sandbox's own local volumes: its containers mount them by name, and they go with it.

use std::collections::{BTreeMap, BTreeSet};

use husk_core::{
    ContainerStatus, Error, MountConfig, MountKind, NetworkConfig, Resources, RestartPolicy,
    Result, units,
};
use husk_store::Object;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{Engine, Scope, WaitCondition};
use husk_api_types::containers::{ContainerCreate, SandboxCreate};

/// The annotation naming the capsule (by ID) a container belongs to.
pub const CAPSULE_ANNOTATION: &str = "capsule";

/// A volume mounted into a capsule's container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapsuleMount {
    /// The capsule volume's name.
    pub volume: String,
    /// Absolute path in the container.
    pub path: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// One container of a capsule: the request (its `sandbox`, `project` and `name` are set by the engine) and the
/// capsule volumes it mounts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapsuleContainer {
    /// The container's own name inside the capsule (`web`); the container is named `<capsule>-<name>`.
    pub name: String,
    /// What to run.
    pub spec: ContainerCreate,
    /// Capsule volumes to mount.
    pub mounts: Vec<CapsuleMount>,
}

/// A request to create a capsule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapsuleCreate {
    /// Unique name (also the sandbox's); a random one when empty.
    pub name: Option<String>,
    /// Owning project (default: [`crate::DEFAULT_PROJECT`]).
    pub project: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations (the creator, the template's own annotations).
    pub annotations: BTreeMap<String, String>,
    /// Restart policy of the (non-init) containers.
    pub restart_policy: RestartPolicy,
    /// Run one after another, each to a successful exit, before the containers start.
    pub init_containers: Vec<CapsuleContainer>,
    /// The containers (at least one).
    pub containers: Vec<CapsuleContainer>,
    /// Names of the local volumes to make.
    pub volumes: Vec<String>,
    /// The sandbox's network (published ports).
    pub network: NetworkConfig,
    /// Hostname (default: the name).
    pub hostname: Option<String>,
    /// The containers share a PID namespace.
    pub share_pid: bool,
    /// Driver (default: the daemon's).
    pub driver: Option<String>,
}

/// A stored capsule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapsuleRecord {
    /// ID (64 hex characters).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Owning project.
    pub project: String,
    /// The sandbox.
    pub sandbox_id: String,
    /// `Creating`, `Running` (made; its containers have their own states) or `Error`.
    pub status: String,
    /// Why it is in `Error`.
    #[serde(default)]
    pub status_reason: String,
    /// Init container IDs, in order.
    pub init_containers: Vec<String>,
    /// Container IDs.
    pub containers: Vec<String>,
    /// Restart policy of the containers.
    pub restart_policy: RestartPolicy,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Volume names.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// When it was created.
    pub created_at: husk_core::Timestamp,
}

impl Object for CapsuleRecord {
    const KIND: &'static str = "capsule";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
    fn project(&self) -> &str {
        &self.project
    }
}

impl Engine {
    /// Every capsule `scope` may see, newest first.
    pub fn list_capsules(&self, scope: &Scope) -> Result<Vec<CapsuleRecord>> {
        let mut list = self.inner.store.list::<CapsuleRecord>()?;
        list.retain(|c| scope.allows(&c.project));
        list.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(list)
    }

    /// The capsule named `key` or with ID `key`, if `scope` may see it.
    pub fn capsule_in(&self, scope: &Scope, key: &str) -> Result<CapsuleRecord> {
        self.inner
            .store
            .find::<CapsuleRecord>(key)
            .ok()
            .flatten()
            .filter(|c| {
                c.name == key || c.id == key || (*scope == Scope::All && c.id.starts_with(key))
            })
            .filter(|c| scope.allows(&c.project))
            .ok_or_else(|| Error::not_found(format!("capsule: {key}")))
    }

    /// Checks a capsule request before anything is made.
    fn check_capsule(req: &CapsuleCreate) -> Result<()> {
        if req.containers.is_empty() {
            return Err(Error::invalid(
                "containers",
                "a capsule needs at least one container",
            ));
        }
        let volumes: BTreeSet<&str> = req.volumes.iter().map(String::as_str).collect();
        if volumes.len() != req.volumes.len() {
            return Err(Error::invalid("volumes", "two volumes have the same name"));
        }
        for v in &req.volumes {
            units::validate_name("volumes", v)?;
        }
        let mut names = BTreeSet::new();
        for c in req.init_containers.iter().chain(&req.containers) {
            units::validate_name("containers.name", &c.name)?;
            if !names.insert(c.name.as_str()) {
                return Err(Error::invalid(
                    "containers.name",
                    format!("two containers are named {:?}", c.name),
                ));
            }
            for m in &c.mounts {
                if !volumes.contains(m.volume.as_str()) {
                    return Err(Error::invalid(
                        "volumeMounts",
                        format!(
                            "container {} mounts volume {:?}, which the capsule does not declare",
                            c.name, m.volume
                        ),
                    ));
                }
                if !m.path.starts_with('/') {
                    return Err(Error::invalid(
                        "volumeMounts",
                        format!(
                            "mount path {:?} of container {} is not absolute",
                            m.path, c.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Creates a capsule: its sandbox and volumes, runs the init containers to completion, then creates and
    /// starts the containers. An init container that fails leaves the capsule in `Error` (its output stays
    /// readable); any other failure removes everything made.
    pub async fn create_capsule(&self, req: CapsuleCreate) -> Result<CapsuleRecord> {
        Self::check_capsule(&req)?;
        let project = crate::scope::project_of(req.project.as_deref())?;
        let name = match req.name.as_deref() {
            Some(n) if !n.is_empty() => {
                units::validate_name("name", n)?;
                n.to_string()
            }
            _ => husk_core::random_name().replace('_', "-"),
        };
        if self.inner.store.named::<CapsuleRecord>(&name)?.is_some() {
            return Err(Error::conflict(format!(
                "the capsule name {name:?} is already in use"
            )));
        }
        let mut rec = CapsuleRecord {
            id: husk_core::new_id(),
            name: name.clone(),
            project: project.clone(),
            sandbox_id: String::new(),
            status: "Creating".into(),
            status_reason: String::new(),
            init_containers: Vec::new(),
            containers: Vec::new(),
            restart_policy: req.restart_policy,
            labels: req.labels.clone(),
            annotations: req.annotations.clone(),
            volumes: req.volumes.clone(),
            created_at: husk_core::Timestamp::now(),
        };
        let op = self
            .inner
            .store
            .begin_operation("create_capsule", &rec.id, &json!({}))?;
        self.inner.store.insert(&rec)?;
        match self.make_capsule(&req, &mut rec).await {
            Ok(()) => {
                self.inner.store.finish_operation(op)?;
                Ok(rec)
            }
            Err(e) => {
                let _ = self.destroy_capsule(&rec).await;
                self.inner.store.finish_operation(op)?;
                Err(e)
            }
        }
    }

    async fn make_capsule(&self, req: &CapsuleCreate, rec: &mut CapsuleRecord) -> Result<()> {
        let sandbox = self
            .create_sandbox(SandboxCreate {
                name: Some(rec.name.clone()),
                hostname: req.hostname.clone(),
                share_pid: req.share_pid,
                driver: req.driver.clone(),
                network: req.network.clone(),
                resources: Resources::default(),
                labels: req.labels.clone(),
                annotations: Default::default(),
                project: Some(rec.project.clone()),
                volumes: req.volumes.clone(),
                ..Default::default()
            })
            .await?;
        rec.sandbox_id = sandbox.config.id.clone();
        self.inner.store.update(rec)?;
        for (i, c) in req.init_containers.iter().enumerate() {
            let spec = self.capsule_member(rec, c, "init-", RestartPolicy::No);
            let made = self.create_container(spec).await?;
            rec.init_containers.push(made.config.id.clone());
            self.inner.store.update(rec)?;
            self.start_container(made.id()).await?;
            let result = self
                .wait_container(made.id(), WaitCondition::NotRunning)
                .await?;
            if result.status_code != 0 {
                rec.status = "Error".into();
                rec.status_reason = format!(
                    "init container {} ({} of {}) exited with code {}",
                    c.name,
                    i + 1,
                    req.init_containers.len(),
                    result.status_code
                );
                self.inner.store.update(rec)?;
                return Ok(());
            }
        }
        let mut made = Vec::new();
        for c in &req.containers {
            let spec = self.capsule_member(rec, c, "", req.restart_policy);
            let m = self.create_container(spec).await?;
            rec.containers.push(m.config.id.clone());
            self.inner.store.update(rec)?;
            made.push(m.config.id);
        }
        for id in &made {
            self.start_container(id).await?;
        }
        rec.status = "Running".into();
        self.inner.store.update(rec)
    }

    /// The container request of one capsule member.
    fn capsule_member(
        &self,
        rec: &CapsuleRecord,
        c: &CapsuleContainer,
        prefix: &str,
        restart: RestartPolicy,
    ) -> ContainerCreate {
        let mut spec = c.spec.clone();
        spec.name = Some(format!("{}-{prefix}{}", rec.name, c.name));
        spec.sandbox = Some(rec.sandbox_id.clone());
        spec.project = Some(rec.project.clone());
        spec.mode = None;
        spec.restart_policy = restart;
        spec.annotations
            .insert(CAPSULE_ANNOTATION.into(), rec.id.clone());
        for m in &c.mounts {
            spec.mounts.push(MountConfig {
                kind: MountKind::Volume,
                source: m.volume.clone(),
                destination: m.path.clone(),
                readonly: m.readonly,
                ..Default::default()
            });
        }
        spec
    }

    /// Removes a capsule: its sandbox with every container, its volumes, its record.
    pub async fn remove_capsule(&self, id: &str) -> Result<()> {
        let rec = self
            .inner
            .store
            .get::<CapsuleRecord>(id)?
            .ok_or_else(|| Error::not_found(format!("capsule: {id}")))?;
        let _guard = self.lock(&rec.id).await;
        let op = self
            .inner
            .store
            .begin_operation("remove_capsule", &rec.id, &json!({}))?;
        self.destroy_capsule(&rec).await?;
        self.inner.store.finish_operation(op)?;
        Ok(())
    }

    /// Removes whatever exists of a capsule (idempotent: used by removal, failed creation and recovery). The
    /// sandbox takes its containers and volumes with it.
    pub(crate) async fn destroy_capsule(&self, rec: &CapsuleRecord) -> Result<()> {
        if !rec.sandbox_id.is_empty() {
            match self.remove_sandbox(&rec.sandbox_id, true).await {
                Ok(()) => {}
                Err(e) if e.kind == husk_core::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.store.delete::<CapsuleRecord>(&rec.id)?;
        Ok(())
    }

    /// Whether every container of the capsule runs (for its status).
    pub fn capsule_running(&self, rec: &CapsuleRecord) -> bool {
        rec.containers.iter().all(|id| {
            self.inner
                .store
                .get::<husk_core::ContainerRecord>(id)
                .ok()
                .flatten()
                .is_some_and(|c| c.status == ContainerStatus::Running)
        })
    }

    /// Finishes an interrupted capsule operation after a restart: a half-made or half-removed capsule goes.
    pub(crate) async fn recover_capsule(&self, id: &str) -> Result<()> {
        if let Some(rec) = self.inner.store.get::<CapsuleRecord>(id)? {
            self.destroy_capsule(&rec).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, mounts: &[(&str, &str)]) -> CapsuleContainer {
        CapsuleContainer {
            name: name.into(),
            spec: ContainerCreate {
                image: "busybox".into(),
                ..Default::default()
            },
            mounts: mounts
                .iter()
                .map(|(v, p)| CapsuleMount {
                    volume: v.to_string(),
                    path: p.to_string(),
                    readonly: false,
                })
                .collect(),
        }
    }

    #[test]
    fn requests_are_checked() {
        let mut req = CapsuleCreate::default();
        assert_eq!(
            Engine::check_capsule(&req).unwrap_err().field.as_deref(),
            Some("containers")
        );
        req.containers = vec![member("a", &[("data", "/data")])];
        assert_eq!(
            Engine::check_capsule(&req).unwrap_err().field.as_deref(),
            Some("volumeMounts")
        );
        req.volumes = vec!["data".into()];
        assert!(Engine::check_capsule(&req).is_ok());
        req.init_containers = vec![member("a", &[])];
        assert!(
            Engine::check_capsule(&req).is_err(),
            "names are unique across init and app containers"
        );
        req.init_containers = vec![member("i", &[("data", "rel")])];
        assert!(
            Engine::check_capsule(&req).is_err(),
            "mount paths are absolute"
        );
    }
}
