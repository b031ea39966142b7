//! Volumes as the API shows them, and what `volume create` and `volume prune` carry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A request to create a volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeCreate {
    /// Name (a random one when empty).
    pub name: Option<String>,
    /// Driver: only `local`.
    pub driver: Option<String>,
    /// Driver options: the local driver takes none.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A volume as `volume inspect` shows it (Docker's field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeView {
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Host directory of the data.
    pub mountpoint: String,
    /// When it was created.
    pub created_at: husk_core::Timestamp,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Always `local`.
    pub scope: String,
    /// Made for one container.
    pub anonymous: bool,
    /// Owning sandbox ID, if any.
    pub sandbox: Option<String>,
    /// Name inside the owning sandbox.
    pub alias: Option<String>,
    /// Names of the containers that use it.
    pub used_by: Vec<String>,
}

/// What `volume prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumePruneReport {
    /// Names of the volumes removed.
    pub volumes_deleted: Vec<String>,
    /// Bytes freed.
    pub space_reclaimed: u64,
}
