//! Making containers and starting their processes in the guest: the bundle from the host's config and shares,
//! the main process and execs, the file helpers of `cp`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use husk_agent_protocol::proto;
use husk_core::stdio::Frame;
use husk_core::{ContainerConfig, Error, MountKind, Result};
use tonic::Streaming;

use husk_container::container_fs::{FsOp, FsTarget};
use husk_container::shim::Request as ShimRequest;

use crate::files::{self, Helper};
use crate::runtime::ContainerSetup;
use crate::shim::Bundle;

use super::*;

impl AgentService {
    pub(super) fn do_create(&self, req: proto::CreateContainerRequest) -> Result<()> {
        valid_id("id", &req.id)?;
        let config: ContainerConfig = serde_json::from_str(&req.config_json).map_err(|e| {
            Error::invalid("config_json", format!("not a container configuration: {e}"))
        })?;
        if config.id != req.id {
            return Err(Error::invalid(
                "config_json",
                format!("configuration is for {:?}, not {:?}", config.id, req.id),
            ));
        }
        if config.process.args.is_empty() {
            return Err(Error::invalid("args", "the container's command is empty"));
        }
        let mut config = config;
        self.locate_mount_sources(&mut config, &req.mounts_tag)?;
        let share = self.share(&req.share_tag)?;
        let mut lower = Vec::new();
        for l in &req.layers {
            lower.push(share.join(inside_share("layers", l)?));
        }
        let setup = ContainerSetup {
            id: req.id.clone(),
            dir: self.inner.env.run_dir.join("containers").join(&req.id),
            lower,
            cgroup: self
                .inner
                .env
                .cgroup_root
                .as_ref()
                .map(|r| r.join(crate::shim::cgroup_path(&req.id).trim_start_matches('/'))),
            shared_pid_ns: if self.inner.env.booted.get().share_pid {
                Some(self.pid_holder()?)
            } else {
                None
            },
            etc_files: name_files(share),
        };
        let mut containers = lock(&self.inner.containers);
        if containers.contains_key(&req.id) {
            return Err(Error::conflict(format!(
                "container {:?} already exists in this VM",
                req.id
            )));
        }
        self.inner.runtime.create(&setup)?;
        // The spec is checked now (user, working directory, capabilities, seccomp profile), so a container that
        // cannot start is refused at create, as on the linux driver.
        if let Err(e) = self.inner.maker.write_bundle(&setup, &config) {
            let _ = self.inner.runtime.delete(&setup);
            return Err(e);
        }
        let main = Proc::new(config.process.tty);
        containers.insert(
            req.id,
            Arc::new(Container {
                setup,
                limits: Mutex::new(config.resources.clone()),
                config,
                main: Mutex::new(main),
                execs: Mutex::new(HashMap::new()),
                paused: Mutex::new(false),
            }),
        );
        Ok(())
    }

    pub(super) fn share(&self, tag: &str) -> Result<&PathBuf> {
        self.inner
            .env
            .booted
            .get()
            .shares
            .get(tag)
            .ok_or_else(|| Error::not_found(format!("9p share {tag:?} in this VM")))
    }

    /// Points the container's binds and volumes at their sources in the mounts share `tag`: the host bound
    /// each source at `<container>/<n>` there, and sent that relative path as the mount's `host_path`.
    pub(super) fn locate_mount_sources(
        &self,
        config: &mut ContainerConfig,
        tag: &str,
    ) -> Result<()> {
        for m in config
            .mounts
            .iter_mut()
            .filter(|m| m.kind == MountKind::Bind || m.kind == MountKind::Volume)
        {
            if tag.is_empty() {
                return Err(Error::unsupported(format!(
                    "driver vm: the {} mount on {} needs the VM's mounts share, and the host sent none",
                    m.kind, m.destination
                )));
            }
            let source = self.share(tag)?.join(inside_share("mounts", &m.host_path)?);
            if std::fs::symlink_metadata(&source).is_err() {
                return Err(Error::not_found(format!(
                    "the source of the {} mount on {} in the VM's mounts share ({})",
                    m.kind,
                    m.destination,
                    source.display()
                )));
            }
            m.host_path = source.to_string_lossy().into_owned();
        }
        Ok(())
    }

    /// Where a container-fs helper finds the files of `c`: in its main process's mount namespace while it
    /// runs (a pidfd of it, taken while the agent knows it to be running), else a view of its root
    /// filesystem (kept mounted until the container is removed) with its binds and volumes.
    pub(super) fn fs_target(&self, c: &Container) -> (FsTarget, Option<OwnedFd>) {
        let main = lock(&c.main).clone();
        if main.running()
            && let Ok(pidfd) = husk_container::fs_helper::pidfd(main.pid())
            && main.running()
        {
            return (FsTarget::Process, Some(pidfd));
        }
        (
            FsTarget::View {
                rootfs: c.setup.rootfs(),
                readonly_rootfs: c.config.security.readonly_rootfs,
                mounts: c.config.mounts.clone(),
            },
            None,
        )
    }

