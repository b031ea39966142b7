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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use husk_container::logs::LogWriter;
use husk_core::stdio::{BoxStdio, Frame, read_frame, write_frame};
use husk_core::{ArchiveReader, ExtractOptions};
use husk_core::{
    Capabilities, ContainerConfig, ContainerRecord, ContainerRuntime, Context, Driver, DriverInfo,
    Error, ErrorKind, ExitStatus, LogOptions, LogStream, Mode, NetworkConfig, ObservedState,
    PathStat, ProcessConfig, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxRuntime,
    Stats, Top,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::accel::{AccelChoice, AccelDecision};
use crate::client::{AgentAddr, AgentClient};
use crate::guest::{Compression, GuestConfig, GuestImage, build_guest};
use crate::network::Attached;
use crate::qemu::{Machine, Share, Transport, Vm, VmConfig, host_tsc_khz, vm_size};

use crate::proto::{LAYERS_TAG as SHARE_TAG, MOUNTS_TAG};
use husk_core::attached::{AttachedStreams, SETTLE_LIMIT};

/// The directory of a VM's layer share holding its image layers.
const LAYERS_DIR: &str = "l";

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
    /// CNI networks for the VMs' network namespaces (`None`: VMs get no network interface, only `lo`).
    pub networks: Option<Arc<husk_net::Networks>>,
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
            networks: None,
        }
    }
}

/// One running VM and its agent connection.
struct VmHandle {
    vm: tokio::sync::Mutex<Vm>,
    client: AgentClient,
}

/// The file in a container's directory naming its CRI log.
const CRI_LOG_FILE: &str = "cri-log";

/// The file in a container's directory holding its log limits (JSON [`husk_core::LogLimits`]), for the
/// readers a daemon starts after a restart.
const LOG_LIMITS_FILE: &str = "log-limits.json";

/// A container's log reader in this daemon and the writer it owns.
struct Follower {
    task: tokio::task::JoinHandle<()>,
    /// `ctr.log` and the CRI log; shared so that `reopen_log` reaches the CRI log the reader writes.
    log: Arc<Mutex<LogWriter>>,
}

