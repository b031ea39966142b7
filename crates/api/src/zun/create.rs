//! `POST /v1/containers`: Zun's create body, its schema rules and microversion gates, translated into the
//! engine's [`ContainerCreate`].

use std::collections::BTreeMap;

use husk_api_types::ContainerCreate;
use husk_core::{PortMapping, PortProtocol, Resources, RestartPolicy};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::context::Context;
use super::error::{ZunError, ZunResult};
use super::version::Version;
use super::view::keys;

/// Zun's `restart_policy`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicyBody {
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Retries for on-failure (integer or digits).
    #[serde(rename = "MaximumRetryCount", default)]
    #[schema(value_type = Option<String>)]
    pub maximum_retry_count: Option<Value>,
}

/// One requested network.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetBody {
    /// Network name.
    pub network: Option<String>,
    /// A Neutron port (not available).
    pub port: Option<String>,
    /// Fixed IPv4 address (not available).
    #[serde(rename = "v4-fixed-ip")]
    pub v4_fixed_ip: Option<String>,
    /// Fixed IPv6 address (not available).
    #[serde(rename = "v6-fixed-ip")]
    pub v6_fixed_ip: Option<String>,
}

/// One requested mount.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MountBody {
    /// `volume` or `bind`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Volume name.
    pub source: Option<String>,
    /// Path in the container.
    pub destination: Option<String>,
    /// Size of a new volume.
    #[schema(value_type = Option<String>)]
    pub size: Option<Value>,
}

/// Zun's create body (fields as of 1.40; older versions refuse the newer ones).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Name (`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, 2 to 255 characters).
    pub name: Option<String>,
    /// Image.
    pub image: String,
    /// Command: a list (a shell-quoted string before 1.20).
    #[schema(value_type = Option<Vec<String>>)]
    pub command: Option<Value>,
    /// CPUs (0.1 to 16).
    #[schema(value_type = Option<f64>)]
    pub cpu: Option<Value>,
    /// `shared` or `dedicated`.
    pub cpu_policy: Option<String>,
    /// Memory in MiB (4 to 8192).
    #[schema(value_type = Option<String>)]
    pub memory: Option<Value>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Remove when it exits (1.3).
    #[schema(value_type = Option<bool>)]
    pub auto_remove: Option<Value>,
    /// `never`, `always` or `ifnotpresent`.
    pub image_pull_policy: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Environment.
    pub environment: Option<BTreeMap<String, String>>,
    /// Restart policy.
    pub restart_policy: Option<RestartPolicyBody>,
    /// Keep stdin open.
    #[schema(value_type = Option<bool>)]
    pub interactive: Option<Value>,
    /// Allocate a terminal (1.36).
    #[schema(value_type = Option<bool>)]
    pub tty: Option<Value>,
    /// `docker`.
    pub image_driver: Option<String>,
    /// Security groups (not available).
    pub security_groups: Option<Vec<String>>,
    /// Scheduler hints.
    pub hints: Option<BTreeMap<String, Value>>,
    /// Volumes (1.11).
    pub mounts: Option<Vec<MountBody>>,
    /// Networks (1.2).
    pub nets: Option<Vec<NetBody>>,
    /// `runc`, `docker` or `kata` (1.5, administrators).
    pub runtime: Option<String>,
    /// Hostname (1.9).
    pub hostname: Option<String>,
    /// Disk in GiB (not available: no disk quotas).
    #[schema(value_type = Option<i64>)]
    pub disk: Option<Value>,
    /// Availability zone.
    pub availability_zone: Option<String>,
    /// Heal when lost (not available).
    #[schema(value_type = Option<bool>)]
    pub auto_heal: Option<Value>,
    /// Privileged (1.21, local root only).
    #[schema(value_type = Option<bool>)]
    pub privileged: Option<Value>,
    /// Health check (1.22, not available).
    pub healthcheck: Option<BTreeMap<String, Value>>,
    /// Ports to publish, `{"80/tcp": {}}` (1.24).
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// Registry (1.31, not available).
    pub registry: Option<String>,
    /// Host to run on (1.39, administrators).
    pub host: Option<String>,
    /// Entrypoint (1.40).
    pub entrypoint: Option<Vec<String>>,
}

/// The availability zone husk reports.
pub const AVAILABILITY_ZONE: &str = "nova";

