//! Watching running containers, restart policies, and recovery when the daemon starts.

use std::time::Duration;

use husk_core::{
    ContainerRecord, ContainerStatus, ExitStatus, ObservedState, RestartPolicy, Result,
    SandboxRecord, SandboxStatus,
};
use tracing::{info, warn};

use crate::{Engine, EventKind};

/// First delay before a restart by policy; doubled after each restart in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First delay before asking again a driver that could not say whether a container runs; doubled each time up to
/// [`UNANSWERED_MAX`].
const UNANSWERED_FIRST: Duration = Duration::from_millis(250);
/// Longest delay between such questions.
const UNANSWERED_MAX: Duration = Duration::from_secs(5);

impl Engine {
    /// Starts a task that waits for the container's main process to exit (once per container).
    pub(crate) fn watch(&self, rec: &ContainerRecord) {
        {
            let mut watched = self
                .inner
                .monitored
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !watched.insert(rec.id().to_string()) {
                return;
            }
        }
        let engine = self.clone();
        let rec = rec.clone();
        tokio::spawn(async move {
            let exit = match engine.driver(&rec.driver) {
                Ok(driver) => driver.wait(&rec).await,
                Err(e) => Err(e),
            };
            engine
                .inner
                .monitored
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(rec.id());
            let exit = match exit {
                Ok(exit) => exit,
                Err(e) => match engine.recheck(&rec).await {
                    Some(exit) => {
                        warn!(
                            container = rec.id(),
                            "the wait for the container broke ({e}); it has exited"
                        );
                        exit
                    }
                    None => return,
                },
            };
            engine.handle_exit(rec.id(), exit).await;
        });
    }

    /// Records an exit, then restarts or removes the container as its settings say.
    ///
    /// It takes no container lock: a `stop` holds the lock while it waits for exactly this exit to be recorded.
    /// The read-modify-write below has no await in it, and the operations that change a running container's
    /// record (stop, kill) write theirs before the signal that causes the exit.
    async fn handle_exit(&self, id: &str, exit: ExitStatus) {
        self.stop_health(id);
        // The sandbox first: whoever sees this container exited because its sandbox died (its VM, its pause
        // process) sees that sandbox not ready too. The record is read after this await.
        if let Ok(Some(ContainerRecord {
            sandbox_id: Some(sandbox),
            ..
        })) = self.inner.store.get::<ContainerRecord>(id)
        {
            self.recheck_sandbox(&sandbox).await;
        }
        let Ok(Some(mut rec)) = self.inner.store.get::<ContainerRecord>(id) else {
            return;
        };
        if !matches!(
            rec.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return;
        }
        let code = exit.code;
        if let Err(e) = self.record_exit(&mut rec, exit) {
            warn!(container = id, "record exit: {e}");
        }
        if rec
            .restart_policy
            .should_restart(code, rec.restart_count, rec.stopped_by_user)
        {
            rec.status = ContainerStatus::Restarting;
            let _ = self.inner.store.update(&rec);
            self.emit_record(&rec, EventKind::Exited(code));
            self.schedule_restart(id.to_string(), rec.restart_count);
        } else {
            self.emit_record(&rec, EventKind::Exited(code));
            if rec.auto_remove {
                let engine = self.clone();
                let id = id.to_string();
                tokio::spawn(async move {
                    if let Err(e) = engine.remove_container_with(&id, true, true).await
                        && e.kind != husk_core::ErrorKind::NotFound
                    {
                        warn!(container = %id, "auto-remove: {e}");
                    }
                });
            }
        }
    }

    /// After an exit in a sandbox: a sandbox that died under its containers (its pause process killed, its VM
    /// gone) is marked `notready`, so `sandbox ls` and the CRI say so and no container is started into it.
    async fn recheck_sandbox(&self, id: &str) {
        let Ok(Some(mut sb)) = self.inner.store.get::<SandboxRecord>(id) else {
            return;
        };
        if sb.status != SandboxStatus::Ready {
            return;
        }
        let Ok(driver) = self.driver(&sb.driver) else {
            return;
        };
        if let Ok(false) = driver.sandbox_alive(&sb).await {
            warn!(
                sandbox = id,
                "the sandbox died under its containers; marked not ready"
            );
            sb.status = SandboxStatus::NotReady;
            if let Err(e) = self.inner.store.update(&sb) {
                warn!(sandbox = id, "record the sandbox as not ready: {e}");
            }
        }
    }

