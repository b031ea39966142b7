//! Test fixture: a real dockerd, a test image, drivers with their own instance names, and cleanup guards.
//!
//! The engine: `HUSK_TEST_DOCKER_HOST` if set (CI may start one with `scripts/test-dockerd start DIR` for all test
//! binaries), otherwise one private dockerd per test process, started by `scripts/test-dockerd` on first use and
//! stopped (with its bridge, cgroups and directory) when the process exits. The process makes itself a child
//! subreaper first, so the engine's orphaned shims are reaped here rather than piling up as zombies under the
//! host's PID 1 (which does not reap on this machine).
//!
//! Each test gets a driver with its own instance name, so tests sharing one engine never see each other's
//! objects, and a guard that force-removes every engine container of that instance when the test ends, passed
//! or failed.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use husk_core::stdio::{BoxStdio, Frame, read_frame};
use husk_core::{
    ContainerConfig, ContainerRecord, ContainerRuntime, ContainerStatus, Error, ImageRef, Mode,
    ProcessConfig, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxRuntime,
    SandboxStatus, SecurityConfig,
};
use husk_docker::{DockerDriver, DockerDriverConfig, ImageArchive, ImageSource};

/// The engine the tests use.
pub struct Engine {
    /// `unix:///.../docker.sock`.
    pub host: String,
    /// The test image.
    pub busybox: ImageRef,
    /// Its `docker save` archive.
    pub busybox_tar: PathBuf,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();
static PRIVATE_DIR: OnceLock<PathBuf> = OnceLock::new();
static IMAGE_DIR: OnceLock<PathBuf> = OnceLock::new();

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-dockerd")
}

extern "C" fn at_exit() {
    if let Some(dir) = IMAGE_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
    let Some(dir) = PRIVATE_DIR.get() else { return };
    let _ = Command::new(script()).arg("stop").arg(dir).status();
    // Reap what was re-parented to us (the engine, its containerd, shims).
    // SAFETY: waitpid with WNOHANG on any child; the process is exiting and no one else waits for these.
    while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
}

/// Whether a process runs (zombies do not).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state.is_some_and(|s| s != 'Z')
}

/// Stops engines and removes image dirs left by test processes that were killed before their exit handler ran
/// (a timeout, SIGKILL): each engine dir names its owner process, each image dir is named after it.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner_file = entry.path().join("owner");
        if name.starts_with("hdk-") && owner_file.exists() {
            let owner = std::fs::read_to_string(&owner_file)
                .ok()
                .and_then(|o| o.trim().parse::<u32>().ok());
            if owner.is_some_and(|pid| !running(pid)) {
                let _ = Command::new(script())
                    .arg("stop")
                    .arg(entry.path())
                    .status();
            }
        } else if let Some(pid) = name
            .strip_prefix("hdk-image-")
            .and_then(|p| p.parse::<u32>().ok())
            && !running(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start_private_engine() -> String {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only changes who inherits our orphaned descendants.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    sweep_leftovers();
    let dir = PathBuf::from(format!("/tmp/hdk-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("engine dir");
    std::fs::write(dir.join("owner"), std::process::id().to_string())
        .expect("write the engine's owner");
    let out = Command::new(script())
        .arg("start")
        .arg(&dir)
        .output()
        .expect("run scripts/test-dockerd");
    assert!(
        out.status.success(),
        "scripts/test-dockerd start failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = PRIVATE_DIR.set(dir);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn make_busybox(dir: &Path) -> (ImageRef, PathBuf) {
    let tar = dir.join("busybox.tar");
    let name = "husk.local/busybox-test:latest";
    let out = Command::new(workspace_root().join("scripts/make-busybox-image"))
        .arg(&tar)
        .arg(name)
        .output()
        .expect("run scripts/make-busybox-image");
    assert!(
        out.status.success(),
        "make-busybox-image failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .split_whitespace()
        .nth(1)
        .expect("make-busybox-image prints NAME ID")
        .to_string();
    (
        ImageRef {
            name: name.to_string(),
            id,
        },
        tar,
    )
}

/// The shared engine, started on first use.
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(|| {
        let host = std::env::var("HUSK_TEST_DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(start_private_engine);
        let image_dir = std::env::temp_dir().join(format!("hdk-image-{}", std::process::id()));
        std::fs::create_dir_all(&image_dir).expect("image dir");
        let _ = IMAGE_DIR.set(image_dir.clone());
        // SAFETY: registers a plain extern "C" function to run at exit.
        unsafe { libc::atexit(at_exit) };
        let (busybox, busybox_tar) = make_busybox(&image_dir);
        Engine {
            host,
            busybox,
            busybox_tar,
        }
    })
}

/// The static pause binary: `HUSK_PAUSE_BINARY`, or this crate's `pause` example built next to the tests.
pub fn pause_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HUSK_PAUSE_BINARY") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<triple>/<profile>/deps/<test> -> target/<triple>/<profile>/examples/pause
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let pause = profile_dir.join("examples/pause");
    assert!(
        pause.exists(),
        "{} is missing: build it with `cargo build -p husk-docker --examples`",
        pause.display()
    );
    pause
}

/// husk's image store for the tests: `docker save` archives on disk, counting exports.
#[derive(Default)]
pub struct TarImages {
    pub tars: HashMap<String, PathBuf>,
    pub exports: AtomicUsize,
}

#[async_trait]
impl ImageSource for TarImages {
    async fn export(&self, image: &ImageRef) -> Result<ImageArchive> {
        let path = self
            .tars
            .get(&image.id)
            .ok_or_else(|| Error::not_found(format!("image {}", image.id)))?;
        self.exports.fetch_add(1, Ordering::SeqCst);
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        Ok(Box::pin(file))
    }
}

/// Force-removes every engine container of an instance when dropped.
pub struct Cleanup {
    host: String,
    instance: String,
}

/// Every engine container (any state) labelled with `instance`.
pub async fn engine_containers(docker: &Docker, instance: &str) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("io.husk.instance={instance}")],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (host, instance) = (self.host.clone(), self.instance.clone());
        // Drop cannot await: a thread of its own with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let docker = raw_client(&host);
                for id in engine_containers(&docker, &instance).await {
                    let options = RemoveContainerOptions {
                        force: true,
                        v: true,
                        link: false,
                    };
                    let _ = docker.remove_container(&id, Some(options)).await;
                }
            });
        })
        .join();
    }
}

