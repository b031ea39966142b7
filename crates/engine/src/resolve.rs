//! Turning a request and an image into a complete container config: every validation rule lives here.

use husk_core::units::{self, MIN_MEMORY_BYTES};
use husk_core::{
    ContainerConfig, Error, ImageRef, ProcessConfig, Resources, Result, SecurityConfig,
};
use husk_image::Image;

use crate::requests::{ContainerCreate, ExecCreate};

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
    Ok(())
}

fn parse_security(req: &ContainerCreate) -> Result<SecurityConfig> {
    let mut sec = SecurityConfig {
        privileged: req.privileged,
        cap_add: req.cap_add.clone(),
        cap_drop: req.cap_drop.clone(),
        seccomp: None,
        no_new_privileges: true,
        readonly_rootfs: req.read_only,
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
        resources: req.resources.clone(),
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
    })
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
                pids_limit: Some(-1)
            })
            .is_ok()
        );
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
}
