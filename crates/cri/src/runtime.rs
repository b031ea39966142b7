//! The CRI RuntimeService over the engine: pods are husk sandboxes, containers husk containers in them.

use std::collections::HashMap;
use std::time::Duration;

use husk_api_types::{ContainerCreate, ExecCreate, SandboxCreate};
use husk_core::{ContainerRecord, ErrorKind, MountConfig, NetworkConfig, SandboxRecord};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_server::RuntimeService;
use husk_engine::Engine;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::status_of;
use crate::streaming::Streaming;

/// The most output ExecSync keeps of each stream (kubelet's probes read little; this bounds memory).
const EXEC_SYNC_LIMIT: usize = 16 << 20;

/// The most items one message of a Stream* list RPC carries (CRIListStreaming, KEP-5825): a few hundred KiB
/// at most, far under gRPC's 4 MiB default message size, whatever the node runs.
const STREAM_PAGE: usize = 100;

/// The stream a Stream* list RPC answers with.
pub(crate) type Pages<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `items` as a stream of messages of at most [`STREAM_PAGE`] items each, every item in exactly one, then the
/// end (no message at all when there are no items).
pub(crate) fn pages<I, T: Send + 'static>(
    items: Vec<I>,
    message: impl Fn(Vec<I>) -> T,
) -> Response<Pages<T>> {
    let mut items = items.into_iter();
    let mut messages = Vec::new();
    loop {
        let page: Vec<I> = items.by_ref().take(STREAM_PAGE).collect();
        if page.is_empty() {
            break;
        }
        messages.push(Ok(message(page)));
    }
    Response::new(Box::pin(futures::stream::iter(messages)))
}

/// The RuntimeService.
#[derive(Debug, Clone)]
pub struct Runtime {
    engine: Engine,
    streaming: Streaming,
    handlers: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

impl Runtime {
    /// A RuntimeService over `engine`, its streaming sessions served by `streaming`; `handlers` maps the
    /// configured runtime handlers (`[cri.runtimes.NAME]`) to drivers.
    pub fn new(
        engine: Engine,
        streaming: Streaming,
        handlers: std::collections::BTreeMap<String, String>,
    ) -> Runtime {
        Runtime {
            engine,
            streaming,
            handlers: std::sync::Arc::new(handlers),
        }
    }

    /// The driver of a runtime handler: none (the daemon's default) for the empty name, the configured one for a
    /// `[cri.runtimes.NAME]`, else a driver of that name.
    fn driver_of_handler(&self, handler: &str) -> Result<Option<String>, Status> {
        if handler.is_empty() {
            return Ok(None);
        }
        if let Some(driver) = self.handlers.get(handler) {
            return Ok(Some(driver.clone()));
        }
        let drivers = self.engine.driver_names();
        if drivers.iter().any(|d| d == handler) {
            return Ok(Some(handler.to_string()));
        }
        let mut known: Vec<String> = self.handlers.keys().cloned().collect();
        known.extend(drivers);
        Err(Status::invalid_argument(format!(
            "runtime_handler {handler:?} is not configured here (known: {})",
            known.join(", ")
        )))
    }

    /// The container of a streaming request, which must be running.
    fn running_container(&self, id: &str) -> Result<ContainerRecord, Status> {
        let rec = self.container(id)?;
        if rec.status != husk_core::ContainerStatus::Running {
            return Err(Status::failed_precondition(format!(
                "container {id} is not running (it is {})",
                rec.status
            )));
        }
        Ok(rec)
    }

