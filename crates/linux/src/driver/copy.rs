//! Copies in and out of a container (stat, archive, extract): the container-fs helper and where it finds the
//! container's files.

use std::os::fd::OwnedFd;

use husk_core::{ContainerRecord, Error, Result, RootfsLayers};

use husk_container::container_fs::{FsOp, FsRequest, FsTarget};
use husk_container::shim::{Request, ShimStatus};

use super::LinuxDriver;
use super::identity::ContainerUserns;

impl LinuxDriver {
    /// Where a helper finds the container's files: inside its init process's mount namespace when there is
    /// one (with a pidfd of it, confirmed by the shim after it was opened, so it cannot be another process that
    /// took the PID), else a view of the stopped container.
    async fn fs_target(&self, container: &ContainerRecord) -> Result<(FsTarget, Option<OwnedFd>)> {
        let id = container.id();
        let alive = |r: &husk_container::shim::Response| {
            matches!(
                r.status,
                Some(ShimStatus::Created | ShimStatus::Running | ShimStatus::Paused)
            )
        };
        if let Ok(r) = self.shim(id).call(&Request::State).await
            && alive(&r)
            && let Some(pid) = r.pid.filter(|p| *p > 0)
            && let Ok(pidfd) = husk_container::fs_helper::pidfd(pid)
            && let Ok(again) = self.shim(id).call(&Request::State).await
            && alive(&again)
            && again.pid == Some(pid)
        {
            return Ok((FsTarget::Process, Some(pidfd)));
        }
        let layers: RootfsLayers = serde_json::from_value(
            container.runtime.driver_data["rootfs"].clone(),
        )
        .map_err(|e| Error::internal(format!("the container's record lacks its layers: {e}")))?;
        let userns = ContainerUserns::of(container)?;
        self.ensure_rootfs(id, &layers, userns.as_ref())?;
        self.ensure_image_mounts(id, &container.config.mounts, userns.as_ref())?;
        let mut mounts = container.config.mounts.clone();
        self.image_mount_paths(id, &mut mounts)?;
        Ok((
            FsTarget::View {
                rootfs: self.rootfs(id),
                readonly_rootfs: container.config.security.readonly_rootfs,
                mounts,
            },
            None,
        ))
    }

    /// Starts a container-fs helper for `op` on `container`, its stdout piped.
    pub(super) async fn fs_helper(
        &self,
        container: &ContainerRecord,
        op: FsOp,
    ) -> Result<tokio::process::Child> {
        let (target, pidfd) = self.fs_target(container).await?;
        husk_container::fs_helper::command(
            &self.sealed_exe.path(),
            &FsRequest { target, op },
            pidfd.as_ref(),
            false,
        )?
        .spawn()
        .map_err(|e| Error::io("start the container-fs helper", e))
    }

    /// Starts a container-fs helper for `op` on `container`, its stdin piped.
    pub(super) async fn fs_helper_with_stdin(
        &self,
        container: &ContainerRecord,
        op: FsOp,
    ) -> Result<tokio::process::Child> {
        let (target, pidfd) = self.fs_target(container).await?;
        husk_container::fs_helper::command(
            &self.sealed_exe.path(),
            &FsRequest { target, op },
            pidfd.as_ref(),
            true,
        )?
        .spawn()
        .map_err(|e| Error::io("start the container-fs helper", e))
    }
}