    /// After a broken wait: asks the backend what became of the container. Returns its exit, or `None` when it
    /// was handled here (watched again because it still runs, marked dead because it is gone, or no longer
    /// running in the store). A backend that cannot answer is asked again until it can.
    async fn recheck(&self, rec: &ContainerRecord) -> Option<ExitStatus> {
        let driver = match self.driver(&rec.driver) {
            Ok(d) => d,
            Err(e) => {
                return Some(ExitStatus {
                    code: 255,
                    finished_at: Some(husk_core::Timestamp::now()),
                    reason: format!("lost track: {e}"),
                    ..Default::default()
                });
            }
        };
        // A driver that cannot answer (the docker driver's engine down or restarting) is asked again, less and
        // less often, until it can: no exit is recorded without the backend saying so.
        let mut pause = UNANSWERED_FIRST;
        loop {
            match driver.observe(rec).await {
                Ok(ObservedState::Exited(exit)) => return Some(exit),
                Ok(
                    ObservedState::Running { .. }
                    | ObservedState::Paused { .. }
                    | ObservedState::Created,
                ) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.watch(rec);
                    return None;
                }
                Ok(ObservedState::Missing) => {
                    self.mark_dead(
                        rec.id(),
                        "the container was removed from the backend behind husk's back",
                    );
                    return None;
                }
                Err(e) => {
                    if pause == UNANSWERED_FIRST {
                        warn!(
                            container = rec.id(),
                            "cannot tell whether the container still runs ({e}); asking again until its driver answers"
                        );
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(UNANSWERED_MAX);
                    // Removed or recorded meanwhile (by a user's request, or a restart of the daemon's view).
                    match self.inner.store.get::<ContainerRecord>(rec.id()) {
                        Ok(Some(now))
                            if matches!(
                                now.status,
                                ContainerStatus::Running | ContainerStatus::Paused
                            ) => {}
                        _ => return None,
                    }
                }
            }
        }
    }

    /// Marks a container the backend no longer has as dead (only removal remains possible).
    fn mark_dead(&self, id: &str, why: &str) {
        if let Ok(Some(mut rec)) = self.inner.store.get::<ContainerRecord>(id) {
            if rec.status == ContainerStatus::Dead {
                return;
            }
            rec.status = ContainerStatus::Dead;
            rec.error = why.to_string();
            rec.runtime.pid = 0;
            let _ = self.inner.store.update(&rec);
            self.emit_record(
                &rec,
                EventKind::Exited(rec.exit.as_ref().map(|e| e.code).unwrap_or(255)),
            );
        }
    }

