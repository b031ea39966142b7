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

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use husk_core::stdio::BoxStdio;
use husk_core::{
    ArchiveReader, Capabilities, ContainerConfig, ContainerRecord, ContainerRuntime, Driver,
    DriverInfo, Error, ErrorKind, ExitStatus, ExtractOptions, LogOptions, LogStream, NetworkConfig,
    NetworkStatus, ObservedState, PathStat, ProcessConfig, ProcessUser, Result, RootfsLayers,
    SandboxConfig, SandboxRecord, SandboxRuntime, Stats, Top,
};
use nix::mount::{MntFlags, MsFlags};
use serde_json::json;

use husk_container::container_fs::{FsOp, FsRequest, FsTarget};
use husk_container::sealed_exe::SealedExe;
use husk_container::shim::{Request, ShimClient, ShimConfig, ShimStatus, spawn_shim};
use husk_container::spec::{NamespacePlan, SpecInput};
use husk_container::{cgroups, namespaces, security, spec, user};

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
    /// Pidfds of the pause processes this daemon started (so it can reap them).
    pauses: Mutex<HashMap<String, Arc<OwnedFd>>>,
    /// The default seccomp profile, compiled once per capability set.
    seccomp_programs: Arc<husk_container::seccomp_bpf::ProgramCache>,
    /// Removals finishing in the background (network teardown), awaited at shutdown.
    removals: tokio_util::task::TaskTracker,
    /// Ready network namespaces on the default network.
    pool: Arc<crate::pool::NetnsPool>,
}

impl std::fmt::Debug for LinuxDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxDriver")
            .field("root", &self.config.root)
            .field("run_root", &self.config.run_root)
            .finish()
    }
}

/// A network identity made for a sandbox or a standalone container: pinned namespaces, the network status and
/// the name files to bind-mount.
struct Identity {
    pinned: BTreeMap<String, PathBuf>,
    status: NetworkStatus,
    files: husk_net::SandboxFiles,
    /// The pause process made with a sandbox's own user namespace (it holds the PID namespace).
    pause: Option<namespaces::PauseProcess>,
}

/// A sandbox's own user namespace as a container of it uses it: the pinned namespace (to join, and to id-map
/// mounts through) and the host IDs of its root (who owns the container's writable layer).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerUserns {
    path: PathBuf,
    root_uid: u32,
    root_gid: u32,
}

impl ContainerUserns {
    /// As kept in a container's driver data (`userns`).
    fn to_json(&self) -> serde_json::Value {
        json!({"path": self.path, "root_uid": self.root_uid, "root_gid": self.root_gid})
    }

    /// The user namespace a container's driver data names, if any.
    fn of(container: &ContainerRecord) -> Result<Option<ContainerUserns>> {
        let Some(v) = container.runtime.driver_data.get("userns") else {
            return Ok(None);
        };
        let id = |key: &str| {
            v[key]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Error::internal(format!(
                        "the record of container {} has a bad user namespace",
                        container.config.name
                    ))
                })
        };
        let path = v["path"].as_str().ok_or_else(|| {
            Error::internal(format!(
                "the record of container {} has a bad user namespace",
                container.config.name
            ))
        })?;
        Ok(Some(ContainerUserns {
            path: PathBuf::from(path),
            root_uid: id("root_uid")?,
            root_gid: id("root_gid")?,
        }))
    }
}

/// Disconnects the network of `owner` and unpins its namespaces in `ns_dir` (idempotent).
async fn remove_identity_blocking(
    networks: Arc<husk_net::Networks>,
    owner: String,
    ns_dir: PathBuf,
) -> Result<()> {
    let netns = ns_dir.join("net");
    husk_core::spawn_blocking(move || {
        let ns = if namespaces::is_pinned(&netns) {
            Some(netns.as_path())
        } else {
            None
        };
        networks.teardown(&owner, ns)
    })
    .await
    .map_err(|e| Error::internal(format!("network teardown task: {e}")))??;
    namespaces::remove_pinned(&ns_dir)
}

/// Files bind-mounted over the image's: (path in the container, path on the host).
type EtcMounts = Vec<(String, PathBuf)>;

/// The bind mounts of a sandbox's name files.
fn etc_mounts(files: &husk_net::SandboxFiles) -> EtcMounts {
    vec![
        ("/etc/hostname".to_string(), files.hostname.clone()),
        ("/etc/hosts".to_string(), files.hosts.clone()),
        ("/etc/resolv.conf".to_string(), files.resolv_conf.clone()),
    ]
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

/// What a container leaves on the host once its processes are gone.
struct ContainerFiles {
    rootfs: PathBuf,
    /// Where the container's image mounts are mounted on the host.
    images: PathBuf,
    /// Id-mapped copies of the image's layers and of bind mounts (a container in a user namespace).
    idmapped: PathBuf,
    libcontainer_state: PathBuf,
    cgroup: String,
    ctr_dir: PathBuf,
}

impl ContainerFiles {
    /// Unmounts the root filesystem, then removes libcontainer's state, the cgroup (killing stragglers a
    /// shim killed with -9 left) and the container's directory (upper and work dirs, logs).
    async fn remove(self) -> Result<()> {
        husk_fs::unmount_rootfs(&self.rootfs)?;
        husk_fs::unmount_all_in(&self.images)?;
        husk_container::idmap::remove_idmapped(&self.idmapped)?;
        remove_dir(&self.libcontainer_state)?;
        if !cgroups::cgroup_dirs(&self.cgroup).is_empty() {
            for pid in cgroups::procs(&self.cgroup) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let c = self.cgroup.clone();
            husk_core::spawn_blocking(move || cgroups::remove(&c))
                .await
                .map_err(|e| Error::internal(format!("cgroup removal task: {e}")))??;
        }
        remove_dir(&self.ctr_dir)
    }
}

/// Unmounts `target` (lazily, so a busy mount cannot block deletion); a path that is not mounted is fine.
fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::backend(format!("unmount {}: {e}", target.display()))),
    }
}

