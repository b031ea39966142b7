//! `husk daemon`: configuration, the single-daemon-per-root lock, wiring drivers into the engine, recovery, and
//! serving the API until SIGTERM (containers keep running after the daemon exits).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use husk_core::{Driver, Mode};
use husk_engine::{Engine, EngineConfig};
use serde::Deserialize;

use crate::cli::args::DaemonArgs;

/// The daemon's settings: the config file's, overridden by flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// State directory.
    pub root: PathBuf,
    /// Runtime directory.
    pub run_root: PathBuf,
    /// API socket.
    pub socket: PathBuf,
    /// Default driver.
    pub driver: String,
    /// Drivers to run (the default one is always included).
    pub drivers: Vec<String>,
    /// Default mode.
    pub mode: String,
    /// Parent cgroup.
    pub cgroup_parent: String,
    /// Turn the kernel's cgroup `favordynmods` on (the `linux` driver's starts stop waiting for an RCU grace
    /// period when they move a process into its cgroup). Global to the host and kept after the daemon stops.
    pub cgroup_favordynmods: bool,
    /// How many network namespaces the `linux` driver keeps attached to the default network ahead of time, so
    /// a sandbox on that network without published ports starts without waiting for the CNI plugins (0: none).
    pub sandbox_pool: usize,
    /// Log level.
    pub log_level: String,
    /// Networking (CNI).
    pub network: NetworkSettings,
    /// The `docker` driver.
    pub docker: DockerSettings,
    /// The image store: limits, devices in layers, registries.
    pub images: ImageSettings,
    /// The `vm` driver.
    pub vm: VmSettings,
    /// TCP address of Zun's REST API (and its identity service), e.g. `127.0.0.1:9517`; off when empty.
    pub listen: String,
    /// How TCP callers authenticate: `keystone` (tokens from husk's identity service) or `none`.
    pub auth: String,
    /// The Kubernetes CRI socket (default: `cri.sock` in the run root, `/run/husk/cri.sock`); `""` turns the
    /// CRI off.
    pub cri_socket: Option<PathBuf>,
    /// `HOST:PORT` of the CRI's streaming server (Exec, Attach, PortForward URLs); default `127.0.0.1:0`,
    /// loopback on a free port.
    pub cri_stream_address: String,
    /// `[cri]`: the CRI's registry mirrors.
    pub cri: CriSettings,
    /// `[logs]`: how much of each container's output is kept when its request says nothing.
    pub logs: LogSettings,
}

/// `[logs]` in the config file: the defaults of `--log-opt max-size` and `max-file` (unbounded when unset).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// The size a container's log grows to before it is rotated (`10m`, `1g`, ...).
    pub max_size: Option<String>,
    /// How many files of a rotated log are kept (at least 1; 1 when only `max_size` is set).
    pub max_file: Option<u32>,
}

impl LogSettings {
    /// The limits these settings give, checked as `--log-opt` values are.
    pub fn limits(&self) -> Result<husk_core::LogLimits> {
        let mut opts = std::collections::BTreeMap::new();
        if let Some(size) = &self.max_size {
            opts.insert("max-size".to_string(), size.clone());
        }
        if let Some(files) = self.max_file {
            opts.insert("max-file".to_string(), files.to_string());
        }
        let limits = husk_core::LogLimits::from_opts(&opts)
            .map_err(|e| anyhow!("[logs] in the config file: {}", e.message))?;
        if limits.max_files.is_some() && limits.max_size_bytes.is_none() {
            bail!("[logs] in the config file: max_file needs max_size");
        }
        Ok(limits)
    }
}

/// `[cri]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriSettings {
    /// `[cri.registry]`.
    pub registry: CriRegistrySettings,
    /// `[cri.runtimes.NAME] driver = "vm"`: runtime handlers (a RuntimeClass's `handler`) and their drivers.
    pub runtimes: std::collections::BTreeMap<String, CriRuntime>,
}

/// One runtime handler.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriRuntime {
    /// The driver its pods run on: `linux`, `vm` or `docker`.
    pub driver: String,
}

