//! Image operations, with the rules the image store cannot know: an image a container uses stays, a container's
//! image is pulled as its pull policy says, and `commit` reads a container's changes through its driver.

use std::collections::HashSet;
use std::path::Path;

use husk_api_types::images::{CommitRequest, ImageView, LoginRequest};
use husk_api_types::system::{ContainerUsage, LayerUsage, SystemDf};
use husk_core::{ContainerRecord, ContainerStatus, Error, ErrorKind, ObservedState, Result};
use husk_image::{
    CommitOptions, Credentials, Image, LoadOptions, LoadedImage, Platform, ProgressSink,
    PruneReport, PullOptions, PullPolicy, PulledImage, PushOptions, PushedImage, Removed,
};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Engine;

impl Engine {
    /// Loads a `docker save` or OCI-layout archive.
    pub async fn load_images<R: AsyncRead + Send + Unpin + 'static>(
        &self,
        reader: R,
        name: Option<String>,
    ) -> Result<Vec<LoadedImage>> {
        let options = LoadOptions {
            name,
            ..Default::default()
        };
        self.inner.images.load(reader, &options).await
    }

    /// Every image.
    pub fn list_images(&self) -> Result<Vec<ImageView>> {
        Ok(self.inner.images.list()?.iter().map(Image::view).collect())
    }

    /// Whether an image that `reference` names is here.
    pub fn has_image(&self, reference: &str) -> bool {
        self.inner.images.resolve(reference).is_ok()
    }

    /// One image by name, ID or digest.
    pub fn inspect_image(&self, reference: &str) -> Result<ImageView> {
        Ok(self.inner.images.inspect(reference)?.view())
    }

    /// Keeps creates from taking an image until dropped (removals hold it, so the image a create has resolved
    /// stays until the create has recorded its container).
    fn block_image_users(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.inner
            .image_users
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The image a create resolved, held against removal until the create records its container (drop the guard
    /// before the next await). Fails if a removal took the image since it was resolved. Waits for a running
    /// removal or prune without blocking the runtime's thread.
    pub(crate) async fn hold_image(
        &self,
        image: &Image,
    ) -> Result<(Image, std::sync::RwLockReadGuard<'_, ()>)> {
        let guard = loop {
            {
                let attempt = match self.inner.image_users.try_read() {
                    Ok(guard) => Some(guard),
                    Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(std::sync::TryLockError::WouldBlock) => None,
                };
                if let Some(guard) = attempt {
                    break guard;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let image = self
            .inner
            .images
            .resolve(&image.id)
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => Error::conflict(format!(
                    "image {} was removed while the container was being created: try again",
                    image.display_name()
                )),
                _ => e,
            })?;
        Ok((image, guard))
    }

    /// IDs of images some container uses: as its root filesystem or through an image mount.
    fn images_in_use(&self) -> Result<HashSet<String>> {
        Ok(self
            .inner
            .store
            .list::<ContainerRecord>()?
            .iter()
            .flat_map(images_of)
            .collect())
    }

    /// Removes (or untags) an image; one a container uses is refused unless forced (and then only untagged).
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<Removed>> {
        let _no_creates = self.block_image_users();
        let used = self.images_in_use()?;
        self.inner
            .images
            .remove(reference, force, &|id| used.contains(id))
    }

    /// Gives an image another name.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        self.inner.images.tag(source, target)
    }

    /// Pulls `reference` from its registry with the stored credentials (`login`); `platform` (`os/arch[/variant]`)
    /// picks from a multi-platform image (default: the host's). Progress goes to `progress`.
    pub async fn pull_image(
        &self,
        reference: &str,
        platform: Option<&str>,
        progress: ProgressSink,
    ) -> Result<PulledImage> {
        if reference.trim().is_empty() {
            return Err(Error::invalid("reference", "no image given to pull"));
        }
        let options = PullOptions {
            platform: parse_platform(platform)?,
            credentials: None,
            progress,
        };
        let started = std::time::Instant::now();
        let pulled = self.inner.images.pull(reference, &options).await;
        self.observe_pull(started, &pulled);
        pulled
    }

    /// Pulls `reference` with `credentials` (user name and password) for this pull alone, instead of the stored
    /// ones (the CRI's PullImage carries them in the request).
    pub async fn pull_image_as(
        &self,
        reference: &str,
        credentials: Option<(String, String)>,
        progress: ProgressSink,
    ) -> Result<PulledImage> {
        if reference.trim().is_empty() {
            return Err(Error::invalid("reference", "no image given to pull"));
        }
        let options = PullOptions {
            platform: None,
            credentials: credentials
                .map(|(username, password)| husk_image::Credentials { username, password }),
            progress,
        };
        let started = std::time::Instant::now();
        let pulled = self.inner.images.pull(reference, &options).await;
        self.observe_pull(started, &pulled);
        pulled
    }

    /// The image a new container of `reference` uses, pulled first as `policy` says. Not-found errors name the
    /// image and the policy.
    pub(crate) async fn image_for_create(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<Image> {
        // Whether this create pulls, for the metrics: the pull policy says, and for `missing` the store.
        let pulls = match policy {
            PullPolicy::Always => true,
            PullPolicy::Never => false,
            PullPolicy::Missing => match self.inner.images.resolve(reference) {
                Ok(image) => return Ok(image),
                Err(e) => e.kind == ErrorKind::NotFound,
            },
        };
        let started = std::time::Instant::now();
        let image = self
            .inner
            .images
            .ensure_image(reference, policy, &PullOptions::default())
            .await;
        if pulls {
            self.observe_pull(started, &image);
        }
        image.map_err(|e| match (e.kind, policy) {
            // NotFound (404), with the field, so a client can pull and try again.
            (ErrorKind::NotFound, PullPolicy::Never) => Error::about(
                ErrorKind::NotFound,
                "image",
                format!(
                    "no such image: {reference} (the pull policy is never: load or pull it first)"
                ),
            ),
            (ErrorKind::NotFound, _) => Error::invalid(
                "image",
                format!("no such image: {reference}: {}", e.message),
            ),
            _ => e,
        })
    }

    /// Pushes the image named `name` to its registry with the stored credentials.
    pub async fn push_image(&self, name: &str, progress: ProgressSink) -> Result<PushedImage> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "no image given to push"));
        }
        let options = PushOptions {
            credentials: None,
            progress,
        };
        self.inner.images.push(name, &options).await
    }

    /// Checks the credentials against the registry and stores them; nothing is stored when the registry refuses.
    pub async fn login(&self, req: &LoginRequest) -> Result<()> {
        if req.registry.trim().is_empty() {
            return Err(Error::invalid("registry", "no registry given to log in to"));
        }
        if req.username.is_empty() {
            return Err(Error::invalid("username", "no user name given"));
        }
        let credentials = Credentials {
            username: req.username.clone(),
            password: req.password.clone(),
        };
        self.inner
            .images
            .login(req.registry.trim(), &credentials)
            .await
    }

    /// Forgets the stored credentials of `registry`; returns whether there were any.
    pub fn logout(&self, registry: &str) -> Result<bool> {
        if registry.trim().is_empty() {
            return Err(Error::invalid(
                "registry",
                "no registry given to log out of",
            ));
        }
        self.inner.images.logout(registry.trim())
    }

    /// Writes `references` to `writer` as one archive `docker load` and OCI tools read. Every name is checked
    /// before the first byte is written, so an unknown one fails the request cleanly.
    pub async fn save_images<W>(&self, references: &[String], writer: W) -> Result<()>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        self.check_save(references)?;
        self.inner.images.save(references, writer).await
    }

    /// Fails unless every reference names an image (and there is at least one).
    pub fn check_save(&self, references: &[String]) -> Result<()> {
        if references.is_empty() {
            return Err(Error::invalid("names", "no image given to save"));
        }
        for r in references {
            self.inner.images.resolve(r)?;
        }
        Ok(())
    }

    /// Removes images no container uses (nameless ones, or every one with `all`), then every layer and blob no
    /// image refers to.
    pub async fn prune_images(&self, all: bool) -> Result<PruneReport> {
        let engine = self.clone();
        husk_core::spawn_blocking(move || {
            let _no_creates = engine.block_image_users();
            let used = engine.images_in_use()?;
            engine.inner.images.prune(all, &|id| used.contains(id))
        })
        .await
        .map_err(|e| Error::internal(format!("prune task: {e}")))?
    }

    /// Disk use of the image store and of every container's writable layer.
    pub async fn system_df(&self) -> Result<SystemDf> {
        let used = self.images_in_use()?;
        let images = self.inner.images.clone();
        let image_usage =
            husk_core::spawn_blocking(move || images.disk_usage(&|id| used.contains(id)))
                .await
                .map_err(|e| Error::internal(format!("disk usage task: {e}")))??;
        let mut containers = Vec::new();
        for rec in self.inner.store.list::<ContainerRecord>()? {
            let size = self.changes_size(&rec).await;
            containers.push(ContainerUsage {
                id: rec.config.id.clone(),
                name: rec.config.name.clone(),
                image_id: rec.config.image.id.clone(),
                active: matches!(
                    rec.status,
                    ContainerStatus::Running | ContainerStatus::Paused
                ),
                size,
            });
        }
        Ok(SystemDf {
            images: image_usage,
            containers,
        })
    }

    /// The bytes of the container's changes to its image's files, when its driver keeps them on this host.
    pub(crate) async fn changes_size(&self, rec: &ContainerRecord) -> Option<u64> {
        Some(self.writable_layer_usage(rec).await?.bytes)
    }

    /// What the container's writable layer (its changes to its image's files) uses, when its driver keeps it on
    /// this host; `None` where it does not (the docker and vm drivers). The layer is walked on every call.
    pub async fn writable_layer_usage(&self, rec: &ContainerRecord) -> Option<LayerUsage> {
        let dir = self.driver(&rec.driver).ok()?.rootfs_changes(rec)?;
        husk_core::spawn_blocking(move || tree_usage(&dir))
            .await
            .ok()
    }

    /// What the image store (layers, blobs and its database) uses on the disk, walked now.
    pub async fn image_store_usage(&self) -> Result<LayerUsage> {
        let root = self.inner.images.root().to_path_buf();
        husk_core::spawn_blocking(move || tree_usage(&root))
            .await
            .map_err(|e| Error::internal(format!("image store usage task: {e}")))
    }

    /// Makes a new image from a container: its image plus its changes as one more layer. A running container is
    /// frozen meanwhile (with `pause`, the default) and thawed after, also when the commit fails.
    pub async fn commit_container(&self, key: &str, req: &CommitRequest) -> Result<ImageView> {
        let id = self.container(key)?.config.id;
        let _guard = self.lock(&id).await;
        let rec = self.container(&id)?;
        let driver = self.driver(&rec.driver)?;
        let upper = driver.rootfs_changes(&rec).ok_or_else(|| {
            Error::unsupported(format!(
                "driver {} does not keep container changes where husk can read them: commit containers of the linux driver",
                driver.name()
            ))
        })?;
        if matches!(
            rec.status,
            ContainerStatus::Creating | ContainerStatus::Removing
        ) {
            return Err(Error::conflict(format!(
                "container {} is {}: commit it when it is created",
                rec.name(),
                rec.status.as_str()
            )));
        }
        let mut freeze =
            req.pause && rec.status == ContainerStatus::Running && driver.capabilities().pause;
        let op = self.inner.store.begin_operation(
            "commit_container",
            &id,
            &json!({"paused": freeze}),
        )?;
        if freeze {
            if let Err(e) = driver.pause(&rec).await {
                // It may have ended an instant ago, before its record says so: then there is nothing to freeze.
                if matches!(
                    driver.observe(&rec).await,
                    Ok(ObservedState::Exited(_) | ObservedState::Missing)
                ) {
                    freeze = false;
                } else {
                    self.inner.store.finish_operation(op)?;
                    return Err(e.context(format!("pause container {} for the commit", rec.name())));
                }
            } else {
                crate::failpoint("commit_container:paused");
            }
        }
        let committed = self.commit_changes(&rec, &upper, req).await;
        if freeze && let Err(e) = driver.unpause(&rec).await {
            tracing::warn!(container = rec.name(), error = %e.message, "thawing after commit failed");
        }
        self.inner.store.finish_operation(op)?;
        committed.map(|i| i.view())
    }

    async fn commit_changes(
        &self,
        rec: &ContainerRecord,
        upper: &Path,
        req: &CommitRequest,
    ) -> Result<Image> {
        let options = CommitOptions {
            name: req.repo.clone().filter(|r| !r.is_empty()),
            author: req.author.clone(),
            comment: req.comment.clone(),
            config: None,
        };
        self.inner
            .images
            .commit(&rec.config.image.id, upper, &options)
            .await
            .map_err(|e| e.context(format!("commit container {}", rec.name())))
    }

    /// Thaws a container a commit froze before the daemon stopped (recovery).
    pub(crate) async fn finish_interrupted_commit(&self, id: &str, paused: bool) {
        if !paused {
            return;
        }
        let Ok(Some(rec)) = self.inner.store.get::<ContainerRecord>(id) else {
            return;
        };
        if rec.status != ContainerStatus::Running {
            return;
        }
        if let Ok(driver) = self.driver(&rec.driver)
            && let Err(e) = driver.unpause(&rec).await
        {
            tracing::warn!(container = rec.name(), error = %e.message, "thawing after an interrupted commit failed");
        }
    }
}

