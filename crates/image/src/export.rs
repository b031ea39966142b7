//! Images going out: `push` to a registry and `save` to an archive that both `docker load` and OCI tools read.
//!
//! Both send the blobs exactly as stored, so digests survive the trip. An image that came without a manifest (from
//! a legacy `docker save` archive, or `commit`) gets an OCI manifest built from its layers.

pub use husk_api_types::images::PushedImage;
use std::collections::BTreeSet;
use std::io::Write;

use futures::{StreamExt, TryStreamExt};
use husk_core::{Error, Result};
use oci_client::errors::OciDistributionError;
use serde_json::json;

use crate::archive::media;
use crate::auth::Credentials;
use crate::digest::Digest;
use crate::image::Image;
use crate::progress::{LayerState, Progress, ProgressSink};
use crate::reference::{self, ImageName, familiar};
use crate::registry::registry_error;
use crate::store::ImageStore;

/// Options of [`ImageStore::push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Credentials for this push instead of the stored ones.
    pub credentials: Option<Credentials>,
    /// Where progress goes.
    pub progress: ProgressSink,
}

/// A manifest for an image: bytes and media type.
pub struct BuiltManifest {
    /// Manifest JSON.
    pub bytes: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
}

/// The OCI media type for a stored layer's media type (Docker's names mapped, unknown ones kept).
fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        media::DOCKER_LAYER_GZIP => media::OCI_LAYER_GZIP,
        media::DOCKER_LAYER => media::OCI_LAYER,
        other => other,
    }
}

