//! Test support (the `testing` feature): [`FakeDriver`], an in-memory [`Driver`] that behaves like a real one as
//! far as the engine can see, and [`engine`], an engine over it with an in-memory store and a tiny image
//! ([`TINY_IMAGE`]) in an image store under a temporary directory. No root, no processes, no mounts.
//!
//! Tests drive the fake from outside: [`FakeDriver::exit`] ends a container's main process with a code,
//! [`FakeDriver::fail_next`] makes the next call of a driver operation fail, [`FakeDriver::lose`] forgets a
//! container as a host reboot would, and [`FakeDriver::calls`] tells which operations the engine called.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use husk_core::stdio::{BoxStdio, Frame};
use husk_core::{
    Capabilities, ContainerConfig, ContainerRecord, ContainerRuntime, DriverInfo, Error,
    ExitStatus, LogEntry, LogOptions, LogStream, Mode, ObservedState, OutputStream, ProcessConfig,
    Resources, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxRuntime, Stats, Top,
};
use husk_image::ImageStore;
use husk_store::Store;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use husk_core::Driver;

use crate::{Engine, EngineConfig};

/// The name of the image [`engine`] loads: one layer holding one regular file, `/hello`, and `CMD ["/hello"]`.
pub const TINY_IMAGE: &str = "husk.local/tiny:latest";

/// First fake PID; each start takes the next one.
const FIRST_PID: i32 = 4000;

/// What the fake knows of one container.
struct FakeContainer {
    config: ContainerConfig,
    /// Runs started so far (0: created, never started).
    runs: u64,
    /// The exit of each finished run, in order: run `n` ended with `exits[n - 1]`.
    exits: Vec<ExitStatus>,
    paused: bool,
    pid: i32,
    /// Tells waiters how many runs have finished. Dropped with the container: their waits then fail.
    finished: watch::Sender<u64>,
    logs: Vec<LogEntry>,
    limits: Option<Resources>,
}

impl FakeContainer {
    fn running(&self) -> bool {
        self.runs > self.exits.len() as u64
    }

    fn end_run(&mut self, code: i32, reason: &str) {
        if !self.running() {
            return;
        }
        self.exits.push(ExitStatus {
            code,
            finished_at: Some(husk_core::Timestamp::now()),
            reason: reason.to_string(),
            ..Default::default()
        });
        self.paused = false;
        self.pid = 0;
        self.finished.send_replace(self.exits.len() as u64);
    }
}

#[derive(Default)]
struct FakeState {
    sandboxes: HashSet<String>,
    containers: HashMap<String, FakeContainer>,
    failures: HashMap<String, VecDeque<Error>>,
    hangs: HashSet<String>,
    calls: Vec<String>,
    next_pid: i32,
}

/// An in-memory driver: sandboxes and containers live in maps, a started container is `Running` with a fake PID
/// until [`FakeDriver::exit`] or a signal ([`Driver::kill`]: exit code 128 + signal) ends it, and
/// [`Driver::wait`] resolves then. Cheap to share (`Arc`); every method takes `&self`.
pub struct FakeDriver {
    name: &'static str,
    capabilities: Mutex<Capabilities>,
    state: Arc<Mutex<FakeState>>,
}

impl std::fmt::Debug for FakeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDriver")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for FakeDriver {
    fn default() -> Self {
        FakeDriver::new()
    }
}

