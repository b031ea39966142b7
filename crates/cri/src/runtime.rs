//! The CRI RuntimeService over the engine: pods are husk sandboxes, containers husk containers in them.

use std::collections::HashMap;
use std::time::Duration;

use husk_api_types::{ContainerCreate, ExecCreate, SandboxCreate};
use husk_core::{ContainerRecord, ErrorKind, MountConfig, NetworkConfig, SandboxRecord};
use husk_engine::Engine;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::status_of;

/// The most output ExecSync keeps of each stream (kubelet's probes read little; this bounds memory).
const EXEC_SYNC_LIMIT: usize = 16 << 20;

/// The RuntimeService.
#[derive(Debug, Clone)]
pub struct Runtime {
    engine: Engine,
}

impl Runtime {
    /// A RuntimeService over `engine`.
    pub fn new(engine: Engine) -> Runtime {
        Runtime { engine }
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
                        pid: if sb.config.share_pid {
                            cri::NamespaceMode::Pod as i32
                        } else {
                            cri::NamespaceMode::Container as i32
                        },
                        ipc: cri::NamespaceMode::Pod as i32,
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
            mounts: rec
                .config
                .mounts
                .iter()
                .filter(|m| m.kind == "bind")
                .map(|m| cri::Mount {
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
                })
                .collect(),
            ..Default::default()
        }
    }

    /// A container's stats: read from its cgroup while it runs, zero otherwise (a created or exited container
    /// uses nothing).
    async fn stats_of(&self, rec: &ContainerRecord) -> Result<cri::ContainerStats, Status> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let running = convert::container_state(rec.status) == cri::ContainerState::ContainerRunning;
        let stats = if running {
            match self.engine.stats(&rec.config.id).await {
                Ok(s) => s,
                // It stopped between the list and the read.
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict) => {
                    husk_core::Stats::default()
                }
                Err(e) => return Err(status_of(&e)),
            }
        } else {
            husk_core::Stats::default()
        };
        let value = |v: u64| Some(cri::UInt64Value { value: v });
        let timestamp = match convert::nanos(&stats.read_at) {
            0 => now,
            t => t,
        };
        Ok(cri::ContainerStats {
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
        })
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

/// A missing object is no error for stop and remove (kubelet retries them).
fn idempotent(r: husk_core::Result<()>) -> Result<(), Status> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(status_of(&e)),
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "husk's CRI does not serve {what} yet (docs/cri.md lists what it serves)"
    ))
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

/// The PID namespace a pod's containers share (POD) or have each (CONTAINER); the host's is not offered yet.
fn shares_pid(config: &cri::PodSandboxConfig) -> Result<bool, Status> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    for (mode, what) in [(options.pid, "pid"), (options.ipc, "ipc")] {
        if mode == cri::NamespaceMode::Node as i32 {
            return Err(not_yet(&format!(
                "pods in the host's {what} namespace (namespace_options.{what} = NODE)"
            )));
        }
    }
    Ok(options.pid == cri::NamespaceMode::Pod as i32)
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
    let capabilities = security.capabilities.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in &config.mounts {
        if m.image.is_some() {
            return Err(not_yet("image volumes (mounts[].image)"));
        }
        convert::required(&m.container_path, "mounts.container_path").map_err(invalid)?;
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
    let resources = husk_core::Resources {
        memory_bytes: (limits.memory_limit_in_bytes > 0).then_some(limits.memory_limit_in_bytes),
        nano_cpus: (limits.cpu_quota > 0 && limits.cpu_period > 0)
            .then(|| limits.cpu_quota * 1_000_000_000 / limits.cpu_period),
        ..Default::default()
    };
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
        resources,
        labels: config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        annotations: convert::container_annotations(&metadata, &config.annotations),
        mounts,
        cri_log_path: convert::cri_log_path(pod, &config.log_path),
        sysctls: convert::pod_sysctls(pod),
        masked_paths: (!security.masked_paths.is_empty()).then(|| security.masked_paths.clone()),
        readonly_paths: (!security.readonly_paths.is_empty())
            .then(|| security.readonly_paths.clone()),
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
        }
        let sandbox = SandboxCreate {
            name: Some(name),
            hostname: (!config.hostname.is_empty()).then(|| config.hostname.clone()),
            share_pid: shares_pid(&config)?,
            driver: (!req.runtime_handler.is_empty()).then(|| req.runtime_handler.clone()),
            network: pod_network(&config)?,
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations,
            ..Default::default()
        };
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
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self
            .engine
            .list_sandboxes()
            .map_err(|e| status_of(&e))?
            .into_iter()
            .filter(convert::is_pod)
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
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
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
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .engine
            .list_containers(true)
            .map_err(|e| status_of(&e))?
            .into_iter()
            .filter(convert::is_cri_container)
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
        Ok(Response::new(cri::ListContainersResponse { containers }))
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
        _request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        Err(not_yet("UpdateContainerResources"))
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
        _request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        Err(not_yet("Exec (streaming)"))
    }

    async fn attach(
        &self,
        _request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        Err(not_yet("Attach (streaming)"))
    }

    async fn port_forward(
        &self,
        _request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        Err(not_yet("PortForward (streaming)"))
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
        let containers: Vec<ContainerRecord> = self
            .engine
            .list_containers(true)
            .map_err(|e| status_of(&e))?
            .into_iter()
            .filter(convert::is_cri_container)
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
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        _request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        Err(not_yet("PodSandboxStats"))
    }

    async fn list_pod_sandbox_stats(
        &self,
        _request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        Err(not_yet("ListPodSandboxStats"))
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
                user_namespaces: false,
            })
        };
        let mut runtime_handlers = vec![cri::RuntimeHandler {
            name: String::new(),
            features: features(&info.default_driver),
        }];
        runtime_handlers.extend(info.drivers.iter().map(|d| cri::RuntimeHandler {
            name: d.name.clone(),
            features: features(&d.name),
        }));
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
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(not_yet("CheckpointContainer"))
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
        Err(not_yet("GetContainerEvents"))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(not_yet("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(not_yet("ListPodSandboxMetrics"))
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
