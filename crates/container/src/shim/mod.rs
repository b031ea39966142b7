//! The per-container monitor process (`husk shim`) and the daemon's client for it.

pub mod client;
mod fdio;
pub mod proto;
mod resident;
pub mod server;

pub use client::{ShimClient, spawn_shim};
pub use proto::{Request, Response, ShimConfig, ShimStatus};
pub use server::run;
