//! Reading image archives: `docker save` output (the legacy layout with `manifest.json`, `<id>/layer.tar` and
//! `<id>.json`, and the newer one that is also an OCI layout) and OCI image-layout tarballs (`index.json`, `blobs/`).
//!
//! The archive is read once, front to back, and every regular file is spooled to a temporary file in the store's
//! `tmp/` directory while its SHA-256 is computed (an archive's index may come after its layers). Files are then
//! looked up only by their cleaned archive path: a manifest that names `../../etc/passwd` names nothing, and is
//! refused. Every blob named by digest is checked against it.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use husk_core::{Error, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::blobs::{BlobStore, StagedBlob, remove_any};
use crate::config::Limits;
use crate::digest::Digest;
use crate::image::Platform;
use crate::reference;
use crate::unpack::{Compression, clean_path};

/// Media types husk reads and writes.
pub mod media {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer (as `docker save` writes them).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

    /// Whether a media type names an index or manifest list.
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// Whether a media type names an image manifest.
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }
}

/// An archive's files, spooled and hashed.
pub struct StagedArchive {
    files: HashMap<String, StagedBlob>,
    /// Symlinks and hard links: path -> cleaned target (None when it leads outside the archive).
    links: HashMap<String, Option<String>>,
}

impl Drop for StagedArchive {
    fn drop(&mut self) {
        for f in self.files.values() {
            remove_any(&f.path);
        }
    }
}

fn archive_error(message: impl Into<String>) -> Error {
    Error::bad_request(format!("image archive: {}", message.into()))
}

impl StagedArchive {
    /// Reads a whole archive from `reader`, spooling its regular files through `blobs`'s temporary directory.
    pub fn read(reader: impl Read, blobs: &BlobStore, limits: &Limits) -> Result<StagedArchive> {
        let mut staged = StagedArchive {
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut archive = tar::Archive::new(reader);
        let mut total = 0u64;
        let mut count = 0u64;
        let entries = archive
            .entries()
            .map_err(|e| archive_error(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| archive_error(format!("corrupt or truncated: {e}")))?;
            count += 1;
            if count > limits.max_layer_entries {
                return Err(Error::new(
                    husk_core::ErrorKind::LimitExceeded,
                    "image archive: too many entries (max_layer_entries)",
                ));
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let path = clean_path(&raw)
                .map_err(|why| archive_error(format!("entry {shown:?} refused: {why}")))?;
            let Ok(path) = String::from_utf8(path) else {
                continue;
            };
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let remaining = limits.max_archive_size.saturating_sub(total);
                    let blob = blobs
                        .stage(
                            &mut entry,
                            remaining,
                            &format!("image archive entry {shown:?}"),
                        )
                        .map_err(|e| {
                            if e.kind == husk_core::ErrorKind::LimitExceeded {
                                Error::new(
                                    e.kind,
                                    format!(
                                        "image archive is larger than {} bytes (max_archive_size)",
                                        limits.max_archive_size
                                    ),
                                )
                            } else {
                                e
                            }
                        })?;
                    total += blob.size;
                    if let Some(old) = staged.files.insert(path.clone(), blob) {
                        remove_any(&old.path);
                        return Err(archive_error(format!("entry {path:?} appears twice")));
                    }
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    staged
                        .links
                        .insert(path.clone(), resolve_symlink(&path, &target));
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let cleaned = clean_path(&target)
                        .ok()
                        .and_then(|t| String::from_utf8(t).ok());
                    staged.links.insert(path.clone(), cleaned);
                }
                _ => {}
            }
        }
        Ok(staged)
    }

