//! husk's container and sandbox configurations as engine create requests. Pure functions: no engine calls.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, HealthConfig, HostConfig, HostConfigLogConfig, Mount,
    MountBindOptions, MountBindOptionsPropagationEnum, MountType, PortBinding, PortMap,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use husk_core::units::{parse_memory, signal_name};
use husk_core::{
    ContainerConfig, Error, GroupsPolicy, MountConfig, MountKind, NetworkConfig, Result,
    SandboxConfig, SecurityConfig,
};

use crate::privileged::ALLOW_ALL_DEVICES;

/// What `--privileged` becomes on this host (see [`crate::privileged`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Privileges {
    /// Capabilities to add, by name.
    pub capabilities: Vec<String>,
    /// Host devices to pass.
    pub devices: Vec<DeviceMapping>,
}

/// Where a container's namespaces come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Placement<'a> {
    /// Its own network, IPC, UTS and PID namespaces.
    Standalone,
    /// The infra container's network, IPC and UTS namespaces, and its PID namespace when `share_pid`; the
    /// host's PID or IPC namespace with `host_pid` or `host_ipc`.
    Sandbox {
        /// Engine ID of the infra container.
        infra_id: &'a str,
        /// Join the infra container's PID namespace too.
        share_pid: bool,
        /// Run in the host's PID namespace.
        host_pid: bool,
        /// Run in the host's IPC namespace.
        host_ipc: bool,
    },
}

/// No restart policy: restarts are husk's engine's job.
fn no_restart() -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::NO),
        maximum_retry_count: None,
    }
}

/// The network-related parts of a create request.
#[derive(Debug, Default, PartialEq)]
struct NetworkParts {
    mode: String,
    port_bindings: Option<PortMap>,
    exposed_ports: Option<Vec<String>>,
    dns: Option<Vec<String>>,
    dns_search: Option<Vec<String>>,
    extra_hosts: Option<Vec<String>>,
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    if v.is_empty() { None } else { Some(v.to_vec()) }
}

fn network_parts(net: &NetworkConfig) -> Result<NetworkParts> {
    let mode = net.mode().to_string();
    if !net.ports.is_empty() && (mode == "none" || mode == "host") {
        return Err(Error::invalid(
            "ports",
            format!(
                "ports cannot be published with network {mode}: publishing needs a bridge network (with host networking the ports are the host's already)"
            ),
        ));
    }
    let mut bindings: PortMap = HashMap::new();
    for p in &net.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let binding = PortBinding {
            host_ip: if p.host_ip.is_empty() {
                None
            } else {
                Some(p.host_ip.clone())
            },
            host_port: Some(p.host_port.to_string()),
        };
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    let mut exposed: Vec<String> = bindings.keys().cloned().collect();
    exposed.sort();
    Ok(NetworkParts {
        mode,
        exposed_ports: if exposed.is_empty() {
            None
        } else {
            Some(exposed)
        },
        port_bindings: if bindings.is_empty() {
            None
        } else {
            Some(bindings)
        },
        dns: non_empty(&net.dns),
        dns_search: non_empty(&net.dns_search),
        extra_hosts: non_empty(&net.extra_hosts),
    })
}

fn propagation(option: &str) -> Option<MountBindOptionsPropagationEnum> {
    Some(match option {
        "private" => MountBindOptionsPropagationEnum::PRIVATE,
        "rprivate" => MountBindOptionsPropagationEnum::RPRIVATE,
        "shared" => MountBindOptionsPropagationEnum::SHARED,
        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
        "slave" => MountBindOptionsPropagationEnum::SLAVE,
        "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
        _ => return None,
    })
}

fn unsupported_option(m: &MountConfig, option: &str) -> Error {
    Error::invalid(
        "mounts",
        format!(
            "mount option {option:?} of the {} mount on {} is not supported by the docker driver",
            m.kind, m.destination
        ),
    )
}