/// Zun's default CPUs and memory (MiB) for a container that names none.
pub const DEFAULT_CPU: f64 = 1.0;
/// Default memory in MiB.
pub const DEFAULT_MEMORY_MIB: i64 = 512;

/// Checks a container name against Zun's schema.
pub fn check_name(field: &str, name: &str) -> ZunResult<()> {
    let ok = (2..=255).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ZunError::invalid(
            field,
            format!("{name:?} does not match '^[a-zA-Z0-9][a-zA-Z0-9_.-]+$' (2 to 255 characters)"),
        ))
    }
}

/// A Zun boolean: `true`/`false` or the strings `True`, `true`, `False`, `false`.
pub fn zun_bool(field: &str, v: &Value) -> ZunResult<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "True" || s == "true" => Ok(true),
        Value::String(s) if s == "False" || s == "false" => Ok(false),
        other => Err(ZunError::invalid(
            field,
            format!("{other} is not a boolean"),
        )),
    }
}

fn opt_bool(field: &str, v: &Option<Value>) -> ZunResult<Option<bool>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => zun_bool(field, v).map(Some),
    }
}

/// CPUs: a number or a decimal string, 0.1 to 16.
pub fn zun_cpu(field: &str, v: &Value) -> ZunResult<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s)
            if !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && s.matches('.').count() <= 1 =>
        {
            s.parse().ok()
        }
        _ => None,
    }
    .ok_or_else(|| ZunError::invalid(field, format!("{v} is not a number of CPUs")))?;
    if !(0.1..=16.0).contains(&n) {
        return Err(ZunError::invalid(
            field,
            format!("{n} is outside the range 0.1 to 16"),
        ));
    }
    Ok(n)
}

/// A number of CPUs (checked by [`zun_cpu`]) in billionths, the engine's unit.
pub fn nano_cpus(cpus: f64) -> i64 {
    (cpus * 1e9).round() as i64
}

/// An integer given as a number or digits, within `min..=max`.
pub fn zun_int(field: &str, v: &Value, min: i64, max: i64) -> ZunResult<i64> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    }
    .ok_or_else(|| ZunError::invalid(field, format!("{v} is not an integer")))?;
    if n < min || n > max {
        return Err(ZunError::invalid(
            field,
            format!("{n} is outside the range {min} to {max}"),
        ));
    }
    Ok(n)
}

/// Memory in MiB, 4 to 8192.
pub fn zun_memory(field: &str, v: &Value) -> ZunResult<i64> {
    zun_int(field, v, 4, 8192)
}

fn restart_policy(body: &RestartPolicyBody) -> ZunResult<RestartPolicy> {
    let retries = match &body.maximum_retry_count {
        None | Some(Value::Null) => 0,
        Some(v) => zun_int(
            "restart_policy.MaximumRetryCount",
            v,
            0,
            i64::from(u32::MAX),
        )?,
    };
    match body.name.as_str() {
        "no" | "always" | "unless-stopped" if retries != 0 => Err(ZunError::invalid(
            "restart_policy.MaximumRetryCount",
            format!("must be 0 with restart policy {:?}", body.name),
        )),
        "no" => Ok(RestartPolicy::No),
        "always" => Ok(RestartPolicy::Always),
        "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
        "on-failure" => Ok(RestartPolicy::OnFailure {
            max_retries: retries as u32,
        }),
        other => Err(ZunError::invalid(
            "restart_policy.Name",
            format!("{other:?} is not one of no, always, on-failure, unless-stopped"),
        )),
    }
}

/// The driver a Zun `runtime` names.
pub fn driver_of_runtime(runtime: &str) -> ZunResult<&'static str> {
    match runtime {
        "runc" | "linux" => Ok("linux"),
        "docker" => Ok("docker"),
        "kata" | "vm" => Ok("vm"),
        other => Err(ZunError::invalid(
            "runtime",
            format!("unknown runtime {other:?}: use runc, docker or kata"),
        )),
    }
}

/// Splits a shell-quoted command as Zun's clients write it (`"echo" "hello"`).
pub fn split_command(field: &str, text: &str) -> ZunResult<Vec<String>> {
    shlex::split(text).filter(|v| !v.is_empty()).ok_or_else(|| {
        ZunError::invalid(
            field,
            format!("{text:?} is not a valid shell-quoted command"),
        )
    })
}

