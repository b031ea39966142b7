//! Volumes of the `local` driver: directories under `<root>/volumes/<name>/_data`, recorded in the store so they
//! outlive their containers and the daemon.
//!
//! A volume is *named* (made by `volume create`, or on first use by `-v NAME:/path`), *anonymous* (made for an
//! image's `VOLUME` or a `-v /path` without a name; `--rm` and `rm -v` remove it with its container), or belongs
//! to a *sandbox* (declared with `sandbox create --volume NAME`: its containers mount it by that name, it goes
//! when the sandbox goes). A volume some container uses (running or not) cannot be removed.
//!
//! Every change to one volume runs under the engine's lock for `volume:<name>`; a container create holds the
//! locks of its volumes until its record (which marks them used) is stored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use husk_core::{
    ContainerRecord, Error, ErrorKind, MountKind, Result, RootfsLayers, SandboxRecord, units,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::Engine;
use crate::{VolumeCreate, VolumePruneReport, VolumeView};

/// The only volume driver husk has.
pub const LOCAL_DRIVER: &str = "local";

/// A stored volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Unique name (a 64-hex-character ID for anonymous volumes).
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// The host directory holding the data (`<root>/volumes/<name>/_data`).
    pub mountpoint: String,
    /// When it was created.
    pub created_at: husk_core::Timestamp,
    /// User labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (image `VOLUME`, `-v /path`); removed with it by `--rm` and `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
    /// The sandbox that owns it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Its name inside the owning sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

impl husk_store::Object for VolumeRecord {
    const KIND: &'static str = "volume";
    fn id(&self) -> &str {
        &self.name
    }
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }
}

/// Whether `rec` mounts the volume `name`.
pub(crate) fn uses_volume(rec: &ContainerRecord, name: &str) -> bool {
    rec.config
        .mounts
        .iter()
        .any(|m| m.kind == MountKind::Volume && m.source == name)
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io(format!("create {}", path.display()), e)),
    }
}

/// Bytes used by the files under `dir` (not following links).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

fn dir_is_empty(dir: &Path) -> Result<bool> {
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
    Ok(entries.next().is_none())
}
impl Engine {
    /// `<root>/volumes`.
    pub(crate) fn volumes_root(&self) -> PathBuf {
        self.inner.config.root.join("volumes")
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_root().join(name)
    }

    /// Locks the volumes `names` (sorted, so two creates never wait on each other in a circle).
    pub(crate) async fn lock_volumes(&self, names: &[String]) -> Vec<OwnedMutexGuard<()>> {
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for n in sorted {
            guards.push(self.lock(&format!("volume:{n}")).await);
        }
        guards
    }

    /// A volume by name.
    pub fn volume(&self, name: &str) -> Result<VolumeRecord> {
        self.inner
            .store
            .get::<VolumeRecord>(name)?
            .ok_or_else(|| Error::not_found(format!("volume: {name}")))
    }

    /// The volume a container of `sandbox` means by `name`: the sandbox's own volume of that name first.
    pub(crate) fn sandbox_volume(
        &self,
        sandbox: &SandboxRecord,
        name: &str,
    ) -> Result<Option<VolumeRecord>> {
        Ok(self
            .inner
            .store
            .list::<VolumeRecord>()?
            .into_iter()
            .find(|v| {
                v.sandbox.as_deref() == Some(&sandbox.config.id) && v.alias.as_deref() == Some(name)
            }))
    }

    /// Names of the containers that use the volume `name`.
    pub(crate) fn volume_users(&self, name: &str) -> Result<Vec<String>> {
        Ok(self
            .inner
            .store
            .list::<ContainerRecord>()?
            .into_iter()
            .filter(|c| uses_volume(c, name))
            .map(|c| c.config.name)
            .collect())
    }

    /// Makes the volume `name` if it does not exist; returns it and whether it was made now. The caller holds
    /// the volume's lock.
    pub(crate) fn ensure_volume(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
        sandbox: Option<(&str, &str)>,
    ) -> Result<(VolumeRecord, bool)> {
        if let Some(v) = self.inner.store.get::<VolumeRecord>(name)? {
            return Ok((v, false));
        }
        units::validate_name("volume name", name)?;
        let data = self.volume_dir(name).join("_data");
        mkdir(&self.volumes_root(), 0o700)?;
        mkdir(&data, 0o755)?;
        // A crash from here until the record is in leaves a directory no record names: removed at the next
        // start (`remove_orphan_volume_dirs`).
        crate::failpoint("create_volume:dir_made");
        let rec = VolumeRecord {
            name: name.to_string(),
            driver: LOCAL_DRIVER.into(),
            mountpoint: data.display().to_string(),
            created_at: husk_core::Timestamp::now(),
            labels,
            anonymous,
            sandbox: sandbox.map(|(id, _)| id.to_string()),
            alias: sandbox.map(|(_, alias)| alias.to_string()),
        };
        if let Err(e) = self.inner.store.insert(&rec) {
            let _ = std::fs::remove_dir_all(self.volume_dir(name));
            return Err(e);
        }
        Ok((rec, true))
    }

