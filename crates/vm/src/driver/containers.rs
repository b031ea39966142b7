//! A container in its VM: its creation through the agent (with its shares, CRI log and log reader), exec, the
//! state it is observed in, and the [`BoxStdio`] over an agent stdio stream that exec and attach return.

use std::time::Duration;

use husk_core::stdio::{BoxStdio, Frame, read_frame, write_frame};
use husk_core::{
    ContainerConfig, ContainerRecord, ContainerRuntime, ErrorKind, ExitStatus, ObservedState,
    ProcessConfig, Result, RootfsLayers,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{VmDriver, VmHandle};
use crate::proto::{LAYERS_TAG as SHARE_TAG, MOUNTS_TAG};

impl VmDriver {
    pub(super) async fn create_in(
        &self,
        vm_name: &str,
        handle: &VmHandle,
        config: &ContainerConfig,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        // The VM's hostname is the sandbox's (or the standalone container's): containers share the guest's UTS
        // namespace instead of making their own.
        let mut config = config.clone();
        config.hostname.clear();
        let vm_config = handle.vm.lock().await.config.clone();
        self.prepare_cri_log(&config)?;
        let shared = self
            .share_mounts(&vm_config, vm_name, &mut config)
            .and_then(|()| self.share_layers(vm_name, &rootfs.layers));
        let made = match shared {
            Ok(layers) => {
                let mounts_tag = if vm_config.shares.iter().any(|s| s.tag == MOUNTS_TAG) {
                    MOUNTS_TAG
                } else {
                    ""
                };
                handle
                    .client
                    .create_container_with_mounts(&config, SHARE_TAG, layers, mounts_tag)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            // A conflict means the VM already has this container: its shares and logs are in use.
            if e.kind != ErrorKind::Conflict {
                self.unshare_container(vm_name, &config.id);
                let _ = self.remove_logs(&config.id);
            }
            return Err(e);
        }
        let _ = std::fs::remove_file(self.ctr_dir(&config.id).join("exit.json"));
        self.follow_logs(handle.client.clone(), &config.id);
        Ok(ContainerRuntime {
            pid: 0,
            driver_data: json!({ "vm": vm_name }),
            network: None,
            user: None,
        })
    }

    /// Runs `process` in the container; with a `deadline`, the container's shim in the guest kills it (SIGKILL) if
    /// it still runs then.
    pub(super) async fn exec_in(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline: Option<Duration>,
    ) -> Result<BoxStdio> {
        let client = self.client_for(container).await?;
        let exec_id = format!("exec-{:016x}", rand::random::<u64>());
        client
            .exec_with_deadline(container.id(), &exec_id, process, deadline)
            .await?;
        let (tx, rx) = client.stdio(container.id(), &exec_id).await?;
        Ok(bridge(tx, rx, || {}))
    }

    pub(super) async fn observe_once(&self, container: &ContainerRecord) -> Result<ObservedState> {
        let client = match self.client_for(container).await {
            Ok(c) => c,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return Ok(match self.read_exit(container.id()) {
                    Some(exit) => ObservedState::Exited(exit),
                    // Its VM is gone but this driver made it: it died with the VM.
                    None if self.ctr_dir(container.id()).exists() => {
                        ObservedState::Exited(ExitStatus {
                            code: 255,
                            finished_at: Some(husk_core::Timestamp::now()),
                            reason:
                                "the VM stopped (crashed or was killed) while the container ran"
                                    .into(),
                            ..Default::default()
                        })
                    }
                    None => ObservedState::Missing,
                });
            }
            Err(e) => return Err(e),
        };
        let list = client.list().await?;
        let Some(c) = list.into_iter().find(|c| c.id == container.id()) else {
            return Ok(ObservedState::Missing);
        };
        Ok(match c.status.as_str() {
            "created" => ObservedState::Created,
            "running" => ObservedState::Running { pid: 0 },
            "paused" => ObservedState::Paused { pid: 0 },
            _ => ObservedState::Exited(self.read_exit(container.id()).unwrap_or(ExitStatus {
                code: c.exit_code,
                ..Default::default()
            })),
        })
    }
}

/// A [`BoxStdio`] over an agent stdio stream: frames written to it go to the process, its output comes out.
pub(super) fn bridge(
    to_process: mpsc::Sender<Frame>,
    mut from_process: mpsc::Receiver<Frame>,
    on_end: impl FnOnce() + Send + 'static,
) -> BoxStdio {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut r, mut w) = tokio::io::split(ours);
    tokio::spawn(async move {
        while let Some(f) = from_process.recv().await {
            let last = matches!(f, Frame::Exit(_) | Frame::Error(_));
            if write_frame(&mut w, &f).await.is_err() || last {
                break;
            }
        }
        let _ = w.shutdown().await;
        on_end();
    });
    tokio::spawn(async move {
        while let Ok(Some(f)) = read_frame(&mut r).await {
            if to_process.send(f).await.is_err() {
                break;
            }
        }
    });
    Box::new(theirs)
}