    /// Starts a container-fs helper for `op` on container `id`.
    pub(super) fn fs_helper(&self, id: &str, op: FsOp, input: bool) -> Result<Helper> {
        let c = self.container(id)?;
        let (target, pidfd) = self.fs_target(&c);
        Helper::start(&self.inner.reaper, target, op, pidfd.as_ref(), input)
    }

    /// Starts the container's main process: a shim creates the container from the bundle, the agent attaches to
    /// its output before starting it (so no output is missed), and a watcher records the exit.
    ///
    /// `first` says the bundle written at create was never used; a restart writes it again.
    pub(super) async fn launch_main(
        &self,
        c: &Arc<Container>,
        p: &Arc<Proc>,
        first: bool,
    ) -> Result<i32> {
        let bundle = Bundle::of(&c.setup);
        let (this, c2, b2) = (self.clone(), c.clone(), bundle.clone());
        let init_pid = tokio::task::spawn_blocking(move || {
            if !first {
                // A restart: the limits an update set since create count.
                let mut config = c2.config.clone();
                config.resources = lock(&c2.limits).clone();
                this.inner.maker.write_bundle(&c2.setup, &config)?;
            }
            crate::shim::spawn(&this.inner.reaper, &b2)
        })
        .await
        .map_err(|e| Error::internal(format!("shim start task: {e}")))??;
        let client = bundle.client();
        if let Err(e) = files::apply_propagation(&self.inner.reaper, &c.config, init_pid).await {
            let _ = client.call(&ShimRequest::Shutdown).await;
            return Err(e);
        }
        let output = match client.stream(&ShimRequest::Attach { stdin: true }).await {
            Ok((_, conn)) => p.connect(conn),
            Err(e) => {
                let _ = client.call(&ShimRequest::Shutdown).await;
                return Err(e);
            }
        };
        let pid = match client.call(&ShimRequest::Start).await {
            Ok(r) => r.pid.unwrap_or(0),
            Err(e) => {
                let _ = client.call(&ShimRequest::Shutdown).await;
                return Err(e);
            }
        };
        *lock(&p.pid) = pid;
        let p = p.clone();
        tokio::spawn(async move {
            let waited = client.call(&ShimRequest::Wait).await;
            // The exit frame comes after the last output: the stream ends once everything was forwarded.
            let streamed = output.await.ok().flatten();
            let (code, oom) = match waited.ok().and_then(|r| r.exit) {
                Some(exit) => (exit.code, exit.oom_killed),
                None => (streamed.unwrap_or(255), false),
            };
            p.finish(code, oom);
        });
        Ok(pid)
    }

    /// Runs `process` in the running container `c` through its shim (libcontainer joins the container's
    /// namespaces and cgroup).
    pub(super) async fn launch_exec(
        &self,
        c: &Arc<Container>,
        p: &Arc<Proc>,
        process: &husk_core::ProcessConfig,
        deadline_ms: u64,
    ) -> Result<i32> {
        if process.args.is_empty() {
            return Err(Error::invalid("args", "the command is empty"));
        }
        let process_json = self
            .inner
            .maker
            .exec_process(&c.setup, &c.config, process)?;
        let (r, conn) = Bundle::of(&c.setup)
            .client()
            .stream(&ShimRequest::Exec {
                process: process_json,
                stdin: process.stdin,
                deadline_ms: (deadline_ms > 0).then_some(deadline_ms),
            })
            .await?;
        let pid = r.pid.unwrap_or(0);
        *lock(&p.pid) = pid;
        let output = p.connect(conn);
        let p = p.clone();
        tokio::spawn(async move {
            let code = output.await.ok().flatten().unwrap_or(255);
            p.finish(code, false);
        });
        Ok(pid)
    }

    pub(super) async fn feed_input(p: Arc<Proc>, mut input: Streaming<proto::StdioIn>) {
        while let Ok(Some(msg)) = input.message().await {
            if msg.frame.is_empty() {
                continue;
            }
            let frame = if msg.frame.len() < 8 {
                Err("truncated frame".to_string())
            } else {
                Frame::decode(msg.frame[0], msg.frame[8..].to_vec()).map_err(|e| e.to_string())
            };
            match frame {
                Ok(f @ (Frame::Stdin(_) | Frame::CloseStdin | Frame::Resize { .. })) => {
                    p.send(f);
                }
                Ok(_) | Err(_) => {
                    // Output frames or garbage from the host: tell it, keep the process alive.
                    lock(&p.hub).readers.retain(|r| {
                        r.try_send(Frame::Stderr(
                            b"husk-agent: ignored a bad stdio frame\n".to_vec(),
                        ))
                        .is_ok()
                    });
                }
            }
        }
    }
}