impl Follower {
    /// Stops the reader and writes what it holds of a partial line.
    fn stop(self) {
        self.task.abort();
        let mut log = lock(&self.log);
        log.flush_stream(0);
        log.flush_stream(1);
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

fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

impl VmDriver {
    /// A driver with `config`; detects the accelerator now (a quick, bounded probe).
    pub fn new(config: VmDriverConfig) -> Result<VmDriver> {
        for dir in [config.root.join("c"), config.run_root.join("v")] {
            std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        }
        let accel = crate::accel::detect(config.accel);
        Ok(VmDriver {
            config,
            accel,
            image: Mutex::new(None),
            vms: tokio::sync::Mutex::new(HashMap::new()),
            logging: Mutex::new(HashMap::new()),
            layer_binds: Mutex::new(()),
            attached: Arc::default(),
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

    /// Boots a VM named `vm_name` with `resources` on `network` and waits for its agent. On failure nothing of it
    /// is left (QEMU, namespace, network attachment).
    async fn boot(
        &self,
        vm_name: &str,
        resources: &husk_core::Resources,
        hostname: &str,
        share_pid: bool,
        network: &NetworkConfig,
    ) -> Result<(Arc<VmHandle>, Attached)> {
        if !hostname.is_empty() {
            husk_core::units::validate_hostname(hostname)?;
        }
        let attached = self.attach_network(vm_name, hostname, network).await?;
        match self
            .boot_attached(vm_name, resources, hostname, share_pid, &attached)
            .await
        {
            Ok(h) => Ok((h, attached)),
            Err(e) => {
                let _ = self.detach_network(vm_name).await;
                let _ = std::fs::remove_dir_all(self.vm_root(vm_name));
                Err(e)
            }
        }
    }

    async fn attach_network(
        &self,
        vm_name: &str,
        hostname: &str,
        network: &NetworkConfig,
    ) -> Result<Attached> {
        let Some(networks) = self.config.networks.clone() else {
            return Ok(Attached::default());
        };
        let (owner, ns_dir, host, net) = (
            vm_name.to_string(),
            self.vm_root(vm_name).join("ns"),
            if hostname.is_empty() {
                vm_name[..vm_name.len().min(12)].to_string()
            } else {
                hostname.to_string()
            },
            network.clone(),
        );
        husk_core::spawn_blocking(move || {
            crate::network::attach(&networks, &owner, &ns_dir, &host, &net)
        })
        .await
        .map_err(|e| Error::internal(format!("network setup task: {e}")))?
    }

    /// Disconnects a VM's network and unpins its namespace (idempotent).
    async fn detach_network(&self, vm_name: &str) -> Result<()> {
        let Some(networks) = self.config.networks.clone() else {
            return Ok(());
        };
        let (owner, ns_dir) = (vm_name.to_string(), self.vm_root(vm_name).join("ns"));
        husk_core::spawn_blocking(move || crate::network::detach(&networks, &owner, &ns_dir))
            .await
            .map_err(|e| Error::internal(format!("network teardown task: {e}")))?
    }

    async fn boot_attached(
        &self,
        vm_name: &str,
        resources: &husk_core::Resources,
        hostname: &str,
        share_pid: bool,
        attached: &Attached,
    ) -> Result<Arc<VmHandle>> {
        let image = tokio::task::block_in_place(|| self.guest_image())?;
        let root = self.vm_root(vm_name);
        let share = root.join("share");
        let mounts = root.join("mounts");
        for dir in [&share, &mounts] {
            std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
        }
        if let Some(files) = &attached.files {
            publish_name_files(files, &share)?;
        }
        let (memory_mib, cpus) = vm_size(resources, host_cpus());
        // The initramfs is in guest memory twice while the kernel unpacks it (the image and its files), and the
        // agent's pages stay after: count it twice on top of the fixed overhead, so a small limit still boots.
        let initramfs_mib = std::fs::metadata(&image.initramfs)
            .map(|m| m.len().div_ceil(1 << 20))
            .unwrap_or(0);
        let memory_mib = memory_mib + 2 * initramfs_mib;
        let mut cmdline_extra = Vec::new();
        if !hostname.is_empty() {
            cmdline_extra.push(format!("husk.hostname={hostname}"));
        }
        if share_pid {
            cmdline_extra.push("husk.share_pid".into());
        }
        // The guest's /dev/shm is what its containers share (they share its IPC namespace): Docker's 64 MiB unless
        // asked, as on `linux`.
        cmdline_extra.push(format!(
            "husk.shm_size={}",
            husk_container::spec::shm_size_bytes(resources)
        ));
        if let Some(nic) = &attached.nic {
            cmdline_extra.extend(nic.cmdline());
        }
        let config = VmConfig {
            dir: root.join("vm"),
            qemu: self.config.qemu.clone(),
            machine: self.config.machine,
            accel: self.accel.accel,
            memory_mib,
            cpus,
            kernel: image.kernel,
            initramfs: image.initramfs,
            cmdline_extra,
            shares: vec![
                Share {
                    tag: SHARE_TAG.into(),
                    path: share,
                    readonly: true,
                },
                Share {
                    tag: MOUNTS_TAG.into(),
                    path: mounts,
                    readonly: false,
                },
            ],
            transport: Transport::detect(),
            tsc_khz: host_tsc_khz(),
            tb_size_mib: Some(64),
            huge_pages: false,
            free_page_reporting: true,
            netns: attached.netns.clone(),
            nic_mac: attached.nic.as_ref().map(|n| n.mac.clone()),
        };
        let addr = agent_addr(&config);
        let mut vm = Vm::launch(config).await?;
        if let (Some(netns), Some(nic)) = (&attached.netns, &attached.nic) {
            let (netns, nic) = (netns.clone(), nic.clone());
            let joined =
                husk_core::spawn_blocking(move || crate::network::connect_tap(&netns, &nic))
                    .await
                    .map_err(|e| Error::internal(format!("tap setup task: {e}")))
                    .and_then(|r| r);
            if let Err(e) = joined {
                vm.quit(Duration::from_secs(1)).await;
                return Err(e.context(format!("connect VM {vm_name} to its network")));
            }
        }
        let connected = {
            let connect = AgentClient::connect_when_ready(&addr, self.config.boot_timeout);
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    r = &mut connect => break r,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        // A guest that panics or powers off while booting ends QEMU: no need to wait out the timeout.
                        if !vm.is_running() {
                            break Err(Error::backend(format!(
                                "the VM stopped while booting ({})",
                                qemu_status(&vm)
                            )));
                        }
                    }
                }
            }
        };
        match connected {
            Ok((client, _)) => {
                let handle = Arc::new(VmHandle {
                    vm: tokio::sync::Mutex::new(vm),
                    client,
                });
                self.vms
                    .lock()
                    .await
                    .insert(vm_name.to_string(), handle.clone());
                Ok(handle)
            }
            Err(e) => {
                let console = std::fs::read_to_string(vm.paths().console).unwrap_or_default();
                vm.quit(Duration::from_secs(1)).await;
                Err(e.context(format!(
                    "boot VM {vm_name} (console: {})",
                    console_tail(&console)
                )))
            }
        }
    }

    /// The running VM `vm_name`: from this daemon's table, or found again on disk after a restart.
    async fn vm(&self, vm_name: &str) -> Result<Arc<VmHandle>> {
        let mut vms = self.vms.lock().await;
        if let Some(h) = vms.get(vm_name).cloned() {
            if h.vm.lock().await.is_running() {
                return Ok(h);
            }
            // QEMU ended (the guest powered off, crashed or was killed): forget it.
            vms.remove(vm_name);
        }
        let dir = self.vm_root(vm_name).join("vm");
        let vm = Vm::find(&dir)
            .await?
            .ok_or_else(|| Error::not_found(format!("VM {vm_name} (it is not running)")))?;
        let (client, _) =
            AgentClient::connect_when_ready(&agent_addr(&vm.config), Duration::from_secs(10))
                .await?;
        let handle = Arc::new(VmHandle {
            vm: tokio::sync::Mutex::new(vm),
            client,
        });
        vms.insert(vm_name.to_string(), handle.clone());
        drop(vms);
        // Containers of this VM whose logs nobody reads since the restart.
        if let Ok(list) = handle.client.list().await {
            for c in list {
                self.follow_logs(handle.client.clone(), &c.id);
            }
        }
        Ok(handle)
    }

    fn vm_of(container: &ContainerRecord) -> Result<String> {
        if let Some(vm) = container
            .runtime
            .driver_data
            .get("vm")
            .and_then(|v| v.as_str())
        {
            return Ok(vm.to_string());
        }
        match (container.mode, &container.sandbox_id) {
            (Mode::Sandbox, Some(s)) => Ok(s.clone()),
            _ => Ok(container.id().to_string()),
        }
    }

    async fn client_for(&self, container: &ContainerRecord) -> Result<AgentClient> {
        Ok(self.vm(&Self::vm_of(container)?).await?.client.clone())
    }

    /// Removes a VM: QEMU is killed at once (nothing in a guest outlives its containers, so there is nothing to
    /// flush); its exit (the kernel freeing the guest's memory), the shares' unmounting, and the removal of its
    /// network and directory (CNI DEL is the slow part) finish in the background. If the daemon stops first,
    /// [`Driver::remove_orphans`] finishes the job at the next start: the directory still names the VM.
    async fn destroy_vm(&self, vm_name: &str) -> Result<()> {
        const EXIT_GRACE: Duration = Duration::from_secs(5);
        let handle = self.vms.lock().await.remove(vm_name);
        let mut found = match &handle {
            Some(h) => {
                h.vm.lock().await.kill();
                None
            }
            None => Vm::find(&self.vm_root(vm_name).join("vm")).await?,
        };
        if let Some(vm) = &mut found {
            vm.kill();
        }
        let root = self.vm_root(vm_name);
        let networks = self.config.networks.clone();
        let owner = vm_name.to_string();
        tokio::spawn(async move {
            if let Some(h) = handle {
                h.vm.lock().await.wait_gone(EXIT_GRACE).await;
            }
            if let Some(mut vm) = found {
                vm.wait_gone(EXIT_GRACE).await;
            }
            let finished = tokio::task::spawn_blocking(move || -> Result<()> {
                unmount_below(&[&root.join("share"), &root.join("mounts")]);
                if let Some(networks) = networks {
                    crate::network::detach(&networks, &owner, &root.join("ns"))?;
                }
                match std::fs::remove_dir_all(&root) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(format!("remove {}", root.display()), e)),
                }
            })
            .await;
            match finished {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    "finishing a VM's removal: {e} (retried at the next daemon start)"
                ),
                Err(e) => tracing::warn!("VM removal task: {e}"),
            }
        });
        Ok(())
    }

    /// Exposes `layers` to the VM as `share/l/<layer>` (read-only bind mounts) and returns their share paths.
    ///
    /// A layer keeps one path for the VM's whole life, whichever containers use it: QEMU's 9p server knows the
    /// guest's open files by path, and the guest (`cache=loose`) keeps a directory's dentries under the first path
    /// it met the directory by. With a path per container, a second container of the same image found the
    /// cached layer under the first container's path, gone once that container was removed, and its root
    /// filesystem came up empty. One path per layer also gives the containers of an image one page cache in the
    /// guest. A bind whose source is no longer the layer's directory (the image was removed and pulled again)
    /// is replaced.
    fn share_layers(&self, vm_name: &str, layers: &[PathBuf]) -> Result<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let base = self.vm_root(vm_name).join("share").join(LAYERS_DIR);
        let _held = lock(&self.layer_binds);
        let mut rel = Vec::new();
        for layer in layers {
            let name = layer
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.starts_with('.'))
                .ok_or_else(|| {
                    Error::internal(format!("image layer path {} has no name", layer.display()))
                })?;
            let target = base.join(name);
            let source =
                std::fs::metadata(layer).context(format!("image layer {}", layer.display()))?;
            let bound = std::fs::metadata(&target)
                .is_ok_and(|t| t.dev() == source.dev() && t.ino() == source.ino());
            if !bound {
                // An old bind of a removed layer directory, if any.
                let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
                bind_source(layer, &target, true)?;
            }
            rel.push(format!("{LAYERS_DIR}/{name}"));
        }
        Ok(rel)
    }

    /// Exposes the sources of `config`'s binds and volumes to the VM as `mounts/<id>/<n>` in its mounts share
    /// (recursive bind mounts, read-only ones also read-only on the host), and rewrites each such mount's
    /// `host_path` to that path relative to the share, for the agent. On failure nothing is left mounted.
    fn share_mounts(
        &self,
        vm: &VmConfig,
        vm_name: &str,
        config: &mut ContainerConfig,
    ) -> Result<()> {
        let wanted: Vec<usize> = (0..config.mounts.len())
            .filter(|&i| matches!(config.mounts[i].kind.as_str(), "bind" | "volume"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if !vm.shares.iter().any(|s| s.tag == MOUNTS_TAG) {
            let m = &config.mounts[wanted[0]];
            return Err(Error::unsupported(format!(
                "driver vm: the {} mount on {} needs a VM started with a share for mounts, and VM {vm_name} was started by an older husk: recreate its sandbox",
                m.kind, m.destination
            )));
        }
        let base = self.vm_root(vm_name).join("mounts").join(&config.id);
        let bound = (|| -> Result<()> {
            for (n, &i) in wanted.iter().enumerate() {
                let m = &mut config.mounts[i];
                let target = base.join(n.to_string());
                bind_source(Path::new(&m.host_path), &target, m.readonly).map_err(|e| {
                    e.context(format!("share the {} mount on {}", m.kind, m.destination))
                })?;
                m.host_path = format!("{}/{n}", config.id);
            }
            Ok(())
        })();
        if bound.is_err() {
            unmount_below(&[&base]);
            let _ = std::fs::remove_dir_all(&base);
        }
        bound
    }

    /// Unmounts and removes what [`VmDriver::share_mounts`] made for container `id` in VM `vm_name`, and its
    /// layers' directory `share/<id>` in a VM an older husk started. (Image layers stay shared for the VM's
    /// life now: see [`VmDriver::share_layers`].)
    fn unshare_container(&self, vm_name: &str, id: &str) {
        let root = self.vm_root(vm_name);
        let (mounts, layers) = (root.join("mounts").join(id), root.join("share").join(id));
        unmount_below(&[&mounts, &layers]);
        for dir in [mounts, layers] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Records where the container's CRI log goes (or that it has none) and makes the file, as the `linux`
    /// driver's shim does when the container is created; records the limits of its log too.
    fn prepare_cri_log(&self, config: &ContainerConfig) -> Result<()> {
        let dir = self.ctr_dir(&config.id);
        std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        let limits = dir.join(LOG_LIMITS_FILE);
        std::fs::write(
            &limits,
            serde_json::to_vec(&config.log).map_err(|e| Error::internal(e.to_string()))?,
        )
        .context(format!("write {}", limits.display()))?;
        let record = dir.join(CRI_LOG_FILE);
        match &config.cri_log_path {
            Some(path) => {
                husk_container::logs::CriLog::open(Path::new(path))?;
                std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
                std::fs::write(&record, path).context(format!("write {}", record.display()))
            }
            None => match std::fs::remove_file(&record) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("remove {}", record.display()), e)),
            },
        }
    }

    /// Opens container `id`'s log for its reader: `ctr.log`, and its CRI log when the file `cri-log` in the
    /// container's directory names one (written at create, so a daemon that re-attaches to the container after a
    /// restart finds it). Both are appended to, never truncated; `ctr.log` is rotated within the container's
    /// log limits.
    fn open_log(&self, id: &str) -> Result<LogWriter> {
        let dir = self.ctr_dir(id);
        std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        let mut log = LogWriter::open_limited(&dir.join("ctr.log"), self.log_limits(id))?;
        match std::fs::read_to_string(dir.join(CRI_LOG_FILE)) {
            Ok(path) if !path.is_empty() => log.also_cri(Path::new(&path))?,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("read {}", dir.join(CRI_LOG_FILE).display()),
                    e,
                ));
            }
        }
        Ok(log)
    }

    /// The log limits recorded for container `id` at create (none for a container an older husk made).
    fn log_limits(&self, id: &str) -> husk_core::LogLimits {
        std::fs::read(self.ctr_dir(id).join(LOG_LIMITS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Starts the log reader of container `id` (once per daemon): every output frame goes, split into lines,
    /// to `ctr.log` (and to the container's CRI log), the exit to `exit.json`. The agent sends each frame to
    /// one reader connection only once (it keeps only what nobody read), so a reader re-attached after a daemon
    /// restart writes no line twice.
    fn follow_logs(&self, client: AgentClient, id: &str) {
        let mut logging = lock(&self.logging);
        if logging.get(id).is_some_and(|f| !f.task.is_finished()) {
            return;
        }
        let log = match self.open_log(id) {
            Ok(log) => Arc::new(Mutex::new(log)),
            Err(e) => {
                tracing::warn!(container = id, "cannot keep the container's logs: {e}");
                return;
            }
        };
        let dir = self.ctr_dir(id);
        let id2 = id.to_string();
        let writer = log.clone();
        let task = tokio::spawn(async move {
            let Ok((_in, mut out)) = client.stdio(&id2, "").await else {
                return;
            };
            let mut exit = None;
            while let Some(frame) = out.recv().await {
                let (stream, data) = match frame {
                    Frame::Stdout(d) => (0, d),
                    Frame::Stderr(d) => (1, d),
                    Frame::Exit(code) => {
                        exit = Some(code);
                        break;
                    }
                    _ => break,
                };
                lock(&writer).write(stream, &data);
            }
            // A last line without its newline is written now (as a partial line in the CRI log): the process is
            // gone, or this reader is (the next one continues after it).
            {
                let mut log = lock(&writer);
                log.flush_stream(0);
                log.flush_stream(1);
            }
            if let Some(code) = exit {
                let exit = ExitStatus {
                    code,
                    finished_at: husk_core::now_rfc3339(),
                    ..Default::default()
                };
                let _ = std::fs::write(
                    dir.join("exit.json"),
                    serde_json::to_vec(&exit).unwrap_or_default(),
                );
            }
        });
        logging.insert(id.to_string(), Follower { task, log });
    }

    /// Stops this daemon's log reader of container `id`, keeping what it read.
    fn stop_logs(&self, id: &str) {
        if let Some(f) = lock(&self.logging).remove(id) {
            f.stop();
        }
    }

    /// Removes container `id`'s directory of logs and exit record.
    fn remove_logs(&self, id: &str) -> Result<()> {
        match std::fs::remove_dir_all(self.ctr_dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove the container's logs", e)),
        }
    }

    fn read_exit(&self, id: &str) -> Option<ExitStatus> {
        serde_json::from_slice(&std::fs::read(self.ctr_dir(id).join("exit.json")).ok()?).ok()
    }

    async fn create_in(
        &self,
        vm_name: &str,
        handle: &VmHandle,
        config: &ContainerConfig,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        // The VM's hostname is the sandbox's (or the standalone container's): containers share the guest's UTS
        // namespace instead of making their own.
        let mut config = config.clone();
        config.hostname.clear();
        let vm_config = handle.vm.lock().await.config.clone();
        self.prepare_cri_log(&config)?;
        let shared = self
            .share_mounts(&vm_config, vm_name, &mut config)
            .and_then(|()| self.share_layers(vm_name, &rootfs.layers));
        let made = match shared {
            Ok(layers) => {
                let mounts_tag = if vm_config.shares.iter().any(|s| s.tag == MOUNTS_TAG) {
                    MOUNTS_TAG
                } else {
                    ""
                };
                handle
                    .client
                    .create_container_with_mounts(&config, SHARE_TAG, layers, mounts_tag)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            // A conflict means the VM already has this container: its shares and logs are in use.
            if e.kind != ErrorKind::Conflict {
                self.unshare_container(vm_name, &config.id);
                let _ = self.remove_logs(&config.id);
            }
            return Err(e);
        }
        let _ = std::fs::remove_file(self.ctr_dir(&config.id).join("exit.json"));
        self.follow_logs(handle.client.clone(), &config.id);
        Ok(ContainerRuntime {
            pid: 0,
            driver_data: json!({ "vm": vm_name }),
            network: None,
            user: None,
        })
    }

    /// Runs `process` in the container; with a `deadline`, the container's shim in the guest kills it (SIGKILL) if
    /// it still runs then.
    async fn exec_in(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline: Option<Duration>,
    ) -> Result<BoxStdio> {
        let client = self.client_for(container).await?;
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        client
            .exec_with_deadline(container.id(), &exec_id, process, deadline)
            .await?;
        let (tx, rx) = client.stdio(container.id(), &exec_id).await?;
        Ok(bridge(tx, rx, || {}))
    }

    async fn observe_once(&self, container: &ContainerRecord) -> Result<ObservedState> {
        let client = match self.client_for(container).await {
            Ok(c) => c,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Ok(match self.read_exit(container.id()) {
                    Some(exit) => ObservedState::Exited(exit),
                    // Its VM is gone but this driver made it: it died with the VM.
                    None if self.ctr_dir(container.id()).exists() => {
                        ObservedState::Exited(ExitStatus {
                            code: 255,
                            finished_at: husk_core::now_rfc3339(),
                            reason:
                                "the VM stopped (crashed or was killed) while the container ran"
                                    .into(),
                            ..Default::default()
                        })
                    }
                    None => ObservedState::Missing,
                });
            }
            Err(e) => return Err(e),
        };
        let list = client.list().await?;
        let Some(c) = list.into_iter().find(|c| c.id == container.id()) else {
            return Ok(ObservedState::Missing);
        };
        Ok(match c.status.as_str() {
            "created" => ObservedState::Created,
            "running" => ObservedState::Running { pid: 0 },
            "paused" => ObservedState::Paused { pid: 0 },
            _ => ObservedState::Exited(self.read_exit(container.id()).unwrap_or(ExitStatus {
                code: c.exit_code,
                ..Default::default()
            })),
        })
    }
}

/// Where the agent finds a VM's name files: in the share's `.etc` directory (written before the VM boots).
pub const NAME_FILES_DIR: &str = ".etc";

/// Copies the sandbox's `hosts`, `resolv.conf` and `hostname` into the VM's share, for the agent to bind-mount
/// into the containers.
fn publish_name_files(files: &husk_net::SandboxFiles, share: &Path) -> Result<()> {
    let dir = share.join(NAME_FILES_DIR);
    std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
    for (src, name) in [
        (&files.hosts, "hosts"),
        (&files.resolv_conf, "resolv.conf"),
        (&files.hostname, "hostname"),
    ] {
        std::fs::copy(src, dir.join(name))
            .context(format!("copy {} into the VM's share", src.display()))?;
    }
    Ok(())
}

/// A VM has its own kernel: its containers cannot run in the host's PID or IPC namespace.
fn refuse_host_namespaces(config: &SandboxConfig) -> Result<()> {
    for (asked, field, what) in [
        (config.host_pid, "host_pid", "PID"),
        (config.host_ipc, "host_ipc", "IPC"),
    ] {
        if asked {
            return Err(Error::unsupported(format!(
                "{field}: driver vm runs sandbox {} in a VM with its own kernel, so its containers cannot use the \
                 host's {what} namespace; use the linux driver for such a sandbox",
                config.name
            )));
        }
    }
    if config.user_namespace.is_some() {
        return Err(Error::unsupported(format!(
            "user_namespace: driver vm does not give sandbox {} a user namespace of its own (its VM already \
             keeps its root off the host); use the linux driver for such a sandbox",
            config.name
        )));
    }
    if config.cgroup_parent.is_some() {
        return Err(Error::unsupported(format!(
            "cgroup_parent: driver vm does not place sandbox {} under a cgroup parent (its containers' cgroups \
             are the guest kernel's); use the linux or docker driver for such a sandbox",
            config.name
        )));
    }
    Ok(())
}

/// Refuses what a container in a VM cannot have: the host's devices (the guest has its own kernel and
/// devices), huge page and cgroup v2 limits and swap (the guest's cgroups are husk's agent's, which sets none of
/// them). Its `oom_score_adj` is served: the agent's runtime writes it in the guest.
fn refuse_host_resources(config: &ContainerConfig) -> Result<()> {
    let r = &config.resources;
    for (field, asked) in [
        ("devices", !config.devices.is_empty()),
        ("hugepage_limits", !r.hugepage_limits.is_empty()),
        ("unified", !r.unified.is_empty()),
        ("memory_swap", r.asks_for_swap()),
    ] {
        if asked {
            return Err(Error::unsupported(format!(
                "{field}: driver vm cannot give container {} what it asks here (its VM has its own kernel); use \
                 the linux driver",
                config.name
            )));
        }
    }
    Ok(())
}

/// The last lines of a guest console worth showing: a kernel panic's reason rather than its stack trace.
fn console_tail(console: &str) -> String {
    let lines: Vec<&str> = console
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(panic) = lines.iter().find(|l| l.contains("Kernel panic")) {
        return panic.to_string();
    }
    let skip = lines.len().saturating_sub(5);
    lines[skip..].join(" | ")
}

/// What QEMU said before it exited (its log), for errors.
fn qemu_status(vm: &Vm) -> String {
    let log = std::fs::read_to_string(vm.paths().log).unwrap_or_default();
    let log = log.trim();
    if log.is_empty() {
        "QEMU exited".into()
    } else {
        format!("QEMU exited: {log}")
    }
}

fn agent_addr(config: &VmConfig) -> AgentAddr {
    match config.transport {
        Transport::Serial => AgentAddr::Serial(config.paths().agent),
        Transport::Vsock { cid } => AgentAddr::Vsock {
            cid,
            port: crate::proto::AGENT_VSOCK_PORT,
        },
    }
}

/// Bind-mounts `source` (a directory or any other file, and what is mounted below it) on `target`, made as an
/// empty directory or file to match; read-only on the host too when `readonly`.
fn bind_source(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    let meta = std::fs::metadata(source)
        .map_err(|e| Error::not_found(format!("the mount's source {}: {e}", source.display())))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).context(format!("create {}", parent.display()))?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(target).context(format!("create {}", target.display()))?;
    } else {
        std::fs::write(target, b"").context(format!("create {}", target.display()))?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::backend(format!(
            "bind {} to {}: {e}",
            source.display(),
            target.display()
        ))
    })?;
    if readonly {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Error::backend(format!("make {} read-only: {e}", target.display())))?;
    }
    Ok(())
}

