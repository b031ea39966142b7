#![doc = include_str!("../README.md")]

pub mod attached;
pub mod cri_log;
pub mod driver;
pub mod error;
pub mod failpoint;
pub mod health;
pub mod model;
mod names;
pub mod options;
pub mod request;
pub mod stdio;
pub mod time;
pub mod units;

pub use driver::{
    ArchiveReader, BackendChange, Capabilities, ChangeStream, Driver, DriverInfo, LogStream,
    PortForwardTarget, RootfsLayers,
};
pub use error::{CommandFailure, Context, Error, ErrorKind, Result};
pub use failpoint::failpoint;
pub use health::{HealthAction, HealthConfig, HealthResult, HealthState, HealthStatus};
pub use model::*;
pub use options::{ExtractOptions, PathStat, Ulimit};
pub use request::{new_request_id, spawn_blocking};
pub use time::Timestamp;