    /// The file at `path` (following the archive's own links), or an error naming the path.
    pub fn get(&self, path: &str, what: &str) -> Result<&StagedBlob> {
        let mut current = clean_path(path.as_bytes())
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| {
                archive_error(format!("{what} path {path:?} points outside the archive"))
            })?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&current) {
                return Ok(f);
            }
            match self.links.get(&current) {
                Some(Some(next)) => current = next.clone(),
                Some(None) => {
                    return Err(archive_error(format!(
                        "{what} path {path:?} is a link that points outside the archive"
                    )));
                }
                None => {
                    return Err(archive_error(format!(
                        "{what} {path:?} is missing from the archive"
                    )));
                }
            }
        }
        Err(archive_error(format!(
            "{what} path {path:?}: too many levels of links"
        )))
    }

    fn has(&self, path: &str) -> bool {
        self.files.contains_key(path) || self.links.contains_key(path)
    }

    /// Reads a small file (JSON) whole.
    pub fn read_small(&self, path: &str, what: &str, limits: &Limits) -> Result<Vec<u8>> {
        let f = self.get(path, what)?;
        if f.size > limits.max_json_size {
            return Err(archive_error(format!(
                "{what} {path:?} is larger than {} bytes (max_json_size)",
                limits.max_json_size
            )));
        }
        std::fs::read(&f.path).map_err(|e| Error::io(format!("read staged {what}"), e))
    }

    /// The blob with `digest` in an OCI layout (`blobs/sha256/<hex>`), checked against the digest and `size`.
    fn blob(&self, digest: &str, size: u64, what: &str) -> Result<(String, &StagedBlob)> {
        let d = Digest::parse(digest, what)?;
        let path = format!("blobs/sha256/{}", d.hex());
        let f = self.get(&path, what)?;
        if f.digest != d {
            return Err(archive_error(format!(
                "{what} {d} does not match its digest (the content hashes to {})",
                f.digest
            )));
        }
        if f.size != size {
            return Err(archive_error(format!(
                "{what} {d} has {} bytes, expected {size}: it is corrupt or truncated",
                f.size
            )));
        }
        Ok((path, f))
    }

    /// Takes a staged file out (so it is not removed on drop): the caller moves it into the blob store.
    pub fn take(&mut self, path: &str) -> Option<StagedBlob> {
        self.files.remove(path)
    }

    /// The path under which `get` found a file (links followed).
    pub fn resolved_path(&self, path: &str) -> Option<String> {
        let mut current = String::from_utf8(clean_path(path.as_bytes()).ok()?).ok()?;
        for _ in 0..16 {
            if self.files.contains_key(&current) {
                return Some(current);
            }
            current = self.links.get(&current)?.clone()?;
        }
        None
    }
}

/// A symlink's target, resolved lexically against the link's directory; None if it leaves the archive.
fn resolve_symlink(link_path: &str, target: &[u8]) -> Option<String> {
    let target = std::str::from_utf8(target).ok()?;
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// One image found in an archive, verified, ready to be stored.
#[derive(Debug)]
pub struct ImageSource {
    /// Config JSON bytes.
    pub config: Vec<u8>,
    /// Its digest (the image ID).
    pub config_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<LayerSource>,
    /// Normalised tags.
    pub names: Vec<String>,
    /// The manifest, when the archive has one: bytes, digest, media type.
    pub manifest: Option<(Vec<u8>, Digest, String)>,
}

/// A layer blob in the archive.
#[derive(Debug, Clone)]
pub struct LayerSource {
    /// Cleaned archive path of the staged file.
    pub path: String,
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Media type to record.
    pub media_type: String,
}

/// Options for reading an archive.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Name for images the archive does not name; repository for OCI `ref.name` annotations holding only a tag.
    pub name: Option<String>,
    /// Platform to pick from multi-platform indexes (default: the host's).
    pub platform: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// Finds and checks the images of a staged archive.
pub fn images(
    staged: &StagedArchive,
    options: &ReadOptions,
    limits: &Limits,
) -> Result<Vec<ImageSource>> {
    let mut out = if staged.has("manifest.json") {
        docker_images(staged, limits)?
    } else if staged.has("index.json") {
        oci_images(staged, options, limits)?
    } else {
        return Err(archive_error(
            "neither manifest.json (docker save) nor index.json (OCI layout) found: not an image archive",
        ));
    };
    if out.is_empty() {
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        return Err(archive_error(format!(
            "the archive holds no image for platform {platform}"
        )));
    }
    if staged.has("manifest.json") && staged.has("index.json") {
        attach_oci_manifests(staged, &mut out, limits);
    }
    if let Some(name) = &options.name {
        let name = reference::normalize_tag(name)?;
        let unnamed: Vec<&mut ImageSource> =
            out.iter_mut().filter(|i| i.names.is_empty()).collect();
        match unnamed.len() {
            0 => {}
            1 => unnamed.into_iter().for_each(|i| i.names.push(name.clone())),
            n => {
                return Err(Error::invalid(
                    "name",
                    format!("the archive has {n} unnamed images: a name can be given to one only"),
                ));
            }
        }
    }
    Ok(out)
}

fn docker_images(staged: &StagedArchive, limits: &Limits) -> Result<Vec<ImageSource>> {
    let bytes = staged.read_small("manifest.json", "manifest", limits)?;
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&bytes)
        .map_err(|e| archive_error(format!("manifest.json is not valid: {e}")))?;
    entries
        .iter()
        .map(|entry| docker_image(staged, entry, limits))
        .collect()
}

