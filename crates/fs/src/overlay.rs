//! Container root filesystems: overlayfs over an image's unpacked layers plus a per-container upper dir; and
//! images mounted read-only as volumes (an overlay of the layers alone, or a bind of a single layer).
//!
//! Many layers make a long `lowerdir` list, and `mount(2)` passes all options in one page (4096 bytes). Two ways
//! around it, tried in order:
//! 1. The new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`) with one `lowerdir+` parameter per layer
//!    (Linux 6.8 and later): no length limit beyond 256 bytes per path.
//! 2. `mount(2)` with the full paths when they fit in a page; otherwise each layer is opened (`O_PATH`) and named
//!    `/proc/self/fd/N`, about 18 bytes a layer, so some 200 layers fit (Linux 6.1, Debian 12's kernel).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use husk_core::{Error, Result, RootfsLayers};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// Which kernel interface mounts the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMethod {
    /// The new mount API when the kernel has `lowerdir+`, else `mount(2)`.
    Auto,
    /// `mount(2)` only (what Linux before 6.8 supports).
    Legacy,
}

/// Mounts the root filesystem of a container at `target`: `layers` (read-only, bottom first) under `upper_dir`
/// (the container's changes) with overlayfs's `work_dir` (empty, same filesystem as `upper_dir`).
pub fn mount_rootfs(
    layers: &RootfsLayers,
    upper_dir: &Path,
    work_dir: &Path,
    target: &Path,
) -> Result<()> {
    mount_overlay(
        &layers.layers,
        upper_dir,
        work_dir,
        target,
        MountMethod::Auto,
    )
    .map_err(|e| {
        e.context(format!(
            "mount the root filesystem of image {}",
            layers.image_name
        ))
    })
}

/// Unmounts a root filesystem mounted by [`mount_rootfs`]. Nothing mounted there is not an error; a busy mount is
/// detached (it goes away when its last user does).
pub fn unmount_rootfs(target: &Path) -> Result<()> {
    match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::BUSY) => {
            rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                .map_err(|e| Error::io(format!("unmount {}", target.display()), e.into()))
        }
        Err(e) => Err(Error::io(format!("unmount {}", target.display()), e.into())),
    }
}

/// Mounts an overlay of `lowers` (bottom first) with `upper_dir` and `work_dir` at `target`.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper_dir: &Path,
    work_dir: &Path,
    target: &Path,
    method: MountMethod,
) -> Result<()> {
    mount_overlay_with(lowers, Some((upper_dir, work_dir)), target, method)
}

/// Mounts an image's `layers` (bottom first) read-only, `nosuid` and `nodev` at `target`, with no writable
/// layer: an overlay of the layers alone, or a read-only bind of the one layer of a single-layer image (overlayfs
/// wants two lower directories when it has no upper one). Nothing written through `target` can reach the layers.
pub fn mount_image_readonly(layers: &[PathBuf], target: &Path) -> Result<()> {
    match layers {
        [] => Err(Error::bad_request(
            "an image mount needs at least one layer",
        )),
        [layer] => bind_readonly(layer, target),
        _ => mount_overlay_with(layers, None, target, MountMethod::Auto),
    }
}

/// Binds `source` at `target`, then makes the bind read-only, `nosuid` and `nodev` (a bind takes those flags
/// only on a remount). A failed remount leaves nothing mounted.
fn bind_readonly(source: &Path, target: &Path) -> Result<()> {
    rustix::mount::mount_bind(source, target).map_err(|e| {
        Error::io(
            format!("bind {} at {}", source.display(), target.display()),
            e.into(),
        )
    })?;
    let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    if let Err(e) = rustix::mount::mount_remount(target, MountFlags::BIND | flags, "") {
        let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
        return Err(Error::io(
            format!("make {} read-only", target.display()),
            e.into(),
        ));
    }
    Ok(())
}

/// Unmounts every mount point directly in `dir` (each detached, so a busy one cannot block), removes them and
/// then `dir`. A missing `dir` is fine. Removal never follows into a mount: one that stayed fails it instead.
pub fn unmount_all_in(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match rustix::mount::unmount(&path, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH) {
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::io(format!("unmount {}", path.display()), e.into())),
        }
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

/// An upper and a work directory.
type Writable<'a> = Option<(&'a Path, &'a Path)>;