/// `[cri.registry]`: where images of each registry are fetched from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriRegistrySettings {
    /// `[cri.registry.mirrors."registry.k8s.io"] endpoints = ["http://127.0.0.1:5000"]`: mirrors tried in order
    /// before the registry; images keep their upstream names.
    pub mirrors: std::collections::BTreeMap<String, MirrorEndpoints>,
}

/// One registry's mirrors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorEndpoints {
    /// `host[:port]` or `http(s)://host[:port]`, in order.
    pub endpoints: Vec<String>,
}

impl DaemonConfig {
    /// Where the CRI listens, if it does.
    pub fn cri_socket(&self) -> Option<PathBuf> {
        match &self.cri_socket {
            None => Some(self.run_root.join("cri.sock")),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
        }
    }
}

/// `[vm]` in the config file: the `vm` driver's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmSettings {
    /// `auto` (KVM when a vCPU really runs, else TCG), `kvm` or `tcg`.
    pub accel: String,
    /// QEMU machine type: `microvm` or `q35`.
    pub machine: String,
    /// Guest kernel (default: the newest `/boot/vmlinuz-*` with modules in `/lib/modules`).
    pub kernel: Option<PathBuf>,
    /// The static `husk-agent` binary (default: next to `husk`).
    pub agent: Option<PathBuf>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Where built guest images are cached (default: `<root>/vm/vm-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Seconds a VM may take to boot to its agent's first answer.
    pub boot_timeout: u64,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            accel: "auto".into(),
            machine: "microvm".into(),
            kernel: None,
            agent: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            cache_dir: None,
            boot_timeout: 120,
        }
    }
}

impl VmSettings {
    /// The driver's config for a daemon with `root` and `run_root`, `husk_binary` being this executable.
    pub fn to_config(
        &self,
        root: &Path,
        run_root: &Path,
        husk_binary: &Path,
    ) -> Result<husk_vm::VmDriverConfig> {
        let agent = self
            .agent
            .clone()
            .unwrap_or_else(|| husk_binary.with_file_name("husk-agent"));
        let mut c = husk_vm::VmDriverConfig::new(root.join("vm"), run_root, agent);
        c.accel = self
            .accel
            .parse()
            .map_err(|e: husk_core::Error| anyhow!("[vm] accel: {}", e.message))?;
        c.machine = match self.machine.as_str() {
            "microvm" => husk_vm::Machine::Microvm,
            "q35" => husk_vm::Machine::Q35,
            other => bail!("[vm] machine: unknown machine type {other:?}: use microvm or q35"),
        };
        c.kernel = self.kernel.clone();
        c.qemu = self.qemu.clone();
        if let Some(dir) = &self.cache_dir {
            c.cache_dir = dir.clone();
        }
        c.boot_timeout = Duration::from_secs(self.boot_timeout.max(1));
        Ok(c)
    }
}

/// `[images]` in the config file: the image store's settings (`husk_image::ImageConfig`), every key checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSettings {
    /// Create device nodes found in layers (off: a layer with a device node is refused).
    pub allow_devices: bool,
    /// `[images.limits]`: what one load or pull may write.
    pub limits: ImageLimits,
    /// `[images.registry]`: mirrors, insecure registries, credentials file, concurrency.
    pub registry: RegistrySettings,
}

/// `[images.limits]` (bytes and counts).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Most bytes of one layer's uncompressed content.
    pub max_layer_size: u64,
    /// Most uncompressed bytes of all layers of one image.
    pub max_image_size: u64,
    /// Most entries in one layer.
    pub max_layer_entries: u64,
    /// Most bytes of an archive given to `load`.
    pub max_archive_size: u64,
    /// Most bytes of a manifest, index or image config.
    pub max_json_size: u64,
}

/// `[images.registry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Docker Hub mirrors, tried in order (`host[:port]` or `https://host`).
    pub mirrors: Vec<String>,
    /// Registries reached over plain HTTP (`host[:port]`, `host`, or a CIDR); loopback always is.
    pub insecure_registries: Vec<String>,
    /// The credentials file `husk login` writes (default: `<root>/images/auth.json`).
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Layers uploaded at once per push.
    pub max_concurrent_uploads: usize,
    /// Times a broken layer download is resumed before the pull fails.
    pub download_retries: u32,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings::from(husk_image::ImageConfig::default())
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageSettings::default().limits
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        ImageSettings::default().registry
    }
}

