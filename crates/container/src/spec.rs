//! OCI runtime spec (`config.json`) generation from a husk container config.
//!
//! Pure functions: everything the spec depends on (namespace files, the resolved user, the daemon's
//! capabilities, the cgroup version) comes in through [`SpecInput`], so the decisions are unit-tested without
//! root. The secure defaults live here: Docker's capability set, the default seccomp profile, masked and
//! read-only `/proc` paths, a device allowlist, `no_new_privileges`.

use std::path::{Path, PathBuf};

use husk_core::{ContainerConfig, Error, MountConfig, MountKind, ProcessConfig, Result};
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::security;
use crate::user::ResolvedUser;

/// Paths masked from containers (bind-mounted over with /dev/null or an empty read-only tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths made read-only in containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where a container's namespaces come from. `None` = a new namespace made for the container; `Some(path)` =
/// join the namespace pinned at `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePlan {
    /// Network namespace; `None` with `host_network` = share the host's.
    pub net: Option<PathBuf>,
    /// Use the host's network namespace (network mode `host`).
    pub host_network: bool,
    /// IPC namespace.
    pub ipc: Option<PathBuf>,
    /// UTS namespace.
    pub uts: Option<PathBuf>,
    /// PID namespace (a sandbox's shared one).
    pub pid: Option<PathBuf>,
    /// Stay in the host's PID namespace (`pid` is then ignored).
    pub host_pid: bool,
    /// Stay in the host's IPC namespace (`ipc` is then ignored).
    pub host_ipc: bool,
    /// A sandbox's user namespace to join (its pinned file) and its mappings; `None` = the host's.
    pub user: Option<(PathBuf, husk_core::UserNamespaceConfig)>,
}

/// Everything the spec depends on.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    /// The container.
    pub config: &'a ContainerConfig,
    /// The process to run (the container's main process, or an exec).
    pub process: &'a ProcessConfig,
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    /// Namespaces to join or create.
    pub namespaces: NamespacePlan,
    /// Absolute cgroup path (relative to each hierarchy's root).
    pub cgroup_path: String,
    /// The user the process runs as.
    pub user: ResolvedUser,
    /// Files bind-mounted over the image's: (`/etc/hosts`, host path) ...
    pub etc_files: Vec<(String, PathBuf)>,
    /// A tmpfs shared by a sandbox's containers for `/dev/shm`, if any.
    pub shm: Option<PathBuf>,
    /// Capabilities the daemon holds (the set privileged containers get).
    pub daemon_capabilities: &'a [String],
    /// Whether the host uses the unified cgroup v2 hierarchy.
    pub cgroup_v2: bool,
}

/// Whether the container gets Docker's default seccomp profile as a program the caller compiles once and
/// keeps (`crate::seccomp_bpf`; the shim installs it as the last step before `execve`, which needs
/// no-new-privileges) instead of a profile in its spec: the default profile, not privileged, no new privileges.
/// [`container_spec`] then leaves the profile out (building it and dropping it again cost more than the rest of
/// the spec).
pub fn seccomp_precompiled(config: &ContainerConfig) -> bool {
    let sec = &config.security;
    !sec.privileged
        && sec.no_new_privileges
        && matches!(sec.seccomp.as_deref(), None | Some("") | Some("default"))
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": kind, "source": source, "options": options})
}

fn default_mounts(input: &SpecInput<'_>) -> Vec<Value> {
    let privileged = input.config.security.privileged;
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
    ];
    match &input.shm {
        Some(path) => mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": path, "options": ["rbind", "nosuid", "noexec", "nodev"]})),
        None => {
            let size = format!("size={}", shm_size_bytes(&input.config.resources));
            mounts.push(mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", &size]))
        }
    }
    let sys_ro = if privileged { "rw" } else { "ro" };
    if input.namespaces.host_network {
        // sysfs can only be mounted by the owner of the network namespace: bind the host's instead.
        mounts.push(json!({"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", sys_ro]}));
    } else {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_ro],
        ));
        mounts.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_ro],
        ));
    }
    for (dest, source) in &input.etc_files {
        mounts.push(json!({"destination": dest, "type": "bind", "source": source, "options": ["rbind", "rprivate"]}));
    }
    mounts
}