fn command(v: &Value, version: Version) -> ZunResult<Option<Vec<String>>> {
    let list_since = Version::new(1, 20);
    match v {
        Value::Null => Ok(None),
        Value::Array(items) if version >= list_since => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                other => Err(ZunError::invalid(
                    "command",
                    format!("{other} is not a string"),
                )),
            })
            .collect::<ZunResult<Vec<_>>>()
            .map(Some),
        Value::String(s) if version < list_since => split_command("command", s).map(Some),
        other if version >= list_since => Err(ZunError::invalid(
            "command",
            format!("{other} is not a list of strings (API {version})"),
        )),
        other => Err(ZunError::invalid(
            "command",
            format!("{other} is not a string (API {version}; lists from 1.20)"),
        )),
    }
}

/// Rejects fields newer than `version`.
fn version_gates(b: &CreateBody, version: Version) -> ZunResult<()> {
    let gates: [(&str, bool, u16); 13] = [
        ("nets", b.nets.is_some(), 2),
        ("auto_remove", b.auto_remove.is_some(), 3),
        ("runtime", b.runtime.is_some(), 5),
        ("hostname", b.hostname.is_some(), 9),
        (
            "mounts",
            b.mounts.as_ref().is_some_and(|m| !m.is_empty()),
            11,
        ),
        ("privileged", b.privileged.is_some(), 21),
        (
            "healthcheck",
            b.healthcheck.as_ref().is_some_and(|h| !h.is_empty()),
            22,
        ),
        ("exposed_ports", b.exposed_ports.is_some(), 24),
        ("cpu_policy", b.cpu_policy.is_some(), 28),
        ("registry", b.registry.is_some(), 31),
        ("tty", b.tty.is_some(), 36),
        ("host", b.host.is_some(), 39),
        ("entrypoint", b.entrypoint.is_some(), 40),
    ];
    for (field, present, minor) in gates {
        if present {
            version.require_field(field, Version::new(1, minor))?;
        }
    }
    Ok(())
}

fn unsupported(field: &str, why: &str) -> ZunError {
    ZunError::invalid(field, format!("not supported by husk: {why}"))
}

/// Refuses what husk cannot do, naming the field.
fn refuse_unavailable(b: &CreateBody) -> ZunResult<()> {
    if b.security_groups.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported(
            "security_groups",
            "husk has no Neutron security groups; use exposed_ports",
        ));
    }
    if b.security_groups.is_some() && b.exposed_ports.is_some() {
        return Err(ZunError::bad_request(
            "security_groups and exposed_ports cannot be given together",
        ));
    }
    if b.mounts.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported(
            "mounts",
            "volumes are not available through Zun's API yet",
        ));
    }
    if b.healthcheck.as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported(
            "healthcheck",
            "husk does not run health checks yet",
        ));
    }
    if b.registry.is_some() {
        return Err(unsupported(
            "registry",
            "private registries are not managed through Zun's API",
        ));
    }
    if let Some(d) = &b.disk
        && !d.is_null()
    {
        zun_int("disk", d, 1, 160)?;
        return Err(unsupported(
            "disk",
            "disk quotas need a filesystem with project quotas",
        ));
    }
    if b.cpu_policy.as_deref().is_some_and(|p| p != "shared") {
        return match b.cpu_policy.as_deref() {
            Some("dedicated") => Err(unsupported(
                "cpu_policy",
                "dedicated CPUs (cpusets) are not available",
            )),
            Some(other) => Err(ZunError::invalid(
                "cpu_policy",
                format!("{other:?} is not shared or dedicated"),
            )),
            None => Ok(()),
        };
    }
    if opt_bool("auto_heal", &b.auto_heal)? == Some(true) {
        return Err(unsupported(
            "auto_heal",
            "containers lost by their driver are not recreated",
        ));
    }
    match b.image_driver.as_deref() {
        None | Some("None") | Some("docker") => {}
        Some("glance") => return Err(unsupported("image_driver", "there is no Glance")),
        Some(other) => {
            return Err(ZunError::invalid(
                "image_driver",
                format!("{other:?} is not docker or glance"),
            ));
        }
    }
    Ok(())
}

