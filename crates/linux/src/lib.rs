#![doc = include_str!("../README.md")]

pub mod driver;
pub mod pool;

pub use driver::{LinuxDriver, LinuxDriverConfig};