/// A user mount (bind, volume, tmpfs or image, as the engine completed it and the driver placed it) as an OCI
/// mount.
///
/// Binds and volumes are recursive binds of `host_path`; a read-only one is read-only recursively (`rro`:
/// `mount_setattr(AT_RECURSIVE)`), so mounts below the source are read-only in the container too, unless it
/// asks to keep them writable ([`husk_core::options::BIND_WRITABLE_SUBMOUNTS`]). Their
/// propagation is set after the container is created (see [`bind_propagations`]): libcontainer's
/// `open_tree`/`move_mount` flow does not apply it.
fn user_mount(m: &MountConfig) -> Result<Value> {
    if !m.destination.starts_with('/') {
        return Err(Error::invalid(
            "mounts",
            format!(
                "mount destination {:?} is not an absolute path",
                m.destination
            ),
        ));
    }
    let access = if m.readonly { "ro" } else { "rw" };
    match m.kind {
        MountKind::Bind | MountKind::Volume => {
            if m.host_path.is_empty() {
                return Err(Error::internal(format!(
                    "the {} mount on {} has no host path: the engine did not prepare it",
                    m.kind, m.destination
                )));
            }
            let mut options = vec!["rbind".to_string(), access.to_string()];
            let writable_submounts = m
                .options
                .iter()
                .any(|o| o == husk_core::options::BIND_WRITABLE_SUBMOUNTS);
            if m.readonly && !writable_submounts {
                options.push("rro".into());
            }
            Ok(
                json!({"destination": m.destination, "type": "bind", "source": m.host_path, "options": options}),
            )
        }
        // The image's layers, mounted read-only on the host by the driver: bound read-only, nosuid and nodev.
        MountKind::Image => {
            if m.host_path.is_empty() {
                return Err(Error::internal(format!(
                    "the image mount on {} has no host path: the driver did not mount it",
                    m.destination
                )));
            }
            Ok(
                json!({"destination": m.destination, "type": "bind", "source": m.host_path, "options": ["rbind", "ro", "rro", "nosuid", "nodev"]}),
            )
        }
        MountKind::Tmpfs => {
            let mut options = vec![access.to_string()];
            options.extend(
                m.options
                    .iter()
                    .filter(|o| *o != "ro" && *o != "rw")
                    .cloned(),
            );
            Ok(
                json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": options}),
            )
        }
    }
}

/// The propagation each bind and volume mount must get, as `(destination, mode)`, when any of them asks for
/// one other than the default (`rprivate`); empty otherwise (the default needs no change).
pub fn bind_propagations(config: &ContainerConfig) -> Vec<(String, String)> {
    let binds = || {
        config
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Bind || m.kind == MountKind::Volume)
    };
    let special = binds().any(|m| !matches!(m.propagation(), None | Some("private" | "rprivate")));
    if !special {
        return Vec::new();
    }
    binds()
        .map(|m| {
            (
                m.destination.clone(),
                m.propagation().unwrap_or("rprivate").to_string(),
            )
        })
        .collect()
}

/// The propagation of the container's root mount: private unless a bind needs to receive (`slave`) or share
/// (`shared`) mount events with the host.
fn rootfs_propagation(config: &ContainerConfig) -> &'static str {
    let modes: Vec<&str> = config
        .mounts
        .iter()
        .filter_map(|m| m.propagation())
        .collect();
    if modes.iter().any(|p| p.ends_with("shared")) {
        "shared"
    } else if modes.iter().any(|p| p.ends_with("slave")) {
        "slave"
    } else {
        "private"
    }
}

/// `--ulimit`s as OCI rlimits.
fn rlimits(config: &ContainerConfig) -> Vec<Value> {
    config
        .ulimits
        .iter()
        .filter_map(|u| {
            let kind = u.kernel_name()?;
            Some(json!({"type": kind, "soft": husk_core::Ulimit::as_u64(u.soft), "hard": husk_core::Ulimit::as_u64(u.hard)}))
        })
        .collect()
}

