//! [`Driver`] for [`DockerDriver`]: each operation of the contract as engine API calls.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::container::AttachContainerResults;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    AttachContainerOptions, KillContainerOptions, StatsOptions, TopOptions,
};
use futures::StreamExt;
use husk_core::stdio::BoxStdio;
use husk_core::{
    ArchiveReader, Capabilities, ContainerConfig, ContainerRecord, ContainerRuntime, Driver,
    DriverInfo, Error, ErrorKind, ExitStatus, ExtractOptions, LogOptions, LogStream, ObservedState,
    PathStat, ProcessConfig, Result, RootfsLayers, SandboxConfig, SandboxRecord, SandboxRuntime,
    Stats, Timestamp, Top,
};

use crate::client::{engine_error, is_local, status};
use crate::driver::{DockerDriver, container_data, exit_status, observed, recorded};
use crate::labels::{self, Role};
use crate::sessions::{AttachSession, DETACH_KEYS, ExecSession, wait_exit_code};
use crate::spec::{Placement, container_body};
use crate::{hijack, logs, stats, stdio_bridge};

/// How often a privileged create is retried after the engine refused a capability it does not know.
const CAPABILITY_RETRIES: usize = 8;

impl DockerDriver {
    /// Starts `process` in the container; returns its stdio and the engine's exec ID.
    async fn start_exec(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
    ) -> Result<(BoxStdio, String)> {
        if process.args.is_empty() {
            return Err(Error::invalid("command", "exec needs a command"));
        }
        let id = self.container_ref(container).await?;
        let what = || format!("exec in container {}", container.name());
        let config = ExecConfig {
            attach_stdin: Some(process.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(process.tty),
            detach_keys: Some(DETACH_KEYS.to_string()),
            env: if process.env.is_empty() {
                None
            } else {
                Some(process.env.clone())
            },
            cmd: Some(process.args.clone()),
            user: if process.user.is_empty() {
                None
            } else {
                Some(process.user.clone())
            },
            working_dir: if process.cwd.is_empty() {
                None
            } else {
                Some(process.cwd.clone())
            },
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(&id, config)
            .await
            .map_err(|e| engine_error(what(), e))?;
        let (output, input) = if process.tty {
            let (path, body) = hijack::exec_start(&exec.id);
            hijack::open(&self.host, &self.docker.client_version(), &path, body)
                .await
                .map_err(|e| e.context(what()))?
        } else {
            let options = StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            };
            let started = self
                .docker
                .start_exec(&exec.id, Some(options))
                .await
                .map_err(|e| engine_error(what(), e))?;
            let StartExecResults::Attached { output, input } = started else {
                return Err(Error::internal(format!(
                    "{}: the engine started the exec detached",
                    what()
                )));
            };
            (output, input)
        };
        let session = Arc::new(ExecSession {
            docker: self.docker.clone(),
            exec_id: exec.id.clone(),
        });
        Ok((
            stdio_bridge::bridge(output, input, process.stdin, session),
            exec.id,
        ))
    }

    async fn create_infra(&self, config: &SandboxConfig) -> Result<(String, String)> {
        let name = labels::infra_name(&self.instance, &config.name);
        let owner = (labels::SANDBOX_ID, config.id.as_str());
        let id = match self
            .create_named(&name, self.infra_request(config)?, owner)
            .await
        {
            Ok(id) => id,
            // The first sandbox on this engine, or someone removed the image: load it and try again.
            Err(e) if e.kind == ErrorKind::NotFound && e.message.contains(self.pause_id()) => {
                self.load_pause_image().await?;
                self.create_named(&name, self.infra_request(config)?, owner)
                    .await?
            }
            Err(e) => return Err(e.context(format!("sandbox {}", config.name))),
        };
        Ok((id, name))
    }

    async fn create_engine_container(
        &self,
        config: &ContainerConfig,
        placement: Placement<'_>,
        sandbox_id: Option<&str>,
    ) -> Result<(String, String)> {
        let name = labels::container_name(&self.instance, &config.name);
        let owner = (labels::CONTAINER_ID, config.id.as_str());
        let mut attempts = 0;
        loop {
            let labels = labels::container_labels(
                &self.instance,
                &config.id,
                &config.name,
                sandbox_id,
                &config.labels,
            );
            let privileges = config.security.privileged.then(|| self.privileges());
            let body = container_body(config, placement, labels, privileges.as_ref())?;
            match self.create_named(&name, body, owner).await {
                Ok(id) => return Ok((id, name)),
                Err(e)
                    if privileges.is_some()
                        && attempts < CAPABILITY_RETRIES
                        && self.refuse_capability(&e) =>
                {
                    attempts += 1
                }
                Err(e) => return Err(e.context(format!("container {}", config.name))),
            }
        }
    }

    /// Signals every process of the container but the main one (which the engine signalled).
    async fn signal_the_rest(&self, engine_id: &str, main_pid: i32, signal: i32) -> Result<()> {
        if !is_local(&self.host) {
            return Err(Error::unsupported(format!(
                "signalling every process of a container needs the engine on this host; {} is remote",
                self.host
            )));
        }
        let options = TopOptions {
            ps_args: "-e -o pid".to_string(),
        };
        let top = match self.docker.top_processes(engine_id, Some(options)).await {
            Ok(t) => t,
            // Not running any more: nothing left to signal.
            Err(e) if status(&e) == Some(409) => return Ok(()),
            Err(e) => return Err(engine_error("list the container's processes", e)),
        };
        for row in top.processes.unwrap_or_default() {
            let Some(pid) = row.first().and_then(|p| p.trim().parse::<i32>().ok()) else {
                continue;
            };
            if pid > 1 && pid != main_pid {
                // SAFETY: kill(2) takes plain integers; a process that exited meanwhile yields ESRCH, ignored.
                unsafe { libc::kill(pid, signal) };
            }
        }
        Ok(())
    }

    async fn inspect_existing(
        &self,
        c: &ContainerRecord,
    ) -> Result<(String, bollard::models::ContainerInspectResponse)> {
        let id = self.container_ref(c).await?;
        let inspect = self.inspect(&id).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "container {} has no engine container (was it removed with the docker CLI?)",
                    c.name()
                ),
            )
        })?;
        Ok((id, inspect))
    }
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn capabilities(&self) -> Capabilities {
        self.engine_capabilities()
    }

    async fn info(&self) -> Result<DriverInfo> {
        Ok(DriverInfo {
            name: "docker".to_string(),
            capabilities: self.capabilities(),
            details: self.details().await?,
        })
    }

    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<SandboxRuntime> {
        if config.user_namespace.is_some() {
            return Err(Error::unsupported(format!(
                "user_namespace: driver docker does not give sandbox {} a user namespace of its own (the engine's \
                 user namespace remapping is daemon-wide); use the linux driver for such a sandbox",
                config.name
            )));
        }
        let (id, name) = self.create_infra(config).await?;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(engine_error(
                format!("start the infra container of sandbox {}", config.name),
                e,
            ));
        }
        self.started_infra(config, &id, &name).await
    }

    async fn revive_sandbox(&self, sandbox: &SandboxRecord) -> Result<SandboxRuntime> {
        // The containers joined the infra container's namespaces by its ID: it is started again, not remade.
        let config = &sandbox.config;
        let id = self.find_infra(sandbox).await?.ok_or_else(|| {
            Error::conflict(format!(
                "sandbox {} has no infra container in the engine any more: remove the container and create it \
                 again",
                config.name
            ))
        })?;
        self.docker.start_container(&id, None).await.map_err(|e| {
            engine_error(
                format!("start the infra container of sandbox {} again", config.name),
                e,
            )
        })?;
        let name = labels::infra_name(&self.instance, &config.name);
        self.started_infra(config, &id, &name).await
    }

    async fn delete_sandbox(&self, sandbox: &SandboxRecord) -> Result<()> {
        let pairs = [
            (labels::INSTANCE, self.instance.as_str()),
            (labels::SANDBOX_ID, sandbox.config.id.as_str()),
        ];
        let members = self.list_labelled(&pairs).await?;
        let role = |s: &bollard::models::ContainerSummary| {
            s.labels
                .as_ref()
                .and_then(|l| l.get(labels::ROLE))
                .and_then(|r| Role::parse(r))
        };
        // Containers first, the infra container (whose namespaces they use) last.
        for member in members.iter().filter(|m| role(m) != Some(Role::Infra)) {
            if let Some(id) = &member.id {
                self.remove(id).await?;
            }
        }
        for member in members.iter().filter(|m| role(m) == Some(Role::Infra)) {
            if let Some(id) = &member.id {
                self.remove(id).await?;
            }
        }
        if let Some(id) = DockerDriver::infra_id(sandbox) {
            self.remove(&id).await?;
        }
        Ok(())
    }

    async fn sandbox_alive(&self, sandbox: &SandboxRecord) -> Result<bool> {
        let Some(id) = self.find_infra(sandbox).await? else {
            return Ok(false);
        };
        Ok(self
            .inspect(&id)
            .await?
            .is_some_and(|i| matches!(observed(&i), ObservedState::Running { .. })))
    }

    async fn create_container(
        &self,
        config: &ContainerConfig,
        sandbox: Option<&SandboxRecord>,
        _rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        let infra = match sandbox {
            Some(s) => Some(self.find_infra(s).await?.ok_or_else(|| {
                Error::conflict(format!(
                    "sandbox {} has no infra container in the engine; recreate the sandbox",
                    s.config.name
                ))
            })?),
            None => None,
        };
        let placement = match (&infra, sandbox) {
            (Some(id), Some(s)) => Placement::Sandbox {
                infra_id: id,
                share_pid: s.config.share_pid,
                host_pid: s.config.host_pid,
                host_ipc: s.config.host_ipc,
            },
            _ => Placement::Standalone,
        };
        self.ensure_image(&config.image)
            .await
            .map_err(|e| e.context(format!("container {}", config.name)))?;
        if let Some(path) = &config.cri_log_path {
            // Made at create, as the linux driver's shim makes it; written from the start on.
            husk_core::cri_log::CriLog::open(Path::new(path))?;
        }
        let sandbox_id = sandbox.map(|s| s.config.id.as_str());
        let (id, name) = self
            .create_engine_container(config, placement, sandbox_id)
            .await?;
        Ok(ContainerRuntime {
            pid: 0,
            driver_data: container_data(&id, &name),
            network: None,
            user: None,
        })
    }

    async fn start_container(
        &self,
        container: &ContainerRecord,
        _sandbox: Option<&SandboxRecord>,
    ) -> Result<ContainerRuntime> {
        let id = self.container_ref(container).await?;
        self.killed_here
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Err(e) = self.docker.start_container(&id, None).await {
            let joined = e.to_string().contains("non running container")
                || e.to_string().contains("cannot join");
            let err = engine_error(format!("start container {}", container.name()), e);
            return Err(if joined {
                Error::conflict(format!(
                    "{}: the sandbox's infra container is not running",
                    err.message
                ))
            } else {
                err
            });
        }
        if let Some(path) = &container.config.cri_log_path
            && let Err(e) =
                self.cri_logs
                    .follow(&self.docker, container.id(), &id, Path::new(path), true)
        {
            tracing::warn!(
                container = container.id(),
                "the CRI log will not be written: {e}"
            );
        }
        let pid = self
            .inspect(&id)
            .await?
            .and_then(|i| i.state)
            .and_then(|s| s.pid)
            .unwrap_or(0) as i32;
        let name = recorded(&container.runtime.driver_data, "engine_name");
        Ok(ContainerRuntime {
            pid,
            driver_data: container_data(&id, &name),
            network: None,
            user: None,
        })
    }

    async fn kill(&self, container: &ContainerRecord, signal: i32, all: bool) -> Result<()> {
        let id = self.container_ref(container).await?;
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        if signal == libc::SIGKILL {
            self.killed_here
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone());
        }
        self.docker
            .kill_container(&id, Some(options))
            .await
            .map_err(|e| engine_error(format!("signal container {}", container.name()), e))?;
        // SIGKILL to the main process ends the rest too: with its own PID namespace the kernel kills it, and in a
        // shared one the runtime kills the container's remaining processes when the main one exits.
        if all && signal != libc::SIGKILL {
            let main_pid = self
                .inspect(&id)
                .await?
                .and_then(|i| i.state)
                .and_then(|s| s.pid)
                .unwrap_or(0) as i32;
            self.signal_the_rest(&id, main_pid, signal).await?;
        }
        Ok(())
    }

    async fn pause(&self, container: &ContainerRecord) -> Result<()> {
        let id = self.container_ref(container).await?;
        self.docker
            .pause_container(&id)
            .await
            .map_err(|e| engine_error(format!("pause container {}", container.name()), e))
    }

    async fn unpause(&self, container: &ContainerRecord) -> Result<()> {
        let id = self.container_ref(container).await?;
        self.docker
            .unpause_container(&id)
            .await
            .map_err(|e| engine_error(format!("unpause container {}", container.name()), e))
    }

    async fn update_limits(
        &self,
        container: &ContainerRecord,
        limits: &husk_core::Resources,
    ) -> Result<()> {
        let id = self.container_ref(container).await?;
        let body = bollard::models::ContainerUpdateBody {
            memory: limits.memory_bytes,
            // As at create, where the engine sets swap to twice the memory: a larger memory alone is refused.
            memory_swap: limits.memory_bytes.map(|m| m.saturating_mul(2)),
            nano_cpus: limits.nano_cpus,
            pids_limit: limits.pids_limit,
            cpu_shares: limits.cpu_shares.map(|s| s as i64),
            cpuset_cpus: limits.cpuset_cpus.clone(),
            cpuset_mems: limits.cpuset_mems.clone(),
            ..Default::default()
        };
        self.docker
            .update_container(&id, body)
            .await
            .map_err(|e| engine_error(format!("update container {}", container.name()), e))
    }

    async fn delete_container(&self, container: &ContainerRecord) -> Result<()> {
        // `run --rm`: the engine removes the container when it sees the exit, maybe before the attached client's
        // stream has asked the engine for the exit code.
        self.attached
            .settle(container.id(), husk_core::attached::SETTLE_LIMIT)
            .await;
        self.cri_logs.forget(container.id());
        if let Some(id) = DockerDriver::engine_id(container) {
            self.remove(&id).await?;
        }
        // Also any engine container labelled with this husk ID (an interrupted create left it unrecorded).
        let pairs = [
            (labels::INSTANCE, self.instance.as_str()),
            (labels::CONTAINER_ID, container.id()),
        ];
        for found in self.list_labelled(&pairs).await? {
            if let Some(id) = found.id {
                self.remove(&id).await?;
            }
        }
        Ok(())
    }

    async fn wait(&self, container: &ContainerRecord) -> Result<ExitStatus> {
        let id = self.container_ref(container).await?;
        let code = wait_exit_code(&self.docker, &id)
            .await
            .map_err(|e| e.context(format!("container {}", container.name())))?;
        let mut status = match self.inspect(&id).await? {
            Some(inspect) => exit_status(&inspect, code),
            None => {
                return Ok(ExitStatus {
                    code,
                    reason: "the engine container was removed".to_string(),
                    ..Default::default()
                });
            }
        };
        // The engine learns of an OOM kill from an event that can come after the exit's (cgroup v1 notifies
        // through an eventfd), and its record of the kill may miss it; its event log does not. A
        // memory-limited container killed by a SIGKILL this driver did not send is asked about again, for up to
        // ten seconds (a loaded host delivers the engine's OOM event late).
        let killed_here = self
            .killed_here
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let limited = container.config.resources.memory_bytes.is_some() && !killed_here;
        let started_at = self
            .inspect(&id)
            .await?
            .and_then(|i| i.state.and_then(|s| s.started_at))
            // An unreadable time becomes the epoch, so the search covers the whole log rather than nothing.
            .map(|t| Timestamp::parse(&t).unwrap_or(Timestamp::UNIX_EPOCH));
        for _ in 0..100 {
            if status.oom_killed || code != 137 || !limited {
                break;
            }
            if let Some(since) = started_at
                && self.oom_event_since(&id, since).await?
            {
                status.oom_killed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            match self.inspect(&id).await? {
                Some(inspect) => status = exit_status(&inspect, code),
                // Removed meanwhile: a forced removal killed it, no OOM verdict will come.
                None => break,
            }
        }
        Ok(status)
    }

    async fn observe(&self, container: &ContainerRecord) -> Result<ObservedState> {
        let Some(id) = self.find_container(container).await? else {
            return Ok(ObservedState::Missing);
        };
        let state = match self.inspect(&id).await? {
            Some(inspect) => observed(&inspect),
            None => ObservedState::Missing,
        };
        // A container this daemon found (after a restart) has its CRI log written from where it ends: the rest
        // of a running container's output, or what an exited one printed while no daemon ran. Not when kubelet
        // removed the file.
        if let Some(path) = &container.config.cri_log_path
            && !matches!(state, ObservedState::Created | ObservedState::Missing)
            && Path::new(path).exists()
            && let Err(e) =
                self.cri_logs
                    .follow(&self.docker, container.id(), &id, Path::new(path), false)
        {
            tracing::warn!(
                container = container.id(),
                "the CRI log will not be written: {e}"
            );
        }
        Ok(state)
    }

    async fn exec(&self, container: &ContainerRecord, process: &ProcessConfig) -> Result<BoxStdio> {
        self.start_exec(container, process)
            .await
            .map(|(stdio, _)| stdio)
    }

    async fn exec_with_deadline(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline: std::time::Duration,
    ) -> Result<BoxStdio> {
        let (stdio, exec_id) = self.start_exec(container, process).await?;
        if is_local(&self.host) {
            let docker = self.docker.clone();
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                kill_exec(&docker, &exec_id).await;
            });
        }
        Ok(stdio)
    }

    async fn attach(&self, container: &ContainerRecord, stdin: bool) -> Result<BoxStdio> {
        let (id, inspect) = self.inspect_existing(container).await?;
        let open_stdin = inspect
            .config
            .as_ref()
            .and_then(|c| c.open_stdin)
            .unwrap_or(false);
        let tty = inspect.config.as_ref().and_then(|c| c.tty).unwrap_or(false);
        let what = || format!("attach to container {}", container.name());
        let (output, input) = if tty {
            let path = hijack::attach_path(&id, stdin && open_stdin, DETACH_KEYS);
            hijack::open(&self.host, &self.docker.client_version(), &path, Vec::new())
                .await
                .map_err(|e| e.context(what()))?
        } else {
            let options = AttachContainerOptions {
                detach_keys: Some(DETACH_KEYS.to_string()),
                logs: false,
                stream: true,
                stdin: stdin && open_stdin,
                stdout: true,
                stderr: true,
            };
            let AttachContainerResults { output, input } = self
                .docker
                .attach_container(&id, Some(options))
                .await
                .map_err(|e| engine_error(what(), e))?;
            (output, input)
        };
        let session = Arc::new(AttachSession {
            docker: self.docker.clone(),
            engine_id: id,
            _attached: self.attached.guard(container.id()),
        });
        Ok(stdio_bridge::bridge(
            output,
            input,
            stdin && open_stdin,
            session,
        ))
    }

    async fn resize(&self, container: &ContainerRecord, rows: u16, cols: u16) -> Result<()> {
        let id = self.container_ref(container).await?;
        let options = bollard::query_parameters::ResizeContainerTTYOptions {
            h: i32::from(rows),
            w: i32::from(cols),
        };
        self.docker
            .resize_container_tty(&id, options)
            .await
            .map_err(|e| {
                engine_error(
                    format!("resize the terminal of container {}", container.name()),
                    e,
                )
            })
    }

    /// Reopens the CRI log its follower writes (starting the follower when this daemon has none yet).
    async fn reopen_log(&self, container: &ContainerRecord) -> Result<()> {
        let Some(path) = &container.config.cri_log_path else {
            return Err(Error::conflict(format!(
                "container {} has no CRI log to reopen",
                container.name()
            )));
        };
        let id = self.container_ref(container).await?;
        self.cri_logs
            .follow(&self.docker, container.id(), &id, Path::new(path), false)?;
        self.cri_logs.reopen(container.id())
    }

    async fn logs(&self, container: &ContainerRecord, options: &LogOptions) -> Result<LogStream> {
        let (id, _) = self.inspect_existing(container).await?;
        Ok(logs::stream(
            self.docker.clone(),
            id,
            container.name().to_string(),
            options.clone(),
        ))
    }

    async fn stats(&self, container: &ContainerRecord) -> Result<Stats> {
        let (id, inspect) = self.inspect_existing(container).await?;
        let limited = inspect
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .unwrap_or(0)
            > 0;
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let reading = self
            .docker
            .stats(&id, Some(options))
            .next()
            .await
            .ok_or_else(|| {
                Error::backend(format!(
                    "read the stats of container {}: the engine sent none",
                    container.name()
                ))
            })?;
        let reading = reading.map_err(|e| {
            engine_error(
                format!("read the stats of container {}", container.name()),
                e,
            )
        })?;
        Ok(stats::map(&reading, limited))
    }

    fn changes(&self) -> Option<husk_core::ChangeStream> {
        let removed = self.events().filter_map(|e| async move {
            match e {
                Ok(e) if e.action == "destroy" && e.role == Some(Role::Container) => {
                    e.container_id.map(|container_id| {
                        Ok(husk_core::BackendChange::ContainerRemoved { container_id })
                    })
                }
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        });
        Some(Box::pin(removed))
    }

    async fn remove_orphans(
        &self,
        sandboxes: &std::collections::HashSet<String>,
        containers: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        // Containers first, infra containers last (they hold the namespaces the others join).
        let mut owned = self.list_owned().await?;
        owned.sort_by_key(|o| o.role == Role::Infra);
        for o in owned {
            let known = match o.role {
                Role::Infra => o
                    .sandbox_id
                    .as_ref()
                    .is_some_and(|id| sandboxes.contains(id)),
                Role::Container => o
                    .container_id
                    .as_ref()
                    .is_some_and(|id| containers.contains(id)),
            };
            if !known {
                self.remove_owned(&o.engine_id).await?;
                removed.push(format!("engine container {}", o.engine_name));
            }
        }
        Ok(removed)
    }

    async fn top(&self, container: &ContainerRecord) -> Result<Top> {
        self.top_with(container, None).await
    }

    async fn top_with(&self, container: &ContainerRecord, ps_args: Option<&str>) -> Result<Top> {
        let id = self.container_ref(container).await?;
        let options = TopOptions {
            ps_args: ps_args.unwrap_or("-ef").to_string(),
        };
        let top = self
            .docker
            .top_processes(&id, Some(options))
            .await
            .map_err(|e| {
                engine_error(
                    format!("list the processes of container {}", container.name()),
                    e,
                )
            })?;
        Ok(Top {
            titles: top.titles.unwrap_or_default(),
            processes: top.processes.unwrap_or_default(),
        })
    }

    async fn stat_path(&self, container: &ContainerRecord, path: &str) -> Result<PathStat> {
        let id = self.container_ref(container).await?;
        crate::archive::stat(&self.docker, &id, path).await
    }

    async fn archive(&self, container: &ContainerRecord, path: &str) -> Result<ArchiveReader> {
        let id = self.container_ref(container).await?;
        Ok(crate::archive::download(&self.docker, &id, path))
    }

    async fn extract(
        &self,
        container: &ContainerRecord,
        dir: &str,
        archive: ArchiveReader,
        options: &ExtractOptions,
    ) -> Result<()> {
        let id = self.container_ref(container).await?;
        crate::archive::upload(&self.docker, &id, dir, archive, options).await
    }
}

/// Kills an exec that still runs (its deadline passed): the engine reports its PID on this host.
async fn kill_exec(docker: &bollard::Docker, exec_id: &str) {
    if let Ok(inspect) = docker.inspect_exec(exec_id).await
        && inspect.running == Some(true)
        && let Some(pid) = inspect.pid.filter(|p| *p > 0)
    {
        // SAFETY: sending a signal to a process ID the engine just reported as its running exec.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}