    /// Creates a volume (`volume create`); an existing one of that name is returned as it is, as Docker does.
    pub async fn create_volume(&self, req: VolumeCreate) -> Result<VolumeRecord> {
        let driver = req.driver.as_deref().unwrap_or(LOCAL_DRIVER);
        if driver != LOCAL_DRIVER {
            return Err(Error::invalid(
                "driver",
                format!(
                    "volume driver {driver:?} is not available: husk has the local driver only"
                ),
            ));
        }
        if let Some(k) = req.driver_opts.keys().next() {
            return Err(Error::invalid(
                "driver_opts",
                format!("the local volume driver takes no options (got {k:?})"),
            ));
        }
        let name = match req.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => husk_core::new_id(),
        };
        units::validate_name("volume name", &name)?;
        let _guard = self.lock(&format!("volume:{name}")).await;
        if let Some(v) = self.inner.store.get::<VolumeRecord>(&name)?
            && v.sandbox.is_some()
        {
            return Err(Error::conflict(format!(
                "the volume name {name:?} is taken by a sandbox's volume"
            )));
        }
        self.ensure_volume(&name, req.labels, false, None)
            .map(|(v, _)| v)
    }

    /// The inspect view of a volume.
    pub fn inspect_volume(&self, name: &str) -> Result<VolumeView> {
        let v = self.volume(name)?;
        let users = self.volume_users(name)?;
        Ok(view(v, users))
    }

    /// Every volume, by name.
    pub fn list_volumes(&self) -> Result<Vec<VolumeView>> {
        let containers = self.inner.store.list::<ContainerRecord>()?;
        let mut out: Vec<VolumeView> = self
            .inner
            .store
            .list::<VolumeRecord>()?
            .into_iter()
            .map(|v| {
                let users = containers
                    .iter()
                    .filter(|c| uses_volume(c, &v.name))
                    .map(|c| c.config.name.clone())
                    .collect();
                view(v, users)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a volume nothing uses; `force` only makes a missing volume not an error (a volume in use is never
    /// removed, as with Docker).
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let _guard = self.lock(&format!("volume:{name}")).await;
        let v = match self.volume(name) {
            Ok(v) => v,
            Err(e) if force && e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if v.sandbox.is_some() {
            return Err(Error::conflict(format!(
                "volume {name} belongs to a sandbox: it goes when the sandbox is removed"
            )));
        }
        let users = self.volume_users(name)?;
        if !users.is_empty() {
            return Err(Error::conflict(format!(
                "volume {name} is in use by container(s) {}: remove them first",
                users.join(", ")
            )));
        }
        self.delete_volume(&v)
    }

    /// Deletes a volume's record, then its data; the caller holds its lock and checked it is unused. A crash in
    /// between leaves a directory no record names, removed at the next start before anything can make a volume
    /// of that name again: so a volume is always whole or gone, never there with part of its data.
    pub(crate) fn delete_volume(&self, v: &VolumeRecord) -> Result<()> {
        self.inner.store.delete::<VolumeRecord>(&v.name)?;
        crate::failpoint("remove_volume:record_deleted");
        let dir = self.volume_dir(&v.name);
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(volume = %v.name, "remove the volume's data in {}: {e} (retried at the next start)", dir.display());
        }
        Ok(())
    }

    /// At start: removes the directories in the volumes' directory that no volume record names (a create or a
    /// removal cut short by a crash). Returns what it removed.
    pub(crate) fn remove_orphan_volume_dirs(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let root = self.volumes_root();
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Ok(removed);
        };
        let names: std::collections::HashSet<String> = self
            .inner
            .store
            .list::<VolumeRecord>()?
            .into_iter()
            .map(|v| v.name)
            .collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && !names.contains(&name) {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => removed.push(format!("volume directory {}", entry.path().display())),
                    Err(e) => tracing::warn!("remove {}: {e}", entry.path().display()),
                }
            }
        }
        Ok(removed)
    }

    /// Removes unused anonymous volumes, and with `all` unused named ones too (never a sandbox's).
    pub async fn prune_volumes(&self, all: bool) -> Result<VolumePruneReport> {
        let mut report = VolumePruneReport::default();
        for v in self.inner.store.list::<VolumeRecord>()? {
            if v.sandbox.is_some() || !(all || v.anonymous) {
                continue;
            }
            let _guard = self.lock(&format!("volume:{}", v.name)).await;
            let Some(v) = self.inner.store.get::<VolumeRecord>(&v.name)? else {
                continue;
            };
            if !self.volume_users(&v.name)?.is_empty() {
                continue;
            }
            let size = disk_usage(&self.volume_dir(&v.name));
            self.delete_volume(&v)?;
            report.space_reclaimed += size;
            report.volumes_deleted.push(v.name);
        }
        Ok(report)
    }

    /// Removes the anonymous volumes `rec` used that no other container uses (`--rm`, `rm -v`).
    pub(crate) async fn remove_anonymous_volumes(&self, rec: &ContainerRecord) {
        for m in rec
            .config
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
        {
            let _guard = self.lock(&format!("volume:{}", m.source)).await;
            let Ok(Some(v)) = self.inner.store.get::<VolumeRecord>(&m.source) else {
                continue;
            };
            if !v.anonymous {
                continue;
            }
            match self.volume_users(&v.name) {
                Ok(users) if users.is_empty() => {
                    if let Err(e) = self.delete_volume(&v) {
                        tracing::warn!(volume = %v.name, "remove an anonymous volume: {e}");
                    }
                }
                _ => {}
            }
        }
    }

    /// Makes the volumes a sandbox declares (`sandbox create --volume`).
    pub(crate) async fn create_sandbox_volumes(
        &self,
        sb: &SandboxRecord,
        aliases: &[String],
    ) -> Result<()> {
        for alias in aliases {
            units::validate_name("volume name", alias)?;
            let name = format!("{}_{alias}", sb.config.name);
            let _guard = self.lock(&format!("volume:{name}")).await;
            if self.inner.store.get::<VolumeRecord>(&name)?.is_some() {
                return Err(Error::conflict(format!(
                    "cannot make volume {alias} of sandbox {}: the volume name {name:?} is already in use",
                    sb.config.name
                )));
            }
            self.ensure_volume(&name, BTreeMap::new(), false, Some((&sb.config.id, alias)))?;
        }
        Ok(())
    }

    /// Removes the volumes a sandbox owns (its containers are gone).
    pub(crate) async fn remove_sandbox_volumes(&self, sandbox_id: &str) -> Result<()> {
        for v in self.inner.store.list::<VolumeRecord>()? {
            if v.sandbox.as_deref() != Some(sandbox_id) {
                continue;
            }
            let _guard = self.lock(&format!("volume:{}", v.name)).await;
            self.delete_volume(&v)?;
        }
        Ok(())
    }

    /// Names of a sandbox's volumes, as its containers know them.
    pub fn sandbox_volume_names(&self, sandbox_id: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .inner
            .store
            .list::<VolumeRecord>()?
            .into_iter()
            .filter(|v| v.sandbox.as_deref() == Some(sandbox_id))
            .filter_map(|v| v.alias)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Copies what the image has at `path` into the volume's data directory when that is empty (Docker's rule
    /// for a volume's first use): files, owners, modes, links; the directory itself takes the source's owner
    /// and mode. Nothing happens when the image has no directory there.
    pub(crate) async fn populate_volume(
        &self,
        v: &VolumeRecord,
        layers: &RootfsLayers,
        path: &str,
    ) -> Result<()> {
        let data = PathBuf::from(&v.mountpoint);
        if !dir_is_empty(&data)? || layers.layers.is_empty() {
            return Ok(());
        }
        let scratch = self
            .volumes_root()
            .join(".scratch")
            .join(husk_core::new_id());
        let layers = layers.clone();
        let path = format!("{}/", path.trim_end_matches('/'));
        let name = v.name.clone();
        husk_core::spawn_blocking(move || copy_from_image(&layers, &path, &data, &scratch))
            .await
            .map_err(|e| Error::internal(format!("volume copy task: {e}")))?
            .map_err(|e| e.context(format!("copy the image's content into volume {name}")))
    }
}

