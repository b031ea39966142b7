//! The engine's stats reading as husk's [`Stats`].

use bollard::models::ContainerStatsResponse;
use husk_core::Stats;

/// Memory the kernel can drop at once (page cache not recently used), as `docker stats` leaves it out.
fn reclaimable(stats: &std::collections::HashMap<String, u64>) -> u64 {
    // cgroup v1 names it total_inactive_file, v2 inactive_file.
    stats
        .get("total_inactive_file")
        .or_else(|| stats.get("inactive_file"))
        .copied()
        .unwrap_or(0)
}

/// Maps one reading. `memory_limited` and `pids_limited` say whether the container has those limits (the
/// engine reports the host's memory as the limit of an unlimited container).
pub(crate) fn map(s: &ContainerStatsResponse, memory_limited: bool) -> Stats {
    let cpu = s.cpu_stats.as_ref();
    let memory = s.memory_stats.as_ref();
    let usage = memory.and_then(|m| m.usage).unwrap_or(0);
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .map(reclaimable)
        .unwrap_or(0);
    let networks = || s.networks.iter().flat_map(|n| n.values());
    let sum = |field: fn(&bollard::models::ContainerNetworkStats) -> Option<u64>| {
        networks().map(|n| field(n).unwrap_or(0)).sum::<u64>()
    };
    let pids_limit = s.pids_stats.as_ref().and_then(|p| p.limit).unwrap_or(0);
    Stats {
        // The engine says 0001-01-01T00:00:00Z when it read nothing.
        read_at: s
            .read
            .as_deref()
            .filter(|t| !t.starts_with("0001-"))
            .and_then(|t| husk_core::Timestamp::parse(t).ok()),
        cpu_usage_ns: cpu
            .and_then(|c| c.cpu_usage.as_ref())
            .and_then(|u| u.total_usage)
            .unwrap_or(0),
        system_cpu_ns: cpu.and_then(|c| c.system_cpu_usage).unwrap_or(0),
        online_cpus: cpu.and_then(|c| c.online_cpus).unwrap_or(0),
        memory_usage_bytes: usage.saturating_sub(cache),
        memory_limit_bytes: if memory_limited {
            memory.and_then(|m| m.limit).unwrap_or(0)
        } else {
            0
        },
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        pids_limit: if pids_limit == u64::MAX {
            0
        } else {
            pids_limit
        },
        net_rx_bytes: sum(|n| n.rx_bytes),
        net_tx_bytes: sum(|n| n.tx_bytes),
        net_rx_errors: sum(|n| n.rx_errors),
        net_tx_errors: sum(|n| n.tx_errors),
        block_read_bytes: block_bytes(s, "read"),
        block_write_bytes: block_bytes(s, "write"),
    }
}

/// The engine's block I/O bytes of one direction over every device (`Read`/`Write` on cgroup v1, `read`/`write`
/// on v2), summed as `docker stats` does.
fn block_bytes(s: &ContainerStatsResponse, op: &str) -> u64 {
    s.blkio_stats
        .as_ref()
        .and_then(|b| b.io_service_bytes_recursive.as_ref())
        .into_iter()
        .flatten()
        .filter(|e| e.op.as_deref().is_some_and(|o| o.eq_ignore_ascii_case(op)))
        .filter_map(|e| e.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{
        ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
        ContainerMemoryStats, ContainerNetworkStats, ContainerPidsStats,
    };

    use super::*;

    #[test]
    fn a_reading_maps() {
        let s = ContainerStatsResponse {
            read: Some("2024-05-01T10:00:00.5Z".into()),
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(5_000),
                    ..Default::default()
                }),
                system_cpu_usage: Some(9_000_000),
                online_cpus: Some(2),
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10_000),
                limit: Some(64 << 20),
                stats: Some(HashMap::from([("total_inactive_file".to_string(), 4_000)])),
                ..Default::default()
            }),
            pids_stats: Some(ContainerPidsStats {
                current: Some(3),
                limit: Some(50),
            }),
            networks: Some(HashMap::from([
                (
                    "eth0".to_string(),
                    ContainerNetworkStats {
                        rx_bytes: Some(10),
                        tx_bytes: Some(20),
                        rx_errors: Some(4),
                        ..Default::default()
                    },
                ),
                (
                    "eth1".to_string(),
                    ContainerNetworkStats {
                        rx_bytes: Some(1),
                        tx_bytes: Some(2),
                        rx_errors: Some(1),
                        tx_errors: Some(3),
                        ..Default::default()
                    },
                ),
            ])),
            blkio_stats: Some(ContainerBlkioStats {
                io_service_bytes_recursive: Some(
                    [
                        ("Read", 100),
                        ("Write", 7),
                        ("read", 1),
                        ("write", 3),
                        ("Total", 111),
                    ]
                    .into_iter()
                    .map(|(op, value)| ContainerBlkioStatEntry {
                        major: Some(8),
                        minor: Some(0),
                        op: Some(op.into()),
                        value: Some(value),
                    })
                    .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = map(&s, true);
        assert_eq!((m.block_read_bytes, m.block_write_bytes), (101, 10));
        assert_eq!(
            (m.cpu_usage_ns, m.system_cpu_ns, m.online_cpus),
            (5_000, 9_000_000, 2)
        );
        assert_eq!(
            (m.memory_usage_bytes, m.memory_limit_bytes),
            (6_000, 64 << 20)
        );
        assert_eq!(
            (m.pids, m.pids_limit, m.net_rx_bytes, m.net_tx_bytes),
            (3, 50, 11, 22)
        );
        assert_eq!((m.net_rx_errors, m.net_tx_errors), (5, 3));
        assert_eq!(map(&s, false).memory_limit_bytes, 0);
        assert_eq!(
            map(&ContainerStatsResponse::default(), false),
            Stats::default()
        );
    }
}
