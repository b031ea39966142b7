//! The engine's part of the daemon's metrics: it times its driver calls and pulls into [`Metrics`], and reads
//! what a scrape shows of its objects ([`Engine::metrics_snapshot`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use husk_core::{ContainerRecord, ContainerStatus, Result, SandboxRecord};
use husk_metrics::{ContainerUsage, DriverOperation, Metrics, ProcessUsage, Snapshot};

use crate::Engine;

/// How long a scrape waits for one container's stats before leaving it out (a wedged driver must not hold the
/// scrape past Prometheus' own timeout, 10 s by default).
const STATS_PATIENCE: Duration = Duration::from_secs(2);

/// How many containers' stats a scrape reads at once.
const STATS_CONCURRENCY: usize = 32;

impl Engine {
    /// The daemon's metrics: the front ends count their requests here, the metrics listener encodes them.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Records that a call of driver `driver` for `operation`, begun at `started`, ended with `result`.
    pub(crate) fn observe_driver<T>(
        &self,
        driver: &str,
        operation: DriverOperation,
        started: Instant,
        result: &Result<T>,
    ) {
        self.inner.metrics.observe_driver_operation(
            driver,
            operation,
            result.is_ok(),
            started.elapsed(),
        );
    }

    /// Records that an image pull begun at `started` ended with `result`.
    pub(crate) fn observe_pull<T>(&self, started: Instant, result: &Result<T>) {
        self.inner
            .metrics
            .observe_image_pull(result.is_ok(), started.elapsed());
    }

