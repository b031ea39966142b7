//! [`VmDriver`]: the `vm` driver as the engine sees it. A sandbox is one VM; a standalone container gets a VM
//! of its own. The guest agent runs the containers; the driver keeps their logs on the host.
//!
//! Files (under `run_root`, runtime; under `root`, persistent):
//! ```text
//! run_root/v/<vm>/vm/       QEMU's directory: qmp.sock, agent.sock, console.log, qemu.log, qemu.pid, vm.json
//! run_root/v/<vm>/share/    the 9p export (read-only): l/<layer> = bind mount of an image layer (one path per
//!                           layer for the VM's whole life, shared by its containers), .etc/ = name files
//! run_root/v/<vm>/mounts/   the 9p export (read-write): <container>/<n> = bind mount of the source of the
//!                           container's n-th mount (a bind's host path or a volume's data directory)
//! root/c/<container>/       ctr.log (JSON lines of husk_core::LogEntry; ctr.log.N rotated within the container's
//!                           limits, recorded in log-limits.json), exit.json, cri-log (the path of the
//!                           container's CRI log, when kubelet asked for one)
//! ```
//! `<vm>` is the sandbox ID, or the container ID in standalone mode. After a daemon restart the driver finds a
//! VM again from its directory (pid file + QMP), reconnects to its agent, and re-attaches the log readers; the
//! agent keeps output that nobody read in the meantime (up to 1 MiB per process). The readers write husk's log
//! and the CRI log (`ContainerConfig::cri_log_path`) on the host, line by line as the `linux` driver's shim does.
//!
//! This file holds the driver, its set-up and its [`Driver`] methods; the rest is in modules by concern:
//! - `boot`: the VMs' life: booting one, finding a running one again, the agent client of a container's VM,
//!   removing one;
//! - `containers`: a container in its VM: its creation through the agent, exec, its observed state, the stdio
//!   bridge;
//! - `shares`: what the host shares with a VM over 9p (image layers, the sources of binds and volumes);
//! - `logs`: the containers' log readers, logs and exit records on the host;
//! - `refusals`: what a sandbox or container in a VM cannot have, refused by name.

mod boot;
mod containers;
mod logs;
mod refusals;
mod shares;
mod template;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use husk_core::stdio::BoxStdio;
use husk_core::{ArchiveReader, ExtractOptions};
use husk_core::{
    Capabilities, ContainerConfig, ContainerRecord, ContainerRuntime, Context, Driver, DriverInfo,
    Error, ErrorKind, ExitStatus, LogOptions, LogStream, Mode, ObservedState, PathStat,
    ProcessConfig, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxRuntime, Stats, Top,
};
use serde_json::json;

use crate::accel::{AccelChoice, AccelDecision};
use crate::client::AgentClient;
use crate::guest::{Compression, GuestConfig, GuestImage, build_guest};
use crate::qemu::{Machine, Transport, Vm};

use husk_core::attached::{AttachedStreams, SETTLE_LIMIT};

pub use boot::NAME_FILES_DIR;
use containers::bridge;
use logs::Follower;
use refusals::{refuse_host_namespaces, refuse_host_resources};
use shares::LAYERS_DIR;

/// The default size of a VM's TCG translation cache, MiB: a cold `run --rm` is 2.3 % slower and an idle VM
/// 18 MiB smaller at 32, 22 % slower and 37 MiB smaller at 16 (docs/benchmarks.md).
pub const DEFAULT_TCG_CACHE_MIB: u32 = 64;

/// How the `vm` driver is set up.
#[derive(Debug, Clone)]
pub struct VmDriverConfig {
    /// Persistent state (container logs and exit records).
    pub root: PathBuf,
    /// Runtime state (VM directories, shares). Keep it short: unix socket paths live below it.
    pub run_root: PathBuf,
    /// The static `husk-agent` binary packed into the guest.
    pub agent: PathBuf,
    /// Guest kernel (`None` = the host's newest Debian kernel with modules).
    pub kernel: Option<PathBuf>,
    /// Where built guest images are cached.
    pub cache_dir: PathBuf,
    /// Accelerator choice.
    pub accel: AccelChoice,
    /// Machine type.
    pub machine: Machine,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// How long a VM may take to boot to its agent's first answer.
    pub boot_timeout: Duration,
    /// The size of each VM's TCG translation cache in MiB (software emulation only): memory every VM keeps,
    /// against code translated again when a smaller cache fills.
    pub tcg_cache_mib: u32,
    /// CNI networks for the VMs' network namespaces (`None`: VMs get no network interface, only `lo`).
    pub networks: Option<Arc<husk_net::Networks>>,
    /// Start VMs from a template (see `driver/template.rs`) rather than with a cold boot.
    pub template: bool,
    /// Offer the VMs' memory to the host's KSM, and turn KSM on if it is off.
    pub ksm: bool,
}

