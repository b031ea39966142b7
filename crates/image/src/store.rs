//! The image store: blobs, unpacked layers and image records, and the operations on them.
//!
//! On disk, under the store's root:
//! - `blobs/sha256/<hex>`: configs, manifests and layer blobs as they arrived (verified before they are renamed in);
//! - `layers/<diff-id hex>/`: one unpacked copy of each layer, an overlayfs lower dir shared read-only by every image
//!   and container that has the layer;
//! - `tmp/`: blobs and layers being written (emptied at open: an interrupted load leaves nothing visible);
//! - `empty/`: an empty directory, the lower dir of images without layers;
//! - `lock`: held (flock) while a store is open, so two daemons never share a root.
//!
//! Image and layer records live in the husk database (kinds `image` and `layer`). A layer or blob is removed when
//! the last image referring to it goes; what an interrupted load or pull left behind stays for the next attempt to
//! reuse, until [`ImageStore::prune`] sweeps it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use husk_core::{Context as _, Error, ErrorKind, Result, RootfsLayers};
use husk_store::Store;
use tokio::io::AsyncRead;

use crate::archive::{self, ImageSource, ReadOptions, StagedArchive};
use crate::auth::CredentialStore;
use crate::blobs::{BlobStore, RemoveOnDrop, remove_any};
use crate::config::ImageConfig;
use crate::digest::Digest;
pub use husk_api_types::images::{DiskUsage, ImageUsage, LoadedImage, PruneReport, Removed};

mod gc;
mod removal;

pub(crate) use gc::GcGate;
use gc::GcGuard;

use crate::image::{BlobRef, ConfigFile, Image, ImageLayer, LayerRecord, Platform, short_id};
use crate::reference::{self, ImageName};
use crate::registry::Registries;
use crate::unpack::{ImageBudget, UnpackOptions, unpack_layer};

/// Options of [`ImageStore::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A name (`repo[:tag]`) for an image the archive does not name. For OCI layouts whose
    /// `org.opencontainers.image.ref.name` holds only a tag, the repository the tag belongs to.
    pub name: Option<String>,
    /// The platform to pick from multi-platform OCI layouts (default: the host's).
    pub platform: Option<Platform>,
}

/// The image store. Cheap to clone; every clone is the same store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    layers_dir: PathBuf,
    tmp_dir: PathBuf,
    empty_dir: PathBuf,
    blobs: BlobStore,
    db: Arc<Store>,
    config: ImageConfig,
    /// Serialises read-modify-write of image records (names move between images).
    records: Mutex<()>,
    /// One lock per layer being unpacked, so concurrent loads and pulls of one layer do the work once.
    layer_locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Loads and pulls enter it from their first blob to their image record; removing layers and blobs waits
    /// until none is inside, so nothing is removed between being written and being referenced.
    gc: Arc<GcGate>,
    /// Layers and blobs to check again once no load runs (a removal found the store busy).
    gc_pending: Mutex<(BTreeSet<Digest>, BTreeSet<Digest>)>,
    registries: Registries,
    /// Bytes of layers downloaded from registries since the store was opened (for the daemon's metrics).
    downloaded: AtomicU64,
    _lock: File,
}

