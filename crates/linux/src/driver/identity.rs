//! Namespaces and network identity: the pinned namespaces, network and name files of a sandbox or standalone
//! container (from the netns pool when it can serve), their removal, a sandbox's own user namespace as its
//! containers use it, and the namespace plan of a container in a sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use husk_core::{ContainerRecord, Error, NetworkConfig, NetworkStatus, Result, SandboxRecord};
use serde_json::json;

use husk_container::namespaces;
use husk_container::spec::NamespacePlan;

use super::{LinuxDriver, mkdir};

/// A network identity made for a sandbox or a standalone container: pinned namespaces, the network status and
/// the name files to bind-mount.
pub(super) struct Identity {
    pub(super) pinned: BTreeMap<String, PathBuf>,
    pub(super) status: NetworkStatus,
    pub(super) files: husk_net::SandboxFiles,
    /// The pause process made with a sandbox's own user namespace (it holds the PID namespace).
    pub(super) pause: Option<namespaces::PauseProcess>,
}

/// A sandbox's own user namespace as a container of it uses it: the pinned namespace (to join, and to id-map
/// mounts through) and the host IDs of its root (who owns the container's writable layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ContainerUserns {
    pub(super) path: PathBuf,
    pub(super) root_uid: u32,
    pub(super) root_gid: u32,
}

impl ContainerUserns {
    /// As kept in a container's driver data (`userns`).
    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({"path": self.path, "root_uid": self.root_uid, "root_gid": self.root_gid})
    }

    /// The user namespace a container's driver data names, if any.
    pub(super) fn of(container: &ContainerRecord) -> Result<Option<ContainerUserns>> {
        let Some(v) = container.runtime.driver_data.get("userns") else {
            return Ok(None);
        };
        let id = |key: &str| {
            v[key]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Error::internal(format!(
                        "the record of container {} has a bad user namespace",
                        container.config.name
                    ))
                })
        };
        let path = v["path"].as_str().ok_or_else(|| {
            Error::internal(format!(
                "the record of container {} has a bad user namespace",
                container.config.name
            ))
        })?;
        Ok(Some(ContainerUserns {
            path: PathBuf::from(path),
            root_uid: id("root_uid")?,
            root_gid: id("root_gid")?,
        }))
    }
}

/// Disconnects the network of `owner` and unpins its namespaces in `ns_dir` (idempotent).
pub(super) async fn remove_identity_blocking(
    networks: Arc<husk_net::Networks>,
    owner: String,
    ns_dir: PathBuf,
) -> Result<()> {
    let netns = ns_dir.join("net");
    husk_core::spawn_blocking(move || {
        let ns = if namespaces::is_pinned(&netns) {
            Some(netns.as_path())
        } else {
            None
        };
        networks.teardown(&owner, ns)
    })
    .await
    .map_err(|e| Error::internal(format!("network teardown task: {e}")))??;
    namespaces::remove_pinned(&ns_dir)
}

/// Files bind-mounted over the image's: (path in the container, path on the host).
type EtcMounts = Vec<(String, PathBuf)>;

/// The bind mounts of a sandbox's name files.
pub(super) fn etc_mounts(files: &husk_net::SandboxFiles) -> EtcMounts {
    vec![
        ("/etc/hostname".to_string(), files.hostname.clone()),
        ("/etc/hosts".to_string(), files.hosts.clone()),
        ("/etc/resolv.conf".to_string(), files.resolv_conf.clone()),
    ]
}

impl LinuxDriver {
    /// The user namespace of `sandbox`, if it has its own, as its containers use it.
    pub(super) fn container_userns(
        &self,
        sandbox: Option<&SandboxRecord>,
    ) -> Result<Option<ContainerUserns>> {
        let Some(sb) = sandbox else {
            return Ok(None);
        };
        let Some(config) = &sb.config.user_namespace else {
            return Ok(None);
        };
        let path = sb.runtime.namespaces.get("user").ok_or_else(|| {
            Error::backend(format!("sandbox {} has no user namespace", sb.config.name))
        })?;
        match (config.host_root_uid(), config.host_root_gid()) {
            (Some(root_uid), Some(root_gid)) => Ok(Some(ContainerUserns {
                path: PathBuf::from(path),
                root_uid,
                root_gid,
            })),
            _ => Err(Error::internal(format!(
                "the user namespace of sandbox {} does not map root",
                sb.config.name
            ))),
        }
    }

