//! Containers: what the engine decided for one (process, mounts, security, logs) and what is known of it
//! (runtime, exit, stats, log lines, the stored record).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The process a container (or an exec) runs, fully resolved from the image and the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessConfig {
    /// argv; never empty.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[serde(default)]
    pub cwd: String,
    /// `user[:group]`, by name or number, resolved inside the container's root filesystem.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Allocate a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open.
    #[serde(default)]
    pub stdin: bool,
}

/// What a [`MountConfig`] mounts; its JSON form is the lower-case name Docker uses (`"type": "bind"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A host directory or file (`source` is its path).
    Bind,
    /// A named or anonymous volume (`source` is its name, empty for an anonymous one); Docker's default for
    /// `--mount`.
    #[default]
    Volume,
    /// A fresh tmpfs.
    Tmpfs,
    /// A stored image's files, read-only (`source` names the image).
    Image,
}

crate::names::named_values!(MountKind {
    Bind => "bind",
    Volume => "volume",
    Tmpfs => "tmpfs",
    Image => "image",
});

impl MountKind {
    /// Whether the mount shows a host path (`host_path`): a bind or a volume.
    pub fn is_host_path(self) -> bool {
        matches!(self, MountKind::Bind | MountKind::Volume)
    }
}

impl std::str::FromStr for MountKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<MountKind> {
        MountKind::from_name(text).ok_or_else(|| {
            Error::invalid(
                "type",
                format!("unknown mount type {text:?}: use bind, volume, tmpfs or image"),
            )
        })
    }
}

/// A filesystem mount into a container (bind, volume, tmpfs or image).
///
/// Front ends fill `kind`, `source`, `destination`, `readonly` and `options` (see [`crate::options`] for the
/// command-line syntaxes); the engine validates them, creates volumes and fills `host_path`, so a driver mounts
/// `host_path` for binds and volumes alike.
///
/// An `image` mount shows a stored image's files read-only at `destination` (Kubernetes' `image` volume
/// source, Docker's `--mount type=image`): `source` names the image, which must already be here; the engine
/// resolves it into `image` (its ID and unpacked layers), and the driver mounts those layers read-only, `nosuid`
/// and `nodev`, without any writable layer. A container's image mounts keep their images in use as its own
/// image is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountConfig {
    /// What is mounted.
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path (bind), volume name (volume), image reference (image) or empty (tmpfs).
    #[serde(default)]
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    /// Mount read-only (always, for an image).
    #[serde(default)]
    pub readonly: bool,
    /// Extra mount options (`size=64m`, `mode=1777`, propagation such as `rprivate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// The host directory or file to mount, as the engine resolved it (a volume's data directory, or the
    /// bind's source); empty for tmpfs and image mounts and before the engine saw the mount.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_path: String,
    /// The image of an `image` mount as the engine resolved it; `None` for other kinds and before the engine
    /// saw the mount (the engine replaces whatever a request carries here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::driver::RootfsLayers>,
    /// A directory or file inside the image of an `image` mount to show instead of the image's root (Docker's
    /// `image-subpath`, the CRI's `image_sub_path`). It is resolved inside the image, as if the image were the
    /// root: `..` and symbolic links never lead out of it. Only image mounts take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
}

/// Security settings of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityConfig {
    /// Every capability the daemon has, no seccomp filter, no masked paths, all devices.
    #[serde(default)]
    pub privileged: bool,
    /// Capabilities to add to the default set (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities to remove from the default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `None` = husk's default profile, `Some("unconfined")`, or a profile's JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<String>,
    /// Forbid gaining privileges through setuid binaries (on by default).
    #[serde(default = "default_true")]
    pub no_new_privileges: bool,
    /// Mount the root filesystem read-only.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Supplementary groups for every process (names resolved in the container's `/etc/group`, or numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// Whether processes also get the groups the image's `/etc/group` puts the user in.
    #[serde(default, skip_serializing_if = "GroupsPolicy::is_merge")]
    pub groups_policy: GroupsPolicy,
    /// Paths masked in the container instead of husk's default list (`None`: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_paths: Option<Vec<String>>,
    /// Paths made read-only in the container instead of husk's default list (`None`: the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_paths: Option<Vec<String>>,
    /// Namespaced kernel parameters set in the container's namespaces (`net.*` of its network namespace,
    /// `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*` of its IPC namespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}

/// Which supplementary groups a container's processes get besides their primary group and `group_add` (the
/// CRI's `supplemental_groups_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupsPolicy {
    /// Also every group the image's `/etc/group` lists the user in, as Docker does.
    #[default]
    Merge,
    /// Never a group from the image: only the primary group and `group_add`.
    Strict,
}

impl GroupsPolicy {
    /// Whether this is the default, [`GroupsPolicy::Merge`].
    pub fn is_merge(&self) -> bool {
        *self == GroupsPolicy::Merge
    }
}

