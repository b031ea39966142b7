//! The container as Zun shows it: its field names, status names, task states, and the allowed-state table.

use std::collections::BTreeMap;

use husk_core::{ContainerRecord, ContainerStatus, RestartPolicy, SandboxRecord, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

use super::context::Context;
use super::error::ZunError;

/// Annotation keys under which the Zun API keeps what husk's model has no field for.
pub mod keys {
    /// The creating user's ID.
    pub const USER: &str = "zun.user_id";
    /// The image as the client named it.
    pub const IMAGE: &str = "zun.image";
    /// `image_pull_policy` as requested.
    pub const PULL_POLICY: &str = "zun.image_pull_policy";
    /// `image_driver` (docker).
    pub const IMAGE_DRIVER: &str = "zun.image_driver";
    /// `auto_heal`.
    pub const AUTO_HEAL: &str = "zun.auto_heal";
    /// `runtime` as requested (`runc`, `docker`, `kata` ...).
    pub const RUNTIME: &str = "zun.runtime";
    /// `disk` in GiB.
    pub const DISK: &str = "zun.disk";
    /// `cpu_policy`.
    pub const CPU_POLICY: &str = "zun.cpu_policy";
    /// `healthcheck` as JSON.
    pub const HEALTHCHECK: &str = "zun.healthcheck";
    /// `entrypoint` as JSON.
    pub const ENTRYPOINT: &str = "zun.entrypoint";
    /// `availability_zone`.
    pub const AZ: &str = "zun.availability_zone";
    /// `hints` as JSON.
    pub const HINTS: &str = "zun.hints";
    /// `interactive` as requested.
    pub const INTERACTIVE: &str = "zun.interactive";
    /// Set on the containers of a capsule: the capsule's ID.
    pub const CAPSULE: &str = "zun.capsule";
    /// Updated-at time (RFC 3339) of the last change made through the API.
    pub const UPDATED: &str = "zun.updated_at";
}

/// A link.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Link {
    /// URL.
    pub href: String,
    /// `self` or `bookmark`.
    pub rel: String,
}

/// `self` and `bookmark` links of an object.
pub fn links(base: &str, collection: &str, uuid: &str) -> Vec<Link> {
    vec![
        Link {
            href: format!("{base}/v1/{collection}/{uuid}"),
            rel: "self".into(),
        },
        Link {
            href: format!("{base}/{collection}/{uuid}"),
            rel: "bookmark".into(),
        },
    ]
}

/// One address of a container.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Address {
    /// IP address.
    pub addr: String,
    /// 4 or 6.
    pub version: u8,
    /// Port ID (none: husk's networks are CNI networks).
    pub port: Option<String>,
    /// Subnet (the network's subnet).
    pub subnet_id: Option<String>,
    /// Always false.
    pub preserve_on_delete: bool,
}

/// Zun's restart policy object.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZunRestartPolicy {
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Retries (on-failure), as a string.
    #[serde(rename = "MaximumRetryCount")]
    pub maximum_retry_count: String,
}

impl From<RestartPolicy> for ZunRestartPolicy {
    fn from(p: RestartPolicy) -> Self {
        let (name, n) = match p {
            RestartPolicy::No => ("no", 0),
            RestartPolicy::Always => ("always", 0),
            RestartPolicy::UnlessStopped => ("unless-stopped", 0),
            RestartPolicy::OnFailure { max_retries } => ("on-failure", max_retries),
        };
        ZunRestartPolicy {
            name: name.into(),
            maximum_retry_count: n.to_string(),
        }
    }
}

