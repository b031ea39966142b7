//! Pulling images from OCI distribution / Docker Registry v2 registries.
//!
//! The manifest (or index, then the manifest for the platform) and the config are fetched whole and checked against
//! their digests. Layers are downloaded concurrently; each download is written to a temporary blob file and, in the
//! same pass, fed to the unpacker on a blocking thread, so a layer is unpacked as it arrives. A layer becomes visible
//! only when its blob matched its digest and size and its content matched its diff ID; a broken connection is resumed
//! with an HTTP range request. Layers and blobs already here are not fetched again, and a layer two pulls want at
//! once is fetched once (the second waits and finds it).

pub use husk_api_types::images::PulledImage;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};
use husk_core::{Error, ErrorKind, Result};
use oci_client::client::BlobResponse;
use oci_client::manifest::OciDescriptor;
use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::archive::media;
use crate::auth::Credentials;
use crate::blobs::{RemoveOnDrop, StagedBlob};
use crate::digest::Digest;
use crate::image::{BlobRef, ConfigFile, Image, ImageLayer, LayerRecord, Platform};
use crate::progress::{LayerState, Progress, ProgressSink};
use crate::reference::ImageName;
use crate::registry::{Endpoint, registry_error};
use crate::store::ImageStore;
use crate::unpack::ImageBudget;

/// Options of [`ImageStore::pull`].
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platform to pick from an index (default: the host's).
    pub platform: Option<Platform>,
    /// Credentials for this pull instead of the stored ones.
    pub credentials: Option<Credentials>,
    /// Where progress goes.
    pub progress: ProgressSink,
}

/// Manifest media types asked for, best first.
const ACCEPT: &[&str] = &[
    media::OCI_INDEX,
    media::DOCKER_LIST,
    media::OCI_MANIFEST,
    media::DOCKER_MANIFEST,
];

/// How a pull or push reaches the registry.
#[derive(Clone)]
struct Remote {
    endpoint: Arc<Endpoint>,
}

impl ImageStore {
    /// Pulls `reference` (`busybox`, `127.0.0.1:5000/demo/busybox:1`, `name@sha256:...`) from its registry (Docker Hub
    /// names through the configured mirrors first) and stores it under that name.
    pub async fn pull(&self, reference: &str, options: &PullOptions) -> Result<PulledImage> {
        let name = ImageName::parse(reference)?;
        let endpoints = self
            .registries()
            .endpoints(&name, options.credentials.as_ref())?;
        let count = endpoints.len();
        let mut last_error = None;
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            let host = endpoint.host.clone();
            match self
                .pull_from(
                    &name,
                    Remote {
                        endpoint: Arc::new(endpoint),
                    },
                    options,
                )
                .await
            {
                Ok(pulled) => return Ok(pulled),
                Err(e) if i + 1 < count => {
                    tracing::warn!(mirror = host.as_str(), error = %e.message, "pull from mirror failed, trying the next endpoint");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::internal("no registry endpoint")))
    }

