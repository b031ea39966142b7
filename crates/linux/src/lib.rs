//! husk's built-in `linux` driver.
//!
//! Sandboxes are pinned namespaces ([`namespaces`]); containers are made by youki's libcontainer inside a
//! per-container monitor process ([`shim`]) from an OCI spec generated with secure defaults ([`spec`],
//! [`security`]). The daemon side is [`LinuxDriver`].

pub mod cgroups;
pub mod command;
pub mod container_fs;
pub mod driver;
pub mod fs_helper;
pub mod logs;
pub mod namespaces;
pub mod sealed_exe;
pub mod seccomp_bpf;
pub mod security;
pub mod shim;
pub mod spec;
pub mod user;

pub use driver::{LinuxDriver, LinuxDriverConfig};
