//! Turning a request and an image into a complete container config: every validation rule lives here.

use husk_core::health::{
    DEFAULT_INTERVAL_NS, DEFAULT_RETRIES, DEFAULT_START_INTERVAL_NS, DEFAULT_TIMEOUT_NS,
};
use husk_core::units::{self, MIN_MEMORY_BYTES};
use husk_core::{
    ContainerConfig, DeviceMapping, Error, HealthAction, HealthConfig, ImageRef, LogLimits,
    ProcessConfig, Resources, Result, SecurityConfig, Ulimit,
};
use husk_image::Image;

use husk_api_types::containers::{ContainerCreate, ExecCreate, HealthcheckRequest};

/// Merges `overrides` into `base` by variable name (later wins), keeping the order of first appearance.
pub(crate) fn merge_env(base: &[String], overrides: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(base.len() + overrides.len());
    for entry in base.iter().chain(overrides) {
        let key = match entry.split_once('=') {
            Some((k, _)) if !k.is_empty() => k,
            _ => {
                return Err(Error::invalid(
                    "env",
                    format!("invalid environment variable {entry:?}: use KEY=VALUE"),
                ));
            }
        };
        match out
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
        {
            Some(slot) => *slot = entry.clone(),
            None => out.push(entry.clone()),
        }
    }
    Ok(out)
}

/// Whether `s` is a kernel CPU or memory-node list: numbers and `a-b` ranges, comma-separated.
fn is_cpu_list(s: &str) -> bool {
    let number = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    !s.is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => {
                number(a) && number(b) && a.parse::<u32>().ok() <= b.parse::<u32>().ok()
            }
            None => number(part),
        })
}

