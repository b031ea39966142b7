//! What front ends ask the engine for, and the views it answers with. Every front end (husk's own HTTP API used
//! by the CLI, Zun's REST API, the CRI) translates its wire format into these types, so validation and
//! behaviour live in one place.
//!
//! Why this file is long: declarations of the wire types for containers and sandboxes, each field documented: long
//! because the API is wide, with no logic to split.

use std::collections::BTreeMap;

use husk_core::{
    ContainerRecord, ContainerStatus, ExitStatus, HealthConfig, HealthState, Mode, MountConfig,
    MountKind, NetworkConfig, NetworkStatus, PortMapping, Resources, RestartPolicy, SandboxRecord,
    SandboxStatus, Stats, Timestamp, Ulimit,
};
use serde::{Deserialize, Serialize};

/// Where husk's init is mounted in a container (`--init`).
pub const INIT_PATH: &str = "/sbin/husk-init";

/// A request to create a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerCreate {
    /// Unique name (a random one when empty).
    pub name: Option<String>,
    /// Image reference.
    pub image: String,
    /// Arguments replacing the image's CMD.
    pub command: Option<Vec<String>>,
    /// Replaces the image's ENTRYPOINT (an empty list clears it).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` pairs, added to (and overriding) the image's.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// `user[:group]`.
    pub user: Option<String>,
    /// Hostname (standalone, or the implicit sandbox of `run`).
    pub hostname: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
    /// Limits.
    pub resources: Resources,
    /// Restart policy.
    pub restart_policy: RestartPolicy,
    /// Remove when it exits.
    pub auto_remove: bool,
    /// Sandbox or standalone (default: the daemon's).
    pub mode: Option<Mode>,
    /// Join this existing sandbox (name or ID).
    pub sandbox: Option<String>,
    /// Driver (default: the sandbox's, else the daemon's).
    pub driver: Option<String>,
    /// Share a PID namespace with the implicit sandbox's other containers (implicit sandbox only).
    pub share_pid: bool,
    /// Full privileges.
    pub privileged: bool,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    pub cap_drop: Vec<String>,
    /// `seccomp=unconfined|PROFILE-JSON`, `no-new-privileges[=true|false]`.
    pub security_opt: Vec<String>,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Mounts.
    pub mounts: Vec<MountConfig>,
    /// Network (standalone, or the implicit sandbox of `run`).
    pub network: NetworkConfig,
    /// Publish every port the image exposes on a free host port (`-P`).
    pub publish_all: bool,
    /// Stop signal (name or number).
    pub stop_signal: Option<String>,
    /// Seconds to wait after the stop signal.
    pub stop_timeout: Option<u32>,
    /// Run husk's tiny init as PID 1: it reaps zombies and forwards signals to the command.
    pub init: bool,
    /// Per-process resource limits.
    pub ulimits: Vec<Ulimit>,
    /// Supplementary groups (names from the container's `/etc/group`, or numbers).
    pub group_add: Vec<String>,
    /// Whether processes also get the image's groups of the user (`merge`, the default) or never (`strict`).
    pub groups_policy: husk_core::GroupsPolicy,
    /// Health check (`None` = the image's HEALTHCHECK, if any).
    pub healthcheck: Option<HealthcheckRequest>,
    /// When to pull the image: `always`, `missing` (the default; Zun's and Kubernetes' `ifnotpresent`) or `never`.
    #[serde(deserialize_with = "crate::images::pull_policy_text")]
    pub pull: crate::images::PullPolicy,
    /// The project that will own it (default: [`crate::DEFAULT_PROJECT`]).
    pub project: Option<String>,
    /// Notes front ends keep with the container (creator, settings of their own API); never passed to drivers.
    pub annotations: BTreeMap<String, String>,
    /// An absolute host path to write the container's output to in the CRI log format too (the CRI's
    /// `log_directory/log_path`).
    pub cri_log_path: Option<String>,
    /// Namespaced kernel parameters (`--sysctl`): `net.*` (not with the host's network), `kernel.shm*`,
    /// `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`.
    pub sysctls: BTreeMap<String, String>,
    /// Paths to mask instead of the default list (`None`: the defaults; ignored when privileged).
    pub masked_paths: Option<Vec<String>>,
    /// Paths to make read-only instead of the default list (`None`: the defaults; ignored when privileged).
    pub readonly_paths: Option<Vec<String>>,
    /// Host devices the container gets (`--device HOST[:CONTAINER[:PERMISSIONS]]`); the engine checks each is a
    /// character or block device.
    pub devices: Vec<husk_core::DeviceMapping>,
    /// Docker's log options (`--log-opt KEY=VALUE`): `max-size` (e.g. `10m`) and `max-file`; unset ones are the
    /// daemon's `[logs]` defaults.
    pub log_opts: BTreeMap<String, String>,
}

