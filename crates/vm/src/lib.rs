//! husk's `vm` driver: containers inside lightweight virtual machines (the "clear container" model).
//!
//! - [`guest`]: builds and caches the guest image (a kernel and an initramfs holding the `husk-agent` binary as
//!   `/init` and the kernel modules it loads, in dependency order from `modules.dep`);
//! - [`accel`]: picks KVM or TCG without hanging on a `/dev/kvm` whose vCPUs never run;
//! - [`qemu`]: starts QEMU (`microvm` by default), controls it over QMP and finds it again after a restart;
//! - [`client`]: the host side of the agent protocol ([`husk_agent_protocol`]), over virtio-serial or vsock;
//! - [`driver`]: [`VmDriver`], the `husk_core::Driver` of the `vm` driver (a sandbox is a VM; a standalone
//!   container gets one of its own).

pub mod accel;
pub mod client;
pub mod driver;
pub mod guest;
pub mod network;
pub mod qemu;

pub use husk_agent_protocol::{handshake, proto};

pub use accel::{Accel, AccelChoice, AccelDecision};
pub use client::{AgentAddr, AgentClient};
pub use driver::{VmDriver, VmDriverConfig};
pub use guest::{GuestConfig, GuestImage, build_guest};
pub use qemu::{Machine, Qmp, Share, Transport, Vm, VmConfig};