impl VmDriverConfig {
    /// Defaults under `root` and `run_root`, with the agent at `agent`.
    pub fn new(
        root: impl Into<PathBuf>,
        run_root: impl Into<PathBuf>,
        agent: impl Into<PathBuf>,
    ) -> Self {
        let root = root.into();
        VmDriverConfig {
            cache_dir: root.join("vm-cache"),
            root,
            run_root: run_root.into(),
            agent: agent.into(),
            kernel: None,
            accel: AccelChoice::Auto,
            machine: Machine::Microvm,
            qemu: "qemu-system-x86_64".into(),
            boot_timeout: Duration::from_secs(120),
            tcg_cache_mib: DEFAULT_TCG_CACHE_MIB,
            networks: None,
            template: true,
            ksm: false,
        }
    }
}

/// One running VM and its agent connection.
struct VmHandle {
    vm: tokio::sync::Mutex<Vm>,
    client: AgentClient,
}

/// How long a container's `wait` whose agent connection broke waits for its VM's QEMU to end.
const VM_END_LIMIT: Duration = Duration::from_secs(10);

/// Waits up to `limit` for the VM's QEMU to end; true if it did. Polls, so that the VM's lock is held only for a
/// moment at a time (looking a VM up takes it).
async fn vm_ended(handle: &VmHandle, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if !handle.vm.lock().await.is_running() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `vm` driver.
pub struct VmDriver {
    config: VmDriverConfig,
    accel: AccelDecision,
    image: Mutex<Option<GuestImage>>,
    vms: tokio::sync::Mutex<HashMap<String, Arc<VmHandle>>>,
    /// Containers whose log reader runs in this daemon.
    logging: Mutex<HashMap<String, Follower>>,
    /// Held while layers are bound into a VM's share (two creates in one VM may need the same layer).
    layer_binds: Mutex<()>,
    /// Main-process output streams being forwarded to clients (`attach`), by container.
    attached: Arc<AttachedStreams>,
    /// The ends of VM removals that run after the removal returned (QEMU's exit, unmounts, CNI DEL), waited
    /// for at shutdown.
    removals: tokio_util::task::TaskTracker,
    /// Held while a VM template is built (the VMs that need it wait, then use it).
    template_build: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for VmDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmDriver")
            .field("config", &self.config)
            .field("accel", &self.accel)
            .finish()
    }
}

