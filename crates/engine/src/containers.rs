//! Container lifecycle.

use std::sync::Arc;
use std::time::Duration;

use husk_core::stdio::BoxStdio;
use husk_core::{
    Action, Capabilities, ContainerConfig, ContainerRecord, ContainerStatus, Error, ExitStatus,
    HealthState, LogOptions, LogStream, Mode, MountConfig, MountKind, Resources, RestartPolicy,
    Result, SandboxConfig, SandboxRecord, SandboxRuntime, SandboxStatus, Stats, Top, units,
};
use husk_metrics::DriverOperation;
use serde_json::json;

use crate::{Engine, EventKind, resolve};
use futures::StreamExt;
use husk_api_types::containers::{
    ContainerCreate, ContainerPruneReport, ContainerStats, ContainerUpdate, ContainerView,
    ExecCreate, WaitCondition, WaitResult,
};

/// Default seconds between the stop signal and SIGKILL.
const DEFAULT_STOP_TIMEOUT: u32 = 10;

/// The default stop signal.
const SIGTERM: i32 = 15;

impl Engine {
    /// Every container (or only the active ones).
    pub fn list_containers(&self, all: bool) -> Result<Vec<ContainerRecord>> {
        let mut list = self.inner.store.list::<ContainerRecord>()?;
        if !all {
            list.retain(|c| c.status.is_active());
        }
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(list)
    }

    /// The inspect view of a container.
    pub fn inspect_container(&self, key: &str) -> Result<ContainerView> {
        let rec = self.container(key)?;
        let sandbox = self.sandbox_of(&rec)?;
        Ok(ContainerView::new(&rec, sandbox.as_ref()))
    }

