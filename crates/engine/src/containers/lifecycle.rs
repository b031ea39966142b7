//! A container's life after it was created: start, stop, restart, kill, pause, update, remove, wait.

use std::sync::Arc;
use std::time::Duration;

use husk_core::{
    Action, ContainerRecord, ContainerStatus, Error, ExitStatus, HealthState, Resources,
    RestartPolicy, Result, SandboxRecord, SandboxStatus, units,
};
use husk_metrics::DriverOperation;
use serde_json::json;

use crate::{Engine, EventKind, resolve};

use husk_api_types::containers::{
    ContainerPruneReport, ContainerUpdate, WaitCondition, WaitResult,
};

/// Default seconds between the stop signal and SIGKILL.
const DEFAULT_STOP_TIMEOUT: u32 = 10;

/// The default stop signal.
const SIGTERM: i32 = 15;

impl Engine {
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
        // The start time is taken before the driver is asked: a process that ends at once may be seen to end
        // (its finish time taken) before the driver's start call returns, and a finish before the start is
        // what no client expects.
        let started_at = Some(husk_core::Timestamp::now());
        let runtime = driver.start_container(&rec, sandbox.as_ref()).await;
        self.observe_driver(driver.name(), DriverOperation::Start, started, &runtime);
        rec.runtime = runtime?;
        crate::failpoint("start_container:driver_started");
        rec.status = ContainerStatus::Running;
        rec.started_at = started_at;
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
        sb.runtime = driver
            .revive_sandbox(&sb)
            .await
            .map_err(|e| e.context(format!("bring back sandbox {}", sb.config.name)))?;
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

/// Refuses an update that would change what is fixed when a container is created: its `oom_score_adj`
/// (compared as the engine restricted it), memory plus swap, huge page and cgroup v2 limits. The same values
/// again are fine (the CRI's UpdateContainerResources repeats them all).
pub(super) fn unchanged_on_update(new: &Resources, old: &Resources) -> Result<()> {
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
