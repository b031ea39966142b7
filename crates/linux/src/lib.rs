#![doc = include_str!("../README.md")]

pub mod driver;

pub use driver::{LinuxDriver, LinuxDriverConfig};
