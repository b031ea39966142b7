//! [`DockerDriver`]: the driver object, its engine helpers and the reconciliation API. The [`Driver`] trait
//! implementation is in `driver_impl.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    SystemVersion,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, ImportImageOptions, ListContainersOptions,
    RemoveContainerOptions,
};
use futures::{Stream, StreamExt, TryStreamExt};
use husk_core::{
    Capabilities, ContainerRecord, Error, ErrorKind, ExitStatus, ImageRef, NetworkStatus,
    ObservedState, Result, SandboxConfig, SandboxRecord, SandboxRuntime, Timestamp,
};
use serde_json::json;
use tokio_util::io::ReaderStream;

use crate::client::{self, engine_error, is_local, status};
use crate::config::{DockerDriverConfig, ImageSource};
use crate::cri_log::CriLogs;
use crate::labels::{self, Role};
use crate::pause_image::{self, PauseImage};
use crate::privileged;
use crate::spec::Privileges;

/// How long an image load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// The Docker Engine driver. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct DockerDriver {
    pub(crate) docker: Docker,
    pub(crate) host: String,
    pub(crate) instance: String,
    images: Arc<dyn ImageSource>,
    pause: PauseImage,
    version: SystemVersion,
    /// Serialises image loads so two creates of one new image load it once.
    load_lock: tokio::sync::Mutex<()>,
    /// Capabilities this process holds (what privileged containers get).
    daemon_capabilities: Vec<String>,
    /// Capabilities the engine said it does not know (older engines know fewer than the kernel).
    refused_capabilities: Mutex<BTreeSet<String>>,
    /// Engine containers this driver sent SIGKILL to since they last started: their exit 137 is explained,
    /// so their wait does not look for an OOM kill in the engine's event log.
    pub(crate) killed_here: Mutex<BTreeSet<String>>,
    /// Clients attached to a container's main process: its removal lets them read its exit code first.
    pub(crate) attached: Arc<husk_core::attached::AttachedStreams>,
    /// The followers writing containers' CRI logs.
    pub(crate) cri_logs: CriLogs,
}

/// An engine container carrying this daemon instance's labels, as [`DockerDriver::list_owned`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedContainer {
    /// The engine's container ID.
    pub engine_id: String,
    /// The engine's container name (without the leading `/`).
    pub engine_name: String,
    /// Infra container or husk container.
    pub role: Role,
    /// The husk sandbox it belongs to (infra containers and containers in sandbox mode).
    pub sandbox_id: Option<String>,
    /// The husk container ID (containers only).
    pub container_id: Option<String>,
    /// The husk name of the container or sandbox.
    pub name: String,
    /// The engine's state: `created`, `running`, `paused`, `restarting`, `removing`, `exited` or `dead`.
    pub state: String,
}

/// Something that happened to one of this instance's engine containers, from the engine's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    /// The engine's action: `create`, `start`, `die`, `oom`, `kill`, `stop`, `pause`, `unpause`, `destroy` ...
    pub action: String,
    /// The engine's container ID.
    pub engine_id: String,
    /// Infra container or husk container, when labelled.
    pub role: Option<Role>,
    /// The husk sandbox, when labelled.
    pub sandbox_id: Option<String>,
    /// The husk container ID, when labelled.
    pub container_id: Option<String>,
    /// The exit code, for `die`.
    pub exit_code: Option<i32>,
    /// When, in Unix nanoseconds.
    pub time_nanos: i64,
}

/// A stream of [`EngineEvent`]s.
pub type EngineEvents = Pin<Box<dyn Stream<Item = Result<EngineEvent>> + Send>>;