impl Drop for VmDriver {
    fn drop(&mut self) {
        // The VMs live on; this daemon's readers of their agents stop (their connections close).
        for (_, follower) in lock(&self.logging).drain() {
            follower.stop();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host's KSM switch.
const KSM_RUN: &str = "/sys/kernel/mm/ksm/run";

/// Turns the host's KSM on (`run` = 1) when it is off; says so, or why it could not. A host where KSM was
/// stopped with its merged pages unmerged (2) is left as the administrator set it.
fn start_ksm(run: &Path) {
    match std::fs::read_to_string(run).as_deref().map(str::trim) {
        Ok("0") => match std::fs::write(run, "1") {
            Ok(()) => tracing::info!("turned the host's KSM on ([vm] ksm)"),
            Err(e) => {
                tracing::warn!("[vm] ksm: cannot turn KSM on ({e}): VMs' memory is not merged")
            }
        },
        Ok("1") => {}
        Ok(other) => tracing::warn!(
            "[vm] ksm: the host's KSM is set to {other} (not 0 or 1): left as it is, VMs' memory is not merged"
        ),
        Err(e) => {
            tracing::warn!("[vm] ksm: this kernel has no KSM ({e}): VMs' memory is not merged")
        }
    }
}

impl VmDriver {
    /// A driver with `config`; detects the accelerator now (a quick, bounded probe).
    pub fn new(config: VmDriverConfig) -> Result<VmDriver> {
        for dir in [config.root.join("c"), config.run_root.join("v")] {
            std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        }
        let accel = crate::accel::detect(config.accel);
        if config.ksm {
            start_ksm(Path::new(KSM_RUN));
        }
        Ok(VmDriver {
            config,
            accel,
            image: Mutex::new(None),
            vms: tokio::sync::Mutex::new(HashMap::new()),
            logging: Mutex::new(HashMap::new()),
            layer_binds: Mutex::new(()),
            attached: Arc::default(),
            removals: tokio_util::task::TaskTracker::new(),
            template_build: tokio::sync::Mutex::new(()),
        })
    }

    /// The accelerator in use and why.
    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    /// Builds (or finds in the cache) the guest image; `husk vm build-guest` calls this.
    pub fn guest_image(&self) -> Result<GuestImage> {
        if let Some(img) = lock(&self.image).clone()
            && img.initramfs.exists()
        {
            return Ok(img);
        }
        let mut cfg = GuestConfig::new(&self.config.agent, &self.config.cache_dir);
        cfg.kernel = self.config.kernel.clone();
        // Under TCG the guest's own decompression of its kernel costs seconds, so boot the extracted vmlinux
        // (QEMU then holds ~40 MiB more per VM); with KVM decompressing takes a fraction of a second.
        cfg.uncompressed_kernel = self.accel.accel == crate::accel::Accel::Tcg;
        cfg.compression = Compression::None;
        let img = build_guest(&cfg)?;
        *lock(&self.image) = Some(img.clone());
        Ok(img)
    }

    fn vm_root(&self, vm: &str) -> PathBuf {
        self.config.run_root.join("v").join(vm)
    }

    fn ctr_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("c").join(id)
    }
}

#[async_trait]
impl Driver for VmDriver {
    fn name(&self) -> &'static str {
        "vm"
    }

    async fn shutdown(&self) {
        // VMs live on; what the removals of this daemon's last moments still have to do is finished first, or
        // (after 5 s) by the next start, which finds the directories that still name the VMs.
        self.removals.close();
        if tokio::time::timeout(Duration::from_secs(5), self.removals.wait())
            .await
            .is_err()
        {
            tracing::warn!("VM removals still running at shutdown; the next start finishes them");
        }
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
            networking: self.config.networks.is_some(),
            // Their sources reach the guest through the VM's read-write 9p share (see `share_mounts`).
            bind_mounts: true,
            volumes: true,
            privileged: false,
            // The guest's containers come from the linux driver's OCI spec and shim: what the spec carries
            // works in the guest as on a host (capability sets, seccomp and no-new-privileges included).
            tmpfs: true,
            readonly_rootfs: true,
            ulimits: true,
            // husk's (static) binary is bound into the container like any other bind.
            init: true,
            // The agent runs the linux driver's container-fs helper in the guest.
            copy: true,
            group_add: true,
            security_options: true,
            // A running guest container's cgroup would need a call to the agent: not there yet.
            update_limits: true,
            // The guest's /dev/shm is the VM's own tmpfs, sized by its memory.
            shm_size: true,
            // The guest sees the layers through the read-only 9p share, but nothing mounts an image's layers
            // as a volume there yet: image volumes are served by the linux driver only.
            image_mounts: false,
        }
    }

    async fn info(&self) -> Result<DriverInfo> {
        let mut details = std::collections::BTreeMap::new();
        details.insert("accelerator".into(), self.accel.accel.as_str().into());
        details.insert("accelerator_reason".into(), self.accel.reason.clone());
        details.insert(
            "machine".into(),
            format!("{:?}", self.config.machine).to_lowercase(),
        );
        details.insert(
            "transport".into(),
            match Transport::detect() {
                Transport::Serial => "virtio-serial".into(),
                Transport::Vsock { .. } => "vsock".into(),
            },
        );
        details.insert("template".into(), self.config.template.to_string());
        if self.config.ksm {
            details.insert(
                "ksm".into(),
                match std::fs::read_to_string(KSM_RUN).as_deref().map(str::trim) {
                    Ok("1") => "running".into(),
                    Ok(other) => format!("not running (run = {other})"),
                    Err(e) => format!("unavailable ({e})"),
                },
            );
        }
        if let Ok(img) = tokio::task::block_in_place(|| self.guest_image()) {
            details.insert("guest_kernel".into(), img.kernel_release);
            details.insert(
                "guest_initramfs".into(),
                img.initramfs.display().to_string(),
            );
        }
        Ok(DriverInfo {
            name: "vm".into(),
            capabilities: self.capabilities(),
            details,
        })
    }

    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxRuntime> {
        refuse_host_namespaces(config)?;
        let (h, attached) = self
            .boot(
                &config.id,
                &config.resources,
                &config.hostname,
                config.share_pid,
                &config.network,
            )
            .await?;
        let vm = h.vm.lock().await;
        Ok(SandboxRuntime {
            pid: Some(vm.pid),
            network: attached.status,
            driver_data: json!({ "vm_dir": vm.config.dir, "accel": self.accel.accel.as_str() }),
            ..Default::default()
        })
    }