/// Mounts an overlay of `lowers` at `target`: writable through `upper` (upper and work directories), or
/// read-only, `nosuid` and `nodev` without one.
fn mount_overlay_with(
    lowers: &[PathBuf],
    upper: Writable<'_>,
    target: &Path,
    method: MountMethod,
) -> Result<()> {
    if lowers.is_empty() {
        return Err(Error::bad_request(
            "an overlay needs at least one lower directory",
        ));
    }
    if method == MountMethod::Auto && kernel_has_lowerdir_plus() {
        match mount_new_api(lowers, upper, target) {
            Ok(()) => return Ok(()),
            Err(NewApi::Unsupported(why)) => {
                tracing::debug!(why, "overlay: new mount API unusable, using mount(2)")
            }
            // Before Linux 6.5 overlayfs took fsconfig parameters through the legacy adapter, which accepts any key
            // and fails only at creation: whatever failed, mount(2) gets its chance, and its error is the one shown.
            Err(NewApi::Failed(e)) => {
                return mount_legacy(lowers, upper, target).map_err(|legacy| {
                    legacy.context(format!("(the new mount API failed too: {})", e.message))
                });
            }
        }
    }
    mount_legacy(lowers, upper, target)
}

/// Whether the running kernel is 6.8 or later (overlayfs's `lowerdir+`).
fn kernel_has_lowerdir_plus() -> bool {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    kernel_at_least(&release, 6, 8)
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (maj, min) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (maj, min) >= (major, minor)
}

enum NewApi {
    /// The kernel lacks something: fall back.
    Unsupported(String),
    /// A real failure.
    Failed(Error),
}

fn mount_new_api(
    lowers: &[PathBuf],
    upper: Writable<'_>,
    target: &Path,
) -> std::result::Result<(), NewApi> {
    let fs =
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
            Errno::NOSYS => NewApi::Unsupported("no fsopen".into()),
            e => NewApi::Failed(Error::io("open overlay filesystem context", e.into())),
        })?;
    for dir in lowers.iter().rev() {
        if let Err(e) = rustix::mount::fsconfig_set_string(&fs, "lowerdir+", dir.as_path()) {
            // EINVAL: a kernel without lowerdir+ (before 6.8), or a path over fsconfig's 256 bytes.
            return Err(NewApi::Unsupported(format!(
                "lowerdir+ {}: {e} {}",
                dir.display(),
                kernel_messages(&fs)
            )));
        }
    }
    let set = |key: &str, value: &Path| {
        rustix::mount::fsconfig_set_string(&fs, key, value).map_err(|e| {
            NewApi::Failed(Error::io(
                format!(
                    "overlay {key} {}: {}",
                    value.display(),
                    kernel_messages(&fs)
                ),
                e.into(),
            ))
        })
    };
    let attributes = match upper {
        Some((upper_dir, work_dir)) => {
            set("upperdir", upper_dir)?;
            set("workdir", work_dir)?;
            MountAttrFlags::empty()
        }
        None => {
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
        }
    };
    rustix::mount::fsconfig_create(&fs).map_err(|e| {
        NewApi::Failed(Error::io(
            format!("create overlay ({})", kernel_messages(&fs)),
            e.into(),
        ))
    })?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attributes)
        .map_err(|e| NewApi::Failed(Error::io("overlay fsmount", e.into())))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        NewApi::Failed(Error::io(
            format!("attach overlay at {}", target.display()),
            e.into(),
        ))
    })
}

/// What the kernel logged on a filesystem context (`e overlayfs: ...` lines), for error messages.
fn kernel_messages(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

/// The page `mount(2)` copies options into.
const MOUNT_DATA_MAX: usize = 4095;

fn needs_escape(p: &Path) -> bool {
    p.as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b':' | b',' | b'\\'))
}