/// Unmounts every mount at or below each of `dirs` (deepest first), reading the mount table once.
fn unmount_below(dirs: &[&Path]) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefixes: Vec<String> = dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| {
            prefixes.iter().any(|prefix| {
                p.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A [`BoxStdio`] over an agent stdio stream: frames written to it go to the process, its output comes out.
fn bridge(
    to_process: mpsc::Sender<Frame>,
    mut from_process: mpsc::Receiver<Frame>,
    on_end: impl FnOnce() + Send + 'static,
) -> BoxStdio {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut r, mut w) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(f) = from_process.recv().await {
            let last = matches!(f, Frame::Exit(_) | Frame::Error(_));
            if write_frame(&mut w, &f).await.is_err() || last {
                break;
            }
        }
        let _ = w.shutdown().await;
        on_end();
    });
    tokio::spawn(async move {
        while let Ok(Some(f)) = read_frame(&mut r).await {
            if to_process.send(f).await.is_err() {
                break;
            }
        }
    });
    Box::new(theirs)
}

#[async_trait]
impl Driver for VmDriver {
    fn name(&self) -> &'static str {
        "vm"
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
                    Err(e) => return Err(e),
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
            finished_at: husk_core::now_rfc3339(),
            reason: reason.into(),
            ..Default::default()
        };
        let client = match self.client_for(container).await {
            Ok(c) => c,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Ok(self
                    .read_exit(container.id())
                    .unwrap_or_else(|| gone("the VM is gone")));
            }
            Err(e) => return Err(e),
        };
        match client.wait(container.id(), "").await {
            Ok(w) => Ok(ExitStatus {
                code: w.exit_code,
                oom_killed: w.oom_killed,
                finished_at: husk_core::now_rfc3339(),
                reason: String::new(),
            }),
            Err(e) if e.kind == ErrorKind::Backend || e.kind == ErrorKind::NotFound => {
                Ok(self.read_exit(container.id()).unwrap_or_else(|| {
                    gone("the VM stopped (crashed or was killed) while the container ran")
                }))
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
            read_at: husk_core::now_rfc3339(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_namespaces_are_refused_by_name() {
        let mut config = SandboxConfig {
            name: "pod".into(),
            ..Default::default()
        };
        assert!(refuse_host_namespaces(&config).is_ok());
        config.host_ipc = true;
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.starts_with("host_ipc:"), "{}", e.message);
        config.host_pid = true;
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert!(e.message.starts_with("host_pid:"), "{}", e.message);
        let config = SandboxConfig {
            name: "pod".into(),
            user_namespace: Some(husk_core::UserNamespaceConfig::default()),
            ..Default::default()
        };
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.starts_with("user_namespace:"), "{}", e.message);
    }

    #[test]
    fn what_a_vm_cannot_give_is_refused_by_name() {
        let config = SandboxConfig {
            name: "pod".into(),
            cgroup_parent: Some("/kubepods/pod1".into()),
            ..Default::default()
        };
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert!(e.message.starts_with("cgroup_parent:"), "{}", e.message);
        let base = ContainerConfig {
            name: "c".into(),
            resources: husk_core::Resources {
                memory_bytes: Some(64 << 20),
                memory_swap_bytes: Some(64 << 20),
                oom_score_adj: Some(500),
                ..Default::default()
            },
            ..Default::default()
        };
        refuse_host_resources(&base).unwrap();
        let mut devices = base.clone();
        devices.devices = vec![husk_core::DeviceMapping {
            host_path: "/dev/fuse".into(),
            ..Default::default()
        }];
        let mut swap = base.clone();
        swap.resources.memory_swap_bytes = Some(-1);
        let mut hugepages = base.clone();
        hugepages.resources.hugepage_limits = [("2MB".to_string(), 1 << 21)].into();
        let mut unified = base.clone();
        unified.resources.unified = [("memory.high".to_string(), "1".to_string())].into();
        for (config, field) in [
            (devices, "devices:"),
            (swap, "memory_swap:"),
            (hugepages, "hugepage_limits:"),
            (unified, "unified:"),
        ] {
            let e = refuse_host_resources(&config).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }

    /// A driver with its root and run root under `dir`, on TCG (no KVM probe); it boots nothing.
    fn driver_in(dir: &Path) -> VmDriver {
        let mut vm =
            VmDriverConfig::new(dir.join("root"), dir.join("run"), "/nonexistent/husk-agent");
        vm.accel = AccelChoice::Tcg;
        VmDriver::new(vm).unwrap()
    }

    #[test]
    fn the_log_reader_rotates_within_the_limits_recorded_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let driver = driver_in(dir.path());
        let mut config: ContainerConfig = serde_json::from_value(json!({
            "id": "c1", "name": "n", "image": { "name": "i", "id": "x" }, "process": { "args": ["sh"] }
        }))
        .unwrap();
        config.log = husk_core::LogLimits {
            max_size_bytes: Some(1000),
            max_files: Some(2),
        };
        driver.prepare_cri_log(&config).unwrap();
        // A reader started after a daemon restart finds the limits too.
        for _ in 0..2 {
            let mut log = driver.open_log("c1").unwrap();
            for i in 0..100 {
                log.write(0, format!("line {i}\n").as_bytes());
            }
        }
        let ctr = driver.ctr_dir("c1");
        for name in ["ctr.log", "ctr.log.1"] {
            let len = std::fs::metadata(ctr.join(name)).unwrap().len();
            assert!(len <= 1000, "{name}: {len}");
        }
        assert!(!ctr.join("ctr.log.2").exists());
        let (entries, _) =
            husk_container::logs::read_entries(&ctr.join("ctr.log"), 2, &LogOptions::default())
                .unwrap();
        assert_eq!(entries.last().unwrap().text, "line 99\n");
    }

    #[test]
    fn the_log_reader_writes_husks_log_and_the_cri_log_and_appends_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let driver = driver_in(dir.path());
        let cri = dir.path().join("pods/c/0.log");
        let mut config: ContainerConfig = serde_json::from_value(json!({
            "id": "c1", "name": "n", "image": { "name": "i", "id": "x" }, "process": { "args": ["sh"] }
        }))
        .unwrap();
        config.cri_log_path = Some(cri.display().to_string());
        driver.prepare_cri_log(&config).unwrap();
        assert_eq!(std::fs::read(&cri).unwrap(), b"", "made at create, empty");
        let mut log = driver.open_log("c1").unwrap();
        log.write(0, b"one\ntw");
        log.write(1, b"err\n");
        log.write(0, b"o\n");
        log.flush_stream(0);
        drop(log);
        // The daemon restarted: the next reader appends to both files.
        let mut log = driver.open_log("c1").unwrap();
        log.write(0, b"three");
        log.flush_stream(0);
        let cri_lines: Vec<String> = std::fs::read_to_string(&cri)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect();
        assert_eq!(
            cri_lines,
            [
                "stdout F one",
                "stderr F err",
                "stdout F two",
                "stdout P three"
            ]
        );
        let (entries, _) = husk_container::logs::read_entries(
            &driver.ctr_dir("c1").join("ctr.log"),
            1,
            &LogOptions::default(),
        )
        .unwrap();
        let entries: Vec<(String, String)> =
            entries.into_iter().map(|e| (e.stream, e.text)).collect();
        assert_eq!(
            entries,
            [
                ("stdout".into(), "one\n".into()),
                ("stderr".into(), "err\n".into()),
                ("stdout".into(), "two\n".into()),
                ("stdout".into(), "three".into())
            ]
        );
        assert!(log.has_cri());
        // Without a CRI log: none is written, and an old record of one is gone.
        config.cri_log_path = None;
        driver.prepare_cri_log(&config).unwrap();
        assert!(!driver.open_log("c1").unwrap().has_cri());
    }

    #[test]
    fn containers_find_their_vm() {
        let mut r: ContainerRecord = serde_json::from_value(json!({
            "config": { "id": "c1", "name": "n", "image": { "name": "i", "id": "x" }, "process": { "args": ["sh"] } },
            "driver": "vm", "mode": "sandbox", "sandbox_id": "s1", "status": "created", "created_at": ""
        }))
        .unwrap();
        assert_eq!(VmDriver::vm_of(&r).unwrap(), "s1");
        r.mode = Mode::Standalone;
        r.sandbox_id = None;
        assert_eq!(VmDriver::vm_of(&r).unwrap(), "c1");
        r.runtime.driver_data = json!({ "vm": "other" });
        assert_eq!(VmDriver::vm_of(&r).unwrap(), "other");
    }
}