/// Checks limits as Docker does (memory at least 6 MiB, CPUs within what the host has, PIDs positive or -1).
pub(crate) fn validate_resources(r: &Resources) -> Result<()> {
    if let Some(m) = r.memory_bytes
        && m < MIN_MEMORY_BYTES
    {
        return Err(Error::invalid(
            "memory",
            format!("minimum memory limit allowed is 6MB (got {m} bytes)"),
        ));
    }
    if let Some(n) = r.nano_cpus {
        let host = std::thread::available_parallelism()
            .map(|n| n.get() as i64)
            .unwrap_or(1);
        if n < 10_000_000 || n > host * 1_000_000_000 {
            return Err(Error::invalid(
                "cpus",
                format!(
                    "range of CPUs is from 0.01 to {host}.00, as there are only {host} CPUs available"
                ),
            ));
        }
    }
    if let Some(s) = r.cpu_shares
        && !(2..=262_144).contains(&s)
    {
        return Err(Error::invalid(
            "cpu_shares",
            format!("CPU shares must be between 2 and 262144 (got {s})"),
        ));
    }
    for (field, set) in [
        ("cpuset_cpus", &r.cpuset_cpus),
        ("cpuset_mems", &r.cpuset_mems),
    ] {
        if let Some(set) = set
            && !is_cpu_list(set)
        {
            return Err(Error::invalid(
                field,
                format!("{set:?} is not a list of numbers and ranges like 0-3,6"),
            ));
        }
    }
    if let Some(p) = r.pids_limit
        && p == 0
    {
        return Err(Error::invalid(
            "pids_limit",
            "pids limit must be positive, or -1 for unlimited",
        ));
    }
    if let Some(p) = r.pids_limit
        && p < -1
    {
        return Err(Error::invalid(
            "pids_limit",
            "pids limit must be positive, or -1 for unlimited",
        ));
    }
    if let Some(s) = r.shm_size_bytes
        && s <= 0
    {
        return Err(Error::invalid(
            "shm_size",
            format!("the size of /dev/shm must be positive (got {s} bytes)"),
        ));
    }
    if let Some(o) = r.oom_score_adj
        && !units::OOM_SCORE_ADJ_RANGE.contains(&o)
    {
        return Err(Error::invalid(
            "oom_score_adj",
            format!("oom_score_adj must be between -1000 and 1000 (got {o})"),
        ));
    }
    if let Some(swap) = r.memory_swap_bytes {
        let Some(memory) = r.memory_bytes else {
            return Err(Error::invalid(
                "memory_swap",
                "a memory plus swap limit needs a memory limit too",
            ));
        };
        if swap != -1 && swap < memory {
            return Err(Error::invalid(
                "memory_swap",
                format!(
                    "the memory plus swap limit ({swap} bytes) is below the memory limit ({memory} bytes): \
                     give at least the memory limit, or -1 for unlimited swap"
                ),
            ));
        }
    }
    for size in r.hugepage_limits.keys() {
        units::parse_hugepage_size("hugepage_limits", size)?;
    }
    for (key, value) in &r.unified {
        let file_name = !key.is_empty()
            && key != "."
            && key != ".."
            && !key.contains(['/', '\0', '\n'])
            && !key.chars().any(char::is_whitespace);
        if !file_name || value.contains(['\0', '\n']) {
            return Err(Error::invalid(
                "unified",
                format!(
                    "unified: {key:?} = {value:?} is not a cgroup file name and a one-line value"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks `--device`s: absolute paths, permissions from `rwm`, each container path once, and a host path that
/// is a character or block device, whose type, numbers and mode are filled in. Nothing is created.
pub(crate) fn check_devices(devices: &[DeviceMapping]) -> Result<Vec<DeviceMapping>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(devices.len());
    for d in devices {
        d.check_syntax()?;
        if !seen.insert(d.path_in_container().to_string()) {
            return Err(Error::invalid(
                "devices",
                format!(
                    "devices: {} is given twice in the container",
                    d.path_in_container()
                ),
            ));
        }
        let meta = std::fs::metadata(&d.host_path).map_err(|e| {
            Error::invalid(
                "devices",
                format!("devices: the host path {}: {e}", d.host_path),
            )
        })?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(Error::invalid(
                "devices",
                format!(
                    "devices: the host path {} is not a character or block device",
                    d.host_path
                ),
            ));
        };
        let rdev = meta.rdev();
        out.push(DeviceMapping {
            kind: kind.into(),
            major: rustix::fs::major(rdev).into(),
            minor: rustix::fs::minor(rdev).into(),
            file_mode: meta.mode() & 0o7777,
            ..d.clone()
        });
    }
    Ok(out)
}

fn parse_security(req: &ContainerCreate) -> Result<SecurityConfig> {
    let mut sec = SecurityConfig {
        privileged: req.privileged,
        cap_add: req.cap_add.clone(),
        cap_drop: req.cap_drop.clone(),
        seccomp: None,
        no_new_privileges: true,
        readonly_rootfs: req.read_only,
        group_add: check_groups(&req.group_add)?,
        groups_policy: req.groups_policy,
        masked_paths: check_paths("masked_paths", &req.masked_paths)?,
        readonly_paths: check_paths("readonly_paths", &req.readonly_paths)?,
        sysctls: check_sysctls(&req.sysctls, req.network.mode() == "host")?,
    };
    for opt in &req.security_opt {
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match key {
            "seccomp" if value == "unconfined" => sec.seccomp = Some("unconfined".into()),
            "seccomp" if !value.is_empty() => {
                // A path as given to the CLI is read by the CLI; the daemon receives the profile's JSON text.
                serde_json::from_str::<serde_json::Value>(value).map_err(|e| {
                    Error::invalid(
                        "security_opt",
                        format!("the seccomp profile is not valid JSON: {e}"),
                    )
                })?;
                sec.seccomp = Some(value.to_string());
            }
            // Docker's switch for the system paths of `/proc` and `/sys`: nothing masked, nothing made read-only.
            "systempaths" if value == "unconfined" => {
                sec.masked_paths = Some(Vec::new());
                sec.readonly_paths = Some(Vec::new());
            }
            "no-new-privileges" => {
                sec.no_new_privileges = match value {
                    "" | "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::invalid(
                            "security_opt",
                            format!("invalid no-new-privileges value {value:?}: use true or false"),
                        ));
                    }
                }
            }
            _ => {
                return Err(Error::invalid(
                    "security_opt",
                    format!(
                        "unknown security option {opt:?}: use seccomp=unconfined|PROFILE, systempaths=unconfined or no-new-privileges"
                    ),
                ));
            }
        }
    }
    Ok(sec)
}

/// The request's network, plus (with `publish_all`) every port the image exposes, on host ports husk picks.
pub(crate) fn network_with_exposed(
    req: &ContainerCreate,
    image: &Image,
) -> Result<husk_core::NetworkConfig> {
    let mut network = req.network.clone();
    if req.publish_all {
        for exposed in &image.config.exposed_ports {
            let (port, protocol) = exposed.split_once('/').unwrap_or((exposed.as_str(), "tcp"));
            let container_port: u16 = port.parse().map_err(|_| {
                Error::invalid(
                    "publish_all",
                    format!("the image exposes {exposed:?}, which is not a port"),
                )
            })?;
            let protocol: husk_core::PortProtocol = protocol.parse().map_err(|_| {
                Error::invalid(
                    "publish_all",
                    format!("the image exposes {exposed:?}, whose protocol is not tcp or udp"),
                )
            })?;
            if network
                .ports
                .iter()
                .any(|p| p.container_port == container_port && p.protocol == protocol)
            {
                continue;
            }
            network.ports.push(husk_core::PortMapping {
                host_ip: String::new(),
                host_port: 0,
                container_port,
                protocol,
            });
        }
    }
    Ok(network)
}

/// The container config for `req` on `image`.
pub(crate) fn container_config(
    req: &ContainerCreate,
    id: &str,
    name: &str,
    image: &Image,
) -> Result<ContainerConfig> {
    let ic = &image.config;
    let entrypoint = req
        .entrypoint
        .clone()
        .unwrap_or_else(|| ic.entrypoint.clone());
    let cmd = match &req.command {
        Some(c) if !c.is_empty() => c.clone(),
        // Docker drops the image's CMD when the entrypoint is replaced.
        _ if req.entrypoint.is_some() => Vec::new(),
        _ => ic.cmd.clone(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::invalid(
            "command",
            "no command specified: the image has no Cmd or Entrypoint and none was given",
        ));
    }
    let cwd = req
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| {
            if ic.working_dir.is_empty() {
                "/".into()
            } else {
                ic.working_dir.clone()
            }
        });
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            "workdir",
            format!("the working directory {cwd:?} is not an absolute path"),
        ));
    }
    if let Some(h) = &req.hostname {
        units::validate_hostname(h)?;
    }
    validate_resources(&req.resources)?;
    let stop_signal = match req.stop_signal.as_deref().or(ic.stop_signal.as_deref()) {
        Some(s) => {
            Some(units::parse_signal(s).map_err(|e| Error::invalid("stop_signal", e.message))?)
        }
        None => None,
    };
    for m in &req.mounts {
        if !m.destination.starts_with('/') {
            return Err(Error::invalid(
                "mounts",
                format!(
                    "mount destination {:?} is not an absolute path",
                    m.destination
                ),
            ));
        }
    }
    Ok(ContainerConfig {
        id: id.to_string(),
        name: name.to_string(),
        image: ImageRef {
            name: image.display_name(),
            id: image.id.clone(),
        },
        process: ProcessConfig {
            args,
            env: merge_env(&ic.env, &req.env)?,
            cwd,
            user: req.user.clone().unwrap_or_else(|| ic.user.clone()),
            tty: req.tty,
            stdin: req.stdin,
        },
        hostname: req.hostname.clone().unwrap_or_default(),
        resources: Resources {
            oom_score_adj: req
                .resources
                .oom_score_adj
                .map(|o| units::restrict_oom_score_adj(o, units::daemon_oom_score_adj())),
            ..req.resources.clone()
        },
        security: parse_security(req)?,
        mounts: req.mounts.clone(),
        network: network_with_exposed(req, image)?,
        labels: {
            let mut l = ic.labels.clone();
            l.extend(req.labels.clone());
            l
        },
        stop_signal,
        stop_timeout: req.stop_timeout,
        ulimits: check_ulimits(&req.ulimits)?,
        cri_log_path: match &req.cri_log_path {
            Some(p) if !p.starts_with('/') => {
                return Err(Error::invalid(
                    "cri_log_path",
                    format!("the CRI log path {p:?} is not absolute"),
                ));
            }
            other => other.clone(),
        },
        devices: check_devices(&req.devices)?,
        // The sandbox's, set by the engine once it knows the sandbox.
        cgroup_parent: None,
        log: LogLimits::from_opts(&req.log_opts)?,
    })
}

