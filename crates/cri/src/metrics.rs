//! The CRI's metrics (ListMetricDescriptors, ListPodSandboxMetrics): cAdvisor's names for what the engine reads
//! of each container, so kubelet serves the same Prometheus series whether it reads them from cAdvisor or from
//! the runtime.

use husk_core::{ContainerRecord, Stats};
use husk_cri_api::v1 as cri;

/// The labels of every metric, in the order of `Metric::label_values`.
pub const LABEL_KEYS: [&str; 5] = ["id", "name", "image", "pod", "namespace"];

/// One metric husk reports.
#[derive(Debug, Clone, Copy)]
pub struct Descriptor {
    /// cAdvisor's name.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Counter (only grows) or gauge.
    pub counter: bool,
    /// Its value from a container's stats.
    pub value: fn(&Stats) -> u64,
}

/// Every metric husk reports for a container.
pub const DESCRIPTORS: [Descriptor; 8] = [
    Descriptor {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative CPU time consumed, in whole seconds",
        counter: true,
        value: |s| s.cpu_usage_ns / 1_000_000_000,
    },
    Descriptor {
        name: "container_memory_usage_bytes",
        help: "Current memory usage, including all memory regardless of when it was accessed",
        counter: false,
        value: |s| s.memory_usage_bytes,
    },
    Descriptor {
        name: "container_memory_working_set_bytes",
        help: "Current working set, in bytes",
        counter: false,
        value: |s| s.memory_usage_bytes,
    },
    Descriptor {
        name: "container_spec_memory_limit_bytes",
        help: "Memory limit of the container, in bytes (0: none)",
        counter: false,
        value: |s| s.memory_limit_bytes,
    },
    Descriptor {
        name: "container_processes",
        help: "Number of processes running inside the container",
        counter: false,
        value: |s| s.pids,
    },
    Descriptor {
        name: "container_network_receive_bytes_total",
        help: "Cumulative count of bytes received by the pod's network namespace",
        counter: true,
        value: |s| s.net_rx_bytes,
    },
    Descriptor {
        name: "container_network_transmit_bytes_total",
        help: "Cumulative count of bytes transmitted by the pod's network namespace",
        counter: true,
        value: |s| s.net_tx_bytes,
    },
    Descriptor {
        name: "container_fs_writes_bytes_total",
        help: "Cumulative count of bytes written to block devices",
        counter: true,
        value: |s| s.block_write_bytes,
    },
];

/// The metrics of one container of the pod `pod`, read at `stats.read_at` (now for a container that is not
/// running).
pub fn container_metrics(
    pod: &cri::PodSandboxMetadata,
    rec: &ContainerRecord,
    stats: &Stats,
) -> Vec<cri::Metric> {
    let timestamp = stats
        .read_at
        .unwrap_or_else(husk_core::Timestamp::now)
        .unix_nanos();
    let labels = vec![
        rec.config.id.clone(),
        crate::convert::container_metadata(rec).name,
        rec.config.image.name.clone(),
        pod.name.clone(),
        pod.namespace.clone(),
    ];
    DESCRIPTORS
        .iter()
        .map(|d| cri::Metric {
            name: d.name.into(),
            timestamp,
            metric_type: if d.counter {
                cri::MetricType::Counter as i32
            } else {
                cri::MetricType::Gauge as i32
            },
            label_values: labels.clone(),
            value: Some(cri::UInt64Value {
                value: (d.value)(stats),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_a_value_for_each_label() {
        let stats = Stats {
            cpu_usage_ns: 2_500_000_000,
            memory_usage_bytes: 4096,
            pids: 3,
            ..Default::default()
        };
        let metrics = container_metrics(
            &cri::PodSandboxMetadata::default(),
            &ContainerRecord::default(),
            &stats,
        );
        assert_eq!(metrics.len(), DESCRIPTORS.len());
        assert!(
            metrics
                .iter()
                .all(|m| m.label_values.len() == LABEL_KEYS.len())
        );
        let value = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.value)
                .unwrap()
                .value
        };
        assert_eq!(value("container_cpu_usage_seconds_total"), 2);
        assert_eq!(value("container_processes"), 3);
        let names: std::collections::HashSet<_> = DESCRIPTORS.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), DESCRIPTORS.len(), "names are unique");
    }
}