/// The IDs of the images `rec` uses: its own and those its image mounts show.
fn images_of(rec: &ContainerRecord) -> Vec<String> {
    let mounted = rec
        .config
        .mounts
        .iter()
        .filter_map(|m| m.image.as_ref().map(|i| i.image_id.clone()));
    std::iter::once(rec.config.image.id.clone())
        .chain(mounted)
        .collect()
}

fn parse_platform(text: Option<&str>) -> Result<Option<Platform>> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Platform::parse(t)
            .map(Some)
            .map_err(|e| Error::invalid("platform", e.message)),
        None => Ok(None),
    }
}

/// What is under `dir`: the bytes of its regular files and the inodes of everything below it (links not
/// followed; an inode reached twice through hard links counted once).
fn tree_usage(dir: &Path) -> LayerUsage {
    use std::os::unix::fs::MetadataExt;
    let mut usage = LayerUsage::default();
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            usage.inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                usage.bytes += meta.len();
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContainerCreate;

    #[test]
    fn pull_policy_spellings_in_requests() {
        let req: ContainerCreate =
            serde_json::from_str(r#"{"image": "busybox", "pull": "IfNotPresent"}"#).unwrap();
        assert_eq!(req.pull, PullPolicy::Missing);
        let req: ContainerCreate = serde_json::from_str(r#"{"image": "busybox"}"#).unwrap();
        assert_eq!(req.pull, PullPolicy::Missing, "missing is the default");
        let req: ContainerCreate =
            serde_json::from_str(r#"{"image": "busybox", "pull": "always"}"#).unwrap();
        assert_eq!(req.pull, PullPolicy::Always);
        let e = serde_json::from_str::<ContainerCreate>(r#"{"image": "b", "pull": "often"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("invalid pull policy"), "{e}");
        let back: ContainerCreate =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        assert_eq!(
            back.pull,
            PullPolicy::Always,
            "a request survives its own JSON"
        );
    }

    #[test]
    fn commit_pauses_by_default() {
        let req: CommitRequest = serde_json::from_str(r#"{"repo": "x:1"}"#).unwrap();
        assert!(req.pause);
        assert!(serde_json::from_str::<CommitRequest>(r#"{"tag": "x"}"#).is_err());
    }

    #[test]
    fn image_mounts_count_as_images_in_use() {
        let mut rec = ContainerRecord {
            config: husk_core::ContainerConfig {
                image: husk_core::ImageRef {
                    name: "app".into(),
                    id: "sha256:app".into(),
                },
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(images_of(&rec), vec!["sha256:app"]);
        rec.config.mounts = vec![
            husk_core::MountConfig {
                kind: husk_core::MountKind::Image,
                source: "data:1".into(),
                destination: "/data".into(),
                image: Some(husk_core::RootfsLayers {
                    image_id: "sha256:data".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            husk_core::MountConfig {
                kind: husk_core::MountKind::Tmpfs,
                destination: "/t".into(),
                ..Default::default()
            },
        ];
        assert_eq!(images_of(&rec), vec!["sha256:app", "sha256:data"]);
    }

    #[test]
    fn platform_text() {
        assert_eq!(parse_platform(None).unwrap(), None);
        assert_eq!(parse_platform(Some(" ")).unwrap(), None);
        let p = parse_platform(Some("linux/arm64")).unwrap().unwrap();
        assert_eq!(p.architecture, "arm64");
        assert_eq!(
            parse_platform(Some("???")).unwrap_err().field.as_deref(),
            Some("platform")
        );
    }

    #[test]
    fn tree_usage_counts_files_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), vec![0u8; 24]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("d/a2")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("l")).unwrap();
        assert_eq!(
            tree_usage(dir.path()),
            LayerUsage {
                bytes: 1024,
                inodes: 4
            },
            "a, d, d/b, l; a2 is a"
        );
    }
}
