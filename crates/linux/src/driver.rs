//! [`LinuxDriver`]: the built-in driver, as the engine sees it.
//!
//! Files it keeps (under its `root`, persistent) and makes (under its `run_root`, runtime):
//! ```text
//! root/c/<id>/        bundle: config.json, shim.json; ctr.log, exit.json, shim.log; upper/, work/; etc/ (standalone)
//! root/s/<id>/        a sandbox's hostname, hosts, resolv.conf
//! run/c/<id>/         rootfs/ (overlay mount point), images/m<N> (read-only image mounts), sock (the shim's control
//!                     socket), console sockets, ns/ (standalone)
//! run/s/<id>/         ns/{net,ipc,uts,pid} pinned namespaces, shm/ (tmpfs shared as /dev/shm)
//! run/lc/             libcontainer's state
//! ```
//!
//! This file holds the driver, its set-up and its [`Driver`] methods; the rest is in modules by concern:
//! - `rootfs`: the container's root filesystem and mounts on the host;
//! - `identity`: namespaces and network identity (pinned namespaces, network, name files, the netns pool, a
//!   sandbox's user namespace, the namespace plan of a container in a sandbox);
//! - `sandboxes`: making and removing a sandbox, its pause process;
//! - `create`: making a container's bundle and starting its shim;
//! - `shim`: the container's shim (client, config, start, exec, the exit it records);
//! - `limits`: cgroups and the limits this host can enforce;
//! - `copy`: copies in and out of a container through the container-fs helper;
//! - `removal`: removing what a container leaves on the host, and orphans.

mod copy;
mod create;
mod identity;
mod limits;
mod removal;
mod rootfs;
mod sandboxes;
mod shim;

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use husk_core::stdio::BoxStdio;
use husk_core::{
    ArchiveReader, Capabilities, ContainerConfig, ContainerRecord, ContainerRuntime, Driver,
    DriverInfo, Error, ErrorKind, ExitStatus, ExtractOptions, LogOptions, LogStream, ObservedState,
    PathStat, ProcessConfig, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxRuntime,
    Stats, Top,
};

use husk_container::container_fs::FsOp;
use husk_container::sealed_exe::SealedExe;
use husk_container::shim::{Request, ShimStatus};
use husk_container::{cgroups, namespaces, security};

use identity::ContainerUserns;

/// How the `linux` driver is set up.
#[derive(Clone)]
pub struct LinuxDriverConfig {
    /// Persistent state (bundles, logs, writable layers).
    pub root: PathBuf,
    /// Runtime state (mounts, sockets, pinned namespaces).
    pub run_root: PathBuf,
    /// The `husk` binary. The driver runs `husk shim`, `husk sandbox-pause` and `husk container-fs` from a
    /// sealed copy of it made once ([`husk_container::sealed_exe`]), never from this file: those processes enter
    /// containers.
    pub husk_binary: PathBuf,
    /// Parent of every container's cgroup (`husk` = `/husk/<id>` in each hierarchy).
    pub cgroup_parent: String,
    /// CNI networks for sandboxes and standalone containers.
    pub networks: Arc<husk_net::Networks>,
    /// Turn the kernel's cgroup `favordynmods` on at start (see [`cgroups::favor_dynamic_changes`]).
    pub favor_dynamic_cgroup_changes: bool,
    /// Network namespaces kept attached to the default network ahead of time (`sandbox_pool`; 0 = none). See
    /// [`crate::pool`].
    pub sandbox_pool: usize,
}

/// The built-in driver.
pub struct LinuxDriver {
    /// What every process that enters a container runs from.
    sealed_exe: SealedExe,
    config: LinuxDriverConfig,
    daemon_capabilities: Vec<String>,
    cgroup_v2: bool,
    /// Where the host's cgroups stand on `favordynmods` (shown by `husk info`).
    dynamic_cgroup_changes: cgroups::DynamicChanges,
    /// Pidfds of the pause processes this daemon started (so it can reap them), by sandbox ID; a removal takes
    /// its sandbox's out first.
    pauses: Arc<Mutex<HashMap<String, Arc<OwnedFd>>>>,
    /// Sandboxes whose pause process died while still listed in `pauses` (the feed of [`Driver::changes`]).
    sandbox_deaths: tokio::sync::broadcast::Sender<husk_core::BackendChange>,
    /// The default seccomp profile, compiled once per capability set.
    seccomp_programs: Arc<husk_container::seccomp_bpf::ProgramCache>,
    /// Removals finishing in the background (network teardown), awaited at shutdown.
    removals: tokio_util::task::TaskTracker,
    /// Ready network namespaces on the default network.
    pool: Arc<crate::pool::NetnsPool>,
    /// The pin of the mount namespace containers start from ([`husk_container::base_ns`]), if there is one.
    base_mount_ns: Option<PathBuf>,
}

