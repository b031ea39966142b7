//! The driver contract: what every backend (`linux`, `docker`, `vm`) must do, and what it says it can do.
//!
//! The engine sees drivers only through [`Driver`]. A driver keeps whatever it needs to find its objects again
//! in the `driver_data` of [`SandboxRuntime`] / [`ContainerRuntime`]; the engine stores those and hands them
//! back, so a restarted daemon can reach every sandbox and container it made.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{
    ContainerConfig, ContainerRecord, ContainerRuntime, ExitStatus, LogEntry, LogOptions, Mode,
    ObservedState, ProcessConfig, Resources, SandboxConfig, SandboxRecord, SandboxRuntime, Stats,
    Top,
};
use crate::options::{ExtractOptions, PathStat};
use crate::stdio::BoxStdio;

/// Where a sandbox's port is connected to from the host ([`Driver::port_forward_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortForwardTarget {
    /// `127.0.0.1` (then `::1`) inside this network namespace file, or on the host's when `None`.
    Loopback {
        /// The sandbox's network namespace file.
        netns: Option<PathBuf>,
    },
    /// This address, from the host's network namespace (a VM guest: only the guest sees its own loopback).
    Address(std::net::IpAddr),
}

/// What a driver can do. The engine refuses requests that need something a driver lacks, naming both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Container-in-sandbox mode.
    pub sandbox: bool,
    /// Standalone mode.
    pub standalone: bool,
    /// A PID namespace shared by a sandbox's containers.
    pub pid_sharing: bool,
    /// Pause and unpause.
    pub pause: bool,
    /// Exec into a running container.
    pub exec: bool,
    /// Pseudo-terminals for the main process and execs.
    pub tty: bool,
    /// Attach to the main process's stdio.
    pub attach: bool,
    /// Resource usage readings.
    pub stats: bool,
    /// Process listing.
    pub top: bool,
    /// Memory, CPU and PIDs limits.
    pub limits: bool,
    /// CNI networking with published ports.
    pub networking: bool,
    /// Bind mounts of host paths.
    pub bind_mounts: bool,
    /// Named volumes.
    pub volumes: bool,
    /// Privileged containers.
    pub privileged: bool,
    /// tmpfs mounts.
    #[serde(default)]
    pub tmpfs: bool,
    /// A read-only root filesystem.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// Per-process resource limits (`--ulimit`).
    #[serde(default)]
    pub ulimits: bool,
    /// husk's init as PID 1 (`--init`): a host binary bind-mounted into the container.
    #[serde(default)]
    pub init: bool,
    /// Copying files in and out of containers (`cp`).
    #[serde(default)]
    pub copy: bool,
    /// Supplementary groups (`--group-add`).
    #[serde(default)]
    pub group_add: bool,
    /// Capabilities, seccomp profiles and no-new-privileges as asked (`--cap-add`, `--security-opt` ...).
    #[serde(default)]
    pub security_options: bool,
    /// Changing an existing container's memory, CPU and PIDs limits (`update`).
    #[serde(default)]
    pub update_limits: bool,
    /// A `/dev/shm` of the size asked (`--shm-size`).
    #[serde(default)]
    pub shm_size: bool,
    /// Images mounted read-only as volumes (`image` mounts: the CRI's `mounts[].image`, `--mount type=image`).
    #[serde(default)]
    pub image_mounts: bool,
}

impl Capabilities {
    /// Whether the driver supports `mode`.
    pub fn supports(&self, mode: Mode) -> bool {
        match mode {
            Mode::Sandbox => self.sandbox,
            Mode::Standalone => self.standalone,
        }
    }

    /// The modes supported, as names.
    pub fn modes(&self) -> Vec<Mode> {
        [Mode::Sandbox, Mode::Standalone]
            .into_iter()
            .filter(|m| self.supports(*m))
            .collect()
    }

    /// Fails with a message naming the driver and the mode when the mode is not supported.
    pub fn require_mode(&self, driver: &str, mode: Mode) -> Result<()> {
        if self.supports(mode) {
            return Ok(());
        }
        let have: Vec<&str> = self.modes().iter().map(|m| m.as_str()).collect();
        Err(Error::unsupported(format!(
            "driver {driver} does not support {mode} mode (it supports: {})",
            if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            }
        )))
    }

    /// Fails with a message naming the driver when `feature` (a field name of this struct) is false.
    pub fn require(&self, driver: &str, feature: &str, supported: bool) -> Result<()> {
        if supported {
            Ok(())
        } else {
            Err(Error::unsupported(format!(
                "driver {driver} does not support {feature}"
            )))
        }
    }
}

/// What a driver tells about itself and its backend for `husk info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriverInfo {
    /// Driver name.
    pub name: String,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Backend facts: cgroup version, engine version, accelerator, kernel ...
    pub details: BTreeMap<String, String>,
}

/// The image layers a container's root filesystem is made of, as the image store unpacked them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsLayers {
    /// Image ID (`sha256:...`).
    pub image_id: String,
    /// Normalised image name.
    pub image_name: String,
    /// Unpacked layer directories, bottom layer first, with overlayfs whiteouts.
    pub layers: Vec<PathBuf>,
}