fn mount_legacy(lowers: &[PathBuf], upper: Writable<'_>, target: &Path) -> Result<()> {
    let (tail, flags) = match upper {
        Some((upper_dir, work_dir)) => {
            let tail = format!(
                ",upperdir={},workdir={}",
                upper_dir.display(),
                work_dir.display()
            );
            if needs_escape(upper_dir) || needs_escape(work_dir) {
                return Err(Error::bad_request(format!(
                    "overlay upper and work directories cannot contain ':', ',' or '\\': {tail}"
                )));
            }
            (tail, MountFlags::empty())
        }
        None => (
            String::new(),
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
        ),
    };
    let plain: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let plain_data = format!("lowerdir={}{tail}", plain.join(":"));
    if plain_data.len() <= MOUNT_DATA_MAX && !lowers.iter().any(|p| needs_escape(p)) {
        return mount_data(&plain_data, target, flags);
    }
    // Too long (or awkward characters): name each layer by a descriptor this process holds.
    let mut fds = Vec::with_capacity(lowers.len());
    for dir in lowers.iter().rev() {
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("open layer {}", dir.display()), e.into()))?;
        fds.push(fd);
    }
    let names: Vec<String> = fds
        .iter()
        .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .collect();
    let data = format!("lowerdir={}{tail}", names.join(":"));
    if data.len() > MOUNT_DATA_MAX {
        return Err(Error::unsupported(format!(
            "the image has {} layers: too many for overlayfs mount options on this kernel (Linux 6.8 or later mounts them)",
            lowers.len()
        )));
    }
    let result = mount_data(&data, target, flags);
    drop(fds);
    result
}

fn mount_data(data: &str, target: &Path, flags: MountFlags) -> Result<()> {
    let data =
        CString::new(data).map_err(|_| Error::bad_request("overlay options contain a NUL byte"))?;
    rustix::mount::mount("overlay", target, "overlay", flags, data.as_c_str())
        .map_err(|e| Error::io(format!("mount overlay at {}", target.display()), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.18.44-fc-v657", 6, 8));
        assert!(kernel_at_least("6.8.0", 6, 8));
        assert!(!kernel_at_least("6.1.0-56-amd64", 6, 8));
        assert!(!kernel_at_least("5.15.0", 6, 8));
        assert!(!kernel_at_least("garbage", 6, 8));
    }

    /// Images of one and of two layers mount read-only (the upper layer wins, nothing can be written or made
    /// there) and `unmount_all_in` leaves no mount and no directory.
    #[test]
    fn images_mount_read_only_and_go_away() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (bottom, top) = (dir.path().join("l0"), dir.path().join("l1"));
        for (layer, text) in [(&bottom, "bottom"), (&top, "top")] {
            std::fs::create_dir_all(layer.join("data")).unwrap();
            std::fs::write(layer.join("data/which"), text).unwrap();
        }
        std::fs::write(bottom.join("data/only-bottom"), "b").unwrap();
        let mounts = dir.path().join("images");
        let (one, two) = (mounts.join("one"), mounts.join("two"));
        for m in [&one, &two] {
            std::fs::create_dir_all(m).unwrap();
        }
        mount_image_readonly(std::slice::from_ref(&bottom), &one).unwrap();
        mount_image_readonly(&[bottom.clone(), top.clone()], &two).unwrap();
        assert_eq!(
            std::fs::read_to_string(one.join("data/which")).unwrap(),
            "bottom"
        );
        assert_eq!(
            std::fs::read_to_string(two.join("data/which")).unwrap(),
            "top"
        );
        assert!(two.join("data/only-bottom").exists());
        for m in [&one, &two] {
            let write = std::fs::write(m.join("data/which"), "changed").unwrap_err();
            assert_eq!(write.raw_os_error(), Some(libc_erofs()), "{write}");
            let make = std::fs::write(m.join("new"), "x").unwrap_err();
            assert_eq!(make.raw_os_error(), Some(libc_erofs()), "{make}");
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let line = info
                .lines()
                .find(|l| l.split_whitespace().nth(4) == Some(m.to_str().unwrap()))
                .expect("mounted");
            let options = line.split_whitespace().nth(5).unwrap();
            for want in ["ro", "nosuid", "nodev"] {
                assert!(options.split(',').any(|o| o == want), "{want} in {line}");
            }
        }
        assert_eq!(
            std::fs::read_to_string(bottom.join("data/which")).unwrap(),
            "bottom"
        );
        assert!(mount_image_readonly(&[], &one).is_err());
        unmount_all_in(&mounts).unwrap();
        assert!(!mounts.exists());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!info.contains(mounts.to_str().unwrap()), "{info}");
        unmount_all_in(&mounts).unwrap();
    }

    fn libc_erofs() -> i32 {
        Errno::ROFS.raw_os_error()
    }
}
