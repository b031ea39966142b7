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
    /// Log level.
    pub log_level: String,
    /// Networking (CNI).
    pub network: NetworkSettings,
    /// The `docker` driver.
    pub docker: DockerSettings,
    /// TCP address of Zun's REST API (and its identity service), e.g. `127.0.0.1:9517`; off when empty.
    pub listen: String,
    /// How TCP callers authenticate: `keystone` (tokens from husk's identity service) or `none`.
    pub auth: String,
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
        DockerSettings { host: husk_docker::DEFAULT_HOST.to_string(), instance: "husk".into(), pause_binary: None }
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
            log_level: "info".into(),
            network: NetworkSettings::default(),
            docker: DockerSettings::default(),
            listen: String::new(),
            auth: "keystone".into(),
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
        if let Some(v) = &args.auth {
            config.auth = v.clone();
        }
        if !config.drivers.contains(&config.driver) {
            config.drivers.insert(0, config.driver.clone());
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
    async fn export(&self, image: &husk_core::ImageRef) -> husk_core::Result<husk_docker::ImageArchive> {
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
                })?;
                drivers.push(Arc::new(driver));
            }
            "docker" => {
                let pause = config.docker.pause_binary.clone().unwrap_or_else(|| husk_binary.with_file_name("husk-pause"));
                let driver = husk_docker::DockerDriver::connect(husk_docker::DockerDriverConfig::new(
                    config.docker.host.clone(),
                    config.docker.instance.clone(),
                    pause,
                    Arc::new(StoreImages(images.clone())),
                ))
                .await?;
                drivers.push(Arc::new(driver));
            }
            other => bail!("unknown driver {other:?}: this husk has linux and docker"),
        }
    }
    Ok(drivers)
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
    let images = Arc::new(husk_image::ImageStore::open(
        config.root.join("images"),
        store.clone(),
        husk_image::ImageConfig::default(),
    )?);
    let mut cni = husk_net::CniConfig::with_root(&config.root);
    cni.conf_dir = config.network.cni_conf_dir.clone();
    cni.plugin_dirs = config.network.cni_plugin_dirs.clone();
    cni.default_network = config.network.default_network.clone();
    cni.default_bridge = config.network.bridge.clone();
    cni.default_subnet = config.network.subnet.clone();
    let networks = Arc::new(tokio::task::spawn_blocking(move || husk_net::Networks::open(cni)).await??);
    let drivers = make_drivers(&config, &networks, &images).await?;
    let engine = Engine::new(
        EngineConfig {
            default_driver: config.driver.clone(),
            default_mode: mode,
            root: config.root.clone(),
            run_root: config.run_root.clone(),
        },
        store,
        images,
        networks,
        drivers,
    )?;
    engine.recover().await?;
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
            let auth: husk_api::zun::AuthMode =
                config.auth.parse().map_err(|e: husk_core::Error| anyhow!(e.message))?;
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
    let router = husk_api::unix_router(engine);
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
    let _ = std::fs::remove_file(&config.socket);
    Ok(0)
}
