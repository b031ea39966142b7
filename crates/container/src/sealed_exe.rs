//! A sealed, in-memory copy of the husk executable, for every process that enters a container.
//!
//! A process inside a container can reach the executable of any process it can see through `/proc/PID/exe`
//! and `/proc/PID/map_files/`, and can run it with a script whose interpreter is `#!/proc/self/exe`. The
//! processes that enter a container's namespaces (the container's init and every exec, both clones of the shim;
//! the sandbox's pause process; the container-fs helper) are husk code, so if they ran from the host's husk
//! file, a container could hold a descriptor to that file and, once no process executes it any more, write to
//! it: the next `husk daemon` root starts would be the container's (CVE-2019-5736, runc's fix:
//! `libcontainer/dmz` and its cloned binary).
//!
//! So those processes run from a [`SealedExe`]: a memfd holding a copy of the binary, sealed against every
//! change (`F_SEAL_WRITE`, `F_SEAL_GROW`, `F_SEAL_SHRINK`, `F_SEAL_SEAL`, and `F_SEAL_EXEC` where the kernel
//! has it). A container that opens it gets a descriptor to an anonymous, immutable file, not to the host's.
//! The copy is made once per daemon (or guest agent) and reused for every spawn, so a container start pays
//! nothing for it; processes started from it that start husk again (`/proc/self/exe`) reuse the same copy.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use husk_core::{Error, Result};

/// `memfd_create`'s flag for an executable memfd (Linux 6.3; older kernels refuse unknown flags with EINVAL).
const MFD_EXEC: libc::c_uint = 0x0010;

/// Every seal that freezes a memfd's contents, and then its seals.
const CONTENT_SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A read-only, sealed copy of an executable in memory, to spawn processes from.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
    len: u64,
}

impl SealedExe {
    /// A sealed copy of the executable at `path`.
    pub fn copy_of(path: &Path) -> Result<SealedExe> {
        let mut source =
            File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let len = source
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        let mut copy = File::from(memfd("husk")?);
        // std copies file to file with copy_file_range/sendfile: in the kernel, no buffer of ours.
        let copied = std::io::copy(&mut source, &mut copy)
            .map_err(|e| Error::io(format!("copy {} into memory", path.display()), e))?;
        if copied != len {
            return Err(Error::internal(format!(
                "{} changed while it was copied ({len} bytes, {copied} copied)",
                path.display()
            )));
        }
        let fd = OwnedFd::from(copy);
        seal(&fd)?;
        Ok(SealedExe { fd, len })
    }

    /// A sealed copy of the running executable: itself when it already runs from one (a process started
    /// from a [`SealedExe`] passes it on for free), a new copy otherwise.
    pub fn of_current() -> Result<SealedExe> {
        let own = Path::new("/proc/self/exe");
        let file = File::open(own).map_err(|e| Error::io("open /proc/self/exe", e))?;
        if is_sealed(&file) {
            let len = file
                .metadata()
                .map_err(|e| Error::io("stat /proc/self/exe", e))?
                .len();
            return Ok(SealedExe {
                fd: OwnedFd::from(file),
                len,
            });
        }
        SealedExe::copy_of(own)
    }

    /// The path to execute the copy by, valid in this process and in the children it spawns (until their
    /// exec: the descriptor is close-on-exec, and an ELF executable is opened before those close).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The copy's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the copy is empty (never, for an executable).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The copy's contents, read from the start (for checks and tests).
    pub fn contents(&self) -> Result<Vec<u8>> {
        let mut file = File::from(
            self.fd
                .try_clone()
                .map_err(|e| Error::io("duplicate the sealed executable", e))?,
        );
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek the sealed executable", e))?;
        let mut buf = Vec::with_capacity(self.len as usize);
        file.read_to_end(&mut buf)
            .map_err(|e| Error::io("read the sealed executable", e))?;
        Ok(buf)
    }
}

