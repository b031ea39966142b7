//! Capsule manifests: Zun's capsule template (`kind: capsule`) and Kubernetes' `Pod` (the subset that makes
//! sense on one host), both translated into the engine's [`CapsuleCreate`].
//!
//! The two differ in a few places, each handled here: Kubernetes' `command` replaces the image's entrypoint
//! and `args` its command, while Zun appends `args` to `command`; Kubernetes writes resources as quantities
//! (`500m`, `128Mi`) and environment as a list, Zun as numbers (memory in MiB) and a map; Zun's volumes are
//! Cinder volumes (a `size` becomes a local volume), Kubernetes' are `emptyDir`.

use std::collections::BTreeMap;

use husk_api_types::ContainerCreate;
use husk_core::{
    Error, NetworkConfig, PortMapping, PortProtocol, Resources, RestartPolicy, Result,
};
use husk_engine::capsules::{CapsuleContainer, CapsuleCreate, CapsuleMount};
use serde::Deserialize;
use serde_json::Value;

/// Which dialect a manifest is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Zun's capsule template.
    Zun,
    /// A Kubernetes `Pod`.
    Kubernetes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Kubernetes only: `default` (or absent).
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Env {
    Map(BTreeMap<String, Value>),
    List(Vec<EnvVar>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Port {
    name: Option<String>,
    #[serde(rename = "containerPort")]
    container_port: Value,
    #[serde(rename = "hostPort")]
    host_port: Option<Value>,
    protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceSet {
    cpu: Option<Value>,
    memory: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesBody {
    requests: Option<ResourceSet>,
    limits: Option<ResourceSet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeMount {
    name: String,
    #[serde(rename = "mountPath")]
    mount_path: String,
    #[serde(rename = "readOnly", default)]
    read_only: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityContext {
    privileged: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Container {
    name: Option<String>,
    image: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    env: Option<Env>,
    #[serde(rename = "workDir")]
    work_dir: Option<String>,
    #[serde(rename = "workingDir")]
    working_dir: Option<String>,
    #[serde(default)]
    ports: Vec<Port>,
    resources: Option<ResourcesBody>,
    #[serde(rename = "volumeMounts", default)]
    volume_mounts: Vec<VolumeMount>,
    #[serde(rename = "imagePullPolicy")]
    image_pull_policy: Option<String>,
    stdin: Option<bool>,
    tty: Option<bool>,
    #[serde(rename = "securityContext")]
    security_context: Option<SecurityContext>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CinderVolume {
    size: Option<Value>,
    #[serde(rename = "volumeID")]
    volume_id: Option<String>,
    #[serde(rename = "autoRemove")]
    auto_remove: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Volume {
    name: String,
    cinder: Option<CinderVolume>,
    #[serde(rename = "emptyDir")]
    empty_dir: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(rename = "restartPolicy")]
    restart_policy: Option<String>,
    #[serde(rename = "initContainers", default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
    hostname: Option<String>,
    #[serde(rename = "shareProcessNamespace")]
    share_process_namespace: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    #[serde(rename = "capsuleVersion")]
    capsule_version: Option<String>,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Spec,
    #[serde(rename = "availabilityZone")]
    availability_zone: Option<String>,
    /// Zun's networks (one, by name).
    nets: Option<Vec<Value>>,
}

/// What a translated manifest asks beyond the engine request, for front ends to check (policy).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requests {
    /// Some container asks to be privileged.
    pub privileged: bool,
    /// Some container names an image pull policy.
    pub image_pull_policy: bool,
    /// The availability zone asked for.
    pub availability_zone: Option<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::invalid(field, message)
}

/// CPUs from `1`, `0.5`, `"500m"` or `"2"`.
pub fn parse_cpu(field: &str, v: &Value) -> Result<f64> {
    let bad = || invalid(field, format!("{v} is not a CPU quantity (1, 0.5 or 500m)"));
    let n = match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad)?,
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().map_err(|_| bad())? / 1000.0,
            None => s.parse::<f64>().map_err(|_| bad())?,
        },
        _ => return Err(bad()),
    };
    if !n.is_finite() || n <= 0.0 {
        return Err(bad());
    }
    Ok(n)
}

/// Memory in bytes: Zun writes MiB as a number; Kubernetes writes quantities (`128Mi`, `1G`, bytes).
pub fn parse_memory(field: &str, v: &Value, dialect: Dialect) -> Result<i64> {
    let bad = || invalid(field, format!("{v} is not a memory quantity"));
    let mib = 1024.0 * 1024.0;
    let bytes = match (v, dialect) {
        (Value::Number(n), Dialect::Zun) => n.as_f64().ok_or_else(bad)? * mib,
        (Value::String(s), Dialect::Zun)
            if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() =>
        {
            s.parse::<f64>().map_err(|_| bad())? * mib
        }
        (Value::Number(n), Dialect::Kubernetes) => n.as_f64().ok_or_else(bad)?,
        (Value::String(s), _) => {
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: f64 = num.parse().map_err(|_| bad())?;
            let mult = match unit {
                "" => 1.0,
                "Ki" => 1024.0,
                "Mi" => mib,
                "Gi" => mib * 1024.0,
                "Ti" => mib * 1024.0 * 1024.0,
                "k" | "K" => 1e3,
                "M" => 1e6,
                "G" => 1e9,
                "T" => 1e12,
                _ => return Err(bad()),
            };
            n * mult
        }
        _ => return Err(bad()),
    };
    if !bytes.is_finite() || bytes <= 0.0 || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

fn port_number(field: &str, v: &Value) -> Result<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    n.and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid(field, format!("{v} is not a port from 1 to 65535")))
}

fn truthy(field: &str, v: &Option<Value>) -> Result<bool> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(invalid(field, format!("{other} is not a boolean"))),
    }
}

fn restart_policy(text: Option<&str>) -> Result<RestartPolicy> {
    match text.unwrap_or("Always") {
        "Always" => Ok(RestartPolicy::Always),
        "OnFailure" => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
        "Never" => Ok(RestartPolicy::No),
        other => Err(invalid(
            "spec.restartPolicy",
            format!("{other:?} is not Always, OnFailure or Never"),
        )),
    }
}

fn pull_policy(text: &str) -> Result<&'static str> {
    match text.to_ascii_lowercase().as_str() {
        "always" => Ok("always"),
        "ifnotpresent" => Ok("ifnotpresent"),
        "never" => Ok("never"),
        _ => Err(invalid(
            "imagePullPolicy",
            format!("{text:?} is not Always, IfNotPresent or Never"),
        )),
    }
}