/// A container in Zun's shape.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ZunContainer {
    /// ID.
    pub uuid: String,
    /// Links.
    pub links: Vec<Link>,
    /// Name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Command (argv).
    pub command: Vec<String>,
    /// Zun status name.
    pub status: String,
    /// Why it is in an error state.
    pub status_reason: Option<String>,
    /// `Up 5 minutes`, `Exited(0) 8 minutes ago` ...
    pub status_detail: Option<String>,
    /// What is being done to it (`container_creating` ...), or null.
    pub task_state: Option<String>,
    /// CPUs.
    pub cpu: Option<f64>,
    /// Memory in MiB, as a string.
    pub memory: Option<String>,
    /// Disk in GiB.
    pub disk: i64,
    /// Environment.
    pub environment: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Published container ports.
    pub ports: Vec<u16>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Addresses by network.
    pub addresses: BTreeMap<String, Vec<Address>>,
    /// Image pull policy (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<Option<String>>,
    /// Host (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Restart policy.
    pub restart_policy: ZunRestartPolicy,
    /// Stdin kept open.
    pub interactive: bool,
    /// Terminal.
    pub tty: bool,
    /// `docker`.
    pub image_driver: String,
    /// Security groups (none: husk has no Neutron).
    pub security_groups: Vec<String>,
    /// Removed when it exits.
    pub auto_remove: bool,
    /// Restarted when found dead.
    pub auto_heal: bool,
    /// Runtime (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Privileged (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Health check.
    pub healthcheck: serde_json::Value,
    /// `shared` or `dedicated`.
    pub cpu_policy: String,
    /// Registry.
    pub registry_id: Option<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Creating user.
    pub user_id: String,
    /// Owning project.
    pub project_id: String,
    /// When it was created (RFC 3339).
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    /// RFC 3339; kept as the text of the annotation that holds it.
    pub updated_at: Option<String>,
}

/// Zun's status name of a container.
pub fn status(rec: &ContainerRecord) -> &'static str {
    match rec.status {
        ContainerStatus::Creating => "Creating",
        ContainerStatus::Created => "Created",
        ContainerStatus::Running => "Running",
        ContainerStatus::Paused => "Paused",
        ContainerStatus::Restarting => "Restarting",
        ContainerStatus::Exited if !rec.error.is_empty() => "Error",
        ContainerStatus::Exited => "Stopped",
        ContainerStatus::Removing => "Deleting",
        ContainerStatus::Dead => "Error",
    }
}

/// Zun's task state: what is being done to the container, if anything.
pub fn task_state(rec: &ContainerRecord) -> Option<&'static str> {
    match rec.status {
        ContainerStatus::Creating => Some("container_creating"),
        ContainerStatus::Removing => Some("container_deleting"),
        ContainerStatus::Restarting => Some("container_rebooting"),
        _ => None,
    }
}

/// The lifecycle actions, `POST /v1/containers/{id}/ACTION`: one handler serves them all
/// (`containers::lifecycle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// start
    Start,
    /// stop
    Stop,
    /// reboot
    Reboot,
    /// pause
    Pause,
    /// unpause
    Unpause,
    /// kill
    Kill,
}

impl Lifecycle {
    /// The action's name: in its URL, its action record and its errors.
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Start => "start",
            Lifecycle::Stop => "stop",
            Lifecycle::Reboot => "reboot",
            Lifecycle::Pause => "pause",
            Lifecycle::Unpause => "unpause",
            Lifecycle::Kill => "kill",
        }
    }
}

