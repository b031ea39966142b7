//! What `system df` shows: the disk use of images and containers.

use serde::{Deserialize, Serialize};

use crate::images::DiskUsage;

/// One container's share of the disk, for `system df`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerUsage {
    /// Container ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Image ID.
    pub image_id: String,
    /// Running or paused.
    pub active: bool,
    /// Bytes of its changes to the image's files (its writable layer), when its driver keeps them here.
    pub size: Option<u64>,
}

/// What a container's writable layer (its changes to its image's files) uses on the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerUsage {
    /// Bytes of its regular files (a file with several hard links counted once).
    pub bytes: u64,
    /// Its files, directories, links and other inodes.
    pub inodes: u64,
}

/// Disk use of images and containers (`husk system df`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemDf {
    /// The image store.
    pub images: DiskUsage,
    /// Every container.
    pub containers: Vec<ContainerUsage>,
}
