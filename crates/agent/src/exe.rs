//! The executable the agent starts its shims and container-fs helpers from, never the agent's own writable file:
//! a container that opens `/proc/PID/exe` of a process that entered it must not be able to write the program
//! the guest's PID 1 runs (CVE-2019-5736's class, docs/security.md).
//!
//! - In a guest, the boot binds the agent's file read-only at [`GUEST_AGENT`] ([`crate::init`]): free, and
//!   enough there, because husk owns the guest's whole mount table and no container process may remount. (A
//!   sealed in-memory copy, as the `linux` driver uses on hosts, cost 320 ms of the boot under TCG.)
//! - Run by hand on a host (tests), a sealed in-memory copy ([`husk_container::sealed_exe`]), made on first use.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use husk_container::sealed_exe::SealedExe;
use husk_core::{Error, Result};

/// Where the guest's boot binds the agent's file read-only.
pub const GUEST_AGENT: &str = "/.husk/agent";

static IN_GUEST: AtomicBool = AtomicBool::new(false);
static SEALED: OnceLock<std::result::Result<SealedExe, String>> = OnceLock::new();

/// Tells that the boot has bound the agent at [`GUEST_AGENT`].
pub fn use_guest_binding() {
    IN_GUEST.store(true, Ordering::SeqCst);
}

/// The path to start a process that enters a container from.
pub fn path() -> Result<PathBuf> {
    if IN_GUEST.load(Ordering::SeqCst) {
        return Ok(PathBuf::from(GUEST_AGENT));
    }
    match SEALED.get_or_init(|| SealedExe::of_current().map_err(|e| e.to_string())) {
        Ok(sealed) => Ok(sealed.path()),
        Err(e) => Err(Error::backend(format!(
            "no sealed copy of the agent to start container processes from: {e}"
        ))),
    }
}