/// A stream of log lines.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogEntry>> + Send>>;

/// A tar archive as a byte stream (`cp`). An archive that ends early ends with an error, never silently.
pub type ArchiveReader = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

fn no_copy(driver: &str) -> Error {
    Error::unsupported(format!(
        "driver {driver} does not support copying files (cp)"
    ))
}

/// A change the backend made on its own, outside husk's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChange {
    /// The backend no longer has this container (someone removed it behind husk's back).
    ContainerRemoved {
        /// husk's container ID.
        container_id: String,
    },
    /// A sandbox's process died on its own (its pause process killed, not removed by husk): the sandbox may no
    /// longer hold its namespaces.
    SandboxDied {
        /// husk's sandbox ID.
        sandbox_id: String,
    },
}

/// A feed of [`BackendChange`]s.
pub type ChangeStream = Pin<Box<dyn Stream<Item = Result<BackendChange>> + Send>>;

/// A backend that makes sandboxes and containers real.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The driver's name (`linux`, `docker`, `vm`).
    fn name(&self) -> &'static str;

    /// What the driver can do.
    fn capabilities(&self) -> Capabilities;

    /// Facts about the driver and its backend.
    async fn info(&self) -> Result<DriverInfo>;

    /// Makes a sandbox real.
    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxRuntime>;

    /// Removes a sandbox and everything the driver made for it. Must succeed on a half-made sandbox and when
    /// called twice.
    async fn delete_sandbox(&self, sandbox: &SandboxRecord) -> Result<()>;

    /// Whether the sandbox still exists in the backend (after a daemon restart).
    async fn sandbox_alive(&self, sandbox: &SandboxRecord) -> Result<bool>;

    /// Brings back a sandbox that died (its pause process or infra container gone with a crash of the backend
    /// or a reboot of the host) with the same ID and settings, so that the containers made in it can start
    /// again; returns its new runtime. The default makes it anew: deletes what is left of it, then creates it,
    /// which suits a driver whose containers find their sandbox by its ID alone.
    async fn revive_sandbox(&self, sandbox: &SandboxRecord) -> Result<SandboxRuntime> {
        self.delete_sandbox(sandbox).await?;
        self.create_sandbox(&sandbox.config).await
    }

    /// Makes a container real, created and not started. `sandbox` is set in sandbox mode.
    async fn create_container(
        &self,
        config: &ContainerConfig,
        sandbox: Option<&SandboxRecord>,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime>;

    /// Starts a created or exited container; returns the updated runtime (PID).
    async fn start_container(
        &self,
        container: &ContainerRecord,
        sandbox: Option<&SandboxRecord>,
    ) -> Result<ContainerRuntime>;

    /// Sends `signal` to the main process, or to every process of the container when `all`.
    async fn kill(&self, container: &ContainerRecord, signal: i32, all: bool) -> Result<()>;

    /// Freezes every process of the container.
    async fn pause(&self, container: &ContainerRecord) -> Result<()>;

    /// Thaws a frozen container.
    async fn unpause(&self, container: &ContainerRecord) -> Result<()>;

    /// Removes a container and everything the driver made for it (processes are killed). Must succeed on a
    /// half-made container and when called twice.
    async fn delete_container(&self, container: &ContainerRecord) -> Result<()>;

    /// Removes a container and the sandbox made for it alone (`run` in sandbox mode without `--sandbox`), with
    /// the guarantees of [`Driver::delete_container`] and [`Driver::delete_sandbox`]. The default does one
    /// after the other; a driver whose sandbox takes its containers with it (a VM) skips the first.
    async fn delete_container_and_sandbox(
        &self,
        container: &ContainerRecord,
        sandbox: &SandboxRecord,
    ) -> Result<()> {
        self.delete_container(container).await?;
        self.delete_sandbox(sandbox).await
    }

    /// Resolves when the current run of the main process ends (at once if it already has).
    async fn wait(&self, container: &ContainerRecord) -> Result<ExitStatus>;

    /// What the backend says about the container now.
    async fn observe(&self, container: &ContainerRecord) -> Result<ObservedState>;

    /// Runs another process in a running container; the stream carries its stdio and ends with its exit code.
    async fn exec(&self, container: &ContainerRecord, process: &ProcessConfig) -> Result<BoxStdio>;

    /// Runs another process as [`Driver::exec`] does, and kills it if it still runs after `deadline` (health
    /// checks: a probe that hangs must not pile up in the container). The default has no deadline.
    async fn exec_with_deadline(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline: std::time::Duration,
    ) -> Result<BoxStdio> {
        let _ = deadline;
        self.exec(container, process).await
    }

    /// Connects to the main process's stdio (with stdin if `stdin`); the stream ends with its exit code.
    async fn attach(&self, container: &ContainerRecord, stdin: bool) -> Result<BoxStdio>;

    /// Where the sandbox's ports are reached from the host, for port forwarding (the CRI's PortForward). The
    /// default: the pod's loopback inside its `net` namespace file, as kubelet expects (`localhost` of the pod),
    /// or the host's loopback for a sandbox on the host's network.
    fn port_forward_target(&self, sandbox: &SandboxRecord) -> Result<PortForwardTarget> {
        Ok(PortForwardTarget::Loopback {
            netns: sandbox.runtime.namespaces.get("net").map(PathBuf::from),
        })
    }

    /// Resizes the main process's terminal.
    async fn resize(&self, container: &ContainerRecord, rows: u16, cols: u16) -> Result<()>;

    /// The container's output, as recorded.
    async fn logs(&self, container: &ContainerRecord, options: &LogOptions) -> Result<LogStream>;

    /// Opens the container's CRI log file ([`crate::ContainerConfig::cri_log_path`]) again, after kubelet
    /// renamed it to rotate it. The default: the driver writes no CRI log.
    async fn reopen_log(&self, container: &ContainerRecord) -> Result<()> {
        Err(crate::Error::unsupported(format!(
            "driver {} writes no CRI log for container {}",
            self.name(),
            container.name()
        )))
    }

    /// Resource usage now.
    async fn stats(&self, container: &ContainerRecord) -> Result<Stats>;

    /// Processes of the container.
    async fn top(&self, container: &ContainerRecord) -> Result<Top>;

    /// The container's processes as the host's `ps` shows them with `ps_args` (Docker's `top CONTAINER [ps
    /// OPTIONS]`); without them, [`Driver::top`]. Drivers whose processes the host's `ps` cannot see refuse
    /// options (the default).
    async fn top_with(&self, container: &ContainerRecord, ps_args: Option<&str>) -> Result<Top> {
        match ps_args {
            None => self.top(container).await,
            Some(args) => Err(Error::unsupported(format!(
                "driver {} lists a container's processes only as 'ps -ef' does: no ps options ({args:?})",
                self.name()
            ))),
        }
    }

    /// Describes `path` inside the container (running or not), as `lstat` would, with a symbolic link's
    /// target resolved inside the container. A trailing `/` or `/.` follows a final symbolic link.
    async fn stat_path(&self, container: &ContainerRecord, path: &str) -> Result<PathStat> {
        let _ = (container, path);
        Err(no_copy(self.name()))
    }

    /// A tar archive of `path` inside the container, its top entry named after the path's last component.
    /// No symbolic link is ever followed out of the container's root (its volumes and binds count as inside).
    async fn archive(&self, container: &ContainerRecord, path: &str) -> Result<ArchiveReader> {
        let _ = (container, path);
        Err(no_copy(self.name()))
    }

    /// Unpacks a tar archive into the directory `dir` inside the container, never writing outside its root.
    async fn extract(
        &self,
        container: &ContainerRecord,
        dir: &str,
        archive: ArchiveReader,
        options: &ExtractOptions,
    ) -> Result<()> {
        let _ = (container, dir, archive, options);
        Err(no_copy(self.name()))
    }

    /// Gives the existing container these limits (its record still has the old ones): now if it runs, and at
    /// its next start. Drivers that declare `update_limits` implement it.
    async fn update_limits(&self, container: &ContainerRecord, limits: &Resources) -> Result<()> {
        let _ = limits;
        Err(Error::unsupported(format!(
            "driver {} does not support changing the limits of container {}",
            self.name(),
            container.name()
        )))
    }

    /// The directory on this host holding the container's changes to its image's files (its overlayfs upper
    /// directory), for `commit`. None when the driver keeps them where husk cannot read them as a directory
    /// (the default): the engine then refuses to commit the driver's containers.
    fn rootfs_changes(&self, _container: &ContainerRecord) -> Option<PathBuf> {
        None
    }

    /// The daemon is stopping: finish (briefly) what runs in the background, such as network teardown.
    async fn shutdown(&self) {}

    /// A feed of changes the backend makes on its own, for backends others can change behind husk's back (a
    /// shared Docker Engine). `None` when there is no such feed: exits still arrive through [`Driver::wait`].
    fn changes(&self) -> Option<ChangeStream> {
        None
    }

    /// Removes what this daemon made in the backend that no record names any more (a crash between a backend
    /// step and the record that names it, or an object someone re-created behind husk's back). `sandboxes` and
    /// `containers` are the IDs the engine knows. Returns a description of each object removed.
    async fn remove_orphans(
        &self,
        sandboxes: &HashSet<String>,
        containers: &HashSet<String>,
    ) -> Result<Vec<String>> {
        let _ = (sandboxes, containers);
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_driver_and_mode() {
        let caps = Capabilities {
            standalone: true,
            ..Default::default()
        };
        let e = caps.require_mode("docker", Mode::Sandbox).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unsupported);
        assert!(
            e.message.contains("docker") && e.message.contains("sandbox mode"),
            "{}",
            e.message
        );
        assert!(caps.require_mode("docker", Mode::Standalone).is_ok());
    }
}