/// A container's log limits: those of its request, the daemon's `defaults` for what the request leaves unset.
pub(crate) fn log_limits(requested: LogLimits, defaults: LogLimits) -> Result<LogLimits> {
    let limits = requested.or(defaults);
    if limits.max_files.is_some() && limits.max_size_bytes.is_none() {
        return Err(Error::invalid(
            "log-opt max-file",
            "log-opt max-file needs log-opt max-size (or the daemon's [logs] max_size)",
        ));
    }
    Ok(limits)
}

/// `--group-add` entries: group names or numbers.
fn check_groups(groups: &[String]) -> Result<Vec<String>> {
    for g in groups {
        let ok = !g.is_empty()
            && g.len() <= 256
            && !g.contains([':', '\n', '/'])
            && (g.parse::<u32>().is_ok() || !g.starts_with(|c: char| c.is_ascii_digit()));
        if !ok {
            return Err(Error::invalid(
                "group_add",
                format!("invalid group {g:?}: use a group name or a number"),
            ));
        }
    }
    Ok(groups.to_vec())
}

/// The daemon's own hard limit of the resource named `name` (`None` = unlimited).
fn daemon_hard_limit(name: &str) -> Option<u64> {
    use rustix::process::Resource as R;
    let resource = match name {
        "as" => R::As,
        "core" => R::Core,
        "cpu" => R::Cpu,
        "data" => R::Data,
        "fsize" => R::Fsize,
        "locks" => R::Locks,
        "memlock" => R::Memlock,
        "msgqueue" => R::Msgqueue,
        "nice" => R::Nice,
        "nofile" => R::Nofile,
        "nproc" => R::Nproc,
        "rss" => R::Rss,
        "rtprio" => R::Rtprio,
        "rttime" => R::Rttime,
        "sigpending" => R::Sigpending,
        _ => R::Stack,
    };
    rustix::process::getrlimit(resource).maximum
}