/// Whether `path` is the root of a mount: one `statx` (its `STATX_ATTR_MOUNT_ROOT`, Linux 5.8) rather than
/// reading the whole mount table, which grows with every container on the host; the table on older kernels.
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a NUL-terminated path and a zeroed buffer of the type statx fills.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            buf.as_mut_ptr(),
        )
    };
    if r != 0 {
        return false;
    }
    // SAFETY: statx succeeded, so it filled the buffer (which was zeroed before anyway).
    let stx = unsafe { buf.assume_init() };
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & mount_root != 0 {
        return stx.stx_attributes & mount_root != 0;
    }
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    text.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_ref()))
}

fn hostname_for(config: &ContainerConfig) -> String {
    if config.hostname.is_empty() {
        config.id[..12].to_string()
    } else {
        config.hostname.clone()
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
        let pool = Arc::new(crate::pool::NetnsPool::new(
            config.run_root.join("pool"),
            config.sandbox_pool,
            config.networks.clone(),
        ));
        Ok(LinuxDriver {
            pool,
            sealed_exe,
            daemon_capabilities: security::daemon_capabilities()?,
            cgroup_v2: cgroups::is_v2(),
            dynamic_cgroup_changes,
            config,
            pauses: Mutex::new(HashMap::new()),
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

    fn shim(&self, id: &str) -> ShimClient {
        ShimClient::new(self.ctr_run_dir(id).join("sock"))
    }

    /// The container's cgroup: under its sandbox's parent when it has one, else under the driver's.
    fn cgroup_path(&self, config: &ContainerConfig) -> String {
        let parent = config
            .cgroup_parent
            .as_deref()
            .unwrap_or(&self.config.cgroup_parent);
        format!("/{}/{}", parent.trim_matches('/'), config.id)
    }

    /// The cgroup a container of which only the ID is known was made with (an orphan): the one its bundle's
    /// `shim.json` names, else the driver's parent.
    fn recorded_cgroup(&self, id: &str) -> String {
        std::fs::read(self.ctr_dir(id).join("shim.json"))
            .ok()
            .and_then(|text| serde_json::from_slice::<ShimConfig>(&text).ok())
            .map(|shim| shim.cgroup_path)
            .unwrap_or_else(|| format!("/{}/{}", self.config.cgroup_parent.trim_matches('/'), id))
    }

    /// `resources` as this host can enforce them, or why not: huge page limits need a hugetlb controller that
    /// libcgroups drives (a v1 hierarchy, or the unified one on a v2 host; not the cgroup2 mount of a hybrid
    /// host) and page sizes the kernel has; `unified` needs cgroup v2; swap beyond the memory limit needs swap
    /// accounting (`memory.memsw.*` on v1). A memory plus swap limit equal to the memory limit asks for no swap:
    /// without swap accounting it is left out.
    fn host_resources(&self, resources: &husk_core::Resources) -> Result<husk_core::Resources> {
        let mut fitted = resources.clone();
        if !resources.unified.is_empty() && !self.cgroup_v2 {
            return Err(Error::precondition(
                "unified",
                "unified: cgroup v2 files can only be set on a cgroup v2 host, and this host's controllers are \
                 on cgroup v1",
            ));
        }
        if !resources.hugepage_limits.is_empty() {
            let controller = cgroups::hugetlb_available(self.cgroup_v2);
            for (size, limit) in &resources.hugepage_limits {
                let bytes = husk_core::units::parse_hugepage_size("hugepage_limits", size)?;
                let dir = PathBuf::from(format!(
                    "/sys/kernel/mm/hugepages/hugepages-{}kB",
                    bytes >> 10
                ));
                if !dir.is_dir() {
                    return Err(Error::precondition(
                        "hugepage_limits",
                        format!(
                            "hugepage_limits: this host's kernel has no {size} huge pages (no {})",
                            dir.display()
                        ),
                    ));
                }
                if let Err(why) = &controller {
                    // kubelet asks for a limit of 0 for every page size of the node: where the host has no such
                    // pages to give, that limit keeps itself.
                    if *limit == 0 && cgroups::hugepage_pool_is_empty(&dir) {
                        fitted.hugepage_limits.remove(size);
                        continue;
                    }
                    return Err(Error::precondition(
                        "hugepage_limits",
                        format!("hugepage_limits: {why}"),
                    ));
                }
            }
        }
        if resources.memory_swap_bytes.is_some() && !self.cgroup_v2 && !cgroups::swap_accounted_v1()
        {
            if resources.asks_for_swap() {
                return Err(Error::precondition(
                    "memory_swap",
                    "memory_swap: this host's kernel does not account swap (no memory.memsw.limit_in_bytes; \
                     boot it with swapaccount=1), so a limit on memory plus swap cannot be kept",
                ));
            }
            fitted.memory_swap_bytes = None;
        }
        Ok(fitted)
    }

    fn rootfs(&self, id: &str) -> PathBuf {
        self.ctr_run_dir(id).join("rootfs")
    }

    /// Where the image mounts of a container are mounted on the host (`mN`, N its place in the mount list), to be
    /// bound into the container.
    fn images_dir(&self, id: &str) -> PathBuf {
        self.ctr_run_dir(id).join("images")
    }

    /// Where a container in a user namespace gets the id-mapped copies of its layers (`lN`), binds (`mN`) and
    /// image mounts' layers (`iNlM`).
    fn idmapped_dir(&self, id: &str) -> PathBuf {
        self.ctr_run_dir(id).join("idmap")
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.ctr_dir(id).join("ctr.log")
    }

    fn exit_path(&self, id: &str) -> PathBuf {
        self.ctr_dir(id).join("exit.json")
    }

    /// The exit status of a container whose shim no longer answers: from the exit file, which a finishing shim
    /// writes just before it stops listening (so give it a moment), or "lost" if the shim died without one.
    async fn exit_after_shim(&self, id: &str) -> ExitStatus {
        for _ in 0..100 {
            if let Some(exit) = self.read_exit(id) {
                return exit;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ExitStatus {
            code: 255,
            finished_at: husk_core::now_rfc3339(),
            reason: "the container's monitor (shim) died without recording an exit status".into(),
            ..Default::default()
        }
    }

    fn read_exit(&self, id: &str) -> Option<ExitStatus> {
        std::fs::read(self.exit_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Mounts the container's root filesystem if it is not mounted (a reboot unmounts it).
    fn ensure_rootfs(
        &self,
        id: &str,
        layers: &RootfsLayers,
        userns: Option<&ContainerUserns>,
    ) -> Result<()> {
        let target = self.rootfs(id);
        if is_mountpoint(&target) {
            return Ok(());
        }
        let dir = self.ctr_dir(id);
        for d in [dir.join("upper"), dir.join("work"), target.clone()] {
            mkdir(&d)?;
        }
        let Some(userns) = userns else {
            return husk_fs::mount_rootfs(layers, &dir.join("upper"), &dir.join("work"), &target);
        };
        // In a user namespace the image's files (owned by host root on disk) must be the namespace root's:
        // overlayfs cannot be id-mapped as a whole, so it is made of id-mapped copies of the layers, and the
        // writable layer belongs to the namespace's root on the host.
        let staging = self.idmapped_dir(id);
        let mut lowers = Vec::with_capacity(layers.layers.len());
        for (i, layer) in layers.layers.iter().enumerate() {
            let copy = staging.join(format!("l{i}"));
            if !is_mountpoint(&copy) {
                mkdir(&copy)?;
                husk_container::idmap::mount_idmapped(layer, &copy, &userns.path)?;
            }
            lowers.push(copy);
        }
        for d in [dir.join("upper"), dir.join("work")] {
            std::os::unix::fs::chown(&d, Some(userns.root_uid), Some(userns.root_gid))
                .map_err(|e| Error::io(format!("chown {}", d.display()), e))?;
        }
        husk_fs::mount_overlay(
            &lowers,
            &dir.join("upper"),
            &dir.join("work"),
            &target,
            husk_fs::MountMethod::Auto,
        )
        .map_err(|e| {
            e.context(format!(
                "mount the id-mapped root filesystem of image {}",
                layers.image_name
            ))
        })
    }

    /// Mounts the container's image mounts that are not mounted (a reboot unmounts them): each image's layers
    /// read-only, `nosuid` and `nodev`, without a writable layer, at `images/mN`. In a user namespace the layers
    /// are id-mapped copies first, as for the root filesystem.
    fn ensure_image_mounts(
        &self,
        id: &str,
        mounts: &[husk_core::MountConfig],
        userns: Option<&ContainerUserns>,
    ) -> Result<()> {
        for (i, m) in mounts.iter().enumerate() {
            if m.kind != "image" {
                continue;
            }
            let image = m.image.as_ref().ok_or_else(|| {
                Error::internal(format!(
                    "the image mount on {} has no image: the engine did not prepare it",
                    m.destination
                ))
            })?;
            let target = self.images_dir(id).join(format!("m{i}"));
            if is_mountpoint(&target) {
                continue;
            }
            mkdir(&target)?;
            let lowers = match userns {
                None => image.layers.clone(),
                Some(userns) => {
                    let staging = self.idmapped_dir(id);
                    let mut lowers = Vec::with_capacity(image.layers.len());
                    for (j, layer) in image.layers.iter().enumerate() {
                        let copy = staging.join(format!("i{i}l{j}"));
                        if !is_mountpoint(&copy) {
                            mkdir(&copy)?;
                            husk_container::idmap::mount_idmapped(layer, &copy, &userns.path)?;
                        }
                        lowers.push(copy);
                    }
                    lowers
                }
            };
            husk_fs::mount_image_readonly(&lowers, &target).map_err(|e| {
                e.context(format!(
                    "mount image {} on {}",
                    image.image_name, m.destination
                ))
            })?;
        }
        Ok(())
    }

    /// Resolves each mount's destination inside the container's root filesystem, as runc does: a symbolic link on
    /// the way (`/data -> /`, or `-> ../../../etc`) is followed inside the root, never on the host, so the mount
    /// lands where the container sees the path. The runtime then makes the missing directories without following
    /// any link, and refuses one that appears meanwhile.
    fn resolve_mount_destinations(
        &self,
        id: &str,
        mounts: &mut [husk_core::MountConfig],
    ) -> Result<()> {
        if mounts.is_empty() {
            return Ok(());
        }
        let tree = husk_fs::Tree::in_root(&self.rootfs(id))?;
        for m in mounts.iter_mut() {
            m.destination = tree
                .resolve_in_tree(&m.destination)
                .map_err(|e| e.context(format!("mount destination {}", m.destination)))?;
        }
        Ok(())
    }

    /// Points the image mounts of `mounts` at where [`Self::ensure_image_mounts`] mounted them: the image's root,
    /// or the object its `subpath` leads to, resolved inside the image (a link in the image cannot lead to the
    /// host's files).
    fn image_mount_paths(&self, id: &str, mounts: &mut [husk_core::MountConfig]) -> Result<()> {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m.kind != "image" {
                continue;
            }
            let root = self.images_dir(id).join(format!("m{i}"));
            let path = match m.subpath.as_deref() {
                None => root,
                Some(sub) => husk_fs::Tree::in_root(&root)
                    .and_then(|tree| tree.resolve(sub))
                    .map_err(|e| {
                        Error::invalid(
                            "image-subpath",
                            format!(
                                "{sub:?} is not in image {} (the image mount on {}): {}",
                                m.source, m.destination, e.message
                            ),
                        )
                    })?,
            };
            m.host_path = path.display().to_string();
        }
        Ok(())
    }

    /// The user namespace of `sandbox`, if it has its own, as its containers use it.
    fn container_userns(&self, sandbox: Option<&SandboxRecord>) -> Result<Option<ContainerUserns>> {
        let Some(sb) = sandbox else {
            return Ok(None);
        };
        let Some(config) = &sb.config.user_namespace else {
            return Ok(None);
        };
        let path = sb.runtime.namespaces.get("user").ok_or_else(|| {
            Error::backend(format!("sandbox {} has no user namespace", sb.config.name))
        })?;
        match (config.host_root_uid(), config.host_root_gid()) {
            (Some(root_uid), Some(root_gid)) => Ok(Some(ContainerUserns {
                path: PathBuf::from(path),
                root_uid,
                root_gid,
            })),
            _ => Err(Error::internal(format!(
                "the user namespace of sandbox {} does not map root",
                sb.config.name
            ))),
        }
    }

    /// Pins namespaces for `owner` (a sandbox or a standalone container) in `ns_dir` (no IPC namespace with
    /// `host_ipc`: the host's is used), connects its network and writes its name files. On failure nothing is
    /// left.
    ///
    /// With `userns` (a sandbox's own user namespace, and whether the sandbox shares a PID namespace) the
    /// namespaces are made inside that user namespace, and so is the pause process holding the PID namespace.
    async fn make_identity(
        &self,
        owner: &str,
        ns_dir: &Path,
        hostname: &str,
        network: &NetworkConfig,
        host_ipc: bool,
        userns: Option<(&husk_core::UserNamespaceConfig, bool)>,
    ) -> Result<Identity> {
        let networks = self.config.networks.clone();
        let host = networks.mode_of(network) == husk_net::Mode::Host;
        let mut kinds = vec!["uts"];
        if !host {
            kinds.push("net");
        }
        if !host_ipc {
            kinds.push("ipc");
        }
        if userns.is_none()
            && !host
            && let Some(identity) =
                self.identity_from_pool(owner, ns_dir, hostname, network, &kinds)?
        {
            return Ok(identity);
        }
        let (pinned, pause) = match userns {
            None => (namespaces::create_pinned(ns_dir, hostname, &kinds)?, None),
            Some((config, share_pid)) => {
                let exe = self.sealed_exe.path();
                let pid_pin = ns_dir.join("pid");
                namespaces::create_pinned_in_userns(
                    ns_dir,
                    hostname,
                    &kinds,
                    config,
                    share_pid.then_some((exe.as_path(), pid_pin.as_path())),
                )?
            }
        };
        let (owner_id, netns, net, host_name) = (
            owner.to_string(),
            pinned
                .get("net")
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net")),
            network.clone(),
            hostname.to_string(),
        );
        let made = husk_core::spawn_blocking(
            move || -> Result<(NetworkStatus, husk_net::SandboxFiles)> {
                let status = networks.setup(&owner_id, &netns, &net)?;
                match networks.write_files(&owner_id, &host_name, &net, &status) {
                    Ok(files) => Ok((status, files)),
                    Err(e) => {
                        let _ = networks.teardown(&owner_id, Some(&netns));
                        Err(e)
                    }
                }
            },
        )
        .await
        .map_err(|e| Error::internal(format!("network setup task: {e}")));
        match made {
            Ok(Ok((status, files))) => Ok(Identity {
                pinned,
                status,
                files,
                pause,
            }),
            Ok(Err(e)) | Err(e) => {
                if let Some(p) = &pause {
                    namespaces::stop_pause(p);
                }
                let _ = namespaces::remove_pinned(ns_dir);
                Err(e)
            }
        }
    }

    /// A network identity whose network namespace comes from the pool ([`crate::pool`]), or `None` when the pool
    /// cannot serve `network` (off, empty, another network, published ports). Blocking, but short: pins and a
    /// cache record, no plugin runs. The pool refills in the background.
    fn identity_from_pool(
        &self,
        owner: &str,
        ns_dir: &Path,
        hostname: &str,
        network: &NetworkConfig,
        kinds: &[&str],
    ) -> Result<Option<Identity>> {
        if !self.pool.serves(network) {
            return Ok(None);
        }
        mkdir(ns_dir)?;
        let netns = ns_dir.join("net");
        let status = self.pool.take(owner, network, &netns);
        self.refill_pool();
        let Some(status) = status else {
            return Ok(None);
        };
        let networks = &self.config.networks;
        let others: Vec<&str> = kinds.iter().copied().filter(|k| *k != "net").collect();
        let made = namespaces::create_pinned(ns_dir, hostname, &others).and_then(|pinned| {
            let files = networks.write_files(owner, hostname, network, &status)?;
            Ok((pinned, files))
        });
        match made {
            Ok((mut pinned, files)) => {
                pinned.insert("net".into(), netns);
                Ok(Some(Identity {
                    pinned,
                    status,
                    files,
                    pause: None,
                }))
            }
            Err(e) => {
                let _ = networks.teardown(owner, Some(&netns));
                let _ = namespaces::remove_pinned(ns_dir);
                Err(e)
            }
        }
    }

    /// Tops the pool up in the background (one filler at a time).
    fn refill_pool(&self) {
        if self.pool.enabled() {
            let pool = self.pool.clone();
            self.removals.spawn_blocking(move || pool.fill());
        }
    }

    /// Disconnects and unpins what [`Self::make_identity`] made (idempotent).
    async fn remove_identity(&self, owner: &str, ns_dir: &Path) -> Result<()> {
        remove_identity_blocking(
            self.config.networks.clone(),
            owner.to_string(),
            ns_dir.to_path_buf(),
        )
        .await
    }

    /// Finishes a removal in the background: removes a container's `files` (if given), disconnects the network
    /// (CNI DEL is the slow part, tens of milliseconds per plugin), unpins the namespaces and removes `dirs`. The
    /// caller's records are already gone; if the daemon stops first, [`Driver::remove_orphans`] finishes the job
    /// at the next start, since the directories (removed last) still name the owner. The address stays
    /// allocated until DEL has run, so it is never reused early.
    fn finish_removal_later(
        &self,
        owner: &str,
        files: Option<ContainerFiles>,
        ns_dir: PathBuf,
        dirs: Vec<PathBuf>,
    ) {
        let networks = self.config.networks.clone();
        let owner = owner.to_string();
        self.removals.spawn(async move {
            let result = async {
                if let Some(files) = files {
                    files.remove().await?;
                }
                remove_identity_blocking(networks, owner.clone(), ns_dir).await?;
                for d in &dirs {
                    remove_dir(d)?;
                }
                Ok::<_, Error>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(owner = %owner, "finishing a removal: {e} (retried at the next daemon start)");
            }
        });
    }

    fn namespace_plan(
        &self,
        sandbox: &SandboxRecord,
    ) -> Result<(NamespacePlan, EtcMounts, Option<PathBuf>)> {
        let ns = &sandbox.runtime.namespaces;
        let host_network =
            self.config.networks.mode_of(&sandbox.config.network) == husk_net::Mode::Host;
        let need = |kind: &str| {
            ns.get(kind).map(PathBuf::from).ok_or_else(|| {
                Error::backend(format!(
                    "sandbox {} has no {kind} namespace",
                    sandbox.config.name
                ))
            })
        };
        let (host_pid, host_ipc) = (sandbox.config.host_pid, sandbox.config.host_ipc);
        let plan = NamespacePlan {
            net: if host_network {
                None
            } else {
                Some(need("net")?)
            },
            host_network,
            ipc: if host_ipc { None } else { Some(need("ipc")?) },
            uts: Some(need("uts")?),
            pid: if sandbox.config.share_pid && !host_pid {
                Some(need("pid")?)
            } else {
                None
            },
            host_pid,
            host_ipc,
            user: match &sandbox.config.user_namespace {
                Some(userns) => Some((need("user")?, userns.clone())),
                None => None,
            },
        };
        // POSIX shared memory goes with the IPC namespace: the host's /dev/shm with the host's.
        let shm = if host_ipc {
            PathBuf::from("/dev/shm")
        } else {
            self.sandbox_run_dir(&sandbox.config.id).join("shm")
        };
        let files = self.config.networks.files(&sandbox.config.id)?;
        Ok((plan, etc_mounts(&files), Some(shm)))
    }

    fn shim_config(&self, config: &ContainerConfig) -> ShimConfig {
        let id = &config.id;
        ShimConfig {
            id: id.clone(),
            bundle: self.ctr_dir(id),
            state_root: self.config.run_root.join("lc"),
            socket: self.ctr_run_dir(id).join("sock"),
            log: self.log_path(id),
            exit_file: self.exit_path(id),
            work_dir: self.ctr_run_dir(id),
            tty: config.process.tty,
            stdin: config.process.stdin,
            cgroup_path: self.cgroup_path(config),
            seccomp_program: Some(self.ctr_dir(id).join("seccomp.bpf")),
            cri_log: config.cri_log_path.as_ref().map(PathBuf::from),
            log_limits: config.log,
            cgroup_mounts: cgroups::cgroup_mount_lines().to_vec(),
        }
    }

    async fn start_shim(&self, id: &str) -> Result<i32> {
        let dir = self.ctr_dir(id);
        let _ = std::fs::remove_file(self.exit_path(id));
        spawn_shim(
            &self.sealed_exe.path(),
            &dir.join("shim.json"),
            &dir.join("shim.log"),
        )
        .await
    }

    async fn create_inner(
        &self,
        config: &ContainerConfig,
        resources: husk_core::Resources,
        sandbox: Option<&SandboxRecord>,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        let id = &config.id;
        let t0 = std::time::Instant::now();
        mkdir(&self.ctr_dir(id))?;
        mkdir(&self.ctr_run_dir(id))?;
        let userns = self.container_userns(sandbox)?;
        self.ensure_rootfs(id, rootfs, userns.as_ref())?;
        self.ensure_image_mounts(id, &config.mounts, userns.as_ref())?;
        let t_rootfs = t0.elapsed();
        let resolved_user = user::resolve_user_with_groups(
            &self.rootfs(id),
            &config.process.user,
            &config.security.group_add,
            config.security.groups_policy,
        )?;
        let process_user = ProcessUser {
            uid: resolved_user.uid,
            gid: resolved_user.gid,
            groups: resolved_user.additional_gids.clone(),
        };
        let (plan, etc_files, shm, network) = match sandbox {
            Some(sb) => {
                let (plan, files, shm) = self.namespace_plan(sb)?;
                (plan, files, shm, None)
            }
            None => {
                // A standalone container's namespaces are its own, pinned so they outlive a restart of the
                // container (its address and hostname stay) and are removed with it.
                let ns_dir = self.ctr_run_dir(id).join("ns");
                let identity = self
                    .make_identity(
                        id,
                        &ns_dir,
                        &hostname_for(config),
                        &config.network,
                        false,
                        None,
                    )
                    .await?;
                let host_network = !identity.pinned.contains_key("net");
                let plan = NamespacePlan {
                    net: identity.pinned.get("net").cloned(),
                    host_network,
                    ipc: identity.pinned.get("ipc").cloned(),
                    uts: identity.pinned.get("uts").cloned(),
                    ..Default::default()
                };
                (
                    plan,
                    etc_mounts(&identity.files),
                    None,
                    Some(identity.status),
                )
            }
        };
        let t_ns = t0.elapsed();
        let mut config_with_host = config.clone();
        config_with_host.resources = resources;
        config_with_host.hostname = match sandbox {
            Some(sb) => sb.config.hostname.clone(),
            None => hostname_for(config),
        };
        if let Some(userns) = &userns {
            self.idmap_binds(id, &mut config_with_host, userns)?;
        }
        self.image_mount_paths(id, &mut config_with_host.mounts)?;
        self.resolve_mount_destinations(id, &mut config_with_host.mounts)?;
        let input = SpecInput {
            config: &config_with_host,
            process: &config.process,
            rootfs: &self.rootfs(id),
            namespaces: plan,
            cgroup_path: self.cgroup_path(config),
            user: resolved_user,
            etc_files,
            shm,
            daemon_capabilities: &self.daemon_capabilities,
            cgroup_v2: self.cgroup_v2,
        };
        let oci = spec::container_spec(&input)?;
        let bundle = self.ctr_dir(id);
        self.precompile_seccomp(config, &oci, &bundle).await?;
        let spec_json =
            serde_json::to_vec_pretty(&oci).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(bundle.join("config.json"), spec_json)
            .map_err(|e| Error::io("write config.json", e))?;
        let shim_json = serde_json::to_vec_pretty(&self.shim_config(config))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(bundle.join("shim.json"), shim_json)
            .map_err(|e| Error::io("write shim.json", e))?;
        let t_spec = t0.elapsed();
        let pid = self.start_shim(id).await?;
        self.apply_propagation(config, pid).await?;
        tracing::debug!(rootfs = ?t_rootfs, namespaces = ?t_ns, spec = ?t_spec, shim = ?t0.elapsed(), "container created");
        let mut driver_data = json!({"cgroup": self.cgroup_path(config), "rootfs": rootfs});
        if let Some(userns) = &userns {
            driver_data["userns"] = userns.to_json();
        }
        Ok(ContainerRuntime {
            pid,
            driver_data,
            network,
            user: Some(process_user),
        })
    }

    /// Points the bind and volume mounts of `config` at id-mapped copies of their sources (see
    /// [`husk_container::idmap`]): in the sandbox's user namespace, what host root owns on disk is the
    /// namespace root's, so the containers of a pod can write to the directories they share (an emptyDir).
    fn idmap_binds(
        &self,
        id: &str,
        config: &mut ContainerConfig,
        userns: &ContainerUserns,
    ) -> Result<()> {
        let staging = self.idmapped_dir(id);
        for (i, m) in config.mounts.iter_mut().enumerate() {
            if !matches!(m.kind.as_str(), "bind" | "volume") || m.host_path.is_empty() {
                continue;
            }
            let source = PathBuf::from(&m.host_path);
            let copy = staging.join(format!("m{i}"));
            if !is_mountpoint(&copy) {
                if source.is_dir() {
                    mkdir(&copy)?;
                } else {
                    mkdir(&staging)?;
                    std::fs::File::create(&copy)
                        .map_err(|e| Error::io(format!("create {}", copy.display()), e))?;
                }
                husk_container::idmap::mount_idmapped(&source, &copy, &userns.path)
                    .map_err(|e| e.context(format!("the mount on {}", m.destination)))?;
            }
            m.host_path = copy.display().to_string();
        }
        Ok(())
    }

    /// Serves the default seccomp profile as a precompiled program (see [`husk_container::seccomp_bpf`]) when the
    /// container can take it that way: the spec then carries no filter and the bundle holds `seccomp.bpf`.
    async fn precompile_seccomp(
        &self,
        config: &ContainerConfig,
        oci: &oci_spec::runtime::Spec,
        bundle: &Path,
    ) -> Result<()> {
        let program_path = bundle.join("seccomp.bpf");
        if !spec::seccomp_precompiled(config) {
            let _ = std::fs::remove_file(&program_path);
            return Ok(());
        }
        let caps: Vec<String> = oci
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(|set| set.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        let cache = self.seccomp_programs.clone();
        let program = husk_core::spawn_blocking(move || cache.default_program(&caps))
            .await
            .map_err(|e| Error::internal(format!("seccomp compile task: {e}")))??;
        std::fs::write(&program_path, program.as_slice())
            .map_err(|e| Error::io(format!("write {}", program_path.display()), e))?;
        Ok(())
    }

    /// Removes everything a container left on the host (idempotent). With `background`, the network part
    /// finishes after this returns (see [`Self::finish_removal_later`]).
    async fn cleanup_container(&self, id: &str, background: bool) -> Result<()> {
        let shim = self.shim(id);
        if shim.call(&Request::Shutdown).await.is_ok() {
            // The shim answers `wait` when it has cleaned up libcontainer's state; it then exits.
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.call(&Request::Wait)).await;
        }
        // Nothing of the container runs any more; what is left are files, a mount and maybe a cgroup.
        let files = ContainerFiles {
            rootfs: self.rootfs(id),
            images: self.images_dir(id),
            idmapped: self.idmapped_dir(id),
            libcontainer_state: self.config.run_root.join("lc").join(id),
            cgroup: self.recorded_cgroup(id),
            ctr_dir: self.ctr_dir(id),
        };
        let run_dir = self.ctr_run_dir(id);
        if background {
            // Off the caller's path: an `rm` or `run --rm` answers without waiting on unmounts and deletes.
            self.finish_removal_later(id, Some(files), run_dir.join("ns"), vec![run_dir]);
            Ok(())
        } else {
            files.remove().await?;
            self.remove_identity(id, &run_dir.join("ns")).await?;
            remove_dir(&run_dir)
        }
    }

    /// Runs `process` in the container through its shim, killed after `deadline_ms` if given.
    async fn exec_process(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline_ms: Option<u64>,
    ) -> Result<BoxStdio> {
        let id = container.id();
        let resolved_user = user::resolve_user_with_groups(
            &self.rootfs(id),
            &process.user,
            &container.config.security.group_add,
            container.config.security.groups_policy,
        )?;
        let input = SpecInput {
            config: &container.config,
            process,
            rootfs: &self.rootfs(id),
            namespaces: NamespacePlan::default(),
            cgroup_path: self.cgroup_path(&container.config),
            user: resolved_user,
            etc_files: vec![],
            shm: None,
            daemon_capabilities: &self.daemon_capabilities,
            cgroup_v2: self.cgroup_v2,
        };
        let process_json = spec::process_json(&input)?;
        let (_, conn) = self
            .shim(id)
            .stream(&Request::Exec {
                process: process_json,
                stdin: process.stdin,
                deadline_ms,
            })
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

    /// Sets the propagation of the container's binds and volumes, when one asks for more than `rprivate`
    /// (libcontainer mounts them without propagation; see [`spec::bind_propagations`]).
    async fn apply_propagation(&self, config: &ContainerConfig, pid: i32) -> Result<()> {
        let mounts = spec::bind_propagations(config);
        if mounts.is_empty() {
            return Ok(());
        }
        let pidfd = husk_container::fs_helper::pidfd(pid)?;
        let req = FsRequest {
            target: FsTarget::Process,
            op: FsOp::Propagation { mounts },
        };
        let output =
            husk_container::fs_helper::command(&self.sealed_exe.path(), &req, Some(&pidfd), false)?
                .output()
                .await
                .map_err(|e| Error::io("run the container-fs helper", e))?;
        if !output.status.success() {
            return Err(
                husk_container::container_fs::helper_error(&output.stderr, output.status)
                    .context("set the propagation of the container's mounts"),
            );
        }
        Ok(())
    }

    /// Where a helper finds the container's files: inside its init process's mount namespace when there is
    /// one (with a pidfd of it, confirmed by the shim after it was opened, so it cannot be another process that
    /// took the PID), else a view of the stopped container.
    async fn fs_target(&self, container: &ContainerRecord) -> Result<(FsTarget, Option<OwnedFd>)> {
        let id = container.id();
        let alive = |r: &husk_container::shim::Response| {
            matches!(
                r.status,
                Some(ShimStatus::Created | ShimStatus::Running | ShimStatus::Paused)
            )
        };
        if let Ok(r) = self.shim(id).call(&Request::State).await
            && alive(&r)
            && let Some(pid) = r.pid.filter(|p| *p > 0)
            && let Ok(pidfd) = husk_container::fs_helper::pidfd(pid)
            && let Ok(again) = self.shim(id).call(&Request::State).await
            && alive(&again)
            && again.pid == Some(pid)
        {
            return Ok((FsTarget::Process, Some(pidfd)));
        }
        let layers: RootfsLayers = serde_json::from_value(
            container.runtime.driver_data["rootfs"].clone(),
        )
        .map_err(|e| Error::internal(format!("the container's record lacks its layers: {e}")))?;
        let userns = ContainerUserns::of(container)?;
        self.ensure_rootfs(id, &layers, userns.as_ref())?;
        self.ensure_image_mounts(id, &container.config.mounts, userns.as_ref())?;
        let mut mounts = container.config.mounts.clone();
        self.image_mount_paths(id, &mut mounts)?;
        Ok((
            FsTarget::View {
                rootfs: self.rootfs(id),
                readonly_rootfs: container.config.security.readonly_rootfs,
                mounts,
            },
            None,
        ))
    }

    /// Starts a container-fs helper for `op` on `container`, its stdout piped.
    async fn fs_helper(
        &self,
        container: &ContainerRecord,
        op: FsOp,
    ) -> Result<tokio::process::Child> {
        let (target, pidfd) = self.fs_target(container).await?;
        husk_container::fs_helper::command(
            &self.sealed_exe.path(),
            &FsRequest { target, op },
            pidfd.as_ref(),
            false,
        )?
        .spawn()
        .map_err(|e| Error::io("start the container-fs helper", e))
    }

    /// Starts a container-fs helper for `op` on `container`, its stdin piped.
    async fn fs_helper_with_stdin(
        &self,
        container: &ContainerRecord,
        op: FsOp,
    ) -> Result<tokio::process::Child> {
        let (target, pidfd) = self.fs_target(container).await?;
        husk_container::fs_helper::command(
            &self.sealed_exe.path(),
            &FsRequest { target, op },
            pidfd.as_ref(),
            true,
        )?
        .spawn()
        .map_err(|e| Error::io("start the container-fs helper", e))
    }

    fn reap_pause_later(&self, sandbox_id: &str, pidfd: OwnedFd) {
        let pidfd = Arc::new(pidfd);
        self.pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sandbox_id.to_string(), pidfd.clone());
        // The pidfd turns readable when the process exits; reap it then.
        tokio::spawn(async move {
            // SAFETY: the Arc keeps the pidfd open and unchanged for as long as the AsyncFd exists.
            if let Ok(fd) = unsafe { tokio::io::unix::AsyncFd::register(pidfd.clone()) } {
                let _ = fd.readable().await;
            }
            namespaces::reap(&pidfd);
        });
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
        let run_dir = self.sandbox_run_dir(&config.id);
        let ns_dir = run_dir.join("ns");
        let result: Result<SandboxRuntime> = async {
            let share_pid = config.share_pid && !config.host_pid;
            let identity = self
                .make_identity(
                    &config.id,
                    &ns_dir,
                    &config.hostname,
                    &config.network,
                    config.host_ipc,
                    config.user_namespace.as_ref().map(|u| (u, share_pid)),
                )
                .await?;
            let pinned = identity.pinned;
            let userns_pause = identity.pause;
            let mut runtime = SandboxRuntime {
                namespaces: pinned
                    .iter()
                    .map(|(k, v)| (k.clone(), v.display().to_string()))
                    .collect(),
                network: Some(identity.status),
                ..Default::default()
            };
            let shm = run_dir.join("shm");
            mkdir(&shm)?;
            // In the host's IPC namespace the containers bind the host's /dev/shm instead.
            if !config.host_ipc {
                nix::mount::mount(
                    Some("shm"),
                    &shm,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some(
                        format!(
                            "mode=1777,size={}",
                            husk_container::spec::shm_size_bytes(&config.resources)
                        )
                        .as_str(),
                    ),
                )
                .map_err(|e| Error::backend(format!("mount the sandbox's /dev/shm: {e}")))?;
            }
            if let Some(pause) = userns_pause {
                // Made with the user namespace, as PID 1 of a PID namespace that belongs to it.
                runtime.pid = Some(pause.pid);
                self.reap_pause_later(&config.id, pause.pidfd);
            } else if share_pid {
                // A sandbox on the host's network pins no network namespace: the pause stays in the host's.
                let join: Vec<PathBuf> = ["net", "ipc", "uts"]
                    .iter()
                    .filter_map(|k| pinned.get(*k).cloned())
                    .collect();
                let pause =
                    namespaces::spawn_pause(&self.sealed_exe.path(), &join, &ns_dir.join("pid"))?;
                runtime.pid = Some(pause.pid);
                runtime
                    .namespaces
                    .insert("pid".into(), ns_dir.join("pid").display().to_string());
                self.reap_pause_later(&config.id, pause.pidfd);
            }
            Ok(runtime)
        }
        .await;
        if result.is_err() {
            let record = SandboxRecord {
                config: config.clone(),
                driver: self.name().into(),
                status: "error".into(),
                runtime: SandboxRuntime::default(),
                created_at: String::new(),
                owner_container: None,
                project: String::new(),
            };
            let _ = self.delete_sandbox(&record).await;
        }
        result
    }

    async fn delete_sandbox(&self, sandbox: &SandboxRecord) -> Result<()> {
        let id = &sandbox.config.id;
        let pause = self
            .pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match (pause, sandbox.runtime.pid) {
            (Some(pidfd), _) => {
                // SAFETY: pidfd_send_signal on a pidfd we own, null siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<u8>(),
                        0,
                    )
                };
            }
            (None, Some(pid)) if pid > 0 => {
                // Started by an earlier daemon: only signal it if it still holds this sandbox's PID namespace.
                let ours = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok();
                let pinned = std::fs::metadata(self.sandbox_run_dir(id).join("ns/pid")).ok();
                use std::os::unix::fs::MetadataExt;
                if let (Some(a), Some(b)) = (ours, pinned)
                    && a.ino() == b.ino()
                {
                    namespaces::signal_pid(pid, libc::SIGKILL);
                }
            }
            _ => {}
        }
        let run_dir = self.sandbox_run_dir(id);
        unmount(&run_dir.join("shm"))?;
        remove_dir(&self.sandbox_dir(id))?;
        self.finish_removal_later(id, None, run_dir.join("ns"), vec![run_dir]);
        Ok(())
    }

    async fn sandbox_alive(&self, sandbox: &SandboxRecord) -> Result<bool> {
        let ns = self.sandbox_run_dir(&sandbox.config.id).join("ns");
        Ok(
            (sandbox.config.host_ipc || namespaces::is_pinned(&ns.join("ipc")))
                && namespaces::is_pinned(&ns.join("uts")),
        )
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
                    Ok(ObservedState::Exited(ExitStatus {
                        code: 255,
                        finished_at: husk_core::now_rfc3339(),
                        reason:
                            "the container's monitor (shim) died without recording an exit status"
                                .into(),
                        ..Default::default()
                    }))
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
    }

    async fn remove_orphans(
        &self,
        sandboxes: &std::collections::HashSet<String>,
        containers: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let ids = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|e| {
                    e.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut orphan_containers: Vec<String> = ids(self.config.run_root.join("c"));
        orphan_containers.extend(ids(self.config.root.join("c")));
        orphan_containers.sort();
        orphan_containers.dedup();
        for id in orphan_containers
            .into_iter()
            .filter(|id| !containers.contains(id))
        {
            self.cleanup_container(&id, false).await?;
            removed.push(format!("container {id}"));
        }
        let mut orphan_sandboxes: Vec<String> = ids(self.config.run_root.join("s"));
        orphan_sandboxes.extend(ids(self.config.root.join("s")));
        orphan_sandboxes.sort();
        orphan_sandboxes.dedup();
        for id in orphan_sandboxes
            .into_iter()
            .filter(|id| !sandboxes.contains(id))
        {
            let record = SandboxRecord {
                config: SandboxConfig {
                    id: id.clone(),
                    ..Default::default()
                },
                driver: self.name().into(),
                status: "orphan".into(),
                runtime: SandboxRuntime::default(),
                created_at: String::new(),
                owner_container: None,
                project: String::new(),
            };
            self.delete_sandbox(&record).await?;
            removed.push(format!("sandbox {id}"));
        }
        // Every pool entry is left over from an earlier run here; then the pool fills for this one.
        let pool = self.pool.clone();
        let left = tokio::task::spawn_blocking(move || pool.remove_leftovers())
            .await
            .map_err(|e| Error::internal(format!("sandbox pool task: {e}")))??;
        removed.extend(left.into_iter().map(|id| format!("pool entry {id}")));
        self.refill_pool();
        Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_roots_are_told_from_plain_directories() {
        assert!(is_mountpoint(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mountpoint(dir.path()));
        let sub = dir.path().join("m");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mountpoint(&sub));
        if nix::unistd::geteuid().is_root() {
            nix::mount::mount(
                Some("tmpfs"),
                &sub,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            assert!(is_mountpoint(&sub));
            unmount(&sub).unwrap();
            assert!(!is_mountpoint(&sub));
        }
    }
}