/// A health check as a request gives it; unset fields come from the image's HEALTHCHECK, then Docker's
/// defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthcheckRequest {
    /// `["CMD", args...]`, `["CMD-SHELL", command]`, `["NONE"]` (no check at all), or empty (the image's).
    pub test: Vec<String>,
    /// Time between checks (`30s`).
    pub interval: Option<String>,
    /// Time a check may take.
    pub timeout: Option<String>,
    /// Time after start during which failures do not count.
    pub start_period: Option<String>,
    /// Time between checks during the start period.
    pub start_interval: Option<String>,
    /// Failures in a row before unhealthy.
    pub retries: Option<u32>,
    /// What to do when unhealthy: `none` (default, as Docker), `kill`, `restart` or `stop`.
    pub on_failure: Option<String>,
}

/// A request to create a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxCreate {
    /// Unique name (a random one when empty).
    pub name: Option<String>,
    /// Hostname (default: the name).
    pub hostname: Option<String>,
    /// Containers share one PID namespace.
    pub share_pid: bool,
    /// Containers run in the host's PID namespace.
    pub host_pid: bool,
    /// Containers run in the host's IPC namespace.
    pub host_ipc: bool,
    /// A user namespace of the sandbox's own with these mappings, joined by all its containers (default: the
    /// host's).
    pub user_namespace: Option<husk_core::UserNamespaceConfig>,
    /// Driver (default: the daemon's).
    pub driver: Option<String>,
    /// Network.
    pub network: NetworkConfig,
    /// Sandbox-wide limits (the VM's size for the `vm` driver).
    pub resources: Resources,
    /// The cgroupfs path its containers' cgroups are made under (`/kubepods/besteffort/pod<uid>`; default: the
    /// driver's own parent).
    pub cgroup_parent: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations, kept as given (front ends keep their own data here).
    pub annotations: BTreeMap<String, String>,
    /// The project that will own it (default: [`crate::DEFAULT_PROJECT`]).
    pub project: Option<String>,
    /// Volumes of the sandbox, shared by its containers (`-v NAME:/path` in a container of the sandbox); they
    /// go when the sandbox goes.
    pub volumes: Vec<String>,
}

/// A request to run another process in a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecCreate {
    /// argv.
    pub command: Vec<String>,
    /// Extra `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub workdir: Option<String>,
    /// `user[:group]` (default: the container's).
    pub user: Option<String>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WaitCondition {
    /// Until the container is not running (at once if it is not).
    #[default]
    NotRunning,
    /// Until the next exit.
    NextExit,
    /// Until it has been removed.
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = husk_core::Error;
    fn from_str(s: &str) -> husk_core::Result<Self> {
        match s {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            _ => Err(husk_core::Error::invalid(
                "condition",
                format!("unknown wait condition {s:?}: use not-running, next-exit or removed"),
            )),
        }
    }
}

/// One container's resource usage, as a reading of several containers lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// Full ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// The reading.
    pub stats: Stats,
}

/// A container as `inspect` shows it (Docker's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerView {
    /// Full ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image reference as normalised.
    pub image: String,
    /// Image ID.
    pub image_id: String,
    /// `sandbox` or `standalone`.
    pub mode: Mode,
    /// The sandbox's ID (sandbox mode).
    pub sandbox_id: Option<String>,
    /// Driver name.
    pub driver: String,
    /// When it was created.
    pub created: Timestamp,
    /// Current state.
    pub state: StateView,
    /// Restarts by policy since the last start by a user.
    pub restart_count: u32,
    /// Process and settings.
    pub config: ConfigView,
    /// Limits and policies.
    pub host_config: HostConfigView,
    /// Network identity.
    pub network_settings: Option<NetworkStatus>,
    /// Project that owns it.
    pub project: String,
    /// Mounts, as Docker lists them.
    pub mounts: Vec<MountView>,
}