    async fn pull_from(
        &self,
        name: &ImageName,
        remote: Remote,
        options: &PullOptions,
    ) -> Result<PulledImage> {
        let shown = name.to_string();
        let limits = self.config().limits.clone();
        let (top_bytes, top_digest) =
            fetch_manifest(&remote, &remote.endpoint.reference, &shown).await?;
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        let (manifest_bytes, manifest_digest, manifest_type) = match media_type_of(&top_bytes)? {
            t if media::is_index(&t) => {
                let chosen = choose_platform(&top_bytes, &platform, &shown)?;
                let reference = with_digest(&remote.endpoint.reference, &chosen);
                let (bytes, digest) = fetch_manifest(&remote, &reference, &shown).await?;
                let t = media_type_of(&bytes)?;
                if !media::is_manifest(&t) {
                    return Err(Error::unsupported(format!(
                        "{shown}: the index entry for {platform} is a {t}, not an image manifest"
                    )));
                }
                (bytes, digest, t)
            }
            t if media::is_manifest(&t) => (top_bytes.clone(), top_digest, t),
            t => {
                return Err(Error::unsupported(format!(
                    "{shown}: the registry sent a {t}, not an image manifest or index"
                )));
            }
        };
        if manifest_bytes.len() as u64 > limits.max_json_size {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "{shown}: the manifest is larger than {} bytes",
                    limits.max_json_size
                ),
            ));
        }
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::backend(format!("{shown}: the manifest is not valid: {e}")))?;
        options.progress.send(Progress::Resolved {
            reference: shown.clone(),
            digest: top_digest.to_string(),
            layers: manifest.layers().len(),
        });

        let config_desc = descriptor(manifest.config());
        let config_digest = Digest::parse(&config_desc.digest, "config digest")?;
        let config_bytes = self.fetch_config(&remote, &config_desc, &shown).await?;
        let (config, diff_ids) = ConfigFile::parse(&config_bytes, &format!("config of {shown}"))?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::backend(format!(
                "{shown}: the config lists {} layers but the manifest has {}",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }
        for l in manifest.layers() {
            let t = l.media_type().to_string();
            if !t.contains(".tar") || t.contains("foreign") {
                return Err(Error::unsupported(format!(
                    "{shown}: layer {} has media type {t}, not a container image layer",
                    l.digest()
                )));
            }
        }

        let guard = {
            let store = self.clone();
            husk_core::spawn_blocking(move || store.hold_gc())
                .await
                .map_err(|e| Error::internal(format!("gc gate: {e}")))?
        };
        self.blobs()
            .put_bytes(&config_bytes, &config_digest, "config")?;
        self.blobs()
            .put_bytes(&manifest_bytes, &manifest_digest, "manifest")?;
        let budget = ImageBudget::new(limits.max_image_size);
        let jobs: Vec<(OciDescriptor, Digest)> = manifest
            .layers()
            .iter()
            .map(descriptor)
            .zip(diff_ids.iter().copied())
            .collect();
        for (desc, _) in &jobs {
            options.progress.layer(
                &desc.digest,
                LayerState::Waiting,
                0,
                desc.size.max(0) as u64,
            );
        }
        let concurrency = self.registries().config().max_concurrent_downloads.max(1);
        let tasks: Vec<_> = jobs
            .iter()
            .cloned()
            .map(|(desc, diff_id)| {
                let (store, remote, budget, progress) = (
                    self.clone(),
                    remote.clone(),
                    budget.clone(),
                    options.progress.clone(),
                );
                async move {
                    store
                        .pull_layer(&remote, &desc, diff_id, &budget, &progress)
                        .await
                }
            })
            .collect();
        let records: Vec<LayerRecord> = futures::stream::iter(tasks)
            .buffered(concurrency)
            .try_collect()
            .await?;

        let layers = jobs
            .iter()
            .map(|(desc, diff_id)| ImageLayer {
                diff_id: diff_id.to_string(),
                blob: BlobRef {
                    digest: desc.digest.clone(),
                    size: desc.size.max(0) as u64,
                    media_type: desc.media_type.clone(),
                },
            })
            .collect();
        let image = Image {
            id: config_digest.to_string(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            created: config.created,
            architecture: config.architecture,
            os: config.os,
            variant: config.variant,
            author: config.author,
            config: config.config,
            layers,
            size: records.iter().map(|r| r.size).sum(),
            manifest: Some(BlobRef {
                digest: manifest_digest.to_string(),
                size: manifest_bytes.len() as u64,
                media_type: manifest_type,
            }),
            loaded_at: Some(husk_core::Timestamp::now()),
        };
        let names: Vec<String> = if name.digest().is_none() {
            name.tagged().into_iter().collect()
        } else {
            Vec::new()
        };
        // A crash here leaves stored layers no image names: `image prune` removes them; the image is not there.
        husk_core::failpoint("pull_image:layers_stored");
        self.record_image(image, &names, &[name.with_digest(&top_digest.to_string())])?;
        drop(guard);
        options.progress.send(Progress::Done {
            id: config_digest.to_string(),
        });
        Ok(PulledImage {
            id: config_digest.to_string(),
            reference: name.to_string(),
            digest: top_digest.to_string(),
        })
    }

    async fn fetch_config(
        &self,
        remote: &Remote,
        desc: &OciDescriptor,
        shown: &str,
    ) -> Result<Vec<u8>> {
        let digest = Digest::parse(&desc.digest, "config digest")?;
        let max = self.config().limits.max_json_size;
        if self.blobs().contains(&digest) {
            return self.blobs().read(&digest, max);
        }
        if desc.size < 0 || desc.size as u64 > max {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!("{shown}: the config is larger than {max} bytes"),
            ));
        }
        let mut out = Vec::with_capacity(desc.size as usize);
        let e = &remote.endpoint;
        e.client
            .pull_blob(&e.reference, desc, &mut out)
            .await
            .map_err(|err| registry_error(&format!("{shown}: fetch config {digest}"), err))?;
        if out.len() as u64 != desc.size as u64 || Digest::of(&out) != digest {
            return Err(Error::backend(format!(
                "{shown}: config {digest} from the registry does not match its digest or size"
            )));
        }
        Ok(out)
    }

    /// Makes one layer present: skipped if here, unpacked from the blob if only the blob is here, else downloaded
    /// (and unpacked on the way). Holds the layer's lock throughout.
    async fn pull_layer(
        &self,
        remote: &Remote,
        desc: &OciDescriptor,
        diff_id: Digest,
        budget: &Arc<ImageBudget>,
        progress: &ProgressSink,
    ) -> Result<LayerRecord> {
        let blob = Digest::parse(&desc.digest, "layer digest")?;
        let size = u64::try_from(desc.size)
            .map_err(|_| Error::backend(format!("layer {blob} has a negative size")))?;
        let lock = self.layer_lock(&diff_id);
        let held = lock.clone().lock_owned().await;
        let result = async {
            let layer = self.present_layer(&diff_id)?;
            let have_blob = self.blobs().size(&blob) == Some(size);
            match (layer, have_blob) {
                (Some(record), true) => {
                    if !budget.take(record.tar_size) {
                        return Err(image_limit(&blob, budget));
                    }
                    progress.layer(&desc.digest, LayerState::Exists, size, size);
                    Ok(record)
                }
                (_, true) => self.unpack_blob_file(&blob, diff_id, budget.clone()).await,
                (layer, false) => {
                    let record = self
                        .download_layer(
                            remote,
                            desc,
                            blob,
                            size,
                            diff_id,
                            layer.is_none(),
                            budget.clone(),
                            progress,
                        )
                        .await?;
                    match (record, layer) {
                        (Some(r), _) | (None, Some(r)) => Ok(r),
                        (None, None) => Err(Error::internal(format!(
                            "layer {blob} was neither present nor unpacked"
                        ))),
                    }
                }
            }
        }
        .await;
        if result.is_ok() {
            progress.layer(&desc.digest, LayerState::Complete, size, size);
        }
        drop(held);
        self.release_layer_lock(&diff_id, lock);
        result
    }

    async fn unpack_blob_file(
        &self,
        blob: &Digest,
        diff_id: Digest,
        budget: Arc<ImageBudget>,
    ) -> Result<LayerRecord> {
        let store = self.clone();
        let path = self.blobs().path(blob);
        let label = format!("layer {blob}");
        husk_core::spawn_blocking(move || {
            store.ensure_layer_locked(&diff_id, &label, &budget, || {
                std::fs::File::open(&path)
                    .map_err(|e| Error::io(format!("open {}", path.display()), e))
            })
        })
        .await
        .map_err(|e| Error::internal(format!("unpack task: {e}")))?
    }

    /// Downloads a layer blob into the store, unpacking it on the way when `unpack`. Returns the new layer record
    /// (None when only the blob was wanted).
    #[allow(clippy::too_many_arguments)]
    async fn download_layer(
        &self,
        remote: &Remote,
        desc: &OciDescriptor,
        blob: Digest,
        size: u64,
        diff_id: Digest,
        unpack: bool,
        budget: Arc<ImageBudget>,
        progress: &ProgressSink,
    ) -> Result<Option<LayerRecord>> {
        let (path, file) = self.blobs().temp_file()?;
        let cleanup = RemoveOnDrop(Some(path.clone()));
        let mut file = tokio::fs::File::from_std(file);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let complete = Arc::new(AtomicBool::new(false));
        let label = format!("layer {blob}");
        let unpacker = if unpack {
            let store = self.clone();
            let reader = ChunkReader {
                rx,
                current: Bytes::new(),
                complete: complete.clone(),
            };
            let label = label.clone();
            Some(husk_core::spawn_blocking(move || {
                store.ensure_layer_locked(&diff_id, &label, &budget, || Ok(reader))
            }))
        } else {
            drop(rx);
            None
        };
        let sender = if unpack { Some(tx) } else { None };
        let fetched = self
            .fetch_blob(
                remote,
                desc,
                &blob,
                size,
                &mut file,
                sender.as_ref(),
                progress,
            )
            .await;
        let fetched = match fetched {
            Ok(()) => file
                .flush()
                .await
                .map_err(|e| Error::io(format!("write {}", path.display()), e)),
            Err(e) => Err(e),
        };
        if fetched.is_ok() {
            // Only now may the unpacker see the end of the stream as a clean end.
            complete.store(true, Ordering::SeqCst);
            if unpack {
                progress.layer(&desc.digest, LayerState::Unpacking, size, size);
            }
        }
        drop(sender);
        let record = match unpacker {
            Some(task) => {
                let unpacked = task
                    .await
                    .map_err(|e| Error::internal(format!("unpack task: {e}")))?;
                fetched?;
                Some(unpacked?)
            }
            None => {
                fetched?;
                None
            }
        };
        drop(file);
        self.blobs().commit(
            StagedBlob {
                path,
                digest: blob,
                size,
            },
            &blob,
            Some(size),
            "layer",
        )?;
        cleanup.keep();
        Ok(record)
    }

    /// Streams the blob into `file` (and `sender`), resuming a broken transfer; verifies size and digest.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob(
        &self,
        remote: &Remote,
        desc: &OciDescriptor,
        blob: &Digest,
        size: u64,
        file: &mut tokio::fs::File,
        sender: Option<&tokio::sync::mpsc::Sender<Bytes>>,
        progress: &ProgressSink,
    ) -> Result<()> {
        let e = &remote.endpoint;
        let what = format!("layer {blob}");
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut reported = 0u64;
        let mut attempts = 0;
        let retries = self.registries().config().download_retries;
        loop {
            let (stream, mut skip) = if received == 0 {
                (
                    e.client
                        .pull_blob_stream(&e.reference, desc)
                        .await
                        .map_err(|err| registry_error(&format!("fetch {what}"), err))?,
                    0,
                )
            } else {
                match e
                    .client
                    .pull_blob_stream_partial(&e.reference, desc, received, None)
                    .await
                {
                    Ok(BlobResponse::Partial(s)) => (s, 0),
                    // The registry ignored the range: skip what we already have.
                    Ok(BlobResponse::Full(s)) => (s, received),
                    Err(err) => return Err(registry_error(&format!("resume {what}"), err)),
                }
            };
            let mut stream = stream;
            let broken = loop {
                let chunk = match stream.next().await {
                    None => break None,
                    Some(Ok(c)) => c,
                    Some(Err(err)) => break Some(err),
                };
                let mut chunk = chunk;
                self.count_downloaded(chunk.len() as u64);
                if skip > 0 {
                    let n = (skip as usize).min(chunk.len());
                    chunk.advance(n);
                    skip -= n as u64;
                }
                if chunk.is_empty() {
                    continue;
                }
                received += chunk.len() as u64;
                if received > size {
                    return Err(Error::backend(format!(
                        "{what}: the registry sent more than the {size} bytes the manifest declares"
                    )));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|err| Error::io(format!("write {what}"), err))?;
                if let Some(tx) = sender
                    && tx.send(chunk).await.is_err()
                {
                    // The unpacker stopped: its error tells why.
                    return Err(Error::bad_request(format!("{what}: unpacking stopped")));
                }
                if received - reported >= 1 << 20 || received == size {
                    reported = received;
                    progress.layer(&desc.digest, LayerState::Downloading, received, size);
                }
            };
            match broken {
                None if received == size => break,
                None if attempts >= retries => {
                    return Err(Error::backend(format!(
                        "{what}: the registry sent {received} of {size} bytes: truncated"
                    )));
                }
                Some(err) if attempts >= retries => {
                    return Err(Error::backend(format!(
                        "{what}: download failed after {received} bytes: {err}"
                    )));
                }
                other => {
                    attempts += 1;
                    tracing::warn!(layer = %blob, received, error = ?other.map(|e| e.to_string()), "layer download broke; resuming");
                    tokio::time::sleep(std::time::Duration::from_millis(200 * attempts as u64))
                        .await;
                }
            }
        }
        let got = Digest::of_hasher(hasher);
        if got != *blob {
            return Err(Error::backend(format!(
                "{what}: the registry sent content hashing to {got}: corrupt blob refused"
            )));
        }
        Ok(())
    }
}