impl DockerDriver {
    /// The runtime of sandbox `config` whose infra container `id` (named `name`) was just started.
    pub(crate) async fn started_infra(
        &self,
        config: &SandboxConfig,
        id: &str,
        name: &str,
    ) -> Result<SandboxRuntime> {
        let inspect = self.inspect(id).await?.ok_or_else(|| {
            Error::backend(format!(
                "the infra container of sandbox {} vanished right after it started",
                config.name
            ))
        })?;
        let pid = inspect.state.as_ref().and_then(|s| s.pid).unwrap_or(0) as i32;
        let mut namespaces = BTreeMap::new();
        if is_local(&self.host) && pid > 0 {
            // Not "uts": the engine cannot share it; each container gets its own, named like the sandbox.
            let mut kinds = vec!["net"];
            if !config.host_ipc {
                kinds.push("ipc");
            }
            if config.share_pid && !config.host_pid {
                kinds.push("pid");
            }
            for kind in kinds {
                namespaces.insert(kind.to_string(), format!("/proc/{pid}/ns/{kind}"));
            }
        }
        Ok(SandboxRuntime {
            namespaces,
            pid: Some(pid),
            network: Some(network_status(&inspect, &config.network)),
            driver_data: sandbox_data(id, name),
        })
    }

    /// Connects to the engine, checks that it answers and speaks API [`crate::MIN_API_VERSION`] or newer, and
    /// builds the infra image from the pause binary (it is loaded into the engine when first needed).
    pub async fn connect(config: DockerDriverConfig) -> Result<DockerDriver> {
        config.validate()?;
        let pause = pause_image::build_from(&config.pause_binary).await?;
        let (docker, version) = client::connect(&config.host, config.request_timeout).await?;
        let daemon_capabilities = privileged::daemon_capabilities()?;
        Ok(DockerDriver {
            docker,
            host: config.host,
            instance: config.instance,
            images: config.images,
            pause,
            version,
            load_lock: tokio::sync::Mutex::new(()),
            daemon_capabilities,
            refused_capabilities: Mutex::new(BTreeSet::new()),
            killed_here: Mutex::new(BTreeSet::new()),
            attached: Default::default(),
            cri_logs: CriLogs::new(config.state_dir),
        })
    }

    /// The engine address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// This daemon's instance name on the engine.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The engine's version (`20.10.24`) and API version (`1.41`).
    pub fn engine_version(&self) -> (String, String) {
        (
            self.version.version.clone().unwrap_or_default(),
            self.version.api_version.clone().unwrap_or_default(),
        )
    }

    /// The infra image's ID and tag.
    pub fn pause_image(&self) -> (&str, &str) {
        (&self.pause.id, &self.pause.tag)
    }

    /// The engine container ID the driver recorded for a husk container, if any.
    pub fn engine_id(container: &ContainerRecord) -> Option<String> {
        container
            .runtime
            .driver_data
            .get("engine_id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// The infra container ID the driver recorded for a sandbox, if any.
    pub fn infra_id(sandbox: &SandboxRecord) -> Option<String> {
        sandbox
            .runtime
            .driver_data
            .get("infra_id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    /// What the driver can do with an engine on this machine. Binds, husk's volumes (its own directories,
    /// bind-mounted) and husk's init (a host binary) need the engine to see this machine's files; see
    /// [`DockerDriver::engine_capabilities`].
    pub fn driver_capabilities() -> Capabilities {
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
            // Docker Engine mounts images only from version 28 (`--mount type=image`); the engines husk
            // drives are older: image volumes are served by the linux driver only.
            image_mounts: false,
        }
    }

    /// What the driver can do with its engine: without a local engine (a unix socket) host paths mean nothing
    /// to it, so binds, volumes and `--init` are refused.
    pub fn engine_capabilities(&self) -> Capabilities {
        let mut caps = Self::driver_capabilities();
        if !client::is_local(&self.host) {
            caps.bind_mounts = false;
            caps.volumes = false;
            caps.init = false;
        }
        caps
    }

    /// Every engine container (running or not) labelled as this daemon instance's, with the husk IDs from its
    /// labels. The engine uses it after a restart, or to catch objects changed with the docker CLI, to match
    /// its records with the engine: records with no engine container are gone ([`ObservedState::Missing`]),
    /// engine containers with no record are orphans to remove with [`DockerDriver::remove_owned`].
    pub async fn list_owned(&self) -> Result<Vec<OwnedContainer>> {
        let found = self
            .list_labelled(&[(labels::INSTANCE, &self.instance)])
            .await?;
        Ok(found.into_iter().filter_map(owned).collect())
    }

    /// Force-removes an engine container of this instance (an orphan found by [`DockerDriver::list_owned`]).
    /// Refuses containers that do not carry this instance's label.
    pub async fn remove_owned(&self, engine_id: &str) -> Result<()> {
        let inspect = match self.docker.inspect_container(engine_id, None).await {
            Ok(i) => i,
            Err(e) if status(&e) == Some(404) => return Ok(()),
            Err(e) => {
                return Err(engine_error(
                    format!("inspect engine container {engine_id}"),
                    e,
                ));
            }
        };
        let ours = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(labels::INSTANCE));
        if ours != Some(&self.instance) {
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!(
                    "engine container {engine_id} does not belong to husk instance {}; not removing it",
                    self.instance
                ),
            ));
        }
        self.remove(engine_id).await
    }