impl ImageStore {
    /// Opens (creating if needed) the store under `root`, with its records in `db`.
    ///
    /// Fails with a conflict if another process has the same root open. Leftovers of interrupted loads in `tmp/`
    /// are removed, and layer directories and records that do not match are reconciled.
    pub fn open(
        root: impl Into<PathBuf>,
        db: Arc<Store>,
        config: ImageConfig,
    ) -> Result<ImageStore> {
        let root = root.into();
        let blobs_dir = root.join("blobs").join("sha256");
        let layers_dir = root.join("layers");
        let tmp_dir = root.join("tmp");
        let empty_dir = root.join("empty");
        for dir in [&blobs_dir, &layers_dir, &tmp_dir, &empty_dir] {
            fs::create_dir_all(dir)
                .context(format!("create image store directory {}", dir.display()))?;
        }
        let lock = lock_root(&root)?;
        for entry in fs::read_dir(&tmp_dir)
            .context(format!("list {}", tmp_dir.display()))?
            .flatten()
        {
            remove_any(&entry.path());
        }
        let auth_file = config
            .registry
            .auth_file
            .clone()
            .unwrap_or_else(|| root.join("auth.json"));
        let registries = Registries::new(config.registry.clone(), CredentialStore::new(auth_file));
        let store = ImageStore {
            inner: Arc::new(Inner {
                registries,
                blobs: BlobStore::new(blobs_dir, tmp_dir.clone()),
                root,
                layers_dir,
                tmp_dir,
                empty_dir,
                db,
                config,
                records: Mutex::new(()),
                layer_locks: Mutex::new(HashMap::new()),
                gc: Arc::new(GcGate::default()),
                gc_pending: Mutex::new((BTreeSet::new(), BTreeSet::new())),
                downloaded: AtomicU64::new(0),
                _lock: lock,
            }),
        };
        store.reconcile_layers()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The store's settings.
    pub fn config(&self) -> &ImageConfig {
        &self.inner.config
    }

    /// Registry clients, settings and credentials.
    pub fn registries(&self) -> &Registries {
        &self.inner.registries
    }

    /// Bytes of image layers downloaded from registries since the store was opened (what a registry sent again
    /// when it ignored a resumed transfer's range counts too; layers already here count nothing).
    pub fn bytes_downloaded(&self) -> u64 {
        self.inner.downloaded.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes downloaded.
    pub(crate) fn count_downloaded(&self, n: u64) {
        self.inner.downloaded.fetch_add(n, Ordering::Relaxed);
    }

    /// The blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The directory a layer is (or would be) unpacked in.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.inner.layers_dir.join(diff_id.hex())
    }

    /// Loads a `docker save` archive or an OCI image-layout tarball. Every blob is verified against its digest and
    /// every layer against its diff ID before the image becomes visible; names the archive gives move to the new
    /// images (an image left with no name stays, as Docker does).
    pub async fn load<R>(&self, reader: R, options: &LoadOptions) -> Result<Vec<LoadedImage>>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let store = self.clone();
        let options = ReadOptions {
            name: options.name.clone(),
            platform: options.platform.clone(),
        };
        husk_core::spawn_blocking(move || {
            let reader = tokio_util::io::SyncIoBridge::new(reader);
            store.load_blocking(reader, &options)
        })
        .await
        .map_err(|e| Error::internal(format!("image load task failed: {e}")))?
    }

    /// [`load`](Self::load) for a synchronous reader; call it off the async runtime's worker threads.
    pub fn load_blocking(
        &self,
        reader: impl std::io::Read,
        options: &ReadOptions,
    ) -> Result<Vec<LoadedImage>> {
        let limits = &self.inner.config.limits;
        let mut staged = StagedArchive::read(reader, &self.inner.blobs, limits)?;
        let sources = archive::images(&staged, options, limits)?;
        let guard = self.hold_gc();
        let loaded: Result<Vec<LoadedImage>> = sources
            .into_iter()
            .map(|source| self.store_image(&mut staged, source))
            .collect();
        drop(guard);
        self.run_pending_gc();
        loaded
    }

    /// Keeps removals of layers and blobs away until the guard is dropped (blocks while a sweep runs).
    pub(crate) fn hold_gc(&self) -> GcGuard {
        GcGate::enter(&self.inner.gc)
    }

