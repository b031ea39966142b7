//! Images as the API shows them, and what image operations report: loads, removals, prunes, disk use, pulls,
//! pushes and their progress, and the pull policy a request names.
//!
//! [`ImageView`] is the API's image (Docker's `inspect` field names). The image store keeps its own record and
//! makes this view from it, so the store's record can change without changing what clients see. The nested
//! [`RunConfig`], [`ImageLayer`] and [`BlobRef`] are the OCI image config's own shapes, shared on purpose.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use husk_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::mpsc::UnboundedSender;

/// An image, as `inspect` and `images` show it (Docker's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageView {
    /// Image ID: `sha256:` digest of its config.
    pub id: String,
    /// Normalised names (`docker.io/library/busybox:latest`).
    #[serde(default)]
    pub repo_tags: Vec<String>,
    /// `name@sha256:<manifest digest>` for images that came from a registry or an OCI layout.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// When the image was built (RFC 3339, from its config): the config's own text, kept as its builder wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `amd64`, `arm64` ...
    #[serde(default)]
    pub architecture: String,
    /// `linux` ...
    #[serde(default)]
    pub os: String,
    /// CPU variant (`v8`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Author, from the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// What the image says to run.
    #[serde(default)]
    pub config: RunConfig,
    /// Layers, bottom first.
    #[serde(default)]
    pub layers: Vec<ImageLayer>,
    /// Bytes of file content in all layers (what `images` shows as SIZE).
    #[serde(default)]
    pub size: u64,
    /// The manifest blob kept in the store, when the image came with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<BlobRef>,
    /// When the image arrived here; `""` when unknown.
    #[serde(default, with = "husk_core::time::optional")]
    pub loaded_at: Option<husk_core::Timestamp>,
}

impl ImageView {
    /// The name to show: the first tag, or the short ID when the image has none.
    pub fn display_name(&self) -> String {
        self.repo_tags.first().cloned().unwrap_or_else(|| {
            self.id
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect()
        })
    }
}

/// What an image says to run, from its config (Docker's `config` object; OCI's is the same without Healthcheck).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RunConfig {
    /// ENTRYPOINT (empty = none).
    #[serde(deserialize_with = "string_or_list")]
    pub entrypoint: Vec<String>,
    /// CMD (empty = none).
    #[serde(deserialize_with = "string_or_list")]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs.
    #[serde(deserialize_with = "null_default")]
    pub env: Vec<String>,
    /// WORKDIR (empty = `/`).
    #[serde(deserialize_with = "null_default")]
    pub working_dir: String,
    /// USER (empty = root).
    #[serde(deserialize_with = "null_default")]
    pub user: String,
    /// Ports as `80/tcp`.
    #[serde(deserialize_with = "set_keys", serialize_with = "as_set")]
    pub exposed_ports: Vec<String>,
    /// Volume paths.
    #[serde(deserialize_with = "set_keys", serialize_with = "as_set")]
    pub volumes: Vec<String>,
    /// LABELs.
    #[serde(deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    /// STOPSIGNAL (`SIGQUIT`, `9` ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// HEALTHCHECK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

/// A HEALTHCHECK as Docker records it (durations in nanoseconds, 0 = the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(deserialize_with = "null_default")]
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: i64,
    /// Time before a check counts as failed.
    pub timeout: i64,
    /// Grace period after start.
    pub start_period: i64,
    /// Time between checks during the start period.
    pub start_interval: i64,
    /// Failures in a row before unhealthy.
    pub retries: i64,
}

/// A field that may be `null` in an image config: read as its default.
pub fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// ENTRYPOINT and CMD are lists, but old images have plain strings (Docker reads both).
pub fn string_or_list<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::One(s)) => vec![s],
        Some(Either::Many(v)) => v,
    })
}

/// `{"80/tcp": {}}` (Docker's set) becomes `["80/tcp"]`; a plain list is read too.
pub fn set_keys<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Set(BTreeMap<String, serde_json::Value>),
        List(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::Set(m)) => m.into_keys().collect(),
        Some(Either::List(v)) => v,
    })
}

/// Writes a list as Docker's set: `{"80/tcp": {}}`.
pub fn as_set<S: serde::Serializer>(
    items: &[String],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(items.len()))?;
    for item in items {
        map.serialize_entry(item, &serde_json::json!({}))?;
    }
    map.end()
}

/// A layer of an image: its uncompressed identity and the blob it came as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageLayer {
    /// `sha256:` of the uncompressed tar (names the unpacked directory).
    pub diff_id: String,
    /// The blob (possibly compressed) kept in the content store.
    pub blob: BlobRef,
}

/// A blob in the content store, as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlobRef {
    /// `sha256:...`
    pub digest: String,
    /// Bytes.
    pub size: u64,
    /// OCI or Docker media type.
    pub media_type: String,
}