    /// The engine's events about this instance's containers, from now on, until the caller drops the stream.
    pub fn events(&self) -> EngineEvents {
        let mut filters = labels::filter(&[(labels::INSTANCE, &self.instance)]);
        filters.insert("type".to_string(), vec!["container".to_string()]);
        let options = EventsOptions {
            since: None,
            until: None,
            filters: Some(filters),
        };
        let stream = self.docker.events(Some(options)).map(|item| match item {
            Ok(message) => Ok(event(message)),
            Err(e) => Err(engine_error("follow the engine's events", e)),
        });
        Box::pin(stream.try_filter_map(|e| async move { Ok(e) }))
    }

    // ---- helpers for the trait implementation ----

    /// Whether the engine's event log holds an `oom` event for engine container `id` from `since` (the start of
    /// its last run) until now.
    pub(crate) async fn oom_event_since(&self, id: &str, since: Timestamp) -> Result<bool> {
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 1)
            .unwrap_or_default();
        let mut filters = std::collections::HashMap::new();
        filters.insert("container".to_string(), vec![id.to_string()]);
        filters.insert("event".to_string(), vec!["oom".to_string()]);
        let options = EventsOptions {
            since: Some(engine_time(since)),
            until: Some(until.to_string()),
            filters: Some(filters),
        };
        let found = self
            .docker
            .events(Some(options))
            .try_any(|m| async move { m.action.as_deref() == Some("oom") })
            .await
            .map_err(|e| engine_error("read the engine's event log", e))?;
        Ok(found)
    }

    /// Lists engine containers (running or not) matching every label pair.
    pub(crate) async fn list_labelled(
        &self,
        pairs: &[(&str, &str)],
    ) -> Result<Vec<ContainerSummary>> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(labels::filter(pairs)),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error("list the engine's containers", e))
    }

    /// The engine container of a husk container: the recorded ID, or the one labelled with its husk ID (a
    /// container whose creation was interrupted before the ID was recorded).
    pub(crate) async fn find_container(&self, c: &ContainerRecord) -> Result<Option<String>> {
        if let Some(id) = Self::engine_id(c) {
            return Ok(Some(id));
        }
        let found = self
            .list_labelled(&[
                (labels::INSTANCE, &self.instance),
                (labels::CONTAINER_ID, c.id()),
            ])
            .await?;
        Ok(found.into_iter().find_map(|s| s.id))
    }

    /// Like [`Self::find_container`], failing with `NotFound` when there is none.
    pub(crate) async fn container_ref(&self, c: &ContainerRecord) -> Result<String> {
        self.find_container(c).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "container {} has no engine container (was it removed with the docker CLI?)",
                    c.name()
                ),
            )
        })
    }

    /// The infra container of a sandbox, recorded or found by its labels.
    pub(crate) async fn find_infra(&self, s: &SandboxRecord) -> Result<Option<String>> {
        if let Some(id) = Self::infra_id(s) {
            return Ok(Some(id));
        }
        let pairs = [
            (labels::INSTANCE, self.instance.as_str()),
            (labels::ROLE, Role::Infra.as_str()),
            (labels::SANDBOX_ID, &s.config.id),
        ];
        Ok(self
            .list_labelled(&pairs)
            .await?
            .into_iter()
            .find_map(|c| c.id))
    }

    /// Force-removes an engine container with its anonymous volumes; an absent one is fine.
    pub(crate) async fn remove(&self, engine_id: &str) -> Result<()> {
        // A forced removal kills a running container with SIGKILL: its 137 is no OOM kill.
        self.killed_here
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(engine_id.to_string());
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        let removed = self.docker.remove_container(engine_id, Some(options)).await;
        // Gone, or its wait saw the mark already: the mark is not needed any more.
        self.killed_here
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(engine_id);
        match removed {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            // "removal already in progress": someone else is removing it.
            Err(e) if status(&e) == Some(409) && e.to_string().contains("in progress") => Ok(()),
            Err(e) => Err(engine_error(
                format!("remove engine container {engine_id}"),
                e,
            )),
        }
    }

    /// Inspects an engine container; `None` when it is gone.
    pub(crate) async fn inspect(
        &self,
        engine_id: &str,
    ) -> Result<Option<ContainerInspectResponse>> {
        match self.docker.inspect_container(engine_id, None).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine_error(
                format!("inspect engine container {engine_id}"),
                e,
            )),
        }
    }

    /// Creates an engine container named `name`. A container of that name left behind by an interrupted
    /// create of the same husk object (same instance, same `owner_label` value) is removed first; any other
    /// holder of the name is a conflict.
    pub(crate) async fn create_named(
        &self,
        name: &str,
        body: ContainerCreateBody,
        owner_label: (&str, &str),
    ) -> Result<String> {
        let options = || CreateContainerOptions {
            name: Some(name.to_string()),
            platform: String::new(),
        };
        match self
            .docker
            .create_container(Some(options()), body.clone())
            .await
        {
            Ok(created) => return Ok(created.id),
            Err(e) if status(&e) == Some(409) => {}
            Err(e) => return Err(engine_error(format!("create engine container {name}"), e)),
        }
        let holder = self.inspect(name).await?;
        let holder_labels = holder
            .as_ref()
            .and_then(|h| h.config.as_ref())
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let same = holder_labels.get(labels::INSTANCE) == Some(&self.instance)
            && holder_labels.get(owner_label.0).map(String::as_str) == Some(owner_label.1);
        if holder.is_some() && !same {
            return Err(Error::conflict(format!(
                "the engine already has a container named {name} that is not this husk object: remove or rename it"
            )));
        }
        if let Some(id) = holder.and_then(|h| h.id) {
            tracing::info!(
                name,
                "removing an engine container left by an interrupted create"
            );
            self.remove(&id).await?;
        }
        self.docker
            .create_container(Some(options()), body)
            .await
            .map(|c| c.id)
            .map_err(|e| engine_error(format!("create engine container {name}"), e))
    }

    /// Whether the engine has an image with this ID.
    async fn has_image(&self, id: &str) -> Result<bool> {
        match self.docker.inspect_image(id).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine_error(format!("inspect image {id}"), e)),
        }
    }

    /// Loads a `docker save` archive into the engine.
    async fn load<S>(&self, what: &str, archive: S) -> Result<()>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    {
        let docker = self.docker.clone().with_timeout(LOAD_TIMEOUT);
        let options = ImportImageOptions {
            quiet: true,
            platform: None,
        };
        let mut answers = docker.import_image_stream(options, archive, None);
        while let Some(answer) = answers.next().await {
            answer.map_err(|e| engine_error(format!("load {what} into the engine"), e))?;
        }
        Ok(())
    }

    /// Makes sure the engine has the image, loading it from husk's image store if it does not.
    pub(crate) async fn ensure_image(&self, image: &ImageRef) -> Result<()> {
        if self.has_image(&image.id).await? {
            return Ok(());
        }
        let _one_load_at_a_time = self.load_lock.lock().await;
        if self.has_image(&image.id).await? {
            return Ok(());
        }
        let what = format!("image {} ({})", image.name, image.id);
        let archive = self
            .images
            .export(image)
            .await
            .map_err(|e| e.context(format!("export {what} from husk's image store")))?;
        self.load(&what, ReaderStream::new(archive)).await?;
        if !self.has_image(&image.id).await? {
            return Err(Error::backend(format!(
                "loaded {what} into the engine, but the engine has no image with that ID: the archive's config is not the image store's"
            )));
        }
        Ok(())
    }

    /// Loads the infra image into the engine.
    pub(crate) async fn load_pause_image(&self) -> Result<()> {
        let _one_load_at_a_time = self.load_lock.lock().await;
        if self.has_image(&self.pause.id).await? {
            return Ok(());
        }
        let archive = bytes::Bytes::from(self.pause.archive.clone());
        self.load(
            "the infra image",
            futures::stream::once(async move { Ok(archive) }),
        )
        .await?;
        if !self.has_image(&self.pause.id).await? {
            return Err(Error::backend(format!(
                "loaded the infra image, but the engine has no image {}",
                self.pause.id
            )));
        }
        Ok(())
    }

    /// What `--privileged` becomes, minus capabilities the engine refused before.
    pub(crate) fn privileges(&self) -> Privileges {
        let refused = self
            .refused_capabilities
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        Privileges {
            capabilities: self
                .daemon_capabilities
                .iter()
                .filter(|c| !refused.contains(*c))
                .cloned()
                .collect(),
            devices: if client::is_local(&self.host) {
                privileged::host_devices()
            } else {
                Vec::new()
            },
        }
    }

    /// Remembers a capability the engine does not know; true if it was new (worth a retry).
    pub(crate) fn refuse_capability(&self, error: &Error) -> bool {
        let Some(rest) = error.message.split("unknown capability: ").nth(1) else {
            return false;
        };
        let name: String = rest
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            return false;
        }
        tracing::info!(capability = %name, "the engine does not know this capability; privileged containers go without it");
        self.refused_capabilities
            .lock()
            .map(|mut r| r.insert(name))
            .unwrap_or(false)
    }

    /// The infra container's create request.
    pub(crate) fn infra_request(&self, config: &SandboxConfig) -> Result<ContainerCreateBody> {
        let labels = labels::infra_labels(&self.instance, &config.id, &config.name);
        crate::spec::infra_body(config, &self.pause.id, labels)
    }

    /// The ID of the infra image.
    pub(crate) fn pause_id(&self) -> &str {
        &self.pause.id
    }

    /// Facts for `husk info`.
    pub(crate) async fn details(&self) -> Result<BTreeMap<String, String>> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| engine_error("read the engine's info", e))?;
        let mut d = BTreeMap::new();
        let (version, api) = self.engine_version();
        d.insert("host".to_string(), self.host.clone());
        d.insert("instance".to_string(), self.instance.clone());
        d.insert("engine_version".to_string(), version);
        d.insert("api_version".to_string(), api);
        d.insert(
            "pause_image".to_string(),
            format!("{} ({})", self.pause.tag, self.pause.id),
        );
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                d.insert(k.to_string(), v);
            }
        };
        put("kernel", info.kernel_version);
        put("os", info.operating_system);
        put("storage_driver", info.driver);
        put("cgroup_driver", info.cgroup_driver.map(|c| c.to_string()));
        put("cgroup_version", info.cgroup_version.map(|c| c.to_string()));
        put("default_runtime", info.default_runtime);
        Ok(d)
    }
}

