//! husk's domain: sandboxes, containers, their lifecycle, the driver contract and the error type.
//!
//! This crate does no I/O of its own (the stdio framing works on any async stream it is given); every other
//! husk crate builds on it.

pub mod attached;
pub mod driver;
pub mod error;
pub mod health;
pub mod model;
pub mod options;
pub mod stdio;
pub mod units;

pub use driver::{
    ArchiveReader, BackendChange, Capabilities, ChangeStream, Driver, DriverInfo, LogStream,
    RootfsLayers,
};
pub use error::{Context, Error, ErrorKind, Result};
pub use health::{HealthAction, HealthConfig, HealthResult, HealthState, HealthStatus};
pub use model::*;
pub use options::{ExtractOptions, PathStat, Ulimit};