/// A bind or volume mount as an engine mount: both are binds of the host path the engine prepared (a volume is
/// husk's own directory, so it is the same on every driver and filled from the image by husk).
fn mount(m: &MountConfig) -> Result<Mount> {
    if !m.destination.starts_with('/') {
        return Err(Error::invalid(
            "mounts",
            format!(
                "mount destination {:?} is not an absolute path",
                m.destination
            ),
        ));
    }
    if m.kind == MountKind::Image {
        return Err(Error::unsupported(format!(
            "the image mount on {}: image volumes are served by the linux driver only (Docker Engine mounts images from version 28)",
            m.destination
        )));
    }
    let source = if m.host_path.is_empty() {
        m.source.clone()
    } else {
        m.host_path.clone()
    };
    if !source.starts_with('/') {
        return Err(Error::invalid(
            "mounts",
            format!(
                "the {} mount on {} has no host path: the engine did not prepare it",
                m.kind, m.destination
            ),
        ));
    }
    let mut read_only = m.readonly;
    let mut bind = MountBindOptions::default();
    for option in &m.options {
        match option.as_str() {
            "ro" => read_only = true,
            "rw" => {}
            "rbind" => bind.non_recursive = Some(false),
            "bind" => bind.non_recursive = Some(true),
            // No SELinux relabelling on this engine's hosts; copying into volumes is husk's job.
            "z" | "Z" | "consistent" | "cached" | "delegated" | "nocopy" => {}
            husk_core::options::BIND_WRITABLE_SUBMOUNTS => {
                bind.read_only_non_recursive = Some(true)
            }
            other => match propagation(other) {
                Some(p) => bind.propagation = Some(p),
                None => return Err(unsupported_option(m, other)),
            },
        }
    }
    Ok(Mount {
        target: Some(m.destination.clone()),
        source: Some(source),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        bind_options: if bind != MountBindOptions::default() {
            Some(bind)
        } else {
            None
        },
        ..Default::default()
    })
}

/// A tmpfs mount's option string for the engine's `Tmpfs` map (`size=64m,mode=1777,noexec`).
fn tmpfs_options(m: &MountConfig) -> Result<String> {
    let mut out = Vec::new();
    for option in &m.options {
        let (key, value) = option.split_once('=').unwrap_or((option.as_str(), ""));
        match key {
            "size" => {
                parse_memory("mounts", value)?;
                out.push(option.clone());
            }
            "mode" if u32::from_str_radix(value, 8).is_ok() => out.push(option.clone()),
            "ro" | "rw" | "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" | "uid"
            | "gid" | "nr_inodes" => out.push(option.clone()),
            _ => return Err(unsupported_option(m, option)),
        }
    }
    if m.readonly && !out.iter().any(|o| o == "ro") {
        out.push("ro".to_string());
    }
    Ok(out.join(","))
}

/// A container's engine mounts and its tmpfs mounts (destination -> options).
type MountParts = (Option<Vec<Mount>>, Option<HashMap<String, String>>);

/// Mounts and tmpfs mounts of a container.
fn mounts(list: &[MountConfig]) -> Result<MountParts> {
    let mut engine_mounts = Vec::new();
    let mut tmpfs = HashMap::new();
    for m in list {
        if m.kind == MountKind::Tmpfs {
            tmpfs.insert(m.destination.clone(), tmpfs_options(m)?);
        } else {
            engine_mounts.push(mount(m)?);
        }
    }
    Ok((
        if engine_mounts.is_empty() {
            None
        } else {
            Some(engine_mounts)
        },
        if tmpfs.is_empty() { None } else { Some(tmpfs) },
    ))
}