    /// What a scrape shows now: containers and sandboxes by state and driver, each running container's usage
    /// (read from the drivers concurrently, each given [`STATS_PATIENCE`]), the bytes pulled, and this
    /// process's own usage. Records that cannot be listed leave their part empty.
    pub async fn metrics_snapshot(&self) -> Snapshot {
        let containers = self
            .inner
            .store
            .list::<ContainerRecord>()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e.message, "metrics: cannot list containers");
                Vec::new()
            });
        let sandboxes = self
            .inner
            .store
            .list::<SandboxRecord>()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e.message, "metrics: cannot list sandboxes");
                Vec::new()
            });
        // Owned records and engine clones: a future holding borrows through the stream would not be `Send` for
        // every lifetime, as an axum handler needs.
        let running: Vec<ContainerRecord> = containers
            .iter()
            .filter(|c| c.status == ContainerStatus::Running)
            .cloned()
            .collect();
        let readings = running.into_iter().map(|rec| {
            let engine = self.clone();
            async move { engine.usage_of(&rec).await }
        });
        let usage: Vec<Option<ContainerUsage>> = futures::stream::iter(readings)
            .buffer_unordered(STATS_CONCURRENCY)
            .collect()
            .await;
        let failures = usage.iter().filter(|u| u.is_none()).count() as u64;
        Snapshot {
            containers: husk_metrics::count_by_state(
                containers
                    .iter()
                    .map(|c| (c.status.as_str(), c.driver.as_str())),
            ),
            sandboxes: husk_metrics::count_by_state(
                sandboxes
                    .iter()
                    .map(|s| (s.status.as_str(), s.driver.as_str())),
            ),
            container_usage: usage.into_iter().flatten().collect(),
            container_stats_failures: failures,
            image_pull_bytes: self.inner.images.bytes_downloaded(),
            process: ProcessUsage::read_self(),
        }
    }

    /// The usage of the running container of `rec`, or `None` when its driver cannot tell in time.
    async fn usage_of(&self, rec: &ContainerRecord) -> Option<ContainerUsage> {
        let driver = self.driver(&rec.driver).ok()?;
        let stats = match tokio::time::timeout(STATS_PATIENCE, driver.stats(rec)).await {
            Ok(Ok(stats)) => stats,
            Ok(Err(e)) => {
                tracing::debug!(container = rec.id(), error = %e.message, "metrics: no stats");
                return None;
            }
            Err(_) => {
                tracing::debug!(container = rec.id(), "metrics: stats took too long");
                return None;
            }
        };
        Some(ContainerUsage {
            id: rec.id().to_string(),
            name: rec.config.name.clone(),
            driver: rec.driver.clone(),
            cpu_seconds: stats.cpu_usage_ns as f64 / 1e9,
            memory_usage_bytes: stats.memory_usage_bytes,
            memory_limit_bytes: stats.memory_limit_bytes,
            network_receive_bytes: stats.net_rx_bytes,
            network_transmit_bytes: stats.net_tx_bytes,
            block_read_bytes: stats.block_read_bytes,
            block_write_bytes: stats.block_write_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use husk_core::{Error, Mode};

    use crate::testing::{self, FakeDriver, TINY_IMAGE, all_capabilities};
    use crate::{ContainerCreate, Engine};

    async fn setup() -> (tempfile::TempDir, Arc<FakeDriver>, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeDriver::with_capabilities(all_capabilities()));
        let engine = testing::engine(dir.path(), Mode::Standalone, fake.clone())
            .await
            .unwrap();
        (dir, fake, engine)
    }

    fn request(name: &str) -> ContainerCreate {
        ContainerCreate {
            name: Some(name.into()),
            image: TINY_IMAGE.into(),
            ..Default::default()
        }
    }

    /// The value of the sample line that starts with `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[tokio::test]
    async fn driver_calls_are_timed_by_operation_and_result() {
        let (_dir, fake, engine) = setup().await;
        let a = engine.create_container(request("a")).await.unwrap();
        engine.start_container(a.id()).await.unwrap();
        let b = engine.create_container(request("b")).await.unwrap();
        fake.fail_next("start_container", Error::internal("no pids left"));
        engine.start_container(b.id()).await.unwrap_err();
        engine.stop_container(a.id(), Some(1)).await.unwrap();
        engine.remove_container(a.id(), false).await.unwrap();

        let text = engine.metrics().encode(&engine.metrics_snapshot().await);
        let count = |operation: &str, result: &str| {
            sample(
                &text,
                &format!(
                    r#"husk_driver_operation_duration_seconds_count{{driver="fake",operation="{operation}",result="{result}"}}"#
                ),
            )
        };
        assert_eq!(count("create", "ok"), Some(2.0), "{text}");
        assert_eq!(count("start", "ok"), Some(1.0), "{text}");
        assert_eq!(count("start", "error"), Some(1.0), "{text}");
        assert_eq!(count("stop", "ok"), Some(1.0), "{text}");
        assert_eq!(count("remove", "ok"), Some(1.0), "{text}");
        assert_eq!(
            sample(&text, r#"husk_containers{state="created",driver="fake"}"#),
            Some(1.0),
            "b is left, created: {text}"
        );
    }

    #[tokio::test]
    async fn a_scrape_reads_running_containers_and_leaves_out_a_wedged_one_in_time() {
        let (_dir, fake, engine) = setup().await;
        for name in ["a", "b"] {
            engine
                .run_container(request(name), None)
                .await
                .map(|_| ())
                .unwrap_or_else(|e| panic!("run {name}: {e:?}"));
        }
        let snapshot = engine.metrics_snapshot().await;
        assert_eq!(snapshot.container_usage.len(), 2, "{snapshot:?}");
        assert_eq!(snapshot.container_stats_failures, 0);
        assert_eq!(snapshot.containers.len(), 1);
        assert_eq!(snapshot.containers[0].state, "running");
        assert_eq!(snapshot.containers[0].count, 2);
        assert!(
            snapshot
                .process
                .is_some_and(|p| p.resident_memory_bytes > 0)
        );

        fake.hang_next("stats");
        let started = std::time::Instant::now();
        let snapshot = engine.metrics_snapshot().await;
        assert!(
            started.elapsed() < super::STATS_PATIENCE * 2,
            "a wedged driver held the scrape {:?}",
            started.elapsed()
        );
        assert_eq!(snapshot.container_usage.len(), 1, "{snapshot:?}");
        assert_eq!(snapshot.container_stats_failures, 1);
    }
}