    fn schedule_restart(&self, id: String, restarts: u32) {
        let delay = FIRST_BACKOFF
            .saturating_mul(1u32 << restarts.min(10))
            .min(MAX_BACKOFF);
        let engine = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _guard = engine.lock(&id).await;
            let Ok(Some(mut rec)) = engine.inner.store.get::<ContainerRecord>(&id) else {
                return;
            };
            if rec.status != ContainerStatus::Restarting {
                return; // stopped or removed meanwhile
            }
            rec.restart_count += 1;
            let name = rec.config.name.clone();
            if let Err(e) = engine.start_locked(rec, false).await {
                warn!(container = %name, "restart by policy failed: {e}");
                if let Ok(Some(mut rec)) = engine.inner.store.get::<ContainerRecord>(&id) {
                    rec.status = ContainerStatus::Exited;
                    rec.error = format!("restart failed: {e}");
                    let _ = engine.inner.store.update(&rec);
                }
            }
        });
    }

    /// Follows every driver's feed of changes made behind husk's back, for as long as the engine lives.
    pub fn follow_backend_changes(&self) {
        for driver in self.inner.drivers.values() {
            if driver.changes().is_none() {
                continue;
            }
            let engine = self.clone();
            let driver = driver.clone();
            tokio::spawn(async move {
                loop {
                    let Some(mut changes) = driver.changes() else {
                        return;
                    };
                    while let Some(change) = futures::StreamExt::next(&mut changes).await {
                        match change {
                            Ok(husk_core::BackendChange::ContainerRemoved { container_id }) => {
                                let gone = engine
                                    .inner
                                    .store
                                    .get::<ContainerRecord>(&container_id)
                                    .ok()
                                    .flatten();
                                if gone.is_some_and(|r| {
                                    !matches!(
                                        r.status,
                                        ContainerStatus::Removing | ContainerStatus::Creating
                                    )
                                }) {
                                    engine.mark_dead(&container_id, "the container was removed from the backend behind husk's back");
                                }
                            }
                            Ok(husk_core::BackendChange::SandboxDied { sandbox_id }) => {
                                engine.recheck_sandbox(&sandbox_id).await;
                            }
                            Err(e) => {
                                warn!(driver = driver.name(), "backend change feed: {e}");
                                break;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            });
        }
    }

    /// Asks every driver to remove what it made that no record names (logged, never fatal).
    async fn remove_orphans(&self) {
        let (Ok(sandboxes), Ok(containers)) = (
            self.inner.store.list::<SandboxRecord>(),
            self.inner.store.list::<ContainerRecord>(),
        ) else {
            return;
        };
        let sandboxes: std::collections::HashSet<String> =
            sandboxes.into_iter().map(|s| s.config.id).collect();
        let containers: std::collections::HashSet<String> =
            containers.into_iter().map(|c| c.config.id).collect();
        for driver in self.inner.drivers.values() {
            match driver.remove_orphans(&sandboxes, &containers).await {
                Ok(removed) => {
                    for what in removed {
                        info!(driver = driver.name(), "removed orphan {what}");
                    }
                }
                Err(e) => warn!(driver = driver.name(), "removing orphans: {e}"),
            }
        }
    }

    /// Brings the records in line with reality after the daemon (re)starts: finishes or rolls back interrupted
    /// operations, re-attaches to running containers, records exits that happened meanwhile, and applies
    /// restart policies (`always` and `unless-stopped` containers start again, as with Docker).
    pub async fn recover(&self) -> Result<()> {
        for op in self.inner.store.pending_operations()? {
            info!(kind = %op.kind, target = %op.target, step = %op.step, "finishing an interrupted operation");
            match op.kind.as_str() {
                "create_container" => {
                    if let Some(rec) = self.inner.store.get::<ContainerRecord>(&op.target)? {
                        if rec.status == ContainerStatus::Creating {
                            let implicit = op.data["implicit_sandbox"].as_str().map(str::to_string);
                            self.rollback_create(&rec, implicit.as_deref()).await;
                        }
                    } else if let Some(sid) = op.data["implicit_sandbox"].as_str()
                        && let Some(sb) = self.inner.store.get::<SandboxRecord>(sid)?
                    {
                        if let Ok(d) = self.driver(&sb.driver) {
                            let _ = d.delete_sandbox(&sb).await;
                        }
                        self.inner.store.delete::<SandboxRecord>(sid)?;
                    }
                }
                "remove_container" => {
                    if let Some(rec) = self.inner.store.get::<ContainerRecord>(&op.target)? {
                        self.remove_locked(&rec).await?;
                    }
                }
                "create_sandbox" => {
                    if let Some(sb) = self.inner.store.get::<SandboxRecord>(&op.target)?
                        && sb.status == SandboxStatus::Creating
                    {
                        if let Ok(d) = self.driver(&sb.driver) {
                            let _ = d.delete_sandbox(&sb).await;
                        }
                        self.remove_sandbox_volumes(&op.target).await?;
                        self.inner.store.delete::<SandboxRecord>(&op.target)?;
                    }
                }
                "remove_sandbox" => {
                    if let Some(sb) = self.inner.store.get::<SandboxRecord>(&op.target)? {
                        self.remove_sandbox_locked(&sb).await?;
                    }
                }
                "create_capsule" | "remove_capsule" => self.recover_capsule(&op.target).await?,
                "commit_container" => {
                    let paused = op.data["paused"].as_bool().unwrap_or(false);
                    self.finish_interrupted_commit(&op.target, paused).await;
                }
                _ => warn!(kind = %op.kind, "unknown interrupted operation left as is"),
            }
            self.inner.store.finish_operation(op.id)?;
        }
        for sb in self.inner.store.list::<SandboxRecord>()? {
            let Ok(driver) = self.driver(&sb.driver) else {
                continue;
            };
            // Only ever demoted: a sandbox stopped on purpose (the CRI's StopPodSandbox) keeps its namespaces
            // alive but stays not ready across a restart.
            if sb.status == SandboxStatus::Ready
                && !driver.sandbox_alive(&sb).await.unwrap_or(false)
            {
                let mut sb = sb;
                sb.status = SandboxStatus::NotReady;
                self.inner.store.update(&sb)?;
            }
        }
        self.remove_orphans().await;
        match self.remove_orphan_volume_dirs() {
            Ok(removed) => {
                for what in removed {
                    info!("removed orphan {what}");
                }
            }
            Err(e) => warn!("look for orphan volume directories: {e}"),
        }
        for mut rec in self.inner.store.list::<ContainerRecord>()? {
            let Ok(driver) = self.driver(&rec.driver) else {
                warn!(container = rec.id(), driver = %rec.driver, "the container's driver is not configured; leaving it as is");
                continue;
            };
            match rec.status {
                ContainerStatus::Creating => {
                    self.rollback_create(&rec, None).await;
                    continue;
                }
                ContainerStatus::Removing => {
                    self.remove_locked(&rec).await?;
                    continue;
                }
                _ => {}
            }
            let observed = driver.observe(&rec).await;
            match observed {
                Ok(ObservedState::Running { pid }) | Ok(ObservedState::Paused { pid }) => {
                    let paused = matches!(observed, Ok(ObservedState::Paused { .. }));
                    rec.status = if paused {
                        ContainerStatus::Paused
                    } else {
                        ContainerStatus::Running
                    };
                    if pid > 0 {
                        rec.runtime.pid = pid;
                    }
                    self.inner.store.update(&rec)?;
                    self.watch(&rec);
                    self.start_health(&rec);
                }
                Ok(ObservedState::Created) => {
                    if rec.status != ContainerStatus::Created {
                        rec.status = ContainerStatus::Created;
                        self.inner.store.update(&rec)?;
                    }
                }
                Ok(ObservedState::Exited(exit)) => {
                    let was_active = rec.status.is_active();
                    if was_active {
                        let code = exit.code;
                        self.record_exit(&mut rec, exit)?;
                        self.emit_record(&rec, EventKind::Exited(code));
                    }
                    let restart = match rec.restart_policy {
                        // Docker restarts `always` containers when the daemon starts, even after a manual stop.
                        RestartPolicy::Always => true,
                        RestartPolicy::UnlessStopped => !rec.stopped_by_user,
                        RestartPolicy::OnFailure { .. } => {
                            was_active
                                && rec.restart_policy.should_restart(
                                    rec.exit.as_ref().map(|e| e.code).unwrap_or(0),
                                    rec.restart_count,
                                    rec.stopped_by_user,
                                )
                        }
                        RestartPolicy::No => false,
                    };
                    if restart && rec.exit.is_some() {
                        rec.status = ContainerStatus::Restarting;
                        self.inner.store.update(&rec)?;
                        self.schedule_restart(rec.id().to_string(), rec.restart_count);
                    } else if was_active && rec.auto_remove {
                        self.remove_locked(&rec).await?;
                        self.remove_anonymous_volumes(&rec).await;
                    }
                }
                Ok(ObservedState::Missing) => {
                    rec.status = ContainerStatus::Dead;
                    rec.error = "the driver has no trace of this container".into();
                    self.inner.store.update(&rec)?;
                }
                Err(e) => warn!(container = rec.id(), "cannot observe the container: {e}"),
            }
        }
        Ok(())
    }
}