impl From<husk_image::ImageConfig> for ImageSettings {
    fn from(c: husk_image::ImageConfig) -> Self {
        let (l, r) = (c.limits, c.registry);
        ImageSettings {
            allow_devices: c.allow_devices,
            limits: ImageLimits {
                max_layer_size: l.max_layer_size,
                max_image_size: l.max_image_size,
                max_layer_entries: l.max_layer_entries,
                max_archive_size: l.max_archive_size,
                max_json_size: l.max_json_size,
            },
            registry: RegistrySettings {
                mirrors: r.mirrors,
                insecure_registries: r.insecure_registries,
                auth_file: r.auth_file,
                max_concurrent_downloads: r.max_concurrent_downloads,
                max_concurrent_uploads: r.max_concurrent_uploads,
                download_retries: r.download_retries,
            },
        }
    }
}

impl ImageSettings {
    /// The image store's config.
    pub fn to_config(&self) -> husk_image::ImageConfig {
        let (l, r) = (&self.limits, &self.registry);
        husk_image::ImageConfig {
            allow_devices: self.allow_devices,
            limits: husk_image::Limits {
                max_layer_size: l.max_layer_size,
                max_image_size: l.max_image_size,
                max_layer_entries: l.max_layer_entries,
                max_archive_size: l.max_archive_size,
                max_json_size: l.max_json_size,
            },
            registry: husk_image::RegistryConfig {
                mirrors: r.mirrors.clone(),
                host_mirrors: Default::default(),
                insecure_registries: r.insecure_registries.clone(),
                auth_file: r.auth_file.clone(),
                max_concurrent_downloads: r.max_concurrent_downloads,
                max_concurrent_uploads: r.max_concurrent_uploads,
                download_retries: r.download_retries,
            },
        }
    }
}

/// `[network]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSettings {
    /// Directory of CNI configuration lists.
    pub cni_conf_dir: PathBuf,
    /// Directories of CNI plugins.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// Name of the default (bridge) network.
    pub default_network: String,
    /// Bridge of the default network.
    pub bridge: String,
    /// Subnet of the default network.
    pub subnet: String,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        let d = husk_net::CniConfig::with_root("/");
        NetworkSettings {
            cni_conf_dir: d.conf_dir,
            cni_plugin_dirs: d.plugin_dirs,
            default_network: d.default_network,
            bridge: d.default_bridge,
            subnet: d.default_subnet,
        }
    }
}

/// `[docker]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// The engine's address.
    pub host: String,
    /// This daemon's name on the engine (labels, object names).
    pub instance: String,
    /// The static `husk-pause` binary for infra containers (default: next to `husk`).
    pub pause_binary: Option<PathBuf>,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            host: husk_docker::DEFAULT_HOST.to_string(),
            instance: "husk".into(),
            pause_binary: None,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            root: PathBuf::from("/var/lib/husk"),
            run_root: PathBuf::from("/run/husk"),
            socket: PathBuf::from("/run/husk/husk.sock"),
            driver: "linux".into(),
            drivers: Vec::new(),
            mode: "sandbox".into(),
            cgroup_parent: "husk".into(),
            cgroup_favordynmods: true,
            sandbox_pool: 0,
            log_level: "info".into(),
            network: NetworkSettings::default(),
            docker: DockerSettings::default(),
            listen: String::new(),
            cri_socket: None,
            cri_stream_address: husk_cri::DEFAULT_STREAM_ADDRESS.into(),
            cri: CriSettings::default(),
            auth: "keystone".into(),
            images: ImageSettings::default(),
            vm: VmSettings::default(),
            logs: LogSettings::default(),
        }
    }
}

