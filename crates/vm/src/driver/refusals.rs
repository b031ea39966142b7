//! What a sandbox or container in a VM cannot have (the host's namespaces, devices and some cgroup limits),
//! refused by name before anything is made.

use husk_core::{ContainerConfig, Error, Result, SandboxConfig};

/// A VM has its own kernel: its containers cannot run in the host's PID or IPC namespace.
pub(super) fn refuse_host_namespaces(config: &SandboxConfig) -> Result<()> {
    for (asked, field, what) in [
        (config.host_pid, "host_pid", "PID"),
        (config.host_ipc, "host_ipc", "IPC"),
    ] {
        if asked {
            return Err(Error::unsupported(format!(
                "{field}: driver vm runs sandbox {} in a VM with its own kernel, so its containers cannot use the \
                 host's {what} namespace; use the linux driver for such a sandbox",
                config.name
            )));
        }
    }
    if config.user_namespace.is_some() {
        return Err(Error::unsupported(format!(
            "user_namespace: driver vm does not give sandbox {} a user namespace of its own (its VM already \
             keeps its root off the host); use the linux driver for such a sandbox",
            config.name
        )));
    }
    if config.cgroup_parent.is_some() {
        return Err(Error::unsupported(format!(
            "cgroup_parent: driver vm does not place sandbox {} under a cgroup parent (its containers' cgroups \
             are the guest kernel's); use the linux or docker driver for such a sandbox",
            config.name
        )));
    }
    Ok(())
}

/// Refuses what a container in a VM cannot have: the host's devices (the guest has its own kernel and
/// devices), huge page and cgroup v2 limits and swap (the guest's cgroups are husk's agent's, which sets none of
/// them). Its `oom_score_adj` is served: the agent's runtime writes it in the guest.
pub(super) fn refuse_host_resources(config: &ContainerConfig) -> Result<()> {
    let r = &config.resources;
    for (field, asked) in [
        ("devices", !config.devices.is_empty()),
        ("hugepage_limits", !r.hugepage_limits.is_empty()),
        ("unified", !r.unified.is_empty()),
        ("memory_swap", r.asks_for_swap()),
    ] {
        if asked {
            return Err(Error::unsupported(format!(
                "{field}: driver vm cannot give container {} what it asks here (its VM has its own kernel); use \
                 the linux driver",
                config.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_core::ErrorKind;

    #[test]
    fn host_namespaces_are_refused_by_name() {
        let mut config = SandboxConfig {
            name: "pod".into(),
            ..Default::default()
        };
        assert!(refuse_host_namespaces(&config).is_ok());
        config.host_ipc = true;
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.starts_with("host_ipc:"), "{}", e.message);
        config.host_pid = true;
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert!(e.message.starts_with("host_pid:"), "{}", e.message);
        let config = SandboxConfig {
            name: "pod".into(),
            user_namespace: Some(husk_core::UserNamespaceConfig::default()),
            ..Default::default()
        };
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(e.message.starts_with("user_namespace:"), "{}", e.message);
    }

    #[test]
    fn what_a_vm_cannot_give_is_refused_by_name() {
        let config = SandboxConfig {
            name: "pod".into(),
            cgroup_parent: Some("/kubepods/pod1".into()),
            ..Default::default()
        };
        let e = refuse_host_namespaces(&config).unwrap_err();
        assert!(e.message.starts_with("cgroup_parent:"), "{}", e.message);
        let base = ContainerConfig {
            name: "c".into(),
            resources: husk_core::Resources {
                memory_bytes: Some(64 << 20),
                memory_swap_bytes: Some(64 << 20),
                oom_score_adj: Some(500),
                ..Default::default()
            },
            ..Default::default()
        };
        refuse_host_resources(&base).unwrap();
        let mut devices = base.clone();
        devices.devices = vec![husk_core::DeviceMapping {
            host_path: "/dev/fuse".into(),
            ..Default::default()
        }];
        let mut swap = base.clone();
        swap.resources.memory_swap_bytes = Some(-1);
        let mut hugepages = base.clone();
        hugepages.resources.hugepage_limits = [("2MB".to_string(), 1 << 21)].into();
        let mut unified = base.clone();
        unified.resources.unified = [("memory.high".to_string(), "1".to_string())].into();
        for (config, field) in [
            (devices, "devices:"),
            (swap, "memory_swap:"),
            (hugepages, "hugepage_limits:"),
            (unified, "unified:"),
        ] {
            let e = refuse_host_resources(&config).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported);
            assert!(e.message.starts_with(field), "{}", e.message);
        }
    }
}
