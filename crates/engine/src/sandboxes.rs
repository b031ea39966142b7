//! Sandbox lifecycle.

use husk_core::{
    ContainerRecord, ContainerStatus, Error, Result, SandboxConfig, SandboxRecord, SandboxRuntime,
    SandboxStatus, units,
};
use serde_json::json;

use crate::Engine;
use husk_api_types::containers::{SandboxCreate, SandboxView};

/// Checks a sandbox's own user namespace: valid mappings, and none of the host's namespaces, which belong to the
/// host's user namespace (root of the sandbox's could not mount `/proc` for the host's PID namespace, nor `/sys`
/// for the host's network; Kubernetes refuses `hostUsers: false` with any of them too).
fn validate_user_namespace(
    userns: &husk_core::UserNamespaceConfig,
    req: &SandboxCreate,
) -> Result<()> {
    userns.validate("user_namespace")?;
    let host_network = req.network.mode() == "host";
    for (asked, what) in [
        (host_network, "network"),
        (req.host_pid, "PID"),
        (req.host_ipc, "IPC"),
    ] {
        if asked {
            return Err(Error::invalid(
                "user_namespace",
                format!(
                    "user_namespace: a sandbox with a user namespace of its own cannot use the host's {what} \
                     namespace, which belongs to the host's user namespace"
                ),
            ));
        }
    }
    Ok(())
}

impl Engine {
    /// Every sandbox.
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxRecord>> {
        let mut list = self.inner.store.list::<SandboxRecord>()?;
        list.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        Ok(list)
    }

    /// IDs of the containers in a sandbox.
    pub fn sandbox_containers(&self, sandbox_id: &str) -> Result<Vec<String>> {
        Ok(self
            .sandbox_container_records(sandbox_id)?
            .into_iter()
            .map(|c| c.config.id)
            .collect())
    }

    /// The containers in a sandbox, oldest first (the store's index: the cost does not grow with the number of
    /// other containers).
    pub fn sandbox_container_records(&self, sandbox_id: &str) -> Result<Vec<ContainerRecord>> {
        self.inner.store.children::<ContainerRecord>(sandbox_id)
    }

    /// The inspect view of a sandbox.
    pub fn inspect_sandbox(&self, key: &str) -> Result<SandboxView> {
        let sb = self.sandbox(key)?;
        let containers = self.sandbox_containers(&sb.config.id)?;
        let mut view = SandboxView::new(&sb, containers);
        view.volumes = self.sandbox_volume_names(&sb.config.id)?;
        Ok(view)
    }

    /// Creates a sandbox.
    pub async fn create_sandbox(&self, req: SandboxCreate) -> Result<SandboxRecord> {
        let name = match req.name.as_deref() {
            Some(n) if !n.is_empty() => {
                units::validate_name("name", n)?;
                n.to_string()
            }
            _ => husk_core::random_name(),
        };
        let hostname = match &req.hostname {
            Some(h) => {
                units::validate_hostname(h)?;
                h.clone()
            }
            // A name may hold '_' which hostnames may not.
            None => name.replace('_', "-").chars().take(63).collect(),
        };
        crate::resolve::validate_resources(&req.resources)?;
        let driver_name = req
            .driver
            .clone()
            .unwrap_or_else(|| self.inner.config.default_driver.clone());
        let driver = self.driver(&driver_name)?;
        let caps = driver.capabilities();
        caps.require_mode(driver.name(), husk_core::Mode::Sandbox)?;
        // In the host's PID namespace the containers share that one.
        let share_pid = req.share_pid && !req.host_pid;
        if share_pid {
            caps.require(driver.name(), "a shared PID namespace", caps.pid_sharing)?;
        }
        if !req.volumes.is_empty() {
            caps.require(driver.name(), "volumes", caps.volumes)?;
        }
        if req.resources.shm_size_bytes.is_some() {
            caps.require(driver.name(), "a /dev/shm size (--shm-size)", caps.shm_size)?;
        }
        if let Some(userns) = &req.user_namespace {
            validate_user_namespace(userns, &req)?;
        }
        let cgroup_parent = match req.cgroup_parent.as_deref() {
            None | Some("") => None,
            Some(p) => Some(units::validate_cgroup_parent("cgroup_parent", p)?),
        };
        let volumes = req.volumes.clone();
        let mut sb = SandboxRecord {
            config: SandboxConfig {
                id: husk_core::new_id(),
                name,
                hostname,
                share_pid,
                host_pid: req.host_pid,
                host_ipc: req.host_ipc,
                private_ipc_uts: false,
                user_namespace: req.user_namespace,
                network: req.network,
                resources: req.resources,
                cgroup_parent,
                labels: req.labels,
                annotations: req.annotations,
            },
            driver: driver_name,
            status: SandboxStatus::Creating,
            runtime: SandboxRuntime::default(),
            created_at: husk_core::Timestamp::now(),
            owner_container: None,
            project: crate::scope::project_of(req.project.as_deref())?,
        };
        let op = self
            .inner
            .store
            .begin_operation("create_sandbox", &sb.config.id, &json!({}))?;
        self.inner.store.insert(&sb)?;
        let made = match self.create_sandbox_volumes(&sb, &volumes).await {
            Ok(()) => driver.create_sandbox(&sb.config).await,
            Err(e) => Err(e),
        };
        match made {
            Ok(runtime) => {
                crate::failpoint("create_sandbox:driver_created");
                sb.runtime = runtime;
                sb.status = SandboxStatus::Ready;
                self.inner.store.update(&sb)?;
                self.inner.store.finish_operation(op)?;
                Ok(sb)
            }
            Err(e) => {
                let _ = driver.delete_sandbox(&sb).await;
                let _ = self.remove_sandbox_volumes(&sb.config.id).await;
                self.inner.store.delete::<SandboxRecord>(&sb.config.id)?;
                self.inner.store.finish_operation(op)?;
                Err(e)
            }
        }
    }