/// One entry of a container view's `Mounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountView {
    /// What is mounted.
    #[serde(rename = "Type")]
    pub kind: MountKind,
    /// The volume's name (volumes only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The host path (a volume's data directory, a bind's source; empty for tmpfs), or an image mount's image.
    pub source: String,
    /// The path in the container.
    pub destination: String,
    /// Options as given (`ro`, `z`, `nocopy`, tmpfs options ...).
    pub mode: String,
    /// Writable.
    #[serde(rename = "RW")]
    pub rw: bool,
    /// Propagation (binds).
    pub propagation: String,
}

impl MountView {
    /// The view of a mount.
    pub fn new(m: &MountConfig) -> MountView {
        let propagation = match m.kind {
            MountKind::Bind => m.propagation().unwrap_or("rprivate").to_string(),
            _ => String::new(),
        };
        MountView {
            kind: m.kind,
            name: if m.kind == MountKind::Volume {
                m.source.clone()
            } else {
                String::new()
            },
            source: if m.kind == MountKind::Image {
                m.source.clone()
            } else {
                m.host_path.clone()
            },
            destination: m.destination.clone(),
            mode: m.options.join(","),
            rw: !m.readonly,
            propagation,
        }
    }
}

/// `State.Health` of a container view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthView {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failures in a row.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthLogView>,
}

/// One result in `State.Health.Log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthLogView {
    /// When the check started.
    pub start: Timestamp,
    /// When it ended.
    pub end: Timestamp,
    /// Exit code (0 = passed).
    pub exit_code: i32,
    /// Output (truncated).
    pub output: String,
}

impl HealthView {
    /// The view of a health state.
    pub fn new(h: &HealthState) -> HealthView {
        HealthView {
            status: h.status.as_str().to_string(),
            failing_streak: h.failing_streak,
            log: h
                .log
                .iter()
                .map(|r| HealthLogView {
                    start: r.start,
                    end: r.end,
                    exit_code: r.exit_code,
                    output: r.output.clone(),
                })
                .collect(),
        }
    }
}

/// `Config.Healthcheck` of a container view (durations in nanoseconds, as Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthcheckView {
    /// The test.
    pub test: Vec<String>,
    /// Between checks.
    pub interval: i64,
    /// Per check.
    pub timeout: i64,
    /// Grace period.
    pub start_period: i64,
    /// Between checks in the grace period.
    pub start_interval: i64,
    /// Failures before unhealthy.
    pub retries: u32,
    /// `none`, `kill`, `restart` or `stop`.
    pub on_failure: String,
}

impl HealthcheckView {
    /// The view of a health check.
    pub fn new(c: &HealthConfig) -> HealthcheckView {
        HealthcheckView {
            test: c.test.clone(),
            interval: c.interval_ns,
            timeout: c.timeout_ns,
            start_period: c.start_period_ns,
            start_interval: c.start_interval_ns,
            retries: c.retries,
            on_failure: serde_json::to_value(c.on_failure)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }
}

/// `State` of a container view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StateView {
    /// Docker's status name.
    pub status: ContainerStatus,
    /// Running (also when paused, as Docker reports).
    pub running: bool,
    /// Frozen.
    pub paused: bool,
    /// Between exit and restart.
    pub restarting: bool,
    /// Killed by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Host PID of the main process (0 when not running).
    pub pid: i32,
    /// Last exit code.
    pub exit_code: i32,
    /// Driver error, if any.
    pub error: String,
    /// When it last started; `""` if never.
    #[serde(default, with = "husk_core::time::optional")]
    pub started_at: Option<Timestamp>,
    /// When it last exited; `""` if never.
    #[serde(default, with = "husk_core::time::optional")]
    pub finished_at: Option<Timestamp>,
    /// Health check state, for containers with a health check that ran or runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthView>,
}