/// Every capability a driver can declare, each one on (listed field by field: a new capability does not
/// compile until it is added here).
pub fn all_capabilities() -> Capabilities {
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

impl FakeDriver {
    /// A driver named `fake` declaring every capability ([`all_capabilities`]).
    pub fn new() -> FakeDriver {
        FakeDriver::with_capabilities(all_capabilities())
    }

    /// A driver named `fake` declaring exactly `capabilities`.
    pub fn with_capabilities(capabilities: Capabilities) -> FakeDriver {
        FakeDriver {
            name: "fake",
            capabilities: Mutex::new(capabilities),
            state: Arc::new(Mutex::new(FakeState {
                next_pid: FIRST_PID,
                ..Default::default()
            })),
        }
    }

    /// The same driver under another name (for engines with several drivers).
    pub fn named(mut self, name: &'static str) -> FakeDriver {
        self.name = name;
        self
    }

    /// Declares `capabilities` from now on.
    pub fn set_capabilities(&self, capabilities: Capabilities) {
        *self.capabilities.lock().unwrap_or_else(|p| p.into_inner()) = capabilities;
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the next call of `operation` (a [`Driver`] method name: `create_container`, `start_container`,
    /// `kill`, `wait`, `observe` ...) fail with `error`. Several calls queue several failures.
    pub fn fail_next(&self, operation: &str, error: Error) {
        self.state()
            .failures
            .entry(operation.to_string())
            .or_default()
            .push_back(error);
    }

    /// The driver operations called so far, in order (method names).
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// How many times `operation` was called.
    pub fn count(&self, operation: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|c| *c == operation)
            .count()
    }

    /// Ends the running main process of container `id` with exit `code`, as if it returned. Returns false when
    /// the container is unknown or not running.
    pub fn exit(&self, id: &str, code: i32) -> bool {
        let mut state = self.state();
        match state.containers.get_mut(id) {
            Some(c) if c.running() => {
                c.end_run(code, "");
                true
            }
            _ => false,
        }
    }

    /// Forgets container `id` as a host reboot would: [`Driver::observe`] answers `Missing` and pending waits
    /// fail. Returns false when it was unknown.
    pub fn lose(&self, id: &str) -> bool {
        self.state().containers.remove(id).is_some()
    }

    /// Forgets sandbox `id` ([`Driver::sandbox_alive`] answers false).
    pub fn lose_sandbox(&self, id: &str) -> bool {
        self.state().sandboxes.remove(id)
    }

    /// Whether the fake holds container `id`.
    pub fn has_container(&self, id: &str) -> bool {
        self.state().containers.contains_key(id)
    }

    /// Whether the fake holds sandbox `id`.
    pub fn has_sandbox(&self, id: &str) -> bool {
        self.state().sandboxes.contains(id)
    }

    /// How many times container `id` was started (0 when unknown).
    pub fn runs(&self, id: &str) -> u64 {
        self.state().containers.get(id).map(|c| c.runs).unwrap_or(0)
    }

    /// Adds a line to container `id`'s output, as [`Driver::logs`] returns it.
    pub fn write_log(&self, id: &str, stream: OutputStream, text: &str) -> bool {
        let mut state = self.state();
        let Some(c) = state.containers.get_mut(id) else {
            return false;
        };
        c.logs.push(LogEntry {
            time: husk_core::Timestamp::now(),
            stream,
            text: text.to_string(),
        });
        true
    }

    /// The limits last given to container `id` by [`Driver::update_limits`].
    pub fn limits(&self, id: &str) -> Option<Resources> {
        self.state()
            .containers
            .get(id)
            .and_then(|c| c.limits.clone())
    }

    /// Makes the next call of `operation` never return, as a backend that hangs (or a daemon killed in the
    /// middle of the call, once the test drops the runtime running it).
    pub fn hang_next(&self, operation: &str) {
        self.state().hangs.insert(operation.to_string());
    }

    /// Records the call of `operation`, hangs if [`FakeDriver::hang_next`] asked, and takes the failure scripted
    /// for it, if any.
    async fn enter(&self, operation: &str) -> Result<MutexGuard<'_, FakeState>> {
        let hang = {
            let mut state = self.state();
            state.calls.push(operation.to_string());
            state.hangs.remove(operation)
        };
        if hang {
            std::future::pending::<()>().await;
        }
        let mut state = self.state();
        if let Some(e) = state
            .failures
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
        {
            return Err(e);
        }
        Ok(state)
    }
}

fn missing(id: &str) -> Error {
    Error::not_found(format!("container {id} (fake driver)"))
}

fn find<'a>(state: &'a mut FakeState, id: &str) -> Result<&'a mut FakeContainer> {
    state.containers.get_mut(id).ok_or_else(|| missing(id))
}

fn not_running(id: &str) -> Error {
    Error::conflict(format!("container {id} is not running (fake driver)"))
}