fn requested_network(b: &CreateBody) -> ZunResult<Option<String>> {
    let nets = b.nets.as_deref().unwrap_or_default();
    if nets.len() > 1 {
        return Err(unsupported("nets", "a container has one network"));
    }
    let Some(n) = nets.first() else {
        return Ok(None);
    };
    if n.port.is_some() || n.v4_fixed_ip.is_some() || n.v6_fixed_ip.is_some() {
        return Err(unsupported(
            "nets",
            "ports and fixed IPs are Neutron's; name a network",
        ));
    }
    match &n.network {
        Some(name) if !name.is_empty() && name.len() <= 255 => Ok(Some(name.clone())),
        _ => Err(ZunError::invalid("nets", "each entry needs a network")),
    }
}

fn exposed_ports(b: &CreateBody) -> ZunResult<Vec<PortMapping>> {
    let mut out = Vec::new();
    for key in b.exposed_ports.iter().flat_map(|m| m.keys()) {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let container_port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            ZunError::invalid("exposed_ports", format!("{key:?} is not PORT[/tcp|udp]"))
        })?;
        let protocol = match proto.parse() {
            Ok(p @ (PortProtocol::Tcp | PortProtocol::Udp)) => p,
            _ => {
                return Err(ZunError::invalid(
                    "exposed_ports",
                    format!("{key:?}: the protocol must be tcp or udp"),
                ));
            }
        };
        // Published on a free host port, as `-P` does: the way into a container from outside its network.
        out.push(PortMapping {
            host_ip: String::new(),
            host_port: 0,
            container_port,
            protocol,
        });
    }
    Ok(out)
}