    fn store_image(&self, staged: &mut StagedArchive, source: ImageSource) -> Result<LoadedImage> {
        let id = source.config_digest;
        let what = format!("image {}", short_id(&id.to_string()));
        let (config, diff_ids) = ConfigFile::parse(&source.config, &format!("config of {what}"))?;
        if diff_ids.len() != source.layers.len() {
            return Err(Error::bad_request(format!(
                "{what}: the config lists {} layers but the manifest has {}",
                diff_ids.len(),
                source.layers.len()
            )));
        }
        self.inner.blobs.put_bytes(&source.config, &id, "config")?;
        let manifest = match &source.manifest {
            Some((bytes, digest, media_type)) => {
                self.inner.blobs.put_bytes(bytes, digest, "manifest")?;
                Some(BlobRef {
                    digest: digest.to_string(),
                    size: bytes.len() as u64,
                    media_type: media_type.clone(),
                })
            }
            None => None,
        };
        let budget = ImageBudget::new(self.inner.config.limits.max_image_size);
        let mut layers = Vec::with_capacity(diff_ids.len());
        let mut size = 0;
        for (layer, diff_id) in source.layers.iter().zip(&diff_ids) {
            let blob_path = self.commit_staged(staged, layer)?;
            let record =
                self.ensure_layer(diff_id, &format!("layer {}", layer.digest), &budget, || {
                    File::open(&blob_path)
                        .map_err(|e| Error::io(format!("open layer blob {}", layer.digest), e))
                })?;
            size += record.size;
            let blob = BlobRef {
                digest: layer.digest.to_string(),
                size: layer.size,
                media_type: layer.media_type.clone(),
            };
            layers.push(ImageLayer {
                diff_id: diff_id.to_string(),
                blob,
            });
        }
        let digests: Vec<String> = match &manifest {
            Some(m) => source
                .names
                .iter()
                .filter_map(|n| ImageName::parse(n).ok())
                .map(|n| n.with_digest(&m.digest))
                .collect(),
            None => Vec::new(),
        };
        let image = Image {
            id: id.to_string(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            created: config.created,
            architecture: config.architecture,
            os: config.os,
            variant: config.variant,
            author: config.author,
            config: config.config,
            layers,
            size,
            manifest,
            loaded_at: Some(husk_core::Timestamp::now()),
        };
        self.record_image(image, &source.names, &digests)?;
        Ok(LoadedImage {
            id: id.to_string(),
            names: source.names,
        })
    }

    /// Moves a staged layer blob into the blob store (once, however many images share it).
    fn commit_staged(
        &self,
        staged: &mut StagedArchive,
        layer: &archive::LayerSource,
    ) -> Result<PathBuf> {
        let blobs = &self.inner.blobs;
        if blobs.contains(&layer.digest) {
            return Ok(blobs.path(&layer.digest));
        }
        let file = staged.take(&layer.path).ok_or_else(|| {
            Error::internal(format!("layer {} was staged but is gone", layer.digest))
        })?;
        blobs.commit(file, &layer.digest, Some(layer.size), "layer")
    }

    /// Makes sure the layer `diff_id` is unpacked, unpacking what `open` returns if it is not. Concurrent calls for
    /// one layer unpack it once; the others wait and reuse it.
    pub(crate) fn ensure_layer<R: std::io::Read>(
        &self,
        diff_id: &Digest,
        label: &str,
        budget: &Arc<ImageBudget>,
        open: impl FnOnce() -> Result<R>,
    ) -> Result<LayerRecord> {
        let lock = self.layer_lock(diff_id);
        let held = lock.blocking_lock();
        let result = self.ensure_layer_locked(diff_id, label, budget, open);
        drop(held);
        self.release_layer_lock(diff_id, lock);
        result
    }

    /// [`ensure_layer`](Self::ensure_layer) for a caller that holds the layer's lock.
    pub(crate) fn ensure_layer_locked<R: std::io::Read>(
        &self,
        diff_id: &Digest,
        label: &str,
        budget: &Arc<ImageBudget>,
        open: impl FnOnce() -> Result<R>,
    ) -> Result<LayerRecord> {
        if let Some(record) = self.present_layer(diff_id)? {
            if !budget.take(record.tar_size) {
                return Err(Error::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "{label}: the image is larger than the image size limit of {} bytes (max_image_size)",
                        budget.max()
                    ),
                ));
            }
            return Ok(record);
        }
        let limits = &self.inner.config.limits;
        let tmp = self.inner.tmp_dir.join(format!(
            "layer-{}-{:08x}",
            &diff_id.hex()[..12],
            rand::random::<u32>()
        ));
        fs::create_dir(&tmp).context(format!("create {}", tmp.display()))?;
        let cleanup = RemoveOnDrop(Some(tmp.clone()));
        let options = UnpackOptions {
            max_size: limits.max_layer_size,
            max_entries: limits.max_layer_entries,
            allow_devices: self.inner.config.allow_devices,
            image_budget: Some(budget.clone()),
        };
        let stats = unpack_layer(open()?, &tmp, label, &options)?;
        if stats.diff_id != *diff_id {
            return Err(Error::bad_request(format!(
                "{label}: its uncompressed content hashes to {}, but the image config says the layer is {diff_id}: the blob is corrupt or the image is inconsistent",
                stats.diff_id
            )));
        }
        let dest = self.layer_dir(diff_id);
        if dest.exists() {
            // A directory without a record: left by a crash between rename and record. Ours replaces it.
            remove_any(&dest);
        }
        fs::rename(&tmp, &dest).context(format!("move layer {diff_id} into {}", dest.display()))?;
        cleanup.keep();
        let record = LayerRecord {
            diff_id: diff_id.to_string(),
            size: stats.content_size,
            tar_size: stats.tar_size,
            entries: stats.entries,
            created_at: husk_core::Timestamp::now(),
        };
        self.inner.db.upsert(&record)?;
        Ok(record)
    }

    /// The layer's record if it is unpacked.
    pub(crate) fn present_layer(&self, diff_id: &Digest) -> Result<Option<LayerRecord>> {
        let record = self.inner.db.get::<LayerRecord>(&diff_id.to_string())?;
        Ok(record.filter(|_| self.layer_dir(diff_id).is_dir()))
    }

    /// The lock that serialises work on one layer (async and blocking callers alike).
    pub(crate) fn layer_lock(&self, diff_id: &Digest) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .inner
            .layer_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.entry(*diff_id).or_default().clone()
    }

    /// Forgets a layer's lock when nobody else holds a handle to it.
    pub(crate) fn release_layer_lock(&self, diff_id: &Digest, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self
            .inner
            .layer_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        drop(lock);
        if locks
            .get(diff_id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(diff_id);
        }
    }

    /// Stores an image record, giving it `names` and `digests` (taken off any other image that had them).
    pub(crate) fn record_image(
        &self,
        mut image: Image,
        names: &[String],
        digests: &[String],
    ) -> Result<()> {
        let _records = self.inner.records.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.db.transaction(|tx| {
            if let Some(existing) = tx.get::<Image>(&image.id)? {
                image.repo_tags = existing.repo_tags;
                image.repo_digests = existing.repo_digests;
                image.loaded_at = existing.loaded_at;
            }
            for mut other in tx.list::<Image>()? {
                if other.id == image.id {
                    continue;
                }
                let before = other.repo_tags.len() + other.repo_digests.len();
                other.repo_tags.retain(|t| !names.contains(t));
                other.repo_digests.retain(|d| !digests.contains(d));
                if other.repo_tags.len() + other.repo_digests.len() != before {
                    tracing::info!(image = %other.id, "names moved to image {}", image.id);
                    tx.update(&other)?;
                }
            }
            for n in names {
                if !image.repo_tags.contains(n) {
                    image.repo_tags.push(n.clone());
                }
            }
            for d in digests {
                if !image.repo_digests.contains(d) {
                    image.repo_digests.push(d.clone());
                }
            }
            tx.upsert(&image)
        })
    }

    /// The image a reference names: `name[:tag]` or `name@sha256:...` (normalised as Docker does), a full ID
    /// (with or without `sha256:`), or a unique ID prefix.
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let text = reference.trim();
        if text.is_empty() {
            return Err(Error::invalid("image", "empty image reference"));
        }
        if reference::looks_like_full_id(text) {
            let id = format!(
                "sha256:{}",
                text.trim_start_matches("sha256:").to_ascii_lowercase()
            );
            return self
                .inner
                .db
                .get::<Image>(&id)?
                .ok_or_else(|| Error::not_found(format!("image {text}")));
        }
        let images = self.inner.db.list::<Image>()?;
        let parsed = ImageName::parse(text);
        if let Ok(name) = &parsed {
            let found = match (name.digested(), name.tagged()) {
                (Some(d), _) => images.iter().find(|i| i.repo_digests.contains(&d)),
                (None, Some(t)) => images.iter().find(|i| i.repo_tags.contains(&t)),
                (None, None) => None,
            };
            if let Some(image) = found {
                return Ok(image.clone());
            }
        }
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let matches: Vec<&Image> = images
                .iter()
                .filter(|i| i.id.trim_start_matches("sha256:").starts_with(&hex))
                .collect();
            match matches.len() {
                0 => {}
                1 => return Ok(matches[0].clone()),
                _ => {
                    return Err(Error::invalid(
                        "image",
                        format!("the image ID prefix {text:?} is ambiguous: give more characters"),
                    ));
                }
            }
        }
        match parsed {
            Err(e) if !hex.bytes().all(|b| b.is_ascii_hexdigit()) => Err(e),
            _ => Err(Error::not_found(format!("image {text}"))),
        }
    }

    /// Same as [`resolve`](Self::resolve): the image's full record.
    pub fn inspect(&self, reference: &str) -> Result<Image> {
        self.resolve(reference)
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut images = self.inner.db.list::<Image>()?;
        images.sort_by_key(|i| std::cmp::Reverse(i.loaded_at));
        Ok(images)
    }

    /// The image's config JSON exactly as it arrived.
    pub fn raw_config(&self, image: &Image) -> Result<Vec<u8>> {
        self.inner
            .blobs
            .read(&image.digest()?, self.inner.config.limits.max_json_size)
    }

    /// Gives the image `source` refers to the name `target` (`repo[:tag]`, normalised); the name leaves any other
    /// image that had it.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let name = reference::normalize_tag(target)?;
        let image = self.resolve(source)?;
        self.record_image(image, &[name], &[])
    }

    /// How much disk the images, layers and blobs use; `in_use` says which images containers use.
    pub fn disk_usage(&self, in_use: &dyn Fn(&str) -> bool) -> Result<DiskUsage> {
        let images = self.inner.db.list::<Image>()?;
        let layers: HashMap<String, LayerRecord> = self
            .inner
            .db
            .list::<LayerRecord>()?
            .into_iter()
            .map(|l| (l.diff_id.clone(), l))
            .collect();
        let mut users: HashMap<&str, (usize, bool)> = HashMap::new();
        let used: Vec<bool> = images.iter().map(|i| in_use(&i.id)).collect();
        for (image, used) in images.iter().zip(&used) {
            let unique: HashSet<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
            for d in unique {
                let e = users.entry(d).or_default();
                e.0 += 1;
                e.1 |= *used;
            }
        }
        let size_of = |d: &str| layers.get(d).map(|l| l.size).unwrap_or(0);
        let mut out = DiskUsage::default();
        for (image, used) in images.iter().zip(used) {
            let unique: HashSet<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
            let shared: u64 = unique
                .iter()
                .filter(|d| users.get(*d).is_some_and(|u| u.0 > 1))
                .map(|d| size_of(d))
                .sum();
            let total: u64 = unique.iter().map(|d| size_of(d)).sum();
            out.images.push(ImageUsage {
                id: image.id.clone(),
                names: image.repo_tags.clone(),
                size: total,
                shared_size: shared,
                unique_size: total - shared,
                in_use: used,
            });
        }
        out.layers_size = layers.values().map(|l| l.size).sum();
        out.reclaimable = layers
            .values()
            .filter(|l| !users.get(l.diff_id.as_str()).is_some_and(|u| u.1))
            .map(|l| l.size)
            .sum();
        let mut used_blobs = HashSet::new();
        for (image, _) in images.iter().zip(&out.images).filter(|(_, u)| u.in_use) {
            used_blobs.extend(image.digest().ok());
            used_blobs.extend(
                image
                    .manifest
                    .as_ref()
                    .and_then(|m| Digest::parse(&m.digest, "manifest digest").ok()),
            );
            used_blobs.extend(
                image
                    .layers
                    .iter()
                    .filter_map(|l| Digest::parse(&l.blob.digest, "layer digest").ok()),
            );
        }
        for (digest, size) in self.inner.blobs.list()? {
            out.blobs_size += size;
            if !used_blobs.contains(&digest) {
                out.reclaimable += size;
            }
        }
        Ok(out)
    }

    /// Drops layer records whose directory is gone and directories that are not named like a layer.
    fn reconcile_layers(&self) -> Result<()> {
        for record in self.inner.db.list::<LayerRecord>()? {
            let Ok(d) = Digest::parse(&record.diff_id, "diff ID") else {
                continue;
            };
            if !self.layer_dir(&d).is_dir() {
                tracing::warn!(layer = %d, "layer directory missing: record dropped");
                self.inner.db.delete::<LayerRecord>(&record.diff_id)?;
            }
        }
        Ok(())
    }

    /// The layer directories of `image`, bottom first, for an overlayfs root filesystem. An image without layers
    /// gets one empty directory (overlayfs needs a lower dir).
    pub fn rootfs_layers(&self, image: &Image) -> Result<RootfsLayers> {
        let mut layers = Vec::with_capacity(image.layers.len().max(1));
        // A layer listed twice is mounted once, at its upper position: every entry of the lower copy is shadowed
        // by the same entry in the upper one, so the merged view is the same (and overlayfs wants distinct dirs).
        let mut seen = HashSet::new();
        for l in image.layers.iter().rev() {
            let diff_id = Digest::parse(&l.diff_id, "diff ID")?;
            let dir = self.layer_dir(&diff_id);
            if !dir.is_dir() {
                return Err(Error::not_found(format!(
                    "layer {diff_id} of image {} (its directory {} is missing; remove the image and load or pull it again)",
                    image.display_name(),
                    dir.display()
                )));
            }
            if seen.insert(diff_id) {
                layers.push(dir);
            }
        }
        layers.reverse();
        if layers.is_empty() {
            layers.push(self.inner.empty_dir.clone());
        }
        Ok(RootfsLayers {
            image_id: image.id.clone(),
            image_name: image.display_name(),
            layers,
        })
    }
}

fn lock_root(root: &Path) -> Result<File> {
    let path = root.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .context(format!("open {}", path.display()))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::conflict(format!(
            "the image store {} is in use by another process",
            root.display()
        ))),
        Err(e) => Err(Error::io(format!("lock {}", path.display()), e.into())),
    }
}

#[cfg(test)]
mod tests;
