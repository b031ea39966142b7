//! Containers in the engine: listing, inspecting and creating them. Their life after creation is in
//! `containers/lifecycle.rs` (start, stop, kill, pause, update, remove, wait), their processes and output in
//! `containers/io.rs` (exec, attach, logs, stats, top).

use husk_core::stdio::BoxStdio;
use husk_core::{
    Capabilities, ContainerConfig, ContainerRecord, ContainerStatus, Error, Mode, MountConfig,
    MountKind, Result, SandboxConfig, SandboxRecord, SandboxRuntime, SandboxStatus, units,
};
use husk_metrics::DriverOperation;
use serde_json::json;

use crate::{Engine, EventKind, resolve};
use husk_api_types::containers::{ContainerCreate, ContainerView};

mod io;
mod lifecycle;

impl Engine {
    /// Every container (or only the active ones).
    pub fn list_containers(&self, all: bool) -> Result<Vec<ContainerRecord>> {
        let mut list = self.inner.store.list::<ContainerRecord>()?;
        if !all {
            list.retain(|c| c.status.is_active());
        }
        list.sort_by_key(|r| std::cmp::Reverse(r.created_at));
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
                    private_ipc_uts: true,
                    network: config.network.clone(),
                    resources: req.resources.clone(),
                    labels: Default::default(),
                    annotations: Default::default(),
                    ..Default::default()
                },
                driver: driver_name.clone(),
                status: SandboxStatus::Creating,
                runtime: SandboxRuntime::default(),
                created_at: husk_core::Timestamp::now(),
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
            created_at: husk_core::Timestamp::now(),
            started_at: None,
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
}

/// Refuses options the driver cannot honour, naming the driver and the option.
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
mod tests;
