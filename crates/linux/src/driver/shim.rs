//! The container's shim: its client and config, starting it, exec through it, and the exit status it records.

use std::path::{Path, PathBuf};
use std::time::Duration;

use husk_core::stdio::BoxStdio;
use husk_core::{
    ContainerConfig, ContainerRecord, Error, ErrorKind, ExitStatus, ProcessConfig, Result,
};
use oci_spec::runtime::Spec;

use husk_container::base_ns::{self, CarriedMount};
use husk_container::shim::{Request, ShimClient, ShimConfig, spawn_shim};
use husk_container::spec::{NamespacePlan, SpecInput};
use husk_container::{cgroups, spec, user};

use super::LinuxDriver;

impl LinuxDriver {
    pub(super) fn shim(&self, id: &str) -> ShimClient {
        ShimClient::new(self.ctr_run_dir(id).join("sock"))
    }

    /// What the shim of container `id` takes from the daemon's mount namespace into its own, when containers start
    /// from the base namespace ([`base_ns`]): the run root's mounts that `oci` names (its root, the namespace
    /// files it joins, bind sources such as a sandbox's `/dev/shm`) at their own paths, and every other bind
    /// source at `carried/N` in the container's run directory, which `oci` then names instead.
    pub(super) fn carry_mounts(&self, id: &str, oci: &mut Spec) -> Result<Vec<CarriedMount>> {
        if self.base_mount_ns.is_none() {
            return Ok(Vec::new());
        }
        let run_root = &self.config.run_root;
        let mut carried: Vec<CarriedMount> = Vec::new();
        let at_home = |path: &Path, carried: &mut Vec<CarriedMount>| {
            if let Some(mount) = base_ns::mount_root_below(run_root, path)
                && !carried.iter().any(|c| c.source == mount)
            {
                carried.push(CarriedMount {
                    source: mount.clone(),
                    target: mount,
                });
            }
        };
        if let Some(root) = oci.root() {
            at_home(root.path(), &mut carried);
        }
        let namespaces = oci.linux().as_ref().and_then(|l| l.namespaces().clone());
        for path in namespaces
            .iter()
            .flatten()
            .filter_map(|ns| ns.path().as_deref())
        {
            at_home(path, &mut carried);
        }
        let Some(mut mounts) = oci.mounts().clone() else {
            return Ok(carried);
        };
        let dir = self.ctr_run_dir(id).join("carried");
        let _ = std::fs::remove_dir_all(&dir);
        for m in mounts.iter_mut() {
            let bind = m.typ().as_deref() == Some("bind")
                || m.options()
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
            let Some(source) = m.source().clone().filter(|_| bind) else {
                continue;
            };
            if source.starts_with(run_root) {
                at_home(&source, &mut carried);
                continue;
            }
            // A missing source stays as it is: libcontainer reports it.
            if !source.exists() {
                continue;
            }
            let target = dir.join(carried.len().to_string());
            base_ns::make_place(&source, &target)?;
            m.set_source(Some(target.clone()));
            carried.push(CarriedMount { source, target });
        }
        oci.set_mounts(Some(mounts));
        Ok(carried)
    }

    /// The shim's config for `config`'s container; `carried_mounts` from [`LinuxDriver::carry_mounts`].
    pub(super) fn shim_config(
        &self,
        config: &ContainerConfig,
        carried_mounts: Vec<CarriedMount>,
    ) -> ShimConfig {
        let id = &config.id;
        ShimConfig {
            id: id.clone(),
            bundle: self.ctr_dir(id),
            state_root: self.config.run_root.join("lc"),
            socket: self.ctr_run_dir(id).join("sock"),
            log: self.log_path(id),
            exit_file: self.exit_path(id),
            work_dir: self.ctr_run_dir(id),
            tty: config.process.tty,
            stdin: config.process.stdin,
            cgroup_path: self.cgroup_path(config),
            seccomp_program: Some(self.ctr_dir(id).join("seccomp.bpf")),
            cri_log: config.cri_log_path.as_ref().map(PathBuf::from),
            log_limits: config.log,
            cgroup_mounts: cgroups::cgroup_mount_lines().to_vec(),
            base_mount_namespace: self.base_mount_ns.clone(),
            carried_mounts,
        }
    }

    pub(super) async fn start_shim(&self, id: &str) -> Result<i32> {
        let dir = self.ctr_dir(id);
        let _ = std::fs::remove_file(self.exit_path(id));
        spawn_shim(
            &self.sealed_exe.path(),
            &dir.join("shim.json"),
            &dir.join("shim.log"),
        )
        .await
    }

    /// Runs `process` in the container through its shim, killed after `deadline_ms` if given.
    pub(super) async fn exec_process(
        &self,
        container: &ContainerRecord,
        process: &ProcessConfig,
        deadline_ms: Option<u64>,
    ) -> Result<BoxStdio> {
        let id = container.id();
        let resolved_user = user::resolve_user_with_groups(
            &self.rootfs(id),
            &process.user,
            &container.config.security.group_add,
            container.config.security.groups_policy,
        )?;
        let input = SpecInput {
            config: &container.config,
            process,
            rootfs: &self.rootfs(id),
            namespaces: NamespacePlan::default(),
            cgroup_path: self.cgroup_path(&container.config),
            user: resolved_user,
            etc_files: vec![],
            shm: None,
            daemon_capabilities: &self.daemon_capabilities,
            cgroup_v2: self.cgroup_v2,
        };
        let process_json = spec::process_json(&input)?;
        let (_, conn) = self
            .shim(id)
            .stream(&Request::Exec {
                process: process_json,
                stdin: process.stdin,
                deadline_ms,
            })
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    Error::conflict(format!("container {} is not running", container.name()))
                } else {
                    e
                }
            })?;
        Ok(Box::new(conn))
    }

    pub(super) fn log_path(&self, id: &str) -> PathBuf {
        self.ctr_dir(id).join("ctr.log")
    }

    fn exit_path(&self, id: &str) -> PathBuf {
        self.ctr_dir(id).join("exit.json")
    }

    /// The exit status of a container whose shim no longer answers: from the exit file, which a finishing shim
    /// writes just before it stops listening (so give it a moment), or "lost" if the shim died without one.
    pub(super) async fn exit_after_shim(&self, id: &str) -> ExitStatus {
        for _ in 0..100 {
            if let Some(exit) = self.read_exit(id) {
                return exit;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.lost_with_its_shim(id).await
    }

    /// The exit of a container whose shim died without recording one (`kill -9` of the shim): its processes
    /// would run on unmanaged, their output unread, so they are killed (as containerd does when a shim dies),
    /// and the container is reported exited with code 255 and why.
    pub(super) async fn lost_with_its_shim(&self, id: &str) -> ExitStatus {
        let cgroup = self.recorded_cgroup(id);
        let mut killed = false;
        for _ in 0..100 {
            if cgroups::kill_all(&cgroup) == 0 {
                break;
            }
            killed = true;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut reason =
            "the container's monitor (shim) died without recording an exit status".to_string();
        if killed {
            tracing::warn!(container = %id, "the container's shim died without recording an exit; its processes were killed");
            reason.push_str("; its processes were killed");
        }
        ExitStatus {
            code: 255,
            finished_at: Some(husk_core::Timestamp::now()),
            reason,
            ..Default::default()
        }
    }

    pub(super) fn read_exit(&self, id: &str) -> Option<ExitStatus> {
        std::fs::read(self.exit_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}
