//! How CRI objects are kept in husk's records and read back: pod and container metadata in reserved
//! annotations, names that are unique per pod and attempt, times as nanoseconds, and husk's statuses as CRI
//! states. Pure functions, unit-tested.

use std::collections::{BTreeMap, HashMap};

use husk_core::{ContainerRecord, ContainerStatus, Error, SandboxRecord, SandboxStatus};
use husk_cri_api::v1::{
    ContainerMetadata, ContainerState, NamespaceMode, PodSandboxMetadata, PodSandboxState, Signal,
    UserNamespace,
};

/// Annotations whose keys start with this are husk's own record of CRI data, never shown to CRI clients.
pub const RESERVED: &str = "io.husk.cri.";
const POD_NAME: &str = "io.husk.cri.pod.name";
const POD_UID: &str = "io.husk.cri.pod.uid";
const POD_NAMESPACE: &str = "io.husk.cri.pod.namespace";
const POD_ATTEMPT: &str = "io.husk.cri.pod.attempt";
const HANDLER: &str = "io.husk.cri.runtime-handler";
const CONTAINER_NAME: &str = "io.husk.cri.container.name";
const LOG_DIRECTORY: &str = "io.husk.cri.pod.log-directory";
const SYSCTLS: &str = "io.husk.cri.pod.sysctls";
const CONTAINER_ATTEMPT: &str = "io.husk.cri.container.attempt";
const STDIN_ONCE: &str = "io.husk.cri.container.stdin-once";

