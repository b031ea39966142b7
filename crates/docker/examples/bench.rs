//! Benchmark: a sandbox plus one container in it, from nothing to running, through the docker driver versus
//! the same work with the docker CLI (and with the bare engine API, for reference).
//!
//! ```text
//! bench [--host unix:///path/docker.sock] [--iterations N] [--pause PATH] [--docker PATH]
//! ```
//!
//! Without `--host` it starts a private engine with `scripts/test-dockerd` and stops it at the end. The three
//! ways run interleaved, one round at a time, so drift in the machine's load hits them alike; each round's
//! objects are removed (untimed) before the next. All three make the same objects: an infra container of the
//! pause image (shareable IPC, the sandbox's hostname, default bridge, no capabilities, read-only root) and a
//! `sleep` container joining its network, IPC and PID namespaces. `bench/docker-driver.sh` builds and runs it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use husk_core::{
    ContainerConfig, ContainerRecord, ContainerStatus, Driver, Error, ImageRef, Mode,
    ProcessConfig, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxStatus,
    SecurityConfig,
};
use husk_docker::{DockerDriver, DockerDriverConfig, ImageArchive, ImageSource};

struct Args {
    host: Option<String>,
    iterations: usize,
    pause: PathBuf,
    docker: String,
}

fn parse_args() -> std::result::Result<Args, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut args = Args {
        host: None,
        iterations: 20,
        pause: exe.with_file_name("pause"),
        docker: "docker".to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--host" => args.host = Some(value()?),
            "--iterations" => {
                args.iterations = value()?.parse().map_err(|e| format!("--iterations: {e}"))?
            }
            "--pause" => args.pause = PathBuf::from(value()?),
            "--docker" => args.docker = value()?,
            "-h" | "--help" => {
                return Err(
                    "usage: bench [--host URL] [--iterations N] [--pause PATH] [--docker PATH]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// The busybox archive as husk's image store.
struct OneImage {
    id: String,
    tar: PathBuf,
}

#[async_trait]
impl ImageSource for OneImage {
    async fn export(&self, image: &ImageRef) -> Result<ImageArchive> {
        if image.id != self.id {
            return Err(Error::not_found(format!("image {}", image.id)));
        }
        let file = tokio::fs::File::open(&self.tar)
            .await
            .map_err(|e| Error::io(format!("open {}", self.tar.display()), e))?;
        Ok(Box::pin(file))
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> std::result::Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A private engine, stopped on drop.
struct PrivateEngine {
    dir: PathBuf,
}

impl PrivateEngine {
    fn start() -> std::result::Result<(PrivateEngine, String), String> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who inherits our orphaned descendants.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let dir = PathBuf::from(format!("/tmp/hdk-bench-{:06x}", std::process::id()));
        let host = run(Command::new(crate_dir().join("scripts/test-dockerd"))
            .arg("start")
            .arg(&dir))?;
        Ok((PrivateEngine { dir }, host))
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let _ = run(Command::new(crate_dir().join("scripts/test-dockerd"))
            .arg("stop")
            .arg(&self.dir));
        // SAFETY: reaps whatever was re-parented to us; nothing else waits for these processes.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    }
}

struct Bench {
    driver: DockerDriver,
    docker: Docker,
    cli: String,
    host: String,
    image: ImageRef,
    pause_id: String,
}

impl Bench {
    fn sandbox_config(&self, round: usize) -> SandboxConfig {
        SandboxConfig {
            id: husk_core::new_id(),
            name: format!("bench-{round}"),
            hostname: "bench".to_string(),
            share_pid: true,
            ..Default::default()
        }
    }

    fn container_config(&self, round: usize) -> ContainerConfig {
        ContainerConfig {
            id: husk_core::new_id(),
            name: format!("bench-{round}"),
            image: self.image.clone(),
            process: ProcessConfig {
                args: vec!["sleep".into(), "1000".into()],
                cwd: "/".into(),
                ..Default::default()
            },
            hostname: String::new(),
            resources: Default::default(),
            security: SecurityConfig {
                no_new_privileges: true,
                ..Default::default()
            },
            mounts: vec![],
            network: Default::default(),
            labels: Default::default(),
            stop_signal: None,
            stop_timeout: None,
            ..Default::default()
        }
    }

    /// Through the driver: returns the time taken and the sandbox to remove.
    async fn driver_round(&self, round: usize) -> Result<(Duration, SandboxRecord)> {
        let sandbox_config = self.sandbox_config(round);
        let container_config = self.container_config(round);
        let rootfs = RootfsLayers {
            image_id: self.image.id.clone(),
            image_name: self.image.name.clone(),
            layers: vec![],
        };
        let start = Instant::now();
        let runtime = self.driver.create_sandbox(&sandbox_config).await?;
        let sandbox = SandboxRecord {
            config: sandbox_config,
            driver: "docker".into(),
            status: SandboxStatus::Ready,
            runtime,
            created_at: husk_core::Timestamp::now(),
            owner_container: None,
            project: String::new(),
        };
        let runtime = self
            .driver
            .create_container(&container_config, Some(&sandbox), &rootfs)
            .await?;
        let record = ContainerRecord {
            config: container_config,
            driver: "docker".into(),
            mode: Mode::Sandbox,
            sandbox_id: Some(sandbox.config.id.clone()),
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
        };
        self.driver.start_container(&record, Some(&sandbox)).await?;
        Ok((start.elapsed(), sandbox))
    }

    /// With the docker CLI: returns the time taken and the names to remove.
    fn cli_round(&self, round: usize) -> std::result::Result<(Duration, Vec<String>), String> {
        let infra = format!("bench-cli-infra-{round}");
        let app = format!("bench-cli-app-{round}");
        let joined = format!("container:{infra}");
        let start = Instant::now();
        run(Command::new(&self.cli)
            .env("DOCKER_HOST", &self.host)
            .args([
                "run",
                "-d",
                "--name",
                &infra,
                "--hostname",
                "bench",
                "--ipc",
                "shareable",
                "--network",
                "bridge",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges:true",
                "--read-only",
                &self.pause_id,
            ]))?;
        run(Command::new(&self.cli)
            .env("DOCKER_HOST", &self.host)
            .args([
                "run",
                "-d",
                "--name",
                &app,
                "--network",
                &joined,
                "--ipc",
                &joined,
                "--pid",
                &joined,
                "--security-opt",
                "no-new-privileges:true",
                "--entrypoint",
                "sleep",
                &self.image.id,
                "1000",
            ]))?;
        Ok((start.elapsed(), vec![app, infra]))
    }

    /// With bare engine API calls (no labels, lookups or checks): the floor.
    async fn api_round(
        &self,
        round: usize,
    ) -> std::result::Result<(Duration, Vec<String>), bollard::errors::Error> {
        let infra = ContainerCreateBody {
            image: Some(self.pause_id.clone()),
            hostname: Some("bench".into()),
            host_config: Some(HostConfig {
                ipc_mode: Some("shareable".into()),
                network_mode: Some("bridge".into()),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                readonly_rootfs: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let start = Instant::now();
        let name = |n: String| {
            Some(CreateContainerOptions {
                name: Some(n),
                platform: String::new(),
            })
        };
        let infra_id = self
            .docker
            .create_container(name(format!("bench-api-infra-{round}")), infra)
            .await?
            .id;
        self.docker.start_container(&infra_id, None).await?;
        let joined = format!("container:{infra_id}");
        let app = ContainerCreateBody {
            image: Some(self.image.id.clone()),
            entrypoint: Some(vec!["sleep".into()]),
            cmd: Some(vec!["1000".into()]),
            host_config: Some(HostConfig {
                network_mode: Some(joined.clone()),
                ipc_mode: Some(joined.clone()),
                pid_mode: Some(joined),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let app_id = self
            .docker
            .create_container(name(format!("bench-api-app-{round}")), app)
            .await?
            .id;
        self.docker.start_container(&app_id, None).await?;
        Ok((start.elapsed(), vec![app_id, infra_id]))
    }

    async fn remove(&self, names: &[String]) {
        for n in names {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            };
            let _ = self.docker.remove_container(n, Some(options)).await;
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn bench(args: Args, host: String) -> std::result::Result<(), String> {
    let image_dir = std::env::temp_dir().join(format!("hdk-bench-image-{}", std::process::id()));
    std::fs::create_dir_all(&image_dir).map_err(|e| e.to_string())?;
    let tar = image_dir.join("busybox.tar");
    let made = run(
        Command::new(crate_dir().join("../../scripts/make-busybox-image"))
            .arg(&tar)
            .arg("husk.local/bench-busybox:latest"),
    );
    let made = made.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&image_dir);
    })?;
    let id = made
        .split_whitespace()
        .nth(1)
        .ok_or("make-busybox-image printed no ID")?
        .to_string();
    let image = ImageRef {
        name: "husk.local/bench-busybox:latest".into(),
        id: id.clone(),
    };
    let images = Arc::new(OneImage { id, tar });
    let instance = format!("bench{:04x}", rand::random::<u16>());
    let config = DockerDriverConfig::new(&host, &instance, &args.pause, images);
    let driver = DockerDriver::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    let pause_id = driver.pause_image().0.to_string();
    let docker = Docker::connect_with_unix(
        host.strip_prefix("unix://")
            .ok_or("the benchmark needs a unix:// engine address")?,
        120,
        &bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .map_err(|e| e.to_string())?;
    let b = Bench {
        driver,
        docker,
        cli: args.docker.clone(),
        host: host.clone(),
        image,
        pause_id,
    };

    // Warm-up (loads the pause and busybox images into the engine; first-use costs in the engine).
    let (_, sandbox) = b
        .driver_round(usize::MAX)
        .await
        .map_err(|e| e.to_string())?;
    b.driver
        .delete_sandbox(&sandbox)
        .await
        .map_err(|e| e.to_string())?;
    let (_, names) = b.cli_round(usize::MAX)?;
    b.remove(&names).await;

    let (mut driver_times, mut cli_times, mut api_times) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.iterations {
        let (t, sandbox) = b.driver_round(round).await.map_err(|e| e.to_string())?;
        driver_times.push(t);
        b.driver
            .delete_sandbox(&sandbox)
            .await
            .map_err(|e| e.to_string())?;
        let (t, names) = b.cli_round(round)?;
        cli_times.push(t);
        b.remove(&names).await;
        let (t, ids) = b.api_round(round).await.map_err(|e| e.to_string())?;
        api_times.push(t);
        b.remove(&ids).await;
    }
    let _ = std::fs::remove_dir_all(&image_dir);

    let (engine, api) = b.driver.engine_version();
    println!(
        "docker driver benchmark: sandbox (infra container) + 1 container, created and started"
    );
    println!(
        "engine {engine} (API {api}), {} rounds, interleaved",
        args.iterations
    );
    println!("{:<28} {:>10} {:>10}", "", "median", "mean");
    for (label, times) in [
        ("husk docker driver", &driver_times),
        ("docker CLI (2x docker run)", &cli_times),
        ("bare engine API (4 calls)", &api_times),
    ] {
        println!(
            "{label:<28} {:>10} {:>10}",
            ms(median(times.clone())),
            ms(mean(times))
        );
    }
    let ratio = |a: &[Duration], b: &[Duration]| {
        median(a.to_vec()).as_secs_f64() / median(b.to_vec()).as_secs_f64()
    };
    let vs_cli = ratio(&driver_times, &cli_times);
    println!(
        "driver / CLI        = {vs_cli:.3} (overhead {:+.1}%, target < +10%)",
        (vs_cli - 1.0) * 100.0
    );
    let vs_api = ratio(&driver_times, &api_times);
    println!(
        "driver / bare API   = {vs_api:.3} (overhead {:+.1}%)",
        (vs_api - 1.0) * 100.0
    );
    if vs_cli >= 1.10 {
        return Err(format!(
            "the driver's overhead over the docker CLI is {:.1}%, over the 10% target",
            (vs_cli - 1.0) * 100.0
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let started = match args.host.clone() {
        Some(h) => Ok((None, h)),
        None => PrivateEngine::start().map(|(e, h)| (Some(e), h)),
    };
    let result = match started {
        Ok((engine, host)) => {
            let r = bench(args, host).await;
            drop(engine);
            r
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}