    fn pod(&self, id: &str) -> Result<SandboxRecord, Status> {
        convert::required(id, "pod_sandbox_id").map_err(|e| status_of(&e))?;
        let sb = self
            .engine
            .list_sandboxes()
            .map_err(|e| status_of(&e))?
            .into_iter()
            .find(|sb| sb.config.id == id && convert::is_pod(sb));
        sb.ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))
    }

    fn container(&self, id: &str) -> Result<ContainerRecord, Status> {
        convert::required(id, "container_id").map_err(|e| status_of(&e))?;
        let rec = self
            .engine
            .list_containers(true)
            .map_err(|e| status_of(&e))?
            .into_iter()
            .find(|c| c.config.id == id && convert::is_cri_container(c));
        rec.ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }

    fn pod_status(&self, sb: &SandboxRecord) -> cri::PodSandboxStatus {
        let ip = convert::pod_ip(sb);
        cri::PodSandboxStatus {
            id: sb.config.id.clone(),
            metadata: Some(convert::pod_metadata(sb)),
            state: convert::pod_state(sb) as i32,
            created_at: convert::nanos(&sb.created_at),
            network: Some(cri::PodSandboxNetworkStatus {
                ip,
                additional_ips: Vec::new(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: if sb.config.network.mode() == "host" {
                            cri::NamespaceMode::Node as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        pid: if sb.config.host_pid {
                            cri::NamespaceMode::Node as i32
                        } else if sb.config.share_pid {
                            cri::NamespaceMode::Pod as i32
                        } else {
                            cri::NamespaceMode::Container as i32
                        },
                        ipc: if sb.config.host_ipc {
                            cri::NamespaceMode::Node as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        userns_options: Some(user_namespace_status(sb)),
                        ..Default::default()
                    }),
                }),
            }),
            labels: convert::visible(&sb.config.labels),
            annotations: convert::visible(&sb.config.annotations),
            runtime_handler: convert::pod_handler(sb),
        }
    }

    fn container_status(&self, rec: &ContainerRecord) -> cri::ContainerStatus {
        let exit = rec.exit.clone().unwrap_or_default();
        let exited = convert::container_state(rec.status) == cri::ContainerState::ContainerExited;
        cri::ContainerStatus {
            id: rec.config.id.clone(),
            metadata: Some(convert::container_metadata(rec)),
            state: convert::container_state(rec.status) as i32,
            created_at: convert::nanos(&rec.created_at),
            started_at: convert::nanos(&rec.started_at),
            finished_at: if exited {
                convert::nanos(&exit.finished_at)
            } else {
                0
            },
            exit_code: if exited { exit.code } else { 0 },
            image: Some(cri::ImageSpec {
                image: rec.config.image.name.clone(),
                ..Default::default()
            }),
            image_ref: rec.config.image.id.clone(),
            image_id: rec.config.image.id.clone(),
            reason: convert::exit_reason(rec),
            message: if exited {
                exit.reason.clone()
            } else {
                rec.error.clone()
            },
            labels: convert::visible(&rec.config.labels),
            annotations: convert::visible(&rec.annotations),
            log_path: rec.config.cri_log_path.clone().unwrap_or_default(),
            mounts: rec.config.mounts.iter().filter_map(mount_status).collect(),
            // The identity the container's first process started with, where the driver resolved it.
            resources: Some(cri::ContainerResources {
                linux: Some(cri_resources(&rec.config.resources)),
                windows: None,
            }),
            // The signal StopContainer sends: the one asked for, the image's, else SIGTERM (15).
            stop_signal: convert::cri_signal(rec.config.stop_signal.unwrap_or(15)) as i32,
            user: rec.runtime.user.as_ref().map(|u| cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: u.uid.into(),
                    gid: u.gid.into(),
                    supplemental_groups: u.groups.iter().map(|&g| g.into()).collect(),
                }),
            }),
        }
    }

    /// The CRI pods `filter` matches (ListPodSandbox, StreamPodSandboxes).
    fn pods_matching(&self, filter: cri::PodSandboxFilter) -> Result<Vec<cri::PodSandbox>, Status> {
        let items = self
            .cri_pods()?
            .into_iter()
            .filter(|sb| filter.id.is_empty() || sb.config.id == filter.id)
            .filter(|sb| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| convert::pod_state(sb) as i32 == s.state)
            })
            .filter(|sb| convert::matches(&sb.config.labels, &filter.label_selector))
            .map(|sb| cri::PodSandbox {
                id: sb.config.id.clone(),
                metadata: Some(convert::pod_metadata(&sb)),
                state: convert::pod_state(&sb) as i32,
                created_at: convert::nanos(&sb.created_at),
                labels: convert::visible(&sb.config.labels),
                annotations: convert::visible(&sb.config.annotations),
                runtime_handler: convert::pod_handler(&sb),
            })
            .collect();
        Ok(items)
    }

    /// The CRI containers `filter` matches (ListContainers, StreamContainers).
    fn containers_matching(
        &self,
        filter: cri::ContainerFilter,
    ) -> Result<Vec<cri::Container>, Status> {
        let containers = self
            .cri_containers()?
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.config.id == filter.id)
            .filter(|c| {
                filter.pod_sandbox_id.is_empty()
                    || c.sandbox_id.as_deref() == Some(filter.pod_sandbox_id.as_str())
            })
            .filter(|c| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| convert::container_state(c.status) as i32 == s.state)
            })
            .filter(|c| convert::matches(&c.config.labels, &filter.label_selector))
            .map(|c| self.container_summary(&c))
            .collect();
        Ok(containers)
    }

    /// The stats of the CRI containers `filter` matches (ListContainerStats, StreamContainerStats).
    async fn container_stats_matching(
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
        let mut stats = Vec::with_capacity(containers.len());
        for c in &containers {
            stats.push(self.stats_of(c).await?);
        }
        Ok(stats)
    }

    /// The stats of the CRI pods `filter` matches (ListPodSandboxStats, StreamPodSandboxStats).
    async fn pod_stats_matching(
        &self,
        filter: cri::PodSandboxStatsFilter,
    ) -> Result<Vec<cri::PodSandboxStats>, Status> {
        let pods: Vec<SandboxRecord> = self
            .cri_pods()?
            .into_iter()
            .filter(|sb| filter.id.is_empty() || sb.config.id == filter.id)
            .filter(|sb| convert::matches(&sb.config.labels, &filter.label_selector))
            .collect();
        let mut stats = Vec::with_capacity(pods.len());
        for sb in &pods {
            stats.push(self.pod_stats_of(sb).await?);
        }
        Ok(stats)
    }

    /// Every pod's metrics, by container (ListPodSandboxMetrics, StreamPodSandboxMetrics).
    async fn pod_metrics(&self) -> Result<Vec<cri::PodSandboxMetrics>, Status> {
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
    /// uses nothing).
    async fn stats_of(&self, rec: &ContainerRecord) -> Result<cri::ContainerStats, Status> {
        Ok(cri_stats(rec, &self.husk_stats(rec).await?))
    }

    /// What the engine reads of a running container; zero for others.
    async fn husk_stats(&self, rec: &ContainerRecord) -> Result<husk_core::Stats, Status> {
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
    async fn pod_stats_of(&self, sb: &SandboxRecord) -> Result<cri::PodSandboxStats, Status> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let value = |v: u64| Some(cri::UInt64Value { value: v });
        let mut containers = Vec::new();
        let (mut cpu, mut memory, mut pids, mut rx, mut tx) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for rec in self.pod_containers(&sb.config.id)? {
            let stats = self.husk_stats(&rec).await?;
            cpu += stats.cpu_usage_ns;
            memory += stats.memory_usage_bytes;
            pids += stats.pids;
            // Every container of the pod sees the same interfaces: count them once.
            rx = rx.max(stats.net_rx_bytes);
            tx = tx.max(stats.net_tx_bytes);
            containers.push(cri_stats(&rec, &stats));
        }
        let interface = cri::NetworkInterfaceUsage {
            name: "eth0".into(),
            rx_bytes: value(rx),
            rx_errors: value(0),
            tx_bytes: value(tx),
            tx_errors: value(0),
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

    /// A container's life event as kubelet's evented PLEG reads it: the container, its pod's status and the
    /// statuses of the pod's containers. `pods` maps CRI containers to their pods (kept up to date here).
    fn container_event(
        &self,
        event: &husk_engine::Event,
        pods: &mut HashMap<String, String>,
    ) -> Option<cri::ContainerEventResponse> {
        use husk_engine::EventKind;
        let kind = match event.kind {
            EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
            EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
            EventKind::Exited(_) => cri::ContainerEventType::ContainerStoppedEvent,
            EventKind::Removed => cri::ContainerEventType::ContainerDeletedEvent,
            _ => return None,
        };
        let pod = match self.engine.container(&event.id) {
            Ok(rec) if convert::is_cri_container(&rec) => {
                let pod = rec.sandbox_id.clone()?;
                pods.insert(rec.config.id.clone(), pod.clone());
                pod
            }
            Ok(_) => return None,
            Err(_) => pods.get(&event.id)?.clone(),
        };
        if kind == cri::ContainerEventType::ContainerDeletedEvent {
            pods.remove(&event.id);
        }
        let sandbox = self.pod(&pod).ok();
        let containers_statuses = self
            .pod_containers(&pod)
            .unwrap_or_default()
            .iter()
            .map(|c| self.container_status(c))
            .collect();
        Some(cri::ContainerEventResponse {
            container_id: event.id.clone(),
            container_event_type: kind as i32,
            created_at: event.time_nano,
            pod_sandbox_status: sandbox.map(|sb| self.pod_status(&sb)),
            containers_statuses,
        })
    }

    /// Every pod the CRI made (sandboxes made by the CLI or Zun's API are not kubelet's).
    fn cri_pods(&self) -> Result<Vec<SandboxRecord>, Status> {
        let all = self.engine.list_sandboxes().map_err(|e| status_of(&e))?;
        Ok(all.into_iter().filter(convert::is_pod).collect())
    }

    /// Every container the CRI made.
    fn cri_containers(&self) -> Result<Vec<ContainerRecord>, Status> {
        let all = self
            .engine
            .list_containers(true)
            .map_err(|e| status_of(&e))?;
        Ok(all.into_iter().filter(convert::is_cri_container).collect())
    }

    /// The CRI containers of a pod.
    fn pod_containers(&self, pod: &str) -> Result<Vec<ContainerRecord>, Status> {
        let mut all = self.cri_containers()?;
        all.retain(|c| c.sandbox_id.as_deref() == Some(pod));
        Ok(all)
    }

    fn container_summary(&self, rec: &ContainerRecord) -> cri::Container {
        cri::Container {
            id: rec.config.id.clone(),
            pod_sandbox_id: rec.sandbox_id.clone().unwrap_or_default(),
            metadata: Some(convert::container_metadata(rec)),
            image: Some(cri::ImageSpec {
                image: rec.config.image.name.clone(),
                ..Default::default()
            }),
            image_ref: rec.config.image.id.clone(),
            image_id: rec.config.image.id.clone(),
            state: convert::container_state(rec.status) as i32,
            created_at: convert::nanos(&rec.created_at),
            labels: convert::visible(&rec.config.labels),
            annotations: convert::visible(&rec.annotations),
        }
    }
}

/// A container's stats as the CRI reports them.
fn cri_stats(rec: &ContainerRecord, stats: &husk_core::Stats) -> cri::ContainerStats {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let value = |v: u64| Some(cri::UInt64Value { value: v });
    let timestamp = match convert::nanos(&stats.read_at) {
        0 => now,
        t => t,
    };
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
        writable_layer: Some(cri::FilesystemUsage {
            timestamp,
            fs_id: None,
            used_bytes: value(0),
            inodes_used: value(0),
        }),
        swap: None,
        // Block I/O pressure: cgroup v2 only.
        io: None,
    }
}

/// The limits of a container as husk keeps them: memory and swap, CPU quota (as a share of CPUs), CPU weight
/// and sets, `oom_score_adj`, huge pages and cgroup v2 files. Zero and empty mean "not set", as in the CRI,
/// except for `oom_score_adj`, where 0 is a score (containerd sets it always too; the engine raises it to the
/// daemon's own): `oom_score_adj_set` says whether to read it.
fn resources_of(
    limits: &cri::LinuxContainerResources,
    oom_score_adj_set: bool,
) -> Result<husk_core::Resources, Status> {
    let oom_score_adj = match oom_score_adj_set {
        false => None,
        true => Some(i32::try_from(limits.oom_score_adj).map_err(|_| {
            Status::invalid_argument(format!(
                "oom_score_adj: {} is not between -1000 and 1000",
                limits.oom_score_adj
            ))
        })?),
    };
    let mut hugepage_limits = std::collections::BTreeMap::new();
    for h in &limits.hugepage_limits {
        if hugepage_limits
            .insert(h.page_size.clone(), h.limit)
            .is_some()
        {
            return Err(Status::invalid_argument(format!(
                "hugepage_limits: page size {:?} is given twice",
                h.page_size
            )));
        }
    }
    Ok(husk_core::Resources {
        memory_bytes: (limits.memory_limit_in_bytes > 0).then_some(limits.memory_limit_in_bytes),
        nano_cpus: (limits.cpu_quota > 0 && limits.cpu_period > 0)
            .then(|| limits.cpu_quota * 1_000_000_000 / limits.cpu_period),
        cpu_shares: u64::try_from(limits.cpu_shares).ok().filter(|s| *s > 0),
        cpuset_cpus: (!limits.cpuset_cpus.is_empty()).then(|| limits.cpuset_cpus.clone()),
        cpuset_mems: (!limits.cpuset_mems.is_empty()).then(|| limits.cpuset_mems.clone()),
        oom_score_adj,
        memory_swap_bytes: (limits.memory_swap_limit_in_bytes != 0)
            .then_some(limits.memory_swap_limit_in_bytes),
        hugepage_limits,
        unified: limits
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    })
}

/// A container's limits as the CRI reports them (zero where unset).
fn cri_resources(r: &husk_core::Resources) -> cri::LinuxContainerResources {
    let period = 100_000;
    cri::LinuxContainerResources {
        cpu_period: if r.nano_cpus.is_some() { period } else { 0 },
        cpu_quota: r.nano_cpus.map_or(0, |n| n * period / 1_000_000_000),
        cpu_shares: r.cpu_shares.map_or(0, |s| s as i64),
        memory_limit_in_bytes: r.memory_bytes.unwrap_or(0),
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        oom_score_adj: r.oom_score_adj.map_or(0, i64::from),
        memory_swap_limit_in_bytes: r.memory_swap_bytes.unwrap_or(0),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(size, limit)| cri::HugepageLimit {
                page_size: size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Refuses an AppArmor profile husk cannot apply: a Localhost profile (or the deprecated `localhost/NAME`), as
/// containerd does where AppArmor is off; where it is on too, as husk loads no AppArmor profiles. RuntimeDefault
/// and Unconfined are what husk's containers run with anyway (no profile). `field` names the request field.
fn check_apparmor(
    profile: Option<&cri::SecurityProfile>,
    deprecated: &str,
    field: &str,
) -> Result<(), Status> {
    use cri::security_profile::ProfileType;
    let localhost = match profile {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault | ProfileType::Unconfined) => None,
            Ok(ProfileType::Localhost) => Some(p.localhost_ref.clone()),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "{field}.profile_type {} is not a profile type",
                    p.profile_type
                )));
            }
        },
        None => match deprecated {
            "" | "runtime/default" | "unconfined" => None,
            other => Some(
                other
                    .strip_prefix("localhost/")
                    .unwrap_or(other)
                    .to_string(),
            ),
        },
    };
    let Some(name) = localhost else {
        return Ok(());
    };
    Err(Status::failed_precondition(if apparmor_enabled() {
        format!(
            "{field}: AppArmor profile {name:?}: husk does not load AppArmor profiles; use RuntimeDefault or \
             Unconfined"
        )
    } else {
        format!("{field}: AppArmor profile {name:?}: AppArmor is not enabled on this host")
    }))
}

