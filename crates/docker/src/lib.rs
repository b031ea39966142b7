#![doc = include_str!("../README.md")]

pub mod config;
pub mod labels;

mod archive;
mod client;
mod cri_log;
mod driver;
mod driver_impl;
mod hijack;
mod logs;
mod pause_image;
mod privileged;
mod sessions;
mod spec;
mod stats;
mod stdio_bridge;

pub use client::MIN_API_VERSION;
pub use config::{DEFAULT_HOST, DockerDriverConfig, ImageArchive, ImageSource};
pub use driver::{DockerDriver, EngineEvent, EngineEvents, OwnedContainer};
pub use labels::Role;
