//! Removing what a container leaves on the host (at once, or finishing in the background), and what no record
//! names after a crash (orphans).

use std::path::PathBuf;
use std::time::Duration;

use husk_core::{
    Driver, Error, Result, SandboxConfig, SandboxRecord, SandboxRuntime, SandboxStatus,
};

use husk_container::cgroups;
use husk_container::shim::Request;

use super::identity::remove_identity_blocking;
use super::{LinuxDriver, remove_dir};

/// What a container leaves on the host once its processes are gone.
pub(super) struct ContainerFiles {
    rootfs: PathBuf,
    /// Where the container's image mounts are mounted on the host.
    images: PathBuf,
    /// Id-mapped copies of the image's layers and of bind mounts (a container in a user namespace).
    idmapped: PathBuf,
    libcontainer_state: PathBuf,
    cgroup: String,
    ctr_dir: PathBuf,
}

impl ContainerFiles {
    /// Unmounts the root filesystem, then removes libcontainer's state, the cgroup (killing stragglers a
    /// shim killed with -9 left) and the container's directory (upper and work dirs, logs).
    async fn remove(self) -> Result<()> {
        husk_fs::unmount_rootfs(&self.rootfs)?;
        husk_fs::unmount_all_in(&self.images)?;
        husk_container::idmap::remove_idmapped(&self.idmapped)?;
        remove_dir(&self.libcontainer_state)?;
        if !cgroups::cgroup_dirs(&self.cgroup).is_empty() {
            cgroups::kill_all(&self.cgroup);
            let c = self.cgroup.clone();
            husk_core::spawn_blocking(move || cgroups::remove(&c))
                .await
                .map_err(|e| Error::internal(format!("cgroup removal task: {e}")))??;
        }
        remove_dir(&self.ctr_dir)
    }
}

impl LinuxDriver {
    /// Removes everything a container left on the host (idempotent). With `background`, the network part
    /// finishes after this returns (see [`Self::finish_removal_later`]).
    pub(super) async fn cleanup_container(&self, id: &str, background: bool) -> Result<()> {
        let shim = self.shim(id);
        if shim.call(&Request::Shutdown).await.is_ok() {
            // The shim answers `wait` when it has cleaned up libcontainer's state; it then exits.
            let _ = tokio::time::timeout(Duration::from_secs(10), shim.call(&Request::Wait)).await;
        }
        // Nothing of the container runs any more; what is left are files, a mount and maybe a cgroup.
        let files = ContainerFiles {
            rootfs: self.rootfs(id),
            images: self.images_dir(id),
            idmapped: self.idmapped_dir(id),
            libcontainer_state: self.config.run_root.join("lc").join(id),
            cgroup: self.recorded_cgroup(id),
            ctr_dir: self.ctr_dir(id),
        };
        let run_dir = self.ctr_run_dir(id);
        if background {
            // Off the caller's path: an `rm` or `run --rm` answers without waiting on unmounts and deletes.
            self.finish_removal_later(id, Some(files), run_dir.join("ns"), vec![run_dir]);
            Ok(())
        } else {
            files.remove().await?;
            self.remove_identity(id, &run_dir.join("ns")).await?;
            remove_dir(&run_dir)
        }
    }

    /// The work that finishes a removal: the container's files, its network identity and pinned namespaces,
    /// then its directories.
    pub(super) fn removal_work(
        &self,
        owner: &str,
        files: Option<ContainerFiles>,
        ns_dir: PathBuf,
        dirs: Vec<PathBuf>,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let networks = self.config.networks.clone();
        let owner = owner.to_string();
        async move {
            if let Some(files) = files {
                files.remove().await?;
            }
            remove_identity_blocking(networks, owner, ns_dir).await?;
            for d in &dirs {
                remove_dir(d)?;
            }
            Ok(())
        }
    }

    /// Finishes a removal in the background: removes a container's `files` (if given), disconnects the network
    /// (CNI DEL is the slow part, tens of milliseconds per plugin), unpins the namespaces and removes `dirs`. The
    /// caller's records are already gone; if the daemon stops first, [`Driver::remove_orphans`] finishes the job
    /// at the next start, since the directories (removed last) still name the owner. The address stays
    /// allocated until DEL has run, so it is never reused early.
    pub(super) fn finish_removal_later(
        &self,
        owner: &str,
        files: Option<ContainerFiles>,
        ns_dir: PathBuf,
        dirs: Vec<PathBuf>,
    ) {
        let work = self.removal_work(owner, files, ns_dir, dirs);
        let owner = owner.to_string();
        self.removals.spawn(async move {
            if let Err(e) = work.await {
                tracing::warn!(owner = %owner, "finishing a removal: {e} (retried at the next daemon start)");
            }
        });
    }

    /// [`Driver::remove_orphans`]: the containers and sandboxes no record names, and the sandbox pool's
    /// leftovers.
    pub(super) async fn remove_orphaned(
        &self,
        sandboxes: &std::collections::HashSet<String>,
        containers: &std::collections::HashSet<String>,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let ids = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|e| {
                    e.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut orphan_containers: Vec<String> = ids(self.config.run_root.join("c"));
        orphan_containers.extend(ids(self.config.root.join("c")));
        orphan_containers.sort();
        orphan_containers.dedup();
        for id in orphan_containers
            .into_iter()
            .filter(|id| !containers.contains(id))
        {
            self.cleanup_container(&id, false).await?;
            removed.push(format!("container {id}"));
        }
        let mut orphan_sandboxes: Vec<String> = ids(self.config.run_root.join("s"));
        orphan_sandboxes.extend(ids(self.config.root.join("s")));
        orphan_sandboxes.sort();
        orphan_sandboxes.dedup();
        for id in orphan_sandboxes
            .into_iter()
            .filter(|id| !sandboxes.contains(id))
        {
            let record = SandboxRecord {
                config: SandboxConfig {
                    id: id.clone(),
                    ..Default::default()
                },
                driver: self.name().into(),
                status: SandboxStatus::Orphan,
                runtime: SandboxRuntime::default(),
                created_at: Default::default(),
                owner_container: None,
                project: String::new(),
            };
            self.delete_sandbox(&record).await?;
            removed.push(format!("sandbox {id}"));
        }
        // Every pool entry is left over from an earlier run here; then the pool fills for this one.
        let pool = self.pool.clone();
        let left = tokio::task::spawn_blocking(move || pool.remove_leftovers())
            .await
            .map_err(|e| Error::internal(format!("sandbox pool task: {e}")))??;
        removed.extend(left.into_iter().map(|id| format!("pool entry {id}")));
        self.refill_pool();
        Ok(removed)
    }
}