/// Whether this host's kernel runs AppArmor (`/sys/module/apparmor/parameters/enabled` is `Y`).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|t| t.trim() == "Y")
}

/// Why CheckpointContainer cannot be served here: CRIU is missing, or cannot run on this host, or husk does
/// not drive it.
async fn checkpoint_refusal() -> Status {
    let check = tokio::process::Command::new("criu")
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match check {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Status::failed_precondition(
            "checkpointing needs CRIU, and no `criu` is installed on this node",
        ),
        Err(e) => {
            Status::failed_precondition(format!("checkpointing needs CRIU: run `criu check`: {e}"))
        }
        Ok(out) if !out.status.success() => Status::failed_precondition(format!(
            "checkpointing needs CRIU, and `criu check` fails on this node: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Status::unimplemented(
            "husk does not checkpoint containers: CRIU works on this node, but husk does not drive it yet",
        ),
    }
}

/// A missing object is no error for stop and remove (kubelet retries them).
fn idempotent(r: husk_core::Result<()>) -> Result<(), Status> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(status_of(&e)),
    }
}

/// A container's mount as its CRI status shows it: binds with their propagation, image volumes as kubelet asked
/// for them (the image, read-only); other kinds (volumes, tmpfs) are husk's own and not shown.
fn mount_status(m: &MountConfig) -> Option<cri::Mount> {
    match m.kind.as_str() {
        "bind" => Some(cri::Mount {
            container_path: m.destination.clone(),
            host_path: m.source.clone(),
            readonly: m.readonly,
            recursive_read_only: m.readonly
                && !m
                    .options
                    .iter()
                    .any(|o| o == husk_core::options::BIND_WRITABLE_SUBMOUNTS),
            propagation: if m.options.iter().any(|o| o == "rshared" || o == "shared") {
                cri::MountPropagation::PropagationBidirectional as i32
            } else if m.options.iter().any(|o| o == "rslave" || o == "slave") {
                cri::MountPropagation::PropagationHostToContainer as i32
            } else {
                cri::MountPropagation::PropagationPrivate as i32
            },
            ..Default::default()
        }),
        "image" => Some(cri::Mount {
            container_path: m.destination.clone(),
            readonly: true,
            image: Some(cri::ImageSpec {
                image: m.source.clone(),
                ..Default::default()
            }),
            image_sub_path: m.subpath.clone().unwrap_or_default(),
            ..Default::default()
        }),
        _ => None,
    }
}