/// Checks `--ulimit`s: known names, soft within hard, one per resource, and never above the daemon's own hard
/// limit. A container's processes descend from the daemon: raising a hard limit needs CAP_SYS_RESOURCE, which
/// husk does not rely on (hosts such as CI machines drop it from the bounding set), so such a request would
/// only fail later, at start, with a less useful message.
/// Absolute paths without `..`, for masked and read-only path lists.
fn check_paths(field: &str, paths: &Option<Vec<String>>) -> Result<Option<Vec<String>>> {
    if let Some(list) = paths {
        for p in list {
            if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p.contains('\0') {
                return Err(Error::invalid(
                    field,
                    format!("{p:?} is not an absolute path inside the container"),
                ));
            }
        }
    }
    Ok(paths.clone())
}

/// Kernel parameters a container may set: those its own namespaces scope (as runc and Docker allow), never
/// `net.*` on the host's network.
fn check_sysctls(
    sysctls: &std::collections::BTreeMap<String, String>,
    host_network: bool,
) -> Result<std::collections::BTreeMap<String, String>> {
    for (key, value) in sysctls {
        let ipc = matches!(
            key.as_str(),
            "kernel.sem" | "kernel.shmall" | "kernel.shmmax"
        ) || key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        if !(ipc || net) || key.contains('/') || key.contains("..") {
            return Err(Error::invalid(
                "sysctls",
                format!(
                    "sysctl {key:?} is not namespaced: only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set for a container"
                ),
            ));
        }
        if net && host_network {
            return Err(Error::invalid(
                "sysctls",
                format!(
                    "sysctl {key:?} would change the host's network: not with network mode host"
                ),
            ));
        }
        if value.contains(['\n', '\0']) {
            return Err(Error::invalid(
                "sysctls",
                format!("sysctl {key:?} has an invalid value"),
            ));
        }
    }
    Ok(sysctls.clone())
}