/// The identity a container's main process was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary group IDs (the primary group among them).
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// The image a container runs, as the engine resolved it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The reference the user gave, normalised (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The image ID (`sha256:` digest of its config).
    pub id: String,
}

/// Everything a driver needs to make a container real.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// 64 hex characters.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image.
    pub image: ImageRef,
    /// The main process.
    pub process: ProcessConfig,
    /// Hostname (standalone mode; in sandbox mode the sandbox's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Limits.
    #[serde(default)]
    pub resources: Resources,
    /// Security settings.
    #[serde(default)]
    pub security: SecurityConfig,
    /// Mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountConfig>,
    /// Network (standalone mode only; in sandbox mode the sandbox's network applies).
    #[serde(default)]
    pub network: NetworkConfig,
    /// User labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Signal that stops the container (default SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<i32>,
    /// Seconds between the stop signal and SIGKILL (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    /// Per-process resource limits (`--ulimit`), never above the daemon's own hard limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<crate::options::Ulimit>,
    /// A host file the container's output is also written to, in the Kubernetes CRI log format
    /// (`<RFC 3339 nanoseconds> <stdout|stderr> <F|P> <text>`), for kubelet to read (the CRI's `log_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_log_path: Option<String>,
    /// Host devices the container gets (see [`DeviceMapping`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
    /// The cgroup the container's cgroup is made under, instead of the driver's own parent: its sandbox's
    /// [`SandboxConfig::cgroup_parent`], copied by the engine when the container is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// How much of the container's output is kept on disk (`--log-opt max-size=10m --log-opt max-file=3`).
    #[serde(default, skip_serializing_if = "LogLimits::is_unbounded")]
    pub log: LogLimits,
}

/// How much of a container's output is kept on disk, as Docker's `json-file` driver bounds it: when the log
/// would grow past `max_size_bytes` it is rotated (`log` → `log.1` → … → `log.<max_files - 1>`, the oldest
/// dropped), so at most `max_size_bytes × max_files` (plus one line per file) stay. Unbounded by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// The largest a log file grows before it is rotated (`max-size`); `None` = never rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size_bytes: Option<u64>,
    /// How many files are kept, the current one included (`max-file`; default 1: the file starts over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

impl LogLimits {
    /// Whether nothing bounds the log.
    pub fn is_unbounded(&self) -> bool {
        self.max_size_bytes.is_none() && self.max_files.is_none()
    }

    /// How many files the log may span (1 when it is never rotated).
    pub fn files(&self) -> u32 {
        match self.max_size_bytes {
            Some(_) => self.max_files.unwrap_or(1).max(1),
            None => 1,
        }
    }

    /// These limits where `self` sets none: `other`'s (a daemon's defaults under a container's options).
    pub fn or(self, other: LogLimits) -> LogLimits {
        LogLimits {
            max_size_bytes: self.max_size_bytes.or(other.max_size_bytes),
            max_files: self.max_files.or(other.max_files),
        }
    }

    /// The limits as Docker's log options (`max-size` in bytes, `max-file`).
    pub fn opts(&self) -> BTreeMap<String, String> {
        let mut opts = BTreeMap::new();
        if let Some(size) = self.max_size_bytes {
            opts.insert("max-size".to_string(), size.to_string());
        }
        if let Some(files) = self.max_files {
            opts.insert("max-file".to_string(), files.to_string());
        }
        opts
    }

    /// Reads Docker's log options (`--log-opt KEY=VALUE`): `max-size` (a size such as `10m`, above 0) and
    /// `max-file` (at least 1); any other key is refused by name.
    pub fn from_opts(opts: &BTreeMap<String, String>) -> Result<LogLimits> {
        let mut limits = LogLimits::default();
        for (key, value) in opts {
            match key.as_str() {
                "max-size" => {
                    let size = crate::units::parse_memory("log-opt max-size", value)?;
                    if size <= 0 {
                        return Err(Error::invalid(
                            "log-opt max-size",
                            format!("log-opt max-size {value:?} must be above 0"),
                        ));
                    }
                    limits.max_size_bytes = Some(size as u64);
                }
                "max-file" => match value.trim().parse::<u32>() {
                    Ok(n) if n >= 1 => limits.max_files = Some(n),
                    _ => {
                        return Err(Error::invalid(
                            "log-opt max-file",
                            format!(
                                "log-opt max-file {value:?} must be a whole number of at least 1"
                            ),
                        ));
                    }
                },
                other => {
                    return Err(Error::invalid(
                        "log-opt",
                        format!("unknown log-opt {other:?}: husk knows max-size and max-file"),
                    ));
                }
            }
        }
        Ok(limits)
    }
}

