#![doc = include_str!("../README.md")]

pub mod actions;
pub mod capsules;
mod containers;
mod copy;
mod exec_output;
#[cfg(test)]
mod fake_tests;
mod health;
pub mod host;
pub mod identity;
pub mod image_owners;
mod images;
mod metrics;
mod monitor;
mod mounts;
mod networks;
pub mod quotas;
mod resolve;
mod sandboxes;
mod scope;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use husk_core::{ContainerRecord, ContainerStatus, Driver, Error, Mode, Result, SandboxRecord};
use husk_image::ImageStore;
use husk_store::Store;
use tokio::sync::broadcast;

pub use exec_output::ExecOutput;
pub(crate) use husk_api_types::containers::*;
pub(crate) use husk_api_types::events::{EventActor, EventView};
pub(crate) use husk_api_types::volumes::{VolumeCreate, VolumePruneReport, VolumeView};
pub use scope::{DEFAULT_PROJECT, Scope};
pub use volumes::VolumeRecord;

/// Every failpoint of the daemon, `OPERATION:STEP` (the engine's, and the image store's: `pull_image`). The
/// conformance suite's crash matrix aborts the daemon at each one in turn on every driver (the operation names
/// the scenario that reaches it), so a failpoint listed here is crash-tested without editing a test; a unit test
/// checks that the list and the code agree.
pub const FAILPOINTS: &[&str] = &[
    "create_container:sandbox_ready",
    "create_container:driver_created",
    "start_container:driver_started",
    "exec_container:started",
    "stop_container:signalled",
    "remove_container:marked",
    "commit_container:paused",
    "create_sandbox:driver_created",
    "remove_sandbox:driver_deleted",
    "create_volume:dir_made",
    "remove_volume:record_deleted",
    "pull_image:layers_stored",
];

/// Crash-testing hook ([`husk_core::failpoint`]) for the engine's steps; `name` must be one of [`FAILPOINTS`].
pub(crate) fn failpoint(name: &str) {
    debug_assert!(
        FAILPOINTS.contains(&name),
        "failpoint {name} is not listed in FAILPOINTS"
    );
    husk_core::failpoint(name);
}

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The driver used when a request names none.
    pub default_driver: String,
    /// The mode used when a request names none.
    pub default_mode: Mode,
    /// State root (for `info`).
    pub root: PathBuf,
    /// Runtime root (for `info`).
    pub run_root: PathBuf,
    /// The static binary bind-mounted as `/sbin/husk-init` for `--init` (the `husk` binary; `None` refuses
    /// `--init`).
    pub init_binary: Option<PathBuf>,
    /// The log limits of containers whose request sets none (the daemon's `[logs]`).
    pub log_defaults: husk_core::LogLimits,
    /// How long a token of the identity service stays valid (default [`identity::TOKEN_LIFETIME`]).
    pub token_lifetime: std::time::Duration,
}

/// Something that happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// It was created.
    Created,
    /// Its main process started.
    Started,
    /// Its main process exited with this code.
    Exited(i32),
    /// It was frozen.
    Paused,
    /// It was thawed.
    Unpaused,
    /// It was removed.
    Removed,
    /// Its health check state changed.
    HealthStatus(husk_core::HealthStatus),
}

impl EventKind {
    /// Docker's name for it (`create`, `start`, `die`, `pause`, `unpause`, `destroy`, `health_status: healthy`).
    pub fn action(&self) -> String {
        match self {
            EventKind::Created => "create".into(),
            EventKind::Started => "start".into(),
            EventKind::Exited(_) => "die".into(),
            EventKind::Paused => "pause".into(),
            EventKind::Unpaused => "unpause".into(),
            EventKind::Removed => "destroy".into(),
            EventKind::HealthStatus(h) => format!("health_status: {h}"),
        }
    }
}

/// An event about the container `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Container ID.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
    /// When, in nanoseconds since the Unix epoch.
    pub time_nano: i64,
    /// The container's name and image when it happened (and `exitCode` for an exit).
    pub attributes: BTreeMap<String, String>,
}