/// The digest a path claims for its content (`blobs/sha256/<hex>`, `<hex>.json`, `<hex>/layer.tar`), if any.
fn claimed_digest(path: &str) -> Option<Digest> {
    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex);
    }
    path.strip_suffix(".json").and_then(Digest::from_hex)
}

fn docker_image(
    staged: &StagedArchive,
    entry: &DockerManifestEntry,
    limits: &Limits,
) -> Result<ImageSource> {
    let config = staged.read_small(&entry.config, "config", limits)?;
    let config_digest = Digest::of(&config);
    let config_path = staged.resolved_path(&entry.config).unwrap_or_default();
    if let Some(claimed) = claimed_digest(&config_path)
        && claimed != config_digest
    {
        return Err(archive_error(format!(
            "config {:?} does not match its digest (the content hashes to {config_digest})",
            entry.config
        )));
    }
    let mut layers = Vec::with_capacity(entry.layers.len());
    for layer_path in &entry.layers {
        let f = staged.get(layer_path, "layer")?;
        let path = staged.resolved_path(layer_path).unwrap_or_default();
        if let Some(claimed) = claimed_digest(&path)
            && claimed != f.digest
        {
            return Err(archive_error(format!(
                "layer {layer_path:?} does not match its digest (the content hashes to {})",
                f.digest
            )));
        }
        let media_type = match sniff(&f.path)? {
            Compression::None => media::DOCKER_LAYER,
            Compression::Gzip => media::DOCKER_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        };
        layers.push(LayerSource {
            path,
            digest: f.digest,
            size: f.size,
            media_type: media_type.to_string(),
        });
    }
    let names = entry
        .repo_tags
        .iter()
        .flatten()
        .map(|t| reference::normalize_tag(t))
        .collect::<Result<Vec<_>>>()?;
    Ok(ImageSource {
        config,
        config_digest,
        layers,
        names,
        manifest: None,
    })
}

fn sniff(path: &PathBuf) -> Result<Compression> {
    let mut head = Vec::with_capacity(4);
    std::fs::File::open(path)
        .and_then(|f| f.take(4).read_to_end(&mut head))
        .map_err(|e| Error::io(format!("read staged layer {}", path.display()), e))?;
    Ok(Compression::detect(&head))
}

fn read_json<T: serde::de::DeserializeOwned>(
    staged: &StagedArchive,
    path: &str,
    what: &str,
    limits: &Limits,
) -> Result<(Vec<u8>, T)> {
    let bytes = staged.read_small(path, what, limits)?;
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| archive_error(format!("{what} {path:?} is not valid: {e}")))?;
    Ok((bytes, value))
}

fn oci_images(
    staged: &StagedArchive,
    options: &ReadOptions,
    limits: &Limits,
) -> Result<Vec<ImageSource>> {
    let (_, index): (_, ImageIndex) = read_json(staged, "index.json", "index", limits)?;
    let platform = options.platform.clone().unwrap_or_else(Platform::host);
    let mut out = Vec::new();
    for desc in index.manifests() {
        let names = annotation_names(desc, options.name.as_deref())?;
        let Some(manifest_desc) = select_manifest(staged, desc, &platform, limits, 0)? else {
            continue;
        };
        let mut image = oci_image(staged, &manifest_desc, limits)?;
        image.names = names;
        out.push(image);
    }
    Ok(out)
}

/// Names from `io.containerd.image.name` or `org.opencontainers.image.ref.name` (a full reference, or a tag
/// applied to the repository of `default_name`).
fn annotation_names(desc: &Descriptor, default_name: Option<&str>) -> Result<Vec<String>> {
    let Some(annotations) = desc.annotations() else {
        return Ok(Vec::new());
    };
    if let Some(full) = annotations.get("io.containerd.image.name") {
        return Ok(vec![reference::normalize_tag(full)?]);
    }
    let Some(value) = annotations.get("org.opencontainers.image.ref.name") else {
        return Ok(Vec::new());
    };
    if value.contains('/') || value.contains(':') {
        return Ok(vec![reference::normalize_tag(value)?]);
    }
    match default_name {
        Some(name) => {
            let repo = reference::ImageName::parse(name)?.name();
            Ok(vec![reference::normalize_tag(&format!("{repo}:{value}"))?])
        }
        None => {
            tracing::info!(
                tag = value.as_str(),
                "OCI ref.name is only a tag and no name was given: image loaded without a name"
            );
            Ok(Vec::new())
        }
    }
}