/// `NET_ADMIN`, `cap_net_admin` -> `CAP_NET_ADMIN`; `all` -> `ALL`.
fn capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Security settings applied to the host config.
fn apply_security(
    host: &mut HostConfig,
    security: &SecurityConfig,
    privileges: Option<&Privileges>,
) -> Result<()> {
    let mut opts = Vec::new();
    if security.no_new_privileges {
        opts.push("no-new-privileges:true".to_string());
    }
    host.readonly_rootfs = Some(security.readonly_rootfs);
    if security.privileged {
        let p = privileges
            .ok_or_else(|| Error::internal("privileged container without the host's privileges"))?;
        opts.push("seccomp=unconfined".to_string());
        opts.push("apparmor=unconfined".to_string());
        host.cap_add = Some(p.capabilities.clone());
        host.masked_paths = Some(Vec::new());
        host.readonly_paths = Some(Vec::new());
        host.devices = if p.devices.is_empty() {
            None
        } else {
            Some(p.devices.clone())
        };
        host.device_cgroup_rules = Some(vec![ALLOW_ALL_DEVICES.to_string()]);
    } else {
        match security.seccomp.as_deref() {
            None => {}
            Some("unconfined") => opts.push("seccomp=unconfined".to_string()),
            Some(profile) => {
                serde_json::from_str::<serde_json::Value>(profile).map_err(|e| {
                    Error::invalid(
                        "seccomp",
                        format!("the seccomp profile is not valid JSON: {e}"),
                    )
                })?;
                opts.push(format!("seccomp={profile}"));
            }
        }
        host.cap_add = non_empty(
            &security
                .cap_add
                .iter()
                .map(|c| capability(c))
                .collect::<Vec<_>>(),
        );
        host.cap_drop = non_empty(
            &security
                .cap_drop
                .iter()
                .map(|c| capability(c))
                .collect::<Vec<_>>(),
        );
    }
    host.security_opt = non_empty(&opts);
    Ok(())
}

/// Refuses what the docker engine's API cannot carry: huge page limits and cgroup v2 files (`unified`).
fn refuse_cgroup_v2_limits(config: &ContainerConfig) -> Result<()> {
    for (field, asked) in [
        (
            "hugepage_limits",
            !config.resources.hugepage_limits.is_empty(),
        ),
        ("unified", !config.resources.unified.is_empty()),
    ] {
        if asked {
            return Err(Error::unsupported(format!(
                "{field}: driver docker cannot set them for container {} (the docker engine's API has no such \
                 setting); use the linux driver",
                config.name
            )));
        }
    }
    Ok(())
}