fn image_limit(blob: &Digest, budget: &ImageBudget) -> Error {
    Error::new(
        ErrorKind::LimitExceeded,
        format!(
            "layer {blob}: the image is larger than the image size limit of {} bytes (max_image_size)",
            budget.max()
        ),
    )
}

/// Feeds downloaded chunks to the blocking unpacker. The end of the channel is a clean end of stream only if the
/// download finished and verified; otherwise the unpacker gets an error and nothing is kept.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
    complete: Arc<AtomicBool>,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None if self.complete.load(Ordering::SeqCst) => return Ok(0),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the download did not complete",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// oci-client's descriptor from oci-spec's, without alternative URLs.
fn descriptor(d: &oci_spec::image::Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        // Never fetch from URLs a manifest names: only from the registry the user asked for.
        urls: None,
        annotations: d
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        ..Default::default()
    }
}

fn with_digest(reference: &oci_client::Reference, digest: &str) -> oci_client::Reference {
    let mut r = oci_client::Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest.to_string(),
    );
    if reference.resolve_registry() != reference.registry() && reference.namespace().is_some() {
        r.set_mirror_registry(reference.resolve_registry().to_string());
    }
    r
}

/// Fetches a manifest or index and checks it against its digest.
async fn fetch_manifest(
    remote: &Remote,
    reference: &oci_client::Reference,
    shown: &str,
) -> Result<(Vec<u8>, Digest)> {
    let e = &remote.endpoint;
    let (bytes, digest) = e
        .client
        .pull_manifest_raw(reference, &e.auth, ACCEPT)
        .await
        .map_err(|err| registry_error(&format!("{shown}: fetch manifest from {}", e.host), err))?;
    let actual = Digest::of(&bytes);
    let claimed = Digest::parse(&digest, "manifest digest")?;
    if actual != claimed {
        return Err(Error::backend(format!(
            "{shown}: the manifest hashes to {actual}, the registry says {claimed}: refused"
        )));
    }
    Ok((bytes.to_vec(), actual))
}