    /// Creates a container (and, in sandbox mode without a sandbox, one made for it).
    pub async fn create_container(&self, req: ContainerCreate) -> Result<ContainerRecord> {
        let project = crate::scope::project_of(req.project.as_deref())?;
        let name = match req.name.as_deref() {
            Some(n) if !n.is_empty() => {
                units::validate_name("name", n)?;
                n.to_string()
            }
            _ => husk_core::random_name(),
        };
        if self.inner.store.named::<ContainerRecord>(&name)?.is_some() {
            return Err(Error::conflict(format!(
                "the container name {name:?} is already in use"
            )));
        }
        if req.image.is_empty() {
            return Err(Error::invalid("image", "no image given"));
        }
        let image = self.image_for_create(&req.image, req.pull).await?;
        // The quota check and the record that counts against it happen under one lock per project.
        let quota_guard = self.lock(&format!("quota/{project}")).await;
        self.check_service()?;
        self.check_quota(&project, &req.resources)?;
        let sandbox = match &req.sandbox {
            // A container joins only a sandbox of its own project.
            Some(s) => Some(
                Some(self.sandbox(s)?)
                    .filter(|sb| crate::Scope::Project(project.clone()).allows(&sb.project))
                    .ok_or_else(|| Error::not_found(format!("sandbox: {s}")))?,
            ),
            None => None,
        };
        let mode = match (&sandbox, req.mode) {
            (Some(_), Some(Mode::Standalone)) => {
                return Err(Error::invalid(
                    "mode",
                    "a standalone container cannot join a sandbox",
                ));
            }
            (Some(_), _) => Mode::Sandbox,
            (None, Some(m)) => m,
            (None, None) => self.inner.config.default_mode,
        };
        let driver_name = match (&req.driver, &sandbox) {
            (Some(d), Some(sb)) if *d != sb.driver => {
                return Err(Error::invalid(
                    "driver",
                    format!(
                        "sandbox {} runs on driver {}, not {d}",
                        sb.config.name, sb.driver
                    ),
                ));
            }
            (Some(d), _) => d.clone(),
            (None, Some(sb)) => sb.driver.clone(),
            (None, None) => self.inner.config.default_driver.clone(),
        };
        let driver = self.driver(&driver_name)?;
        let caps = driver.capabilities();
        caps.require_mode(driver.name(), mode)?;
        if let Some(sb) = &sandbox {
            if sb.status != SandboxStatus::Ready {
                return Err(Error::conflict(format!(
                    "sandbox {} is {}",
                    sb.config.name, sb.status
                )));
            }
            if req.hostname.is_some() {
                return Err(Error::invalid(
                    "hostname",
                    format!(
                        "containers of sandbox {} share its hostname; set it when creating the sandbox",
                        sb.config.name
                    ),
                ));
            }
            if !req.network.ports.is_empty() || !req.network.mode.is_empty() || req.publish_all {
                return Err(Error::invalid(
                    "network",
                    format!(
                        "containers of sandbox {} share its network; set ports and network on the sandbox",
                        sb.config.name
                    ),
                ));
            }
        }
        if req.share_pid && (sandbox.is_some() || mode == Mode::Standalone) {
            return Err(Error::invalid(
                "share_pid",
                "share_pid applies to the sandbox `run` makes; give it to `sandbox create` instead",
            ));
        }
        if req.privileged && !caps.privileged {
            return Err(Error::unsupported(format!(
                "driver {} does not support privileged containers",
                driver.name()
            )));
        }
        if req.tty && !caps.tty {
            return Err(Error::unsupported(format!(
                "driver {} does not support terminals",
                driver.name()
            )));
        }
        check_options(&req, driver.name(), &caps)?;
        if let Some(sb) = &sandbox
            && req.resources.shm_size_bytes.is_some()
        {
            return Err(Error::invalid(
                "shm_size",
                format!(
                    "the containers of sandbox {} share its /dev/shm: give its size to the sandbox (sandbox create --shm-size)",
                    sb.config.name
                ),
            ));
        }
        let id = husk_core::new_id();
        let mut config = resolve::container_config(&req, &id, &name, &image)?;
        config.log = resolve::log_limits(config.log, self.inner.config.log_defaults)?;
        config.cgroup_parent = sandbox
            .as_ref()
            .and_then(|sb| sb.config.cgroup_parent.clone());
        if let Some(sb) = &sandbox
            && sb.config.network.mode() == "host"
            && let Some(key) = config
                .security
                .sysctls
                .keys()
                .find(|k| k.starts_with("net."))
        {
            return Err(Error::invalid(
                "sysctls",
                format!(
                    "sysctl {key:?} would change the host's network: sandbox {} uses the host's",
                    sb.config.name
                ),
            ));
        }
        let healthcheck = resolve::healthcheck(req.healthcheck.as_ref(), &image)?;
        if healthcheck.is_some() {
            caps.require(
                driver.name(),
                "health checks (they run through exec)",
                caps.exec,
            )?;
        }
        let rootfs = self.inner.images.rootfs_layers(&image)?;
        let mut prepared = self
            .prepare_mounts(
                &req.mounts,
                &image,
                &rootfs,
                sandbox.as_ref(),
                driver.name(),
                &caps,
            )
            .await?;
        config.mounts = std::mem::take(&mut prepared.mounts);
        if req.init
            && let Err(e) = self.add_init(&mut config)
        {
            self.discard_volumes(&prepared.created);
            return Err(e);
        }
        // Held until the container is recorded, so no removal takes the image (or an image mount's) meanwhile (no
        // await before then; the volumes above were filled from it before: a removal since then fails the create
        // here).
        let image_held = match self.hold_image(&image).await {
            Ok((_, held)) => match self.check_image_mounts_held(&config.mounts) {
                Ok(()) => held,
                Err(e) => {
                    drop(held);
                    self.discard_volumes(&prepared.created);
                    return Err(e);
                }
            },
            Err(e) => {
                self.discard_volumes(&prepared.created);
                return Err(e);
            }
        };

        // The sandbox `run` makes for a container in sandbox mode: same name, goes with the container.
        let implicit = if mode == Mode::Sandbox && sandbox.is_none() {
            Some(SandboxRecord {
                config: SandboxConfig {
                    id: husk_core::new_id(),
                    name: name.clone(),
                    hostname: req.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
                    share_pid: req.share_pid,
                    network: config.network.clone(),
                    resources: req.resources.clone(),
                    labels: Default::default(),
                    annotations: Default::default(),
                    ..Default::default()
                },
                driver: driver_name.clone(),
                status: SandboxStatus::Creating,
                runtime: SandboxRuntime::default(),
                created_at: husk_core::now_rfc3339(),
                owner_container: Some(id.clone()),
                project: project.clone(),
            })
        } else {
            None
        };
        let mut rec = ContainerRecord {
            config,
            driver: driver_name,
            mode,
            sandbox_id: sandbox
                .as_ref()
                .or(implicit.as_ref())
                .map(|s| s.config.id.clone()),
            restart_policy: req.restart_policy,
            auto_remove: req.auto_remove,
            status: ContainerStatus::Creating,
            runtime: Default::default(),
            exit: None,
            restart_count: 0,
            stopped_by_user: false,
            created_at: husk_core::now_rfc3339(),
            started_at: String::new(),
            error: String::new(),
            project,
            annotations: req.annotations.clone(),
            init: req.init,
            healthcheck,
            health: None,
        };
        let recorded = self
            .inner
            .store
            .begin_operation(
                "create_container",
                &id,
                &json!({"implicit_sandbox": implicit.as_ref().map(|s| s.config.id.clone())}),
            )
            .and_then(|op| {
                self.inner.store.transaction(|tx| {
                    if let Some(sb) = &implicit {
                        tx.insert(sb)?;
                    }
                    tx.insert(&rec)
                })?;
                Ok(op)
            });
        // The record marks the image and the volumes used: nothing can remove them from here on.
        drop(image_held);
        drop(std::mem::take(&mut prepared.guards));
        drop(quota_guard);
        let op = match recorded {
            Ok(op) => op,
            Err(e) => {
                self.discard_volumes(&prepared.created);
                return Err(e);
            }
        };
        let started = std::time::Instant::now();
        let made = async {
            let mut sb = match (implicit.clone(), sandbox.clone()) {
                (Some(mut sb), _) => {
                    sb.runtime = driver.create_sandbox(&sb.config).await?;
                    sb.status = SandboxStatus::Ready;
                    self.inner.store.update(&sb)?;
                    Some(sb)
                }
                (None, sb) => sb,
            };
            self.inner.store.set_operation_step(op, "sandbox_ready")?;
            crate::failpoint("create_container:sandbox_ready");
            let runtime = driver
                .create_container(&rec.config, sb.as_ref(), &rootfs)
                .await?;
            rec.runtime = runtime;
            crate::failpoint("create_container:driver_created");
            rec.status = ContainerStatus::Created;
            self.inner.store.update(&rec)?;
            Ok::<_, Error>(sb.take())
        }
        .await;
        self.observe_driver(driver.name(), DriverOperation::Create, started, &made);
        match made {
            Ok(_) => {
                self.inner.store.finish_operation(op)?;
                self.emit_record(&rec, EventKind::Created);
                Ok(rec)
            }
            Err(e) => {
                self.rollback_create(&rec, implicit.as_ref().map(|s| s.config.id.as_str()))
                    .await;
                let _guards = self
                    .lock_volumes(
                        &prepared
                            .created
                            .iter()
                            .map(|v| v.name.clone())
                            .collect::<Vec<_>>(),
                    )
                    .await;
                self.discard_volumes(&prepared.created);
                self.inner.store.finish_operation(op)?;
                Err(e)
            }
        }
    }