/// The create request for a container.
pub(crate) fn container_body(
    config: &ContainerConfig,
    placement: Placement<'_>,
    labels: HashMap<String, String>,
    privileges: Option<&Privileges>,
) -> Result<ContainerCreateBody> {
    let args = &config.process.args;
    let Some((program, rest)) = args.split_first() else {
        return Err(Error::invalid(
            "command",
            format!("container {} has no command to run", config.name),
        ));
    };
    if config.security.groups_policy == GroupsPolicy::Strict {
        return Err(Error::unsupported(format!(
            "container {}: groups_policy strict: the docker engine always adds the image's groups of the user",
            config.name
        )));
    }
    refuse_cgroup_v2_limits(config)?;
    let (engine_mounts, tmpfs) = mounts(&config.mounts)?;
    let mut host = HostConfig {
        log_config: log_config(config),
        memory: config.resources.memory_bytes,
        memory_swap: config.resources.memory_swap_bytes,
        oom_score_adj: config.resources.oom_score_adj.map(i64::from),
        cgroup_parent: config.cgroup_parent.clone(),
        nano_cpus: config.resources.nano_cpus,
        pids_limit: config.resources.pids_limit,
        cpu_shares: config.resources.cpu_shares.map(|s| s as i64),
        cpuset_cpus: config.resources.cpuset_cpus.clone(),
        cpuset_mems: config.resources.cpuset_mems.clone(),
        shm_size: config.resources.shm_size_bytes,
        mounts: engine_mounts,
        tmpfs,
        restart_policy: Some(no_restart()),
        auto_remove: Some(false),
        init: Some(false),
        ulimits: if config.ulimits.is_empty() {
            None
        } else {
            Some(
                config
                    .ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect(),
            )
        },
        group_add: non_empty(&config.security.group_add),
        ..Default::default()
    };
    apply_security(&mut host, &config.security, privileges)?;
    if !config.devices.is_empty() {
        let devices = host.devices.get_or_insert_with(Vec::new);
        devices.extend(config.devices.iter().map(|d| DeviceMapping {
            path_on_host: Some(d.host_path.clone()),
            path_in_container: Some(d.path_in_container().to_string()),
            cgroup_permissions: Some(d.access().to_string()),
        }));
    }
    let mut body = ContainerCreateBody {
        image: Some(config.image.id.clone()),
        entrypoint: Some(vec![program.clone()]),
        cmd: Some(rest.to_vec()),
        env: Some(config.process.env.clone()),
        working_dir: if config.process.cwd.is_empty() {
            None
        } else {
            Some(config.process.cwd.clone())
        },
        user: if config.process.user.is_empty() {
            None
        } else {
            Some(config.process.user.clone())
        },
        tty: Some(config.process.tty),
        open_stdin: Some(config.process.stdin),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        labels: Some(labels),
        stop_signal: config.stop_signal.map(signal_name),
        stop_timeout: config.stop_timeout.map(i64::from),
        // Health checks are husk's engine's (for every driver): the image's own must not run twice.
        healthcheck: Some(HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    match placement {
        Placement::Sandbox {
            infra_id,
            share_pid,
            host_pid,
            host_ipc,
        } => {
            let joined = format!("container:{infra_id}");
            host.network_mode = Some(joined.clone());
            // /dev/shm is the infra container's, sized when the sandbox was made (the host's with its IPC).
            host.ipc_mode = Some(if host_ipc {
                "host".to_string()
            } else {
                joined.clone()
            });
            host.shm_size = None;
            if host_pid {
                host.pid_mode = Some("host".to_string());
            } else if share_pid {
                host.pid_mode = Some(joined);
            }
        }
        Placement::Standalone => {
            let net = network_parts(&config.network)?;
            if net.mode != "host" && !config.hostname.is_empty() {
                body.hostname = Some(config.hostname.clone());
            }
            body.exposed_ports = net.exposed_ports;
            host.network_mode = Some(net.mode);
            host.port_bindings = net.port_bindings;
            host.dns = net.dns;
            host.dns_search = net.dns_search;
            host.extra_hosts = net.extra_hosts;
        }
    }
    body.host_config = Some(host);
    Ok(body)
}

/// The create request for a sandbox's infra container: `husk-pause` as PID 1, no capabilities, read-only root,
/// holding the sandbox's network, ports, hostname and a shareable IPC namespace.
pub(crate) fn infra_body(
    config: &SandboxConfig,
    image_id: &str,
    labels: HashMap<String, String>,
) -> Result<ContainerCreateBody> {
    let net = network_parts(&config.network)?;
    let host = HostConfig {
        ipc_mode: Some(if config.host_ipc { "host" } else { "shareable" }.to_string()),
        pid_mode: config.host_pid.then(|| "host".to_string()),
        shm_size: config.resources.shm_size_bytes,
        cgroup_parent: config.cgroup_parent.clone(),
        network_mode: Some(net.mode.clone()),
        port_bindings: net.port_bindings,
        dns: net.dns,
        dns_search: net.dns_search,
        extra_hosts: net.extra_hosts,
        cap_drop: Some(vec!["ALL".to_string()]),
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        readonly_rootfs: Some(true),
        restart_policy: Some(no_restart()),
        auto_remove: Some(false),
        init: Some(false),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(image_id.to_string()),
        hostname: if net.mode == "host" || config.hostname.is_empty() {
            None
        } else {
            Some(config.hostname.clone())
        },
        exposed_ports: net.exposed_ports,
        labels: Some(labels),
        host_config: Some(host),
        ..Default::default()
    })
}

/// The engine's `json-file` driver with the container's log limits, which the engine keeps; the engine's default
/// driver when there are none.
fn log_config(config: &ContainerConfig) -> Option<HostConfigLogConfig> {
    if config.log.is_unbounded() {
        return None;
    }
    Some(HostConfigLogConfig {
        typ: Some("json-file".into()),
        config: Some(config.log.opts().into_iter().collect()),
    })
}

#[cfg(test)]
mod tests;