/// A stdio stream that carries `frames` and then ends (what the other end writes is taken and dropped).
fn frames(frames: Vec<Frame>) -> BoxStdio {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut reader, mut writer) = tokio::io::split(ours);
        let drain = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        });
        for f in frames {
            if writer.write_all(&f.encode()).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
        drop(writer);
        drain.abort();
    });
    Box::new(theirs)
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn info(&self) -> Result<DriverInfo> {
        drop(self.enter("info").await?);
        Ok(DriverInfo {
            name: self.name.to_string(),
            capabilities: self.capabilities(),
            details: BTreeMap::from([("backend".to_string(), "in memory".to_string())]),
        })
    }

    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxRuntime> {
        let mut state = self.enter("create_sandbox").await?;
        state.sandboxes.insert(config.id.clone());
        Ok(SandboxRuntime {
            driver_data: serde_json::json!({ "fake": config.id }),
            ..Default::default()
        })
    }

    async fn delete_sandbox(&self, sandbox: &SandboxRecord) -> Result<()> {
        let mut state = self.enter("delete_sandbox").await?;
        state.sandboxes.remove(&sandbox.config.id);
        Ok(())
    }

    async fn sandbox_alive(&self, sandbox: &SandboxRecord) -> Result<bool> {
        let state = self.enter("sandbox_alive").await?;
        Ok(state.sandboxes.contains(&sandbox.config.id))
    }

    async fn create_container(
        &self,
        config: &ContainerConfig,
        sandbox: Option<&SandboxRecord>,
        _rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        let mut state = self.enter("create_container").await?;
        if let Some(sb) = sandbox
            && !state.sandboxes.contains(&sb.config.id)
        {
            return Err(Error::not_found(format!(
                "sandbox {} (fake driver)",
                sb.config.id
            )));
        }
        if state.containers.contains_key(&config.id) {
            return Err(Error::conflict(format!(
                "container {} exists (fake driver)",
                config.id
            )));
        }
        state.containers.insert(
            config.id.clone(),
            FakeContainer {
                config: config.clone(),
                runs: 0,
                exits: Vec::new(),
                paused: false,
                pid: 0,
                finished: watch::Sender::new(0),
                logs: Vec::new(),
                limits: None,
            },
        );
        Ok(ContainerRuntime {
            driver_data: serde_json::json!({ "fake": config.id }),
            ..Default::default()
        })
    }

    async fn start_container(
        &self,
        container: &ContainerRecord,
        sandbox: Option<&SandboxRecord>,
    ) -> Result<ContainerRuntime> {
        let mut state = self.enter("start_container").await?;
        if let Some(sb) = sandbox
            && !state.sandboxes.contains(&sb.config.id)
        {
            return Err(Error::conflict(format!(
                "sandbox {} is gone (fake driver)",
                sb.config.id
            )));
        }
        let pid = state.next_pid;
        let c = find(&mut state, container.id())?;
        if c.running() {
            return Err(Error::conflict(format!(
                "container {} is already running (fake driver)",
                container.id()
            )));
        }
        c.runs += 1;
        c.pid = pid;
        state.next_pid += 1;
        let mut runtime = container.runtime.clone();
        runtime.pid = pid;
        Ok(runtime)
    }

    async fn kill(&self, container: &ContainerRecord, signal: i32, _all: bool) -> Result<()> {
        let mut state = self.enter("kill").await?;
        let c = find(&mut state, container.id())?;
        if !c.running() {
            return Err(not_running(container.id()));
        }
        if signal != 0 {
            c.end_run(128 + signal, "");
        }
        Ok(())
    }

    async fn pause(&self, container: &ContainerRecord) -> Result<()> {
        let mut state = self.enter("pause").await?;
        let c = find(&mut state, container.id())?;
        if !c.running() {
            return Err(not_running(container.id()));
        }
        c.paused = true;
        Ok(())
    }

    async fn unpause(&self, container: &ContainerRecord) -> Result<()> {
        let mut state = self.enter("unpause").await?;
        let c = find(&mut state, container.id())?;
        c.paused = false;
        Ok(())
    }

    async fn delete_container(&self, container: &ContainerRecord) -> Result<()> {
        let mut state = self.enter("delete_container").await?;
        state.containers.remove(container.id());
        Ok(())
    }

    async fn wait(&self, container: &ContainerRecord) -> Result<ExitStatus> {
        let (run, mut finished) = {
            let mut state = self.enter("wait").await?;
            let c = find(&mut state, container.id())?;
            (c.runs.max(1), c.finished.subscribe())
        };
        finished
            .wait_for(|n| *n >= run)
            .await
            .map_err(|_| Error::internal(format!("container {} vanished", container.id())))?;
        let state = self.state();
        state
            .containers
            .get(container.id())
            .and_then(|c| c.exits.get(run as usize - 1).cloned())
            .ok_or_else(|| missing(container.id()))
    }

    async fn observe(&self, container: &ContainerRecord) -> Result<ObservedState> {
        let state = self.enter("observe").await?;
        Ok(match state.containers.get(container.id()) {
            None => ObservedState::Missing,
            Some(c) if c.running() && c.paused => ObservedState::Paused { pid: c.pid },
            Some(c) if c.running() => ObservedState::Running { pid: c.pid },
            Some(c) => match c.exits.last() {
                Some(exit) => ObservedState::Exited(exit.clone()),
                None => ObservedState::Created,
            },
        })
    }

    /// Answers with the process's arguments, joined by spaces, on stdout, and exit code 0.
    async fn exec(&self, container: &ContainerRecord, process: &ProcessConfig) -> Result<BoxStdio> {
        let mut state = self.enter("exec").await?;
        if !find(&mut state, container.id())?.running() {
            return Err(not_running(container.id()));
        }
        let out = format!("{}\n", process.args.join(" "));
        Ok(frames(vec![
            Frame::Stdout(out.into_bytes()),
            Frame::Exit(0),
        ]))
    }

    /// A stream that ends with the exit code of the current (or next) run once it ends.
    async fn attach(&self, container: &ContainerRecord, _stdin: bool) -> Result<BoxStdio> {
        let (run, mut finished) = {
            let mut state = self.enter("attach").await?;
            let c = find(&mut state, container.id())?;
            let next = if c.running() { c.runs } else { c.runs + 1 };
            (next, c.finished.subscribe())
        };
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let state = self.state.clone();
        let id = container.id().to_string();
        tokio::spawn(async move {
            let (_reader, mut writer) = tokio::io::split(ours);
            let ended = finished.wait_for(|n| *n >= run).await.is_ok();
            let exit = ended
                .then(|| {
                    let state = state.lock().unwrap_or_else(|p| p.into_inner());
                    let c = state.containers.get(&id)?;
                    c.exits.get(run as usize - 1).map(|e| e.code)
                })
                .flatten();
            let frame = match exit {
                Some(code) => Frame::Exit(code),
                None => Frame::Error("the container vanished".into()),
            };
            let _ = writer.write_all(&frame.encode()).await;
            let _ = writer.shutdown().await;
        });
        Ok(Box::new(theirs))
    }

    async fn resize(&self, container: &ContainerRecord, _rows: u16, _cols: u16) -> Result<()> {
        let mut state = self.enter("resize").await?;
        find(&mut state, container.id())?;
        Ok(())
    }

    /// The lines given to [`FakeDriver::write_log`], the last `tail` of them when asked; never follows.
    async fn logs(&self, container: &ContainerRecord, options: &LogOptions) -> Result<LogStream> {
        let mut state = self.enter("logs").await?;
        let c = find(&mut state, container.id())?;
        let mut lines = c.logs.clone();
        if let Some(tail) = options.tail {
            lines = lines.split_off(lines.len().saturating_sub(tail));
        }
        Ok(Box::pin(futures::stream::iter(lines.into_iter().map(Ok))))
    }

    async fn stats(&self, container: &ContainerRecord) -> Result<Stats> {
        let mut state = self.enter("stats").await?;
        let c = find(&mut state, container.id())?;
        let running = c.running();
        let memory_limit = c
            .limits
            .as_ref()
            .unwrap_or(&c.config.resources)
            .memory_bytes
            .map_or(0, |m| m.max(0) as u64);
        Ok(Stats {
            read_at: Some(husk_core::Timestamp::now()),
            cpu_usage_ns: c.runs * 1_000_000,
            system_cpu_ns: 1_000_000_000,
            online_cpus: 1,
            memory_usage_bytes: if running { 1 << 20 } else { 0 },
            memory_limit_bytes: memory_limit,
            pids: u64::from(running),
            ..Default::default()
        })
    }

    async fn top(&self, container: &ContainerRecord) -> Result<Top> {
        let mut state = self.enter("top").await?;
        let c = find(&mut state, container.id())?;
        if !c.running() {
            return Err(not_running(container.id()));
        }
        Ok(Top {
            titles: ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
                .map(String::from)
                .to_vec(),
            processes: vec![vec![
                "root".into(),
                c.pid.to_string(),
                "1".into(),
                "0".into(),
                "00:00".into(),
                "?".into(),
                "00:00:00".into(),
                c.config.process.args.join(" "),
            ]],
        })
    }

    async fn update_limits(&self, container: &ContainerRecord, limits: &Resources) -> Result<()> {
        let mut state = self.enter("update_limits").await?;
        find(&mut state, container.id())?.limits = Some(limits.clone());
        Ok(())
    }
}