fn container(
    c: &Container,
    default_name: String,
    dialect: Dialect,
    ports: &mut Vec<PortMapping>,
    asked: &mut Requests,
) -> Result<CapsuleContainer> {
    let name = c.name.clone().unwrap_or(default_name);
    let (entrypoint, command) = match dialect {
        Dialect::Kubernetes => (c.command.clone(), c.args.clone()),
        Dialect::Zun => match (&c.command, &c.args) {
            (None, None) => (None, None),
            (cmd, args) => (
                None,
                Some(
                    cmd.iter()
                        .flatten()
                        .chain(args.iter().flatten())
                        .cloned()
                        .collect(),
                ),
            ),
        },
    };
    let env = match &c.env {
        None => Vec::new(),
        Some(Env::List(list)) => list
            .iter()
            .map(|e| format!("{}={}", e.name, e.value))
            .collect(),
        Some(Env::Map(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(format!("{k}={s}")),
                Value::Number(n) => Ok(format!("{k}={n}")),
                Value::Bool(b) => Ok(format!("{k}={b}")),
                other => Err(invalid(
                    "env",
                    format!("the value of {k} is {other}, not text"),
                )),
            })
            .collect::<Result<_>>()?,
    };
    let res = c.resources.as_ref();
    let pick = |f: fn(&ResourceSet) -> &Option<Value>| {
        res.and_then(|r| {
            r.limits
                .as_ref()
                .and_then(|l| f(l).clone())
                .or_else(|| r.requests.as_ref().and_then(|q| f(q).clone()))
        })
    };
    let resources = Resources {
        nano_cpus: pick(|s| &s.cpu)
            .map(|v| parse_cpu("resources.cpu", &v).map(|n| (n * 1e9).round() as i64))
            .transpose()?,
        memory_bytes: pick(|s| &s.memory)
            .map(|v| parse_memory("resources.memory", &v, dialect))
            .transpose()?,
        ..Default::default()
    };
    for p in &c.ports {
        let container_port = port_number("ports.containerPort", &p.container_port)?;
        let host_port = match &p.host_port {
            None | Some(Value::Null) => None,
            Some(v) => Some(port_number("ports.hostPort", v)?),
        };
        let given = p.protocol.as_deref().unwrap_or("TCP");
        let protocol = match given.parse() {
            Ok(p @ (PortProtocol::Tcp | PortProtocol::Udp)) => p,
            _ => {
                return Err(invalid(
                    "ports.protocol",
                    format!("{given:?} is not TCP or UDP"),
                ));
            }
        };
        let _ = &p.name;
        // Only ports given a host port are published (Kubernetes' rule); the others are documentation.
        if let Some(host_port) = host_port
            && !ports
                .iter()
                .any(|m| m.container_port == container_port && m.protocol == protocol)
        {
            ports.push(PortMapping {
                host_ip: String::new(),
                host_port,
                container_port,
                protocol,
            });
        }
    }
    let mut annotations = BTreeMap::new();
    let mut pull = husk_api_types::PullPolicy::Missing;
    if let Some(p) = &c.image_pull_policy {
        let policy = pull_policy(p)?;
        annotations.insert("zun.image_pull_policy".to_string(), policy.to_string());
        asked.image_pull_policy = true;
        pull = policy.parse()?;
    }
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    asked.privileged |= privileged;
    let mounts = c
        .volume_mounts
        .iter()
        .map(|m| {
            Ok(CapsuleMount {
                volume: m.name.clone(),
                path: m.mount_path.clone(),
                readonly: truthy("volumeMounts.readOnly", &m.read_only)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(CapsuleContainer {
        name,
        spec: ContainerCreate {
            image: c.image.clone(),
            command,
            entrypoint,
            env,
            workdir: c.working_dir.clone().or_else(|| c.work_dir.clone()),
            stdin: c.stdin.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            resources,
            privileged,
            annotations,
            pull,
            ..Default::default()
        },
        mounts,
    })
}

fn volume(v: &Volume, dialect: Dialect) -> Result<String> {
    match (&v.cinder, &v.empty_dir) {
        (Some(c), None) => {
            if c.volume_id.is_some() {
                return Err(invalid(
                    "spec.volumes.cinder.volumeID",
                    format!(
                        "volume {}: husk has no Cinder; give a size for a local volume",
                        v.name
                    ),
                ));
            }
            truthy("spec.volumes.cinder.autoRemove", &c.auto_remove)?;
            match &c.size {
                Some(Value::Number(_)) => {}
                Some(Value::String(s))
                    if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {}
                _ => {
                    return Err(invalid(
                        "spec.volumes.cinder.size",
                        format!("volume {} needs a size in GiB", v.name),
                    ));
                }
            }
            Ok(v.name.clone())
        }
        (None, Some(_)) => Ok(v.name.clone()),
        _ => Err(invalid(
            "spec.volumes",
            match dialect {
                Dialect::Zun => {
                    format!("volume {} needs exactly one of cinder or emptyDir", v.name)
                }
                Dialect::Kubernetes => {
                    format!("volume {}: only emptyDir volumes are supported", v.name)
                }
            },
        )),
    }
}

/// Translates a manifest (already parsed from JSON or YAML) into a capsule request, reporting what it asks
/// that policy must allow.
pub fn translate(manifest: &Value) -> Result<(CapsuleCreate, Requests)> {
    let m: Manifest = serde_path_to_error::deserialize(manifest).map_err(|e| {
        let path = e.path().to_string();
        invalid(&path, format!("{path}: {}", e.into_inner()))
    })?;
    let dialect = match m.kind.as_str() {
        "capsule" | "Capsule" => {
            if let Some(v) = &m.capsule_version
                && !v.eq_ignore_ascii_case("beta")
            {
                return Err(invalid("capsuleVersion", format!("{v:?} is not beta")));
            }
            Dialect::Zun
        }
        "Pod" => {
            if m.api_version.as_deref().is_some_and(|v| v != "v1") {
                return Err(invalid("apiVersion", "a Pod's apiVersion is v1"));
            }
            Dialect::Kubernetes
        }
        other => return Err(invalid("kind", format!("{other:?} is not capsule or Pod"))),
    };
    if let Some(ns) = &m.metadata.namespace
        && ns != "default"
    {
        return Err(invalid(
            "metadata.namespace",
            "husk has one namespace: default",
        ));
    }
    let nets = m.nets.as_deref().unwrap_or_default();
    let mut network = NetworkConfig::default();
    match nets {
        [] => {}
        [Value::Object(o)] => match o.get("network") {
            Some(Value::String(n)) if !n.is_empty() => network.mode = n.clone(),
            _ => return Err(invalid("nets", "name the network: [{\"network\": NAME}]")),
        },
        _ => return Err(invalid("nets", "a capsule has one network")),
    }
    let mut asked = Requests {
        availability_zone: m.availability_zone.clone(),
        ..Default::default()
    };
    if m.spec.containers.is_empty() {
        return Err(invalid(
            "spec.containers",
            "a capsule needs at least one container",
        ));
    }
    let mut ports = Vec::new();
    let init_containers = m
        .spec
        .init_containers
        .iter()
        .enumerate()
        .map(|(i, c)| container(c, format!("init{i}"), dialect, &mut Vec::new(), &mut asked))
        .collect::<Result<Vec<_>>>()?;
    let containers = m
        .spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| container(c, format!("c{i}"), dialect, &mut ports, &mut asked))
        .collect::<Result<Vec<_>>>()?;
    network.ports = ports;
    let volumes = m
        .spec
        .volumes
        .iter()
        .map(|v| volume(v, dialect))
        .collect::<Result<Vec<_>>>()?;
    Ok((
        CapsuleCreate {
            name: m.metadata.name.clone(),
            project: None,
            labels: m.metadata.labels.clone(),
            annotations: m.metadata.annotations.clone(),
            restart_policy: restart_policy(m.spec.restart_policy.as_deref())?,
            init_containers,
            containers,
            volumes,
            network,
            hostname: m.spec.hostname.clone(),
            share_pid: m.spec.share_process_namespace.unwrap_or(false),
            driver: None,
        },
        asked,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn zun_template() {
        let t = json!({
            "capsuleVersion": "beta", "kind": "capsule",
            "metadata": {"name": "demo", "labels": {"app": "web"}},
            "availabilityZone": "nova",
            "spec": {
                "restartPolicy": "Always",
                "initContainers": [{"image": "busybox", "command": ["true"]}],
                "containers": [
                    {"image": "busybox", "command": ["echo"], "args": ["Hello", "World"], "workDir": "/root",
                     "ports": [{"name": "p", "containerPort": 80, "hostPort": 8080, "protocol": "TCP"}],
                     "resources": {"requests": {"cpu": 1, "memory": 64}},
                     "env": {"ENV1": "/usr/local/bin"},
                     "volumeMounts": [{"name": "volume1", "mountPath": "/data1", "readOnly": "True"}]}
                ],
                "volumes": [{"name": "volume1", "cinder": {"size": 5, "autoRemove": true}}]
            }
        });
        let (c, asked) = translate(&t).unwrap();
        assert_eq!(c.name.as_deref(), Some("demo"));
        assert_eq!(c.restart_policy, RestartPolicy::Always);
        let web = &c.containers[0];
        assert_eq!(
            web.spec.command,
            Some(vec!["echo".into(), "Hello".into(), "World".into()])
        );
        assert_eq!(web.spec.entrypoint, None);
        assert_eq!(web.spec.resources.memory_bytes, Some(64 << 20));
        assert_eq!(web.spec.resources.nano_cpus, Some(1_000_000_000));
        assert_eq!(web.spec.env, vec!["ENV1=/usr/local/bin"]);
        assert!(web.mounts[0].readonly);
        assert_eq!(c.network.ports[0].host_port, 8080);
        assert_eq!(c.volumes, vec!["volume1"]);
        assert_eq!(c.init_containers.len(), 1);
        assert_eq!(asked.availability_zone.as_deref(), Some("nova"));
    }

    #[test]
    fn kubernetes_pod() {
        let p = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pod1", "namespace": "default"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "app", "image": "busybox", "command": ["sh", "-c"], "args": ["echo hi"],
                                "env": [{"name": "A", "value": "1"}],
                                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
                "volumes": [{"name": "scratch", "emptyDir": {}}]
            }
        });
        let (c, _) = translate(&p).unwrap();
        let app = &c.containers[0];
        assert_eq!(app.name, "app");
        assert_eq!(app.spec.entrypoint, Some(vec!["sh".into(), "-c".into()]));
        assert_eq!(app.spec.command, Some(vec!["echo hi".into()]));
        assert_eq!(app.spec.resources.nano_cpus, Some(500_000_000));
        assert_eq!(app.spec.resources.memory_bytes, Some(128 << 20));
        assert_eq!(app.spec.env, vec!["A=1"]);
        assert_eq!(c.restart_policy, RestartPolicy::No);
    }

    #[test]
    fn bad_manifests_name_the_field() {
        for (m, field) in [
            (
                json!({"kind": "Deployment", "spec": {"containers": [{"image": "x"}]}}),
                "kind",
            ),
            (
                json!({"kind": "Pod", "spec": {"containers": []}}),
                "spec.containers",
            ),
            (
                json!({"kind": "Pod", "spec": {"containers": [{"image": "x", "bogus": 1}]}}),
                "bogus",
            ),
            (
                json!({"kind": "Pod", "spec": {"restartPolicy": "Sometimes", "containers": [{"image": "x"}]}}),
                "restartPolicy",
            ),
            (
                json!({"kind": "Pod", "spec": {"containers": [{"image": "x", "resources": {"limits": {"memory": "12Qi"}}}]}}),
                "memory",
            ),
            (
                json!({"kind": "Pod", "spec": {"containers": [{"image": "x", "ports": [{"containerPort": 70000}]}]}}),
                "containerPort",
            ),
            (
                json!({"kind": "capsule", "spec": {"containers": [{"image": "x"}], "volumes": [{"name": "v", "cinder": {"volumeID": "abc"}}]}}),
                "volumeID",
            ),
            (
                json!({"kind": "Pod", "metadata": {"namespace": "kube-system"}, "spec": {"containers": [{"image": "x"}]}}),
                "namespace",
            ),
        ] {
            let e = translate(&m).unwrap_err();
            let text = format!("{} {}", e.field.clone().unwrap_or_default(), e.message);
            assert!(text.contains(field), "{m}: {text}");
        }
    }
}
