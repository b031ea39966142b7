//! Sandboxes: making one (namespaces, network, /dev/shm, pause process), removing one, and reaping the pause
//! processes this daemon started.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use husk_core::{
    Driver, Error, Result, SandboxConfig, SandboxRecord, SandboxRuntime, SandboxStatus,
};
use nix::mount::MsFlags;

use husk_container::namespaces;

use super::identity::Pins;
use super::rootfs::unmount;
use super::{LinuxDriver, mkdir, remove_dir};

impl LinuxDriver {
    /// [`Driver::create_sandbox`]: pins the sandbox's namespaces, connects its network, mounts its /dev/shm and
    /// starts its pause process; on failure nothing is left.
    pub(super) async fn make_sandbox(&self, config: &SandboxConfig) -> Result<SandboxRuntime> {
        let run_dir = self.sandbox_run_dir(&config.id);
        let ns_dir = run_dir.join("ns");
        let result: Result<SandboxRuntime> = async {
            let share_pid = config.share_pid && !config.host_pid;
            // A user namespace's sandbox keeps its namespaces inside it: only pods ask for one, and they share.
            let private = config.private_ipc_uts && config.user_namespace.is_none();
            let identity = self
                .make_identity(
                    &config.id,
                    &ns_dir,
                    &config.hostname,
                    &config.network,
                    Pins {
                        ipc: !config.host_ipc && !private,
                        uts: !private,
                    },
                    config.user_namespace.as_ref().map(|u| (u, share_pid)),
                )
                .await?;
            let pinned = identity.pinned;
            let userns_pause = identity.pause;
            let mut runtime = SandboxRuntime {
                namespaces: pinned
                    .iter()
                    .map(|(k, v)| (k.clone(), v.display().to_string()))
                    .collect(),
                network: Some(identity.status),
                ..Default::default()
            };
            let shm = run_dir.join("shm");
            mkdir(&shm)?;
            // In the host's IPC namespace the containers bind the host's /dev/shm instead; with a private IPC
            // namespace the container mounts its own.
            if !config.host_ipc && !private {
                nix::mount::mount(
                    Some("shm"),
                    &shm,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some(
                        format!(
                            "mode=1777,size={}",
                            husk_container::spec::shm_size_bytes(&config.resources)
                        )
                        .as_str(),
                    ),
                )
                .map_err(|e| Error::backend(format!("mount the sandbox's /dev/shm: {e}")))?;
            }
            if let Some(pause) = userns_pause {
                // Made with the user namespace, as PID 1 of a PID namespace that belongs to it.
                runtime.pid = Some(pause.pid);
                self.reap_pause_later(&config.id, pause.pidfd);
            } else if share_pid {
                // A sandbox on the host's network pins no network namespace: the pause stays in the host's.
                let join: Vec<PathBuf> = ["net", "ipc", "uts"]
                    .iter()
                    .filter_map(|k| pinned.get(*k).cloned())
                    .collect();
                let pause =
                    namespaces::spawn_pause(&self.sealed_exe.path(), &join, &ns_dir.join("pid"))?;
                runtime.pid = Some(pause.pid);
                runtime
                    .namespaces
                    .insert("pid".into(), ns_dir.join("pid").display().to_string());
                self.reap_pause_later(&config.id, pause.pidfd);
            }
            Ok(runtime)
        }
        .await;
        if result.is_err() {
            let record = SandboxRecord {
                config: config.clone(),
                driver: self.name().into(),
                status: SandboxStatus::Error,
                runtime: SandboxRuntime::default(),
                created_at: husk_core::Timestamp::now(),
                owner_container: None,
                project: String::new(),
            };
            let _ = self.delete_sandbox(&record).await;
        }
        result
    }

    /// [`Driver::delete_sandbox`]: stops its pause process and removes what it had on the host (its network in
    /// the background).
    pub(super) async fn remove_sandbox(&self, sandbox: &SandboxRecord, wait: bool) -> Result<()> {
        let id = &sandbox.config.id;
        let pause = self
            .pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match (pause, sandbox.runtime.pid) {
            (Some(pidfd), _) => {
                // SAFETY: pidfd_send_signal on a pidfd we own, null siginfo.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<u8>(),
                        0,
                    )
                };
            }
            (None, Some(pid)) if pid > 0 => {
                // Started by an earlier daemon: only signal it if it still holds this sandbox's PID namespace.
                let ours = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok();
                let pinned = std::fs::metadata(self.sandbox_run_dir(id).join("ns/pid")).ok();
                use std::os::unix::fs::MetadataExt;
                if let (Some(a), Some(b)) = (ours, pinned)
                    && a.ino() == b.ino()
                {
                    namespaces::signal_pid(pid, libc::SIGKILL);
                }
            }
            _ => {}
        }
        let run_dir = self.sandbox_run_dir(id);
        unmount(&run_dir.join("shm"))?;
        remove_dir(&self.sandbox_dir(id))?;
        if wait {
            self.removal_work(id, None, run_dir.join("ns"), vec![run_dir])
                .await
        } else {
            self.finish_removal_later(id, None, run_dir.join("ns"), vec![run_dir]);
            Ok(())
        }
    }

    fn reap_pause_later(&self, sandbox_id: &str, pidfd: OwnedFd) {
        let pidfd = Arc::new(pidfd);
        self.pauses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sandbox_id.to_string(), pidfd.clone());
        // The pidfd turns readable when the process exits; reap it then. Still listed, it died on its own (a
        // removal takes it out first): say so on the feed of changes, so the sandbox is marked not ready now.
        let (pauses, deaths, id) = (
            self.pauses.clone(),
            self.sandbox_deaths.clone(),
            sandbox_id.to_string(),
        );
        tokio::spawn(async move {
            // SAFETY: the Arc keeps the pidfd open and unchanged for as long as the AsyncFd exists.
            if let Ok(fd) = unsafe { tokio::io::unix::AsyncFd::register(pidfd.clone()) } {
                let _ = fd.readable().await;
            }
            namespaces::reap(&pidfd);
            let listed = pauses
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .is_some_and(|p| Arc::ptr_eq(p, &pidfd));
            if listed {
                let _ = deaths.send(husk_core::BackendChange::SandboxDied { sandbox_id: id });
            }
        });
    }
}