impl DaemonConfig {
    /// Reads the config file (a missing default file is fine) and applies the flags.
    pub fn load(args: &DaemonArgs) -> Result<DaemonConfig> {
        let mut config = match std::fs::read_to_string(&args.config) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", args.config.display()))?,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && args.config == Path::new("/etc/husk/husk.toml") =>
            {
                DaemonConfig::default()
            }
            Err(e) => {
                return Err(anyhow!(
                    "cannot read config file {}: {e}",
                    args.config.display()
                ));
            }
        };
        if let Some(v) = &args.root {
            config.root = v.clone();
        }
        if let Some(v) = &args.run_root {
            config.run_root = v.clone();
        }
        if let Some(v) = &args.socket {
            config.socket = v.clone();
        }
        if let Some(v) = &args.driver {
            config.driver = v.clone();
        }
        if let Some(v) = &args.mode {
            config.mode = v.clone();
        }
        if let Some(v) = &args.cgroup_parent {
            config.cgroup_parent = v.clone();
        }
        if let Some(v) = &args.log_level {
            config.log_level = v.clone();
        }
        if let Some(v) = &args.cni_conf_dir {
            config.network.cni_conf_dir = v.clone();
        }
        if let Some(v) = &args.bridge {
            config.network.bridge = v.clone();
        }
        if let Some(v) = &args.subnet {
            config.network.subnet = v.clone();
        }
        if let Some(v) = &args.default_network {
            config.network.default_network = v.clone();
        }
        if let Some(v) = &args.docker_host {
            config.docker.host = v.clone();
        }
        if let Some(v) = &args.docker_instance {
            config.docker.instance = v.clone();
        }
        if let Some(v) = &args.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &args.cri_socket {
            config.cri_socket = Some(v.clone());
        }
        if let Some(v) = &args.auth {
            config.auth = v.clone();
        }
        config.logs.limits()?;
        if !config.drivers.contains(&config.driver) {
            config.drivers.insert(0, config.driver.clone());
        }
        for (name, runtime) in &config.cri.runtimes {
            if name.is_empty() {
                bail!(
                    "[cri.runtimes.\"\"]: the empty handler is the default driver's (set `driver`)"
                );
            }
            if !config.drivers.contains(&runtime.driver) {
                bail!(
                    "[cri.runtimes.{name}] driver = {:?}: this daemon runs {} (add it to `drivers`)",
                    runtime.driver,
                    config.drivers.join(", ")
                );
            }
        }
        Ok(config)
    }
}

/// Holds `root/husk.lock` for the daemon's lifetime so a second daemon on the same root refuses to start.
fn lock_root(root: &Path) -> Result<File> {
    let path = root.join("husk.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another husk daemon (pid {}) is already using {}",
            holder.trim(),
            root.display()
        );
    }
    file.set_len(0)?;
    std::io::Write::write_all(&mut &file, std::process::id().to_string().as_bytes())?;
    Ok(file)
}

/// The docker driver's source of images: husk's own store, exported as a `docker save` archive.
struct StoreImages(Arc<husk_image::ImageStore>);

#[async_trait::async_trait]
impl husk_docker::ImageSource for StoreImages {
    async fn export(
        &self,
        image: &husk_core::ImageRef,
    ) -> husk_core::Result<husk_docker::ImageArchive> {
        let (reader, writer) = tokio::io::duplex(256 * 1024);
        let store = self.0.clone();
        let reference = image.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.save(&[reference], writer).await {
                tracing::warn!("export an image for the docker engine: {e}");
            }
        });
        Ok(Box::pin(reader))
    }
}