/// `Config` of a container view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigView {
    /// Hostname.
    pub hostname: String,
    /// User.
    pub user: String,
    /// Environment.
    pub env: Vec<String>,
    /// argv.
    pub cmd: Vec<String>,
    /// Working directory.
    pub working_dir: String,
    /// Terminal.
    pub tty: bool,
    /// Stdin open.
    pub open_stdin: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Stop signal.
    pub stop_signal: Option<i32>,
    /// Stop timeout in seconds.
    pub stop_timeout: Option<u32>,
    /// Health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckView>,
}

/// `HostConfig` of a container view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfigView {
    /// Memory limit in bytes (0 = none).
    pub memory: i64,
    /// CPU limit in nano-CPUs (0 = none).
    pub nano_cpus: i64,
    /// PIDs limit (0 = none).
    pub pids_limit: i64,
    /// Restart policy.
    pub restart_policy: String,
    /// Remove on exit.
    pub auto_remove: bool,
    /// Privileged.
    pub privileged: bool,
    /// Added capabilities.
    pub cap_add: Vec<String>,
    /// Dropped capabilities.
    pub cap_drop: Vec<String>,
    /// Read-only root filesystem.
    pub readonly_rootfs: bool,
    /// Network mode.
    pub network_mode: String,
    /// Published ports.
    pub port_bindings: Vec<PortMapping>,
    /// Mounts.
    pub mounts: Vec<MountConfig>,
    /// Runs under husk's init.
    pub init: bool,
    /// Per-process limits.
    pub ulimits: Vec<Ulimit>,
    /// Supplementary groups.
    pub group_add: Vec<String>,
    /// tmpfs mounts: destination -> options.
    pub tmpfs: BTreeMap<String, String>,
    /// How the container's output is kept.
    pub log_config: LogConfigView,
}

/// `HostConfig.LogConfig` of a container view, as Docker shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogConfigView {
    /// The log format: husk's JSON lines (the engine's `json-file` on the `docker` driver).
    #[serde(rename = "Type")]
    pub kind: String,
    /// `max-size` (bytes) and `max-file`, when set.
    #[serde(rename = "Config")]
    pub config: BTreeMap<String, String>,
}

impl ContainerView {
    /// The view of a stored container (with its sandbox, for the network identity).
    pub fn new(rec: &ContainerRecord, sandbox: Option<&SandboxRecord>) -> ContainerView {
        let c = &rec.config;
        let exit = rec.exit.clone().unwrap_or_default();
        let running = matches!(
            rec.status,
            ContainerStatus::Running | ContainerStatus::Paused
        );
        let network = match sandbox {
            Some(sb) => sb.runtime.network.clone(),
            None => rec.runtime.network.clone(),
        };
        let port_bindings = published_ports(rec, sandbox);
        ContainerView {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.name.clone(),
            image_id: c.image.id.clone(),
            mode: rec.mode,
            sandbox_id: rec.sandbox_id.clone(),
            driver: rec.driver.clone(),
            created: rec.created_at,
            state: StateView {
                status: rec.status,
                running,
                paused: rec.status == ContainerStatus::Paused,
                restarting: rec.status == ContainerStatus::Restarting,
                oom_killed: exit.oom_killed,
                pid: if running { rec.runtime.pid } else { 0 },
                exit_code: exit.code,
                error: if rec.error.is_empty() {
                    exit.reason.clone()
                } else {
                    rec.error.clone()
                },
                started_at: rec.started_at,
                finished_at: exit.finished_at,
                health: rec.health.as_ref().map(HealthView::new),
            },
            restart_count: rec.restart_count,
            config: ConfigView {
                hostname: match sandbox {
                    Some(sb) => sb.config.hostname.clone(),
                    None => c.hostname.clone(),
                },
                user: c.process.user.clone(),
                env: c.process.env.clone(),
                cmd: user_command(rec),
                working_dir: c.process.cwd.clone(),
                tty: c.process.tty,
                open_stdin: c.process.stdin,
                labels: c.labels.clone(),
                stop_signal: c.stop_signal,
                stop_timeout: c.stop_timeout,
                healthcheck: rec.healthcheck.as_ref().map(HealthcheckView::new),
            },
            host_config: HostConfigView {
                memory: c.resources.memory_bytes.unwrap_or(0),
                nano_cpus: c.resources.nano_cpus.unwrap_or(0),
                pids_limit: c.resources.pids_limit.unwrap_or(0),
                restart_policy: rec.restart_policy.to_string(),
                auto_remove: rec.auto_remove,
                privileged: c.security.privileged,
                cap_add: c.security.cap_add.clone(),
                cap_drop: c.security.cap_drop.clone(),
                readonly_rootfs: c.security.readonly_rootfs,
                network_mode: network_mode(rec, sandbox),
                port_bindings,
                mounts: c.mounts.clone(),
                init: rec.init,
                ulimits: c.ulimits.clone(),
                group_add: c.security.group_add.clone(),
                tmpfs: c
                    .mounts
                    .iter()
                    .filter(|m| m.kind == MountKind::Tmpfs)
                    .map(|m| (m.destination.clone(), m.options.join(",")))
                    .collect(),
                log_config: LogConfigView {
                    kind: "json-file".into(),
                    config: c.log.opts(),
                },
            },
            network_settings: network,
            project: rec.project.clone(),
            mounts: c
                .mounts
                .iter()
                .filter(|m| !(rec.init && m.destination == INIT_PATH))
                .map(MountView::new)
                .collect(),
        }
    }
}

