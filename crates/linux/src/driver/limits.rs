//! Cgroups and limits: a container's cgroup path, the cgroup an orphan was made with, and the resources this
//! host can enforce.

use std::path::PathBuf;

use husk_core::{ContainerConfig, Error, Result};

use husk_container::cgroups;
use husk_container::shim::ShimConfig;

use super::LinuxDriver;

impl LinuxDriver {
    /// The container's cgroup: under its sandbox's parent when it has one, else under the driver's.
    pub(super) fn cgroup_path(&self, config: &ContainerConfig) -> String {
        let parent = config
            .cgroup_parent
            .as_deref()
            .unwrap_or(&self.config.cgroup_parent);
        format!("/{}/{}", parent.trim_matches('/'), config.id)
    }

    /// The cgroup a container of which only the ID is known was made with (an orphan): the one its bundle's
    /// `shim.json` names, else the driver's parent.
    pub(super) fn recorded_cgroup(&self, id: &str) -> String {
        std::fs::read(self.ctr_dir(id).join("shim.json"))
            .ok()
            .and_then(|text| serde_json::from_slice::<ShimConfig>(&text).ok())
            .map(|shim| shim.cgroup_path)
            .unwrap_or_else(|| format!("/{}/{}", self.config.cgroup_parent.trim_matches('/'), id))
    }

    /// `resources` as this host can enforce them, or why not: huge page limits need a hugetlb controller that
    /// libcgroups drives (a v1 hierarchy, or the unified one on a v2 host; not the cgroup2 mount of a hybrid
    /// host) and page sizes the kernel has; `unified` needs cgroup v2; swap beyond the memory limit needs swap
    /// accounting (`memory.memsw.*` on v1). A memory plus swap limit equal to the memory limit asks for no swap:
    /// without swap accounting it is left out.
    pub(super) fn host_resources(
        &self,
        resources: &husk_core::Resources,
    ) -> Result<husk_core::Resources> {
        let mut fitted = resources.clone();
        if !resources.unified.is_empty() && !self.cgroup_v2 {
            return Err(Error::precondition(
                "unified",
                "unified: cgroup v2 files can only be set on a cgroup v2 host, and this host's controllers are \
                 on cgroup v1",
            ));
        }
        if !resources.hugepage_limits.is_empty() {
            let controller = cgroups::hugetlb_available(self.cgroup_v2);
            for (size, limit) in &resources.hugepage_limits {
                let bytes = husk_core::units::parse_hugepage_size("hugepage_limits", size)?;
                let dir = PathBuf::from(format!(
                    "/sys/kernel/mm/hugepages/hugepages-{}kB",
                    bytes >> 10
                ));
                if !dir.is_dir() {
                    return Err(Error::precondition(
                        "hugepage_limits",
                        format!(
                            "hugepage_limits: this host's kernel has no {size} huge pages (no {})",
                            dir.display()
                        ),
                    ));
                }
                if let Err(why) = &controller {
                    // kubelet asks for a limit of 0 for every page size of the node: where the host has no such
                    // pages to give, that limit keeps itself.
                    if *limit == 0 && cgroups::hugepage_pool_is_empty(&dir) {
                        fitted.hugepage_limits.remove(size);
                        continue;
                    }
                    return Err(Error::precondition(
                        "hugepage_limits",
                        format!("hugepage_limits: {why}"),
                    ));
                }
            }
        }
        if resources.memory_swap_bytes.is_some() && !self.cgroup_v2 && !cgroups::swap_accounted_v1()
        {
            if resources.asks_for_swap() {
                return Err(Error::precondition(
                    "memory_swap",
                    "memory_swap: this host's kernel does not account swap (no memory.memsw.limit_in_bytes; \
                     boot it with swapaccount=1), so a limit on memory plus swap cannot be kept",
                ));
            }
            fitted.memory_swap_bytes = None;
        }
        Ok(fitted)
    }
}
