//! Sandboxes, containers and what is known about them.
//!
//! `*Config` types are what the engine decided and hands to a driver; `*Record` types are what the store keeps
//! (config + observed state + the driver's own data, so a restarted daemon can find everything again).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a container is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The container joins a sandbox's network, IPC and UTS (and optionally PID) namespaces.
    #[default]
    Sandbox,
    /// The container has every namespace of its own.
    Standalone,
}

impl Mode {
    /// The mode's name as users type it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sandbox => "sandbox",
            Mode::Standalone => "standalone",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sandbox" | "container-in-sandbox" => Ok(Mode::Sandbox),
            "standalone" => Ok(Mode::Standalone),
            _ => Err(Error::invalid(
                "mode",
                format!("unknown mode {s:?}: use sandbox or standalone"),
            )),
        }
    }
}

/// The lifecycle status of a container, with Docker's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Being created: recorded, not yet made real by the driver.
    #[default]
    Creating,
    /// Made real by the driver, never started (or restarted and waiting to start).
    Created,
    /// Its main process runs.
    Running,
    /// Frozen.
    Paused,
    /// Exited and about to be started again by its restart policy.
    Restarting,
    /// Its main process exited.
    Exited,
    /// Being removed.
    Removing,
    /// The driver lost it or failed it; only removal is possible.
    Dead,
}

impl ContainerStatus {
    /// Docker's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Removing => "removing",
            ContainerStatus::Dead => "dead",
        }
    }

    /// Whether the container's processes may be alive (running, paused or between restarts).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
        )
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The actions whose allowed starting states are checked in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a created or exited container.
    Start,
    /// Stop a running container.
    Stop,
    /// Send a signal.
    Kill,
    /// Freeze.
    Pause,
    /// Thaw.
    Unpause,
    /// Stop (if needed) and start again.
    Restart,
    /// Run another process inside.
    Exec,
    /// Attach to the main process's stdio.
    Attach,
    /// Remove without force.
    Delete,
    /// Read resource usage.
    Stats,
    /// List processes.
    Top,
}

impl Action {
    /// The verb users know the action by.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Restart => "restart",
            Action::Exec => "exec",
            Action::Attach => "attach",
            Action::Delete => "remove",
            Action::Stats => "stats",
            Action::Top => "top",
        }
    }

    /// Whether a container in `status` may undergo this action (the allowed-state table).
    pub fn allowed_in(self, status: ContainerStatus) -> bool {
        use ContainerStatus as S;
        match self {
            Action::Start => matches!(status, S::Created | S::Exited),
            Action::Stop => matches!(
                status,
                S::Running | S::Paused | S::Restarting | S::Created | S::Exited
            ),
            Action::Kill | Action::Pause | Action::Exec | Action::Top => {
                matches!(status, S::Running)
            }
            Action::Unpause => matches!(status, S::Paused),
            Action::Restart => matches!(
                status,
                S::Created | S::Running | S::Exited | S::Paused | S::Restarting
            ),
            Action::Attach => matches!(status, S::Created | S::Running | S::Paused),
            Action::Delete => matches!(status, S::Created | S::Exited | S::Dead),
            Action::Stats => matches!(status, S::Running | S::Paused),
        }
    }

    /// Checks the table and explains a refusal the way users read it.
    pub fn check(self, name: &str, status: ContainerStatus) -> Result<()> {
        if self.allowed_in(status) {
            return Ok(());
        }
        let hint = match (self, status) {
            (Action::Delete, S::Running | S::Paused | S::Restarting) => {
                ": stop it first or force the removal (rm -f)"
            }
            _ => "",
        };
        use ContainerStatus as S;
        Err(Error::conflict(format!(
            "cannot {} container {name}: it is {status}{hint}",
            self.as_str()
        )))
    }
}

