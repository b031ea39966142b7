//! Checking and completing a container's mounts: binds must name an existing host path, tmpfs options are
//! normalised, volumes are found or made (and filled from the image on first use), image mounts are resolved to
//! stored images, the image's `VOLUME`s get anonymous volumes, and no two mounts share a destination.

use std::collections::BTreeMap;
use std::path::Path;

use husk_core::options::PROPAGATIONS;
use husk_core::{
    Capabilities, Error, ErrorKind, MountConfig, MountKind, Result, RootfsLayers, SandboxRecord,
    units,
};
use husk_image::Image;
use tokio::sync::OwnedMutexGuard;

use crate::Engine;
use crate::volumes::VolumeRecord;

pub(crate) use husk_api_types::containers::INIT_PATH;

/// A container's mounts, ready for the driver, and what was made for them.
pub(crate) struct PreparedMounts {
    /// The mounts, completed.
    pub mounts: Vec<MountConfig>,
    /// Volumes made for this container (removed again if the create fails).
    pub created: Vec<VolumeRecord>,
    /// Locks of the volumes used, held until the container's record is stored.
    pub guards: Vec<OwnedMutexGuard<()>>,
}

fn invalid(message: String) -> Error {
    Error::invalid("mounts", message)
}

/// `path` made absolute and without `.`, `..` or repeated `/` (`..` cannot climb above `/`).
pub(crate) fn clean_destination(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "mount destination {path:?} is not an absolute path"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// How many components a clean absolute path has.
fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

/// A bind's options: read-only flag, one propagation, and the no-op SELinux and consistency flags.
fn check_bind(m: &mut MountConfig) -> Result<()> {
    if !m.source.starts_with('/') {
        return Err(invalid(format!(
            "bind mount source {:?} is not an absolute path",
            m.source
        )));
    }
    let source = Path::new(&m.source);
    match std::fs::metadata(source) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!(
                "bind source path does not exist: {}",
                m.source
            )));
        }
        Err(e) => return Err(invalid(format!("bind source path {}: {e}", m.source))),
    }
    let mut propagation = None;
    for o in &m.options {
        match o.as_str() {
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            husk_core::options::BIND_WRITABLE_SUBMOUNTS => {}
            p if PROPAGATIONS.contains(&p) => {
                if propagation.replace(p).is_some() {
                    return Err(invalid(format!(
                        "bind mount on {} has two propagation modes",
                        m.destination
                    )));
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown option {other:?} for the bind mount on {}",
                    m.destination
                )));
            }
        }
    }
    let recursive = !m
        .options
        .iter()
        .any(|o| o == husk_core::options::BIND_WRITABLE_SUBMOUNTS);
    if m.readonly
        && recursive
        && matches!(propagation, Some("shared" | "rshared" | "slave" | "rslave"))
    {
        return Err(invalid(format!(
            "the read-only bind mount on {} cannot have propagation {}: mounts arriving later would be writable; use rprivate",
            m.destination,
            propagation.unwrap_or_default()
        )));
    }
    m.host_path = m.source.clone();
    Ok(())
}

