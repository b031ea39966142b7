#![doc = include_str!("../README.md")]

pub mod registry;

use std::path::PathBuf;

/// The directory tests make their directories in: `HUSK_TEST_TMP`, else `/var/tmp`, on a filesystem with trusted
/// xattrs and device nodes (not a tmpfs, which `/tmp` may be). Made if missing.
pub fn test_tmp() -> PathBuf {
    let dir = std::env::var_os("HUSK_TEST_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    std::fs::create_dir_all(&dir).expect("make the tests' temporary directory");
    dir
}