impl ImageStore {
    /// The image's manifest: the one it came with when its blob is here and matches its layers, else an OCI
    /// manifest built from the config and layer blobs.
    pub fn manifest_for(&self, image: &Image) -> Result<BuiltManifest> {
        if let Some(m) = &image.manifest {
            let digest = Digest::parse(&m.digest, "manifest digest")?;
            if self.blobs().contains(&digest) {
                let bytes = self
                    .blobs()
                    .read(&digest, self.config().limits.max_json_size)?;
                return Ok(BuiltManifest {
                    bytes,
                    media_type: m.media_type.clone(),
                    digest,
                });
            }
        }
        let config = image.digest()?;
        let config_size = self
            .blobs()
            .size(&config)
            .ok_or_else(|| Error::not_found(format!("config blob of image {}", image.id)))?;
        let layers: Vec<serde_json::Value> = image
            .layers
            .iter()
            .map(|l| json!({"mediaType": oci_layer_type(&l.blob.media_type), "digest": l.blob.digest, "size": l.blob.size}))
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::OCI_CONFIG, "digest": image.id, "size": config_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest)
            .map_err(|e| Error::internal(format!("encode manifest: {e}")))?;
        let digest = Digest::of(&bytes);
        Ok(BuiltManifest {
            bytes,
            media_type: media::OCI_MANIFEST.to_string(),
            digest,
        })
    }

    /// Pushes the image named `name` (`registry/repo:tag`) to its registry: blobs the registry lacks, then the
    /// manifest. The image gets `name@digest` as a repo digest, as in Docker.
    pub async fn push(&self, name: &str, options: &PushOptions) -> Result<PushedImage> {
        let target = reference::normalize_tag(name)?;
        let image = self.resolve(&target)?;
        let parsed = ImageName::parse(&target)?;
        let host = parsed.reference().resolve_registry().to_string();
        let client = self.registries().client(&host);
        let auth = self
            .registries()
            .auth_for(parsed.registry(), options.credentials.as_ref())?;
        let reference = parsed.reference().clone();
        client.store_auth_if_needed(&host, &auth).await;
        let manifest = self.manifest_for(&image)?;

        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        let mut seen = BTreeSet::new();
        for l in &image.layers {
            let d = Digest::parse(&l.blob.digest, "layer digest")?;
            if seen.insert(d) {
                blobs.push((d, l.blob.size));
            }
        }
        for (d, size) in &blobs {
            if !self.blobs().contains(d) {
                return Err(Error::not_found(format!(
                    "blob {d} of image {target} ({size} bytes): load or pull the image again to push it"
                )));
            }
            options
                .progress
                .layer(&d.to_string(), LayerState::Waiting, 0, *size);
        }
        let concurrency = self.registries().config().max_concurrent_uploads.max(1);
        let uploads: Vec<_> = blobs
            .iter()
            .map(|(d, size)| {
                let (store, client, reference, progress, d, size) = (
                    self.clone(),
                    client.clone(),
                    reference.clone(),
                    options.progress.clone(),
                    *d,
                    *size,
                );
                async move {
                    store
                        .push_blob(&client, &reference, d, size, &progress)
                        .await
                }
            })
            .collect();
        futures::stream::iter(uploads)
            .buffer_unordered(concurrency)
            .try_collect::<Vec<()>>()
            .await?;

        let config = image.digest()?;
        let config_bytes = self.raw_config(&image)?;
        if !client
            .blob_exists(&reference, &config.to_string())
            .await
            .map_err(|e| registry_error(&format!("push {target}: check config"), e))?
        {
            client
                .push_blob(&reference, config_bytes, &config.to_string())
                .await
                .map_err(|e| registry_error(&format!("push {target}: upload config"), e))?;
        }
        let content_type =
            reqwest::header::HeaderValue::from_str(&manifest.media_type).map_err(|_| {
                Error::internal(format!("bad manifest media type {}", manifest.media_type))
            })?;
        client
            .push_manifest_raw(&reference, manifest.bytes.clone(), content_type)
            .await
            .map_err(|e| registry_error(&format!("push {target}: upload manifest"), e))?;
        let digest = manifest.digest.to_string();
        let mut updated = image.clone();
        updated
            .manifest
            .get_or_insert_with(|| crate::image::BlobRef {
                digest: digest.clone(),
                size: manifest.bytes.len() as u64,
                media_type: manifest.media_type.clone(),
            });
        self.blobs()
            .put_bytes(&manifest.bytes, &manifest.digest, "manifest")?;
        self.record_image(updated, &[], &[parsed.with_digest(&digest)])?;
        options.progress.send(Progress::Done { id: digest.clone() });
        Ok(PushedImage {
            reference: target,
            digest,
            size: manifest.bytes.len() as u64,
        })
    }

    async fn push_blob(
        &self,
        client: &oci_client::Client,
        reference: &oci_client::Reference,
        d: Digest,
        size: u64,
        progress: &ProgressSink,
    ) -> Result<()> {
        let what = format!("push layer {d}");
        if client
            .blob_exists(reference, &d.to_string())
            .await
            .map_err(|e| registry_error(&what, e))?
        {
            progress.layer(&d.to_string(), LayerState::Exists, size, size);
            return Ok(());
        }
        let path = self.blobs().path(&d);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let progress_sent = progress.clone();
        let digest_text = d.to_string();
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |chunk| {
            let chunk = chunk.map_err(OciDistributionError::IoError)?;
            sent += chunk.len() as u64;
            progress_sent.layer(&digest_text, LayerState::Uploading, sent, size);
            Ok(chunk)
        });
        client
            .push_blob_stream(reference, stream, &d.to_string(), Some(size))
            .await
            .map_err(|e| registry_error(&what, e))?;
        progress.layer(&d.to_string(), LayerState::Complete, size, size);
        Ok(())
    }

    /// Writes `references` to `writer` as one archive that is both a `docker save` archive (`manifest.json`) and an
    /// OCI image layout (`index.json`, `oci-layout`, `blobs/sha256/`), like Docker 25 and later write them.
    pub async fn save<W>(&self, references: &[String], writer: W) -> Result<()>
    where
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut images = Vec::new();
        for r in references {
            let image = self.resolve(r)?;
            let names = match reference::normalize_tag(r) {
                Ok(n) if image.repo_tags.contains(&n) => vec![n],
                _ => image.repo_tags.clone(),
            };
            images.push((image, names));
        }
        let store = self.clone();
        husk_core::spawn_blocking(move || {
            let mut out = tokio_util::io::SyncIoBridge::new(writer);
            store.write_archive(&images, &mut out)?;
            out.flush()
                .map_err(|e| Error::io("write image archive", e))?;
            out.shutdown()
                .map_err(|e| Error::io("write image archive", e))
        })
        .await
        .map_err(|e| Error::internal(format!("save task: {e}")))?
    }

    fn write_archive(&self, images: &[(Image, Vec<String>)], out: &mut dyn Write) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        let mut written = BTreeSet::new();
        let mut docker_manifest = Vec::new();
        let mut index = Vec::new();
        for (image, names) in images {
            let manifest = self.manifest_for(image)?;
            let config = image.digest()?;
            let mut blobs = vec![config];
            blobs.extend(
                image
                    .layers
                    .iter()
                    .map(|l| Digest::parse(&l.blob.digest, "layer digest"))
                    .collect::<Result<Vec<_>>>()?,
            );
            for d in &blobs {
                if written.insert(*d) {
                    self.append_blob(&mut tar, d)?;
                }
            }
            if written.insert(manifest.digest) {
                append_bytes(
                    &mut tar,
                    &format!("blobs/sha256/{}", manifest.digest.hex()),
                    &manifest.bytes,
                )?;
            }
            docker_manifest.push(json!({
                "Config": format!("blobs/sha256/{}", config.hex()),
                "RepoTags": names.iter().map(|n| familiar(n)).collect::<Vec<_>>(),
                "Layers": image.layers.iter().map(|l| format!("blobs/sha256/{}", l.blob.digest.trim_start_matches("sha256:"))).collect::<Vec<_>>(),
            }));
            let descriptor = json!({"mediaType": manifest.media_type, "digest": manifest.digest.to_string(), "size": manifest.bytes.len()});
            if names.is_empty() {
                index.push(descriptor.clone());
            }
            for n in names {
                let mut d = descriptor.clone();
                let tag = ImageName::parse(n)
                    .ok()
                    .and_then(|p| p.tag().map(str::to_string))
                    .unwrap_or_default();
                d["annotations"] = json!({"io.containerd.image.name": n, "org.opencontainers.image.ref.name": tag});
                index.push(d);
            }
        }
        let encode = |v: &serde_json::Value| {
            serde_json::to_vec(v).map_err(|e| Error::internal(format!("encode archive index: {e}")))
        };
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_bytes(
            &mut tar,
            "index.json",
            &encode(
                &json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": index}),
            )?,
        )?;
        append_bytes(
            &mut tar,
            "manifest.json",
            &encode(&serde_json::Value::Array(docker_manifest))?,
        )?;
        tar.finish()
            .map_err(|e| Error::io("write image archive", e))
    }

    fn append_blob(&self, tar: &mut tar::Builder<&mut dyn Write>, d: &Digest) -> Result<()> {
        let path = self.blobs().path(d);
        let file = std::fs::File::open(&path).map_err(|e| {
            Error::io(
                format!("blob {d} is missing from the store; cannot save"),
                e,
            )
        })?;
        let size = file
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", path.display()), e))?
            .len();
        let mut header = archive_header(size);
        tar.append_data(&mut header, format!("blobs/sha256/{}", d.hex()), file)
            .map_err(|e| Error::io("write image archive", e))
    }
}

fn archive_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes(tar: &mut tar::Builder<&mut dyn Write>, path: &str, data: &[u8]) -> Result<()> {
    let mut header = archive_header(data.len() as u64);
    tar.append_data(&mut header, path, data)
        .map_err(|e| Error::io("write image archive", e))
}
