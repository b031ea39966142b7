//! Image and layer records (as kept in the store and returned by `inspect`), the image config parsed for the
//! engine, and platforms.

use std::fmt;

use husk_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
pub use husk_api_types::images::{BlobRef, Healthcheck, ImageLayer, RunConfig};
use husk_api_types::images::{ImageView, null_default};

/// An image, as `inspect` shows it (Docker's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Image {
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
    /// When the image arrived here; None in records that never had it (stored as `""`).
    #[serde(default, with = "husk_core::time::optional")]
    pub loaded_at: Option<husk_core::Timestamp>,
}

impl Image {
    /// What the API shows of this record: the fields of [`ImageView`], copied one by one, so a new field of
    /// the record stays out of the API until it is added there on purpose.
    pub fn view(&self) -> ImageView {
        ImageView {
            id: self.id.clone(),
            repo_tags: self.repo_tags.clone(),
            repo_digests: self.repo_digests.clone(),
            created: self.created.clone(),
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            author: self.author.clone(),
            config: self.config.clone(),
            layers: self.layers.clone(),
            size: self.size,
            manifest: self.manifest.clone(),
            loaded_at: self.loaded_at,
        }
    }

    /// The ID as a digest.
    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.id, "image ID")
    }

    /// The name to show: the first tag, or the short ID when the image has none.
    pub fn display_name(&self) -> String {
        self.repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| short_id(&self.id))
    }
}

/// The first 12 hex characters of an ID, as Docker shows it.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

impl husk_store::Object for Image {
    const KIND: &'static str = "image";
    fn id(&self) -> &str {
        &self.id
    }
}

/// An unpacked layer, shared by every image that has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// `sha256:` diff ID.
    pub diff_id: String,
    /// Bytes of file content.
    pub size: u64,
    /// Bytes of the uncompressed tar stream.
    pub tar_size: u64,
    /// Entries in the tar.
    pub entries: u64,
    /// When it was unpacked.
    pub created_at: husk_core::Timestamp,
}

impl husk_store::Object for LayerRecord {
    const KIND: &'static str = "layer";
    fn id(&self) -> &str {
        &self.diff_id
    }
}

/// An image config file (the blob the image ID is the digest of), the parts husk reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigFile {
    /// CPU architecture.
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    /// Operating system.
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    /// CPU variant.
    #[serde(default)]
    pub variant: Option<String>,
    /// Build time.
    #[serde(default)]
    pub created: Option<String>,
    /// Author.
    #[serde(default)]
    pub author: Option<String>,
    /// What to run.
    #[serde(default, deserialize_with = "null_default")]
    pub config: RunConfig,
    /// The layers' diff IDs.
    pub rootfs: RootFs,
}

/// The `rootfs` object of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Diff IDs, bottom first.
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

impl ConfigFile {
    /// Parses and checks an image config; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<(ConfigFile, Vec<Digest>)> {
        let config: ConfigFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::bad_request(format!("{what} is not a valid image config: {e}")))?;
        if config.rootfs.kind != "layers" {
            return Err(Error::bad_request(format!(
                "{what}: rootfs type {:?} is not \"layers\"",
                config.rootfs.kind
            )));
        }
        let diff_ids = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d, &format!("{what}: diff ID")))
            .collect::<Result<Vec<_>>>()?;
        Ok((config, diff_ids))
    }
}

/// An OS/architecture pair (with an optional CPU variant), as in OCI indexes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64` ...
    pub architecture: String,
    /// `v7`, `v8` ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on, in Go's names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]` (`linux/arm64/v8`).
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let bad = || {
            Error::invalid(
                "platform",
                format!(
                    "invalid platform {text:?}: use os/arch[/variant], for example linux/amd64"
                ),
            )
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [os, arch] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(bad()),
        }
    }

    /// Whether an image for `os`/`architecture`/`variant` runs here. A missing variant on either side matches.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && match (&self.variant, variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_docker_fields() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":"/bin/sh -c","Cmd":["echo","hi"],
            "Env":null,"WorkingDir":"/srv","User":"nobody","ExposedPorts":{"80/tcp":{},"53/udp":{}},
            "Volumes":{"/data":{}},"Labels":{"a":"b"},"StopSignal":"SIGQUIT",
            "Healthcheck":{"Test":["CMD","true"],"Interval":30000000000,"Retries":3}},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
        let (c, ids) = ConfigFile::parse(json, "config").unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(c.config.entrypoint, vec!["/bin/sh -c"]);
        assert_eq!(c.config.cmd, vec!["echo", "hi"]);
        assert!(c.config.env.is_empty());
        assert_eq!(c.config.exposed_ports, vec!["53/udp", "80/tcp"]);
        assert_eq!(c.config.volumes, vec!["/data"]);
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGQUIT"));
        let round: RunConfig =
            serde_json::from_value(serde_json::to_value(&c.config).unwrap()).unwrap();
        assert_eq!(round, c.config, "what is stored reads back the same");
        let h = c.config.healthcheck.unwrap();
        assert_eq!(
            (h.test.len(), h.interval, h.retries),
            (2, 30_000_000_000, 3)
        );
    }

    #[test]
    fn config_without_layers_rootfs_is_refused() {
        assert!(ConfigFile::parse(br#"{"rootfs":{"type":"other","diff_ids":[]}}"#, "c").is_err());
        assert!(
            ConfigFile::parse(br#"{"rootfs":{"type":"layers","diff_ids":["md5:x"]}}"#, "c")
                .is_err()
        );
        assert!(ConfigFile::parse(b"not json", "c").is_err());
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(p.matches("linux", "arm64", None));
        assert!(!p.matches("linux", "arm64", Some("v7")));
        assert!(!p.matches("linux", "amd64", None));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v8").is_err());
        assert_eq!(Platform::host().to_string(), "linux/amd64");
    }
}
