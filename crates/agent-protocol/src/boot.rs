//! What the guest image holds and the agent loads, in which order: the kernel module groups of the guest image
//! (built by the `vm` driver's `guest` module, loaded by the agent at boot).

/// Groups loaded by every guest, first to last.
pub const ALWAYS_LOADED: &[&str] = &["port", "base", "late"];

/// Groups nothing waits for: the agent loads them when the guest's CPU has nothing else to do.
pub const LATE_GROUPS: &[&str] = &["late"];

/// Groups the agent's channel to the host needs (its virtio-serial port or vsock, over either transport): the
/// agent loads these before it serves, the rest while it serves.
pub const PORT_GROUPS: &[&str] = &["port", "mmio", "pci", "vsock"];