/// An engine container as an [`OwnedContainer`], if its role label is readable.
fn owned(s: ContainerSummary) -> Option<OwnedContainer> {
    let labels = s.labels.unwrap_or_default();
    let role = labels.get(labels::ROLE).and_then(|r| Role::parse(r))?;
    Some(OwnedContainer {
        engine_id: s.id?,
        engine_name: s
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        role,
        sandbox_id: labels.get(labels::SANDBOX_ID).cloned(),
        container_id: labels.get(labels::CONTAINER_ID).cloned(),
        name: labels.get(labels::NAME).cloned().unwrap_or_default(),
        state: s.state.map(|st| st.to_string()).unwrap_or_default(),
    })
}

fn event(m: bollard::models::EventMessage) -> Option<EngineEvent> {
    let actor = m.actor?;
    let attributes: HashMap<String, String> = actor.attributes.unwrap_or_default();
    // Actions such as "exec_start: sh" carry a detail after a colon.
    let action = m
        .action?
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Some(EngineEvent {
        engine_id: actor.id?,
        role: attributes.get(labels::ROLE).and_then(|r| Role::parse(r)),
        sandbox_id: attributes.get(labels::SANDBOX_ID).cloned(),
        container_id: attributes.get(labels::CONTAINER_ID).cloned(),
        exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        time_nanos: m.time_nano.unwrap_or(0),
        action,
    })
}

