#![doc = include_str!("../README.md")]

pub mod accel;
pub mod client;
pub mod driver;
pub mod guest;
pub mod network;
pub mod qemu;

pub use husk_agent_protocol::{handshake, proto};

pub use accel::{Accel, AccelChoice, AccelDecision};
pub use client::{AgentAddr, AgentClient};
pub use driver::{DEFAULT_TCG_CACHE_MIB, VmDriver, VmDriverConfig};
pub use guest::{GuestConfig, GuestImage, build_guest};
pub use qemu::{Machine, Qmp, Share, Transport, Vm, VmConfig};
