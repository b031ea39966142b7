#![doc = include_str!("../README.md")]

pub mod base_ns;
pub mod cgroups;
pub mod command;
pub mod container_fs;
pub mod fs_helper;
pub mod idmap;
pub mod logs;
pub mod namespaces;
pub mod sealed_exe;
pub mod seccomp_bpf;
pub mod security;
pub mod shim;
pub mod spec;
pub mod user;