impl std::fmt::Debug for LinuxDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxDriver")
            .field("root", &self.config.root)
            .field("run_root", &self.config.run_root)
            .finish()
    }
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(format!("create {}", path.display()), e))
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

impl LinuxDriver {
    /// A driver with `config`; checks that the host can run it.
    pub fn new(config: LinuxDriverConfig) -> Result<LinuxDriver> {
        for dir in [
            config.root.join("c"),
            config.root.join("s"),
            config.run_root.join("c"),
            config.run_root.join("s"),
            config.run_root.join("lc"),
        ] {
            mkdir(&dir)?;
        }
        let probe = config.run_root.join("c").join("x".repeat(64)).join("sock");
        if probe.as_os_str().len() > 107 {
            return Err(Error::invalid(
                "run_root",
                format!(
                    "the run root {} is too long for unix socket paths: use a path of at most 30 characters",
                    config.run_root.display()
                ),
            ));
        }
        let dynamic_cgroup_changes = if config.favor_dynamic_cgroup_changes {
            cgroups::favor_dynamic_changes()
        } else {
            cgroups::DynamicChanges::Unchanged("cgroup_favordynmods = false in the config".into())
        };
        tracing::info!(favordynmods = %dynamic_cgroup_changes, "cgroup moves");
        let started = std::time::Instant::now();
        let sealed_exe = SealedExe::copy_of(&config.husk_binary)?;
        tracing::info!(
            bytes = sealed_exe.len(),
            ms = started.elapsed().as_millis() as u64,
            "sealed copy of the husk binary for processes that enter containers"
        );
        let base_mount_ns = husk_container::base_ns::prepare(&config.run_root).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no base mount namespace: containers start from the daemon's");
            None
        });
        let pool = Arc::new(crate::pool::NetnsPool::new(
            config.run_root.join("pool"),
            config.sandbox_pool,
            config.networks.clone(),
        ));
        Ok(LinuxDriver {
            pool,
            base_mount_ns,
            sealed_exe,
            daemon_capabilities: security::daemon_capabilities()?,
            cgroup_v2: cgroups::is_v2(),
            dynamic_cgroup_changes,
            config,
            pauses: Default::default(),
            sandbox_deaths: tokio::sync::broadcast::channel(64).0,
            seccomp_programs: Default::default(),
            removals: tokio_util::task::TaskTracker::new(),
        })
    }

    fn ctr_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("c").join(id)
    }

    fn ctr_run_dir(&self, id: &str) -> PathBuf {
        self.config.run_root.join("c").join(id)
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("s").join(id)
    }

    fn sandbox_run_dir(&self, id: &str) -> PathBuf {
        self.config.run_root.join("s").join(id)
    }
}

