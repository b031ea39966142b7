//! From the CRI's requests to husk's: a pod's sandbox (network, namespaces, user namespace), a container's create
//! request (command, user, groups, security, mounts and image volumes, limits, devices), and back for statuses.

use husk_api_types::{ContainerCreate, SandboxCreate};
use husk_core::{ErrorKind, MountConfig, MountKind, NetworkConfig, SandboxRecord};
use husk_cri_api::v1 as cri;
use husk_engine::Engine;
use tonic::Status;

use crate::convert;
use crate::status_of;

/// The limits of a container as husk keeps them: memory and swap, CPU quota (as a share of CPUs), CPU weight
/// and sets, `oom_score_adj`, huge pages and cgroup v2 files. Zero and empty mean "not set", as in the CRI,
/// except for `oom_score_adj`, where 0 is a score (containerd sets it always too; the engine raises it to the
/// daemon's own): `oom_score_adj_set` says whether to read it.
pub(super) fn resources_of(
    limits: &cri::LinuxContainerResources,
    oom_score_adj_set: bool,
) -> Result<husk_core::Resources, Status> {
    let oom_score_adj = match oom_score_adj_set {
        false => None,
        true => Some(i32::try_from(limits.oom_score_adj).map_err(|_| {
            Status::invalid_argument(format!(
                "oom_score_adj: {} is not between -1000 and 1000",
                limits.oom_score_adj
            ))
        })?),
    };
    let mut hugepage_limits = std::collections::BTreeMap::new();
    for h in &limits.hugepage_limits {
        if hugepage_limits
            .insert(h.page_size.clone(), h.limit)
            .is_some()
        {
            return Err(Status::invalid_argument(format!(
                "hugepage_limits: page size {:?} is given twice",
                h.page_size
            )));
        }
    }
    Ok(husk_core::Resources {
        memory_bytes: (limits.memory_limit_in_bytes > 0).then_some(limits.memory_limit_in_bytes),
        nano_cpus: (limits.cpu_quota > 0 && limits.cpu_period > 0)
            .then(|| limits.cpu_quota * 1_000_000_000 / limits.cpu_period),
        cpu_shares: u64::try_from(limits.cpu_shares).ok().filter(|s| *s > 0),
        cpuset_cpus: (!limits.cpuset_cpus.is_empty()).then(|| limits.cpuset_cpus.clone()),
        cpuset_mems: (!limits.cpuset_mems.is_empty()).then(|| limits.cpuset_mems.clone()),
        oom_score_adj,
        memory_swap_bytes: (limits.memory_swap_limit_in_bytes != 0)
            .then_some(limits.memory_swap_limit_in_bytes),
        hugepage_limits,
        unified: limits
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    })
}

/// A container's limits as the CRI reports them (zero where unset).
pub(super) fn cri_resources(r: &husk_core::Resources) -> cri::LinuxContainerResources {
    let period = 100_000;
    cri::LinuxContainerResources {
        cpu_period: if r.nano_cpus.is_some() { period } else { 0 },
        cpu_quota: r.nano_cpus.map_or(0, |n| n * period / 1_000_000_000),
        cpu_shares: r.cpu_shares.map_or(0, |s| s as i64),
        memory_limit_in_bytes: r.memory_bytes.unwrap_or(0),
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        oom_score_adj: r.oom_score_adj.map_or(0, i64::from),
        memory_swap_limit_in_bytes: r.memory_swap_bytes.unwrap_or(0),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(size, limit)| cri::HugepageLimit {
                page_size: size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Refuses an AppArmor profile husk cannot apply: a Localhost profile (or the deprecated `localhost/NAME`), as
/// containerd does where AppArmor is off; where it is on too, as husk loads no AppArmor profiles. RuntimeDefault
/// and Unconfined are what husk's containers run with anyway (no profile). `field` names the request field.
pub(super) fn check_apparmor(
    profile: Option<&cri::SecurityProfile>,
    deprecated: &str,
    field: &str,
) -> Result<(), Status> {
    use cri::security_profile::ProfileType;
    let localhost = match profile {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault | ProfileType::Unconfined) => None,
            Ok(ProfileType::Localhost) => Some(p.localhost_ref.clone()),
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "{field}.profile_type {} is not a profile type",
                    p.profile_type
                )));
            }
        },
        None => match deprecated {
            "" | "runtime/default" | "unconfined" => None,
            other => Some(
                other
                    .strip_prefix("localhost/")
                    .unwrap_or(other)
                    .to_string(),
            ),
        },
    };
    let Some(name) = localhost else {
        return Ok(());
    };
    Err(Status::failed_precondition(if apparmor_enabled() {
        format!(
            "{field}: AppArmor profile {name:?}: husk does not load AppArmor profiles; use RuntimeDefault or \
             Unconfined"
        )
    } else {
        format!("{field}: AppArmor profile {name:?}: AppArmor is not enabled on this host")
    }))
}

