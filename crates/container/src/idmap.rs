//! Id-mapped mounts (Linux 5.12): a copy of a mount whose files show the owners a user namespace maps their
//! on-disk owners to, so that the root of a sandbox's user namespace owns what host root owns on disk.
//!
//! The daemon makes them on the host before the container starts (libcontainer does not make id-mapped mounts):
//! `open_tree(OPEN_TREE_CLONE)` copies the source mount, `mount_setattr(MOUNT_ATTR_IDMAP)` maps the copy through
//! the sandbox's pinned user namespace and `move_mount` attaches it at a staging path, which the container then
//! uses in place of the source. Overlayfs cannot be id-mapped as a whole, so a container's root filesystem is an
//! overlay of id-mapped layers instead.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use husk_core::{Error, Result};

const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
#[derive(Debug, Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid("mounts", format!("{} has a NUL byte", path.display())))
}

/// Mounts at `target` (an existing directory, or file for a file `source`) a copy of the mount tree at `source`
/// (recursively: submounts too) id-mapped through the user namespace pinned at `userns`: a file owned by ID `n`
/// on disk is owned, through the copy, by the host ID that the namespace's `n` is.
pub fn mount_idmapped(source: &Path, target: &Path, userns: &Path) -> Result<()> {
    let what = |step: &str| format!("{step} an id-mapped copy of {}", source.display());
    let userns_file =
        File::open(userns).map_err(|e| Error::io(format!("open {}", userns.display()), e))?;
    let src = c_path(source)?;
    let dst = c_path(target)?;
    // SAFETY: open_tree with a NUL-terminated path we own and constant flags; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(what("make"), std::io::Error::last_os_error()));
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: userns_file.as_raw_fd() as u64,
        ..Default::default()
    };
    let empty = c"";
    // SAFETY: mount_setattr on our detached tree with an empty path, AT_EMPTY_PATH, and a mount_attr we own
    // with its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(Error::io(what("map"), std::io::Error::last_os_error()));
    }
    // SAFETY: move_mount of our detached tree onto a NUL-terminated path we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(Error::io(
            format!("{} at {}", what("attach"), target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Unmounts (lazily, with its submounts) and removes every entry of `dir` made by [`mount_idmapped`], then
/// `dir`. A missing `dir` is fine. Nothing is removed while it is still mounted, so the sources stay untouched.
pub fn remove_idmapped(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::backend(format!("unmount {}: {e}", path.display())));
            }
        }
        // remove_dir and remove_file never follow into a mount: a busy or remaining mount fails them instead.
        let removed = if path.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_copy_shows_the_owners_the_namespace_maps_to() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (src, staging, ns) = (
            dir.path().join("src"),
            dir.path().join("idmap"),
            dir.path().join("ns"),
        );
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), "x").unwrap();
        let map = vec![husk_core::IdMapping {
            container_id: 0,
            host_id: 100_000,
            size: 65536,
        }];
        let userns = husk_core::UserNamespaceConfig {
            uid_mappings: map.clone(),
            gid_mappings: map,
        };
        let (pinned, _) =
            crate::namespaces::create_pinned_in_userns(&ns, "h", &[], &userns, None).unwrap();
        let target = staging.join("m0");
        std::fs::create_dir_all(&target).unwrap();
        mount_idmapped(&src, &target, &pinned["user"]).unwrap();
        let meta = std::fs::metadata(target.join("f")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000));
        remove_idmapped(&staging).unwrap();
        assert!(!staging.exists());
        assert_eq!(
            std::fs::read_to_string(src.join("f")).unwrap(),
            "x",
            "the source is kept"
        );
        crate::namespaces::remove_pinned(&ns).unwrap();
    }
}