/// When to pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull every time (the registry's image wins).
    Always,
    /// Pull only when the image is not here (Docker's `missing`, Zun's and Kubernetes' `ifnotpresent`).
    #[default]
    Missing,
    /// Never pull: the image must be here.
    Never,
}

impl FromStr for PullPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(PullPolicy::Always),
            "missing" | "ifnotpresent" | "if-not-present" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            _ => Err(Error::invalid(
                "pull",
                format!("invalid pull policy {s:?}: use always, missing (ifnotpresent) or never"),
            )),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "always",
            PullPolicy::Missing => "missing",
            PullPolicy::Never => "never",
        })
    }
}

/// What a layer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    /// Queued behind other transfers.
    Waiting,
    /// Already here (pull) or already in the registry (push): nothing to transfer.
    Exists,
    /// Bytes arriving; unpacking runs at the same time.
    Downloading,
    /// Download done and verified; the unpack is finishing.
    Unpacking,
    /// Stored (pull) or sent (push).
    Complete,
    /// Bytes leaving.
    Uploading,
}

/// One progress update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Progress {
    /// The manifest is known.
    Resolved {
        /// The reference, normalised.
        reference: String,
        /// Digest of what the reference names (index or manifest).
        digest: String,
        /// Number of layers.
        layers: usize,
    },
    /// A layer changed state or advanced.
    Layer {
        /// Layer blob digest (`sha256:...`).
        digest: String,
        /// What it is doing.
        state: LayerState,
        /// Bytes done.
        current: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The operation finished.
    Done {
        /// Image ID (pull) or manifest digest (push).
        id: String,
    },
}

/// An image that `load` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedImage {
    /// Image ID.
    pub id: String,
    /// Names it now has from this load (normalised).
    pub names: Vec<String>,
}

/// One step of a removal, as Docker reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Removed {
    /// A name was taken off an image.
    Untagged(String),
    /// An image was deleted (its ID).
    Deleted(String),
}

/// Disk use of the image store, as `system df` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Per image.
    pub images: Vec<ImageUsage>,
    /// Bytes of unpacked layer content.
    pub layers_size: u64,
    /// Bytes of blobs (compressed layers, configs, manifests).
    pub blobs_size: u64,
    /// Bytes `prune(true, in_use)` would free: layers and blobs only unused images (or nothing) refer to.
    pub reclaimable: u64,
}

/// One image's share of the disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUsage {
    /// Image ID.
    pub id: String,
    /// Its names.
    pub names: Vec<String>,
    /// Content bytes of all its layers.
    pub size: u64,
    /// Of which in layers other images share.
    pub shared_size: u64,
    /// Of which in layers only this image has.
    pub unique_size: u64,
    /// Whether a container uses it.
    pub in_use: bool,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// IDs of deleted images.
    pub images_deleted: Vec<String>,
    /// Bytes freed (layer content and blobs).
    pub space_reclaimed: u64,
    /// A load or pull was running: the sweep of leftovers was skipped (the deleted images' own layers and blobs
    /// go when it ends).
    #[serde(default)]
    pub deferred: bool,
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PulledImage {
    /// Image ID.
    pub id: String,
    /// The normalised reference pulled.
    pub reference: String,
    /// Digest of what the reference named (an index for multi-platform images).
    pub digest: String,
}
/// What a push sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushedImage {
    /// The normalised name pushed.
    pub reference: String,
    /// Digest of the manifest in the registry.
    pub digest: String,
    /// Size of the manifest.
    pub size: u64,
}

/// Reads a pull policy from its text (`always`, `missing`, `ifnotpresent`, `never`, any case).
pub fn pull_policy_text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<PullPolicy, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse()
        .map_err(|e: Error| serde::de::Error::custom(e.message))
}

/// A request to make an image from a container (`husk commit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommitRequest {
    /// Name of the new image (`repo[:tag]`); none leaves it nameless.
    pub repo: Option<String>,
    /// Author recorded in the image.
    pub author: Option<String>,
    /// Comment recorded in the image's history.
    pub comment: Option<String>,
    /// Freeze a running container while its changes are read (Docker's default), so the layer is consistent.
    pub pause: bool,
}

impl Default for CommitRequest {
    fn default() -> Self {
        CommitRequest {
            repo: None,
            author: None,
            comment: None,
            pause: true,
        }
    }
}

/// A request to log in to a registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Registry host (`127.0.0.1:5000`, `docker.io`).
    pub registry: String,
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// Where progress goes; `None` discards it. Sends never block and never fail the operation.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink(pub Option<UnboundedSender<Progress>>);

impl ProgressSink {
    /// Sends one update (dropped if nobody listens).
    pub fn send(&self, p: Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(p);
        }
    }

    /// A layer update.
    pub fn layer(&self, digest: &str, state: LayerState, current: u64, total: u64) {
        self.send(Progress::Layer {
            digest: digest.to_string(),
            state,
            current,
            total,
        });
    }
}