/// The process's environment: the given one, plus `PATH`, `HOSTNAME`, `HOME` and (with a terminal) `TERM` when
/// missing, as Docker does.
pub fn process_env(process: &ProcessConfig, hostname: &str, home: &str) -> Vec<String> {
    let mut env = process.env.clone();
    let has = |env: &[String], k: &str| {
        env.iter()
            .any(|e| e.split_once('=').map(|(n, _)| n) == Some(k))
    };
    if !has(&env, "PATH") {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    if !hostname.is_empty() && !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={hostname}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    if process.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    env
}

/// The OCI `process` object for `input.process` (shared by the container's init and its execs).
pub fn process_json(input: &SpecInput<'_>) -> Result<Value> {
    let sec = &input.config.security;
    let caps = security::container_capabilities(
        sec.privileged,
        &sec.cap_add,
        &sec.cap_drop,
        input.daemon_capabilities,
    )?;
    let p = input.process;
    if p.args.is_empty() {
        return Err(Error::invalid(
            "command",
            "no command to run: the image has no Cmd or Entrypoint and none was given",
        ));
    }
    let cwd = if p.cwd.is_empty() {
        "/".to_string()
    } else {
        p.cwd.clone()
    };
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            "workdir",
            format!("working directory {cwd:?} is not an absolute path"),
        ));
    }
    let mut user = json!({"uid": input.user.uid, "gid": input.user.gid});
    if !input.user.additional_gids.is_empty() {
        user["additionalGids"] = json!(input.user.additional_gids);
    }
    let mut process = json!({
        "terminal": p.tty,
        "user": user,
        "args": p.args,
        "env": process_env(p, &input.config.hostname, &input.user.home),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
    });
    // Only `true` is written: libcontainer takes an explicit `false` like `true` when it orders seccomp after
    // the capability drop, and then cannot load a filter without no-new-privileges.
    if sec.no_new_privileges && !sec.privileged {
        process["noNewPrivileges"] = json!(true);
    }
    let limits = rlimits(input.config);
    if !limits.is_empty() {
        process["rlimits"] = json!(limits);
    }
    // Written by the runtime into its own process before the container's starts, so every process of the
    // container (execs too) has it; the engine never asks for less than the daemon's own.
    if let Some(adj) = input.config.resources.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }
    Ok(process)
}

/// The container's `--device`s as OCI `linux.devices`: nodes made in its `/dev` with the host's numbers and mode
/// (bind-mounted from the host in a user namespace), owned by the container's root.
fn devices_json(devices: &[husk_core::DeviceMapping]) -> Value {
    json!(
        devices
            .iter()
            .map(|d| json!({
                "path": d.path_in_container(),
                "type": d.kind,
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.file_mode,
                "uid": 0,
                "gid": 0,
            }))
            .collect::<Vec<_>>()
    )
}

/// Docker's default device allowlist: `mknod` of anything, and use of the standard pseudo-devices; then the
/// container's `--device`s with the access they ask for.
fn device_rules(privileged: bool, devices: &[husk_core::DeviceMapping]) -> Value {
    if privileged {
        return json!([{"allow": true, "access": "rwm"}]);
    }
    let rule = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = json!({"allow": true, "type": kind, "access": access});
        if let Some(m) = major {
            r["major"] = json!(m);
        }
        if let Some(m) = minor {
            r["minor"] = json!(m);
        }
        r
    };
    let mut rules = json!([
        {"allow": false, "access": "rwm"},
        rule("c", None, None, "m"),
        rule("b", None, None, "m"),
        rule("c", Some(1), Some(3), "rwm"),   // null
        rule("c", Some(1), Some(5), "rwm"),   // zero
        rule("c", Some(1), Some(7), "rwm"),   // full
        rule("c", Some(1), Some(8), "rwm"),   // random
        rule("c", Some(1), Some(9), "rwm"),   // urandom
        rule("c", Some(5), Some(0), "rwm"),   // tty
        rule("c", Some(5), Some(2), "rwm"),   // ptmx
        rule("c", Some(136), None, "rwm"),    // pts/*
        rule("c", Some(10), Some(200), "rwm"), // net/tun
    ]);
    if let Some(list) = rules.as_array_mut() {
        for d in devices {
            list.push(rule(&d.kind, Some(d.major), Some(d.minor), d.access()));
        }
    }
    rules
}

fn resources_json(config: &ContainerConfig) -> Value {
    let mut res = limits_json(&config.resources);
    res["devices"] = device_rules(config.security.privileged, &config.devices);
    res
}

/// The size of a container's or sandbox's `/dev/shm`: as asked, else Docker's 64 MiB.
pub fn shm_size_bytes(resources: &husk_core::Resources) -> i64 {
    resources.shm_size_bytes.unwrap_or(64 << 20)
}

