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
                        "unknown security option {opt:?}: use seccomp=unconfined|PROFILE or no-new-privileges"
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
                protocol: protocol.to_string(),
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
mod tests {
    use super::*;
    use husk_image::RunConfig;

    #[test]
    fn log_limits_take_the_daemons_defaults_for_what_the_request_leaves_unset() {
        let defaults = LogLimits {
            max_size_bytes: Some(1000),
            max_files: Some(2),
        };
        let own = LogLimits {
            max_size_bytes: None,
            max_files: Some(5),
        };
        let l = log_limits(own, defaults).unwrap();
        assert_eq!((l.max_size_bytes, l.max_files), (Some(1000), Some(5)));
        assert!(
            log_limits(LogLimits::default(), LogLimits::default())
                .unwrap()
                .is_unbounded()
        );
        let e = log_limits(own, LogLimits::default()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("log-opt max-file"));
        let mut r = req("x");
        r.log_opts.insert("max-size".into(), "-5".into());
        let e = container_config(&r, "id", "n", &image(&[], &["sh"])).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("log-opt max-size"),
            "{}",
            e.message
        );
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> Image {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut img: Image = serde_json::from_value(serde_json::json!({"Id": "sha256:abc", "RepoTags": ["docker.io/library/busybox:latest"]})).unwrap();
        img.config = RunConfig {
            entrypoint: v(entrypoint),
            cmd: v(cmd),
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: "/srv".into(),
            ..Default::default()
        };
        img
    }