/// Follows indexes down to the manifest for `platform`; None when the entry is for another platform.
fn select_manifest(
    staged: &StagedArchive,
    desc: &Descriptor,
    platform: &Platform,
    limits: &Limits,
    depth: u32,
) -> Result<Option<Descriptor>> {
    let media_type = desc.media_type().to_string();
    if let Some(p) = desc.platform()
        && !platform.matches(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    {
        return Ok(None);
    }
    if media::is_manifest(&media_type) {
        return Ok(Some(desc.clone()));
    }
    if !media::is_index(&media_type) {
        return Err(archive_error(format!(
            "index entry {} has unsupported media type {media_type}",
            desc.digest()
        )));
    }
    if depth > 4 {
        return Err(archive_error("indexes nested too deep"));
    }
    let (path, _) = staged.blob(desc.digest().as_ref(), desc.size(), "index")?;
    let (_, nested): (_, ImageIndex) = read_json(staged, &path, "index", limits)?;
    for inner in nested.manifests() {
        if is_attestation(inner) {
            continue;
        }
        if let Some(found) = select_manifest(staged, inner, platform, limits, depth + 1)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|t| t == "attestation-manifest")
}

fn oci_image(staged: &StagedArchive, desc: &Descriptor, limits: &Limits) -> Result<ImageSource> {
    let (path, _) = staged.blob(desc.digest().as_ref(), desc.size(), "manifest")?;
    let (manifest_bytes, manifest): (_, ImageManifest) =
        read_json(staged, &path, "manifest", limits)?;
    let manifest_digest = Digest::parse(desc.digest().as_ref(), "manifest digest")?;
    let (config_path, _) = staged.blob(
        manifest.config().digest().as_ref(),
        manifest.config().size(),
        "config",
    )?;
    let config = staged.read_small(&config_path, "config", limits)?;
    let config_digest = Digest::of(&config);
    let mut layers = Vec::with_capacity(manifest.layers().len());
    for layer in manifest.layers() {
        let (path, f) = staged.blob(layer.digest().as_ref(), layer.size(), "layer")?;
        layers.push(LayerSource {
            path,
            digest: f.digest,
            size: f.size,
            media_type: layer.media_type().to_string(),
        });
    }
    Ok(ImageSource {
        config,
        config_digest,
        layers,
        names: Vec::new(),
        manifest: Some((
            manifest_bytes,
            manifest_digest,
            desc.media_type().to_string(),
        )),
    })
}

/// For Docker's newer archives (manifest.json and index.json both present): records the OCI manifest of each image
/// whose config matches, so the image keeps its manifest digest. Problems here only mean no manifest is kept.
fn attach_oci_manifests(staged: &StagedArchive, images: &mut [ImageSource], limits: &Limits) {
    let Ok((_, index)) = read_json::<ImageIndex>(staged, "index.json", "index", limits) else {
        return;
    };
    for desc in index.manifests() {
        if !media::is_manifest(desc.media_type().as_ref()) {
            continue;
        }
        let Ok(found) = oci_image(staged, desc, limits) else {
            continue;
        };
        for image in images
            .iter_mut()
            .filter(|i| i.config_digest == found.config_digest && i.manifest.is_none())
        {
            image.manifest = found.manifest.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_symlink("a/layer.tar", b"../b/layer.tar").as_deref(),
            Some("b/layer.tar")
        );
        assert_eq!(resolve_symlink("a/layer.tar", b"../../etc/passwd"), None);
        assert_eq!(resolve_symlink("a/layer.tar", b"/etc/passwd"), None);
    }

    #[test]
    fn claimed_digests() {
        let d = Digest::of(b"x");
        assert_eq!(
            claimed_digest(&format!("blobs/sha256/{}", d.hex())),
            Some(d)
        );
        assert_eq!(claimed_digest(&format!("{}.json", d.hex())), Some(d));
        assert_eq!(claimed_digest("abc/layer.tar"), None);
    }
}