/// Whether this host's kernel runs AppArmor (`/sys/module/apparmor/parameters/enabled` is `Y`).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|t| t.trim() == "Y")
}

/// Why CheckpointContainer cannot be served here: CRIU is missing, or cannot run on this host, or husk does
/// not drive it.
pub(super) async fn checkpoint_refusal() -> Status {
    let check = tokio::process::Command::new("criu")
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match check {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Status::failed_precondition(
            "checkpointing needs CRIU, and no `criu` is installed on this node",
        ),
        Err(e) => {
            Status::failed_precondition(format!("checkpointing needs CRIU: run `criu check`: {e}"))
        }
        Ok(out) if !out.status.success() => Status::failed_precondition(format!(
            "checkpointing needs CRIU, and `criu check` fails on this node: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Status::unimplemented(
            "husk does not checkpoint containers: CRIU works on this node, but husk does not drive it yet",
        ),
    }
}

/// A missing object is no error for stop and remove (kubelet retries them).
pub(super) fn idempotent(r: husk_core::Result<()>) -> Result<(), Status> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(status_of(&e)),
    }
}

/// A container's mount as its CRI status shows it: binds with their propagation, image volumes as kubelet asked
/// for them (the image, read-only); other kinds (volumes, tmpfs) are husk's own and not shown.
pub(super) fn mount_status(m: &MountConfig) -> Option<cri::Mount> {
    match m.kind {
        MountKind::Bind => Some(cri::Mount {
            container_path: m.destination.clone(),
            host_path: m.source.clone(),
            readonly: m.readonly,
            recursive_read_only: m.readonly
                && !m
                    .options
                    .iter()
                    .any(|o| o == husk_core::options::BIND_WRITABLE_SUBMOUNTS),
            propagation: if m.options.iter().any(|o| o == "rshared" || o == "shared") {
                cri::MountPropagation::PropagationBidirectional as i32
            } else if m.options.iter().any(|o| o == "rslave" || o == "slave") {
                cri::MountPropagation::PropagationHostToContainer as i32
            } else {
                cri::MountPropagation::PropagationPrivate as i32
            },
            ..Default::default()
        }),
        MountKind::Image => Some(cri::Mount {
            container_path: m.destination.clone(),
            readonly: true,
            image: Some(cri::ImageSpec {
                image: m.source.clone(),
                ..Default::default()
            }),
            image_sub_path: m.subpath.clone().unwrap_or_default(),
            ..Default::default()
        }),
        _ => None,
    }
}

/// An image volume (`mounts[].image`, KEP-4639) as husk's `image` mount. It is read-only whatever `readonly`
/// says, and private: an image's files have no mounts to propagate.
fn image_mount(m: &cri::Mount) -> Result<MountConfig, Status> {
    let image = m.image.clone().unwrap_or_default();
    if !m.host_path.is_empty() {
        return Err(Status::invalid_argument(format!(
            "mounts[].image on {}: host_path and image exclude each other",
            m.container_path
        )));
    }
    if image.image.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "mounts[].image on {}: image.image names no image",
            m.container_path
        )));
    }
    Ok(MountConfig {
        kind: MountKind::Image,
        source: image.image.trim().to_string(),
        destination: m.container_path.clone(),
        readonly: true,
        subpath: (!m.image_sub_path.is_empty()).then(|| m.image_sub_path.clone()),
        ..Default::default()
    })
}