/// The engine's view of a container as husk's observed state.
pub(crate) fn observed(inspect: &ContainerInspectResponse) -> ObservedState {
    let Some(state) = inspect.state.as_ref() else {
        return ObservedState::Missing;
    };
    let pid = state.pid.unwrap_or(0) as i32;
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ObservedState::Created,
        // "stopping": the process is still alive.
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => ObservedState::Running { pid },
        Some(ContainerStateStatusEnum::PAUSED) => ObservedState::Paused { pid },
        _ => ObservedState::Exited(exit_status(inspect, state.exit_code.unwrap_or(0) as i32)),
    }
}

/// How the container's last run ended, as the engine recorded it (`code` as `wait` reported it).
pub(crate) fn exit_status(inspect: &ContainerInspectResponse, code: i32) -> ExitStatus {
    let state = inspect.state.clone().unwrap_or_default();
    let reason = match state.status {
        Some(ContainerStateStatusEnum::DEAD) => "the engine marked the container dead".to_string(),
        Some(ContainerStateStatusEnum::REMOVING) => {
            "the engine is removing the container".to_string()
        }
        _ => state.error.unwrap_or_default(),
    };
    ExitStatus {
        code,
        oom_killed: state.oom_killed.unwrap_or(false),
        // The engine says 0001-01-01T00:00:00Z for "never".
        finished_at: state
            .finished_at
            .filter(|t| !t.starts_with("0001-"))
            .and_then(|t| Timestamp::parse(&t).ok()),
        reason,
    }
}