/// The actions of Zun's allowed-state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZunAction {
    /// start, stop, reboot, pause, unpause, kill
    Lifecycle(Lifecycle),
    /// execute, execute_resize, attach, resize, top, stats
    Running(&'static str),
    /// update
    Update,
    /// get_archive, put_archive
    Archive(&'static str),
    /// logs
    Logs,
    /// commit
    Commit,
    /// delete (with `stop`: also from Running)
    Delete {
        /// `stop=True` was given.
        stop: bool,
    },
}

impl ZunAction {
    fn name(self) -> &'static str {
        match self {
            ZunAction::Lifecycle(l) => l.name(),
            ZunAction::Running(a) | ZunAction::Archive(a) => a,
            ZunAction::Update => "update",
            ZunAction::Logs => "logs",
            ZunAction::Commit => "commit",
            ZunAction::Delete { .. } => "delete",
        }
    }

    /// The Zun statuses the action is allowed from.
    pub fn allowed(self) -> &'static [&'static str] {
        match self {
            ZunAction::Lifecycle(Lifecycle::Start) => &["Created", "Stopped", "Error"],
            ZunAction::Lifecycle(Lifecycle::Stop | Lifecycle::Pause | Lifecycle::Kill)
            | ZunAction::Running(_) => &["Running"],
            ZunAction::Lifecycle(Lifecycle::Reboot) => &["Created", "Running", "Stopped", "Error"],
            ZunAction::Lifecycle(Lifecycle::Unpause) => &["Paused"],
            ZunAction::Update => &["Created", "Running", "Stopped", "Paused"],
            ZunAction::Archive(_) => &["Created", "Paused", "Running", "Stopped"],
            ZunAction::Logs => &[
                "Created", "Error", "Paused", "Running", "Stopped", "Unknown",
            ],
            ZunAction::Commit => &["Running", "Stopped", "Paused"],
            ZunAction::Delete { stop: false } => {
                &["Created", "Error", "Stopped", "Deleted", "Dead"]
            }
            ZunAction::Delete { stop: true } => {
                &["Created", "Error", "Stopped", "Deleted", "Dead", "Running"]
            }
        }
    }

    /// 409 unless the container's status allows the action.
    pub fn check(self, rec: &ContainerRecord) -> Result<(), ZunError> {
        let s = status(rec);
        if self.allowed().contains(&s) {
            Ok(())
        } else {
            Err(ZunError::invalid_state(self.name(), rec.id(), s))
        }
    }
}

/// "5 minutes", "1 hour", "3 days".
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit) = match secs {
        0..=1 => return "Less than a second".into(),
        2..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

fn seconds_since(t: Option<Timestamp>) -> Option<i64> {
    Some((Timestamp::now() - t?).num_seconds())
}

/// Docker's one-line description of the state.
pub fn status_detail(rec: &ContainerRecord) -> Option<String> {
    let up = || seconds_since(rec.started_at).map(human_duration);
    Some(match rec.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => format!("Up {}", up()?),
        ContainerStatus::Paused => format!("Up {} (paused)", up()?),
        ContainerStatus::Restarting => "Restarting".into(),
        ContainerStatus::Exited => {
            let exit = rec.exit.clone().unwrap_or_default();
            match seconds_since(exit.finished_at) {
                Some(s) => format!("Exited({}) {} ago", exit.code, human_duration(s)),
                None => format!("Exited({})", exit.code),
            }
        }
        ContainerStatus::Dead => "Dead".into(),
        ContainerStatus::Creating | ContainerStatus::Removing => return None,
    })
}

/// The runtime name Zun shows for a driver.
pub fn runtime_of_driver(driver: &str) -> &str {
    match driver {
        "linux" => "runc",
        "vm" => "kata",
        other => other,
    }
}

fn json_list(rec: &ContainerRecord, key: &str) -> Vec<String> {
    rec.annotations
        .get(key)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// The host's name (Zun's `host`), read once.
pub fn host_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(husk_engine::host::hostname).clone()
}