/// The command a container runs, as its user gave it: under husk's init the init's own arguments come first.
fn user_command(rec: &ContainerRecord) -> Vec<String> {
    let args = &rec.config.process.args;
    if rec.init {
        args.iter().skip(2).cloned().collect()
    } else {
        args.clone()
    }
}

/// A container's network mode: its sandbox's in sandbox mode.
fn network_mode(rec: &ContainerRecord, sandbox: Option<&SandboxRecord>) -> String {
    match sandbox {
        Some(sb) => sb.config.network.mode().to_string(),
        None => rec.config.network.mode().to_string(),
    }
}

/// A container's ports as published (host ports husk picked for `-P` included) when known, else as asked.
fn published_ports(rec: &ContainerRecord, sandbox: Option<&SandboxRecord>) -> Vec<PortMapping> {
    let network = match sandbox {
        Some(sb) => sb.runtime.network.as_ref(),
        None => rec.runtime.network.as_ref(),
    };
    match (network, sandbox) {
        (Some(n), _) if !n.ports.is_empty() => n.ports.clone(),
        (_, Some(sb)) => sb.config.network.ports.clone(),
        _ => rec.config.network.ports.clone(),
    }
}

/// A container as a list shows it (`GET /husk/v1/containers?view=summary`, what `husk ps` asks for): the
/// fields `ps` prints and filters on, a third of the size of a [`ContainerView`], as Docker's container list
/// is a summary and its inspect the whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    /// Full ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image reference as normalised.
    pub image: String,
    /// Image ID.
    pub image_id: String,
    /// `sandbox` or `standalone`.
    pub mode: Mode,
    /// The sandbox's ID (sandbox mode).
    pub sandbox_id: Option<String>,
    /// When it was created.
    pub created: Timestamp,
    /// The command as the user gave it.
    pub command: Vec<String>,
    /// Docker's status name.
    pub status: ContainerStatus,
    /// Last exit code.
    pub exit_code: i32,
    /// When it last started; `""` if never.
    #[serde(default, with = "husk_core::time::optional")]
    pub started_at: Option<Timestamp>,
    /// When it last exited; `""` if never.
    #[serde(default, with = "husk_core::time::optional")]
    pub finished_at: Option<Timestamp>,
    /// Health check status (`starting`, `healthy`, `unhealthy`), for containers with a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Each mount's volume name, or its source for other kinds.
    pub mounts: Vec<String>,
    /// Network mode.
    pub network_mode: String,
}