/// A `docker save` archive of [`TINY_IMAGE`]: one layer holding the regular file `/hello`, built here (no
/// device nodes, no owners to set: it unpacks without root).
pub fn tiny_image_archive() -> Vec<u8> {
    fn add(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
            .expect("append to an in-memory tar");
    }
    let mut layer = tar::Builder::new(Vec::new());
    add(&mut layer, "hello", b"#!/bin/sh\necho hello\n", 0o755);
    let layer = layer.into_inner().expect("finish an in-memory tar");
    let diff_id = husk_image::Digest::of(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": husk_image::Platform::host().architecture,
        "os": "linux",
        "config": { "Cmd": ["/hello"], "Env": ["PATH=/"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    }))
    .expect("serialise a JSON value");
    let config_name = format!("{}.json", husk_image::Digest::of(&config).hex());
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [TINY_IMAGE],
        "Layers": ["layer/layer.tar"],
    }]))
    .expect("serialise a JSON value");
    let mut archive = tar::Builder::new(Vec::new());
    add(&mut archive, &config_name, &config, 0o644);
    add(&mut archive, "layer/layer.tar", &layer, 0o644);
    add(&mut archive, "manifest.json", &manifest, 0o644);
    archive.into_inner().expect("finish an in-memory tar")
}

/// An engine over `drivers` (the first is the default driver, with `mode` the default mode), `store`, an image
/// store under `dir/images` holding [`TINY_IMAGE`], and CNI networks configured under `dir` (none is made).
pub async fn engine_with_store(
    dir: &Path,
    store: Arc<Store>,
    mode: Mode,
    drivers: Vec<Arc<dyn Driver>>,
) -> Result<Engine> {
    let images = Arc::new(ImageStore::open(
        dir.join("images"),
        store.clone(),
        husk_image::ImageConfig::default(),
    )?);
    if images.resolve(TINY_IMAGE).is_err() {
        images
            .load(
                std::io::Cursor::new(tiny_image_archive()),
                &Default::default(),
            )
            .await?;
    }
    let mut cni = husk_net::CniConfig::with_root(dir);
    cni.conf_dir = dir.join("cni");
    let networks = Arc::new(husk_net::Networks::open(cni)?);
    let default_driver = drivers
        .first()
        .map(|d| d.name().to_string())
        .unwrap_or_default();
    Engine::new(
        EngineConfig {
            default_driver,
            default_mode: mode,
            root: dir.into(),
            run_root: dir.into(),
            init_binary: None,
            log_defaults: Default::default(),
            token_lifetime: crate::identity::TOKEN_LIFETIME,
        },
        store,
        images,
        networks,
        drivers,
    )
}

/// [`engine_with_store`] over an in-memory store and the one driver `fake`.
pub async fn engine(dir: &Path, mode: Mode, fake: Arc<FakeDriver>) -> Result<Engine> {
    engine_with_store(
        dir,
        Arc::new(Store::open_in_memory()?),
        mode,
        vec![fake as Arc<dyn Driver>],
    )
    .await
}