    fn req(image: &str) -> ContainerCreate {
        ContainerCreate {
            image: image.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_weights_and_sets_are_checked() {
        let ok = Resources {
            cpu_shares: Some(512),
            cpuset_cpus: Some("0-1,3".into()),
            cpuset_mems: Some("0".into()),
            ..Default::default()
        };
        assert!(validate_resources(&ok).is_ok());
        let bad_shares = Resources {
            cpu_shares: Some(1),
            ..Default::default()
        };
        assert_eq!(
            validate_resources(&bad_shares)
                .unwrap_err()
                .field
                .as_deref(),
            Some("cpu_shares")
        );
        for set in ["", "0-", "3-1", "a", "0,,1"] {
            let r = Resources {
                cpuset_cpus: Some(set.into()),
                ..Default::default()
            };
            assert_eq!(
                validate_resources(&r).unwrap_err().field.as_deref(),
                Some("cpuset_cpus"),
                "{set:?}"
            );
        }
    }

    #[test]
    fn entrypoint_and_cmd_like_docker() {
        let img = image(&["/entry"], &["default"]);
        let c = container_config(&req("x"), "id", "n", &img).unwrap();
        assert_eq!(c.process.args, vec!["/entry", "default"]);
        let mut r = req("x");
        r.command = Some(vec!["other".into()]);
        assert_eq!(
            container_config(&r, "id", "n", &img).unwrap().process.args,
            vec!["/entry", "other"]
        );
        let mut r = req("x");
        r.entrypoint = Some(vec!["/bin/sh".into()]);
        assert_eq!(
            container_config(&r, "id", "n", &img).unwrap().process.args,
            vec!["/bin/sh"],
            "CMD dropped with a new entrypoint"
        );
        let mut r = req("x");
        r.entrypoint = Some(vec![]);
        r.command = Some(vec!["echo".into(), "hi".into()]);
        assert_eq!(
            container_config(&r, "id", "n", &img).unwrap().process.args,
            vec!["echo", "hi"]
        );
        let empty = image(&[], &[]);
        assert_eq!(
            container_config(&req("x"), "id", "n", &empty)
                .unwrap_err()
                .field
                .as_deref(),
            Some("command")
        );
    }

    #[test]
    fn env_workdir_user_merge() {
        let img = image(&[], &["sh"]);
        let mut r = req("x");
        r.env = vec!["A=2".into(), "B=3".into()];
        r.user = Some("nobody".into());
        let c = container_config(&r, "id", "n", &img).unwrap();
        assert_eq!(c.process.env, vec!["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(c.process.cwd, "/srv");
        assert_eq!(c.process.user, "nobody");
        let mut r = req("x");
        r.env = vec!["=bad".into()];
        assert_eq!(
            container_config(&r, "id", "n", &img)
                .unwrap_err()
                .field
                .as_deref(),
            Some("env")
        );
        let mut r = req("x");
        r.workdir = Some("rel".into());
        assert_eq!(
            container_config(&r, "id", "n", &img)
                .unwrap_err()
                .field
                .as_deref(),
            Some("workdir")
        );
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(
            validate_resources(&Resources {
                memory_bytes: Some(1024),
                ..Default::default()
            })
            .unwrap_err()
            .field
            .as_deref(),
            Some("memory")
        );
        assert_eq!(
            validate_resources(&Resources {
                nano_cpus: Some(1_000_000_000_000),
                ..Default::default()
            })
            .unwrap_err()
            .field
            .as_deref(),
            Some("cpus")
        );
        assert!(
            validate_resources(&Resources {
                pids_limit: Some(0),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            validate_resources(&Resources {
                memory_bytes: Some(64 << 20),
                nano_cpus: Some(500_000_000),
                pids_limit: Some(-1),
                shm_size_bytes: Some(128 << 20),
                ..Default::default()
            })
            .is_ok()
        );
        let e = validate_resources(&Resources {
            shm_size_bytes: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("shm_size"));
    }

    #[test]
    fn new_limits_are_checked() {
        let field = |r: Resources| validate_resources(&r).unwrap_err().field;
        assert_eq!(
            field(Resources {
                oom_score_adj: Some(1001),
                ..Default::default()
            })
            .as_deref(),
            Some("oom_score_adj")
        );
        assert_eq!(
            field(Resources {
                memory_swap_bytes: Some(1 << 30),
                ..Default::default()
            })
            .as_deref(),
            Some("memory_swap")
        );
        assert_eq!(
            field(Resources {
                memory_bytes: Some(1 << 30),
                memory_swap_bytes: Some(1 << 29),
                ..Default::default()
            })
            .as_deref(),
            Some("memory_swap")
        );
        assert_eq!(
            field(Resources {
                hugepage_limits: [("2M".to_string(), 1 << 21)].into(),
                ..Default::default()
            })
            .as_deref(),
            Some("hugepage_limits")
        );
        assert_eq!(
            field(Resources {
                unified: [("../memory.max".to_string(), "1".to_string())].into(),
                ..Default::default()
            })
            .as_deref(),
            Some("unified")
        );
        validate_resources(&Resources {
            memory_bytes: Some(1 << 30),
            memory_swap_bytes: Some(-1),
            oom_score_adj: Some(-1000),
            hugepage_limits: [("2MB".to_string(), 1 << 21)].into(),
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn oom_score_adj_is_restricted_to_the_daemons() {
        let img = image(&[], &["sh"]);
        let mut r = req("x");
        r.resources.oom_score_adj = Some(-1000);
        let own = units::daemon_oom_score_adj();
        let c = container_config(&r, "id", "n", &img).unwrap();
        assert_eq!(c.resources.oom_score_adj, Some(own.max(-1000)));
        r.resources.oom_score_adj = Some(1000);
        let c = container_config(&r, "id", "n", &img).unwrap();
        assert_eq!(c.resources.oom_score_adj, Some(1000));
    }

    #[test]
    fn devices_must_be_device_nodes() {
        let null = |container: &str, permissions: &str| DeviceMapping {
            host_path: "/dev/null".into(),
            container_path: container.into(),
            permissions: permissions.into(),
            ..Default::default()
        };
        let found = check_devices(&[null("/dev/n", "rw")]).unwrap();
        assert_eq!(
            (found[0].kind.as_str(), found[0].major, found[0].minor),
            ("c", 1, 3)
        );
        assert_eq!(found[0].file_mode & 0o666, 0o666);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let bad = [
            vec![DeviceMapping {
                host_path: file.display().to_string(),
                ..Default::default()
            }],
            vec![DeviceMapping {
                host_path: dir.path().join("missing").display().to_string(),
                ..Default::default()
            }],
            vec![null("/dev/n", "rx")],
            vec![null("/dev/n", ""), null("/dev/n", "r")],
        ];
        for devices in bad {
            let e = check_devices(&devices).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("devices"), "{}", e.message);
            assert!(e.message.starts_with("devices: "), "{}", e.message);
        }
    }

    #[test]
    fn security_options() {
        let img = image(&[], &["sh"]);
        let mut r = req("x");
        r.security_opt = vec![
            "seccomp=unconfined".into(),
            "no-new-privileges=false".into(),
        ];
        let c = container_config(&r, "id", "n", &img).unwrap();
        assert_eq!(c.security.seccomp.as_deref(), Some("unconfined"));
        assert!(!c.security.no_new_privileges);
        let mut r = req("x");
        r.security_opt = vec!["apparmor=x".into()];
        assert_eq!(
            container_config(&r, "id", "n", &img)
                .unwrap_err()
                .field
                .as_deref(),
            Some("security_opt")
        );
        let mut r = req("x");
        r.stop_signal = Some("NOPE".into());
        assert_eq!(
            container_config(&r, "id", "n", &img)
                .unwrap_err()
                .field
                .as_deref(),
            Some("stop_signal")
        );
    }

    #[test]
    fn ulimits_are_checked_against_the_daemons_own() {
        let ok = check_ulimits(&[Ulimit::parse("nofile=64:128").unwrap()]).unwrap();
        assert_eq!(ok.len(), 1);
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .expect("a finite nofile hard limit");
        let above = Ulimit {
            name: "nofile".into(),
            soft: 1,
            hard: hard as i64 + 1,
        };
        let e = check_ulimits(&[above]).unwrap_err();
        assert!(
            e.message.contains("daemon's own hard limit"),
            "{}",
            e.message
        );
        let twice = [
            Ulimit::parse("core=0").unwrap(),
            Ulimit::parse("core=1").unwrap(),
        ];
        assert!(check_ulimits(&twice).is_err());
    }

    #[test]
    fn health_checks_merge_the_request_over_the_image() {
        let mut img = image(&[], &["sh"]);
        assert_eq!(healthcheck(None, &img).unwrap(), None);
        img.config.healthcheck = Some(husk_image::Healthcheck {
            test: vec!["CMD-SHELL".into(), "check".into()],
            interval: 2_000_000_000,
            retries: 5,
            ..Default::default()
        });
        let h = healthcheck(None, &img).unwrap().unwrap();
        assert_eq!(
            (h.interval_ns, h.retries, h.timeout_ns),
            (2_000_000_000, 5, DEFAULT_TIMEOUT_NS)
        );
        let r = HealthcheckRequest {
            test: vec!["CMD".into(), "true".into()],
            interval: Some("250ms".into()),
            on_failure: Some("kill".into()),
            ..Default::default()
        };
        let h = healthcheck(Some(&r), &img).unwrap().unwrap();
        assert_eq!(h.test, vec!["CMD", "true"]);
        assert_eq!(
            (h.interval_ns, h.retries),
            (250_000_000, 5),
            "unset fields keep the image's"
        );
        assert_eq!(h.on_failure, HealthAction::Kill);
        let none = HealthcheckRequest {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(healthcheck(Some(&none), &img).unwrap(), None);
        let plain = image(&[], &["sh"]);
        let orphan = HealthcheckRequest {
            retries: Some(2),
            ..Default::default()
        };
        assert_eq!(
            healthcheck(Some(&orphan), &plain)
                .unwrap_err()
                .field
                .as_deref(),
            Some("healthcheck")
        );
        let bad = HealthcheckRequest {
            test: vec!["CMD".into(), "true".into()],
            interval: Some("soon".into()),
            ..Default::default()
        };
        assert!(healthcheck(Some(&bad), &img).is_err());
    }
}