/// A tmpfs's options, normalised: sizes in bytes, an octal mode, and `nosuid,nodev,noexec` unless asked
/// otherwise (Docker's defaults).
fn check_tmpfs(m: &mut MountConfig) -> Result<()> {
    if !m.source.is_empty() {
        return Err(invalid(format!(
            "the tmpfs mount on {} takes no source",
            m.destination
        )));
    }
    let mut out: Vec<String> = Vec::new();
    let (mut suid, mut dev, mut exec) = (false, false, false);
    for o in &m.options {
        let (key, value) = o.split_once('=').unwrap_or((o.as_str(), ""));
        match key {
            "size" => {
                let bytes = units::parse_memory("mounts", value).map_err(|_| {
                    invalid(format!(
                        "invalid tmpfs size {value:?} on {}: use e.g. 64m",
                        m.destination
                    ))
                })?;
                out.push(format!("size={bytes}"));
            }
            "mode" => {
                let mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        invalid(format!(
                            "invalid tmpfs mode {value:?} on {}: use octal such as 1777",
                            m.destination
                        ))
                    })?;
                out.push(format!("mode={mode:o}"));
            }
            "uid" | "gid" | "nr_inodes" => {
                value.parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "invalid tmpfs option {o:?} on {}: a number is needed",
                        m.destination
                    ))
                })?;
                out.push(o.clone());
            }
            "ro" => m.readonly = true,
            "rw" => m.readonly = false,
            "suid" => suid = true,
            "dev" => dev = true,
            "exec" => exec = true,
            "nosuid" | "nodev" | "noexec" => {}
            _ => {
                return Err(invalid(format!(
                    "unknown tmpfs option {o:?} on {}: use size, mode, uid, gid, nr_inodes, ro, exec, suid or dev",
                    m.destination
                )));
            }
        }
    }
    for (on, flag) in [(suid, "nosuid"), (dev, "nodev"), (exec, "noexec")] {
        if !on {
            out.push(flag.into());
        }
    }
    m.options = out;
    m.host_path.clear();
    Ok(())
}

/// An image mount's options: none but the no-op SELinux flags and a private propagation (what the CRI may send);
/// the mount is read-only whatever was asked.
fn check_image_options(m: &mut MountConfig) -> Result<()> {
    if m.source.trim().is_empty() {
        return Err(invalid(format!(
            "the image mount on {} names no image (source)",
            m.destination
        )));
    }
    for o in &m.options {
        match o.as_str() {
            "z" | "Z" | "ro" | "private" | "rprivate" => {}
            other => {
                return Err(invalid(format!(
                    "unknown option {other:?} for the image mount on {}: an image mount is read-only and private",
                    m.destination
                )));
            }
        }
    }
    m.options.clear();
    m.readonly = true;
    m.host_path.clear();
    if let Some(sub) = &m.subpath {
        if sub.contains('\0') {
            return Err(Error::invalid(
                "image-subpath",
                format!(
                    "the image mount on {}: a path with a NUL byte",
                    m.destination
                ),
            ));
        }
        // An empty sub path is the image's root, as kubelet means it.
        let sub = sub.trim();
        m.subpath = (!sub.is_empty() && sub != "/" && sub != ".").then(|| sub.to_string());
    }
    Ok(())
}

fn check_volume_options(m: &MountConfig) -> Result<bool> {
    let mut nocopy = false;
    for o in &m.options {
        match o.as_str() {
            "nocopy" => nocopy = true,
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            other => {
                return Err(invalid(format!(
                    "unknown option {other:?} for the volume mount on {}",
                    m.destination
                )));
            }
        }
    }
    Ok(nocopy)
}

/// Refuses mount kinds the driver cannot make.
fn check_capabilities(mounts: &[MountConfig], driver: &str, caps: &Capabilities) -> Result<()> {
    for m in mounts {
        let (ok, what) = match m.kind {
            MountKind::Bind => (caps.bind_mounts, "bind mounts"),
            MountKind::Volume => (caps.volumes, "volumes"),
            MountKind::Tmpfs => (caps.tmpfs, "tmpfs mounts"),
            MountKind::Image => (
                caps.image_mounts,
                "image volumes (mounts of type image; the linux driver serves them)",
            ),
        };
        caps.require(driver, what, ok)?;
    }
    Ok(())
}