/// Gives a process started from a [`SealedExe`] the command name `name`. The kernel names a process after the
/// file it executed, here `/proc/self/fd/N`, so `ps` and `top` would show `N`; called first thing in `main`, it
/// changes nothing for a process started any other way.
pub fn name_started_process(name: &str) {
    let mut current = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer we pass.
    if unsafe { libc::prctl(libc::PR_GET_NAME, current.as_mut_ptr()) } != 0 {
        return;
    }
    let len = current
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(current.len());
    if len == 0 || !current[..len].iter().all(u8::is_ascii_digit) {
        return;
    }
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string (truncated to 15 bytes by the kernel).
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    }
}

/// Whether `file` is a memfd with every content seal set.
pub fn is_sealed(file: &File) -> bool {
    // SAFETY: F_GET_SEALS on a descriptor we own; it fails (EINVAL) on files that are not memfds.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & CONTENT_SEALS == CONTENT_SEALS
}

/// A new close-on-exec memfd that allows sealing and executing.
fn memfd(name: &str) -> Result<OwnedFd> {
    let name = std::ffi::CString::new(name).map_err(|_| Error::internal("memfd name has a NUL"))?;
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a NUL-terminated name we own and constant flags; the result is checked.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), base | MFD_EXEC) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // Before Linux 6.3 every memfd is executable and MFD_EXEC is unknown.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), base) };
    }
    if fd < 0 {
        return Err(Error::io(
            "memfd_create for the sealed husk executable",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the memfd read-only for everyone (mode 0555) and seals its contents, its mode's exec bits where the
/// kernel can (`F_SEAL_EXEC`, Linux 6.3), and finally its seals.
fn seal(fd: &OwnedFd) -> Result<()> {
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o555) } != 0 {
        return Err(Error::io(
            "make the sealed husk executable read-only",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: F_ADD_SEALS with constant flags on a memfd we own; failure (older kernel) is fine here.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_EXEC) };
    // SAFETY: as above; this one must succeed.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, CONTENT_SEALS) } != 0 {
        return Err(Error::io(
            "seal the husk executable's copy",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_copy_is_identical_and_cannot_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prog");
        std::fs::write(&path, b"#!/bin/sh\necho sealed\n").unwrap();
        let sealed = SealedExe::copy_of(&path).unwrap();
        assert_eq!(sealed.contents().unwrap(), b"#!/bin/sh\necho sealed\n");
        assert_eq!(sealed.len(), 22);

        // Through its path, as a container would reach it through /proc/PID/exe.
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(sealed.path())
            .and_then(|mut f| f.write_all(b"x"))
            .unwrap_err();
        assert!(
            matches!(err.raw_os_error(), Some(libc::EPERM | libc::EACCES)),
            "{err}"
        );
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(sealed.path()) {
            assert!(f.write_all(b"x").is_err());
        }
        let f = File::open(sealed.path()).unwrap();
        assert!(f.set_len(1).is_err(), "shrink");
        assert!(f.set_len(100).is_err(), "grow");
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o555);
        assert!(is_sealed(&f));
        // SAFETY: F_ADD_SEALS on a descriptor we own: the seals are sealed.
        let added = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_WRITE) };
        assert!(added < 0);
        assert_eq!(sealed.contents().unwrap(), b"#!/bin/sh\necho sealed\n");
    }

    #[test]
    fn a_sealed_copy_runs_and_passes_itself_on() {
        let sealed = SealedExe::copy_of(Path::new("/bin/true")).unwrap();
        let status = std::process::Command::new(sealed.path()).status().unwrap();
        assert!(status.success());
        // The kernel names it after the descriptor's number.
        let sealed_cat = SealedExe::copy_of(Path::new("/bin/cat")).unwrap();
        let out = std::process::Command::new(sealed_cat.path())
            .arg("/proc/self/comm")
            .output()
            .unwrap();
        let comm = String::from_utf8(out.stdout).unwrap();
        assert!(comm.trim().chars().all(|c| c.is_ascii_digit()), "{comm}");
        // A process already running from a sealed copy gets that copy back, not a second one.
        let own = File::open(sealed.path()).unwrap();
        assert!(is_sealed(&own));
        assert!(!is_sealed(&File::open("/bin/true").unwrap()));
    }
}
