use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::ProcError;
use procfs::process::MountInfo;

use super::ControllerType;
use super::controller_type::CONTROLLERS;

#[derive(thiserror::Error, Debug)]
pub enum V1MountPointError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("failed to get mountinfo: {0}")]
    MountInfo(ProcError),
    #[error("could not find mountpoint for {subsystem}")]
    NotFound { subsystem: ControllerType },
    #[error(transparent)]
    Pathrs(#[from] pathrs::error::Error),
}

/// List all cgroup v1 subsystem mount points on the system. This can include unsupported
/// subsystems, comounted controllers and named hierarchies.
pub fn list_subsystem_mount_points() -> Result<Vec<PathBuf>, V1MountPointError> {
    // husk patch: from the mounts read once per process (see `cgroup_mounts`).
    Ok(cgroup_mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

/// List the mount points of all currently supported cgroup subsystems.
pub fn list_supported_mount_points() -> Result<HashMap<ControllerType, PathBuf>, V1MountPointError>
{
    let mut mount_paths = HashMap::with_capacity(CONTROLLERS.len());

    for controller in CONTROLLERS {
        if let Ok(mount_point) = get_subsystem_mount_point(controller) {
            mount_paths.insert(controller.to_owned(), mount_point);
        }
    }

    Ok(mount_paths)
}

pub fn get_subsystem_mount_point(subsystem: &ControllerType) -> Result<PathBuf, V1MountPointError> {
    find_subsystem_mount_point(&cgroup_mounts()?, subsystem)
}

/// The cgroup (v1) mounts of this process's mount table, read once.
/// husk patch: lets a caller that needs several subsystems read and parse `/proc/self/mountinfo` once, and
/// keeps what it read for the rest of the process's life and its forks (the intermediate and init processes
/// are forks of the process that made the manager): cgroup hierarchies are not remounted under a running
/// container runtime, while the kernel formats the whole mount table, O(mounts), on every read.
pub fn cgroup_mounts() -> Result<Vec<MountInfo>, V1MountPointError> {
    if let Some(mounts) = CGROUP_MOUNTS.get() {
        return Ok(mounts.clone());
    }
    let mounts = read_cgroup_mounts()?;
    let _ = CGROUP_MOUNTS.set(mounts.clone());
    Ok(mounts)
}

/// husk patch: what [`cgroup_mounts`] read or was given.
static CGROUP_MOUNTS: std::sync::OnceLock<Vec<MountInfo>> = std::sync::OnceLock::new();

/// husk patch: gives [`cgroup_mounts`] the cgroup lines of a mount table the caller already read (a container
/// runtime's daemon passes its own to the process it starts in the same mount namespace), so this process
/// never reads the table. Lines that do not parse, or are not cgroup (v1) mounts, are left out; nothing is
/// kept when none is left, and a second call changes nothing.
pub fn seed_cgroup_mounts<S: AsRef<str>>(lines: &[S]) {
    let mounts: Vec<MountInfo> = lines
        .iter()
        .filter_map(|l| MountInfo::from_line(l.as_ref()).ok())
        .filter(|m| m.fs_type == "cgroup")
        .collect();
    if !mounts.is_empty() {
        let _ = CGROUP_MOUNTS.set(mounts);
    }
}

/// husk patch: the read behind [`cgroup_mounts`].
fn read_cgroup_mounts() -> Result<Vec<MountInfo>, V1MountPointError> {
    let reader = BufReader::new(ProcfsHandle::new()?.open(
        ProcfsBase::ProcSelf,
        "mountinfo",
        OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
    )?);

    let mut mounts = Vec::new();
    for line in reader.lines() {
        // A line procfs cannot parse is skipped: it matters only if it is the subsystem's, which is then
        // reported as not found.
        if let Ok(m) = MountInfo::from_line(&line?) {
            if m.fs_type == "cgroup" {
                mounts.push(m);
            }
        }
    }
    Ok(mounts)
}

/// The mount point of `subsystem` among `mounts` (from [`cgroup_mounts`]).
/// husk patch: the matching of `get_subsystem_mount_point`, unchanged, over a table read once.
pub fn find_subsystem_mount_point(
    mounts: &[MountInfo],
    subsystem: &ControllerType,
) -> Result<PathBuf, V1MountPointError> {
    let subsystem_name = subsystem.to_string();
    mounts
        .iter()
        .find_map(|m| {
            // Some systems mount net_prio and net_cls in the same directory
            // other systems mount them in their own directories. This
            // should handle both cases.
            let ok = match subsystem_name.as_str() {
                "net_cls" => ["net_cls,net_prio", "net_prio,net_cls", "net_cls"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "net_prio" => ["net_cls,net_prio", "net_prio,net_cls", "net_prio"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "cpu" => ["cpu,cpuacct", "cpu"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                "cpuacct" => ["cpu,cpuacct", "cpuacct"]
                    .iter()
                    .any(|s| m.mount_point.ends_with(s)),
                _ => m.mount_point.ends_with(&subsystem_name),
            };
            ok.then(|| m.mount_point.clone())
        })
        .ok_or(V1MountPointError::NotFound {
            subsystem: *subsystem,
        })
}