/// An image volume (`mounts[].image`, KEP-4639) as husk's `image` mount. It is read-only whatever `readonly`
/// says, and private: an image's files have no mounts to propagate.
fn image_mount(m: &cri::Mount) -> Result<MountConfig, Status> {
    let image = m.image.clone().unwrap_or_default();
    if !m.host_path.is_empty() {
        return Err(Status::invalid_argument(format!(
            "mounts[].image on {}: host_path and image exclude each other",
            m.container_path
        )));
    }
    if image.image.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "mounts[].image on {}: image.image names no image",
            m.container_path
        )));
    }
    Ok(MountConfig {
        kind: "image".into(),
        source: image.image.trim().to_string(),
        destination: m.container_path.clone(),
        readonly: true,
        subpath: (!m.image_sub_path.is_empty()).then(|| m.image_sub_path.clone()),
        ..Default::default()
    })
}

/// Fails with NOT_FOUND naming `mounts[].image` when an image volume's image is not here: kubelet pulls it
/// before it creates the container.
fn check_image_volumes(engine: &Engine, create: &ContainerCreate) -> Result<(), Status> {
    for m in create.mounts.iter().filter(|m| m.kind == "image") {
        if !engine.has_image(&m.source) {
            return Err(Status::not_found(format!(
                "mounts[].image: no such image {} (the image volume on {}): pull it first",
                m.source, m.destination
            )));
        }
    }
    Ok(())
}

/// The user namespace of a pod as the CRI shows it: POD with its mappings, or NODE.
fn user_namespace_status(sb: &SandboxRecord) -> cri::UserNamespace {
    let ids = |maps: &[husk_core::IdMapping]| {
        maps.iter()
            .map(|m| cri::IdMapping {
                host_id: m.host_id,
                container_id: m.container_id,
                length: m.size,
            })
            .collect()
    };
    match &sb.config.user_namespace {
        Some(userns) => cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: ids(&userns.uid_mappings),
            gids: ids(&userns.gid_mappings),
        },
        None => cri::UserNamespace {
            mode: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    }
}