/// A plain bollard client for the test's own checks (at the engine's API version).
pub fn raw_client(host: &str) -> Docker {
    let path = host.strip_prefix("unix://").expect("unix host");
    Docker::connect_with_unix(
        path,
        120,
        &bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .expect("client")
}

/// A test's driver and its context.
pub struct Harness {
    pub driver: Arc<DockerDriver>,
    pub images: Arc<TarImages>,
    pub instance: String,
    pub docker: Docker,
    pub busybox: ImageRef,
    _cleanup: Cleanup,
}

/// A driver with an instance name of its own (`t<tag><random>`).
pub async fn harness(tag: &str) -> Harness {
    let engine = engine();
    let instance = format!("t{tag}{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut images = TarImages::default();
    images
        .tars
        .insert(engine.busybox.id.clone(), engine.busybox_tar.clone());
    let images = Arc::new(images);
    let config = DockerDriverConfig::new(&engine.host, &instance, pause_binary(), images.clone());
    let driver = DockerDriver::connect(config)
        .await
        .expect("connect to the test engine");
    Harness {
        driver: Arc::new(driver),
        images,
        instance: instance.clone(),
        docker: raw_client(&engine.host),
        busybox: engine.busybox.clone(),
        _cleanup: Cleanup {
            host: engine.host.clone(),
            instance,
        },
    }
}

impl Harness {
    /// A sandbox config with a random-suffixed name.
    pub fn sandbox_config(&self, name: &str, share_pid: bool) -> SandboxConfig {
        SandboxConfig {
            id: husk_core::new_id(),
            name: format!("{name}-{:04x}", rand::random::<u16>()),
            hostname: format!("{name}-host"),
            share_pid,
            ..Default::default()
        }
    }

    /// A container config running `args` in the test image.
    pub fn container_config(&self, name: &str, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: husk_core::new_id(),
            name: format!("{name}-{:04x}", rand::random::<u16>()),
            image: self.busybox.clone(),
            process: ProcessConfig {
                args: args.iter().map(|a| a.to_string()).collect(),
                env: vec!["PATH=/bin".to_string()],
                cwd: "/".to_string(),
                ..Default::default()
            },
            hostname: format!("{name}-host"),
            resources: Default::default(),
            security: SecurityConfig {
                no_new_privileges: true,
                ..Default::default()
            },
            mounts: vec![],
            network: Default::default(),
            labels: BTreeMap::new(),
            stop_signal: None,
            stop_timeout: None,
            ..Default::default()
        }
    }

    /// Creates a sandbox and returns its record.
    pub async fn sandbox(&self, config: SandboxConfig) -> SandboxRecord {
        use husk_core::Driver;
        let runtime = self
            .driver
            .create_sandbox(&config)
            .await
            .expect("create sandbox");
        sandbox_record(config, runtime)
    }

    /// Creates a container (in `sandbox` if given) and returns its record.
    pub async fn create(
        &self,
        config: ContainerConfig,
        sandbox: Option<&SandboxRecord>,
    ) -> ContainerRecord {
        use husk_core::Driver;
        let rootfs = RootfsLayers {
            image_id: config.image.id.clone(),
            image_name: config.image.name.clone(),
            layers: vec![],
        };
        let runtime = self
            .driver
            .create_container(&config, sandbox, &rootfs)
            .await
            .expect("create container");
        container_record(config, sandbox.map(|s| s.config.id.clone()), runtime)
    }

    /// Creates and starts a container; the record carries the PID.
    pub async fn run(
        &self,
        config: ContainerConfig,
        sandbox: Option<&SandboxRecord>,
    ) -> ContainerRecord {
        use husk_core::Driver;
        let mut record = self.create(config, sandbox).await;
        record.runtime = self
            .driver
            .start_container(&record, sandbox)
            .await
            .expect("start container");
        record.status = ContainerStatus::Running;
        record
    }

    /// Engine containers of this test's instance.
    pub async fn leftovers(&self) -> Vec<String> {
        engine_containers(&self.docker, &self.instance).await
    }
}

pub fn sandbox_record(config: SandboxConfig, runtime: SandboxRuntime) -> SandboxRecord {
    SandboxRecord {
        config,
        driver: "docker".into(),
        status: SandboxStatus::Ready,
        runtime,
        created_at: husk_core::Timestamp::now(),
        owner_container: None,
        project: String::new(),
    }
}

pub fn container_record(
    config: ContainerConfig,
    sandbox_id: Option<String>,
    runtime: ContainerRuntime,
) -> ContainerRecord {
    ContainerRecord {
        config,
        driver: "docker".into(),
        mode: if sandbox_id.is_some() {
            Mode::Sandbox
        } else {
            Mode::Standalone
        },
        sandbox_id,
        restart_policy: Default::default(),
        auto_remove: false,
        status: ContainerStatus::Created,
        runtime,
        exit: None,
        restart_count: 0,
        stopped_by_user: false,
        created_at: husk_core::Timestamp::now(),
        started_at: None,
        error: String::new(),
        project: String::new(),
        ..Default::default()
    }
}

/// The namespace a process is in (`net:[4026532000]`).
pub fn namespace(pid: i32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/ns/{kind}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// What a finished stdio stream carried.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub exit: Option<i32>,
    pub error: Option<String>,
}

/// Reads frames until the stream ends (with a deadline).
pub async fn collect(mut stdio: BoxStdio) -> Output {
    let read = async {
        let mut out = Output::default();
        while let Some(frame) = read_frame(&mut stdio).await.expect("read frame") {
            match frame {
                Frame::Stdout(b) => out.stdout.push_str(&String::from_utf8_lossy(&b)),
                Frame::Stderr(b) => out.stderr.push_str(&String::from_utf8_lossy(&b)),
                Frame::Exit(code) => out.exit = Some(code),
                Frame::Error(m) => out.error = Some(m),
                other => panic!("unexpected frame from the driver: {other:?}"),
            }
        }
        out
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), read)
        .await
        .expect("the stdio stream did not end within 60s")
}