/// When a container is started again after its main process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max_retries` times (0 = unlimited).
    OnFailure {
        /// The most restarts in a row (0 = no limit).
        #[serde(default)]
        max_retries: u32,
    },
    /// Always, also when the daemon starts, unless removed.
    Always,
    /// Always, except after the user stopped it.
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's syntax: `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "restart",
                format!(
                    "invalid restart policy {text:?}: use no, on-failure[:N], always or unless-stopped"
                ),
            )
        };
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (text, None),
        };
        match (name, arg) {
            ("no" | "", None) => Ok(RestartPolicy::No),
            ("always", None) => Ok(RestartPolicy::Always),
            ("unless-stopped", None) => Ok(RestartPolicy::UnlessStopped),
            ("on-failure", None) => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
            ("on-failure", Some(n)) => Ok(RestartPolicy::OnFailure {
                max_retries: n.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }

    /// Whether a container that exited with `exit_code` after `restarts` restarts should start again.
    /// `stopped_by_user` is true when the exit followed a stop or kill request.
    pub fn should_restart(self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max_retries: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}

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

/// A published port: traffic to `host_ip:host_port` reaches the sandbox's `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on (empty = every address).
    #[serde(default)]
    pub host_ip: String,
    /// Host port.
    pub host_port: u16,
    /// Port inside the sandbox.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

impl PortMapping {
    /// Parses Docker's `-p [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]`. Without a host port (`80`, `127.0.0.1::80`)
    /// the host port is 0: one is picked when the port is published, as Docker does.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(
                "ports",
                format!(
                    "invalid port mapping {text:?}: {why}; use [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]"
                ),
            )
        };
        let (spec, protocol) = match text.rsplit_once('/') {
            Some((s, p)) => (s, p.to_ascii_lowercase()),
            None => (text, "tcp".to_string()),
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(bad("protocol must be tcp or udp"));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("ports are numbers from 1 to 65535"))
        };
        // An IPv6 host address is written in brackets: [::1]:8080:80
        let (host_ip, rest) = if let Some(r) = spec.strip_prefix('[') {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| bad("unclosed IPv6 address"))?;
            (ip.to_string(), rest.to_string())
        } else {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (String::new(), spec.to_string()),
                3 => (parts[0].to_string(), format!("{}:{}", parts[1], parts[2])),
                _ => return Err(bad("too many ':'")),
            }
        };
        if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("the host address is not an IP address"));
        }
        let (host_port, container_port) = match rest.split_once(':') {
            Some(("", c)) => (0, port(c)?),
            Some((h, c)) => (port(h)?, port(c)?),
            None => (0, port(&rest)?),
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        write!(
            f,
            "{ip}:{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// How a sandbox (or a standalone container) is connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// `bridge` (default), `host`, `none`, or the name of a configured network.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// DNS servers for `/etc/resolv.conf` (empty = the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// Resolver options (`ndots:5`) for `/etc/resolv.conf` (empty = the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// Extra `/etc/hosts` lines as `NAME:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
}

impl NetworkConfig {
    /// The network mode, defaulting to `bridge`.
    pub fn mode(&self) -> &str {
        if self.mode.is_empty() {
            "bridge"
        } else {
            &self.mode
        }
    }
}

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

impl MountKind {
    /// Every kind, in the order error messages list them.
    pub const ALL: [MountKind; 4] = [
        MountKind::Bind,
        MountKind::Volume,
        MountKind::Tmpfs,
        MountKind::Image,
    ];

    /// The kind's name, as Docker and husk's JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Image => "image",
        }
    }

    /// Whether the mount shows a host path (`host_path`): a bind or a volume.
    pub fn is_host_path(self) -> bool {
        matches!(self, MountKind::Bind | MountKind::Volume)
    }
}