pub(crate) fn check_ulimits(ulimits: &[Ulimit]) -> Result<Vec<Ulimit>> {
    let mut seen = std::collections::BTreeSet::new();
    for u in ulimits {
        u.check()?;
        if !seen.insert(u.name.as_str()) {
            return Err(Error::invalid(
                "ulimits",
                format!("ulimit {} is given twice", u.name),
            ));
        }
        if let Some(max) = daemon_hard_limit(&u.name)
            && Ulimit::as_u64(u.hard) > max
        {
            return Err(Error::invalid(
                "ulimits",
                format!(
                    "ulimit {}: the hard limit {} is above the daemon's own hard limit {max}; husk cannot raise limits above its own, use at most {max}",
                    u.name,
                    Ulimit::show(u.hard)
                ),
            ));
        }
    }
    Ok(ulimits.to_vec())
}

fn parse_duration_field(field: &str, value: &Option<String>) -> Result<Option<i64>> {
    match value.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => {
            let ns = units::parse_duration(text).map_err(|e| Error::invalid(field, e.message))?;
            if ns < 0 {
                return Err(Error::invalid(field, format!("{field} cannot be negative")));
            }
            Ok(Some(ns))
        }
    }
}

/// The health check of a container: the request's fields over the image's HEALTHCHECK over Docker's defaults.
/// `None` when neither has one, or the request says `NONE`.
pub(crate) fn healthcheck(
    req: Option<&HealthcheckRequest>,
    image: &Image,
) -> Result<Option<HealthConfig>> {
    let from_image = image.config.healthcheck.as_ref();
    let empty = HealthcheckRequest::default();
    let r = req.unwrap_or(&empty);
    let test = if r.test.is_empty() {
        from_image.map(|h| h.test.clone()).unwrap_or_default()
    } else {
        r.test.clone()
    };
    let options_given = r.interval.is_some()
        || r.timeout.is_some()
        || r.start_period.is_some()
        || r.retries.is_some()
        || r.on_failure.is_some();
    if test.is_empty() && options_given {
        return Err(Error::invalid(
            "healthcheck",
            "health check options were given but no health check command (--health-cmd), and the image has none",
        ));
    }
    if test.is_empty() || test.first().is_some_and(|t| t == "NONE") {
        return Ok(None);
    }
    let pick = |ours: Option<i64>, image: Option<i64>, default: i64| {
        ours.or(image.filter(|v| *v > 0)).unwrap_or(default)
    };
    let config = HealthConfig {
        test,
        interval_ns: pick(
            parse_duration_field("health_interval", &r.interval)?,
            from_image.map(|h| h.interval),
            DEFAULT_INTERVAL_NS,
        ),
        timeout_ns: pick(
            parse_duration_field("health_timeout", &r.timeout)?,
            from_image.map(|h| h.timeout),
            DEFAULT_TIMEOUT_NS,
        ),
        start_period_ns: pick(
            parse_duration_field("health_start_period", &r.start_period)?,
            from_image.map(|h| h.start_period),
            0,
        ),
        start_interval_ns: pick(
            parse_duration_field("health_start_interval", &r.start_interval)?,
            from_image.map(|h| h.start_interval),
            DEFAULT_START_INTERVAL_NS,
        ),
        retries: r
            .retries
            .or(from_image
                .map(|h| h.retries)
                .filter(|n| *n > 0)
                .map(|n| n.min(u32::MAX as i64) as u32))
            .unwrap_or(DEFAULT_RETRIES),
        on_failure: HealthAction::parse(r.on_failure.as_deref().unwrap_or(""))?,
    };
    config.check()?;
    Ok(Some(config))
}

/// The process of an exec in `container`.
pub(crate) fn exec_process(container: &ContainerConfig, req: &ExecCreate) -> Result<ProcessConfig> {
    if req.command.is_empty() {
        return Err(Error::invalid("command", "no command given to exec"));
    }
    let cwd = req
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| container.process.cwd.clone());
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            "workdir",
            format!("the working directory {cwd:?} is not an absolute path"),
        ));
    }
    Ok(ProcessConfig {
        args: req.command.clone(),
        env: merge_env(&container.process.env, &req.env)?,
        cwd,
        user: req
            .user
            .clone()
            .unwrap_or_else(|| container.process.user.clone()),
        tty: req.tty,
        stdin: req.stdin,
    })
}

#[cfg(test)]
mod tests;
