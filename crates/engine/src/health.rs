//! Health checks, run by the engine for every driver: a task per running container execs the check through
//! the driver, records the result in the container's record (Docker's rules, see [`husk_core::health`]), and
//! applies the container's [`HealthAction`] when it turns unhealthy.
//!
//! What husk does with an unhealthy container: by default nothing but record and report it, as Docker does —
//! restarting a container because a probe failed can turn a slow dependency into a restart storm, so it must be
//! asked for. `--health-on-failure` (Podman's flag) asks: `kill` kills the main process so the restart policy
//! decides exactly as for a crash (`on-failure` and `always` restart it, `no` leaves it exited); `restart`
//! restarts it whatever the policy; `stop` stops it as a user would. A restart by policy resets the state to
//! `starting`, and exits never count as health results.

use std::time::Duration;

use husk_core::health::HEALTH_OUTPUT_MAX;
use husk_core::stdio::{Frame, read_frame};
use husk_core::{
    ContainerRecord, ContainerStatus, HealthAction, HealthConfig, HealthResult, HealthState,
    HealthStatus, ProcessConfig, Timestamp,
};
use tracing::{info, warn};

use crate::{Engine, EventKind};

/// Nanoseconds since `t` (0 when never started).
fn nanos_since(t: Option<Timestamp>) -> i64 {
    t.and_then(|t| (Timestamp::now() - t).num_nanoseconds())
        .unwrap_or(0)
}

fn duration(ns: i64) -> Duration {
    Duration::from_nanos(ns.max(1_000_000) as u64)
}

