//! The container's root filesystem and mounts on the host: the overlay (of id-mapped copies of the layers in a
//! user namespace), image mounts, id-mapped binds, where mount destinations resolve inside the root, and
//! mount-point checks.

use std::path::{Path, PathBuf};

use husk_core::{ContainerConfig, Error, MountKind, Result, RootfsLayers};
use nix::mount::MntFlags;

use super::identity::ContainerUserns;
use super::{LinuxDriver, mkdir};

impl LinuxDriver {
    pub(super) fn rootfs(&self, id: &str) -> PathBuf {
        self.ctr_run_dir(id).join("rootfs")
    }

    /// Where the image mounts of a container are mounted on the host (`mN`, N its place in the mount list), to be
    /// bound into the container.
    pub(super) fn images_dir(&self, id: &str) -> PathBuf {
        self.ctr_run_dir(id).join("images")
    }

    /// Where a container in a user namespace gets the id-mapped copies of its layers (`lN`), binds (`mN`) and
    /// image mounts' layers (`iNlM`).
    pub(super) fn idmapped_dir(&self, id: &str) -> PathBuf {
        self.ctr_run_dir(id).join("idmap")
    }

    /// Mounts the container's root filesystem if it is not mounted (a reboot unmounts it).
    pub(super) fn ensure_rootfs(
        &self,
        id: &str,
        layers: &RootfsLayers,
        userns: Option<&ContainerUserns>,
    ) -> Result<()> {
        let target = self.rootfs(id);
        if is_mountpoint(&target) {
            return Ok(());
        }
        let dir = self.ctr_dir(id);
        for d in [dir.join("upper"), dir.join("work"), target.clone()] {
            mkdir(&d)?;
        }
        let Some(userns) = userns else {
            return husk_fs::mount_rootfs(layers, &dir.join("upper"), &dir.join("work"), &target);
        };
        // In a user namespace the image's files (owned by host root on disk) must be the namespace root's:
        // overlayfs cannot be id-mapped as a whole, so it is made of id-mapped copies of the layers, and the
        // writable layer belongs to the namespace's root on the host.
        let staging = self.idmapped_dir(id);
        let mut lowers = Vec::with_capacity(layers.layers.len());
        for (i, layer) in layers.layers.iter().enumerate() {
            let copy = staging.join(format!("l{i}"));
            if !is_mountpoint(&copy) {
                mkdir(&copy)?;
                husk_container::idmap::mount_idmapped(layer, &copy, &userns.path)?;
            }
            lowers.push(copy);
        }
        for d in [dir.join("upper"), dir.join("work")] {
            std::os::unix::fs::chown(&d, Some(userns.root_uid), Some(userns.root_gid))
                .map_err(|e| Error::io(format!("chown {}", d.display()), e))?;
        }
        husk_fs::mount_overlay(
            &lowers,
            &dir.join("upper"),
            &dir.join("work"),
            &target,
            husk_fs::MountMethod::Auto,
        )
        .map_err(|e| {
            e.context(format!(
                "mount the id-mapped root filesystem of image {}",
                layers.image_name
            ))
        })
    }

    /// Mounts the container's image mounts that are not mounted (a reboot unmounts them): each image's layers
    /// read-only, `nosuid` and `nodev`, without a writable layer, at `images/mN`. In a user namespace the layers
    /// are id-mapped copies first, as for the root filesystem.
    pub(super) fn ensure_image_mounts(
        &self,
        id: &str,
        mounts: &[husk_core::MountConfig],
        userns: Option<&ContainerUserns>,
    ) -> Result<()> {
        for (i, m) in mounts.iter().enumerate() {
            if m.kind != MountKind::Image {
                continue;
            }
            let image = m.image.as_ref().ok_or_else(|| {
                Error::internal(format!(
                    "the image mount on {} has no image: the engine did not prepare it",
                    m.destination
                ))
            })?;
            let target = self.images_dir(id).join(format!("m{i}"));
            if is_mountpoint(&target) {
                continue;
            }
            mkdir(&target)?;
            let lowers = match userns {
                None => image.layers.clone(),
                Some(userns) => {
                    let staging = self.idmapped_dir(id);
                    let mut lowers = Vec::with_capacity(image.layers.len());
                    for (j, layer) in image.layers.iter().enumerate() {
                        let copy = staging.join(format!("i{i}l{j}"));
                        if !is_mountpoint(&copy) {
                            mkdir(&copy)?;
                            husk_container::idmap::mount_idmapped(layer, &copy, &userns.path)?;
                        }
                        lowers.push(copy);
                    }
                    lowers
                }
            };
            husk_fs::mount_image_readonly(&lowers, &target).map_err(|e| {
                e.context(format!(
                    "mount image {} on {}",
                    image.image_name, m.destination
                ))
            })?;
        }
        Ok(())
    }

