//! What kubelet reads of a node's pods and containers: CPU, memory, processes, network and the writable layer,
//! from the containers' cgroups (through the engine) and the pods' network namespaces, and cAdvisor metrics.

use futures::StreamExt;
use husk_core::{ContainerRecord, ErrorKind, SandboxRecord, Timestamp};
use husk_cri_api::v1 as cri;
use tonic::Status;

use super::Runtime;
use crate::convert;
use crate::status_of;

/// Containers or pods read at once by a list of stats.
const STATS_AT_ONCE: usize = 16;

impl Runtime {
    /// The stats of the CRI containers `filter` matches (ListContainerStats, StreamContainerStats).
    pub(super) async fn container_stats_matching(
        &self,
        filter: cri::ContainerStatsFilter,
    ) -> Result<Vec<cri::ContainerStats>, Status> {
        let containers: Vec<ContainerRecord> = self
            .cri_containers()?
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.config.id == filter.id)
            .filter(|c| {
                filter.pod_sandbox_id.is_empty()
                    || c.sandbox_id.as_deref() == Some(filter.pod_sandbox_id.as_str())
            })
            .filter(|c| convert::matches(&c.config.labels, &filter.label_selector))
            .collect();
        // Side by side, a few at a time (each walks a writable layer and reads a cgroup).
        futures::stream::iter(containers)
            .map(|c| async move { self.stats_of(&c).await })
            .buffered(STATS_AT_ONCE)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// The stats of the CRI pods `filter` matches (ListPodSandboxStats, StreamPodSandboxStats).
    pub(super) async fn pod_stats_matching(
        &self,
        filter: cri::PodSandboxStatsFilter,
    ) -> Result<Vec<cri::PodSandboxStats>, Status> {
        let pods: Vec<SandboxRecord> = self
            .cri_pods()?
            .into_iter()
            .filter(|sb| filter.id.is_empty() || sb.config.id == filter.id)
            .filter(|sb| convert::matches(&sb.config.labels, &filter.label_selector))
            .collect();
        futures::stream::iter(pods)
            .map(|sb| async move { self.pod_stats_of(&sb).await })
            .buffered(STATS_AT_ONCE)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    /// Every pod's metrics, by container (ListPodSandboxMetrics, StreamPodSandboxMetrics).
    pub(super) async fn pod_metrics(&self) -> Result<Vec<cri::PodSandboxMetrics>, Status> {
        let pods = self.cri_pods()?;
        let mut pod_metrics = Vec::with_capacity(pods.len());
        for sb in &pods {
            let meta = convert::pod_metadata(sb);
            let mut container_metrics = Vec::new();
            for rec in self.pod_containers(&sb.config.id)? {
                let stats = self.husk_stats(&rec).await?;
                container_metrics.push(cri::ContainerMetrics {
                    container_id: rec.config.id.clone(),
                    metrics: crate::metrics::container_metrics(&meta, &rec, &stats),
                });
            }
            pod_metrics.push(cri::PodSandboxMetrics {
                pod_sandbox_id: sb.config.id.clone(),
                metrics: Vec::new(),
                container_metrics,
            });
        }
        Ok(pod_metrics)
    }

    /// A container's stats: read from its cgroup while it runs, zero otherwise (a created or exited container
    /// uses nothing), and its writable layer's usage where its driver keeps the layer on this host.
    pub(super) async fn stats_of(
        &self,
        rec: &ContainerRecord,
    ) -> Result<cri::ContainerStats, Status> {
        let layer = self.engine.writable_layer_usage(rec).await;
        Ok(cri_stats(rec, &self.husk_stats(rec).await?, layer))
    }

    /// What the engine reads of a running container; zero for others.
    pub(super) async fn husk_stats(
        &self,
        rec: &ContainerRecord,
    ) -> Result<husk_core::Stats, Status> {
        let running = convert::container_state(rec.status) == cri::ContainerState::ContainerRunning;
        if !running {
            return Ok(husk_core::Stats::default());
        }
        match self.engine.stats(&rec.config.id).await {
            Ok(s) => Ok(s),
            // It stopped between the list and the read.
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict) => {
                Ok(husk_core::Stats::default())
            }
            Err(e) => Err(status_of(&e)),
        }
    }

