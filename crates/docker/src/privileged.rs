//! Emulating `--privileged` with settings that work where Docker's own flag fails.
//!
//! Docker's `Privileged` asks the OCI runtime for every capability Docker knows. Where the host's bounding set
//! lacks one (CAP_SYS_RESOURCE on husk's CI), runc cannot grant it and the container fails to start. husk asks
//! instead for the capabilities this daemon process holds (its effective set within its bounding set), and
//! separately for what else `--privileged` gives: no seccomp filter, no masked or read-only paths, every host
//! device, and an allow-all device cgroup rule.

use std::path::Path;

use bollard::models::DeviceMapping;
use husk_core::{Context, Error, Result};

/// Capability names by number (linux/capability.h), as Docker spells them.
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Reads a capability mask line (`CapBnd:\t000001fffeffffff`) from `/proc/<pid>/status` text.
fn mask(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
}

/// Names of the capabilities both in the effective and the bounding set described by `status`.
pub(crate) fn capabilities_from_status(status: &str) -> Result<Vec<String>> {
    let (Some(eff), Some(bnd)) = (mask(status, "CapEff"), mask(status, "CapBnd")) else {
        return Err(Error::internal(
            "the process status has no CapEff/CapBnd lines",
        ));
    };
    let held = eff & bnd;
    Ok(CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| held & (1u64 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect())
}

/// The capabilities this process holds, by name.
pub(crate) fn daemon_capabilities() -> Result<Vec<String>> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status for the daemon's capabilities")?;
    capabilities_from_status(&status)
}

/// Directories of /dev that are filesystems of their own or per-container in Docker.
const SKIP_DIRS: &[&str] = &["pts", "shm", "mqueue", "hugepages", ".lxc", ".udev", "fd"];
/// Nodes every container gets anyway (a second mapping of them makes the runtime fail).
const DEFAULT_NODES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/console",
    "/dev/ptmx",
];

fn walk(dir: &Path, out: &mut Vec<DeviceMapping>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if kind.is_dir() {
            if dir != Path::new("/dev") || !SKIP_DIRS.contains(&name.as_str()) {
                walk(&path, out);
            }
            continue;
        }
        use std::os::unix::fs::FileTypeExt;
        let path_text = path.to_string_lossy().into_owned();
        if (kind.is_char_device() || kind.is_block_device())
            && !DEFAULT_NODES.contains(&path_text.as_str())
        {
            out.push(DeviceMapping {
                path_on_host: Some(path_text.clone()),
                path_in_container: Some(path_text),
                cgroup_permissions: Some("rwm".to_string()),
            });
        }
    }
}

/// Every device node of the host's /dev (symbolic links and per-container directories left out).
pub(crate) fn host_devices() -> Vec<DeviceMapping> {
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out);
    out.sort_by(|a, b| a.path_on_host.cmp(&b.path_on_host));
    out
}

/// The device cgroup rule that allows every device.
pub(crate) const ALLOW_ALL_DEVICES: &str = "a *:* rwm";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_effective_within_bounding() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\nCapBnd:\t000001fffeffffff\n";
        let caps = capabilities_from_status(status).unwrap();
        assert_eq!(caps.len(), 40);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(caps.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        let only_two = "CapEff:\t0000000000000003\nCapBnd:\t0000000000000006\n";
        assert_eq!(
            capabilities_from_status(only_two).unwrap(),
            vec!["CAP_DAC_OVERRIDE".to_string()]
        );
        assert!(capabilities_from_status("Name: x\n").is_err());
    }

    #[test]
    fn host_devices_skip_the_defaults_and_pts() {
        let devices = host_devices();
        let paths: Vec<&str> = devices
            .iter()
            .filter_map(|d| d.path_on_host.as_deref())
            .collect();
        assert!(!paths.contains(&"/dev/null"));
        assert!(paths.iter().all(|p| !p.starts_with("/dev/pts/")));
        assert!(
            devices
                .iter()
                .all(|d| d.path_on_host == d.path_in_container)
        );
    }
}