impl Engine {
    /// Checks and completes `requested` for a container of `image` (its layers `layers`) in `sandbox`, on a
    /// driver with `caps`. Volumes are made and filled here; the caller removes `created` if the create fails
    /// later, and holds `guards` until the container's record is stored.
    pub(crate) async fn prepare_mounts(
        &self,
        requested: &[MountConfig],
        image: &Image,
        layers: &RootfsLayers,
        sandbox: Option<&SandboxRecord>,
        driver: &str,
        caps: &Capabilities,
    ) -> Result<PreparedMounts> {
        check_capabilities(requested, driver, caps)?;
        let mut mounts: Vec<MountConfig> = Vec::with_capacity(requested.len());
        for m in requested {
            let mut m = m.clone();
            // Only the engine says which image an image mount shows.
            m.image = None;
            m.destination = clean_destination(&m.destination)?;
            if m.destination == "/" {
                return Err(invalid("cannot mount over the container's root (/)".into()));
            }
            if m.destination == INIT_PATH {
                return Err(invalid(format!("{INIT_PATH} is reserved for husk's init")));
            }
            if mounts.iter().any(|o| o.destination == m.destination) {
                return Err(invalid(format!("duplicate mount point: {}", m.destination)));
            }
            if m.subpath.is_some() && m.kind != MountKind::Image {
                return Err(Error::invalid(
                    "image-subpath",
                    format!(
                        "the {} mount on {}: only image mounts take a sub path",
                        m.kind, m.destination
                    ),
                ));
            }
            match m.kind {
                MountKind::Bind => check_bind(&mut m)?,
                MountKind::Tmpfs => check_tmpfs(&mut m)?,
                MountKind::Image => {
                    check_image_options(&mut m)?;
                    m.image = Some(self.image_mount_layers(&m)?);
                }
                MountKind::Volume => {
                    check_volume_options(&m)?;
                }
            }
            mounts.push(m);
        }
        // The image's VOLUMEs that nothing covers get anonymous volumes (where the driver has volumes).
        for path in &image.config.volumes {
            let dest = clean_destination(path)?;
            if mounts.iter().any(|m| m.destination == dest) || dest == "/" {
                continue;
            }
            if !caps.volumes {
                tracing::info!(driver, path = %dest, "the driver has no volumes: the image's VOLUME stays in the container's file system");
                continue;
            }
            mounts.push(MountConfig {
                kind: MountKind::Volume,
                destination: dest,
                ..Default::default()
            });
        }
        // Parents before children, whatever order they were given in (a mount would hide one made before it
        // below its destination).
        mounts.sort_by_key(|m| depth(&m.destination));
        self.resolve_volumes(mounts, layers, sandbox).await
    }

    /// Gives anonymous volume mounts their names, resolves sandbox volume names, makes missing volumes and
    /// fills empty ones from the image.
    async fn resolve_volumes(
        &self,
        mut mounts: Vec<MountConfig>,
        layers: &RootfsLayers,
        sandbox: Option<&SandboxRecord>,
    ) -> Result<PreparedMounts> {
        let mut anonymous = Vec::new();
        for (i, m) in mounts.iter_mut().enumerate() {
            if m.kind != MountKind::Volume {
                continue;
            }
            if m.source.is_empty() {
                m.source = husk_core::new_id();
                anonymous.push(i);
                continue;
            }
            units::validate_name("volume name", &m.source)
                .map_err(|e| invalid(format!("mount on {}: {}", m.destination, e.message)))?;
            if let Some(sb) = sandbox
                && let Some(v) = self.sandbox_volume(sb, &m.source)?
            {
                m.source = v.name;
            }
        }
        let names: Vec<String> = mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .map(|m| m.source.clone())
            .collect();
        let guards = self.lock_volumes(&names).await;
        let mut prepared = PreparedMounts {
            mounts: Vec::new(),
            created: Vec::new(),
            guards,
        };
        let result = self
            .make_volumes(
                &mut mounts,
                &anonymous,
                layers,
                sandbox,
                &mut prepared.created,
            )
            .await;
        if let Err(e) = result {
            self.discard_volumes(&prepared.created);
            return Err(e);
        }
        prepared.mounts = mounts;
        Ok(prepared)
    }