    /// A pod's stats: the sum of its containers' CPU, memory and processes, and the traffic of the network
    /// namespace they share.
    pub(super) async fn pod_stats_of(
        &self,
        sb: &SandboxRecord,
    ) -> Result<cri::PodSandboxStats, Status> {
        let now = Timestamp::now().unix_nanos();
        let value = |v: u64| Some(cri::UInt64Value { value: v });
        let mut containers = Vec::new();
        let (mut cpu, mut memory, mut pids) = (0u64, 0u64, 0u64);
        let mut net = husk_core::Stats::default();
        for rec in self.pod_containers(&sb.config.id)? {
            let stats = self.husk_stats(&rec).await?;
            cpu += stats.cpu_usage_ns;
            memory += stats.memory_usage_bytes;
            pids += stats.pids;
            // Every container of the pod sees the same interfaces: count them once.
            net.net_rx_bytes = net.net_rx_bytes.max(stats.net_rx_bytes);
            net.net_tx_bytes = net.net_tx_bytes.max(stats.net_tx_bytes);
            net.net_rx_errors = net.net_rx_errors.max(stats.net_rx_errors);
            net.net_tx_errors = net.net_tx_errors.max(stats.net_tx_errors);
            let layer = self.engine.writable_layer_usage(&rec).await;
            containers.push(cri_stats(&rec, &stats, layer));
        }
        let interface = cri::NetworkInterfaceUsage {
            name: "eth0".into(),
            rx_bytes: value(net.net_rx_bytes),
            rx_errors: value(net.net_rx_errors),
            tx_bytes: value(net.net_tx_bytes),
            tx_errors: value(net.net_tx_errors),
        };
        Ok(cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: sb.config.id.clone(),
                metadata: Some(convert::pod_metadata(sb)),
                labels: convert::visible(&sb.config.labels),
                annotations: convert::visible(&sb.config.annotations),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cri::CpuUsage {
                    timestamp: now,
                    usage_core_nano_seconds: value(cpu),
                    usage_nano_cores: None,
                    // Pressure stall information is per cgroup on cgroup v2 only.
                    psi: None,
                }),
                memory: Some(cri::MemoryUsage {
                    timestamp: now,
                    working_set_bytes: value(memory),
                    usage_bytes: value(memory),
                    ..Default::default()
                }),
                network: Some(cri::NetworkUsage {
                    timestamp: now,
                    default_interface: Some(interface.clone()),
                    interfaces: vec![interface],
                }),
                process: Some(cri::ProcessUsage {
                    timestamp: now,
                    process_count: value(pids),
                }),
                containers,
                // Block I/O pressure: cgroup v2 only, like the CPU's.
                io: None,
            }),
            windows: None,
        })
    }
}

/// A container's stats as the CRI shows them; `layer` is its writable layer's usage, where known.
pub(super) fn cri_stats(
    rec: &ContainerRecord,
    stats: &husk_core::Stats,
    layer: Option<husk_api_types::system::LayerUsage>,
) -> cri::ContainerStats {
    let value = |v: u64| Some(cri::UInt64Value { value: v });
    let timestamp = stats.read_at.unwrap_or_else(Timestamp::now).unix_nanos();
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: rec.config.id.clone(),
            metadata: Some(convert::container_metadata(rec)),
            labels: convert::visible(&rec.config.labels),
            annotations: convert::visible(&rec.annotations),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp,
            usage_core_nano_seconds: value(stats.cpu_usage_ns),
            usage_nano_cores: None,
            // Pressure stall information is per cgroup on cgroup v2 only.
            psi: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp,
            working_set_bytes: value(stats.memory_usage_bytes),
            usage_bytes: value(stats.memory_usage_bytes),
            available_bytes: (stats.memory_limit_bytes > 0)
                .then(|| {
                    stats
                        .memory_limit_bytes
                        .saturating_sub(stats.memory_usage_bytes)
                })
                .and_then(value),
            ..Default::default()
        }),
        // Absent where the driver keeps no writable layer on this host (docker, vm): unknown, not empty.
        writable_layer: layer.map(|usage| cri::FilesystemUsage {
            timestamp,
            fs_id: None,
            used_bytes: value(usage.bytes),
            inodes_used: value(usage.inodes),
        }),
        swap: None,
        // Block I/O pressure: cgroup v2 only.
        io: None,
    }
}
