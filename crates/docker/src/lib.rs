//! husk's Docker Engine driver: husk sandboxes and containers made real as containers of a Docker Engine,
//! through its HTTP API (the `bollard` client).
//!
//! * **Sandbox mode.** A sandbox is an *infra container* running `husk-pause` from a one-layer image this crate
//!   builds from the static `husk-pause` binary and loads into the engine itself (no registry). It holds the
//!   sandbox's network (Docker's bridge, `host`, `none` or a named network), published ports, hostname and a
//!   shareable IPC namespace; with `share_pid` its PID namespace too, where `husk-pause` is PID 1 and reaps.
//!   Containers join it with `NetworkMode`, `IpcMode` (and `PidMode`) = `container:<infra id>`.
//! * **Standalone mode.** The container has its own network, hostname and ports.
//! * Every engine object carries labels ([`labels`]) naming the husk daemon instance that made it and the husk
//!   IDs, so several husk daemons share one engine without touching each other's objects, and a restarted
//!   daemon finds its objects again ([`DockerDriver::list_owned`]).
//! * Images reach the engine from husk's image store through [`ImageSource`] (a `docker save` archive) when the
//!   engine does not already have the image by ID.
//! * Restart policies, `--rm` and stop (signal, wait, SIGKILL) stay with husk's engine: engine containers
//!   never get a Docker restart policy or auto-removal.
//! * **Privileged** containers are emulated: `docker run --privileged` asks the runtime for every capability
//!   Docker knows, which fails on hosts whose bounding set lacks some (CAP_SYS_RESOURCE on husk's CI). husk
//!   instead adds every capability the daemon process itself has, disables seccomp, masked and read-only paths,
//!   and passes every host device with an allow-all device cgroup rule. `/sys` stays read-only (Docker mounts it
//!   read-write only for its own privileged flag).

pub mod config;
pub mod labels;

mod client;
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
