#![doc = include_str!("../README.md")]

mod process;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use process::ProcessUsage;

/// The `Content-Type` of what [`Metrics::encode`] writes (Prometheus' text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What the engine asks a driver to do, for `husk_driver_operation_duration_seconds{operation}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriverOperation {
    /// Make a container (and its sandbox, for one of its own) real.
    Create,
    /// Start a container's main process.
    Start,
    /// Stop a container: the signal, the grace period, the kill (what `husk stop` waits for).
    Stop,
    /// Remove a container's driver objects.
    Remove,
}

impl DriverOperation {
    /// The label value: `create`, `start`, `stop` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverOperation::Create => "create",
            DriverOperation::Start => "start",
            DriverOperation::Stop => "stop",
            DriverOperation::Remove => "remove",
        }
    }
}

/// `result` of an operation: `ok` or `error`.
fn result_label(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

/// An HTTP method as a label: the standard ones by name, any other as `other` (a client can send any token as
/// a method, and each would be a new series).
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DriverOperationLabels {
    driver: String,
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiRequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CriRequestLabels {
    method: String,
    code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: String,
    driver: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContainerLabels {
    id: String,
    name: String,
    driver: String,
}

/// Latency buckets from 1 ms to about a minute (×2.5 each): API calls take milliseconds, a pull or a VM's start
/// seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

type LatencyFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::new_with_constructor(latency_histogram)
}

/// The series the daemon counts as it works, and the encoder of a scrape. One per daemon, shared (`Arc`) by
/// the engine and the front ends; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    driver_operations: LatencyFamily<DriverOperationLabels>,
    image_pulls: Family<ResultLabels, Counter>,
    image_pull_seconds: LatencyFamily<ResultLabels>,
    api_requests: Family<ApiRequestLabels, Counter>,
    api_request_seconds: LatencyFamily<ApiRequestLabels>,
    cri_requests: Family<CriRequestLabels, Counter>,
    cri_request_seconds: LatencyFamily<CriRequestLabels>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every series registered, none observed yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let driver_operations = latency_family();
        registry.register(
            "husk_driver_operation_duration_seconds",
            "How long the engine's calls to a driver took, by driver, operation (create, start, stop, remove) \
             and result",
            driver_operations.clone(),
        );
        let image_pulls = Family::default();
        registry.register(
            "husk_image_pulls",
            "Image pulls, by result (ok, error)",
            image_pulls.clone(),
        );
        let image_pull_seconds = latency_family();
        registry.register(
            "husk_image_pull_duration_seconds",
            "How long image pulls took, by result",
            image_pull_seconds.clone(),
        );
        let api_requests = Family::default();
        registry.register(
            "husk_api_requests",
            "Requests to husk's local API and Zun's API, by route template, method and status",
            api_requests.clone(),
        );
        let api_request_seconds = latency_family();
        registry.register(
            "husk_api_request_duration_seconds",
            "How long requests to husk's local API and Zun's API took until their answer's head, by route \
             template, method and status",
            api_request_seconds.clone(),
        );
        let cri_requests = Family::default();
        registry.register(
            "husk_cri_requests",
            "CRI calls, by RPC method and gRPC status code",
            cri_requests.clone(),
        );
        let cri_request_seconds = latency_family();
        registry.register(
            "husk_cri_request_duration_seconds",
            "How long CRI calls took until their answer's head, by RPC method and gRPC status code",
            cri_request_seconds.clone(),
        );
        Metrics {
            registry,
            driver_operations,
            image_pulls,
            image_pull_seconds,
            api_requests,
            api_request_seconds,
            cri_requests,
            cri_request_seconds,
        }
    }

    /// A driver call of `driver` for `operation` took `elapsed` and succeeded or not.
    pub fn observe_driver_operation(
        &self,
        driver: &str,
        operation: DriverOperation,
        ok: bool,
        elapsed: Duration,
    ) {
        self.driver_operations
            .get_or_create(&DriverOperationLabels {
                driver: driver.to_string(),
                operation: operation.as_str(),
                result: result_label(ok),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// An image pull took `elapsed` and succeeded or not.
    pub fn observe_image_pull(&self, ok: bool, elapsed: Duration) {
        let labels = ResultLabels {
            result: result_label(ok),
        };
        self.image_pulls.get_or_create(&labels).inc();
        self.image_pull_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// An API request matched `route` (the route's template, `/containers/{id}`; never the raw path) and was
    /// answered with `status` after `elapsed`.
    pub fn observe_api_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let labels = ApiRequestLabels {
            route: route.to_string(),
            method: method_label(method),
            status,
        };
        self.api_requests.get_or_create(&labels).inc();
        self.api_request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A CRI call of `method` (`RunPodSandbox`; the caller keeps the set bounded) was answered with the gRPC
    /// status `code` (`OK`, `NotFound`) after `elapsed`.
    pub fn observe_cri_request(&self, method: &str, code: &str, elapsed: Duration) {
        let labels = CriRequestLabels {
            method: method.to_string(),
            code: code.to_string(),
        };
        self.cri_requests.get_or_create(&labels).inc();
        self.cri_request_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The text of a scrape: every counted series, then those of `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; the encoder's errors only come from its writer.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        let _ = prometheus_text::encode(&mut text, &snapshot.registry());
        text
    }
}

/// How many objects are in one state on one driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    /// The state (`running`, `exited`, `ready` ...).
    pub state: String,
    /// The driver (`linux`, `docker`, `vm`).
    pub driver: String,
    /// How many.
    pub count: u64,
}

/// Counts `(state, driver)` pairs, one [`StateCount`] per distinct pair, sorted.
pub fn count_by_state<'a>(
    objects: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<StateCount> {
    let mut counts = std::collections::BTreeMap::<(&str, &str), u64>::new();
    for key in objects {
        *counts.entry(key).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|((state, driver), count)| StateCount {
            state: state.to_string(),
            driver: driver.to_string(),
            count,
        })
        .collect()
}

/// What one running container uses, as its driver read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerUsage {
    /// Container ID.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Its driver.
    pub driver: String,
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
    /// Memory in use, bytes.
    pub memory_usage_bytes: u64,
    /// Memory limit, bytes (0: none).
    pub memory_limit_bytes: u64,
    /// Bytes received over the network.
    pub network_receive_bytes: u64,
    /// Bytes sent over the network.
    pub network_transmit_bytes: u64,
    /// Bytes read from block devices.
    pub block_read_bytes: u64,
    /// Bytes written to block devices.
    pub block_write_bytes: u64,
}

/// What is read at scrape time rather than counted.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Containers by state and driver.
    pub containers: Vec<StateCount>,
    /// Sandboxes by state and driver.
    pub sandboxes: Vec<StateCount>,
    /// Running containers' usage.
    pub container_usage: Vec<ContainerUsage>,
    /// Running containers whose stats could not be read in time (or at all) during this scrape.
    pub container_stats_failures: u64,
    /// Bytes of image layers downloaded since the daemon started.
    pub image_pull_bytes: u64,
    /// The daemon process's own usage, when `/proc` could be read.
    pub process: Option<ProcessUsage>,
}

type ValueGauge = Gauge<u64, AtomicU64>;
type SecondsCounter = Counter<f64, AtomicU64>;
/// A per-container series: its name, its help, and its value from a container's usage.
type UsageSeries = (&'static str, &'static str, fn(&ContainerUsage) -> u64);

impl Snapshot {
    /// A registry holding this snapshot's values, to encode once.
    fn registry(&self) -> Registry {
        let mut registry = Registry::default();
        for (name, help, counts) in [
            (
                "husk_containers",
                "Containers, by state and driver",
                &self.containers,
            ),
            (
                "husk_sandboxes",
                "Sandboxes, by state and driver",
                &self.sandboxes,
            ),
        ] {
            let family = Family::<StateLabels, ValueGauge>::default();
            for c in counts {
                family
                    .get_or_create(&StateLabels {
                        state: c.state.clone(),
                        driver: c.driver.clone(),
                    })
                    .set(c.count);
            }
            registry.register(name, help, family);
        }

        let pulled = Counter::<u64>::default();
        pulled.inc_by(self.image_pull_bytes);
        registry.register(
            "husk_image_pull_bytes",
            "Bytes of image layers downloaded since the daemon started",
            pulled,
        );
        let failures = ValueGauge::default();
        failures.set(self.container_stats_failures);
        registry.register(
            "husk_container_stats_failures",
            "Running containers whose stats this scrape could not read in time",
            failures,
        );

        let cpu = Family::<ContainerLabels, SecondsCounter>::default();
        for u in &self.container_usage {
            cpu.get_or_create(&u.labels()).inc_by(u.cpu_seconds);
        }
        registry.register(
            "husk_container_cpu_usage_seconds",
            "CPU time a running container used, in seconds",
            cpu,
        );
        let gauges: [UsageSeries; 2] = [
            (
                "husk_container_memory_usage_bytes",
                "Memory a running container uses, in bytes",
                |u| u.memory_usage_bytes,
            ),
            (
                "husk_container_memory_limit_bytes",
                "Memory limit of a running container, in bytes (0: none)",
                |u| u.memory_limit_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let family = Family::<ContainerLabels, ValueGauge>::default();
            for u in &self.container_usage {
                family.get_or_create(&u.labels()).set(value(u));
            }
            registry.register(name, help, family);
        }
        let counters: [UsageSeries; 4] = [
            (
                "husk_container_network_receive_bytes",
                "Bytes a running container received over the network",
                |u| u.network_receive_bytes,
            ),
            (
                "husk_container_network_transmit_bytes",
                "Bytes a running container sent over the network",
                |u| u.network_transmit_bytes,
            ),
            (
                "husk_container_block_read_bytes",
                "Bytes a running container read from block devices",
                |u| u.block_read_bytes,
            ),
            (
                "husk_container_block_write_bytes",
                "Bytes a running container wrote to block devices",
                |u| u.block_write_bytes,
            ),
        ];
        for (name, help, value) in counters {
            let family = Family::<ContainerLabels, Counter>::default();
            for u in &self.container_usage {
                family.get_or_create(&u.labels()).inc_by(value(u));
            }
            registry.register(name, help, family);
        }

        if let Some(p) = &self.process {
            let rss = ValueGauge::default();
            rss.set(p.resident_memory_bytes);
            registry.register(
                "process_resident_memory_bytes",
                "Resident memory size of the husk daemon, in bytes",
                rss,
            );
            let fds = ValueGauge::default();
            fds.set(p.open_fds);
            registry.register(
                "process_open_fds",
                "Open file descriptors of the husk daemon",
                fds,
            );
        }
        registry
    }
}

impl ContainerUsage {
    fn labels(&self) -> ContainerLabels {
        ContainerLabels {
            id: self.id.clone(),
            name: self.name.clone(),
            driver: self.driver.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the one sample line that starts with `series` (name and labels, as encoded).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counted_series_carry_their_labels_and_values() {
        let m = Metrics::new();
        m.observe_driver_operation(
            "linux",
            DriverOperation::Create,
            true,
            Duration::from_millis(30),
        );
        m.observe_driver_operation(
            "linux",
            DriverOperation::Create,
            false,
            Duration::from_millis(2),
        );
        m.observe_image_pull(true, Duration::from_secs(2));
        m.observe_api_request("/containers/{id}", "GET", 200, Duration::from_millis(1));
        m.observe_api_request("/containers/{id}", "GET", 200, Duration::from_millis(1));
        m.observe_cri_request("RunPodSandbox", "OK", Duration::from_millis(5));
        let text = m.encode(&Snapshot::default());
        assert_eq!(
            sample(
                &text,
                r#"husk_driver_operation_duration_seconds_count{driver="linux",operation="create",result="ok"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"husk_driver_operation_duration_seconds_sum{driver="linux",operation="create",result="ok"}"#
            ),
            Some(0.03),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"husk_image_pulls_total{result="ok"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"husk_api_requests_total{route="/containers/{id}",method="GET",status="200"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"husk_cri_requests_total{method="RunPodSandbox",code="OK"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert!(text.contains("# TYPE husk_api_request_duration_seconds histogram"));
    }

    #[test]
    fn a_snapshot_is_encoded_after_the_counted_series() {
        let snapshot = Snapshot {
            containers: count_by_state([
                ("running", "linux"),
                ("running", "linux"),
                ("exited", "vm"),
            ]),
            sandboxes: count_by_state([("ready", "linux")]),
            container_usage: vec![ContainerUsage {
                id: "abc".into(),
                name: "web".into(),
                driver: "linux".into(),
                cpu_seconds: 1.5,
                memory_usage_bytes: 4096,
                network_receive_bytes: 10,
                ..Default::default()
            }],
            container_stats_failures: 0,
            image_pull_bytes: 1234,
            process: Some(ProcessUsage {
                resident_memory_bytes: 1 << 20,
                open_fds: 7,
            }),
        };
        let text = Metrics::new().encode(&snapshot);
        for (series, want) in [
            (r#"husk_containers{state="running",driver="linux"}"#, 2.0),
            (r#"husk_containers{state="exited",driver="vm"}"#, 1.0),
            (r#"husk_sandboxes{state="ready",driver="linux"}"#, 1.0),
            (
                r#"husk_container_cpu_usage_seconds_total{id="abc",name="web",driver="linux"}"#,
                1.5,
            ),
            (
                r#"husk_container_memory_usage_bytes{id="abc",name="web",driver="linux"}"#,
                4096.0,
            ),
            (
                r#"husk_container_network_receive_bytes_total{id="abc",name="web",driver="linux"}"#,
                10.0,
            ),
            ("husk_image_pull_bytes_total", 1234.0),
            ("process_resident_memory_bytes", 1048576.0),
            ("process_open_fds", 7.0),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let snapshot = Snapshot {
            container_usage: vec![ContainerUsage {
                id: "x".into(),
                name: "a\"b\\c\nd".into(),
                driver: "linux".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = Metrics::new().encode(&snapshot);
        assert!(
            text.contains(r#"name="a\"b\\c\nd""#),
            "a name with quotes, backslashes and newlines stays one label value:\n{text}"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("get"), "other");
    }

    #[test]
    fn states_are_counted_per_driver() {
        let counts = count_by_state([
            ("running", "linux"),
            ("running", "vm"),
            ("running", "linux"),
        ]);
        assert_eq!(
            counts,
            vec![
                StateCount {
                    state: "running".into(),
                    driver: "linux".into(),
                    count: 2
                },
                StateCount {
                    state: "running".into(),
                    driver: "vm".into(),
                    count: 1
                },
            ]
        );
    }
}