async fn make_drivers(
    config: &DaemonConfig,
    networks: &Arc<husk_net::Networks>,
    images: &Arc<husk_image::ImageStore>,
) -> Result<Vec<Arc<dyn Driver>>> {
    let husk_binary = std::env::current_exe().context("find the husk binary")?;
    let mut drivers: Vec<Arc<dyn Driver>> = Vec::new();
    for name in &config.drivers {
        match name.as_str() {
            "linux" => {
                let driver = husk_linux::LinuxDriver::new(husk_linux::LinuxDriverConfig {
                    root: config.root.join("linux"),
                    run_root: config.run_root.clone(),
                    husk_binary: husk_binary.clone(),
                    cgroup_parent: config.cgroup_parent.clone(),
                    networks: networks.clone(),
                    favor_dynamic_cgroup_changes: config.cgroup_favordynmods,
                    sandbox_pool: config.sandbox_pool,
                })?;
                drivers.push(Arc::new(driver));
            }
            "docker" => {
                let pause = config
                    .docker
                    .pause_binary
                    .clone()
                    .unwrap_or_else(|| husk_binary.with_file_name("husk-pause"));
                let mut docker = husk_docker::DockerDriverConfig::new(
                    config.docker.host.clone(),
                    config.docker.instance.clone(),
                    pause,
                    Arc::new(StoreImages(images.clone())),
                );
                docker.state_dir = Some(config.root.join("docker"));
                let driver = husk_docker::DockerDriver::connect(docker).await?;
                drivers.push(Arc::new(driver));
            }
            "vm" => {
                let mut vm = config
                    .vm
                    .to_config(&config.root, &config.run_root, &husk_binary)?;
                vm.networks = Some(networks.clone());
                let driver = tokio::task::spawn_blocking(move || husk_vm::VmDriver::new(vm))
                    .await
                    .map_err(|e| anyhow!("vm driver setup task: {e}"))??;
                tracing::info!(accelerator = %driver.accel().accel.as_str(), reason = %driver.accel().reason, "vm driver ready");
                drivers.push(Arc::new(driver));
            }
            other => bail!("unknown driver {other:?}: this husk has linux, docker and vm"),
        }
    }
    Ok(drivers)
}

/// `husk vm build-guest`: builds (or finds in the cache) the guest image the `vm` driver of a daemon with these
/// settings boots, and prints it.
pub fn build_guest(args: &crate::cli::args::VmBuildArgs) -> Result<()> {
    let daemon_args = DaemonArgs {
        root: args.root.clone(),
        config: args.config.clone(),
        ..Default::default()
    };
    let config = DaemonConfig::load(&daemon_args)?;
    let husk_binary = std::env::current_exe().context("find the husk binary")?;
    let vm = config
        .vm
        .to_config(&config.root, &config.run_root, &husk_binary)?;
    let driver = husk_vm::VmDriver::new(vm)?;
    let image = driver.guest_image()?;
    println!(
        "accelerator: {} ({})",
        driver.accel().accel.as_str(),
        driver.accel().reason
    );
    println!(
        "kernel: {} ({})",
        image.kernel.display(),
        image.kernel_release
    );
    println!("initramfs: {}", image.initramfs.display());
    println!("modules: {}", image.modules.len());
    Ok(())
}