    async fn delete_sandbox(&self, sandbox: &SandboxRecord) -> Result<()> {
        self.destroy_vm(&sandbox.config.id).await
    }

    async fn sandbox_alive(&self, sandbox: &SandboxRecord) -> Result<bool> {
        Ok(Vm::find(&self.vm_root(&sandbox.config.id).join("vm"))
            .await?
            .is_some())
    }

    async fn revive_sandbox(&self, sandbox: &SandboxRecord) -> Result<SandboxRuntime> {
        Err(Error::unsupported(format!(
            "the VM of sandbox {} is gone, and the containers made in its guest with it: remove the container \
             and create it again",
            sandbox.config.name
        )))
    }

    async fn create_container(
        &self,
        config: &ContainerConfig,
        sandbox: Option<&SandboxRecord>,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        refuse_host_resources(config)?;
        match sandbox {
            Some(s) => {
                let h = self.vm(&s.config.id).await?;
                self.create_in(&s.config.id, &h, config, rootfs).await
            }
            None => {
                let (h, attached) = self
                    .boot(
                        &config.id,
                        &config.resources,
                        &config.hostname,
                        false,
                        &config.network,
                    )
                    .await?;
                let r = self.create_in(&config.id, &h, config, rootfs).await;
                match r {
                    Ok(mut rt) => {
                        rt.network = attached.status;
                        Ok(rt)
                    }
                    Err(e) => {
                        let _ = self.destroy_vm(&config.id).await;
                        Err(e)
                    }
                }
            }
        }
    }

    async fn start_container(
        &self,
        container: &ContainerRecord,
        _sandbox: Option<&SandboxRecord>,
    ) -> Result<ContainerRuntime> {
        let client = self.client_for(container).await?;
        let _ = std::fs::remove_file(self.ctr_dir(container.id()).join("exit.json"));
        let pid = client.start(container.id()).await?;
        self.follow_logs(client, container.id());
        let vm = Self::vm_of(container)?;
        Ok(ContainerRuntime {
            pid: 0,
            driver_data: json!({ "vm": vm, "guest_pid": pid }),
            network: None,
            user: None,
        })
    }

    async fn kill(&self, container: &ContainerRecord, signal: i32, all: bool) -> Result<()> {
        self.client_for(container)
            .await?
            .signal(container.id(), "", signal, all)
            .await
    }

    async fn pause(&self, container: &ContainerRecord) -> Result<()> {
        self.client_for(container)
            .await?
            .pause(container.id(), true)
            .await
    }

    async fn unpause(&self, container: &ContainerRecord) -> Result<()> {
        self.client_for(container)
            .await?
            .pause(container.id(), false)
            .await
    }

