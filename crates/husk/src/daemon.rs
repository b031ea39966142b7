//! `husk daemon`: the single-daemon-per-root lock, wiring drivers into the engine, recovery, and
//! serving the API until SIGTERM (containers keep running after the daemon exits).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use husk_core::{Driver, Mode};
use husk_engine::{Engine, EngineConfig};

use crate::cli::args::DaemonArgs;
use crate::config::DaemonConfig;
use crate::systemd::Activation;

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

/// Runs the daemon until SIGTERM or SIGINT, on the API socket systemd passed in `activation` if it did, and
/// telling systemd when it is ready and when it stops if it asked to be told.
pub async fn run(args: DaemonArgs, activation: Activation) -> Result<i32> {
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
    // A socket systemd passed answers to us; one we are to bind must not answer anyone yet.
    if activation.listener.is_none()
        && tokio::net::UnixStream::connect(&config.socket)
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
    cni.builtin_bridge = config.network.builtin_bridge;
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
            log_defaults: config
                .logs
                .limits()
                .map_err(|(key, reason)| anyhow!("{key}: {reason}"))?,
            token_lifetime: config
                .token_lifetime()
                .map_err(|e| anyhow!("{}: {}", e.key, e.reason))?,
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
    let metrics = match config.metrics_listen.as_str() {
        "" => None,
        addr => Some(serve_metrics(addr, engine.clone(), wait_stop()).await?),
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
    let notifier = activation.notifier.map(Arc::new);
    let stopping = notifier.clone();
    let shutdown = async move {
        let _ = stop_rx.await;
        tracing::info!("shutting down; containers keep running");
        if let Some(n) = &stopping {
            let _ = n.notify("STOPPING=1");
        }
        let _ = stop_all.send(true);
        let _ = drained_tx.send(());
    };
    // The socket systemd passed (husk.socket), else our own at `socket`, which we then remove at the end.
    let (listener, socket, own_socket) = match activation.listener {
        Some(passed) => {
            passed.set_nonblocking(true)?;
            let path = passed
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
            tracing::info!(socket = ?path, "serving the API on the socket systemd passed");
            (tokio::net::UnixListener::from_std(passed)?, path, false)
        }
        None => (
            husk_api::bind_unix(&config.socket)?,
            Some(config.socket.clone()),
            true,
        ),
    };
    if let (Some(path), Some(gid)) = (
        &socket,
        config
            .socket_gid()
            .map_err(|e| anyhow!("{}: {}", e.key, e.reason))?,
    ) {
        // Its members may use the API (the mode stays 0660).
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .map_err(|e| anyhow!("give the API socket {} to group {gid}: {e}", path.display()))?;
    }
    let server =
        tokio::spawn(
            async move { husk_api::serve_unix_listener(listener, router, shutdown).await },
        );
    if let Some(n) = &notifier {
        match &socket {
            Some(path) if !answers(path, Duration::from_secs(30)).await => {
                tracing::warn!(socket = %path.display(), "the API socket does not answer: not telling systemd we are ready");
            }
            _ => {
                let status = format!(
                    "READY=1\nSTATUS=serving on {}",
                    socket
                        .as_deref()
                        .unwrap_or(Path::new("the socket systemd passed"))
                        .display()
                );
                if let Err(e) = n.notify(&status) {
                    tracing::warn!("tell systemd we are ready: {e}");
                }
            }
        }
    }
    // Give open streams (attach, logs -f) a moment after the signal, then leave.
    tokio::select! {
        r = server => { r.map_err(|e| anyhow!("API server task: {e}"))??; }
        _ = async { let _ = drained_rx.await; tokio::time::sleep(Duration::from_secs(2)).await; } => {}
    }
    if let Some(t) = tcp {
        t.abort();
    }
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(c) = cri {
        let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
    }
    if own_socket {
        let _ = std::fs::remove_file(&config.socket);
    }
    engine.shutdown().await;
    Ok(0)
}

/// Binds `addr` and serves the Prometheus metrics there (`GET /metrics`) until `shutdown`, in a task.
async fn serve_metrics(
    addr: &str,
    engine: Engine,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<husk_core::Result<()>>> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| anyhow!("invalid metrics_listen address {addr:?}: {e} (use IP:PORT)"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics_listen: listen on {addr}"))?;
    tracing::info!(%addr, "Prometheus metrics at /metrics");
    let router = husk_api::metrics::router(engine);
    Ok(tokio::spawn(async move {
        husk_api::serve_tcp_listener(listener, router, shutdown).await
    }))
}

/// Whether husk's API answers on the unix socket at `path` within `patience` (asked as the CLI asks).
async fn answers(path: &Path, patience: Duration) -> bool {
    let Ok(client) = crate::client::Client::new(&format!("unix://{}", path.display())) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if let Ok(status) = client.status(http::Method::GET, "/husk/v1/version").await
            && status.is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