impl ContainerSummary {
    /// The summary of a stored container (with its sandbox, for the network).
    pub fn new(rec: &ContainerRecord, sandbox: Option<&SandboxRecord>) -> ContainerSummary {
        let c = &rec.config;
        let exit = rec.exit.as_ref();
        ContainerSummary {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.name.clone(),
            image_id: c.image.id.clone(),
            mode: rec.mode,
            sandbox_id: rec.sandbox_id.clone(),
            created: rec.created_at,
            command: user_command(rec),
            status: rec.status,
            exit_code: exit.map_or(0, |e| e.code),
            started_at: rec.started_at,
            finished_at: exit.and_then(|e| e.finished_at),
            health: rec.health.as_ref().map(|h| h.status.as_str().to_string()),
            ports: published_ports(rec, sandbox),
            labels: c.labels.clone(),
            mounts: c
                .mounts
                .iter()
                .filter(|m| !(rec.init && m.destination == INIT_PATH))
                .map(MountView::new)
                .map(|m| if m.name.is_empty() { m.source } else { m.name })
                .collect(),
            network_mode: network_mode(rec, sandbox),
        }
    }
}

/// A sandbox as `sandbox inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxView {
    /// Full ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Hostname.
    pub hostname: String,
    /// Driver.
    pub driver: String,
    /// Where the sandbox is in its life.
    pub status: SandboxStatus,
    /// When it was created.
    pub created: Timestamp,
    /// Containers share a PID namespace.
    pub share_pid: bool,
    /// Containers run in the host's PID namespace.
    #[serde(default)]
    pub host_pid: bool,
    /// Containers run in the host's IPC namespace.
    #[serde(default)]
    pub host_ipc: bool,
    /// Namespace files by type.
    pub namespaces: BTreeMap<String, String>,
    /// PID of the holding process, if any.
    pub pid: Option<i32>,
    /// Network mode.
    pub network_mode: String,
    /// Network identity.
    pub network_settings: Option<NetworkStatus>,
    /// IDs of its containers.
    pub containers: Vec<String>,
    /// The container it was made for by `run`, if any.
    pub owner_container: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Project.
    pub project: String,
    /// The sandbox's own volumes, by the names its containers use.
    #[serde(default)]
    pub volumes: Vec<String>,
}

impl SandboxView {
    /// The view of a stored sandbox and its containers' IDs.
    pub fn new(sb: &SandboxRecord, containers: Vec<String>) -> SandboxView {
        SandboxView {
            id: sb.config.id.clone(),
            name: sb.config.name.clone(),
            hostname: sb.config.hostname.clone(),
            driver: sb.driver.clone(),
            status: sb.status,
            created: sb.created_at,
            share_pid: sb.config.share_pid,
            host_pid: sb.config.host_pid,
            host_ipc: sb.config.host_ipc,
            namespaces: sb.runtime.namespaces.clone(),
            pid: sb.runtime.pid,
            network_mode: sb.config.network.mode().to_string(),
            network_settings: sb.runtime.network.clone(),
            containers,
            owner_container: sb.owner_container.clone(),
            labels: sb.config.labels.clone(),
            project: sb.project.clone(),
            volumes: Vec::new(),
        }
    }
}

/// The answer to `wait`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResult {
    /// Exit code.
    pub status_code: i32,
    /// The full exit status, when known.
    pub exit: Option<ExitStatus>,
}

/// `husk info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    /// husk's version.
    pub version: String,
    /// The default driver.
    pub default_driver: String,
    /// The default mode.
    pub default_mode: Mode,
    /// Every configured driver.
    pub drivers: Vec<husk_core::DriverInfo>,
    /// Containers known.
    pub containers: usize,
    /// Of which running.
    pub containers_running: usize,
    /// Sandboxes known.
    pub sandboxes: usize,
    /// Images stored.
    pub images: usize,
    /// State root.
    pub root: String,
    /// Runtime root.
    pub run_root: String,
}

/// What `container prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerPruneReport {
    /// IDs of the containers removed.
    pub containers_deleted: Vec<String>,
    /// Bytes freed (their writable layers, where the driver keeps them on this host).
    pub space_reclaimed: u64,
}

/// Changes to an existing container (`update`): what is given changes, the rest stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerUpdate {
    /// New limits; a limit left out stays as it is.
    pub resources: Resources,
    /// New restart policy.
    pub restart_policy: Option<RestartPolicy>,
}