    async fn delete_container(&self, container: &ContainerRecord) -> Result<()> {
        let vm = Self::vm_of(container)?;
        self.stop_logs(container.id());
        if container.mode == Mode::Standalone && container.sandbox_id.is_none() {
            self.attached.settle(container.id(), SETTLE_LIMIT).await;
            self.destroy_vm(&vm).await?;
        } else {
            match self.vm(&vm).await {
                Ok(h) => match h.client.remove_container(container.id()).await {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::NotFound => {}
                    // A VM that died (QEMU killed, the guest's kernel panicked) breaks its agent's connection
                    // before QEMU is gone: when QEMU goes within a moment, the container went with the guest.
                    Err(e) => {
                        if !self.vm_goes_within(&vm, Duration::from_secs(3)).await? {
                            return Err(e);
                        }
                    }
                },
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.unshare_container(&vm, container.id());
        }
        self.remove_logs(container.id())
    }

    async fn delete_container_and_sandbox(
        &self,
        container: &ContainerRecord,
        sandbox: &SandboxRecord,
    ) -> Result<()> {
        // The container goes with its VM: no removal inside a guest about to be stopped. A client attached to it
        // gets the end of its output first.
        self.attached.settle(container.id(), SETTLE_LIMIT).await;
        self.stop_logs(container.id());
        self.destroy_vm(&sandbox.config.id).await?;
        self.remove_logs(container.id())
    }

    async fn wait(&self, container: &ContainerRecord) -> Result<ExitStatus> {
        let gone = |reason: &str| ExitStatus {
            code: 255,
            finished_at: Some(husk_core::Timestamp::now()),
            reason: reason.into(),
            ..Default::default()
        };
        let handle = match self.vm(&Self::vm_of(container)?).await {
            Ok(h) => h,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Ok(self
                    .read_exit(container.id())
                    .unwrap_or_else(|| gone("the VM is gone")));
            }
            Err(e) => return Err(e),
        };
        match handle.client.wait(container.id(), "").await {
            Ok(w) => {
                self.logs_written(container.id(), Duration::from_secs(5))
                    .await;
                Ok(ExitStatus {
                    code: w.exit_code,
                    oom_killed: w.oom_killed,
                    finished_at: Some(husk_core::Timestamp::now()),
                    reason: String::new(),
                })
            }
            Err(e) if e.kind == ErrorKind::Backend || e.kind == ErrorKind::NotFound => {
                if let Some(exit) = self.read_exit(container.id()) {
                    return Ok(exit);
                }
                // A guest that crashes breaks the agent's connection a moment before QEMU exits: the exit is
                // reported once QEMU is gone, so whoever sees it also sees the sandbox's VM gone. A VM still
                // running then has not ended its container: the broken wait goes to the engine, which asks
                // `observe` until the agent or QEMU's end answers.
                if !vm_ended(&handle, VM_END_LIMIT).await {
                    return Err(Error::backend(format!(
                        "the agent's connection broke ({e}) and QEMU still runs after {VM_END_LIMIT:?}"
                    )));
                }
                Ok(gone(
                    "the VM stopped (crashed or was killed) while the container ran",
                ))
            }
            Err(e) => Err(e),
        }
    }