#[async_trait]
impl Driver for LinuxDriver {
    fn name(&self) -> &'static str {
        "linux"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sandbox: true,
            standalone: true,
            pid_sharing: true,
            pause: true,
            exec: true,
            tty: true,
            attach: true,
            stats: true,
            top: true,
            limits: true,
            networking: true,
            bind_mounts: true,
            volumes: true,
            privileged: true,
            tmpfs: true,
            readonly_rootfs: true,
            ulimits: true,
            init: true,
            copy: true,
            group_add: true,
            security_options: true,
            update_limits: true,
            shm_size: true,
            image_mounts: true,
        }
    }

    async fn info(&self) -> Result<DriverInfo> {
        let mut details = BTreeMap::new();
        let setup = cgroups::setup()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.message);
        details.insert("cgroup_layout".into(), setup);
        details.insert(
            "cgroup_version".into(),
            if self.cgroup_v2 {
                "2".into()
            } else {
                "1".into()
            },
        );
        details.insert(
            "cgroup_favordynmods".into(),
            self.dynamic_cgroup_changes.to_string(),
        );
        details.insert(
            "runtime".into(),
            "youki libcontainer 0.7 (in-process, per-container shim)".into(),
        );
        details.insert("seccomp".into(), "default allowlist profile".into());
        details.insert(
            "kernel".into(),
            nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        details.insert(
            "capabilities_available".into(),
            self.daemon_capabilities.len().to_string(),
        );
        Ok(DriverInfo {
            name: self.name().into(),
            capabilities: self.capabilities(),
            details,
        })
    }

    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxRuntime> {
        self.make_sandbox(config).await
    }

    async fn delete_sandbox(&self, sandbox: &SandboxRecord) -> Result<()> {
        self.remove_sandbox(sandbox, false).await
    }

    fn changes(&self) -> Option<husk_core::ChangeStream> {
        let deaths = self.sandbox_deaths.subscribe();
        Some(Box::pin(futures::stream::unfold(
            deaths,
            |mut deaths| async move {
                loop {
                    match deaths.recv().await {
                        Ok(change) => return Some((Ok(change), deaths)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )))
    }

    async fn revive_sandbox(&self, sandbox: &SandboxRecord) -> Result<SandboxRuntime> {
        // What is left of it goes first, all of it (not in the background as on removal): the new sandbox pins
        // its namespaces at the same paths, where the containers' bundles find them.
        self.remove_sandbox(sandbox, true).await?;
        self.make_sandbox(&sandbox.config).await
    }

    async fn sandbox_alive(&self, sandbox: &SandboxRecord) -> Result<bool> {
        let ns = self.sandbox_run_dir(&sandbox.config.id).join("ns");
        // A sandbox with a pause process (a shared PID namespace, or its own user namespace) dies with it: the
        // PID namespace it held cannot be joined any more.
        let pidfd = self
            .pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sandbox.config.id)
            .cloned();
        let pause_alive = match (pidfd, sandbox.runtime.pid) {
            // Started by this daemon: its pidfd turns readable when it exits (even before it has exec'd).
            (Some(pidfd), _) => !namespaces::has_exited(&pidfd),
            // Started by an earlier daemon: long since exec'd, so it is known by its command line.
            (None, Some(pid)) if pid > 0 => is_pause_process(pid),
            _ => true,
        };
        let recorded = &sandbox.runtime.namespaces;
        let pinned = |kind: &str| namespaces::is_pinned(&ns.join(kind));
        // A sandbox with private IPC and UTS pinned only its network namespace (none on the host's network).
        let namespaces_alive = if sandbox.config.private_ipc_uts && !recorded.contains_key("uts") {
            !recorded.contains_key("net") || pinned("net")
        } else {
            (sandbox.config.host_ipc || pinned("ipc")) && pinned("uts")
        };
        Ok(pause_alive && namespaces_alive)
    }

    async fn create_container(
        &self,
        config: &ContainerConfig,
        sandbox: Option<&SandboxRecord>,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        // What the host cannot enforce is refused before anything is made.
        let resources = self.host_resources(&config.resources)?;
        match self.create_inner(config, resources, sandbox, rootfs).await {
            Ok(rt) => Ok(rt),
            Err(e) => {
                let _ = self.cleanup_container(&config.id, false).await;
                Err(e)
            }
        }
    }

    async fn start_container(
        &self,
        container: &ContainerRecord,
        _sandbox: Option<&SandboxRecord>,
    ) -> Result<ContainerRuntime> {
        let id = container.id();
        let shim = self.shim(id);
        let state = shim.call(&Request::State).await;
        let needs_new_shim = match &state {
            Ok(r) => r.status != Some(ShimStatus::Created),
            Err(e) if e.kind == ErrorKind::NotFound => true,
            Err(e) => return Err(e.clone()),
        };
        if needs_new_shim {
            if matches!(&state, Ok(r) if matches!(r.status, Some(ShimStatus::Running | ShimStatus::Paused)))
            {
                return Err(Error::conflict("the container is already running"));
            }
            let layers: RootfsLayers =
                serde_json::from_value(container.runtime.driver_data["rootfs"].clone()).map_err(
                    |e| Error::internal(format!("the container's record lacks its layers: {e}")),
                )?;
            let userns = ContainerUserns::of(container)?;
            self.ensure_rootfs(id, &layers, userns.as_ref())?;
            self.ensure_image_mounts(id, &container.config.mounts, userns.as_ref())?;
            let pid = self.start_shim(id).await?;
            self.apply_propagation(&container.config, pid).await?;
        }
        let r = shim.call(&Request::Start).await?;
        Ok(ContainerRuntime {
            pid: r.pid.unwrap_or(0),
            driver_data: container.runtime.driver_data.clone(),
            network: container.runtime.network.clone(),
            user: container.runtime.user.clone(),
        })
    }

    async fn update_limits(
        &self,
        container: &ContainerRecord,
        limits: &husk_core::Resources,
    ) -> Result<()> {
        let limits = husk_container::spec::limits_json(&self.host_resources(limits)?);
        let bundle = self.ctr_dir(container.id()).join("config.json");
        let cgroup = self.cgroup_path(&container.config);
        husk_core::spawn_blocking(move || {
            // The running processes first: a limit the kernel refuses (memory below what is in use) changes
            // nothing.
            if !cgroups::procs(&cgroup).is_empty() {
                cgroups::set_limits(&cgroup, &limits)?;
            }
            // The bundle's spec, which the next start uses.
            let text = std::fs::read(&bundle)
                .map_err(|e| Error::io(format!("read {}", bundle.display()), e))?;
            let mut spec: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| Error::internal(format!("parse {}: {e}", bundle.display())))?;
            if let Some(set) = limits.as_object() {
                for (kind, value) in set {
                    spec["linux"]["resources"][kind] = value.clone();
                }
            }
            let tmp = bundle.with_extension("json.new");
            std::fs::write(&tmp, spec.to_string())
                .and_then(|()| std::fs::rename(&tmp, &bundle))
                .map_err(|e| Error::io(format!("write {}", bundle.display()), e))
        })
        .await
        .map_err(|e| Error::internal(format!("update task: {e}")))?
    }

    async fn kill(&self, container: &ContainerRecord, signal: i32, all: bool) -> Result<()> {
        self.shim(container.id())
            .call(&Request::Kill { signal, all })
            .await
            .map(|_| ())
            .map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    Error::conflict(format!("container {} is not running", container.name()))
                } else {
                    e
                }
            })
    }

    async fn pause(&self, container: &ContainerRecord) -> Result<()> {
        self.shim(container.id())
            .call(&Request::Pause)
            .await
            .map(|_| ())
    }

    async fn unpause(&self, container: &ContainerRecord) -> Result<()> {
        self.shim(container.id())
            .call(&Request::Resume)
            .await
            .map(|_| ())
    }

    async fn delete_container(&self, container: &ContainerRecord) -> Result<()> {
        self.cleanup_container(container.id(), true).await
    }

    async fn wait(&self, container: &ContainerRecord) -> Result<ExitStatus> {
        let id = container.id();
        match self.shim(id).call(&Request::Wait).await {
            Ok(r) => r
                .exit
                .ok_or_else(|| Error::internal("the shim's wait answer has no exit status")),
            // The shim is gone or went away while we asked: it records the exit on disk before it stops serving.
            Err(_) => Ok(self.exit_after_shim(id).await),
        }
    }

    async fn observe(&self, container: &ContainerRecord) -> Result<ObservedState> {
        let id = container.id();
        match self.shim(id).call(&Request::State).await {
            Ok(r) => Ok(match r.status {
                Some(ShimStatus::Created) => ObservedState::Created,
                Some(ShimStatus::Running) => ObservedState::Running {
                    pid: r.pid.unwrap_or(0),
                },
                Some(ShimStatus::Paused) => ObservedState::Paused {
                    pid: r.pid.unwrap_or(0),
                },
                Some(ShimStatus::Exited) | None => {
                    ObservedState::Exited(r.exit.unwrap_or_default())
                }
            }),
            Err(e) if e.kind == ErrorKind::NotFound => {
                if let Some(exit) = self.read_exit(id) {
                    Ok(ObservedState::Exited(exit))
                } else if self.ctr_dir(id).join("config.json").exists() {
                    Ok(ObservedState::Exited(self.lost_with_its_shim(id).await))
                } else {
                    Ok(ObservedState::Missing)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn exec(&self, container: &ContainerRecord, process: &ProcessConfig) -> Result<BoxStdio> {
        self.exec_process(container, process, None).await
    }

    async fn exec_with_deadline(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline: Duration,
    ) -> Result<BoxStdio> {
        let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        self.exec_process(container, process, Some(ms)).await
    }

    async fn attach(&self, container: &ContainerRecord, stdin: bool) -> Result<BoxStdio> {
        let (_, conn) = self
            .shim(container.id())
            .stream(&Request::Attach { stdin })
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    Error::conflict(format!("container {} is not running", container.name()))
                } else {
                    e
                }
            })?;
        Ok(Box::new(conn))
    }

    async fn resize(&self, container: &ContainerRecord, rows: u16, cols: u16) -> Result<()> {
        self.shim(container.id())
            .call(&Request::Resize { rows, cols })
            .await
            .map(|_| ())
    }

    async fn reopen_log(&self, container: &ContainerRecord) -> Result<()> {
        self.shim(container.id())
            .call(&Request::ReopenLog)
            .await
            .map(|_| ())
    }

    async fn logs(&self, container: &ContainerRecord, options: &LogOptions) -> Result<LogStream> {
        let socket = self.ctr_run_dir(container.id()).join("sock");
        Ok(husk_container::logs::stream(
            self.log_path(container.id()),
            container.config.log.files(),
            options.clone(),
            move || socket.exists(),
        ))
    }

    async fn stats(&self, container: &ContainerRecord) -> Result<Stats> {
        let cgroup = self.cgroup_path(&container.config);
        let pid = container.runtime.pid;
        tokio::task::spawn_blocking(move || cgroups::stats(&cgroup, pid))
            .await
            .map_err(|e| {
                Error::internal(format!(
                    "read the usage of {cgroup_name}: {e}",
                    cgroup_name = container.name()
                ))
            })?
    }

    async fn shutdown(&self) {
        if self.pool.enabled() {
            let pool = self.pool.clone();
            // After any fill in flight: the tracker runs it; draining first could miss what it adds.
            self.removals.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.removals.wait()).await;
            if let Err(e) = tokio::task::spawn_blocking(move || pool.drain()).await {
                tracing::warn!("sandbox pool: drain: {e}");
            }
        }
        self.removals.close();
        if tokio::time::timeout(Duration::from_secs(5), self.removals.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "network teardown still running at shutdown; the next start finishes it"
            );
        }
        if self.base_mount_ns.is_some() {
            husk_container::base_ns::release(&self.config.run_root);
        }
    }

    async fn remove_orphans(
        &self,
        sandboxes: &std::collections::HashSet<String>,
        containers: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        self.remove_orphaned(sandboxes, containers).await
    }

    async fn top(&self, container: &ContainerRecord) -> Result<Top> {
        cgroups::top(&self.cgroup_path(&container.config))
    }

    async fn top_with(&self, container: &ContainerRecord, ps_args: Option<&str>) -> Result<Top> {
        let Some(args) = ps_args else {
            return self.top(container).await;
        };
        // Split on spaces, as Docker Engine does.
        let args: Vec<&str> = args.split_whitespace().collect();
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| Error::io("run ps", e))?;
        if !out.status.success() {
            return Err(Error::invalid(
                "ps_args",
                format!(
                    "ps {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let pids = cgroups::procs(&self.cgroup_path(&container.config));
        cgroups::top_of_ps(&String::from_utf8_lossy(&out.stdout), &pids)
    }

    async fn stat_path(&self, container: &ContainerRecord, path: &str) -> Result<PathStat> {
        let output = self
            .fs_helper(
                container,
                FsOp::Stat {
                    path: path.to_string(),
                },
            )
            .await?
            .wait_with_output()
            .await
            .map_err(|e| Error::io("run the container-fs helper", e))?;
        if !output.status.success() {
            return Err(husk_container::container_fs::helper_error(
                &output.stderr,
                output.status,
            ));
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| Error::internal(format!("the container-fs helper's answer: {e}")))
    }

    async fn archive(&self, container: &ContainerRecord, path: &str) -> Result<ArchiveReader> {
        let child = self
            .fs_helper(
                container,
                FsOp::Archive {
                    path: path.to_string(),
                },
            )
            .await?;
        Ok(Box::pin(husk_container::fs_helper::HelperOutput::new(
            child,
        )?))
    }

    async fn extract(
        &self,
        container: &ContainerRecord,
        dir: &str,
        archive: ArchiveReader,
        options: &ExtractOptions,
    ) -> Result<()> {
        let op = FsOp::Extract {
            dir: dir.to_string(),
            copy_owners: options.copy_owners,
            no_overwrite_dir_non_dir: options.no_overwrite_dir_non_dir,
        };
        let child = self.fs_helper_with_stdin(container, op).await?;
        husk_container::fs_helper::feed(child, archive).await
    }

    fn rootfs_changes(&self, container: &ContainerRecord) -> Option<PathBuf> {
        Some(self.ctr_dir(container.id()).join("upper"))
    }
}

/// Whether `pid` is a live sandbox pause process (its command line is `husk sandbox-pause`, so a reused PID is
/// not taken for it).
fn is_pause_process(pid: i32) -> bool {
    let live = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    });
    live && std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c == b"husk\0sandbox-pause\0")
}