/// Fails with NOT_FOUND naming `mounts[].image` when an image volume's image is not here: kubelet pulls it
/// before it creates the container.
pub(super) fn check_image_volumes(engine: &Engine, create: &ContainerCreate) -> Result<(), Status> {
    for m in create.mounts.iter().filter(|m| m.kind == MountKind::Image) {
        if !engine.has_image(&m.source) {
            return Err(Status::not_found(format!(
                "mounts[].image: no such image {} (the image volume on {}): pull it first",
                m.source, m.destination
            )));
        }
    }
    Ok(())
}

/// The user namespace of a pod as the CRI shows it: POD with its mappings, or NODE.
pub(super) fn user_namespace_status(sb: &SandboxRecord) -> cri::UserNamespace {
    let ids = |maps: &[husk_core::IdMapping]| {
        maps.iter()
            .map(|m| cri::IdMapping {
                host_id: m.host_id,
                container_id: m.container_id,
                length: m.size,
            })
            .collect()
    };
    match &sb.config.user_namespace {
        Some(userns) => cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: ids(&userns.uid_mappings),
            gids: ids(&userns.gid_mappings),
        },
        None => cri::UserNamespace {
            mode: cri::NamespaceMode::Node as i32,
            ..Default::default()
        },
    }
}

/// The husk network of a pod: the host's for NODE, else the default network with its ports and DNS.
pub(super) fn pod_network(config: &cri::PodSandboxConfig) -> Result<NetworkConfig, Status> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mut network = NetworkConfig::default();
    let host = options.network == cri::NamespaceMode::Node as i32;
    if host {
        network.mode = "host".into();
    }
    // A pod on the host's network has the host's ports already: its hostPorts need no mapping.
    for p in config.port_mappings.iter().filter(|_| !host) {
        let port = |v: i32, field: &str| {
            u16::try_from(v).map_err(|_| {
                Status::invalid_argument(format!("port_mappings: {field} {v} is not a port"))
            })
        };
        network.ports.push(husk_core::PortMapping {
            host_ip: p.host_ip.clone(),
            host_port: port(p.host_port, "host_port")?,
            container_port: port(p.container_port, "container_port")?,
            protocol: match cri::Protocol::try_from(p.protocol) {
                Ok(cri::Protocol::Udp) => husk_core::PortProtocol::Udp,
                Ok(cri::Protocol::Sctp) => husk_core::PortProtocol::Sctp,
                _ => husk_core::PortProtocol::Tcp,
            },
        });
    }
    if let Some(dns) = &config.dns_config {
        network.dns = dns.servers.clone();
        network.dns_search = dns.searches.clone();
        network.dns_options = dns.options.clone();
    }
    Ok(network)
}

/// Sets the PID and IPC namespaces of a pod's containers in `sandbox`: PID shared by the pod (POD), one each
/// (CONTAINER) or the host's (NODE); IPC the pod's or the host's (NODE).
pub(super) fn set_pod_namespaces(
    config: &cri::PodSandboxConfig,
    sandbox: &mut SandboxCreate,
) -> Result<(), Status> {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mode = |value: i32, field: &str| {
        cri::NamespaceMode::try_from(value).map_err(|_| {
            Status::invalid_argument(format!(
                "namespace_options.{field}: {value} is not a namespace mode"
            ))
        })
    };
    let (pid, ipc) = (mode(options.pid, "pid")?, mode(options.ipc, "ipc")?);
    sandbox.share_pid = pid == cri::NamespaceMode::Pod;
    sandbox.host_pid = pid == cri::NamespaceMode::Node;
    sandbox.host_ipc = ipc == cri::NamespaceMode::Node;
    sandbox.user_namespace =
        convert::pod_user_namespace(options.userns_options.as_ref()).map_err(|e| status_of(&e))?;
    // The host's namespaces belong to the host's user namespace: root of the pod's could not mount /proc or /sys
    // for them (Kubernetes refuses hostUsers: false with hostNetwork, hostPID and hostIPC too).
    let host_network = options.network == cri::NamespaceMode::Node as i32;
    if sandbox.user_namespace.is_some() && (host_network || sandbox.host_pid || sandbox.host_ipc) {
        return Err(Status::invalid_argument(
            "linux.security_context.namespace_options.userns_options: a pod with a user namespace of its own \
             (mode POD) cannot use the host's network, PID or IPC namespace (mode NODE)",
        ));
    }
    Ok(())
}