/// The OCI `linux.resources` object of `limits` alone (memory and swap, CPU, PIDs, huge pages, cgroup v2 files;
/// no device rules): the spec's, and what `update` applies to a running container's cgroup. The driver has
/// fitted `limits` to its host before (what the host cannot enforce is refused or, when it asks for nothing,
/// left out).
pub fn limits_json(limits: &husk_core::Resources) -> Value {
    let mut res = json!({});
    if let Some(m) = limits.memory_bytes {
        res["memory"] = json!({"limit": m});
        if let Some(swap) = limits.memory_swap_bytes {
            res["memory"]["swap"] = json!(swap);
        }
    }
    if !limits.hugepage_limits.is_empty() {
        res["hugepageLimits"] = json!(
            limits
                .hugepage_limits
                .iter()
                .map(|(size, limit)| json!({"pageSize": size, "limit": limit}))
                .collect::<Vec<_>>()
        );
    }
    if !limits.unified.is_empty() {
        res["unified"] = json!(limits.unified);
    }
    let mut cpu = serde_json::Map::new();
    if let Some(n) = limits.nano_cpus {
        let period: u64 = 100_000;
        let quota = (n as i128 * period as i128 / 1_000_000_000) as i64;
        cpu.insert("quota".into(), json!(quota.max(1000)));
        cpu.insert("period".into(), json!(period));
    }
    if let Some(shares) = limits.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if let Some(cpus) = &limits.cpuset_cpus {
        cpu.insert("cpus".into(), json!(cpus));
    }
    if let Some(mems) = &limits.cpuset_mems {
        cpu.insert("mems".into(), json!(mems));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = limits.pids_limit {
        res["pids"] = json!({"limit": p});
    }
    res
}

fn namespaces_json(plan: &NamespacePlan, cgroup_v2: bool) -> Value {
    let ns = |kind: &str, path: &Option<PathBuf>| match path {
        Some(p) => json!({"type": kind, "path": p}),
        None => json!({"type": kind}),
    };
    // A namespace type left out of the list is the runtime's own: the host's.
    let mut list = vec![json!({"type": "mount"})];
    if let Some((path, _)) = &plan.user {
        list.push(json!({"type": "user", "path": path}));
    }
    if !plan.host_pid {
        list.push(ns("pid", &plan.pid));
    }
    if !plan.host_ipc {
        list.push(ns("ipc", &plan.ipc));
    }
    list.push(ns("uts", &plan.uts));
    if !plan.host_network {
        list.push(ns("network", &plan.net));
    }
    if cgroup_v2 {
        list.push(json!({"type": "cgroup"}));
    }
    json!(list)
}

/// The whole `config.json` for a container.
pub fn container_spec(input: &SpecInput<'_>) -> Result<Spec> {
    let sec = &input.config.security;
    let process = process_json(input)?;
    let caps: Vec<String> = process["capabilities"]["bounding"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut mounts = default_mounts(input);
    for m in &input.config.mounts {
        mounts.push(user_mount(m)?);
    }
    let mut linux = json!({
        "namespaces": namespaces_json(&input.namespaces, input.cgroup_v2),
        "cgroupsPath": input.cgroup_path,
        "resources": resources_json(input.config),
        "rootfsPropagation": rootfs_propagation(input.config),
    });
    if !sec.sysctls.is_empty() {
        linux["sysctl"] = json!(sec.sysctls);
    }
    if !input.config.devices.is_empty() {
        linux["devices"] = devices_json(&input.config.devices);
    }
    if let Some((_, userns)) = &input.namespaces.user {
        // The namespace exists already (the runtime joins it); its mappings are stated as the OCI spec asks.
        let ids = |maps: &[husk_core::IdMapping]| {
            maps.iter()
                .map(
                    |m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.size}),
                )
                .collect::<Vec<_>>()
        };
        linux["uidMappings"] = json!(ids(&userns.uid_mappings));
        linux["gidMappings"] = json!(ids(&userns.gid_mappings));
    }
    if !sec.privileged {
        linux["maskedPaths"] = match &sec.masked_paths {
            Some(paths) => json!(paths),
            None => json!(MASKED_PATHS),
        };
        linux["readonlyPaths"] = match &sec.readonly_paths {
            Some(paths) => json!(paths),
            None => json!(READONLY_PATHS),
        };
        match sec.seccomp.as_deref() {
            // The caller installs the precompiled program.
            _ if seccomp_precompiled(input.config) => {}
            None | Some("") | Some("default") => {
                linux["seccomp"] = security::default_seccomp_profile(&caps)
            }
            Some("unconfined") => {}
            Some(profile) => {
                let v: Value = serde_json::from_str(profile).map_err(|e| {
                    Error::invalid(
                        "security_opt",
                        format!("the seccomp profile is not valid JSON: {e}"),
                    )
                })?;
                linux["seccomp"] = v;
            }
        }
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": input.rootfs, "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
        "annotations": {"io.husk.container.name": input.config.name},
    });
    // A pinned UTS namespace got its hostname when it was made; a new one gets it from the runtime.
    if input.namespaces.uts.is_none() && !input.config.hostname.is_empty() {
        spec["hostname"] = json!(input.config.hostname);
    }
    serde_json::from_value(spec)
        .map_err(|e| Error::invalid("config", format!("cannot build a valid OCI spec: {e}")))
}

#[cfg(test)]
mod tests;