    async fn observe(&self, container: &ContainerRecord) -> Result<ObservedState> {
        // A VM that is dying answers with a broken connection for a moment before QEMU is gone: look again.
        for attempt in 0..3 {
            match self.observe_once(container).await {
                Err(e) if e.kind == ErrorKind::Backend && attempt < 2 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn exec(&self, container: &ContainerRecord, process: &ProcessConfig) -> Result<BoxStdio> {
        self.exec_in(container, process, None).await
    }

    async fn exec_with_deadline(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline: Duration,
    ) -> Result<BoxStdio> {
        self.exec_in(container, process, Some(deadline)).await
    }

    async fn attach(&self, container: &ContainerRecord, _stdin: bool) -> Result<BoxStdio> {
        let client = self.client_for(container).await?;
        let (tx, rx) = client.stdio(container.id(), "").await?;
        let (attached, id) = (self.attached.clone(), container.id().to_string());
        attached.begin(&id);
        Ok(bridge(tx, rx, move || attached.end(&id)))
    }

    /// The guest's own loopback is out of the host's reach: ports are reached at the guest's address.
    fn port_forward_target(&self, sandbox: &SandboxRecord) -> Result<husk_core::PortForwardTarget> {
        let address = sandbox
            .runtime
            .network
            .as_ref()
            .and_then(|n| n.addresses.first())
            .and_then(|a| a.split('/').next()?.parse().ok())
            .ok_or_else(|| {
                Error::unsupported(format!(
                    "sandbox {} is a VM without a network address: its ports cannot be reached",
                    sandbox.config.id
                ))
            })?;
        Ok(husk_core::PortForwardTarget::Address(address))
    }

    async fn resize(&self, container: &ContainerRecord, rows: u16, cols: u16) -> Result<()> {
        self.client_for(container)
            .await?
            .resize(container.id(), "", rows, cols)
            .await
    }

    /// Reopens the CRI log the container's log reader writes (starting the reader first when this daemon has
    /// none yet, as after a restart).
    async fn reopen_log(&self, container: &ContainerRecord) -> Result<()> {
        let client = self.client_for(container).await?;
        self.follow_logs(client, container.id());
        let log = lock(&self.logging)
            .get(container.id())
            .map(|f| f.log.clone())
            .ok_or_else(|| {
                Error::backend(format!(
                    "container {} has no log reader in this daemon (see the daemon's log)",
                    container.name()
                ))
            })?;
        let mut log = lock(&log);
        if !log.has_cri() {
            return Err(Error::conflict(format!(
                "container {} writes no CRI log (it was created without one, or by an older husk)",
                container.name()
            )));
        }
        log.reopen_cri()
    }

    async fn logs(&self, container: &ContainerRecord, options: &LogOptions) -> Result<LogStream> {
        let exit = self.ctr_dir(container.id()).join("exit.json");
        Ok(husk_container::logs::stream(
            self.ctr_dir(container.id()).join("ctr.log"),
            container.config.log.files(),
            options.clone(),
            move || !exit.exists(),
        ))
    }

    /// The guest cgroup's limits, now and for the container's next start. The VM itself keeps the memory and
    /// CPUs it booted with: a limit above them is the cgroup's alone.
    async fn update_limits(
        &self,
        container: &ContainerRecord,
        limits: &husk_core::Resources,
    ) -> Result<()> {
        self.client_for(container)
            .await?
            .update_limits(container.id(), limits)
            .await
    }

    async fn stats(&self, container: &ContainerRecord) -> Result<Stats> {
        let s = self
            .client_for(container)
            .await?
            .stats(container.id())
            .await?;
        Ok(Stats {
            read_at: Some(husk_core::Timestamp::now()),
            cpu_usage_ns: s.cpu_usage_ns,
            system_cpu_ns: s.system_cpu_ns,
            online_cpus: s.online_cpus,
            memory_usage_bytes: s.memory_usage_bytes,
            memory_limit_bytes: s.memory_limit_bytes,
            pids: s.pids,
            pids_limit: s.pids_limit,
            block_read_bytes: s.block_read_bytes,
            block_write_bytes: s.block_write_bytes,
            net_rx_bytes: s.net_rx_bytes,
            net_tx_bytes: s.net_tx_bytes,
            net_rx_errors: s.net_rx_errors,
            net_tx_errors: s.net_tx_errors,
        })
    }

    async fn top(&self, container: &ContainerRecord) -> Result<Top> {
        self.client_for(container).await?.top(container.id()).await
    }

    async fn stat_path(&self, container: &ContainerRecord, path: &str) -> Result<PathStat> {
        self.client_for(container)
            .await?
            .stat_path(container.id(), path)
            .await
    }

    async fn archive(&self, container: &ContainerRecord, path: &str) -> Result<ArchiveReader> {
        self.client_for(container)
            .await?
            .archive(container.id(), path)
            .await
    }

    async fn extract(
        &self,
        container: &ContainerRecord,
        dir: &str,
        archive: ArchiveReader,
        options: &ExtractOptions,
    ) -> Result<()> {
        self.client_for(container)
            .await?
            .extract(container.id(), dir, archive, options)
            .await
    }

    async fn remove_orphans(
        &self,
        sandboxes: &std::collections::HashSet<String>,
        containers: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        let names = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut removed = Vec::new();
        // A VM is named after its sandbox, or after its container in standalone mode.
        for vm in names(self.config.run_root.join("v")) {
            if !sandboxes.contains(&vm) && !containers.contains(&vm) {
                self.destroy_vm(&vm).await?;
                removed.push(format!("VM {vm}"));
                continue;
            }
            // A container of a live sandbox VM that no record names (a crash mid-create or mid-delete): what the
            // host shares with the VM for it.
            let root = self.vm_root(&vm);
            let mut stale: Vec<String> = names(root.join("share"))
                .into_iter()
                .chain(names(root.join("mounts")))
                .filter(|id| id != NAME_FILES_DIR && id != LAYERS_DIR && !containers.contains(id))
                .collect();
            stale.sort();
            stale.dedup();
            for id in stale {
                if let Ok(h) = self.vm(&vm).await {
                    let _ = h.client.remove_container(&id).await;
                }
                self.unshare_container(&vm, &id);
                removed.push(format!("shares of container {id} in VM {vm}"));
            }
        }
        for id in names(self.config.root.join("c")) {
            if !containers.contains(&id) {
                let dir = self.ctr_dir(&id);
                std::fs::remove_dir_all(&dir).context(format!("remove {}", dir.display()))?;
                removed.push(format!("container logs {id}"));
            }
        }
        Ok(removed)
    }
}