/// What a driver reports about a container it made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRuntime {
    /// PID of the main process on the host (0 when unknown or not running, as for VM guests).
    #[serde(default)]
    pub pid: i32,
    /// The network identity of a standalone container (in sandbox mode it is the sandbox's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// The identity the main process starts with, where the driver resolves it on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<ProcessUser>,
    /// The driver's own data (shim socket, engine container ID ...), opaque to everyone else.
    #[serde(default)]
    pub driver_data: serde_json::Value,
}

/// How a container's main process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; 128+N when killed by signal N.
    pub code: i32,
    /// Killed by the kernel's OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    /// When it exited, if known.
    #[serde(
        default,
        with = "crate::time::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<Timestamp>,
    /// Why, when the driver knows more than the code (for example "the VM crashed").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// What the driver finds when asked about a container (after a daemon restart, for example).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObservedState {
    /// Created, not started.
    Created,
    /// Running, with the main process's host PID.
    Running {
        /// Host PID (0 if unknown).
        pid: i32,
    },
    /// Frozen.
    Paused {
        /// Host PID (0 if unknown).
        pid: i32,
    },
    /// Exited.
    Exited(ExitStatus),
    /// The driver has no trace of it.
    Missing,
}

/// Resource usage of a container at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Time of the reading; None in the empty reading of a container that is not running (stored as `""`).
    #[serde(default, with = "crate::time::optional")]
    pub read_at: Option<Timestamp>,
    /// Total CPU time used, nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU time of the whole host (or guest), nanoseconds, for percentages; 0 if unknown.
    #[serde(default)]
    pub system_cpu_ns: u64,
    /// Number of CPUs online.
    #[serde(default)]
    pub online_cpus: u32,
    /// Memory in use, bytes.
    pub memory_usage_bytes: u64,
    /// Memory limit, bytes (0 = none).
    pub memory_limit_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// PIDs limit (0 = none).
    #[serde(default)]
    pub pids_limit: u64,
    /// Bytes received over the network.
    #[serde(default)]
    pub net_rx_bytes: u64,
    /// Bytes sent over the network.
    #[serde(default)]
    pub net_tx_bytes: u64,
    /// Receive errors of the network interfaces (the kernel's `rx_errors`).
    #[serde(default)]
    pub net_rx_errors: u64,
    /// Transmit errors of the network interfaces (the kernel's `tx_errors`).
    #[serde(default)]
    pub net_tx_errors: u64,
    /// Bytes read from block devices (the cgroup's block I/O accounting; 0 where nothing is on a block device).
    #[serde(default)]
    pub block_read_bytes: u64,
    /// Bytes written to block devices.
    #[serde(default)]
    pub block_write_bytes: u64,
}

/// The processes of a container, as `ps` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Top {
    /// Column names.
    pub titles: Vec<String>,
    /// One row per process.
    pub processes: Vec<Vec<String>>,
}

/// Which of a container's output streams a line was written to; its JSON form is `"stdout"` or `"stderr"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    /// The standard output (a terminal's output too).
    Stdout,
    /// The standard error.
    Stderr,
}

crate::names::named_values!(OutputStream {
    Stdout => "stdout",
    Stderr => "stderr",
});

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was written.
    pub time: Timestamp,
    /// The stream it was written to.
    pub stream: OutputStream,
    /// The text, including its trailing newline if it had one.
    pub text: String,
}

/// Which log lines to return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    /// Keep streaming new lines until the container exits or the caller goes away.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines (None = all).
    #[serde(default)]
    pub tail: Option<usize>,
    /// Only lines written at or after this Unix time in nanoseconds.
    #[serde(default)]
    pub since_nanos: Option<i64>,
    /// Only lines written before this Unix time in nanoseconds.
    #[serde(default)]
    pub until_nanos: Option<i64>,
}

/// A stored container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// What was asked for, resolved.
    pub config: ContainerConfig,
    /// The driver that made it.
    pub driver: String,
    /// Sandbox or standalone.
    pub mode: Mode,
    /// The sandbox it lives in (sandbox mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// Restart policy.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    /// Remove it when it exits (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// Current status.
    pub status: ContainerStatus,
    /// What the driver made.
    #[serde(default)]
    pub runtime: ContainerRuntime,
    /// How it last exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Times started again by the restart policy since the last user start.
    #[serde(default)]
    pub restart_count: u32,
    /// The last exit followed a user's stop or kill (restart policies leave it alone).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last started; None if never (stored as `""`).
    #[serde(default, with = "crate::time::optional")]
    pub started_at: Option<Timestamp>,
    /// Last error the driver reported, if it failed the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The project that owns it.
    #[serde(default)]
    pub project: String,
    /// Notes front ends keep with the container (the creating user, settings of their own API). Drivers never
    /// see them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Runs under husk's init (`--init`): the config's first arguments are the init's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// The health check the engine runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::HealthConfig>,
    /// The health check's last results, while it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::HealthState>,
}

impl ContainerRecord {
    /// The container's ID.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
}