/// A CRI field that must be set, or an InvalidArgument naming it.
pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Error> {
    if value.is_empty() {
        Err(Error::invalid(field, format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// The pod's own user namespace from `linux.security_context.namespace_options.userns_options`: `None` for the
/// host's (no options, or mode NODE); the mappings for mode POD, which must be one for users and one for groups,
/// each mapping the container's ID 0. CONTAINER and TARGET are refused: a pod's containers share its user
/// namespace, as kubelet asks.
pub fn pod_user_namespace(
    options: Option<&UserNamespace>,
) -> Result<Option<husk_core::UserNamespaceConfig>, Error> {
    const FIELD: &str = "linux.security_context.namespace_options.userns_options";
    let Some(options) = options else {
        return Ok(None);
    };
    let mapping = |m: &husk_cri_api::v1::IdMapping| husk_core::IdMapping {
        container_id: m.container_id,
        host_id: m.host_id,
        size: m.length,
    };
    match NamespaceMode::try_from(options.mode) {
        Ok(NamespaceMode::Node) => Ok(None),
        Ok(NamespaceMode::Pod) => {
            let userns = husk_core::UserNamespaceConfig {
                uid_mappings: options.uids.iter().map(mapping).collect(),
                gid_mappings: options.gids.iter().map(mapping).collect(),
            };
            userns.validate(FIELD)?;
            Ok(Some(userns))
        }
        Ok(mode @ (NamespaceMode::Container | NamespaceMode::Target)) => Err(Error::invalid(
            format!("{FIELD}.mode"),
            format!(
                "{FIELD}.mode: {} is not supported for a pod's user namespace: use NODE (the host's) or POD",
                mode.as_str_name()
            ),
        )),
        Err(_) => Err(Error::invalid(
            format!("{FIELD}.mode"),
            format!("{FIELD}.mode: {} is not a namespace mode", options.mode),
        )),
    }
}

/// Longest readable part of a husk name made from CRI metadata (husk names take 255 characters; Kubernetes
/// names and UIDs together can take more).
const READABLE: usize = 100;

/// `readable` (cut to [`READABLE`] characters, anything husk names may not hold made `-`), then `_` and 16 hex
/// digits of the SHA-256 of `identity`: unique for each identity, and still telling which pod it is.
fn bounded_name(readable: &str, identity: &str) -> String {
    use sha2::Digest;
    let mut name: String = readable
        .chars()
        .take(READABLE)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let digest = sha2::Sha256::digest(identity.as_bytes());
    name.push('_');
    name.push_str(&hex::encode(&digest[..8]));
    name
}

/// The unique husk name of a pod: `k8s_POD_<name>_<namespace>_<hash of name, namespace, uid, attempt>`.
pub fn pod_name(m: &PodSandboxMetadata) -> Result<String, Error> {
    required(&m.name, "metadata.name")?;
    required(&m.namespace, "metadata.namespace")?;
    required(&m.uid, "metadata.uid")?;
    Ok(bounded_name(
        &format!("k8s_POD_{}_{}", m.name, m.namespace),
        &format!("{}\0{}\0{}\0{}", m.name, m.namespace, m.uid, m.attempt),
    ))
}

/// The unique husk name of a container of pod `pod_id`: `k8s_<name>_<pod name>_<hash of the pod, name and
/// attempt>`.
pub fn container_name(
    m: &ContainerMetadata,
    pod: &PodSandboxMetadata,
    pod_id: &str,
) -> Result<String, Error> {
    required(&m.name, "config.metadata.name")?;
    Ok(bounded_name(
        &format!("k8s_{}_{}", m.name, pod.name),
        &format!("{pod_id}\0{}\0{}", m.name, m.attempt),
    ))
}

/// The annotations a pod is stored with: the client's, plus its metadata and runtime handler.
pub fn pod_annotations(
    m: &PodSandboxMetadata,
    handler: &str,
    annotations: &HashMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = visible_pairs(annotations.iter()).collect();
    out.insert(POD_NAME.into(), m.name.clone());
    out.insert(POD_UID.into(), m.uid.clone());
    out.insert(POD_NAMESPACE.into(), m.namespace.clone());
    out.insert(POD_ATTEMPT.into(), m.attempt.to_string());
    out.insert(HANDLER.into(), handler.into());
    out
}

/// Remembers where a pod's container logs go (the CRI's `log_directory`).
pub fn set_log_directory(annotations: &mut BTreeMap<String, String>, dir: &str) {
    if !dir.is_empty() {
        annotations.insert(LOG_DIRECTORY.into(), dir.into());
    }
}

/// Remembers a pod's sysctls (set in each of its containers, whose namespaces they are).
pub fn set_sysctls(annotations: &mut BTreeMap<String, String>, sysctls: &HashMap<String, String>) {
    if !sysctls.is_empty() {
        let sorted: BTreeMap<&String, &String> = sysctls.iter().collect();
        if let Ok(text) = serde_json::to_string(&sorted) {
            annotations.insert(SYSCTLS.into(), text);
        }
    }
}

/// A pod's sysctls.
pub fn pod_sysctls(pod: &SandboxRecord) -> BTreeMap<String, String> {
    pod.config
        .annotations
        .get(SYSCTLS)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// Where a container of `pod` writes its CRI log: the pod's `log_directory` joined with the container's
/// `log_path`, when both are given.
pub fn cri_log_path(pod: &SandboxRecord, log_path: &str) -> Option<String> {
    let dir = pod.config.annotations.get(LOG_DIRECTORY)?;
    if log_path.is_empty() {
        return None;
    }
    Some(
        std::path::Path::new(dir)
            .join(log_path)
            .to_string_lossy()
            .into_owned(),
    )
}

/// The annotations a container is stored with: the client's, plus its metadata.
pub fn container_annotations(
    m: &ContainerMetadata,
    annotations: &HashMap<String, String>,
    stdin_once: bool,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = visible_pairs(annotations.iter()).collect();
    out.insert(CONTAINER_NAME.into(), m.name.clone());
    out.insert(CONTAINER_ATTEMPT.into(), m.attempt.to_string());
    if stdin_once {
        out.insert(STDIN_ONCE.into(), "true".into());
    }
    out
}

/// Whether the container's stdin closes when the first attached client ends its input (`stdin_once`).
pub fn stdin_once(rec: &ContainerRecord) -> bool {
    rec.annotations.get(STDIN_ONCE).is_some_and(|v| v == "true")
}

/// Whether the CRI made this sandbox (others, made with the CLI or Zun's API, are not kubelet's to see).
pub fn is_pod(sb: &SandboxRecord) -> bool {
    sb.config.annotations.contains_key(POD_UID)
}

/// Whether the CRI made this container.
pub fn is_cri_container(rec: &ContainerRecord) -> bool {
    rec.annotations.contains_key(CONTAINER_NAME)
}

/// A pod's metadata, as it was given.
pub fn pod_metadata(sb: &SandboxRecord) -> PodSandboxMetadata {
    let a = &sb.config.annotations;
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    PodSandboxMetadata {
        name: get(POD_NAME),
        uid: get(POD_UID),
        namespace: get(POD_NAMESPACE),
        attempt: get(POD_ATTEMPT).parse().unwrap_or(0),
    }
}

/// The runtime handler a pod was run with.
pub fn pod_handler(sb: &SandboxRecord) -> String {
    sb.config
        .annotations
        .get(HANDLER)
        .cloned()
        .unwrap_or_default()
}

/// A container's metadata, as it was given.
pub fn container_metadata(rec: &ContainerRecord) -> ContainerMetadata {
    ContainerMetadata {
        name: rec
            .annotations
            .get(CONTAINER_NAME)
            .cloned()
            .unwrap_or_default(),
        attempt: rec
            .annotations
            .get(CONTAINER_ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
    }
}

/// Labels or annotations as the CRI shows them: without husk's reserved keys.
pub fn visible(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    visible_pairs(map.iter()).collect()
}

/// The pairs whose keys are not husk's reserved ones (a client cannot forge them, nor see them).
fn visible_pairs<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> impl Iterator<Item = (String, String)> {
    pairs
        .filter(|(k, _)| !k.starts_with(RESERVED))
        .map(|(k, v)| (k.clone(), v.clone()))
}

/// Whether `labels` has every pair of `selector`.
pub fn matches(labels: &BTreeMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A pod's CRI state.
pub fn pod_state(sb: &SandboxRecord) -> PodSandboxState {
    if sb.status == SandboxStatus::Ready {
        PodSandboxState::SandboxReady
    } else {
        PodSandboxState::SandboxNotready
    }
}

/// A container's CRI state.
pub fn container_state(status: ContainerStatus) -> ContainerState {
    match status {
        ContainerStatus::Created => ContainerState::ContainerCreated,
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting => {
            ContainerState::ContainerRunning
        }
        ContainerStatus::Exited | ContainerStatus::Dead => ContainerState::ContainerExited,
        ContainerStatus::Creating | ContainerStatus::Removing => ContainerState::ContainerUnknown,
    }
}

/// Why an exited container exited, in kubelet's words.
pub fn exit_reason(rec: &ContainerRecord) -> String {
    match (&rec.exit, rec.status) {
        (Some(exit), ContainerStatus::Exited | ContainerStatus::Dead) => {
            if exit.oom_killed {
                "OOMKilled".into()
            } else if exit.code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            }
        }
        _ => String::new(),
    }
}

/// The first address of a pod's network, without its prefix length.
pub fn pod_ip(sb: &SandboxRecord) -> String {
    sb.runtime
        .network
        .as_ref()
        .and_then(|n| n.addresses.first())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .unwrap_or_default()
}

/// The name husk's stop signal takes (`SIGTERM`, `SIGRTMIN+3`, `SIGRTMAX-2`) of the CRI's `stop_signal`; `None`
/// for RUNTIME_DEFAULT (the image's `StopSignal`, else SIGTERM).
pub fn stop_signal_name(signal: i32) -> Result<Option<String>, Error> {
    let signal = Signal::try_from(signal).map_err(|_| {
        Error::invalid(
            "stop_signal",
            format!("stop_signal {signal} is not a signal of the CRI's Signal enum"),
        )
    })?;
    if signal == Signal::RuntimeDefault {
        return Ok(None);
    }
    let name = signal.as_str_name();
    Ok(Some(if let Some(n) = name.strip_prefix("SIGRTMINPLUS") {
        format!("SIGRTMIN+{n}")
    } else if let Some(n) = name.strip_prefix("SIGRTMAXMINUS") {
        format!("SIGRTMAX-{n}")
    } else {
        name.to_string()
    }))
}

/// The CRI's `Signal` of signal number `n` (glibc's numbering: SIGRTMIN is 34, SIGRTMAX 64).
pub fn cri_signal(n: i32) -> Signal {
    let name = match n {
        34 => "SIGRTMIN".to_string(),
        35..=49 => format!("SIGRTMINPLUS{}", n - 34),
        50..=63 => format!("SIGRTMAXMINUS{}", 64 - n),
        64 => "SIGRTMAX".to_string(),
        _ => husk_core::units::signal_name(n),
    };
    Signal::from_str_name(&name).unwrap_or(Signal::RuntimeDefault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_round_trip_between_the_cri_and_husk() {
        assert_eq!(
            stop_signal_name(Signal::RuntimeDefault as i32).unwrap(),
            None
        );
        assert_eq!(
            stop_signal_name(999).unwrap_err().field.as_deref(),
            Some("stop_signal")
        );
        for n in 1..=64 {
            let signal = cri_signal(n);
            if n == 32 || n == 33 {
                // glibc keeps these two for itself: no name, no CRI signal.
                assert_eq!(signal, Signal::RuntimeDefault, "{n}");
                continue;
            }
            assert_ne!(signal, Signal::RuntimeDefault, "{n}");
            let name = stop_signal_name(signal as i32).unwrap().unwrap();
            assert_eq!(husk_core::units::parse_signal(&name).unwrap(), n, "{name}");
        }
        assert_eq!(cri_signal(15), Signal::Sigterm);
        assert_eq!(
            stop_signal_name(Signal::Sigrtminplus3 as i32)
                .unwrap()
                .as_deref(),
            Some("SIGRTMIN+3")
        );
    }

    fn meta() -> PodSandboxMetadata {
        PodSandboxMetadata {
            name: "web".into(),
            uid: "1f3c".into(),
            namespace: "default".into(),
            attempt: 2,
        }
    }

    #[test]
    fn names_are_unique_per_pod_and_attempt_and_always_valid() {
        let name = pod_name(&meta()).unwrap();
        assert!(name.starts_with("k8s_POD_web_default_"), "{name}");
        let mut other = meta();
        other.attempt = 3;
        assert_ne!(pod_name(&other).unwrap(), name);
        let c = ContainerMetadata {
            name: "nginx".into(),
            attempt: 1,
        };
        let cname = container_name(&c, &meta(), "abc").unwrap();
        assert!(cname.starts_with("k8s_nginx_web_"), "{cname}");
        assert_ne!(container_name(&c, &meta(), "abd").unwrap(), cname);
        // Kubernetes names and UIDs that together pass husk's 255 characters still make a valid name.
        let long = PodSandboxMetadata {
            name: "p".repeat(200),
            uid: "u".repeat(200),
            namespace: "n".repeat(60),
            attempt: 0,
        };
        for n in [
            pod_name(&long).unwrap(),
            container_name(&c, &long, "id").unwrap(),
        ] {
            husk_core::units::validate_name("name", &n).unwrap();
        }
        let mut m = meta();
        m.uid.clear();
        let e = pod_name(&m).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("metadata.uid"));
    }

    #[test]
    fn metadata_survives_the_record_and_reserved_keys_stay_hidden() {
        let mut given = HashMap::new();
        given.insert("a".to_string(), "1".to_string());
        given.insert("io.husk.cri.pod.uid".to_string(), "forged".to_string());
        let stored = pod_annotations(&meta(), "vm", &given);
        let sb = SandboxRecord {
            config: husk_core::SandboxConfig {
                annotations: stored.clone(),
                ..Default::default()
            },
            driver: "vm".into(),
            status: SandboxStatus::Ready,
            runtime: Default::default(),
            created_at: Default::default(),
            owner_container: None,
            project: String::new(),
        };
        assert!(is_pod(&sb));
        assert_eq!(pod_metadata(&sb), meta());
        assert_eq!(pod_handler(&sb), "vm");
        let shown = visible(&stored);
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown["a"], "1");
    }

    #[test]
    fn states_times_and_reasons() {
        assert_eq!(
            container_state(ContainerStatus::Paused),
            ContainerState::ContainerRunning
        );
        let mut rec = ContainerRecord {
            status: ContainerStatus::Exited,
            exit: Some(husk_core::ExitStatus {
                code: 137,
                oom_killed: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_reason(&rec), "OOMKilled");
        rec.exit = Some(husk_core::ExitStatus::default());
        assert_eq!(exit_reason(&rec), "Completed");
        rec.status = ContainerStatus::Running;
        assert_eq!(exit_reason(&rec), "");
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        let mut selector = HashMap::new();
        assert!(matches(&labels, &selector));
        selector.insert("app".to_string(), "db".to_string());
        assert!(!matches(&labels, &selector));
    }

    #[test]
    fn pod_user_namespaces() {
        let mapping = |container_id, host_id, length| husk_cri_api::v1::IdMapping {
            container_id,
            host_id,
            length,
        };
        let options = |mode: NamespaceMode, ids: Vec<husk_cri_api::v1::IdMapping>| UserNamespace {
            mode: mode as i32,
            uids: ids.clone(),
            gids: ids,
        };
        assert_eq!(pod_user_namespace(None).unwrap(), None);
        assert_eq!(
            pod_user_namespace(Some(&options(NamespaceMode::Node, vec![]))).unwrap(),
            None
        );
        let pod = pod_user_namespace(Some(&options(
            NamespaceMode::Pod,
            vec![mapping(0, 1000, 100_000)],
        )))
        .unwrap()
        .unwrap();
        assert_eq!(pod.uid_mappings, pod.gid_mappings);
        assert_eq!(pod.uid_mappings[0].map_line(), "0 1000 100000\n");
        let refused = [
            options(
                NamespaceMode::Pod,
                vec![mapping(0, 1000, 100_000), mapping(0, 2000, 100_000)],
            ),
            options(NamespaceMode::Pod, vec![mapping(1, 1000, 100_000)]),
            options(NamespaceMode::Pod, vec![]),
            options(NamespaceMode::Container, vec![]),
            options(NamespaceMode::Target, vec![]),
            UserNamespace {
                mode: 42,
                ..Default::default()
            },
        ];
        for o in refused {
            let e = pod_user_namespace(Some(&o)).unwrap_err();
            assert_eq!(e.kind, husk_core::ErrorKind::InvalidArgument);
            assert!(
                e.message
                    .starts_with("linux.security_context.namespace_options.userns_options"),
                "{}",
                e.message
            );
        }
    }
}
