//! A running container's processes and output: exec, attach, resize, logs, stats, top, and its name.

use husk_core::stdio::BoxStdio;
use husk_core::{Action, ContainerStatus, Error, LogOptions, LogStream, Result, Stats, Top, units};

use crate::{Engine, resolve};

use futures::StreamExt;
use husk_api_types::containers::{ContainerStats, ExecCreate};

impl Engine {
    /// Runs another process in a running container.
    pub async fn exec(&self, key: &str, req: &ExecCreate) -> Result<BoxStdio> {
        self.exec_until(key, req, None).await
    }

    /// [`Engine::exec`], the process killed if it still runs after `deadline` (where the driver can).
    pub async fn exec_until(
        &self,
        key: &str,
        req: &ExecCreate,
        deadline: Option<std::time::Duration>,
    ) -> Result<BoxStdio> {
        let rec = self.container(key)?;
        Action::Exec.check(rec.name(), rec.status)?;
        let driver = self.driver(&rec.driver)?;
        let caps = driver.capabilities();
        caps.require(driver.name(), "exec", caps.exec)?;
        if req.tty {
            caps.require(driver.name(), "terminals", caps.tty)?;
        }
        let process = resolve::exec_process(&rec.config, req)?;
        let stdio = match deadline {
            Some(d) => driver.exec_with_deadline(&rec, &process, d).await,
            None => driver.exec(&rec, &process).await,
        }?;
        crate::failpoint("exec_container:started");
        Ok(stdio)
    }

    /// Connects to the main process's stdio.
    pub async fn attach(&self, key: &str, stdin: bool) -> Result<BoxStdio> {
        let rec = self.container(key)?;
        Action::Attach.check(rec.name(), rec.status)?;
        if stdin && !rec.config.process.stdin {
            return Err(Error::invalid(
                "stdin",
                format!(
                    "container {} was not created with an open stdin (-i)",
                    rec.name()
                ),
            ));
        }
        let driver = self.driver(&rec.driver)?;
        driver
            .capabilities()
            .require(driver.name(), "attach", driver.capabilities().attach)?;
        driver.attach(&rec, stdin).await
    }

    /// Resizes the main process's terminal.
    pub async fn resize(&self, key: &str, rows: u16, cols: u16) -> Result<()> {
        let rec = self.container(key)?;
        if !rec.config.process.tty {
            return Err(Error::conflict(format!(
                "container {} has no terminal",
                rec.name()
            )));
        }
        self.driver(&rec.driver)?.resize(&rec, rows, cols).await
    }

    /// Opens a running container's CRI log file again (kubelet rotated it); nothing for a container that is not
    /// running (its log is closed) or has no CRI log.
    pub async fn reopen_container_log(&self, key: &str) -> Result<()> {
        let rec = self.container(key)?;
        if rec.config.cri_log_path.is_none() {
            return Err(Error::conflict(format!(
                "container {} has no CRI log to reopen",
                rec.name()
            )));
        }
        if !matches!(
            rec.status,
            ContainerStatus::Running | ContainerStatus::Paused
        ) {
            return Err(Error::conflict(format!(
                "container {} is not running",
                rec.name()
            )));
        }
        self.driver(&rec.driver)?.reopen_log(&rec).await
    }

    /// The container's output.
    pub async fn logs(&self, key: &str, options: &LogOptions) -> Result<LogStream> {
        let rec = self.container(key)?;
        self.driver(&rec.driver)?.logs(&rec, options).await
    }

    /// Resource usage now.
    pub async fn stats(&self, key: &str) -> Result<Stats> {
        let rec = self.container(key)?;
        Action::Stats.check(rec.name(), rec.status)?;
        self.driver(&rec.driver)?.stats(&rec).await
    }

    /// The resource usage of the containers `keys` name, or of every running (or paused) container when there
    /// are none, read side by side (a few at a time) in the order asked for (newest first for all). A container
    /// that is named but unknown or not running is an error; one that stops while all are read is left out.
    pub async fn stats_of(&self, keys: &[String]) -> Result<Vec<ContainerStats>> {
        /// Readings in flight at once: enough to hide a driver's round trip (the docker engine's, a VM agent's),
        /// few enough not to flood it.
        const AT_ONCE: usize = 16;
        let named = !keys.is_empty();
        let records = if named {
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                let rec = self.container(key)?;
                Action::Stats.check(rec.name(), rec.status)?;
                records.push(rec);
            }
            records
        } else {
            let mut all = self.list_containers(false)?;
            all.retain(|c| Action::Stats.allowed_in(c.status));
            all
        };
        let readings = futures::stream::iter(records)
            .map(|rec| async move {
                let stats = self.driver(&rec.driver)?.stats(&rec).await?;
                Ok::<_, husk_core::Error>(ContainerStats {
                    id: rec.config.id.clone(),
                    name: rec.name().to_string(),
                    stats,
                })
            })
            .buffered(AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut list = Vec::with_capacity(readings.len());
        for reading in readings {
            match reading {
                Ok(s) => list.push(s),
                Err(e) if named => return Err(e),
                Err(e) => tracing::debug!("stats: left out a container: {e}"),
            }
        }
        Ok(list)
    }

    /// The container's processes.
    pub async fn top(&self, key: &str) -> Result<Top> {
        self.top_with(key, None).await
    }

    /// The container's processes, as the host's `ps` shows them with `ps_args` when given.
    pub async fn top_with(&self, key: &str, ps_args: Option<&str>) -> Result<Top> {
        let rec = self.container(key)?;
        Action::Top.check(rec.name(), rec.status)?;
        let ps_args = ps_args.map(str::trim).filter(|a| !a.is_empty());
        self.driver(&rec.driver)?.top_with(&rec, ps_args).await
    }

    /// Renames a container.
    pub async fn rename_container(&self, key: &str, new_name: &str) -> Result<()> {
        units::validate_name("name", new_name)?;
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let mut rec = self.container(&id)?;
        rec.config.name = new_name.to_string();
        self.inner.store.update(&rec)
    }
}
