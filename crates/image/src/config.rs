//! Settings of the image store: limits that keep a hostile archive or registry from filling the disk, and what
//! layers may contain.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;

/// Upper bounds on what one load or pull may write. A layer or image over a limit is refused with an error of kind
/// `LimitExceeded` naming the limit, and nothing of it stays on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Most bytes of one layer's uncompressed tar stream (bounds decompression bombs).
    pub max_layer_size: u64,
    /// Most uncompressed bytes of all layers of one image together.
    pub max_image_size: u64,
    /// Most entries (files, directories, links ...) in one layer.
    pub max_layer_entries: u64,
    /// Most bytes of an archive given to `load` (it is spooled to disk before use).
    pub max_archive_size: u64,
    /// Most bytes of a JSON document (manifest, index, image config).
    pub max_json_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_size: 32 * GIB,
            max_image_size: 64 * GIB,
            max_layer_entries: 2_000_000,
            max_archive_size: 64 * GIB,
            max_json_size: 8 << 20,
        }
    }
}

/// How the image store behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// Size limits.
    pub limits: Limits,
    /// Create device nodes found in layers (off by default: a layer with a block or character device is refused).
    pub allow_devices: bool,
    /// Registries: mirrors, insecure registries, credentials, concurrency.
    pub registry: RegistryConfig,
}

/// How husk talks to registries (the daemon config's `[registry]` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Mirrors for Docker Hub (`docker.io`), tried in order before it (`host[:port]` or `http(s)://host[:port]`).
    pub mirrors: Vec<String>,
    /// Where images of a registry are fetched, by the registry's host (`registry.k8s.io` →
    /// `["http://127.0.0.1:5000"]`), in order and instead of the registry (list it too to fall back to it), as
    /// containerd's `hosts.toml`. Images fetched from a mirror keep their upstream names.
    #[serde(default)]
    pub host_mirrors: std::collections::BTreeMap<String, Vec<String>>,
    /// Registries reached over plain HTTP: `host[:port]`, `host` (any port) or a CIDR (`10.0.0.0/8`). Loopback
    /// (`127.0.0.0/8`, `::1`, `localhost`) always is, as in Docker.
    pub insecure_registries: Vec<String>,
    /// husk's credentials file (`husk login` writes it); Docker's `~/.docker/config.json` is read after it.
    /// None: `<store root>/auth.json`.
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Layers uploaded at once per push.
    pub max_concurrent_uploads: usize,
    /// Times a broken layer download is resumed (HTTP range request) before the pull fails.
    pub download_retries: u32,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mirrors: Vec::new(),
            host_mirrors: Default::default(),
            insecure_registries: Vec::new(),
            auth_file: None,
            max_concurrent_downloads: 4,
            max_concurrent_uploads: 4,
            download_retries: 3,
        }
    }
}
