//! Making a container: its bundle (OCI spec, precompiled seccomp program, `shim.json`) from its config, its
//! sandbox and its layers, its shim started, and the propagation its binds ask for.

use std::path::Path;

use husk_core::{
    ContainerConfig, ContainerRuntime, Error, ProcessUser, Result, RootfsLayers, SandboxRecord,
};
use serde_json::json;

use husk_container::container_fs::{FsOp, FsRequest, FsTarget};
use husk_container::spec::{NamespacePlan, SpecInput};
use husk_container::{spec, user};

use super::identity::{Pins, etc_mounts};
use super::{LinuxDriver, mkdir};

impl LinuxDriver {
    pub(super) async fn create_inner(
        &self,
        config: &ContainerConfig,
        resources: husk_core::Resources,
        sandbox: Option<&SandboxRecord>,
        rootfs: &RootfsLayers,
    ) -> Result<ContainerRuntime> {
        let id = &config.id;
        let t0 = std::time::Instant::now();
        mkdir(&self.ctr_dir(id))?;
        mkdir(&self.ctr_run_dir(id))?;
        let userns = self.container_userns(sandbox)?;
        self.ensure_rootfs(id, rootfs, userns.as_ref())?;
        self.ensure_image_mounts(id, &config.mounts, userns.as_ref())?;
        let t_rootfs = t0.elapsed();
        let resolved_user = user::resolve_user_with_groups(
            &self.rootfs(id),
            &config.process.user,
            &config.security.group_add,
            config.security.groups_policy,
        )?;
        let process_user = ProcessUser {
            uid: resolved_user.uid,
            gid: resolved_user.gid,
            groups: resolved_user.additional_gids.clone(),
        };
        let (plan, etc_files, shm, network) = match sandbox {
            Some(sb) => {
                let (plan, files, shm) = self.namespace_plan(sb)?;
                (plan, files, shm, None)
            }
            None => {
                // A standalone container's namespaces are its own. The network one is pinned, so it outlives a
                // restart of the container (its address stays) and is removed with it; IPC and UTS are made at
                // each start (the hostname from the spec), as for the sandbox `run` makes for one container.
                let ns_dir = self.ctr_run_dir(id).join("ns");
                let identity = self
                    .make_identity(
                        id,
                        &ns_dir,
                        &hostname_for(config),
                        &config.network,
                        Pins {
                            ipc: false,
                            uts: false,
                        },
                        None,
                    )
                    .await?;
                let host_network = !identity.pinned.contains_key("net");
                let plan = NamespacePlan {
                    net: identity.pinned.get("net").cloned(),
                    host_network,
                    ipc: identity.pinned.get("ipc").cloned(),
                    uts: identity.pinned.get("uts").cloned(),
                    ..Default::default()
                };
                (
                    plan,
                    etc_mounts(&identity.files),
                    None,
                    Some(identity.status),
                )
            }
        };
        let t_ns = t0.elapsed();
        let mut config_with_host = config.clone();
        config_with_host.resources = resources;
        config_with_host.hostname = match sandbox {
            Some(sb) => sb.config.hostname.clone(),
            None => hostname_for(config),
        };
        if let Some(userns) = &userns {
            self.idmap_binds(id, &mut config_with_host, userns)?;
        }
        self.image_mount_paths(id, &mut config_with_host.mounts)?;
        self.resolve_mount_destinations(id, &mut config_with_host.mounts)?;
        let input = SpecInput {
            config: &config_with_host,
            process: &config.process,
            rootfs: &self.rootfs(id),
            namespaces: plan,
            cgroup_path: self.cgroup_path(config),
            user: resolved_user,
            etc_files,
            shm,
            daemon_capabilities: &self.daemon_capabilities,
            cgroup_v2: self.cgroup_v2,
        };
        let mut oci = spec::container_spec(&input)?;
        let carried = self.carry_mounts(id, &mut oci)?;
        let bundle = self.ctr_dir(id);
        self.precompile_seccomp(config, &oci, &bundle).await?;
        let spec_json =
            serde_json::to_vec_pretty(&oci).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(bundle.join("config.json"), spec_json)
            .map_err(|e| Error::io("write config.json", e))?;
        let shim_json = serde_json::to_vec_pretty(&self.shim_config(config, carried))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(bundle.join("shim.json"), shim_json)
            .map_err(|e| Error::io("write shim.json", e))?;
        let t_spec = t0.elapsed();
        let pid = self.start_shim(id).await?;
        self.apply_propagation(config, pid).await?;
        tracing::debug!(rootfs = ?t_rootfs, namespaces = ?t_ns, spec = ?t_spec, shim = ?t0.elapsed(), "container created");
        let mut driver_data = json!({"cgroup": self.cgroup_path(config), "rootfs": rootfs});
        if let Some(userns) = &userns {
            driver_data["userns"] = userns.to_json();
        }
        Ok(ContainerRuntime {
            pid,
            driver_data,
            network,
            user: Some(process_user),
        })
    }

    /// Serves the default seccomp profile as a precompiled program (see [`husk_container::seccomp_bpf`]) when the
    /// container can take it that way: the spec then carries no filter and the bundle holds `seccomp.bpf`.
    async fn precompile_seccomp(
        &self,
        config: &ContainerConfig,
        oci: &oci_spec::runtime::Spec,
        bundle: &Path,
    ) -> Result<()> {
        let program_path = bundle.join("seccomp.bpf");
        if !spec::seccomp_precompiled(config) {
            let _ = std::fs::remove_file(&program_path);
            return Ok(());
        }
        let caps: Vec<String> = oci
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(|set| set.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        let cache = self.seccomp_programs.clone();
        let program = husk_core::spawn_blocking(move || cache.default_program(&caps))
            .await
            .map_err(|e| Error::internal(format!("seccomp compile task: {e}")))??;
        std::fs::write(&program_path, program.as_slice())
            .map_err(|e| Error::io(format!("write {}", program_path.display()), e))?;
        Ok(())
    }

    /// Sets the propagation of the container's binds and volumes, when one asks for more than `rprivate`
    /// (libcontainer mounts them without propagation; see [`spec::bind_propagations`]).
    pub(super) async fn apply_propagation(&self, config: &ContainerConfig, pid: i32) -> Result<()> {
        let mounts = spec::bind_propagations(config);
        if mounts.is_empty() {
            return Ok(());
        }
        let pidfd = husk_container::fs_helper::pidfd(pid)?;
        let req = FsRequest {
            target: FsTarget::Process,
            op: FsOp::Propagation { mounts },
        };
        let output =
            husk_container::fs_helper::command(&self.sealed_exe.path(), &req, Some(&pidfd), false)?
                .output()
                .await
                .map_err(|e| Error::io("run the container-fs helper", e))?;
        if !output.status.success() {
            return Err(
                husk_container::container_fs::helper_error(&output.stderr, output.status)
                    .context("set the propagation of the container's mounts"),
            );
        }
        Ok(())
    }
}

fn hostname_for(config: &ContainerConfig) -> String {
    if config.hostname.is_empty() {
        config.id[..12].to_string()
    } else {
        config.hostname.clone()
    }
}