    /// Runs the container's command under husk's init: the init binary bind-mounted read-only at
    /// [`crate::mounts::INIT_PATH`], its arguments first.
    fn add_init(&self, config: &mut ContainerConfig) -> Result<()> {
        let binary = self.inner.config.init_binary.as_ref().ok_or_else(|| {
            Error::unsupported("--init is not available: this daemon has no init binary configured")
        })?;
        let path = binary.display().to_string();
        config.mounts.push(MountConfig {
            kind: MountKind::Bind,
            source: path.clone(),
            destination: crate::mounts::INIT_PATH.into(),
            readonly: true,
            options: Vec::new(),
            host_path: path,
            ..Default::default()
        });
        let mut args = vec![crate::mounts::INIT_PATH.to_string(), "--".to_string()];
        args.append(&mut config.process.args);
        config.process.args = args;
        Ok(())
    }

    /// Undoes a create that failed or was interrupted: driver objects first, then records.
    pub(crate) async fn rollback_create(
        &self,
        rec: &ContainerRecord,
        implicit_sandbox: Option<&str>,
    ) {
        if let Ok(driver) = self.driver(&rec.driver) {
            let _ = driver.delete_container(rec).await;
            if let Some(sid) = implicit_sandbox
                && let Ok(Some(sb)) = self.inner.store.get::<SandboxRecord>(sid)
            {
                let _ = driver.delete_sandbox(&sb).await;
            }
        }
        let _ = self.inner.store.delete::<ContainerRecord>(rec.id());
        if let Some(sid) = implicit_sandbox {
            let _ = self.inner.store.delete::<SandboxRecord>(sid);
        }
    }

    /// Creates and starts a container in one call (`husk run`): with `attach`, connects to its stdio (with
    /// stdin when `attach == Some(true)`) before it starts, so no output is missed. If the start fails, a
    /// container created for `--rm` is removed again.
    pub async fn run_container(
        &self,
        req: ContainerCreate,
        attach: Option<bool>,
    ) -> Result<(ContainerRecord, Option<BoxStdio>)> {
        let auto_remove = req.auto_remove;
        let rec = self.create_container(req).await?;
        let id = rec.config.id.clone();
        let started = async {
            let stdio = match attach {
                Some(stdin) => Some(self.attach(&id, stdin).await?),
                None => None,
            };
            let rec = self.start_container(&id).await?;
            Ok::<_, Error>((rec, stdio))
        }
        .await;
        if started.is_err() && auto_remove {
            let _ = self.remove_container(&id, true).await;
        }
        started
    }