/// The Zun view of a container, with the fields `ctx` may see.
pub fn container(
    rec: &ContainerRecord,
    sandbox: Option<&SandboxRecord>,
    ctx: &Context,
    base: &str,
) -> ZunContainer {
    let c = &rec.config;
    let a = &rec.annotations;
    let network = match sandbox {
        Some(sb) => sb.runtime.network.clone(),
        None => rec.runtime.network.clone(),
    };
    let mut addresses = BTreeMap::new();
    let mut ports: Vec<u16> = Vec::new();
    if let Some(n) = &network {
        let list = n
            .addresses
            .iter()
            .map(|cidr| {
                let ip = cidr.split('/').next().unwrap_or(cidr).to_string();
                Address {
                    version: if ip.contains(':') { 6 } else { 4 },
                    addr: ip,
                    port: None,
                    subnet_id: None,
                    preserve_on_delete: false,
                }
            })
            .collect::<Vec<_>>();
        if !list.is_empty() {
            addresses.insert(n.network.clone(), list);
        }
        ports.extend(n.ports.iter().map(|p| p.container_port));
    }
    if ports.is_empty() {
        let configured = sandbox.map(|s| &s.config.network).unwrap_or(&c.network);
        ports.extend(configured.ports.iter().map(|p| p.container_port));
    }
    ports.sort_unstable();
    ports.dedup();
    let hostname = match sandbox {
        Some(sb) => sb.config.hostname.clone(),
        None => c.hostname.clone(),
    };
    let environment = c
        .process
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let status_reason = if !rec.error.is_empty() {
        Some(rec.error.clone())
    } else {
        rec.exit
            .as_ref()
            .filter(|e| !e.reason.is_empty())
            .map(|e| e.reason.clone())
    };
    ZunContainer {
        uuid: c.id.clone(),
        links: links(base, "containers", &c.id),
        name: c.name.clone(),
        image: a
            .get(keys::IMAGE)
            .cloned()
            .unwrap_or_else(|| c.image.name.clone()),
        command: c.process.args.clone(),
        status: status(rec).into(),
        status_reason,
        status_detail: status_detail(rec),
        task_state: task_state(rec).map(str::to_string),
        cpu: c.resources.nano_cpus.map(|n| n as f64 / 1e9),
        memory: c.resources.memory_bytes.map(|b| (b >> 20).to_string()),
        disk: a.get(keys::DISK).and_then(|d| d.parse().ok()).unwrap_or(0),
        environment,
        labels: c.labels.clone(),
        workdir: Some(c.process.cwd.clone()),
        ports,
        hostname: Some(hostname).filter(|h| !h.is_empty()),
        addresses,
        image_pull_policy: ctx.is_admin.then(|| a.get(keys::PULL_POLICY).cloned()),
        host: ctx.is_admin.then(host_name),
        restart_policy: rec.restart_policy.into(),
        interactive: c.process.stdin,
        tty: c.process.tty,
        image_driver: a
            .get(keys::IMAGE_DRIVER)
            .cloned()
            .unwrap_or_else(|| "docker".into()),
        security_groups: Vec::new(),
        auto_remove: rec.auto_remove,
        auto_heal: a.get(keys::AUTO_HEAL).is_some_and(|v| v == "true"),
        runtime: ctx.is_admin.then(|| {
            a.get(keys::RUNTIME)
                .cloned()
                .unwrap_or_else(|| runtime_of_driver(&rec.driver).to_string())
        }),
        privileged: ctx.is_admin.then_some(c.security.privileged),
        healthcheck: a
            .get(keys::HEALTHCHECK)
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_else(|| serde_json::json!({})),
        cpu_policy: a
            .get(keys::CPU_POLICY)
            .cloned()
            .unwrap_or_else(|| "shared".into()),
        registry_id: None,
        entrypoint: json_list(rec, keys::ENTRYPOINT),
        user_id: a.get(keys::USER).cloned().unwrap_or_default(),
        project_id: if rec.project.is_empty() {
            husk_engine::DEFAULT_PROJECT.into()
        } else {
            rec.project.clone()
        },
        created_at: rec.created_at,
        updated_at: a.get(keys::UPDATED).cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(60), "1 minute");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(86_400 * 3), "3 days");
    }

    #[test]
    fn restart_policies_as_zun_writes_them() {
        let p: ZunRestartPolicy = RestartPolicy::OnFailure { max_retries: 3 }.into();
        assert_eq!(
            (p.name.as_str(), p.maximum_retry_count.as_str()),
            ("on-failure", "3")
        );
        let p: ZunRestartPolicy = RestartPolicy::No.into();
        assert_eq!(p.name, "no");
    }

    #[test]
    fn allowed_state_table() {
        assert!(
            ZunAction::Lifecycle(Lifecycle::Start)
                .allowed()
                .contains(&"Stopped")
        );
        assert!(
            !ZunAction::Lifecycle(Lifecycle::Stop)
                .allowed()
                .contains(&"Stopped")
        );
        assert!(
            ZunAction::Delete { stop: true }
                .allowed()
                .contains(&"Running")
        );
        assert!(
            !ZunAction::Delete { stop: false }
                .allowed()
                .contains(&"Running")
        );
        assert!(ZunAction::Running("top").allowed() == ["Running"]);
    }
}
