#![doc = include_str!("../README.md")]

pub mod boot;
pub mod handshake;
pub mod proto;
pub mod status;