    /// Resolves each mount's destination inside the container's root filesystem, as runc does: a symbolic link on
    /// the way (`/data -> /`, or `-> ../../../etc`) is followed inside the root, never on the host, so the mount
    /// lands where the container sees the path. The runtime then makes the missing directories without following
    /// any link, and refuses one that appears meanwhile.
    pub(super) fn resolve_mount_destinations(
        &self,
        id: &str,
        mounts: &mut [husk_core::MountConfig],
    ) -> Result<()> {
        if mounts.is_empty() {
            return Ok(());
        }
        let tree = husk_fs::Tree::in_root(&self.rootfs(id))?;
        for m in mounts.iter_mut() {
            m.destination = tree
                .resolve_in_tree(&m.destination)
                .map_err(|e| e.context(format!("mount destination {}", m.destination)))?;
        }
        Ok(())
    }

    /// Points the image mounts of `mounts` at where [`Self::ensure_image_mounts`] mounted them: the image's root,
    /// or the object its `subpath` leads to, resolved inside the image (a link in the image cannot lead to the
    /// host's files).
    pub(super) fn image_mount_paths(
        &self,
        id: &str,
        mounts: &mut [husk_core::MountConfig],
    ) -> Result<()> {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m.kind != MountKind::Image {
                continue;
            }
            let root = self.images_dir(id).join(format!("m{i}"));
            let path = match m.subpath.as_deref() {
                None => root,
                Some(sub) => husk_fs::Tree::in_root(&root)
                    .and_then(|tree| tree.resolve(sub))
                    .map_err(|e| {
                        Error::invalid(
                            "image-subpath",
                            format!(
                                "{sub:?} is not in image {} (the image mount on {}): {}",
                                m.source, m.destination, e.message
                            ),
                        )
                    })?,
            };
            m.host_path = path.display().to_string();
        }
        Ok(())
    }

    /// Points the bind and volume mounts of `config` at id-mapped copies of their sources (see
    /// [`husk_container::idmap`]): in the sandbox's user namespace, what host root owns on disk is the
    /// namespace root's, so the containers of a pod can write to the directories they share (an emptyDir).
    pub(super) fn idmap_binds(
        &self,
        id: &str,
        config: &mut ContainerConfig,
        userns: &ContainerUserns,
    ) -> Result<()> {
        let staging = self.idmapped_dir(id);
        for (i, m) in config.mounts.iter_mut().enumerate() {
            if !m.kind.is_host_path() || m.host_path.is_empty() {
                continue;
            }
            let source = PathBuf::from(&m.host_path);
            let copy = staging.join(format!("m{i}"));
            if !is_mountpoint(&copy) {
                if source.is_dir() {
                    mkdir(&copy)?;
                } else {
                    mkdir(&staging)?;
                    std::fs::File::create(&copy)
                        .map_err(|e| Error::io(format!("create {}", copy.display()), e))?;
                }
                husk_container::idmap::mount_idmapped(&source, &copy, &userns.path)
                    .map_err(|e| e.context(format!("the mount on {}", m.destination)))?;
            }
            m.host_path = copy.display().to_string();
        }
        Ok(())
    }
}

/// Unmounts `target` (lazily, so a busy mount cannot block deletion); a path that is not mounted is fine.
pub(super) fn unmount(target: &Path) -> Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::backend(format!("unmount {}: {e}", target.display()))),
    }
}

/// Whether `path` is the root of a mount: one `statx` (its `STATX_ATTR_MOUNT_ROOT`, Linux 5.8) rather than
/// reading the whole mount table, which grows with every container on the host; the table on older kernels.
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: a NUL-terminated path and a zeroed buffer of the type statx fills.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            buf.as_mut_ptr(),
        )
    };
    if r != 0 {
        return false;
    }
    // SAFETY: statx succeeded, so it filled the buffer (which was zeroed before anyway).
    let stx = unsafe { buf.assume_init() };
    let mount_root = libc::STATX_ATTR_MOUNT_ROOT as u64;
    if stx.stx_attributes_mask & mount_root != 0 {
        return stx.stx_attributes & mount_root != 0;
    }
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    text.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_roots_are_told_from_plain_directories() {
        assert!(is_mountpoint(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mountpoint(dir.path()));
        let sub = dir.path().join("m");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mountpoint(&sub));
        if nix::unistd::geteuid().is_root() {
            nix::mount::mount(
                Some("tmpfs"),
                &sub,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            assert!(is_mountpoint(&sub));
            unmount(&sub).unwrap();
            assert!(!is_mountpoint(&sub));
        }
    }
}