/// The husk network of a pod: the host's for NODE, else the default network with its ports and DNS.
fn pod_network(config: &cri::PodSandboxConfig) -> Result<NetworkConfig, Status> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mut network = NetworkConfig::default();
    let host = options.network == cri::NamespaceMode::Node as i32;
    if host {
        network.mode = "host".into();
    }
    // A pod on the host's network has the host's ports already: its hostPorts need no mapping.
    for p in config.port_mappings.iter().filter(|_| !host) {
        let port = |v: i32, field: &str| {
            u16::try_from(v).map_err(|_| {
                Status::invalid_argument(format!("port_mappings: {field} {v} is not a port"))
            })
        };
        network.ports.push(husk_core::PortMapping {
            host_ip: p.host_ip.clone(),
            host_port: port(p.host_port, "host_port")?,
            container_port: port(p.container_port, "container_port")?,
            protocol: match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Udp) => "udp".into(),
                Ok(cri::Protocol::Sctp) => "sctp".into(),
                _ => "tcp".into(),
            },
        });
    }
    if let Some(dns) = &config.dns_config {
        network.dns = dns.servers.clone();
        network.dns_search = dns.searches.clone();
        network.dns_options = dns.options.clone();
    }
    Ok(network)
}

/// Sets the PID and IPC namespaces of a pod's containers in `sandbox`: PID shared by the pod (POD), one each
/// (CONTAINER) or the host's (NODE); IPC the pod's or the host's (NODE).
fn set_pod_namespaces(
    config: &cri::PodSandboxConfig,
    sandbox: &mut SandboxCreate,
) -> Result<(), Status> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mode = |value: i32, field: &str| {
        cri::NamespaceMode::try_from(value).map_err(|_| {
            Status::invalid_argument(format!(
                "namespace_options.{field}: {value} is not a namespace mode"
            ))
        })
    };
    let (pid, ipc) = (mode(options.pid, "pid")?, mode(options.ipc, "ipc")?);
    sandbox.share_pid = pid == cri::NamespaceMode::Pod;
    sandbox.host_pid = pid == cri::NamespaceMode::Node;
    sandbox.host_ipc = ipc == cri::NamespaceMode::Node;
    sandbox.user_namespace =
        convert::pod_user_namespace(options.userns_options.as_ref()).map_err(|e| status_of(&e))?;
    // The host's namespaces belong to the host's user namespace: root of the pod's could not mount /proc or /sys
    // for them (Kubernetes refuses hostUsers: false with hostNetwork, hostPID and hostIPC too).
    let host_network = options.network == cri::NamespaceMode::Node as i32;
    if sandbox.user_namespace.is_some() && (host_network || sandbox.host_pid || sandbox.host_ipc) {
        return Err(Status::invalid_argument(
            "linux.security_context.namespace_options.userns_options: a pod with a user namespace of its own \
             (mode POD) cannot use the host's network, PID or IPC namespace (mode NODE)",
        ));
    }
    Ok(())
}

/// The seccomp option of a container: the CRI's `seccomp` profile, where no profile means unconfined, as the
/// CRI defines it (the deprecated `seccomp_profile_path` is not read); a localhost profile's JSON is read here.
fn seccomp_option(security: &cri::LinuxContainerSecurityContext) -> Result<Option<String>, Status> {
    use cri::security_profile::ProfileType;
    let localhost = |path: &str| -> Result<Option<String>, Status> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Status::invalid_argument(format!("seccomp localhost profile {path:?}: {e}"))
        })?;
        Ok(Some(format!("seccomp={text}")))
    };
    match &security.seccomp {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(None),
            Ok(ProfileType::Unconfined) => Ok(Some("seccomp=unconfined".into())),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(Status::invalid_argument(format!(
                "seccomp.profile_type {} is not a profile type",
                p.profile_type
            ))),
        },
        None => Ok(Some("seccomp=unconfined".into())),
    }
}

