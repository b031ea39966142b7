#![doc = include_str!("../README.md")]

mod builtin;
mod cache;
pub mod config;
pub mod conflist;
pub mod dns;
mod iptables;
pub mod netns;
mod networks;
pub mod plugin;
mod ports;
pub mod result;
pub mod subnet;

pub use config::CniConfig;
pub use dns::SandboxFiles;
pub use networks::{AttachedSandbox, Mode, NetworkInfo, Networks, NewNetwork, SANDBOX_IFNAME};