/// The network a sandbox (or standalone container) got, from the engine's inspect.
pub(crate) fn network_status(
    inspect: &ContainerInspectResponse,
    config: &husk_core::NetworkConfig,
) -> NetworkStatus {
    let mode = config.mode().to_string();
    let networks = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default();
    let endpoint = networks.get(&mode).or_else(|| networks.values().next());
    let mut status = NetworkStatus {
        network: mode,
        ports: config.ports.clone(),
        ..Default::default()
    };
    if let Some(e) = endpoint {
        if let Some(ip) = e.ip_address.clone().filter(|ip| !ip.is_empty()) {
            status
                .addresses
                .push(format!("{ip}/{}", e.ip_prefix_len.unwrap_or(32)));
            status.interface = "eth0".to_string();
        }
        status.gateway = e.gateway.clone().unwrap_or_default();
        status.mac = e.mac_address.clone().unwrap_or_default();
    }
    status
}

/// The driver data recorded for a container.
pub(crate) fn container_data(engine_id: &str, engine_name: &str) -> serde_json::Value {
    json!({ "engine_id": engine_id, "engine_name": engine_name })
}

/// The string recorded under `key` in a container's or sandbox's driver data (empty when not recorded).
pub(crate) fn recorded(driver_data: &serde_json::Value, key: &str) -> String {
    driver_data
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

/// A time in the form the engine's events API takes for `since` and `until`: `SECONDS.NANOS` since the epoch
/// (the engine refuses RFC 3339 there).
fn engine_time(t: Timestamp) -> String {
    format!("{}.{:09}", t.unix_seconds(), t.subsec_nanos())
}

/// The driver data recorded for a sandbox.
pub(crate) fn sandbox_data(infra_id: &str, infra_name: &str) -> serde_json::Value {
    json!({ "infra_id": infra_id, "infra_name": infra_name })
}

#[cfg(test)]
mod tests;