impl Engine {
    /// Starts (or restarts) the health check task of a container that just started or was found running.
    pub(crate) fn start_health(&self, rec: &ContainerRecord) {
        let Some(config) = rec.healthcheck.clone() else {
            return;
        };
        let engine = self.clone();
        let id = rec.id().to_string();
        let started_at = rec.started_at;
        let task = tokio::spawn(async move { engine.health_loop(&id, &config, started_at).await });
        let old = self
            .inner
            .health_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.id().to_string(), task.abort_handle());
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Stops a container's health check task (it exited, stopped or went away).
    pub(crate) fn stop_health(&self, id: &str) {
        if let Some(task) = self
            .inner
            .health_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            task.abort();
        }
    }

    async fn health_loop(&self, id: &str, config: &HealthConfig, started_at: Option<Timestamp>) {
        loop {
            let in_start_period = nanos_since(started_at) < config.start_period_ns;
            let starting = self
                .container(id)
                .ok()
                .and_then(|r| r.health)
                .is_none_or(|h| h.status == HealthStatus::Starting);
            let wait = if in_start_period && starting {
                config.start_interval_ns
            } else {
                config.interval_ns
            };
            tokio::time::sleep(duration(wait)).await;
            let Ok(rec) = self.container(id) else {
                return;
            };
            if rec.started_at != started_at || !rec.status.is_active() {
                return;
            }
            if rec.status != ContainerStatus::Running {
                continue; // paused or between restarts: no check
            }
            let result = self.run_check(&rec, config).await;
            let in_start_period = nanos_since(started_at) < config.start_period_ns;
            let changed =
                self.record_health(id, started_at, result, config.retries, in_start_period);
            if changed == Some(HealthStatus::Unhealthy) {
                self.on_unhealthy(id, config.on_failure);
            }
        }
    }

    /// Stores a result; returns the new status when it changed.
    fn record_health(
        &self,
        id: &str,
        started_at: Option<Timestamp>,
        result: HealthResult,
        retries: u32,
        in_start_period: bool,
    ) -> Option<HealthStatus> {
        let changed = self.inner.store.transaction(|tx| {
            let Some(mut rec) = tx.get::<ContainerRecord>(id)? else {
                return Ok(None);
            };
            if rec.started_at != started_at || rec.status != ContainerStatus::Running {
                return Ok(None);
            }
            let health = rec.health.get_or_insert_with(HealthState::starting);
            let changed = health.record(result, retries, in_start_period);
            let status = health.status;
            tx.update(&rec)?;
            Ok(changed.then_some(status))
        });
        match changed {
            Ok(Some(status)) => {
                info!(container = id, %status, "health status changed");
                self.emit(id, EventKind::HealthStatus(status));
                Some(status)
            }
            Ok(None) => None,
            Err(e) => {
                warn!(container = id, "record a health check result: {e}");
                None
            }
        }
    }

    /// Runs one check through the driver's exec: its exit code and the first bytes of its output; `-1` when it
    /// could not run or ran out of time.
    async fn run_check(&self, rec: &ContainerRecord, config: &HealthConfig) -> HealthResult {
        let start = Timestamp::now();
        let process = ProcessConfig {
            args: config.argv(),
            env: rec.config.process.env.clone(),
            cwd: rec.config.process.cwd.clone(),
            user: rec.config.process.user.clone(),
            tty: false,
            stdin: false,
        };
        let run = async {
            let driver = self.driver(&rec.driver)?;
            // A probe that outlives its timeout is killed (as Docker does), so hung probes never pile up.
            let mut stdio = driver
                .exec_with_deadline(rec, &process, duration(config.timeout_ns))
                .await?;
            let mut output: Vec<u8> = Vec::new();
            loop {
                match read_frame(&mut stdio).await {
                    Ok(Some(Frame::Stdout(b) | Frame::Stderr(b))) => {
                        let room = HEALTH_OUTPUT_MAX.saturating_sub(output.len());
                        output.extend_from_slice(&b[..b.len().min(room)]);
                    }
                    Ok(Some(Frame::Exit(code))) => return Ok((code, output)),
                    Ok(Some(Frame::Error(e))) => return Err(husk_core::Error::backend(e)),
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(husk_core::Error::backend(
                            "the check's stream ended without an exit code",
                        ));
                    }
                    Err(e) => return Err(husk_core::Error::io("read the check's output", e)),
                }
            }
        };
        let (exit_code, output) = match tokio::time::timeout(duration(config.timeout_ns), run).await
        {
            Ok(Ok((code, out))) => (code, String::from_utf8_lossy(&out).into_owned()),
            Ok(Err(e)) => (-1, format!("the health check could not run: {e}")),
            Err(_) => (
                -1,
                format!(
                    "Health check exceeded timeout ({})",
                    humantime(config.timeout_ns)
                ),
            ),
        };
        HealthResult {
            start,
            end: Timestamp::now(),
            exit_code,
            output,
        }
    }

    /// Applies the container's action for an unhealthy state, in a task of its own (a restart stops this
    /// container's health task).
    fn on_unhealthy(&self, id: &str, action: HealthAction) {
        if action == HealthAction::None {
            return;
        }
        let engine = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            info!(container = %id, ?action, "the container is unhealthy: acting on it");
            let done = match action {
                HealthAction::None => Ok(()),
                HealthAction::Kill => match engine.container(&id) {
                    Ok(rec) => match engine.driver(&rec.driver) {
                        Ok(d) => d.kill(&rec, 9, false).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
                HealthAction::Restart => engine.restart_container(&id, None).await.map(|_| ()),
                HealthAction::Stop => engine.stop_container(&id, None).await.map(|_| ()),
            };
            if let Err(e) = done {
                warn!(container = %id, "act on an unhealthy container: {e}");
            }
        });
    }
}

/// `30s`, `1.5s`, `250ms` for a number of nanoseconds.
fn humantime(ns: i64) -> String {
    if ns % 1_000_000_000 == 0 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 1_000_000_000 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else {
        format!("{}ms", ns / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_like_dockers() {
        assert_eq!(super::humantime(30_000_000_000), "30s");
        assert_eq!(super::humantime(1_500_000_000), "1.5s");
        assert_eq!(super::humantime(250_000_000), "250ms");
    }
}