/// A process config for exec.
pub fn process(args: &[&str], tty: bool, stdin: bool) -> ProcessConfig {
    ProcessConfig {
        args: args.iter().map(|a| a.to_string()).collect(),
        tty,
        stdin,
        ..Default::default()
    }
}

/// A copy of a `docker save` archive whose config carries a random label, so it is an image (ID) no engine has
/// yet. Returns the new image and its archive.
pub fn unique_image(base: &Path, dir: &Path) -> (ImageRef, PathBuf) {
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(std::fs::File::open(base).expect("open base image"));
    for entry in archive.entries().expect("read base image") {
        let mut entry = entry.expect("entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("read entry");
        files.push((path, data));
    }
    let manifest_at = files
        .iter()
        .position(|(p, _)| p == "manifest.json")
        .expect("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&files[manifest_at].1).expect("manifest");
    let config_name = manifest[0]["Config"].as_str().expect("Config").to_string();
    let config_at = files
        .iter()
        .position(|(p, _)| *p == config_name)
        .expect("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&files[config_at].1).expect("config");
    config["config"]["Labels"] =
        serde_json::json!({ "io.husk.test": format!("{:016x}", rand::random::<u64>()) });
    let config = serde_json::to_vec(&config).expect("encode config");
    let digest = hex::encode(Sha256::digest(&config));
    let name = format!("husk.local/unique-{}:latest", &digest[..12]);
    manifest[0]["Config"] = serde_json::json!(format!("{digest}.json"));
    manifest[0]["RepoTags"] = serde_json::json!([name]);
    files[config_at] = (format!("{digest}.json"), config);
    files[manifest_at].1 = serde_json::to_vec(&manifest).expect("encode manifest");

    let out = dir.join(format!("{}.tar", &digest[..12]));
    let mut builder = tar::Builder::new(std::fs::File::create(&out).expect("create archive"));
    for (path, data) in &files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, path, data.as_slice())
            .expect("append");
    }
    builder.finish().expect("finish archive");
    (
        ImageRef {
            name,
            id: format!("sha256:{digest}"),
        },
        out,
    )
}

/// A driver whose image store holds exactly `tars` (image ID -> archive).
pub async fn driver_with_images(
    instance: &str,
    tars: HashMap<String, PathBuf>,
) -> (Arc<DockerDriver>, Arc<TarImages>) {
    let images = Arc::new(TarImages {
        tars,
        exports: AtomicUsize::new(0),
    });
    let config = DockerDriverConfig::new(&engine().host, instance, pause_binary(), images.clone());
    (
        Arc::new(DockerDriver::connect(config).await.expect("connect")),
        images,
    )
}