    async fn make_volumes(
        &self,
        mounts: &mut [MountConfig],
        anonymous: &[usize],
        layers: &RootfsLayers,
        sandbox: Option<&SandboxRecord>,
        created: &mut Vec<VolumeRecord>,
    ) -> Result<()> {
        for (i, m) in mounts.iter_mut().enumerate() {
            if m.kind != MountKind::Volume {
                continue;
            }
            let (v, new) =
                self.ensure_volume(&m.source, BTreeMap::new(), anonymous.contains(&i), None)?;
            if new {
                created.push(v.clone());
            }
            if let Some(owner) = &v.sandbox
                && sandbox.map(|s| &s.config.id) != Some(owner)
            {
                return Err(invalid(format!(
                    "volume {} belongs to another sandbox: only that sandbox's containers can mount it",
                    v.name
                )));
            }
            m.host_path = v.mountpoint.clone();
            if !check_volume_options(m)? {
                self.populate_volume(&v, layers, &m.destination).await?;
            }
        }
        Ok(())
    }

    /// The stored image an image mount names, as its layers. It must be here already (kubelet pulls it first; a
    /// user pulls it): a missing image is NotFound, naming the mount.
    fn image_mount_layers(&self, m: &MountConfig) -> Result<RootfsLayers> {
        let image = self
            .inner
            .images
            .resolve(&m.source)
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => Error::about(
                    ErrorKind::NotFound,
                    "mounts",
                    format!(
                        "no such image {} for the image mount on {}: pull it first",
                        m.source.trim(),
                        m.destination
                    ),
                ),
                _ => Error::invalid(
                    "mounts",
                    format!("the image mount on {}: {}", m.destination, e.message),
                ),
            })?;
        self.inner.images.rootfs_layers(&image)
    }

    /// Fails if an image the image mounts of `mounts` show was removed since [`Self::prepare_mounts`] resolved it.
    /// The caller holds the guard of [`Self::hold_image`], so none can go from here until the record is stored.
    pub(crate) fn check_image_mounts_held(&self, mounts: &[MountConfig]) -> Result<()> {
        for m in mounts {
            let Some(image) = &m.image else {
                continue;
            };
            self.inner
                .images
                .resolve(&image.image_id)
                .map_err(|e| match e.kind {
                    ErrorKind::NotFound => Error::conflict(format!(
                        "image {} of the image mount on {} was removed while the container was being created: try again",
                        image.image_name, m.destination
                    )),
                    _ => e,
                })?;
        }
        Ok(())
    }

    /// Removes volumes made for a container whose create failed.
    pub(crate) fn discard_volumes(&self, created: &[VolumeRecord]) {
        for v in created {
            if let Err(e) = self.delete_volume(v) {
                tracing::warn!(volume = %v.name, "remove a volume made for a failed create: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_sort_before_children() {
        let mut dests = vec!["/x/y/z", "/a", "/x", "/x/y", "/b"];
        dests.sort_by_key(|d| depth(d));
        assert_eq!(dests, vec!["/a", "/x", "/b", "/x/y", "/x/y/z"]);
    }

    #[test]
    fn destinations_are_cleaned() {
        assert_eq!(clean_destination("/a//b/./c/").unwrap(), "/a/b/c");
        assert_eq!(clean_destination("/../../x").unwrap(), "/x");
        assert!(clean_destination("rel").is_err());
    }

    #[test]
    fn binds_must_exist_and_read_only_must_stay_so() {
        let mut m = MountConfig::parse_volume_flag("/definitely/not/here:/x").unwrap();
        let e = check_bind(&mut m).unwrap_err();
        assert!(
            e.message.contains("does not exist: /definitely/not/here"),
            "{}",
            e.message
        );
        let mut m = MountConfig::parse_volume_flag("/tmp:/x:ro,rslave").unwrap();
        assert!(check_bind(&mut m).unwrap_err().message.contains("rprivate"));
        let mut m = MountConfig::parse_volume_flag("/tmp:/x:ro,rprivate").unwrap();
        check_bind(&mut m).unwrap();
        assert_eq!(m.host_path, "/tmp");
    }

    #[test]
    fn tmpfs_options_are_normalised() {
        let mut m = MountConfig::parse_tmpfs_flag("/t:size=1m,mode=1770,exec").unwrap();
        check_tmpfs(&mut m).unwrap();
        assert_eq!(
            m.options,
            vec!["size=1048576", "mode=1770", "nosuid", "nodev"]
        );
        for bad in ["/t:size=lots", "/t:mode=999", "/t:uid=x", "/t:color=red"] {
            let mut m = MountConfig::parse_tmpfs_flag(bad).unwrap();
            assert!(check_tmpfs(&mut m).is_err(), "{bad}");
        }
    }

    #[test]
    fn drivers_without_a_mount_kind_refuse_it() {
        let caps = Capabilities {
            bind_mounts: true,
            ..Default::default()
        };
        let tmpfs = vec![MountConfig::parse_tmpfs_flag("/t").unwrap()];
        let e = check_capabilities(&tmpfs, "vm", &caps).unwrap_err();
        assert!(
            e.message.contains("vm") && e.message.contains("tmpfs"),
            "{}",
            e.message
        );
    }

    #[test]
    fn image_mounts_are_read_only_private_and_name_an_image() {
        let mut m = MountConfig {
            kind: MountKind::Image,
            source: "data:1".into(),
            destination: "/data".into(),
            options: vec!["z".into(), "rprivate".into()],
            host_path: "/somewhere/else".into(),
            ..Default::default()
        };
        check_image_options(&mut m).unwrap();
        assert!(
            m.readonly && m.options.is_empty() && m.host_path.is_empty(),
            "{m:?}"
        );
        m.options = vec!["rshared".into()];
        let e = check_image_options(&mut m).unwrap_err();
        assert!(
            e.message.contains("rshared") && e.message.contains("/data"),
            "{}",
            e.message
        );
        m.options.clear();
        for (given, kept) in [(" usr/share ", Some("usr/share")), ("", None), ("/", None)] {
            m.subpath = Some(given.into());
            check_image_options(&mut m).unwrap();
            assert_eq!(m.subpath.as_deref(), kept, "{given:?}");
        }
        m.subpath = Some("a\0b".into());
        let e = check_image_options(&mut m).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("image-subpath"), "{e:?}");
        m.subpath = None;
        m.source = " ".into();
        let e = check_image_options(&mut m).unwrap_err();
        assert!(e.message.contains("names no image"), "{}", e.message);
    }

    #[test]
    fn drivers_without_image_mounts_refuse_them() {
        let image = vec![MountConfig {
            kind: MountKind::Image,
            source: "data:1".into(),
            destination: "/data".into(),
            ..Default::default()
        }];
        let e = check_capabilities(&image, "docker", &Capabilities::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message.contains("docker") && e.message.contains("image volumes"),
            "{}",
            e.message
        );
        let caps = Capabilities {
            image_mounts: true,
            ..Default::default()
        };
        check_capabilities(&image, "linux", &caps).unwrap();
    }

    #[tokio::test]
    async fn an_image_mount_of_a_missing_image_is_not_found_naming_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        let caps = Capabilities {
            standalone: true,
            image_mounts: true,
            ..Default::default()
        };
        let e = crate::tests::engine(husk_core::Mode::Standalone, caps, dir.path()).unwrap();
        let m = MountConfig {
            kind: MountKind::Image,
            source: "nothing/here:1".into(),
            destination: "/data".into(),
            ..Default::default()
        };
        let err = e.image_mount_layers(&m).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.field.as_deref(), Some("mounts"));
        assert!(
            err.message.contains("nothing/here:1") && err.message.contains("/data"),
            "{}",
            err.message
        );
    }
}