/// husk's create request for a CRI container of pod `pod`.
fn container_request(
    pod: &SandboxRecord,
    config: &cri::ContainerConfig,
) -> Result<ContainerCreate, Status> {
    let invalid = |e: husk_core::Error| status_of(&e);
    let metadata = config
        .metadata
        .clone()
        .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    convert::required(&image, "config.image.image").map_err(invalid)?;
    let name = convert::container_name(&metadata, &convert::pod_metadata(pod), &pod.config.id)
        .map_err(invalid)?;
    let security = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    if security.run_as_group.is_some()
        && security.run_as_user.is_none()
        && security.run_as_username.is_empty()
    {
        return Err(Status::invalid_argument(
            "linux.security_context.run_as_group needs run_as_user or run_as_username",
        ));
    }
    let user = match (&security.run_as_user, security.run_as_username.as_str()) {
        (Some(uid), _) => Some(match &security.run_as_group {
            Some(gid) => format!("{}:{}", uid.value, gid.value),
            None => uid.value.to_string(),
        }),
        (None, "") => None,
        (None, name) => Some(name.to_string()),
    };
    let groups_policy =
        match cri::SupplementalGroupsPolicy::try_from(security.supplemental_groups_policy) {
            Ok(cri::SupplementalGroupsPolicy::Merge) => husk_core::GroupsPolicy::Merge,
            Ok(cri::SupplementalGroupsPolicy::Strict) => husk_core::GroupsPolicy::Strict,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "linux.security_context.supplemental_groups_policy {} is not a policy",
                    security.supplemental_groups_policy
                )));
            }
        };
    #[allow(deprecated)]
    check_apparmor(
        security.apparmor.as_ref(),
        &security.apparmor_profile,
        "linux.security_context.apparmor",
    )?;
    let capabilities = security.capabilities.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in &config.mounts {
        convert::required(&m.container_path, "mounts.container_path").map_err(invalid)?;
        if m.image.is_some() {
            mounts.push(image_mount(m)?);
            continue;
        }
        if !m.image_sub_path.is_empty() {
            return Err(Status::invalid_argument(format!(
                "mounts[].image_sub_path on {}: only an image volume (mounts[].image) takes a sub path",
                m.container_path
            )));
        }
        convert::required(&m.host_path, "mounts.host_path").map_err(invalid)?;
        let propagation = cri::MountPropagation::try_from(m.propagation)
            .unwrap_or(cri::MountPropagation::PropagationPrivate);
        if m.recursive_read_only
            && (!m.readonly || propagation != cri::MountPropagation::PropagationPrivate)
        {
            return Err(Status::invalid_argument(format!(
                "mounts {}: recursive_read_only needs readonly and PROPAGATION_PRIVATE",
                m.container_path
            )));
        }
        let mut options = match propagation {
            cri::MountPropagation::PropagationHostToContainer => vec!["rslave".to_string()],
            cri::MountPropagation::PropagationBidirectional => vec!["rshared".to_string()],
            cri::MountPropagation::PropagationPrivate => Vec::new(),
        };
        // The CRI's readonly is the bind alone; recursive_read_only asks for the submounts too.
        if m.readonly && !m.recursive_read_only {
            options.push(husk_core::options::BIND_WRITABLE_SUBMOUNTS.to_string());
        }
        mounts.push(MountConfig {
            kind: "bind".into(),
            source: m.host_path.clone(),
            destination: m.container_path.clone(),
            readonly: m.readonly,
            options,
            host_path: m.host_path.clone(),
            ..Default::default()
        });
    }
    let mut security_opt = vec![format!("no-new-privileges={}", security.no_new_privs)];
    if let Some(seccomp) = seccomp_option(&security)? {
        security_opt.push(seccomp);
    }
    let limits = config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let resources = resources_of(
        &limits,
        config.linux.as_ref().is_some_and(|l| l.resources.is_some()),
    )?;
    let devices = config
        .devices
        .iter()
        .map(|d| {
            convert::required(&d.host_path, "devices.host_path")
                .and_then(|_| convert::required(&d.container_path, "devices.container_path"))
                .map_err(invalid)?;
            Ok(husk_core::DeviceMapping {
                host_path: d.host_path.clone(),
                container_path: d.container_path.clone(),
                permissions: d.permissions.clone(),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(ContainerCreate {
        name: Some(name),
        image,
        entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
        command: (!config.args.is_empty()).then(|| config.args.clone()),
        env: config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        workdir: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
        user,
        tty: config.tty,
        stdin: config.stdin,
        sandbox: Some(pod.config.id.clone()),
        privileged: security.privileged,
        read_only: security.readonly_rootfs,
        cap_add: capabilities.add_capabilities,
        cap_drop: capabilities.drop_capabilities,
        security_opt,
        group_add: security
            .supplemental_groups
            .iter()
            .map(|g| g.to_string())
            .collect(),
        groups_policy,
        resources,
        labels: config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        annotations: convert::container_annotations(
            &metadata,
            &config.annotations,
            config.stdin_once,
        ),
        mounts,
        cri_log_path: convert::cri_log_path(pod, &config.log_path),
        sysctls: convert::pod_sysctls(pod),
        masked_paths: (!security.masked_paths.is_empty()).then(|| security.masked_paths.clone()),
        readonly_paths: (!security.readonly_paths.is_empty())
            .then(|| security.readonly_paths.clone()),
        devices,
        stop_signal: convert::stop_signal_name(config.stop_signal).map_err(invalid)?,
        // kubelet pulls before it creates: a missing image is an error, never a pull.
        pull: husk_api_types::PullPolicy::Never,
        ..Default::default()
    })
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "husk".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
        let name = convert::pod_name(&metadata).map_err(|e| status_of(&e))?;
        let mut annotations =
            convert::pod_annotations(&metadata, &req.runtime_handler, &config.annotations);
        convert::set_log_directory(&mut annotations, &config.log_directory);
        if let Some(linux) = &config.linux {
            convert::set_sysctls(&mut annotations, &linux.sysctls);
            if let Some(security) = &linux.security_context {
                check_apparmor(
                    security.apparmor.as_ref(),
                    "",
                    "linux.security_context.apparmor",
                )?;
            }
        }
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty());
        let mut sandbox = SandboxCreate {
            cgroup_parent,
            name: Some(name),
            hostname: (!config.hostname.is_empty()).then(|| config.hostname.clone()),
            driver: self.driver_of_handler(&req.runtime_handler)?,
            network: pod_network(&config)?,
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations,
            ..Default::default()
        };
        set_pod_namespaces(&config, &mut sandbox)?;
        let sb = self
            .engine
            .create_sandbox(sandbox)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: sb.config.id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        match self.pod(&id) {
            Ok(sb) => idempotent(self.engine.stop_sandbox(&sb.config.id, None).await)?,
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        match self.pod(&id) {
            Ok(sb) => idempotent(self.engine.remove_sandbox(&sb.config.id, true).await)?,
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        let sb = self.pod(&req.pod_sandbox_id)?;
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_string(),
                serde_json::json!({"driver": sb.driver, "name": sb.config.name}).to_string(),
            );
        }
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(self.pod_status(&sb)),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let items = self.pods_matching(request.into_inner().filter.unwrap_or_default())?;
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    type StreamPodSandboxesStream = Pages<cri::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let items = self.pods_matching(request.into_inner().filter.unwrap_or_default())?;
        Ok(pages(items, |pod_sandboxes| {
            cri::StreamPodSandboxesResponse { pod_sandboxes }
        }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        let pod = self.pod(&req.pod_sandbox_id)?;
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let create = container_request(&pod, &config)?;
        check_image_volumes(&self.engine, &create)?;
        let rec = self
            .engine
            .create_container(create)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: rec.config.id,
        }))
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let rec = self.container(&request.into_inner().container_id)?;
        self.engine
            .start_container(&rec.config.id)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = request.into_inner();
        match self.container(&req.container_id) {
            Ok(rec) => {
                let running =
                    convert::container_state(rec.status) == cri::ContainerState::ContainerRunning;
                if running {
                    let timeout = u32::try_from(req.timeout.max(0)).unwrap_or(u32::MAX);
                    idempotent(
                        self.engine
                            .stop_container(&rec.config.id, Some(timeout))
                            .await
                            .map(|_| ()),
                    )?;
                }
            }
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        match self.container(&id) {
            Ok(rec) => idempotent(self.engine.remove_container(&rec.config.id, true).await)?,
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s),
        }
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let containers =
            self.containers_matching(request.into_inner().filter.unwrap_or_default())?;
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    type StreamContainersStream = Pages<cri::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        request: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let items = self.containers_matching(request.into_inner().filter.unwrap_or_default())?;
        Ok(pages(items, |containers| cri::StreamContainersResponse {
            containers,
        }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let rec = self.container(&request.into_inner().container_id)?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(self.container_status(&rec)),
            info: HashMap::new(),
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        let rec = self.container(&req.container_id)?;
        let Some(limits) = req.linux else {
            // Nothing for Linux to change (a Windows-only request).
            return Ok(Response::new(cri::UpdateContainerResourcesResponse {}));
        };
        // A score of 0 here is "not given": the update may only repeat the one the container was created with.
        let update = husk_api_types::ContainerUpdate {
            resources: resources_of(&limits, limits.oom_score_adj != 0)?,
            ..Default::default()
        };
        self.engine
            .update_container(&rec.config.id, &update)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let rec = self.container(&request.into_inner().container_id)?;
        self.engine
            .reopen_container_log(&rec.config.id)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let req = request.into_inner();
        let rec = self.container(&req.container_id)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is required"));
        }
        // No timeout means none: a day stands in for it.
        let timeout = match req.timeout {
            t if t > 0 => Duration::from_secs(t as u64),
            _ => Duration::from_secs(86_400),
        };
        let exec = ExecCreate {
            command: req.cmd,
            ..Default::default()
        };
        let out = self
            .engine
            .exec_output(&rec.config.id, &exec, EXEC_SYNC_LIMIT, timeout)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let req = request.into_inner();
        self.running_container(&req.container_id)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is required"));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout and stderr must be set",
            ));
        }
        if req.tty && req.stderr {
            return Err(Status::invalid_argument(
                "tty and stderr cannot both be set: a terminal has one output stream",
            ));
        }
        Ok(Response::new(cri::ExecResponse {
            url: self.streaming.exec_url(req),
        }))
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let req = request.into_inner();
        let rec = self.running_container(&req.container_id)?;
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout and stderr must be set",
            ));
        }
        if req.stdin && !rec.config.process.stdin {
            return Err(Status::invalid_argument(format!(
                "stdin: container {} was not created with stdin open",
                req.container_id
            )));
        }
        Ok(Response::new(cri::AttachResponse {
            url: self.streaming.attach_url(req),
        }))
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let req = request.into_inner();
        let pod = self.pod(&req.pod_sandbox_id)?;
        if convert::pod_state(&pod) != cri::PodSandboxState::SandboxReady {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                req.pod_sandbox_id
            )));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!("port: {p} is not a port")));
        }
        Ok(Response::new(cri::PortForwardResponse {
            url: self.streaming.port_forward_url(req),
        }))
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let rec = self.container(&request.into_inner().container_id)?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(self.stats_of(&rec).await?),
        }))
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let stats = self.container_stats_matching(filter).await?;
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = Pages<cri::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        request: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self.container_stats_matching(filter).await?;
        Ok(pages(items, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        let sb = self.pod(&request.into_inner().pod_sandbox_id)?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(self.pod_stats_of(&sb).await?),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let stats = self.pod_stats_matching(filter).await?;
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = Pages<cri::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self.pod_stats_matching(filter).await?;
        Ok(pages(items, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        }))
    }

    async fn update_runtime_config(
        &self,
        _request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR is the CNI configuration's business; husk's default network keeps its own subnet.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        let info = self.engine.info().await.map_err(|e| status_of(&e))?;
        let condition = |kind: &str| cri::RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        // Read-only binds are recursive (mount_setattr) where husk's own container code makes them: on the
        // linux driver and in vm guests; the docker driver leaves them to the engine.
        let features = |driver: &str| {
            Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: driver != "docker",
                // Pods with a user namespace of their own (userns_options mode POD): the linux driver's alone.
                user_namespaces: driver == "linux",
            })
        };
        let mut runtime_handlers = vec![cri::RuntimeHandler {
            name: String::new(),
            features: features(&info.default_driver),
        }];
        runtime_handlers.extend(
            self.handlers
                .iter()
                .map(|(name, driver)| cri::RuntimeHandler {
                    name: name.clone(),
                    features: features(driver),
                }),
        );
        runtime_handlers.extend(
            info.drivers
                .iter()
                .filter(|d| !self.handlers.contains_key(&d.name))
                .map(|d| cri::RuntimeHandler {
                    name: d.name.clone(),
                    features: features(&d.name),
                }),
        );
        let mut extra = HashMap::new();
        if verbose {
            extra.insert(
                "config".to_string(),
                serde_json::json!({"default_driver": info.default_driver, "root": info.root})
                    .to_string(),
            );
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![condition("RuntimeReady"), condition("NetworkReady")],
            }),
            info: extra,
            runtime_handlers,
            // Strict groups and the ContainerStatus user come from husk's own container code (the docker
            // driver refuses Strict: the engine always adds the image's groups).
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
                // A pod with its own user namespace has its own network namespace too (refused otherwise).
                user_namespaces_host_network: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        let req = request.into_inner();
        self.running_container(&req.container_id)?;
        Err(checkpoint_refusal().await)
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<cri::ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let mut events = self.engine.subscribe();
        let this = self.clone();
        // The pod of every CRI container, to report a removal after the container's record is gone.
        let mut pods: HashMap<String, String> = self
            .cri_containers()?
            .into_iter()
            .filter_map(|c| Some((c.config.id.clone(), c.sandbox_id.clone()?)))
            .collect();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("CRI container events: a slow client missed {n} events");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let Some(response) = this.container_event(&event, &mut pods) else {
                    continue;
                };
                if tx.send(Ok(response)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        let descriptors = crate::metrics::DESCRIPTORS
            .iter()
            .map(|d| cri::MetricDescriptor {
                name: d.name.into(),
                help: d.help.into(),
                label_keys: crate::metrics::LABEL_KEYS
                    .iter()
                    .map(|k| k.to_string())
                    .collect(),
            })
            .collect();
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors,
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics: self.pod_metrics().await?,
        }))
    }

    type StreamPodSandboxMetricsStream = Pages<cri::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = self.pod_metrics().await?;
        Ok(pages(items, |pod_sandbox_metrics| {
            cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        let req = request.into_inner();
        let sb = self.pod(&req.pod_sandbox_id)?;
        for (field, limits) in [("overhead", &req.overhead), ("resources", &req.resources)] {
            if let Some(limits) = limits {
                resources_of(limits, true)
                    .map_err(|e| Status::new(e.code(), format!("{field}: {}", e.message())))?;
            }
        }
        // kubelet resizes the pod's cgroup (the containers' cgroup_parent) before this call, and each
        // container's own limits through UpdateContainerResources: on linux and docker nothing of the pod is
        // outside those. A VM's memory and vCPUs are fixed when it boots.
        if sb.driver == "vm" && (req.overhead.is_some() || req.resources.is_some()) {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {}: the vm driver cannot resize a running VM (its memory and vCPUs are fixed at boot)",
                sb.config.id
            )));
        }
        Ok(Response::new(cri::UpdatePodSandboxResourcesResponse {}))
    }

    async fn runtime_config(
        &self,
        _request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(pid: cri::NamespaceMode, ipc: cri::NamespaceMode) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: pid as i32,
                        ipc: ipc as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_namespaces_follow_the_namespace_options() {
        use cri::NamespaceMode::{Container, Node, Pod};
        let flags = |pid, ipc| {
            let mut sb = SandboxCreate::default();
            set_pod_namespaces(&pod_with(pid, ipc), &mut sb).unwrap();
            (sb.share_pid, sb.host_pid, sb.host_ipc)
        };
        assert_eq!(flags(Pod, Pod), (true, false, false));
        assert_eq!(flags(Container, Pod), (false, false, false));
        assert_eq!(flags(Node, Pod), (false, true, false));
        assert_eq!(flags(Pod, Node), (true, false, true));
        let mut bad = pod_with(Pod, Pod);
        if let Some(ns) = bad
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.ipc = 42;
        }
        let e = set_pod_namespaces(&bad, &mut SandboxCreate::default()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn supplemental_groups_policy_becomes_the_groups_policy() {
        let pod = SandboxRecord {
            config: husk_core::SandboxConfig {
                id: "p".repeat(64),
                ..Default::default()
            },
            driver: "linux".into(),
            status: "ready".into(),
            runtime: Default::default(),
            created_at: String::new(),
            owner_container: None,
            project: String::new(),
        };
        let config = |policy: i32| cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    supplemental_groups: vec![1234],
                    supplemental_groups_policy: policy,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req =
            container_request(&pod, &config(cri::SupplementalGroupsPolicy::Strict as i32)).unwrap();
        assert_eq!(req.groups_policy, husk_core::GroupsPolicy::Strict);
        assert_eq!(req.group_add, vec!["1234".to_string()]);
        let req =
            container_request(&pod, &config(cri::SupplementalGroupsPolicy::Merge as i32)).unwrap();
        assert_eq!(req.groups_policy, husk_core::GroupsPolicy::Merge);
        let e = container_request(&pod, &config(7)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn apparmor_localhost_profiles_are_refused_and_the_others_pass() {
        use cri::security_profile::ProfileType;
        let profile = |t: ProfileType, name: &str| cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: name.into(),
        };
        for ok in [
            profile(ProfileType::RuntimeDefault, ""),
            profile(ProfileType::Unconfined, ""),
        ] {
            check_apparmor(Some(&ok), "", "apparmor").unwrap();
        }
        for deprecated in ["", "runtime/default", "unconfined"] {
            check_apparmor(None, deprecated, "apparmor").unwrap();
        }
        let refused = [
            check_apparmor(
                Some(&profile(ProfileType::Localhost, "mine")),
                "",
                "apparmor",
            ),
            check_apparmor(None, "localhost/mine", "apparmor"),
        ];
        for e in refused {
            let e = e.unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition);
            assert!(e.message().starts_with("apparmor: "), "{}", e.message());
            assert!(e.message().contains("\"mine\""), "{}", e.message());
            if !apparmor_enabled() {
                assert!(e.message().contains("AppArmor is not enabled on this host"));
            }
        }
    }

    #[test]
    fn linux_resources_round_trip_through_husks_limits() {
        let limits = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            oom_score_adj: 0,
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        let r = resources_of(&limits, true).unwrap();
        assert_eq!(
            r.oom_score_adj,
            Some(0),
            "0 is a score when resources are given"
        );
        assert_eq!(r.memory_swap_bytes, Some(64 << 20));
        assert_eq!(r.hugepage_limits["2MB"], 0);
        assert_eq!(cri_resources(&r), limits);
        assert_eq!(resources_of(&limits, false).unwrap().oom_score_adj, None);
        let mut twice = limits.clone();
        twice.hugepage_limits.push(twice.hugepage_limits[0].clone());
        assert_eq!(
            resources_of(&twice, true).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let far = cri::LinuxContainerResources {
            oom_score_adj: 1 << 40,
            ..Default::default()
        };
        let e = resources_of(&far, true).unwrap_err();
        assert!(e.message().starts_with("oom_score_adj"), "{}", e.message());
    }

    #[tokio::test]
    async fn pages_carry_every_item_once_in_order() {
        use futures::StreamExt;
        for (n, want) in [
            (0, vec![]),
            (1, vec![1]),
            (250, vec![100, 100, 50]),
            (200, vec![100, 100]),
        ] {
            let items: Vec<usize> = (0..n).collect();
            let messages: Vec<Vec<usize>> = pages(items, |page| page)
                .into_inner()
                .map(|m| m.unwrap())
                .collect()
                .await;
            let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
            assert_eq!(sizes, want, "{n} items");
            let all: Vec<usize> = messages.into_iter().flatten().collect();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn image_volumes_become_image_mounts_and_show_in_the_status() {
        let image_volume = |host_path: &str, image: &str| cri::Mount {
            container_path: "/data".into(),
            host_path: host_path.into(),
            readonly: false,
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = image_mount(&image_volume("", " sha256:abc ")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.destination.as_str()),
            ("image", "sha256:abc", "/data")
        );
        assert!(m.readonly && m.options.is_empty(), "{m:?}");
        let status = mount_status(&m).expect("image mounts are reported");
        assert_eq!(status.container_path, "/data");
        assert!(status.readonly && status.host_path.is_empty());
        assert_eq!(status.image.unwrap().image, "sha256:abc");
        for (host_path, image, why) in [("/srv", "x", "host_path"), ("", " ", "names no image")] {
            let e = image_mount(&image_volume(host_path, image)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.message().contains("mounts[].image") && e.message().contains(why),
                "{}",
                e.message()
            );
        }
        let tmpfs = MountConfig {
            kind: "tmpfs".into(),
            destination: "/t".into(),
            ..Default::default()
        };
        assert!(mount_status(&tmpfs).is_none());
    }
}