/// The seccomp option of a container: the CRI's `seccomp` profile, where no profile means unconfined, as the
/// CRI defines it (the deprecated `seccomp_profile_path` is not read); a localhost profile's JSON is read here.
fn seccomp_option(security: &cri::LinuxContainerSecurityContext) -> Result<Option<String>, Status> {
    use cri::security_profile::ProfileType;
    let localhost = |path: &str| -> Result<Option<String>, Status> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Status::invalid_argument(format!("seccomp localhost profile {path:?}: {e}"))
        })?;
        Ok(Some(format!("seccomp={text}")))
    };
    match &security.seccomp {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(None),
            Ok(ProfileType::Unconfined) => Ok(Some("seccomp=unconfined".into())),
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => Err(Status::invalid_argument(format!(
                "seccomp.profile_type {} is not a profile type",
                p.profile_type
            ))),
        },
        None => Ok(Some("seccomp=unconfined".into())),
    }
}

/// husk's create request for a CRI container of pod `pod`.
pub(super) fn container_request(
    pod: &SandboxRecord,
    config: &cri::ContainerConfig,
) -> Result<ContainerCreate, Status> {
    let invalid = |e: husk_core::Error| status_of(&e);
    let metadata = config
        .metadata
        .clone()
        .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    convert::required(&image, "config.image.image").map_err(invalid)?;
    let name = convert::container_name(&metadata, &convert::pod_metadata(pod), &pod.config.id)
        .map_err(invalid)?;
    let security = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.clone())
        .unwrap_or_default();
    if security.run_as_group.is_some()
        && security.run_as_user.is_none()
        && security.run_as_username.is_empty()
    {
        return Err(Status::invalid_argument(
            "linux.security_context.run_as_group needs run_as_user or run_as_username",
        ));
    }
    let user = match (&security.run_as_user, security.run_as_username.as_str()) {
        (Some(uid), _) => Some(match &security.run_as_group {
            Some(gid) => format!("{}:{}", uid.value, gid.value),
            None => uid.value.to_string(),
        }),
        (None, "") => None,
        (None, name) => Some(name.to_string()),
    };
    let groups_policy =
        match cri::SupplementalGroupsPolicy::try_from(security.supplemental_groups_policy) {
            Ok(cri::SupplementalGroupsPolicy::Merge) => husk_core::GroupsPolicy::Merge,
            Ok(cri::SupplementalGroupsPolicy::Strict) => husk_core::GroupsPolicy::Strict,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "linux.security_context.supplemental_groups_policy {} is not a policy",
                    security.supplemental_groups_policy
                )));
            }
        };
    #[allow(deprecated)]
    check_apparmor(
        security.apparmor.as_ref(),
        &security.apparmor_profile,
        "linux.security_context.apparmor",
    )?;
    let capabilities = security.capabilities.clone().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in &config.mounts {
        convert::required(&m.container_path, "mounts.container_path").map_err(invalid)?;
        if m.image.is_some() {
            mounts.push(image_mount(m)?);
            continue;
        }
        if !m.image_sub_path.is_empty() {
            return Err(Status::invalid_argument(format!(
                "mounts[].image_sub_path on {}: only an image volume (mounts[].image) takes a sub path",
                m.container_path
            )));
        }
        convert::required(&m.host_path, "mounts.host_path").map_err(invalid)?;
        let propagation = cri::MountPropagation::try_from(m.propagation)
            .unwrap_or(cri::MountPropagation::PropagationPrivate);
        if m.recursive_read_only
            && (!m.readonly || propagation != cri::MountPropagation::PropagationPrivate)
        {
            return Err(Status::invalid_argument(format!(
                "mounts {}: recursive_read_only needs readonly and PROPAGATION_PRIVATE",
                m.container_path
            )));
        }
        let mut options = match propagation {
            cri::MountPropagation::PropagationHostToContainer => vec!["rslave".to_string()],
            cri::MountPropagation::PropagationBidirectional => vec!["rshared".to_string()],
            cri::MountPropagation::PropagationPrivate => Vec::new(),
        };
        // The CRI's readonly is the bind alone; recursive_read_only asks for the submounts too.
        if m.readonly && !m.recursive_read_only {
            options.push(husk_core::options::BIND_WRITABLE_SUBMOUNTS.to_string());
        }
        mounts.push(MountConfig {
            kind: MountKind::Bind,
            source: m.host_path.clone(),
            destination: m.container_path.clone(),
            readonly: m.readonly,
            options,
            host_path: m.host_path.clone(),
            ..Default::default()
        });
    }
    let mut security_opt = vec![format!("no-new-privileges={}", security.no_new_privs)];
    if let Some(seccomp) = seccomp_option(&security)? {
        security_opt.push(seccomp);
    }
    let limits = config
        .linux
        .as_ref()
        .and_then(|l| l.resources.clone())
        .unwrap_or_default();
    let resources = resources_of(
        &limits,
        config.linux.as_ref().is_some_and(|l| l.resources.is_some()),
    )?;
    let devices = config
        .devices
        .iter()
        .map(|d| {
            convert::required(&d.host_path, "devices.host_path")
                .and_then(|_| convert::required(&d.container_path, "devices.container_path"))
                .map_err(invalid)?;
            Ok(husk_core::DeviceMapping {
                host_path: d.host_path.clone(),
                container_path: d.container_path.clone(),
                permissions: d.permissions.clone(),
                ..Default::default()
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(ContainerCreate {
        name: Some(name),
        image,
        entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
        command: (!config.args.is_empty()).then(|| config.args.clone()),
        env: config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, kv.value))
            .collect(),
        workdir: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
        user,
        tty: config.tty,
        stdin: config.stdin,
        sandbox: Some(pod.config.id.clone()),
        privileged: security.privileged,
        read_only: security.readonly_rootfs,
        cap_add: capabilities.add_capabilities,
        cap_drop: capabilities.drop_capabilities,
        security_opt,
        group_add: security
            .supplemental_groups
            .iter()
            .map(|g| g.to_string())
            .collect(),
        groups_policy,
        resources,
        labels: config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        annotations: convert::container_annotations(
            &metadata,
            &config.annotations,
            config.stdin_once,
        ),
        mounts,
        cri_log_path: convert::cri_log_path(pod, &config.log_path),
        sysctls: convert::pod_sysctls(pod),
        masked_paths: (!security.masked_paths.is_empty()).then(|| security.masked_paths.clone()),
        readonly_paths: (!security.readonly_paths.is_empty())
            .then(|| security.readonly_paths.clone()),
        devices,
        stop_signal: convert::stop_signal_name(config.stop_signal).map_err(invalid)?,
        // kubelet pulls before it creates: a missing image is an error, never a pull.
        pull: husk_api_types::PullPolicy::Never,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(pid: cri::NamespaceMode, ipc: cri::NamespaceMode) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: pid as i32,
                        ipc: ipc as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_namespaces_follow_the_namespace_options() {
        use cri::NamespaceMode::{Container, Node, Pod};
        let flags = |pid, ipc| {
            let mut sb = SandboxCreate::default();
            set_pod_namespaces(&pod_with(pid, ipc), &mut sb).unwrap();
            (sb.share_pid, sb.host_pid, sb.host_ipc)
        };
        assert_eq!(flags(Pod, Pod), (true, false, false));
        assert_eq!(flags(Container, Pod), (false, false, false));
        assert_eq!(flags(Node, Pod), (false, true, false));
        assert_eq!(flags(Pod, Node), (true, false, true));
        let mut bad = pod_with(Pod, Pod);
        if let Some(ns) = bad
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.ipc = 42;
        }
        let e = set_pod_namespaces(&bad, &mut SandboxCreate::default()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn supplemental_groups_policy_becomes_the_groups_policy() {
        let pod = SandboxRecord {
            config: husk_core::SandboxConfig {
                id: "p".repeat(64),
                ..Default::default()
            },
            driver: "linux".into(),
            status: husk_core::SandboxStatus::Ready,
            runtime: Default::default(),
            created_at: Default::default(),
            owner_container: None,
            project: String::new(),
        };
        let config = |policy: i32| cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    supplemental_groups: vec![1234],
                    supplemental_groups_policy: policy,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req =
            container_request(&pod, &config(cri::SupplementalGroupsPolicy::Strict as i32)).unwrap();
        assert_eq!(req.groups_policy, husk_core::GroupsPolicy::Strict);
        assert_eq!(req.group_add, vec!["1234".to_string()]);
        let req =
            container_request(&pod, &config(cri::SupplementalGroupsPolicy::Merge as i32)).unwrap();
        assert_eq!(req.groups_policy, husk_core::GroupsPolicy::Merge);
        let e = container_request(&pod, &config(7)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn apparmor_localhost_profiles_are_refused_and_the_others_pass() {
        use cri::security_profile::ProfileType;
        let profile = |t: ProfileType, name: &str| cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: name.into(),
        };
        for ok in [
            profile(ProfileType::RuntimeDefault, ""),
            profile(ProfileType::Unconfined, ""),
        ] {
            check_apparmor(Some(&ok), "", "apparmor").unwrap();
        }
        for deprecated in ["", "runtime/default", "unconfined"] {
            check_apparmor(None, deprecated, "apparmor").unwrap();
        }
        let refused = [
            check_apparmor(
                Some(&profile(ProfileType::Localhost, "mine")),
                "",
                "apparmor",
            ),
            check_apparmor(None, "localhost/mine", "apparmor"),
        ];
        for e in refused {
            let e = e.unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition);
            assert!(e.message().starts_with("apparmor: "), "{}", e.message());
            assert!(e.message().contains("\"mine\""), "{}", e.message());
            if !apparmor_enabled() {
                assert!(e.message().contains("AppArmor is not enabled on this host"));
            }
        }
    }

    #[test]
    fn linux_resources_round_trip_through_husks_limits() {
        let limits = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 64 << 20,
            oom_score_adj: 0,
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        let r = resources_of(&limits, true).unwrap();
        assert_eq!(
            r.oom_score_adj,
            Some(0),
            "0 is a score when resources are given"
        );
        assert_eq!(r.memory_swap_bytes, Some(64 << 20));
        assert_eq!(r.hugepage_limits["2MB"], 0);
        assert_eq!(cri_resources(&r), limits);
        assert_eq!(resources_of(&limits, false).unwrap().oom_score_adj, None);
        let mut twice = limits.clone();
        twice.hugepage_limits.push(twice.hugepage_limits[0].clone());
        assert_eq!(
            resources_of(&twice, true).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let far = cri::LinuxContainerResources {
            oom_score_adj: 1 << 40,
            ..Default::default()
        };
        let e = resources_of(&far, true).unwrap_err();
        assert!(e.message().starts_with("oom_score_adj"), "{}", e.message());
    }

    #[test]
    fn image_volumes_become_image_mounts_and_show_in_the_status() {
        let image_volume = |host_path: &str, image: &str| cri::Mount {
            container_path: "/data".into(),
            host_path: host_path.into(),
            readonly: false,
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = image_mount(&image_volume("", " sha256:abc ")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.destination.as_str()),
            ("image", "sha256:abc", "/data")
        );
        assert!(m.readonly && m.options.is_empty(), "{m:?}");
        let status = mount_status(&m).expect("image mounts are reported");
        assert_eq!(status.container_path, "/data");
        assert!(status.readonly && status.host_path.is_empty());
        assert_eq!(status.image.unwrap().image, "sha256:abc");
        for (host_path, image, why) in [("/srv", "x", "host_path"), ("", " ", "names no image")] {
            let e = image_mount(&image_volume(host_path, image)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(
                e.message().contains("mounts[].image") && e.message().contains(why),
                "{}",
                e.message()
            );
        }
        let tmpfs = MountConfig {
            kind: MountKind::Tmpfs,
            destination: "/t".into(),
            ..Default::default()
        };
        assert!(mount_status(&tmpfs).is_none());
    }
}
