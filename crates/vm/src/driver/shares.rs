//! What the host shares with a VM over 9p: image layers in its read-only share (`share/l/<layer>`), the
//! sources of a container's binds and volumes in its read-write share (`mounts/<container>/<n>`), and their
//! removal.

use std::path::{Path, PathBuf};

use husk_core::{ContainerConfig, Context, Error, Result};

use super::{VmDriver, lock};
use crate::proto::MOUNTS_TAG;
use crate::qemu::VmConfig;

/// The directory of a VM's layer share holding its image layers.
pub(super) const LAYERS_DIR: &str = "l";

impl VmDriver {
    /// Exposes `layers` to the VM as `share/l/<layer>` (read-only bind mounts) and returns their share paths.
    ///
    /// A layer keeps one path for the VM's whole life, whichever containers use it: QEMU's 9p server knows the
    /// guest's open files by path, and the guest (`cache=loose`) keeps a directory's dentries under the first path
    /// it met the directory by. With a path per container, a second container of the same image found the
    /// cached layer under the first container's path, gone once that container was removed, and its root
    /// filesystem came up empty. One path per layer also gives the containers of an image one page cache in the
    /// guest. A bind whose source is no longer the layer's directory (the image was removed and pulled again)
    /// is replaced.
    pub(super) fn share_layers(&self, vm_name: &str, layers: &[PathBuf]) -> Result<Vec<String>> {
        use std::os::unix::fs::MetadataExt;
        let base = self.vm_root(vm_name).join("share").join(LAYERS_DIR);
        let _held = lock(&self.layer_binds);
        let mut rel = Vec::new();
        for layer in layers {
            let name = layer
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| !n.starts_with('.'))
                .ok_or_else(|| {
                    Error::internal(format!("image layer path {} has no name", layer.display()))
                })?;
            let target = base.join(name);
            let source =
                std::fs::metadata(layer).context(format!("image layer {}", layer.display()))?;
            let bound = std::fs::metadata(&target)
                .is_ok_and(|t| t.dev() == source.dev() && t.ino() == source.ino());
            if !bound {
                // An old bind of a removed layer directory, if any.
                let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
                bind_source(layer, &target, true)?;
            }
            rel.push(format!("{LAYERS_DIR}/{name}"));
        }
        Ok(rel)
    }

    /// Exposes the sources of `config`'s binds and volumes to the VM as `mounts/<id>/<n>` in its mounts share
    /// (recursive bind mounts, read-only ones also read-only on the host), and rewrites each such mount's
    /// `host_path` to that path relative to the share, for the agent. On failure nothing is left mounted.
    pub(super) fn share_mounts(
        &self,
        vm: &VmConfig,
        vm_name: &str,
        config: &mut ContainerConfig,
    ) -> Result<()> {
        let wanted: Vec<usize> = (0..config.mounts.len())
            .filter(|&i| config.mounts[i].kind.is_host_path())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        if !vm.shares.iter().any(|s| s.tag == MOUNTS_TAG) {
            let m = &config.mounts[wanted[0]];
            return Err(Error::unsupported(format!(
                "driver vm: the {} mount on {} needs a VM started with a share for mounts, and VM {vm_name} was started by an older husk: recreate its sandbox",
                m.kind, m.destination
            )));
        }
        let base = self.vm_root(vm_name).join("mounts").join(&config.id);
        let bound = (|| -> Result<()> {
            for (n, &i) in wanted.iter().enumerate() {
                let m = &mut config.mounts[i];
                let target = base.join(n.to_string());
                bind_source(Path::new(&m.host_path), &target, m.readonly).map_err(|e| {
                    e.context(format!("share the {} mount on {}", m.kind, m.destination))
                })?;
                m.host_path = format!("{}/{n}", config.id);
            }
            Ok(())
        })();
        if bound.is_err() {
            unmount_below(&[&base]);
            let _ = std::fs::remove_dir_all(&base);
        }
        bound
    }

    /// Unmounts and removes what [`VmDriver::share_mounts`] made for container `id` in VM `vm_name`, and its
    /// layers' directory `share/<id>` in a VM an older husk started. (Image layers stay shared for the VM's
    /// life now: see [`VmDriver::share_layers`].)
    pub(super) fn unshare_container(&self, vm_name: &str, id: &str) {
        let root = self.vm_root(vm_name);
        let (mounts, layers) = (root.join("mounts").join(id), root.join("share").join(id));
        unmount_below(&[&mounts, &layers]);
        for dir in [mounts, layers] {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Bind-mounts `source` (a directory or any other file, and what is mounted below it) on `target`, made as an
/// empty directory or file to match; read-only on the host too when `readonly`.
fn bind_source(source: &Path, target: &Path, readonly: bool) -> Result<()> {
    use nix::mount::{MsFlags, mount};
    let meta = std::fs::metadata(source)
        .map_err(|e| Error::not_found(format!("the mount's source {}: {e}", source.display())))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).context(format!("create {}", parent.display()))?;
    }
    if meta.is_dir() {
        std::fs::create_dir_all(target).context(format!("create {}", target.display()))?;
    } else {
        std::fs::write(target, b"").context(format!("create {}", target.display()))?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::backend(format!(
            "bind {} to {}: {e}",
            source.display(),
            target.display()
        ))
    })?;
    if readonly {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| Error::backend(format!("make {} read-only: {e}", target.display())))?;
    }
    Ok(())
}

/// Unmounts every mount at or below each of `dirs` (deepest first), reading the mount table once.
pub(super) fn unmount_below(dirs: &[&Path]) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefixes: Vec<String> = dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect();
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| {
            prefixes.iter().any(|prefix| {
                p.strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
}