/// Mounts a throw-away overlay of `layers` under `scratch`, copies its `path` (a directory, else nothing) into
/// `data`, and removes the overlay.
fn copy_from_image(layers: &RootfsLayers, path: &str, data: &Path, scratch: &Path) -> Result<()> {
    let (upper, work, view) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("view"),
    );
    for d in [&upper, &work, &view] {
        mkdir(d, 0o700)?;
    }
    let copied = husk_fs::mount_overlay(
        &layers.layers,
        &upper,
        &work,
        &view,
        husk_fs::MountMethod::Auto,
    )
    .and_then(|()| {
        let image = husk_fs::Tree::in_root(&view)?;
        let result = match image.stat(path) {
            Ok(st) if st.is_dir() => {
                let volume = husk_fs::Tree::beneath(data)?;
                husk_fs::copy_tree(&image, path, &volume, ".")
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        drop(image);
        let unmounted = husk_fs::unmount_rootfs(&view);
        result.and(unmounted)
    });
    let _ = std::fs::remove_dir_all(scratch);
    copied
}

fn view(v: VolumeRecord, used_by: Vec<String>) -> VolumeView {
    VolumeView {
        name: v.name,
        driver: v.driver,
        mountpoint: v.mountpoint,
        created_at: v.created_at,
        labels: v.labels,
        scope: "local".into(),
        anonymous: v.anonymous,
        sandbox: v.sandbox,
        alias: v.alias,
        used_by,
    }
}

#[cfg(test)]
mod tests {
    use husk_core::{Capabilities, ContainerConfig, ContainerRecord, ErrorKind, Mode, MountConfig};

    use super::*;

    fn engine(dir: &Path) -> Engine {
        let caps = Capabilities {
            sandbox: true,
            standalone: true,
            volumes: true,
            ..Default::default()
        };
        crate::tests::engine(Mode::Standalone, caps, dir).unwrap()
    }

    /// Records a container that mounts `volume` (no driver involved).
    fn user_of(e: &Engine, name: &str, volume: &str) {
        let rec = ContainerRecord {
            config: ContainerConfig {
                id: husk_core::new_id(),
                name: name.into(),
                mounts: vec![MountConfig {
                    kind: MountKind::Volume,
                    source: volume.into(),
                    destination: "/d".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        e.inner.store.insert(&rec).unwrap();
    }

    #[tokio::test]
    async fn create_inspect_remove_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let v = e
            .create_volume(VolumeCreate {
                name: Some("data".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(Path::new(&v.mountpoint).is_dir());
        assert!(v.mountpoint.ends_with("volumes/data/_data"));
        let again = e
            .create_volume(VolumeCreate {
                name: Some("data".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(again, v, "creating an existing volume returns it");
        for bad in [
            VolumeCreate {
                name: Some("a/b".into()),
                ..Default::default()
            },
            VolumeCreate {
                driver: Some("nfs".into()),
                ..Default::default()
            },
            VolumeCreate {
                driver_opts: [("type".to_string(), "tmpfs".to_string())].into(),
                ..Default::default()
            },
        ] {
            assert_eq!(
                e.create_volume(bad).await.unwrap_err().kind,
                ErrorKind::InvalidArgument
            );
        }
        user_of(&e, "web", "data");
        let err = e.remove_volume("data", true).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Conflict);
        assert!(err.message.contains("web"), "{}", err.message);
        assert_eq!(e.inspect_volume("data").unwrap().used_by, vec!["web"]);
        assert_eq!(
            e.remove_volume("nothing", false).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert!(e.remove_volume("nothing", true).await.is_ok());
    }

    #[tokio::test]
    async fn prune_takes_unused_anonymous_volumes_and_with_all_named_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path());
        let anon = husk_core::new_id();
        e.ensure_volume(&anon, BTreeMap::new(), true, None).unwrap();
        e.ensure_volume("named", BTreeMap::new(), false, None)
            .unwrap();
        e.ensure_volume("used", BTreeMap::new(), true, None)
            .unwrap();
        std::fs::write(
            e.volume("named").unwrap().mountpoint + "/f",
            vec![0u8; 10000],
        )
        .unwrap();
        user_of(&e, "c", "used");
        let report = e.prune_volumes(false).await.unwrap();
        assert_eq!(report.volumes_deleted, vec![anon.clone()]);
        assert!(!e.volumes_root().join(&anon).exists());
        let report = e.prune_volumes(true).await.unwrap();
        assert_eq!(report.volumes_deleted, vec!["named".to_string()]);
        assert!(report.space_reclaimed >= 10000);
        let left: Vec<String> = e
            .list_volumes()
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(left, vec!["used"]);
    }
}