    /// Stops a sandbox: stops every container in it (each with `timeout` seconds before SIGKILL, or its own stop
    /// timeout) and marks it `notready`; it keeps its namespaces and network until it is removed. Stopping a
    /// stopped sandbox does nothing.
    pub async fn stop_sandbox(&self, key: &str, timeout: Option<u32>) -> Result<()> {
        let sb = self.sandbox(key)?;
        for id in self.sandbox_containers(&sb.config.id)? {
            let running = match self.container(&id) {
                Ok(rec) => matches!(
                    rec.status,
                    ContainerStatus::Running
                        | ContainerStatus::Paused
                        | ContainerStatus::Restarting
                ),
                Err(e) if e.kind == husk_core::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if running {
                match self.stop_container(&id, timeout).await {
                    Ok(_) => {}
                    Err(e) if e.kind == husk_core::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let _guard = self.lock(&sb.config.id).await;
        if let Some(mut sb) = self.inner.store.get::<SandboxRecord>(&sb.config.id)?
            && sb.status != SandboxStatus::NotReady
        {
            sb.status = SandboxStatus::NotReady;
            self.inner.store.update(&sb)?;
        }
        Ok(())
    }

    /// Connects to TCP `port` of a ready sandbox (the CRI's PortForward): the pod's localhost where its driver
    /// keeps one in a network namespace the host can enter, else its address.
    pub async fn connect_sandbox_port(
        &self,
        key: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream> {
        let sb = self.sandbox(key)?;
        if sb.status != SandboxStatus::Ready {
            return Err(husk_core::Error::conflict(format!(
                "sandbox {} is {}, not ready: its ports cannot be reached",
                sb.config.id, sb.status
            )));
        }
        let target = self.driver(&sb.driver)?.port_forward_target(&sb)?;
        let timeout = std::time::Duration::from_secs(10);
        match target {
            husk_core::PortForwardTarget::Loopback { netns } => {
                let stream = husk_core::spawn_blocking(move || {
                    husk_net::netns::connect_loopback(netns.as_deref(), port, timeout)
                })
                .await
                .map_err(|e| husk_core::Error::internal(format!("port connection task: {e}")))??;
                stream
                    .set_nonblocking(true)
                    .map_err(|e| husk_core::Error::io("make a socket non-blocking", e))?;
                tokio::net::TcpStream::from_std(stream)
                    .map_err(|e| husk_core::Error::io("register a connected socket", e))
            }
            husk_core::PortForwardTarget::Address(ip) => {
                let addr = std::net::SocketAddr::new(ip, port);
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| {
                        husk_core::Error::timeout(format!(
                            "connect to {addr} of sandbox {}",
                            sb.config.id
                        ))
                    })?
                    .map_err(|e| husk_core::Error::io(format!("connect to {addr}"), e))
            }
        }
    }

    /// Removes a sandbox; with `force`, its containers first, else only when it has none.
    pub async fn remove_sandbox(&self, key: &str, force: bool) -> Result<()> {
        let sb = self.sandbox(key)?;
        let containers = self.sandbox_containers(&sb.config.id)?;
        if !containers.is_empty() {
            if !force {
                return Err(Error::conflict(format!(
                    "sandbox {} has {} container(s): remove them first, or force the removal (sandbox rm -f)",
                    sb.config.name,
                    containers.len()
                )));
            }
            for id in containers {
                match self.remove_container(&id, true).await {
                    Ok(()) => {}
                    Err(e) if e.kind == husk_core::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // The owner container's removal may already have taken the sandbox with it.
        let Some(sb) = self.inner.store.get::<SandboxRecord>(&sb.config.id)? else {
            return Ok(());
        };
        let _guard = self.lock(&sb.config.id).await;
        let op = self
            .inner
            .store
            .begin_operation("remove_sandbox", &sb.config.id, &json!({}))?;
        self.remove_sandbox_locked(&sb).await?;
        self.inner.store.finish_operation(op)?;
        Ok(())
    }

    pub(crate) async fn remove_sandbox_locked(&self, sb: &SandboxRecord) -> Result<()> {
        self.driver(&sb.driver)?.delete_sandbox(sb).await?;
        crate::failpoint("remove_sandbox:driver_deleted");
        self.remove_sandbox_volumes(&sb.config.id).await?;
        self.inner.store.delete::<SandboxRecord>(&sb.config.id)?;
        self.forget_lock(&sb.config.id);
        Ok(())
    }
}