/// Translates a create body into the engine's request, applying Zun's rules, defaults and policy.
pub fn translate(
    b: &CreateBody,
    version: Version,
    ctx: &Context,
    host: &str,
) -> ZunResult<ContainerCreate> {
    version_gates(b, version)?;
    refuse_unavailable(b)?;
    if let Some(name) = &b.name {
        check_name("name", name)?;
    }
    if b.image.len() < 2
        || b.image.len() > 255
        || !b.image.bytes().any(|c| c.is_ascii_alphanumeric())
    {
        return Err(ZunError::invalid(
            "image",
            format!("{:?} is not an image name (2 to 255 characters)", b.image),
        ));
    }
    let cpu = match &b.cpu {
        None | Some(Value::Null) => DEFAULT_CPU,
        Some(v) => zun_cpu("cpu", v)?,
    };
    let memory = match &b.memory {
        None | Some(Value::Null) => DEFAULT_MEMORY_MIB,
        Some(v) => zun_memory("memory", v)?,
    };
    let mut annotations = BTreeMap::from([
        (keys::USER.to_string(), ctx.user_id.clone()),
        (keys::IMAGE.to_string(), b.image.clone()),
    ]);
    if let Some(p) = &b.image_pull_policy {
        ctx.require_admin("container:create:image_pull_policy")?;
        let p = p.to_ascii_lowercase();
        if !matches!(p.as_str(), "never" | "always" | "ifnotpresent") {
            return Err(ZunError::invalid(
                "image_pull_policy",
                format!("{p:?} is not never, always or ifnotpresent"),
            ));
        }
        annotations.insert(keys::PULL_POLICY.into(), p);
    }
    let pull = match annotations.get(keys::PULL_POLICY).map(String::as_str) {
        Some("always") => husk_api_types::PullPolicy::Always,
        Some("never") => husk_api_types::PullPolicy::Never,
        _ => husk_api_types::PullPolicy::Missing,
    };
    let driver = match &b.runtime {
        Some(r) => {
            ctx.require_admin("container:create:runtime")?;
            annotations.insert(keys::RUNTIME.into(), r.clone());
            Some(driver_of_runtime(r)?.to_string())
        }
        None => None,
    };
    if let Some(h) = &b.host {
        ctx.require_admin("container:create:requested_destination")?;
        if h != host {
            return Err(ZunError::invalid(
                "host",
                format!("no such host {h:?}: this husk runs on {host}"),
            ));
        }
    }
    if let Some(az) = &b.availability_zone
        && az != AVAILABILITY_ZONE
    {
        return Err(ZunError::invalid(
            "availability_zone",
            format!("no such availability zone {az:?}: use {AVAILABILITY_ZONE}"),
        ));
    }
    let privileged = opt_bool("privileged", &b.privileged)?.unwrap_or(false);
    if privileged && !ctx.everything {
        return Err(ZunError::forbidden("container:create:privileged"));
    }
    let interactive = opt_bool("interactive", &b.interactive)?.unwrap_or(false);
    // Before 1.36 `interactive` also meant a terminal.
    let tty = match opt_bool("tty", &b.tty)? {
        Some(t) => t,
        None if version < Version::new(1, 36) => interactive,
        None => false,
    };
    if let Some(h) = &b.hostname
        && (h.is_empty()
            || h.len() > 255
            || !h
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')))
    {
        return Err(ZunError::invalid(
            "hostname",
            format!("{h:?} does not match '^[a-zA-Z0-9-._]*$'"),
        ));
    }
    if let Some(e) = &b.entrypoint {
        annotations.insert(
            keys::ENTRYPOINT.into(),
            serde_json::to_string(e).unwrap_or_default(),
        );
    }
    if let Some(h) = &b.hints {
        annotations.insert(
            keys::HINTS.into(),
            serde_json::to_string(h).unwrap_or_default(),
        );
    }
    annotations.insert(keys::INTERACTIVE.into(), interactive.to_string());
    let restart = match &b.restart_policy {
        Some(r) => restart_policy(r)?,
        None => RestartPolicy::No,
    };
    let auto_remove = opt_bool("auto_remove", &b.auto_remove)?.unwrap_or(false);
    if auto_remove && restart != RestartPolicy::No {
        return Err(ZunError::bad_request(
            "auto_remove and a restart policy cannot be given together",
        ));
    }
    let mut network = husk_core::NetworkConfig::default();
    if let Some(n) = requested_network(b)? {
        network.mode = n;
    }
    network.ports = exposed_ports(b)?;
    Ok(ContainerCreate {
        name: b.name.clone(),
        image: b.image.clone(),
        command: match &b.command {
            Some(c) => command(c, version)?,
            None => None,
        },
        entrypoint: b.entrypoint.clone(),
        env: b
            .environment
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        workdir: b.workdir.clone().filter(|w| !w.is_empty()),
        hostname: b.hostname.clone(),
        tty,
        stdin: interactive,
        resources: Resources {
            memory_bytes: Some(memory << 20),
            nano_cpus: Some(nano_cpus(cpu)),
            ..Default::default()
        },
        restart_policy: restart,
        auto_remove,
        driver,
        privileged,
        labels: b.labels.clone().unwrap_or_default(),
        network,
        project: Some(ctx.project_id.clone()),
        annotations,
        pull,
        ..Default::default()
    })
}

/// Pulls `image` for `project` when `policy` says so, before the engine needs it: a registry that cannot be
/// reached or has no such image is the client's problem to fix (400 naming the image), and the image is
/// recorded as the project's. Returns the policy left for the engine (nothing more to pull).
pub async fn ensure_image(
    engine: &husk_engine::Engine,
    project: &str,
    image: &str,
    policy: husk_api_types::PullPolicy,
) -> ZunResult<husk_api_types::PullPolicy> {
    use husk_api_types::PullPolicy;
    let present = engine.has_image(image);
    match policy {
        PullPolicy::Never => return Ok(policy),
        PullPolicy::Missing if present => return Ok(policy),
        _ => {}
    }
    engine
        .pull_image_for(project, image, false)
        .await
        .map_err(|e| match e.kind {
            husk_core::ErrorKind::Backend
            | husk_core::ErrorKind::NotFound
            | husk_core::ErrorKind::Unauthorized
            | husk_core::ErrorKind::Timeout => ZunError::invalid(
                "image",
                format!("{image} could not be pulled: {}", e.message),
            ),
            _ => e.into(),
        })?;
    Ok(PullPolicy::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> CreateBody {
        super::super::params::parse_json(json.as_bytes()).unwrap()
    }

    fn v(minor: u16) -> Version {
        Version::new(1, minor)
    }

    #[test]
    fn a_client_request_translates() {
        let b = body(
            r#"{"name":"web","image":"nginx","memory":"256","cpu":"0.5","environment":{"A":"1"},"auto_remove":false,
               "labels":{"app":"x"},"hints":{},"nets":[],"mounts":[],"runtime":"runc","command":["sleep","100"],
               "exposed_ports":{"80/tcp":{}},"restart_policy":{"Name":"on-failure","MaximumRetryCount":"3"}}"#,
        );
        let r = translate(&b, v(40), &Context::anonymous(), "h").unwrap();
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(
            r.command,
            Some(vec!["sleep".to_string(), "100".to_string()])
        );
        assert_eq!(r.resources.memory_bytes, Some(256 << 20));
        assert_eq!(r.resources.nano_cpus, Some(500_000_000));
        assert_eq!(r.env, vec!["A=1"]);
        assert_eq!(r.driver.as_deref(), Some("linux"));
        assert_eq!(
            r.restart_policy,
            RestartPolicy::OnFailure { max_retries: 3 }
        );
        assert_eq!(r.network.ports[0].container_port, 80);
        assert_eq!(r.project.as_deref(), Some("default"));
    }

    #[test]
    fn defaults_and_old_versions() {
        let b = body(r#"{"image":"busybox","command":"sh -c 'echo hi'","interactive":"True"}"#);
        let r = translate(&b, v(1), &Context::anonymous(), "h").unwrap();
        assert_eq!(r.command.unwrap(), vec!["sh", "-c", "echo hi"]);
        assert_eq!(r.resources.memory_bytes, Some(512 << 20));
        assert_eq!(r.resources.nano_cpus, Some(1_000_000_000));
        assert!(r.stdin && r.tty, "interactive means a terminal before 1.36");
        let e = translate(&b, v(20), &Context::anonymous(), "h").unwrap_err();
        assert!(e.message.contains("command"), "{}", e.message);
    }

    #[test]
    fn newer_fields_are_refused_at_older_versions() {
        let b = body(r#"{"image":"busybox","runtime":"runc"}"#);
        let e = translate(&b, v(4), &Context::anonymous(), "h").unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        assert!(e.message.contains("runtime"));
        assert!(translate(&b, v(5), &Context::anonymous(), "h").is_ok());
    }

    #[test]
    fn schema_rules_name_the_field() {
        for (json, field) in [
            (r#"{"image":"busybox","name":"-bad"}"#, "name"),
            (r#"{"image":"busybox","name":"a"}"#, "name"),
            (r#"{"image":"busybox","cpu":0.01}"#, "cpu"),
            (r#"{"image":"busybox","cpu":"x"}"#, "cpu"),
            (r#"{"image":"busybox","memory":2}"#, "memory"),
            (r#"{"image":"busybox","memory":"9000"}"#, "memory"),
            (
                r#"{"image":"busybox","restart_policy":{"Name":"sometimes"}}"#,
                "restart_policy.Name",
            ),
            (
                r#"{"image":"busybox","restart_policy":{"Name":"always","MaximumRetryCount":2}}"#,
                "MaximumRetryCount",
            ),
            (
                r#"{"image":"busybox","image_pull_policy":"sometimes"}"#,
                "image_pull_policy",
            ),
            (
                r#"{"image":"busybox","interactive":"maybe"}"#,
                "interactive",
            ),
            (
                r#"{"image":"busybox","exposed_ports":{"x/tcp":{}}}"#,
                "exposed_ports",
            ),
            (r#"{"image":"busybox","disk":5}"#, "disk"),
            (r#"{"image":"busybox","runtime":"gvisor"}"#, "runtime"),
            (r#"{"image":"x"}"#, "image"),
        ] {
            let e = translate(&body(json), v(40), &Context::anonymous(), "h").unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{json}");
            assert!(e.message.contains(field), "{json}: {}", e.message);
        }
        let e = super::super::params::parse_json::<CreateBody>(br#"{"image":"busybox","bogus":1}"#)
            .unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn policy() {
        let member = Context {
            user_id: "u".into(),
            project_id: "p".into(),
            is_admin: false,
            cross_project: false,
            everything: false,
        };
        for json in [
            r#"{"image":"busybox","runtime":"runc"}"#,
            r#"{"image":"busybox","image_pull_policy":"always"}"#,
            r#"{"image":"busybox","privileged":true}"#,
        ] {
            let e = translate(&body(json), v(40), &member, "h").unwrap_err();
            assert_eq!(e.status.as_u16(), 403, "{json}");
        }
        let r = translate(&body(r#"{"image":"busybox"}"#), v(40), &member, "h").unwrap();
        assert_eq!(r.project.as_deref(), Some("p"));
        assert_eq!(r.annotations[keys::USER], "u");
    }
}