impl From<&Event> for EventView {
    fn from(e: &Event) -> EventView {
        EventView {
            kind: "container".into(),
            action: e.kind.action(),
            actor: EventActor {
                id: e.id.clone(),
                attributes: e.attributes.clone(),
            },
            time: e.time_nano / 1_000_000_000,
            time_nano: e.time_nano,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) store: Arc<Store>,
    pub(crate) images: Arc<ImageStore>,
    pub(crate) networks: Arc<husk_net::Networks>,
    pub(crate) drivers: BTreeMap<String, Arc<dyn Driver>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) events: broadcast::Sender<Event>,
    /// Containers with a task watching their main process.
    pub(crate) monitored: Mutex<std::collections::HashSet<String>>,
    /// Health check tasks by container ID.
    pub(crate) health_tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Creates read-hold it from resolving their image to recording their container; image removals write-hold it.
    pub(crate) image_users: std::sync::RwLock<()>,
    /// The daemon's metrics (driver calls and pulls are timed here; the front ends count their requests).
    pub(crate) metrics: Arc<husk_metrics::Metrics>,
}

/// The service layer. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("drivers", &self.inner.drivers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Engine {
    /// An engine over `store`, `images` and `drivers`. Fails if the default driver is missing or cannot run the
    /// default mode.
    pub fn new(
        config: EngineConfig,
        store: Arc<Store>,
        images: Arc<ImageStore>,
        networks: Arc<husk_net::Networks>,
        drivers: Vec<Arc<dyn Driver>>,
    ) -> Result<Engine> {
        let drivers: BTreeMap<String, Arc<dyn Driver>> = drivers
            .into_iter()
            .map(|d| (d.name().to_string(), d))
            .collect();
        let default = drivers.get(&config.default_driver).ok_or_else(|| {
            Error::invalid(
                "driver",
                format!(
                    "unknown driver {:?}: this husk has {}",
                    config.default_driver,
                    drivers.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        default
            .capabilities()
            .require_mode(default.name(), config.default_mode)?;
        let (events, _) = broadcast::channel(1024);
        Ok(Engine {
            inner: Arc::new(Inner {
                config,
                store,
                images,
                networks,
                drivers,
                locks: Mutex::new(HashMap::new()),
                events,
                monitored: Mutex::new(Default::default()),
                health_tasks: Mutex::new(HashMap::new()),
                image_users: std::sync::RwLock::new(()),
                metrics: Arc::default(),
            }),
        })
    }

    /// Subscribes to container events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Tells subscribers that `kind` happened to container `id` (named and imaged by its record, read here, if
    /// any). Callers holding the record use [`Engine::emit_record`]: no read on the start and exit paths.
    pub(crate) fn emit(&self, id: &str, kind: EventKind) {
        match self.inner.store.get::<ContainerRecord>(id) {
            Ok(Some(rec)) => self.emit_record(&rec, kind),
            _ => self.send_event(id, kind, BTreeMap::new()),
        }
    }

    /// Tells subscribers that `kind` happened to the container of `rec` (also once the record is gone).
    pub(crate) fn emit_record(&self, rec: &ContainerRecord, kind: EventKind) {
        let mut attributes = BTreeMap::from([
            ("name".to_string(), rec.config.name.clone()),
            (
                "image".to_string(),
                husk_image::familiar(&rec.config.image.name),
            ),
        ]);
        if let EventKind::Exited(code) = kind {
            attributes.insert("exitCode".into(), code.to_string());
        }
        self.send_event(rec.id(), kind, attributes);
    }

    fn send_event(&self, id: &str, kind: EventKind, attributes: BTreeMap<String, String>) {
        let time_nano = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let _ = self.inner.events.send(Event {
            id: id.to_string(),
            kind,
            time_nano,
            attributes,
        });
    }

    /// The names of the drivers this daemon runs.
    pub fn driver_names(&self) -> Vec<String> {
        self.inner.drivers.keys().cloned().collect()
    }

    pub(crate) fn driver(&self, name: &str) -> Result<Arc<dyn Driver>> {
        self.inner.drivers.get(name).cloned().ok_or_else(|| {
            Error::invalid(
                "driver",
                format!(
                    "unknown driver {name:?}: this daemon runs {}",
                    self.inner
                        .drivers
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// A lock serialising operations on one object (container or sandbox) by ID.
    pub(crate) async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        m.lock_owned().await
    }

    pub(crate) fn forget_lock(&self, id: &str) {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Resolves a container by name, ID or unique ID prefix.
    pub fn container(&self, key: &str) -> Result<ContainerRecord> {
        self.inner
            .store
            .find::<ContainerRecord>(key)?
            .ok_or_else(|| Error::not_found(format!("container: {key}")))
    }

    /// Resolves a sandbox by name, ID or unique ID prefix.
    pub fn sandbox(&self, key: &str) -> Result<SandboxRecord> {
        self.inner
            .store
            .find::<SandboxRecord>(key)?
            .ok_or_else(|| Error::not_found(format!("sandbox: {key}")))
    }

    pub(crate) fn sandbox_of(&self, rec: &ContainerRecord) -> Result<Option<SandboxRecord>> {
        match &rec.sandbox_id {
            Some(id) => self.inner.store.get::<SandboxRecord>(id),
            None => Ok(None),
        }
    }

    /// The daemon is stopping: lets every driver finish its background work (briefly). Containers keep running.
    pub async fn shutdown(&self) {
        for d in self.inner.drivers.values() {
            d.shutdown().await;
        }
    }

    /// Daemon information.
    pub async fn info(&self) -> Result<Info> {
        let mut drivers = Vec::new();
        for d in self.inner.drivers.values() {
            drivers.push(d.info().await?);
        }
        let containers = self.inner.store.list::<ContainerRecord>()?;
        Ok(Info {
            version: env!("CARGO_PKG_VERSION").to_string(),
            default_driver: self.inner.config.default_driver.clone(),
            default_mode: self.inner.config.default_mode,
            drivers,
            containers_running: containers
                .iter()
                .filter(|c| c.status == ContainerStatus::Running)
                .count(),
            containers: containers.len(),
            sandboxes: self.inner.store.list::<SandboxRecord>()?.len(),
            images: self.inner.images.list()?.len(),
            root: self.inner.config.root.display().to_string(),
            run_root: self.inner.config.run_root.display().to_string(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The failpoints the engine's and the image store's code reach, read from their source: `FAILPOINTS` must
    /// list exactly these.
    #[test]
    fn failpoints_lists_every_failpoint_in_the_code() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut used = Vec::new();
        for (dir, call) in [
            ("engine/src", "crate::failpoint(\""),
            ("image/src", "husk_core::failpoint(\""),
        ] {
            // Every file below the crate's source directory, submodules' directories included.
            let mut dirs = vec![crates.join(dir)];
            let mut files = Vec::new();
            while let Some(d) = dirs.pop() {
                for entry in std::fs::read_dir(d).unwrap().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        files.push(path);
                    }
                }
            }
            for file in files {
                let Ok(text) = std::fs::read_to_string(&file) else {
                    continue;
                };
                for (at, _) in text.match_indices(call) {
                    let rest = &text[at + call.len()..];
                    used.push(rest[..rest.find('"').unwrap()].to_string());
                }
            }
        }
        used.sort();
        let mut listed: Vec<String> = FAILPOINTS.iter().map(|p| p.to_string()).collect();
        listed.sort();
        assert_eq!(
            used, listed,
            "FAILPOINTS and the failpoint(...) calls differ"
        );
    }
    use async_trait::async_trait;
    use husk_core::stdio::BoxStdio;
    use husk_core::*;

    /// A driver that only declares capabilities: the engine must refuse modes it lacks before calling it.
    struct DeclaredOnly(Capabilities);

    fn never<T>() -> husk_core::Result<T> {
        Err(Error::unsupported("this driver only declares capabilities"))
    }

    #[async_trait]
    impl Driver for DeclaredOnly {
        fn name(&self) -> &'static str {
            "declared"
        }
        fn capabilities(&self) -> Capabilities {
            self.0.clone()
        }
        async fn info(&self) -> husk_core::Result<DriverInfo> {
            never()
        }
        async fn create_sandbox(&self, _: &SandboxConfig) -> husk_core::Result<SandboxRuntime> {
            never()
        }
        async fn delete_sandbox(&self, _: &SandboxRecord) -> husk_core::Result<()> {
            never()
        }
        async fn sandbox_alive(&self, _: &SandboxRecord) -> husk_core::Result<bool> {
            never()
        }
        async fn create_container(
            &self,
            _: &ContainerConfig,
            _: Option<&SandboxRecord>,
            _: &RootfsLayers,
        ) -> husk_core::Result<ContainerRuntime> {
            never()
        }
        async fn start_container(
            &self,
            _: &ContainerRecord,
            _: Option<&SandboxRecord>,
        ) -> husk_core::Result<ContainerRuntime> {
            never()
        }
        async fn kill(&self, _: &ContainerRecord, _: i32, _: bool) -> husk_core::Result<()> {
            never()
        }
        async fn pause(&self, _: &ContainerRecord) -> husk_core::Result<()> {
            never()
        }
        async fn unpause(&self, _: &ContainerRecord) -> husk_core::Result<()> {
            never()
        }
        async fn delete_container(&self, _: &ContainerRecord) -> husk_core::Result<()> {
            never()
        }
        async fn wait(&self, _: &ContainerRecord) -> husk_core::Result<ExitStatus> {
            never()
        }
        async fn observe(&self, _: &ContainerRecord) -> husk_core::Result<ObservedState> {
            never()
        }
        async fn exec(
            &self,
            _: &ContainerRecord,
            _: &ProcessConfig,
        ) -> husk_core::Result<BoxStdio> {
            never()
        }
        async fn attach(&self, _: &ContainerRecord, _: bool) -> husk_core::Result<BoxStdio> {
            never()
        }
        async fn resize(&self, _: &ContainerRecord, _: u16, _: u16) -> husk_core::Result<()> {
            never()
        }
        async fn logs(&self, _: &ContainerRecord, _: &LogOptions) -> husk_core::Result<LogStream> {
            never()
        }
        async fn stats(&self, _: &ContainerRecord) -> husk_core::Result<Stats> {
            never()
        }
        async fn top(&self, _: &ContainerRecord) -> husk_core::Result<Top> {
            never()
        }
    }

    pub(crate) fn engine(
        mode: Mode,
        caps: Capabilities,
        dir: &std::path::Path,
    ) -> husk_core::Result<Engine> {
        let store = Arc::new(Store::open_in_memory()?);
        let images = Arc::new(ImageStore::open(
            dir.join("images"),
            store.clone(),
            husk_image::ImageConfig::default(),
        )?);
        let mut cni = husk_net::CniConfig::with_root(dir);
        cni.conf_dir = dir.join("cni");
        let networks = Arc::new(husk_net::Networks::open(cni)?);
        Engine::new(
            EngineConfig {
                default_driver: "declared".into(),
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
            vec![Arc::new(DeclaredOnly(caps))],
        )
    }

    #[test]
    fn a_default_mode_the_driver_cannot_do_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let standalone_only = Capabilities {
            standalone: true,
            ..Default::default()
        };
        let e = engine(Mode::Sandbox, standalone_only.clone(), dir.path()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message.contains("declared") && e.message.contains("sandbox mode"),
            "{}",
            e.message
        );
        assert!(engine(Mode::Standalone, standalone_only, dir.path()).is_ok());
    }

    #[tokio::test]
    async fn a_request_for_a_mode_the_driver_lacks_is_refused_before_anything_happens() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(
            Mode::Standalone,
            Capabilities {
                standalone: true,
                ..Default::default()
            },
            dir.path(),
        )
        .unwrap();
        let err = e
            .create_sandbox(SandboxCreate {
                name: Some("s".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            err.message
                .contains("driver declared does not support sandbox mode"),
            "{}",
            err.message
        );
        assert!(e.list_sandboxes().unwrap().is_empty());
    }
}
