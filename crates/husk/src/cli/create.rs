//! From `run`/`create` flags to the engine's create request: labels, environment, networks, mounts, limits,
//! health checks.

use super::*;

pub(crate) fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !l.is_empty() => Ok((l.clone(), String::new())),
            _ => Err(anyhow!("invalid label {l:?}: use KEY=VALUE")),
        })
        .collect()
}

/// `-e KEY` takes KEY from this shell (skipped if unset), as Docker does; `--env-file` lines likewise.
pub(super) fn resolve_env(env: &[String], files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |e: &str| {
        if e.contains('=') {
            out.push(e.to_string());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    };
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("read env file {}", f.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            add(line);
        }
    }
    for e in env {
        add(e);
    }
    Ok(out)
}

pub(super) fn network_config(
    network: Option<String>,
    publish: &[String],
    dns: &[String],
    dns_search: &[String],
    add_host: &[String],
) -> Result<NetworkConfig> {
    Ok(NetworkConfig {
        mode: network.unwrap_or_default(),
        ports: publish
            .iter()
            .map(|p| PortMapping::parse(p))
            .collect::<husk_core::Result<_>>()?,
        dns: dns.to_vec(),
        dns_search: dns_search.to_vec(),
        dns_options: Vec::new(),
        extra_hosts: add_host.to_vec(),
    })
}

pub(super) fn read_security_opts(opts: &[String]) -> Result<Vec<String>> {
    // A seccomp profile given as a file is read here and sent as JSON.
    opts.iter()
        .map(|o| match o.split_once(['=', ':']) {
            Some(("seccomp", v)) if v != "unconfined" && !v.trim_start().starts_with('{') => {
                let text = std::fs::read_to_string(v)
                    .with_context(|| format!("read seccomp profile {v}"))?;
                Ok(format!("seccomp={text}"))
            }
            _ => Ok(o.clone()),
        })
        .collect()
}

pub(super) fn create_request(a: &RunArgs) -> Result<ContainerCreate> {
    Ok(ContainerCreate {
        name: a.name.clone(),
        image: a.image.clone(),
        command: if a.command.is_empty() {
            None
        } else {
            Some(a.command.clone())
        },
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env: resolve_env(&a.env, &a.env_file)?,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        stdin: a.interactive,
        resources: Resources {
            shm_size_bytes: a
                .shm_size
                .as_deref()
                .map(|s| units::parse_memory("shm_size", s))
                .transpose()?,
            oom_score_adj: a.oom_score_adj,
            ..with_cpu_placement(
                limits(a.memory.as_deref(), a.cpus.as_deref(), a.pids_limit)?,
                &a.cpu_placement,
            )
        },
        devices: a
            .devices
            .iter()
            .map(|d| husk_core::DeviceMapping::parse(d))
            .collect::<husk_core::Result<_>>()?,
        log_opts: a
            .log_opts
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(anyhow!("invalid --log-opt {o:?}: use KEY=VALUE")),
            })
            .collect::<Result<_>>()?,
        restart_policy: a
            .restart
            .as_deref()
            .map(RestartPolicy::parse)
            .transpose()?
            .unwrap_or_default(),
        auto_remove: a.rm,
        mode: a.mode.as_deref().map(str::parse).transpose()?,
        sandbox: a.sandbox.clone(),
        driver: a.driver.clone(),
        share_pid: a.share_pid,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        security_opt: read_security_opts(&a.security_opt)?,
        read_only: a.read_only,
        labels: parse_labels(&a.labels)?,
        mounts: mounts(a)?,
        network: network_config(
            a.network.clone(),
            &a.publish,
            &a.dns,
            &a.dns_search,
            &a.add_host,
        )?,
        publish_all: a.publish_all,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        pull: a.pull.parse()?,
        init: a.init,
        ulimits: a
            .ulimits
            .iter()
            .map(|u| husk_core::Ulimit::parse(u))
            .collect::<husk_core::Result<_>>()?,
        group_add: a.group_add.clone(),
        healthcheck: healthcheck(a)?,
        ..Default::default()
    })
}

/// `-v`, `--mount` and `--tmpfs`, in that order; a relative bind source is made absolute here (it means a path
/// of this shell's).
pub(super) fn mounts(a: &RunArgs) -> Result<Vec<MountConfig>> {
    let mut out = Vec::new();
    for v in &a.volumes {
        out.push(MountConfig::parse_volume_flag(v)?);
    }
    for m in &a.mounts {
        out.push(MountConfig::parse_mount_flag(m)?);
    }
    for t in &a.tmpfs {
        out.push(MountConfig::parse_tmpfs_flag(t)?);
    }
    for m in out
        .iter_mut()
        .filter(|m| m.kind == husk_core::MountKind::Bind)
    {
        if m.source.starts_with('~') {
            let home =
                std::env::var("HOME").context("expand ~ in a bind source: HOME is not set")?;
            m.source = m.source.replacen('~', &home, 1);
        }
        if !m.source.starts_with('/') {
            let cwd = std::env::current_dir().context("find the current directory")?;
            m.source = cwd.join(&m.source).display().to_string();
        }
    }
    Ok(out)
}

/// The `--health-*` flags (`None` when none is given: the image's check applies).
pub(super) fn healthcheck(a: &RunArgs) -> Result<Option<HealthcheckRequest>> {
    if a.no_healthcheck {
        if a.health_cmd.is_some() {
            bail!("conflicting options: --no-healthcheck and --health-cmd");
        }
        return Ok(Some(HealthcheckRequest {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    let r = HealthcheckRequest {
        test: a
            .health_cmd
            .as_ref()
            .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
            .unwrap_or_default(),
        interval: a.health_interval.clone(),
        timeout: a.health_timeout.clone(),
        start_period: a.health_start_period.clone(),
        start_interval: a.health_start_interval.clone(),
        retries: a.health_retries,
        on_failure: a.health_on_failure.clone(),
    };
    Ok(if r == HealthcheckRequest::default() {
        None
    } else {
        Some(r)
    })
}

/// Limits from the command line's `--memory`, `--cpus` and `--pids-limit`.
pub(super) fn limits(
    memory: Option<&str>,
    cpus: Option<&str>,
    pids_limit: Option<i64>,
) -> Result<Resources> {
    Ok(Resources {
        memory_bytes: memory
            .map(|m| units::parse_memory("memory", m))
            .transpose()?,
        nano_cpus: cpus.map(units::parse_cpus).transpose()?,
        pids_limit,
        ..Default::default()
    })
}

/// `limits` with the command line's `--cpu-shares`, `--cpuset-cpus` and `--cpuset-mems` (the daemon checks them).
pub(super) fn with_cpu_placement(limits: Resources, a: &args::CpuPlacementArgs) -> Resources {
    Resources {
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        ..limits
    }
}