    /// Starts a created or exited container.
    pub async fn start_container(&self, key: &str) -> Result<ContainerRecord> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let rec = self.container(&id)?;
        Action::Start.check(rec.name(), rec.status)?;
        self.start_locked(rec, true).await
    }

    /// Starts the container; the caller holds its lock. `by_user` resets the restart count.
    pub(crate) async fn start_locked(
        &self,
        mut rec: ContainerRecord,
        by_user: bool,
    ) -> Result<ContainerRecord> {
        let driver = self.driver(&rec.driver)?;
        let mut sandbox = self.sandbox_of(&rec)?;
        if let Some(sb) = &sandbox
            && !driver.sandbox_alive(sb).await?
        {
            // A sandbox of its own (`run` in sandbox mode made it) comes back with the container, as a Docker
            // container's namespaces do when it starts again after a reboot; a shared one is the pod's to remake.
            if sb.owner_container.as_deref() != Some(rec.id()) {
                return Err(Error::conflict(format!(
                    "sandbox {} is gone; remove the container and create it again",
                    sb.config.name
                )));
            }
            sandbox = Some(self.revive_own_sandbox(sb, driver.as_ref()).await?);
        }
        let started = std::time::Instant::now();
        let runtime = driver.start_container(&rec, sandbox.as_ref()).await;
        self.observe_driver(driver.name(), DriverOperation::Start, started, &runtime);
        rec.runtime = runtime?;
        crate::failpoint("start_container:driver_started");
        rec.status = ContainerStatus::Running;
        rec.started_at = husk_core::now_rfc3339();
        rec.stopped_by_user = false;
        rec.error.clear();
        if by_user {
            rec.restart_count = 0;
        }
        if rec.healthcheck.is_some() {
            rec.health = Some(HealthState::starting());
        }
        self.inner.store.update(&rec)?;
        self.emit_record(&rec, EventKind::Started);
        self.watch(&rec);
        self.start_health(&rec);
        Ok(rec)
    }

    /// Brings back the dead sandbox that belongs to one container (the caller holds that container's lock).
    async fn revive_own_sandbox(
        &self,
        sb: &SandboxRecord,
        driver: &dyn husk_core::Driver,
    ) -> Result<SandboxRecord> {
        let mut sb = sb.clone();
        sb.runtime = driver.revive_sandbox(&sb).await.map_err(|e| {
            Error::new(
                e.kind,
                format!("bring back sandbox {}: {}", sb.config.name, e.message),
            )
        })?;
        sb.status = SandboxStatus::Ready;
        self.inner.store.update(&sb)?;
        tracing::info!(sandbox = %sb.config.id, "the container's own sandbox had died; brought back");
        Ok(sb)
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout` seconds (default: its own, else 10).
    pub async fn stop_container(&self, key: &str, timeout: Option<u32>) -> Result<ContainerRecord> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let rec = self.container(&id)?;
        Action::Stop.check(rec.name(), rec.status)?;
        self.stop_locked(rec, timeout).await
    }

    pub(crate) async fn stop_locked(
        &self,
        mut rec: ContainerRecord,
        timeout: Option<u32>,
    ) -> Result<ContainerRecord> {
        rec.stopped_by_user = true;
        match rec.status {
            ContainerStatus::Created | ContainerStatus::Exited => {
                self.inner.store.update(&rec)?;
                return Ok(rec);
            }
            ContainerStatus::Restarting => {
                // Between exit and restart: nothing runs; cancel the restart.
                rec.status = ContainerStatus::Exited;
                self.inner.store.update(&rec)?;
                return Ok(rec);
            }
            _ => {}
        }
        self.inner.store.update(&rec)?;
        let driver = self.driver(&rec.driver)?;
        let started = std::time::Instant::now();
        let stopped = self.signal_until_exit(&driver, &rec, timeout).await;
        self.observe_driver(driver.name(), DriverOperation::Stop, started, &stopped);
        stopped?;
        self.container(rec.id())
    }

    /// Stops the running (or paused) container of `rec`: its stop signal, then SIGKILL after `timeout` seconds
    /// (default: its own, else 10); returns once its exit is recorded.
    async fn signal_until_exit(
        &self,
        driver: &Arc<dyn husk_core::Driver>,
        rec: &ContainerRecord,
        timeout: Option<u32>,
    ) -> Result<()> {
        let mut events = self.subscribe();
        if rec.status == ContainerStatus::Paused {
            driver.unpause(rec).await?;
        }
        let signal = rec.config.stop_signal.unwrap_or(SIGTERM);
        let timeout = Duration::from_secs(
            timeout
                .or(rec.config.stop_timeout)
                .unwrap_or(DEFAULT_STOP_TIMEOUT) as u64,
        );
        let _ = driver.kill(rec, signal, false).await;
        crate::failpoint("stop_container:signalled");
        if !self.wait_exit_event(&mut events, rec.id(), timeout).await {
            let _ = driver.kill(rec, 9, true).await;
            if !self
                .wait_exit_event(&mut events, rec.id(), Duration::from_secs(30))
                .await
            {
                return Err(Error::timeout(format!(
                    "container {} did not stop after SIGKILL",
                    rec.name()
                )));
            }
        }
        Ok(())
    }

    /// Waits for an `Exited` event of `id` (or for the record to say it is no longer active).
    async fn wait_exit_event(
        &self,
        events: &mut tokio::sync::broadcast::Receiver<crate::Event>,
        id: &str,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(rec) = self.container(id)
                && !matches!(
                    rec.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                )
            {
                return true;
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return false,
                Ok(Ok(e))
                    if e.id == id
                        && matches!(e.kind, EventKind::Exited(_) | EventKind::Removed) =>
                {
                    return true;
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return false,
                Ok(_) => {}
            }
        }
    }

    /// Stops (if needed) and starts a container again.
    pub async fn restart_container(
        &self,
        key: &str,
        timeout: Option<u32>,
    ) -> Result<ContainerRecord> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let rec = self.container(&id)?;
        Action::Restart.check(rec.name(), rec.status)?;
        let rec = self.stop_locked(rec, timeout).await?;
        self.start_locked(rec, true).await
    }

    /// Sends a signal (by name or number) to the main process.
    pub async fn kill_container(&self, key: &str, signal: &str) -> Result<()> {
        let sig = units::parse_signal(if signal.is_empty() { "KILL" } else { signal })?;
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        Action::Kill.check(rec.name(), rec.status)?;
        if matches!(sig, 9 | 15 | 2 | 3) {
            rec.stopped_by_user = true;
            self.inner.store.update(&rec)?;
        }
        self.driver(&rec.driver)?.kill(&rec, sig, false).await
    }

    /// Freezes a container.
    pub async fn pause_container(&self, key: &str) -> Result<()> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        Action::Pause.check(rec.name(), rec.status)?;
        let driver = self.driver(&rec.driver)?;
        driver
            .capabilities()
            .require(driver.name(), "pause", driver.capabilities().pause)?;
        driver.pause(&rec).await?;
        rec.status = ContainerStatus::Paused;
        self.inner.store.update(&rec)?;
        self.emit_record(&rec, EventKind::Paused);
        Ok(())
    }

    /// Thaws a container.
    pub async fn unpause_container(&self, key: &str) -> Result<()> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        Action::Unpause.check(rec.name(), rec.status)?;
        self.driver(&rec.driver)?.unpause(&rec).await?;
        rec.status = ContainerStatus::Running;
        self.inner.store.update(&rec)?;
        self.emit_record(&rec, EventKind::Unpaused);
        Ok(())
    }

    /// Changes a container's limits (its driver applies them now if it runs, and at its next start) and its
    /// restart policy, as `docker update` does; what `req` leaves out stays. Returns the updated record.
    pub async fn update_container(
        &self,
        key: &str,
        req: &ContainerUpdate,
    ) -> Result<ContainerRecord> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        let new = &req.resources;
        let changes_limits = new.memory_bytes.is_some()
            || new.nano_cpus.is_some()
            || new.pids_limit.is_some()
            || new.cpu_shares.is_some()
            || new.cpuset_cpus.is_some()
            || new.cpuset_mems.is_some();
        if new.shm_size_bytes.is_some() {
            return Err(Error::invalid(
                "shm_size",
                "the size of /dev/shm cannot change while the container exists",
            ));
        }
        if !changes_limits && req.restart_policy.is_none() {
            return Err(Error::bad_request(
                "nothing to update: give a memory, CPU or PIDs limit, or a restart policy",
            ));
        }
        if matches!(
            rec.status,
            ContainerStatus::Creating | ContainerStatus::Removing
        ) {
            return Err(Error::conflict(format!(
                "cannot update container {}: it is {}",
                rec.name(),
                rec.status
            )));
        }
        if let Some(policy) = &req.restart_policy
            && rec.auto_remove
            && *policy != RestartPolicy::No
        {
            return Err(Error::invalid(
                "restart_policy",
                format!(
                    "container {} is removed when it exits (--rm): it cannot have a restart policy",
                    rec.name()
                ),
            ));
        }
        let old = rec.config.resources.clone();
        unchanged_on_update(new, &old)?;
        if changes_limits {
            resolve::validate_resources(new)?;
            let driver = self.driver(&rec.driver)?;
            let caps = driver.capabilities();
            caps.require(
                driver.name(),
                "changing a container's limits (update)",
                caps.update_limits,
            )?;
            let merged = Resources {
                memory_bytes: new.memory_bytes.or(old.memory_bytes),
                nano_cpus: new.nano_cpus.or(old.nano_cpus),
                pids_limit: new.pids_limit.or(old.pids_limit),
                cpu_shares: new.cpu_shares.or(old.cpu_shares),
                cpuset_cpus: new.cpuset_cpus.clone().or(old.cpuset_cpus.clone()),
                cpuset_mems: new.cpuset_mems.clone().or(old.cpuset_mems.clone()),
                ..old.clone()
            };
            resolve::validate_resources(&merged)?;
            // Only what grows counts against the project's quota.
            let growth = Resources {
                memory_bytes: Some(
                    (merged.memory_bytes.unwrap_or(0) - old.memory_bytes.unwrap_or(0)).max(0),
                ),
                nano_cpus: Some(
                    (merged.nano_cpus.unwrap_or(0) - old.nano_cpus.unwrap_or(0)).max(0),
                ),
                ..Default::default()
            };
            let _quota = self.lock(&format!("quota/{}", rec.project)).await;
            self.check_quota_growth(&rec.project, 0, &growth)?;
            driver.update_limits(&rec, &merged).await?;
            rec.config.resources = merged;
        }
        if let Some(policy) = &req.restart_policy {
            rec.restart_policy = *policy;
        }
        self.inner.store.update(&rec)?;
        Ok(rec)
    }

    /// Removes every stopped container (created, exited or dead), as `docker container prune` does, with the
    /// sandboxes `run` made for them; a capsule's containers stay (they go with their capsule), and so does one
    /// that started meanwhile.
    pub async fn prune_containers(&self) -> Result<ContainerPruneReport> {
        let mut report = ContainerPruneReport::default();
        for rec in self.list_containers(true)? {
            let stopped = matches!(
                rec.status,
                ContainerStatus::Created | ContainerStatus::Exited | ContainerStatus::Dead
            );
            if !stopped
                || rec
                    .annotations
                    .contains_key(crate::capsules::CAPSULE_ANNOTATION)
            {
                continue;
            }
            let size = self.changes_size(&rec).await.unwrap_or(0);
            match self.remove_container(rec.id(), false).await {
                Ok(()) => {
                    report.containers_deleted.push(rec.config.id.clone());
                    report.space_reclaimed += size;
                }
                // Started, or removed, since the listing.
                Err(e)
                    if matches!(
                        e.kind,
                        husk_core::ErrorKind::Conflict | husk_core::ErrorKind::NotFound
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Removes a container (a running one only with `force`), and the sandbox `run` made for it.
    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        self.remove_container_with(key, force, false).await
    }

    /// Removes a container as [`Engine::remove_container`] does, and with `volumes` the anonymous volumes only
    /// it used (`rm -v`, `--rm`).
    pub async fn remove_container_with(&self, key: &str, force: bool, volumes: bool) -> Result<()> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        if !force {
            Action::Delete.check(rec.name(), rec.status)?;
        }
        let op = self
            .inner
            .store
            .begin_operation("remove_container", &id, &json!({}))?;
        let was_running = matches!(
            rec.status,
            ContainerStatus::Running | ContainerStatus::Paused
        );
        rec.status = ContainerStatus::Removing;
        self.inner.store.update(&rec)?;
        crate::failpoint("remove_container:marked");
        if was_running {
            // Killed by the removal, as Docker reports it (its exit is not watched once the record goes).
            self.emit_record(&rec, EventKind::Exited(128 + 9));
        }
        self.remove_locked(&rec).await?;
        self.inner.store.finish_operation(op)?;
        if volumes {
            self.remove_anonymous_volumes(&rec).await;
        }
        Ok(())
    }

    /// Removes the container's driver objects, its record, and its implicit sandbox. Idempotent.
    pub(crate) async fn remove_locked(&self, rec: &ContainerRecord) -> Result<()> {
        self.stop_health(rec.id());
        let driver = self.driver(&rec.driver)?;
        // The sandbox `run` made for it goes too. The records go last, together, so whoever sees the container
        // gone sees its sandbox gone (a crash before this point is finished by the `remove_container`
        // operation at the next start).
        let implicit = self
            .sandbox_of(rec)?
            .filter(|sb| sb.owner_container.as_deref() == Some(rec.id()));
        let started = std::time::Instant::now();
        let deleted = match &implicit {
            Some(sb) => driver.delete_container_and_sandbox(rec, sb).await,
            None => driver.delete_container(rec).await,
        };
        self.observe_driver(driver.name(), DriverOperation::Remove, started, &deleted);
        deleted?;
        self.inner.store.transaction(|tx| {
            tx.delete::<ContainerRecord>(rec.id())?;
            if let Some(sb) = &implicit {
                tx.delete::<SandboxRecord>(&sb.config.id)?;
            }
            Ok(())
        })?;
        self.forget_actions(rec.id());
        self.emit_record(rec, EventKind::Removed);
        self.forget_lock(rec.id());
        Ok(())
    }

    /// Waits for `condition` and returns the exit code.
    pub async fn wait_container(&self, key: &str, condition: WaitCondition) -> Result<WaitResult> {
        let mut events = self.subscribe();
        let rec = self.container(key)?;
        let id = rec.config.id.clone();
        let done_now = match condition {
            WaitCondition::NotRunning => !matches!(
                rec.status,
                ContainerStatus::Running
                    | ContainerStatus::Paused
                    | ContainerStatus::Restarting
                    | ContainerStatus::Created
            ),
            _ => false,
        };
        if done_now {
            return Ok(WaitResult {
                status_code: rec.exit.as_ref().map(|e| e.code).unwrap_or(0),
                exit: rec.exit,
            });
        }
        let mut last = rec.exit.clone();
        loop {
            match events.recv().await {
                Ok(e) if e.id == id => match (&e.kind, condition) {
                    (
                        EventKind::Exited(code),
                        WaitCondition::NotRunning | WaitCondition::NextExit,
                    ) => {
                        let exit = self.container(&id).ok().and_then(|r| r.exit);
                        return Ok(WaitResult {
                            status_code: *code,
                            exit,
                        });
                    }
                    (EventKind::Exited(_), WaitCondition::Removed) => {
                        last = self.container(&id).ok().and_then(|r| r.exit);
                    }
                    (EventKind::Removed, _) => {
                        return Ok(WaitResult {
                            status_code: last.as_ref().map(|e| e.code).unwrap_or(0),
                            exit: last,
                        });
                    }
                    _ => {}
                },
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Missed events: look at the record instead.
                    match self.inner.store.get::<ContainerRecord>(&id)? {
                        None => {
                            return Ok(WaitResult {
                                status_code: last.as_ref().map(|e| e.code).unwrap_or(0),
                                exit: last,
                            });
                        }
                        Some(r)
                            if condition != WaitCondition::Removed
                                && matches!(
                                    r.status,
                                    ContainerStatus::Exited | ContainerStatus::Dead
                                ) =>
                        {
                            return Ok(WaitResult {
                                status_code: r.exit.as_ref().map(|e| e.code).unwrap_or(0),
                                exit: r.exit,
                            });
                        }
                        _ => {}
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(Error::internal("the daemon is shutting down"));
                }
            }
        }
    }

    /// Runs another process in a running container.
    pub async fn exec(&self, key: &str, req: &ExecCreate) -> Result<BoxStdio> {
        self.exec_until(key, req, None).await
    }

    /// [`Engine::exec`], the process killed if it still runs after `deadline` (where the driver can).
    pub async fn exec_until(
        &self,
        key: &str,
        req: &ExecCreate,
        deadline: Option<std::time::Duration>,
    ) -> Result<BoxStdio> {
        let rec = self.container(key)?;
        Action::Exec.check(rec.name(), rec.status)?;
        let driver = self.driver(&rec.driver)?;
        let caps = driver.capabilities();
        caps.require(driver.name(), "exec", caps.exec)?;
        if req.tty {
            caps.require(driver.name(), "terminals", caps.tty)?;
        }
        let process = resolve::exec_process(&rec.config, req)?;
        let stdio = match deadline {
            Some(d) => driver.exec_with_deadline(&rec, &process, d).await,
            None => driver.exec(&rec, &process).await,
        }?;
        crate::failpoint("exec_container:started");
        Ok(stdio)
    }

    /// Connects to the main process's stdio.
    pub async fn attach(&self, key: &str, stdin: bool) -> Result<BoxStdio> {
        let rec = self.container(key)?;
        Action::Attach.check(rec.name(), rec.status)?;
        if stdin && !rec.config.process.stdin {
            return Err(Error::invalid(
                "stdin",
                format!(
                    "container {} was not created with an open stdin (-i)",
                    rec.name()
                ),
            ));
        }
        let driver = self.driver(&rec.driver)?;
        driver
            .capabilities()
            .require(driver.name(), "attach", driver.capabilities().attach)?;
        driver.attach(&rec, stdin).await
    }

    /// Resizes the main process's terminal.
    pub async fn resize(&self, key: &str, rows: u16, cols: u16) -> Result<()> {
        let rec = self.container(key)?;
        if !rec.config.process.tty {
            return Err(Error::conflict(format!(
                "container {} has no terminal",
                rec.name()
            )));
        }
        self.driver(&rec.driver)?.resize(&rec, rows, cols).await
    }

    /// Opens a running container's CRI log file again (kubelet rotated it); nothing for a container that is not
    /// running (its log is closed) or has no CRI log.
    pub async fn reopen_container_log(&self, key: &str) -> Result<()> {
        let rec = self.container(key)?;
        if rec.config.cri_log_path.is_none() {
            return Err(Error::conflict(format!(
                "container {} has no CRI log to reopen",
                rec.name()
            )));
        }
        if !matches!(
            rec.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Err(Error::conflict(format!(
                "container {} is not running",
                rec.name()
            )));
        }
        self.driver(&rec.driver)?.reopen_log(&rec).await
    }

    /// The container's output.
    pub async fn logs(&self, key: &str, options: &LogOptions) -> Result<LogStream> {
        let rec = self.container(key)?;
        self.driver(&rec.driver)?.logs(&rec, options).await
    }

    /// Resource usage now.
    pub async fn stats(&self, key: &str) -> Result<Stats> {
        let rec = self.container(key)?;
        Action::Stats.check(rec.name(), rec.status)?;
        self.driver(&rec.driver)?.stats(&rec).await
    }

    /// The resource usage of the containers `keys` name, or of every running (or paused) container when there
    /// are none, read side by side (a few at a time) in the order asked for (newest first for all). A container
    /// that is named but unknown or not running is an error; one that stops while all are read is left out.
    pub async fn stats_of(&self, keys: &[String]) -> Result<Vec<ContainerStats>> {
        /// Readings in flight at once: enough to hide a driver's round trip (the docker engine's, a VM agent's),
        /// few enough not to flood it.
        const AT_ONCE: usize = 16;
        let named = !keys.is_empty();
        let records = if named {
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                let rec = self.container(key)?;
                Action::Stats.check(rec.name(), rec.status)?;
                records.push(rec);
            }
            records
        } else {
            let mut all = self.list_containers(false)?;
            all.retain(|c| Action::Stats.allowed_in(c.status));
            all
        };
        let readings = futures::stream::iter(records)
            .map(|rec| async move {
                let stats = self.driver(&rec.driver)?.stats(&rec).await?;
                Ok::<_, husk_core::Error>(ContainerStats {
                    id: rec.config.id.clone(),
                    name: rec.name().to_string(),
                    stats,
                })
            })
            .buffered(AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut list = Vec::with_capacity(readings.len());
        for reading in readings {
            match reading {
                Ok(s) => list.push(s),
                Err(e) if named => return Err(e),
                Err(e) => tracing::debug!("stats: left out a container: {e}"),
            }
        }
        Ok(list)
    }

    /// The container's processes.
    pub async fn top(&self, key: &str) -> Result<Top> {
        self.top_with(key, None).await
    }

    /// The container's processes, as the host's `ps` shows them with `ps_args` when given.
    pub async fn top_with(&self, key: &str, ps_args: Option<&str>) -> Result<Top> {
        let rec = self.container(key)?;
        Action::Top.check(rec.name(), rec.status)?;
        let ps_args = ps_args.map(str::trim).filter(|a| !a.is_empty());
        self.driver(&rec.driver)?.top_with(&rec, ps_args).await
    }

    /// Renames a container.
    pub async fn rename_container(&self, key: &str, new_name: &str) -> Result<()> {
        units::validate_name("name", new_name)?;
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        rec.config.name = new_name.to_string();
        self.inner.store.update(&rec)
    }

    /// Records an exit the driver reported (used by the monitor and by recovery).
    ///
    /// The health state stays as it was last seen (`ps` shows it for running containers only).
    pub(crate) fn record_exit(&self, rec: &mut ContainerRecord, exit: ExitStatus) -> Result<()> {
        rec.status = ContainerStatus::Exited;
        rec.runtime.pid = 0;
        rec.exit = Some(exit);
        self.inner.store.update(rec)
    }
}

/// Refuses options the driver cannot honour, naming the driver and the option.
/// Refuses an update that would change what is fixed when a container is created: its `oom_score_adj`
/// (compared as the engine restricted it), memory plus swap, huge page and cgroup v2 limits. The same values
/// again are fine (the CRI's UpdateContainerResources repeats them all).
fn unchanged_on_update(new: &Resources, old: &Resources) -> Result<()> {
    let oom = new.oom_score_adj.map(|o| {
        husk_core::units::restrict_oom_score_adj(o, husk_core::units::daemon_oom_score_adj())
    });
    let fixed = [
        ("oom_score_adj", oom.is_some() && oom != old.oom_score_adj),
        (
            "memory_swap",
            new.memory_swap_bytes.is_some() && new.memory_swap_bytes != old.memory_swap_bytes,
        ),
        (
            "hugepage_limits",
            !new.hugepage_limits.is_empty() && new.hugepage_limits != old.hugepage_limits,
        ),
        (
            "unified",
            !new.unified.is_empty() && new.unified != old.unified,
        ),
    ];
    match fixed.iter().find(|(_, changed)| *changed) {
        Some((field, _)) => Err(Error::invalid(
            *field,
            format!("{field} is set when a container is created and cannot change while it exists"),
        )),
        None => Ok(()),
    }
}

fn check_options(req: &ContainerCreate, driver: &str, caps: &Capabilities) -> Result<()> {
    if req.init {
        caps.require(driver, "--init", caps.init)?;
    }
    if !req.ulimits.is_empty() {
        caps.require(driver, "ulimits (--ulimit)", caps.ulimits)?;
    }
    if !req.group_add.is_empty() {
        caps.require(driver, "supplementary groups (--group-add)", caps.group_add)?;
    }
    if req.read_only {
        caps.require(
            driver,
            "a read-only root filesystem (--read-only)",
            caps.readonly_rootfs,
        )?;
    }
    if req.resources.shm_size_bytes.is_some() {
        caps.require(driver, "a /dev/shm size (--shm-size)", caps.shm_size)?;
    }
    if !req.cap_add.is_empty() || !req.cap_drop.is_empty() || !req.security_opt.is_empty() {
        caps.require(
            driver,
            "capability and security options (--cap-add, --cap-drop, --security-opt)",
            caps.security_options,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_fixed_at_create_may_be_repeated_but_not_changed() {
        let old = Resources {
            memory_bytes: Some(1 << 30),
            memory_swap_bytes: Some(1 << 30),
            oom_score_adj: Some(1000),
            hugepage_limits: [("2MB".to_string(), 1 << 21)].into(),
            ..Default::default()
        };
        unchanged_on_update(&old, &old).unwrap();
        unchanged_on_update(&Resources::default(), &old).unwrap();
        for (new, field) in [
            (
                Resources {
                    oom_score_adj: Some(999),
                    ..old.clone()
                },
                "oom_score_adj",
            ),
            (
                Resources {
                    memory_swap_bytes: Some(-1),
                    ..old.clone()
                },
                "memory_swap",
            ),
            (
                Resources {
                    hugepage_limits: [("1GB".to_string(), 1 << 30)].into(),
                    ..old.clone()
                },
                "hugepage_limits",
            ),
            (
                Resources {
                    unified: [("memory.high".to_string(), "1".to_string())].into(),
                    ..old.clone()
                },
                "unified",
            ),
        ] {
            let e = unchanged_on_update(&new, &old).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field));
        }
    }

    #[test]
    fn options_a_driver_lacks_are_refused_by_name() {
        let none = Capabilities::default();
        let cases: Vec<(ContainerCreate, &str)> = vec![
            (
                ContainerCreate {
                    init: true,
                    ..Default::default()
                },
                "--init",
            ),
            (
                ContainerCreate {
                    ulimits: vec![husk_core::Ulimit::parse("nofile=1").unwrap()],
                    ..Default::default()
                },
                "ulimit",
            ),
            (
                ContainerCreate {
                    group_add: vec!["audio".into()],
                    ..Default::default()
                },
                "--group-add",
            ),
            (
                ContainerCreate {
                    read_only: true,
                    ..Default::default()
                },
                "--read-only",
            ),
            (
                ContainerCreate {
                    cap_add: vec!["NET_ADMIN".into()],
                    ..Default::default()
                },
                "--cap-add",
            ),
        ];
        for (req, option) in cases {
            let e = check_options(&req, "vm", &none).unwrap_err();
            assert_eq!(e.kind, husk_core::ErrorKind::Unsupported);
            assert!(
                e.message.contains("driver vm") && e.message.contains(option),
                "{}",
                e.message
            );
        }
        let all = Capabilities {
            init: true,
            ulimits: true,
            group_add: true,
            readonly_rootfs: true,
            security_options: true,
            ..Default::default()
        };
        let req = ContainerCreate {
            init: true,
            read_only: true,
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        assert!(check_options(&req, "linux", &all).is_ok());
    }
}