    /// Pins namespaces for `owner` (a sandbox or a standalone container) in `ns_dir` (its network's, unless it
    /// is the host's, and the IPC and UTS ones `pins` asks for), connects its network and writes its name files.
    /// On failure nothing is left.
    ///
    /// With `userns` (a sandbox's own user namespace, and whether the sandbox shares a PID namespace) the
    /// namespaces are made inside that user namespace, and so is the pause process holding the PID namespace.
    pub(super) async fn make_identity(
        &self,
        owner: &str,
        ns_dir: &Path,
        hostname: &str,
        network: &NetworkConfig,
        pins: Pins,
        userns: Option<(&husk_core::UserNamespaceConfig, bool)>,
    ) -> Result<Identity> {
        let networks = self.config.networks.clone();
        let host = networks.mode_of(network) == husk_net::Mode::Host;
        let mut kinds = Vec::new();
        if pins.uts {
            kinds.push("uts");
        }
        if !host {
            kinds.push("net");
        }
        if pins.ipc {
            kinds.push("ipc");
        }
        if userns.is_none()
            && !host
            && let Some(identity) =
                self.identity_from_pool(owner, ns_dir, hostname, network, &kinds)?
        {
            return Ok(identity);
        }
        let (pinned, pause) = match userns {
            None => (namespaces::create_pinned(ns_dir, hostname, &kinds)?, None),
            Some((config, share_pid)) => {
                let exe = self.sealed_exe.path();
                let pid_pin = ns_dir.join("pid");
                namespaces::create_pinned_in_userns(
                    ns_dir,
                    hostname,
                    &kinds,
                    config,
                    share_pid.then_some((exe.as_path(), pid_pin.as_path())),
                )?
            }
        };
        let (owner_id, netns, net, host_name) = (
            owner.to_string(),
            pinned
                .get("net")
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net")),
            network.clone(),
            hostname.to_string(),
        );
        let made = husk_core::spawn_blocking(
            move || -> Result<(NetworkStatus, husk_net::SandboxFiles)> {
                let status = networks.setup(&owner_id, &netns, &net)?;
                match networks.write_files(&owner_id, &host_name, &net, &status) {
                    Ok(files) => Ok((status, files)),
                    Err(e) => {
                        let _ = networks.teardown(&owner_id, Some(&netns));
                        Err(e)
                    }
                }
            },
        )
        .await
        .map_err(|e| Error::internal(format!("network setup task: {e}")));
        match made {
            Ok(Ok((status, files))) => Ok(Identity {
                pinned,
                status,
                files,
                pause,
            }),
            Ok(Err(e)) | Err(e) => {
                if let Some(p) = &pause {
                    namespaces::stop_pause(p);
                }
                let _ = namespaces::remove_pinned(ns_dir);
                Err(e)
            }
        }
    }

    /// A network identity whose network namespace comes from the pool ([`crate::pool`]), or `None` when the pool
    /// cannot serve `network` (off, empty, another network, published ports). Blocking, but short: pins and a
    /// cache record, no plugin runs. The pool refills in the background.
    fn identity_from_pool(
        &self,
        owner: &str,
        ns_dir: &Path,
        hostname: &str,
        network: &NetworkConfig,
        kinds: &[&str],
    ) -> Result<Option<Identity>> {
        if !self.pool.serves(network) {
            return Ok(None);
        }
        mkdir(ns_dir)?;
        let netns = ns_dir.join("net");
        let status = self.pool.take(owner, network, &netns);
        self.refill_pool();
        let Some(status) = status else {
            return Ok(None);
        };
        let networks = &self.config.networks;
        let others: Vec<&str> = kinds.iter().copied().filter(|k| *k != "net").collect();
        let made = namespaces::create_pinned(ns_dir, hostname, &others).and_then(|pinned| {
            let files = networks.write_files(owner, hostname, network, &status)?;
            Ok((pinned, files))
        });
        match made {
            Ok((mut pinned, files)) => {
                pinned.insert("net".into(), netns);
                Ok(Some(Identity {
                    pinned,
                    status,
                    files,
                    pause: None,
                }))
            }
            Err(e) => {
                let _ = networks.teardown(owner, Some(&netns));
                let _ = namespaces::remove_pinned(ns_dir);
                Err(e)
            }
        }
    }

    /// Tops the pool up in the background (one filler at a time).
    pub(super) fn refill_pool(&self) {
        if self.pool.enabled() {
            let pool = self.pool.clone();
            self.removals.spawn_blocking(move || pool.fill());
        }
    }

    /// Disconnects and unpins what [`Self::make_identity`] made (idempotent).
    pub(super) async fn remove_identity(&self, owner: &str, ns_dir: &Path) -> Result<()> {
        remove_identity_blocking(
            self.config.networks.clone(),
            owner.to_string(),
            ns_dir.to_path_buf(),
        )
        .await
    }

    pub(super) fn namespace_plan(
        &self,
        sandbox: &SandboxRecord,
    ) -> Result<(NamespacePlan, EtcMounts, Option<PathBuf>)> {
        let ns = &sandbox.runtime.namespaces;
        let host_network =
            self.config.networks.mode_of(&sandbox.config.network) == husk_net::Mode::Host;
        let need = |kind: &str| {
            ns.get(kind).map(PathBuf::from).ok_or_else(|| {
                Error::backend(format!(
                    "sandbox {} has no {kind} namespace",
                    sandbox.config.name
                ))
            })
        };
        let (host_pid, host_ipc) = (sandbox.config.host_pid, sandbox.config.host_ipc);
        // Records of sandboxes made before the setting existed have their IPC and UTS pinned.
        let private = sandbox.config.private_ipc_uts && !ns.contains_key("uts");
        let plan = NamespacePlan {
            net: if host_network {
                None
            } else {
                Some(need("net")?)
            },
            host_network,
            // A sandbox with private IPC and UTS pinned neither: its container makes its own at each start.
            ipc: if host_ipc || private {
                None
            } else {
                Some(need("ipc")?)
            },
            uts: if private { None } else { Some(need("uts")?) },
            pid: if sandbox.config.share_pid && !host_pid {
                Some(need("pid")?)
            } else {
                None
            },
            host_pid,
            host_ipc,
            user: match &sandbox.config.user_namespace {
                Some(userns) => Some((need("user")?, userns.clone())),
                None => None,
            },
        };
        // POSIX shared memory goes with the IPC namespace: the host's /dev/shm with the host's, none shared with
        // a private one (the container mounts its own).
        let shm = if host_ipc {
            Some(PathBuf::from("/dev/shm"))
        } else if private {
            None
        } else {
            Some(self.sandbox_run_dir(&sandbox.config.id).join("shm"))
        };
        let files = self.config.networks.files(&sandbox.config.id)?;
        Ok((plan, etc_mounts(&files), shm))
    }
}

/// Which of the IPC and UTS namespaces [`LinuxDriver::make_identity`] pins beside the network one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pins {
    /// Pin an IPC namespace (not for the host's, nor a private one).
    pub ipc: bool,
    /// Pin a UTS namespace (not for a private one).
    pub uts: bool,
}
