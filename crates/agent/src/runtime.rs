//! How the agent prepares a container's root filesystem inside the guest, and the holder of a sandbox's shared PID
//! namespace. The containers themselves are made by the `linux` driver's code (see [`crate::shim`]).
//!
//! A container's root is an overlay: lower = its image layers from the 9p share (read-only), upper and work on the
//! guest's tmpfs. The mount points of the sandbox's name files (`/etc/hosts` ...) are made in the writable layer
//! when the image lacks them, so the shim can bind-mount the files over them.

use std::fs::File;
use std::path::PathBuf;

use husk_core::{Context, Error, Result};

use crate::reaper::Reaper;

/// A container as the agent prepares it.
#[derive(Debug, Clone)]
pub struct ContainerSetup {
    /// Container ID.
    pub id: String,
    /// The container's directory in the guest (the bundle; upper, work and rootfs live here).
    pub dir: PathBuf,
    /// Image layer directories, bottom layer first.
    pub lower: Vec<PathBuf>,
    /// Its cgroup directory (libcontainer makes it while the container runs), when the guest has cgroup v2.
    pub cgroup: Option<PathBuf>,
    /// The holder of a PID namespace shared by the sandbox's containers (the VM's `--share-pid`), or `None` for
    /// a PID namespace of the container's own.
    pub shared_pid_ns: Option<i32>,
    /// Files bind-mounted over the image's: (path in the container, file in the guest), for `/etc/hosts`,
    /// `/etc/resolv.conf` and `/etc/hostname`.
    pub etc_files: Vec<(String, PathBuf)>,
}

impl ContainerSetup {
    /// Where its root filesystem is mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// What the agent needs to prepare containers.
pub trait Runtime: Send + Sync {
    /// Prepares the container's root filesystem.
    fn create(&self, c: &ContainerSetup) -> Result<()>;
    /// Removes what `create` made (the caller has ended the processes).
    fn delete(&self, c: &ContainerSetup) -> Result<()>;
    /// Starts the holder of a PID namespace that containers can share: PID 1 there, reaping orphans.
    fn pid_namespace_holder(&self, reaper: &Reaper) -> Result<i32>;
}

/// Overlay roots on the guest's tmpfs, and a cloned holder process for a shared PID namespace.
#[derive(Debug, Default)]
pub struct NamespaceRuntime;

impl Runtime for NamespaceRuntime {
    fn create(&self, c: &ContainerSetup) -> Result<()> {
        if c.lower.is_empty() {
            return Err(Error::invalid(
                "layers",
                "a container needs at least one image layer",
            ));
        }
        for l in &c.lower {
            if !l.is_dir() {
                return Err(Error::not_found(format!(
                    "image layer {} in the guest",
                    l.display()
                )));
            }
        }
        let (upper, work, rootfs) = (c.dir.join("upper"), c.dir.join("work"), c.rootfs());
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).context(format!("create {}", d.display()))?;
        }
        // overlayfs takes the top layer first.
        let lower: Vec<String> = c
            .lower
            .iter()
            .rev()
            .map(|l| l.to_string_lossy().replace(':', "\\:"))
            .collect();
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(data.as_str()),
        )
        .map_err(|e| {
            Error::backend(format!(
                "mount the overlay root of container {} ({data}): {e}",
                c.id
            ))
        })?;
        for (dest, _) in &c.etc_files {
            // The mount point of each name file, in the writable layer when the image lacks it.
            let target = rootfs.join(dest.trim_start_matches('/'));
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
            }
            if std::fs::symlink_metadata(&target).is_err() {
                File::create(&target).context(format!("create {}", target.display()))?;
            }
        }
        Ok(())
    }

    fn pid_namespace_holder(&self, reaper: &Reaper) -> Result<i32> {
        let (pid, _exit) = reaper.spawn(|| {
            // SAFETY: as in clone_child; the child runs only holder_main, which makes plain system calls.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if pid < 0 {
                return Err(Error::backend(format!(
                    "clone a PID namespace holder: {}",
                    std::io::Error::last_os_error()
                )));
            }
            if pid == 0 {
                holder_main();
            }
            Ok(pid as i32)
        })?;
        Ok(pid)
    }

    fn delete(&self, c: &ContainerSetup) -> Result<()> {
        let rootfs = c.rootfs();
        match nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(Error::backend(format!("unmount {}: {e}", rootfs.display()))),
        }
        if c.dir.exists() {
            std::fs::remove_dir_all(&c.dir).context(format!("remove {}", c.dir.display()))?;
        }
        if let Some(cg) = &c.cgroup
            && cg.exists()
        {
            std::fs::remove_dir(cg).context(format!("remove cgroup {}", cg.display()))?;
        }
        Ok(())
    }
}

/// The body of a PID namespace holder (a clone child that never execs): reap whatever dies in the namespace.
fn holder_main() -> ! {
    // SAFETY: signal, waitpid and sleep are plain system calls; nothing here allocates or locks.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        loop {
            if libc::waitpid(-1, std::ptr::null_mut(), 0) < 0 {
                libc::sleep(1);
            }
        }
    }
}