impl fmt::Display for MountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MountKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<MountKind> {
        MountKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| {
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

/// The network identity a sandbox or standalone container got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Network name.
    pub network: String,
    /// Interface addresses with prefix (`10.88.0.5/16`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Gateway address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// MAC address of the sandbox's interface.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Interface name inside the sandbox.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    /// Ports published.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
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
    /// When it exited (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_at: String,
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
    /// Time of the reading (RFC 3339).
    pub read_at: String,
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

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was written (RFC 3339 with nanoseconds).
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
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

impl SandboxStatus {
    /// The status's name, as the API and `sandbox ls` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Creating => "creating",
            SandboxStatus::Ready => "ready",
            SandboxStatus::NotReady => "notready",
            SandboxStatus::Error => "error",
            SandboxStatus::Orphan => "orphan",
        }
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// RFC 3339.
    pub created_at: String,
    /// The container this sandbox was made for, when `husk run` made it implicitly; it goes with that container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_container: Option<String>,
    /// The project that owns it.
    #[serde(default)]
    pub project: String,
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
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, empty if never started.
    #[serde(default)]
    pub started_at: String,
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

/// Now as RFC 3339 with nanoseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A new random 64-hex-character ID.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// A name made of two words, as Docker names unnamed containers (`brave_turing_3f2a`).
pub fn random_name() -> String {
    const ADJ: &[&str] = &[
        "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
        "nimble", "proud", "quiet", "sharp", "swift", "tender", "upbeat", "vivid", "witty", "zen",
    ];
    const NOUN: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermi", "gauss", "hopper", "kepler", "lovelace",
        "maxwell", "newton", "noether", "pascal", "ritchie", "shannon", "thompson", "torvalds",
        "turing", "wozniak", "yalow",
    ];
    let a = ADJ[rand::random::<usize>() % ADJ.len()];
    let n = NOUN[rand::random::<usize>() % NOUN.len()];
    format!("{a}_{n}_{:04x}", rand::random::<u16>())
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_opts_are_read_checked_and_merged() {
        use super::LogLimits;
        let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let l = LogLimits::from_opts(&opts(&[("max-size", "10m"), ("max-file", "3")])).unwrap();
        assert_eq!(l.max_size_bytes, Some(10 << 20));
        assert_eq!(l.max_files, Some(3));
        assert_eq!(l.files(), 3);
        assert_eq!(
            l.opts(),
            opts(&[("max-size", "10485760"), ("max-file", "3")])
        );
        assert!(LogLimits::from_opts(&opts(&[])).unwrap().is_unbounded());
        let size_only = LogLimits::from_opts(&opts(&[("max-size", "1k")])).unwrap();
        assert_eq!(size_only.files(), 1, "one file when only max-size is set");
        let merged = size_only.or(l);
        assert_eq!(
            (merged.max_size_bytes, merged.max_files),
            (Some(1024), Some(3)),
            "the request's own first, the defaults for the rest"
        );
        for (pairs, field) in [
            (&[("max-size", "0")][..], "log-opt max-size"),
            (&[("max-size", "lots")][..], "log-opt max-size"),
            (&[("max-file", "0")][..], "log-opt max-file"),
            (&[("max-file", "-1")][..], "log-opt max-file"),
            (&[("mode", "non-blocking")][..], "log-opt"),
        ] {
            let e = LogLimits::from_opts(&opts(pairs)).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{}", e.message);
            assert!(e.message.contains(pairs[0].0), "{}", e.message);
        }
        // Records written before the field existed load as unbounded.
        let old: super::ContainerConfig = serde_json::from_str(
            r#"{"id":"c","name":"n","image":{"name":"i","id":"x"},"process":{"args":["sh"]}}"#,
        )
        .unwrap();
        assert!(old.log.is_unbounded());
    }

    use super::*;

    #[test]
    fn restart_policies_parse_and_decide() {
        assert_eq!(RestartPolicy::parse("no").unwrap(), RestartPolicy::No);
        assert_eq!(
            RestartPolicy::parse("on-failure:3").unwrap(),
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert_eq!(
            RestartPolicy::parse("unless-stopped").unwrap(),
            RestartPolicy::UnlessStopped
        );
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        assert!(RestartPolicy::parse("always:2").is_err());
        let p = RestartPolicy::OnFailure { max_retries: 2 };
        assert!(p.should_restart(1, 0, false));
        assert!(p.should_restart(1, 1, false));
        assert!(!p.should_restart(1, 2, false));
        assert!(!p.should_restart(0, 0, false));
        assert!(RestartPolicy::Always.should_restart(0, 100, false));
        assert!(!RestartPolicy::Always.should_restart(0, 0, true));
        assert_eq!(p.to_string(), "on-failure:2");
    }

    #[test]
    fn allowed_state_table() {
        use ContainerStatus as S;
        assert!(Action::Start.allowed_in(S::Created));
        assert!(Action::Start.allowed_in(S::Exited));
        assert!(!Action::Start.allowed_in(S::Running));
        assert!(!Action::Delete.allowed_in(S::Running));
        assert!(Action::Unpause.allowed_in(S::Paused));
        assert!(!Action::Exec.allowed_in(S::Paused));
        let e = Action::Delete.check("web", S::Running).unwrap_err();
        assert!(e.message.contains("rm -f"), "{}", e.message);
    }

    #[test]
    fn port_mappings() {
        let p = PortMapping::parse("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol.as_str()),
            (8080, 80, "tcp")
        );
        let p = PortMapping::parse("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.protocol.as_str()),
            ("127.0.0.1", "udp")
        );
        let p = PortMapping::parse("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, "::1");
        // No host port: one is picked when the port is published.
        let p = PortMapping::parse("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = PortMapping::parse("127.0.0.1::80/udp").unwrap();
        assert_eq!(
            (p.host_ip.as_str(), p.host_port, p.container_port),
            ("127.0.0.1", 0, 80)
        );
        for bad in [
            "0:80",
            "x:80",
            "1:2:3:4",
            "8080:80/sctp",
            "nothost:1:2",
            "70000:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_and_names() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(crate::units::validate_name("name", &random_name()).is_ok());
    }

    #[test]
    fn user_namespace_mappings_are_checked() {
        let one = |container_id, host_id, size| {
            vec![IdMapping {
                container_id,
                host_id,
                size,
            }]
        };
        let userns = |uids: Vec<IdMapping>, gids: Vec<IdMapping>| UserNamespaceConfig {
            uid_mappings: uids,
            gid_mappings: gids,
        };
        let good = userns(one(0, 1000, 100_000), one(0, 1000, 100_000));
        good.validate("userns_options").unwrap();
        assert_eq!(good.host_root_uid(), Some(1000));
        assert_eq!(good.uid_mappings[0].map_line(), "0 1000 100000\n");
        assert_eq!(good.uid_mappings[0].host_of(99_999), Some(100_999));
        assert_eq!(good.uid_mappings[0].host_of(100_000), None);
        let mut two = one(0, 1000, 100_000);
        two.extend(one(0, 2000, 100_000));
        let cases = [
            (
                userns(two.clone(), two),
                "userns_options.uids",
                "exactly one",
            ),
            (userns(vec![], one(0, 1, 1)), "userns_options.uids", "not 0"),
            (
                userns(one(0, 1, 1), one(1, 1000, 10)),
                "userns_options.gids",
                "ID 0",
            ),
            (
                userns(one(1, 1000, 100_000), one(0, 1, 1)),
                "userns_options.uids",
                "ID 0",
            ),
            (
                userns(one(0, 1, 0), one(0, 1, 1)),
                "userns_options.uids",
                "empty",
            ),
            (
                userns(one(0, u32::MAX, 2), one(0, 1, 1)),
                "userns_options.uids",
                "largest",
            ),
        ];
        for (config, field, words) in cases {
            let e = config.validate("userns_options").unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
            assert_eq!(e.field.as_deref(), Some(field), "{}", e.message);
            assert!(
                e.message.starts_with(field) && e.message.contains(words),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("standalone".parse::<Mode>().unwrap(), Mode::Standalone);
        assert!("vm".parse::<Mode>().is_err());
    }

    #[test]
    fn device_flags_parse_as_docker_reads_them() {
        let d = DeviceMapping::parse("/dev/fuse").unwrap();
        assert_eq!((d.path_in_container(), d.access()), ("/dev/fuse", "rwm"));
        let d = DeviceMapping::parse("/dev/fuse:r").unwrap();
        assert_eq!((d.path_in_container(), d.access()), ("/dev/fuse", "r"));
        let d = DeviceMapping::parse("/dev/fuse:/dev/f").unwrap();
        assert_eq!((d.path_in_container(), d.access()), ("/dev/f", "rwm"));
        let d = DeviceMapping::parse("/dev/fuse:/dev/f:rw").unwrap();
        assert_eq!((d.path_in_container(), d.access()), ("/dev/f", "rw"));
        for bad in [
            "dev/fuse",
            "/dev/fuse:f:rw",
            "/dev/fuse:/f:rwx",
            "/dev/fuse:/f:rr",
            "/a:/b:r:w",
        ] {
            let e = DeviceMapping::parse(bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("devices"), "{bad}");
        }
    }

    #[test]
    fn swap_equal_to_memory_is_no_swap() {
        let r = |memory, swap| Resources {
            memory_bytes: memory,
            memory_swap_bytes: swap,
            ..Default::default()
        };
        assert!(!r(Some(1 << 30), None).asks_for_swap());
        assert!(!r(Some(1 << 30), Some(1 << 30)).asks_for_swap());
        assert!(r(Some(1 << 30), Some(2 << 30)).asks_for_swap());
        assert!(r(Some(1 << 30), Some(-1)).asks_for_swap());
        assert!(r(None, Some(1 << 30)).asks_for_swap());
    }
}
