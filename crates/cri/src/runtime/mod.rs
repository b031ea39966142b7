//! The CRI RuntimeService over the engine: pods are husk sandboxes, containers husk containers in them.
//!
//! This file holds the service (one short method per RPC) and the lookups they share; `requests` turns the
//! CRI's requests into husk's, `status` husk's records into the CRI's statuses and list items, `stats` reads
//! stats and metrics.
//!
//! Why this file is long: one short method per RPC of the CRI's RuntimeService (tonic wants them in one `impl`); the
//! work is in `requests`, `status` and `stats`.

use std::collections::HashMap;
use std::time::Duration;

use husk_api_types::{ExecCreate, SandboxCreate};
use husk_core::{ContainerRecord, SandboxRecord};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_server::RuntimeService;
use husk_engine::Engine;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::status_of;
use crate::streaming::Streaming;

mod requests;
mod stats;
mod status;

use requests::{
    check_apparmor, check_image_volumes, checkpoint_refusal, container_request, idempotent,
    pod_network, resources_of, set_pod_namespaces,
};

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
        let mut containers = self
            .engine
            .sandbox_container_records(pod)
            .map_err(|e| status_of(&e))?;
        containers.retain(convert::is_cri_container);
        Ok(containers)
    }
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
}