/// The media type a manifest or index says it is (Docker's lists and manifests always say; OCI may not).
pub fn media_type_of(bytes: &[u8]) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        layers: Option<serde_json::Value>,
    }
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| Error::backend(format!("the manifest is not valid JSON: {e}")))?;
    if head.schema_version == 1 {
        return Err(Error::unsupported(
            "Docker schema 1 manifests are not supported: push the image again with a current tool",
        ));
    }
    Ok(match (head.media_type, head.manifests, head.layers) {
        (Some(t), _, _) => t,
        (None, Some(_), _) => media::OCI_INDEX.to_string(),
        (None, None, Some(_)) => media::OCI_MANIFEST.to_string(),
        _ => {
            return Err(Error::backend(
                "the registry sent something that is neither a manifest nor an index",
            ));
        }
    })
}

/// The digest of the index entry for `platform` (attestations skipped).
pub fn choose_platform(index_bytes: &[u8], platform: &Platform, shown: &str) -> Result<String> {
    let index: ImageIndex = serde_json::from_slice(index_bytes)
        .map_err(|e| Error::backend(format!("{shown}: the index is not valid: {e}")))?;
    let mut available = Vec::new();
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        if os == "unknown" {
            continue;
        }
        if platform.matches(&os, &arch, p.variant().as_deref()) {
            return Ok(m.digest().to_string());
        }
        available.push(format!(
            "{os}/{arch}{}",
            p.variant()
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        ));
    }
    Err(Error::not_found(format!(
        "manifest for {platform} in {shown} (it has: {})",
        available.join(", ")
    )))
}

impl Digest {
    /// The digest a finished hasher holds.
    pub(crate) fn of_hasher(h: Sha256) -> Digest {
        Digest::from_bytes(h.finalize().into())
    }
}