/// The file bind-mounted read-only as a container's `/sbin/husk-init` for `--init`: a copy, made at every start
/// under the daemon's root, of the small static `husk-pause` beside this binary (it acts as the init when started
/// under that name), or of this binary when there is none (it too is static and runs in any image). Never the
/// installed file itself: a container must not hold a descriptor to a binary the host runs as root
/// (docs/security.md). `None` (with a warning) when the copy cannot be made: `--init` is then refused.
async fn prepare_init_binary(root: &Path) -> Option<PathBuf> {
    let husk = std::env::current_exe().ok()?;
    let pause = husk.with_file_name("husk-pause");
    let source = if pause.is_file() { pause } else { husk };
    let dir = root.join("init");
    let made = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(&dir)?;
        let target = dir.join("husk-init");
        let partial = dir.join(".husk-init.partial");
        let _ = std::fs::remove_file(&partial);
        std::fs::copy(&source, &partial)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))?;
        // A new file, never rewritten in place: running containers keep the copy they were started with.
        std::fs::rename(&partial, &target)?;
        Ok(target)
    })
    .await;
    match made {
        Ok(Ok(path)) => Some(path),
        Ok(Err(e)) => {
            tracing::warn!("no init binary for --init: {e}");
            None
        }
        Err(e) => {
            tracing::warn!("no init binary for --init: {e}");
            None
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(args: DaemonArgs) -> Result<i32> {
    let config = DaemonConfig::load(&args)?;
    let mode: Mode = config
        .mode
        .parse()
        .map_err(|e: husk_core::Error| anyhow!(e.message))?;
    if !nix::unistd::geteuid().is_root() {
        bail!("husk daemon must run as root");
    }
    for dir in [&config.root, &config.run_root] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let _lock = lock_root(&config.root)?;
    if tokio::net::UnixStream::connect(&config.socket)
        .await
        .is_ok()
    {
        bail!(
            "another husk daemon is already listening on {}",
            config.socket.display()
        );
    }
    let store = Arc::new(husk_store::Store::open(&config.root.join("husk.db"))?);
    let mut image_config = config.images.to_config();
    image_config.registry.host_mirrors = config
        .cri
        .registry
        .mirrors
        .iter()
        .map(|(host, m)| (host.clone(), m.endpoints.clone()))
        .collect();
    let images = Arc::new(husk_image::ImageStore::open(
        config.root.join("images"),
        store.clone(),
        image_config,
    )?);
    let mut cni = husk_net::CniConfig::with_root(&config.root);
    cni.conf_dir = config.network.cni_conf_dir.clone();
    cni.plugin_dirs = config.network.cni_plugin_dirs.clone();
    cni.default_network = config.network.default_network.clone();
    cni.default_bridge = config.network.bridge.clone();
    cni.default_subnet = config.network.subnet.clone();
    let networks =
        Arc::new(tokio::task::spawn_blocking(move || husk_net::Networks::open(cni)).await??);
    let drivers = make_drivers(&config, &networks, &images).await?;
    let engine = Engine::new(
        EngineConfig {
            default_driver: config.driver.clone(),
            default_mode: mode,
            root: config.root.clone(),
            run_root: config.run_root.clone(),
            init_binary: prepare_init_binary(&config.root).await,
            log_defaults: config.logs.limits()?,
        },
        store,
        images,
        networks,
        drivers,
    )?;
    engine.recover().await?;
    engine.follow_backend_changes();
    tracing::info!(socket = %config.socket.display(), driver = %config.driver, mode = %mode, "husk daemon ready");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        tokio::select! {
            _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
        }
        let _ = stop_tx.send(());
    });
    // The unix socket carries husk's own API (/husk/v1) and Zun's (/, /v1) for local root; a TCP listener, when
    // configured, carries Zun's API and the identity service with the configured authentication.
    let (stop_all, stopped) = tokio::sync::watch::channel(false);
    let wait_stop = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let tcp = match config.listen.as_str() {
        "" => None,
        addr => {
            let addr: std::net::SocketAddr = addr
                .parse()
                .map_err(|e| anyhow!("invalid listen address {addr:?}: {e} (use IP:PORT)"))?;
            let auth: husk_api::zun::AuthMode = config
                .auth
                .parse()
                .map_err(|e: husk_core::Error| anyhow!(e.message))?;
            let router = husk_api::tcp_router(engine.clone(), auth);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            tracing::info!(%addr, auth = %config.auth, "Zun API listening");
            let shutdown = wait_stop();
            Some(tokio::spawn(async move {
                husk_api::serve_tcp_listener(listener, router, shutdown).await
            }))
        }
    };
    let cri = match config.cri_socket() {
        None => None,
        Some(socket) => {
            let shutdown = wait_stop();
            let engine = engine.clone();
            tracing::info!(socket = %socket.display(), "CRI listening");
            let options = husk_cri::CriOptions {
                socket: socket.clone(),
                stream_address: config.cri_stream_address.clone(),
                handlers: config
                    .cri
                    .runtimes
                    .iter()
                    .map(|(name, r)| (name.clone(), r.driver.clone()))
                    .collect(),
            };
            Some(tokio::spawn(async move {
                if let Err(e) = husk_cri::serve(engine, &options, shutdown).await {
                    tracing::error!("{}", e.message);
                }
                let _ = std::fs::remove_file(&socket);
            }))
        }
    };
    let router = husk_api::unix_router(engine.clone());
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stop_rx.await;
        tracing::info!("shutting down; containers keep running");
        let _ = stop_all.send(true);
        let _ = drained_tx.send(());
    };
    let socket = config.socket.clone();
    let server = tokio::spawn(async move { husk_api::serve_unix(&socket, router, shutdown).await });
    // Give open streams (attach, logs -f) a moment after the signal, then leave.
    tokio::select! {
        r = server => { r.map_err(|e| anyhow!("API server task: {e}"))??; }
        _ = async { let _ = drained_rx.await; tokio::time::sleep(Duration::from_secs(2)).await; } => {}
    }
    if let Some(t) = tcp {
        t.abort();
    }
    if let Some(c) = cri {
        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
    }
    let _ = std::fs::remove_file(&config.socket);
    engine.shutdown().await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_section_reaches_the_image_store() {
        let text = r#"
[images]
allow_devices = true
[images.limits]
max_layer_size = 1048576
[images.registry]
mirrors = ["mirror.example:5000"]
insecure_registries = ["10.0.0.0/8"]
max_concurrent_downloads = 2
"#;
        let config: DaemonConfig = toml::from_str(text).unwrap();
        let c = config.images.to_config();
        assert!(c.allow_devices);
        assert_eq!(c.limits.max_layer_size, 1 << 20);
        let defaults = husk_image::ImageConfig::default();
        assert_eq!(
            c.limits.max_image_size, defaults.limits.max_image_size,
            "unset keys keep their defaults"
        );
        assert_eq!(c.registry.mirrors, ["mirror.example:5000"]);
        assert_eq!(c.registry.insecure_registries, ["10.0.0.0/8"]);
        assert_eq!(c.registry.max_concurrent_downloads, 2);
        assert_eq!(
            c.registry.download_retries,
            defaults.registry.download_retries
        );
        assert_eq!(DaemonConfig::default().images.to_config(), defaults);
    }

    #[test]
    fn logs_section_gives_the_default_log_limits() {
        let config: DaemonConfig =
            toml::from_str("[logs]\nmax_size = \"10m\"\nmax_file = 3\n").unwrap();
        let limits = config.logs.limits().unwrap();
        assert_eq!(limits.max_size_bytes, Some(10 << 20));
        assert_eq!(limits.max_files, Some(3));
        assert!(
            DaemonConfig::default()
                .logs
                .limits()
                .unwrap()
                .is_unbounded()
        );
        for (text, words) in [
            ("[logs]\nmax_size = \"0\"\n", "max-size"),
            ("[logs]\nmax_file = 0\nmax_size = \"1m\"\n", "max-file"),
            ("[logs]\nmax_file = 2\n", "max_file needs max_size"),
        ] {
            let config: DaemonConfig = toml::from_str(text).unwrap();
            let e = config.logs.limits().unwrap_err().to_string();
            assert!(e.contains("[logs]") && e.contains(words), "{text}: {e}");
        }
        assert!(toml::from_str::<DaemonConfig>("[logs]\nmax_files = 2\n").is_err());
    }

    #[test]
    fn vm_section_reaches_the_vm_driver() {
        let text =
            "[vm]\naccel = \"tcg\"\nmachine = \"q35\"\ncache_dir = \"/c\"\nboot_timeout = 7\n";
        let config: DaemonConfig = toml::from_str(text).unwrap();
        let c = config
            .vm
            .to_config(Path::new("/r"), Path::new("/run/x"), Path::new("/bin/husk"))
            .unwrap();
        assert_eq!(c.accel, husk_vm::AccelChoice::Tcg);
        assert_eq!(c.machine, husk_vm::Machine::Q35);
        assert_eq!(c.cache_dir, Path::new("/c"));
        assert_eq!(
            c.agent,
            Path::new("/bin/husk-agent"),
            "the agent is next to husk"
        );
        assert_eq!(c.root, Path::new("/r/vm"));
        assert_eq!(c.boot_timeout, Duration::from_secs(7));
        let bad: DaemonConfig = toml::from_str("[vm]\naccel = \"fast\"\n").unwrap();
        let e = bad
            .vm
            .to_config(Path::new("/r"), Path::new("/run/x"), Path::new("/bin/husk"))
            .unwrap_err();
        assert!(e.to_string().contains("auto, kvm or tcg"), "{e}");
        assert!(toml::from_str::<DaemonConfig>("[vm]\nacel = \"tcg\"\n").is_err());
    }

    #[test]
    fn unknown_image_keys_are_refused() {
        for text in [
            "[images]\nallow_device = true\n",
            "[images.limits]\nmax_layer = 1\n",
            "[images.registry]\nmirror = []\n",
        ] {
            let e = toml::from_str::<DaemonConfig>(text).unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{text}: {e}");
        }
    }
}
