//! Removing images (by name or ID, Docker's rules), pruning them, and the collection of the layers and blobs
//! no image uses any more.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self};

use husk_core::{Context as _, Error, Result};

use crate::blobs::remove_any;
use crate::digest::Digest;

use super::*;

impl ImageStore {
    /// Removes an image or one of its names, following Docker's rules:
    ///
    /// - By name (`busybox`, `repo@sha256:...`): the name is taken off. If it was the image's last name, the image
    ///   is deleted too. When that last name belongs to an image a container uses (`in_use(id)`), nothing changes
    ///   unless `force`. Taking off a repository's last tag also takes off that repository's digests.
    /// - By ID or ID prefix: the image is deleted with all its names if they are all in one repository with at most
    ///   one tag; names in several repositories need `force`.
    /// - An image a container uses is never deleted: without `force` the removal fails with a conflict; with `force`
    ///   its names are taken off and the image stays, nameless, until no container uses it and `prune` removes it.
    ///
    /// Layers and blobs no other image uses are removed with the image.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        in_use: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Removed>> {
        let image = self.resolve(reference)?;
        let by_id = is_id_prefix(&image.id, reference.trim());
        let used = in_use(&image.id);
        let short = short_id(&image.id);
        let plan = if by_id {
            plan_remove_by_id(&image, force, used)?
        } else {
            let name = ImageName::parse(reference.trim())?;
            let key = name
                .digested()
                .or_else(|| name.tagged())
                .unwrap_or_default();
            if !force && used && image.repo_tags.len() + image.repo_digests.len() == 1 {
                return Err(Error::conflict(format!(
                    "unable to remove the name {key} (must force): a container uses its image {short}"
                )));
            }
            plan_untag(&image, &key)
        };
        let delete = plan.delete && !used;
        if plan.delete && used && !force {
            return Err(Error::conflict(format!(
                "unable to delete image {short} (must force): a container uses it"
            )));
        }
        let mut out: Vec<Removed> = plan.untag.iter().cloned().map(Removed::Untagged).collect();
        {
            let _records = self.inner.records.lock().unwrap_or_else(|p| p.into_inner());
            self.inner.db.transaction(|tx| {
                let Some(mut current) = tx.get::<Image>(&image.id)? else {
                    return Err(Error::not_found(format!("image {reference}")));
                };
                current.repo_tags.retain(|t| !plan.untag.contains(t));
                current.repo_digests.retain(|d| !plan.untag.contains(d));
                if delete {
                    tx.delete::<Image>(&image.id)?;
                } else {
                    tx.update(&current)?;
                }
                Ok(())
            })?;
        }
        if delete {
            out.push(Removed::Deleted(image.id.clone()));
            self.collect_image(&image)?;
        }
        Ok(out)
    }

    /// Removes the layers and blobs of a deleted image that no remaining image uses (or queues them while loads run).
    pub(super) fn collect_image(&self, image: &Image) -> Result<()> {
        self.queue_image_contents(image)?;
        self.run_pending_gc();
        Ok(())
    }

    /// Queues an image's layers and blobs for removal once no load runs (each is removed only if unreferenced).
    pub(super) fn queue_image_contents(&self, image: &Image) -> Result<()> {
        let mut layers = BTreeSet::new();
        let mut blobs = BTreeSet::new();
        blobs.insert(image.digest()?);
        if let Some(m) = &image.manifest {
            blobs.insert(Digest::parse(&m.digest, "manifest digest")?);
        }
        for l in &image.layers {
            layers.insert(Digest::parse(&l.diff_id, "diff ID")?);
            blobs.insert(Digest::parse(&l.blob.digest, "layer digest")?);
        }
        {
            let mut pending = self
                .inner
                .gc_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.0.extend(layers);
            pending.1.extend(blobs);
        }
        Ok(())
    }

    /// Removes queued layers and blobs that no image references, if no load runs now.
    pub(super) fn run_pending_gc(&self) {
        let Some(_exclusive) = GcGate::try_sweep(&self.inner.gc) else {
            return;
        };
        let (layers, blobs) = std::mem::take(
            &mut *self
                .inner
                .gc_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if layers.is_empty() && blobs.is_empty() {
            return;
        }
        if let Err(e) = self.remove_unreferenced(Some((&layers, &blobs))) {
            tracing::warn!(error = %e.message, "removing unused layers failed");
        }
    }

    /// Removes layers and blobs no image references: among `candidates` only, or all of them when None.
    /// The caller holds the gc lock exclusively. Returns the bytes freed.
    pub(super) fn remove_unreferenced(
        &self,
        candidates: Option<(&BTreeSet<Digest>, &BTreeSet<Digest>)>,
    ) -> Result<u64> {
        let (used_layers, used_blobs) = self.referenced()?;
        let mut freed = 0;
        let layer_ids: Vec<Digest> = match candidates {
            Some((layers, _)) => layers.iter().copied().collect(),
            None => self
                .inner
                .db
                .list::<LayerRecord>()?
                .iter()
                .filter_map(|r| Digest::parse(&r.diff_id, "diff ID").ok())
                .collect(),
        };
        for diff_id in layer_ids.iter().filter(|d| !used_layers.contains(d)) {
            let record = self.inner.db.get::<LayerRecord>(&diff_id.to_string())?;
            self.remove_layer(diff_id)?;
            freed += record.map(|r| r.size).unwrap_or(0);
        }
        let blob_ids: Vec<Digest> = match candidates {
            Some((_, blobs)) => blobs.iter().copied().collect(),
            None => self
                .inner
                .blobs
                .list()?
                .into_iter()
                .map(|(d, _)| d)
                .collect(),
        };
        for digest in blob_ids.iter().filter(|d| !used_blobs.contains(d)) {
            freed += self.inner.blobs.size(digest).unwrap_or(0);
            self.inner.blobs.remove(digest)?;
        }
        Ok(freed)
    }

    /// Layers and blobs some image refers to.
    pub(super) fn referenced(&self) -> Result<(HashSet<Digest>, HashSet<Digest>)> {
        let mut layers = HashSet::new();
        let mut blobs = HashSet::new();
        for image in self.inner.db.list::<Image>()? {
            blobs.insert(image.digest()?);
            if let Some(m) = &image.manifest {
                blobs.extend(Digest::parse(&m.digest, "manifest digest").ok());
            }
            for l in &image.layers {
                layers.extend(Digest::parse(&l.diff_id, "diff ID").ok());
                blobs.extend(Digest::parse(&l.blob.digest, "layer digest").ok());
            }
        }
        Ok((layers, blobs))
    }

    /// Removes one layer: its directory vanishes at once (renamed into tmp/), then its record.
    pub(super) fn remove_layer(&self, diff_id: &Digest) -> Result<()> {
        let dir = self.layer_dir(diff_id);
        if dir.exists() {
            let trash = self.inner.tmp_dir.join(format!(
                "removed-{}-{:08x}",
                &diff_id.hex()[..12],
                rand::random::<u32>()
            ));
            fs::rename(&dir, &trash).context(format!("remove layer {diff_id}"))?;
            remove_any(&trash);
        }
        self.inner.db.delete::<LayerRecord>(&diff_id.to_string())?;
        Ok(())
    }

    /// Removes images nothing needs and then every layer and blob no image references, including what interrupted
    /// loads and pulls left. Images removed: those without a name (`all`: every image) that no container uses.
    ///
    /// Never waits: while a load, pull or commit runs, the removed images' own layers and blobs are queued (they
    /// go when it ends) and the sweep of leftovers is skipped (`deferred` in the report); prune again later.
    pub fn prune(&self, all: bool, in_use: &dyn Fn(&str) -> bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let sweep = GcGate::try_sweep(&self.inner.gc);
        let mut deleted = Vec::new();
        {
            let _records = self.inner.records.lock().unwrap_or_else(|p| p.into_inner());
            for image in self.inner.db.list::<Image>()? {
                let unnamed = image.repo_tags.is_empty() && image.repo_digests.is_empty();
                if (all || unnamed)
                    && !in_use(&image.id)
                    && self.inner.db.delete::<Image>(&image.id)?
                {
                    report.images_deleted.push(image.id.clone());
                    deleted.push(image);
                }
            }
        }
        let Some(_exclusive) = sweep else {
            for image in &deleted {
                self.queue_image_contents(image)?;
            }
            report.deferred = true;
            return Ok(report);
        };
        report.space_reclaimed = self.remove_unreferenced(None)?;
        // Layer directories without a record (a crash between unpacking and recording).
        for entry in fs::read_dir(&self.inner.layers_dir)
            .context("list layers")?
            .flatten()
        {
            let name = entry.file_name();
            let Some(d) = name.to_str().and_then(Digest::from_hex) else {
                continue;
            };
            if self.inner.db.get::<LayerRecord>(&d.to_string())?.is_none() {
                self.remove_layer(&d)?;
            }
        }
        Ok(report)
    }
}

/// What a removal will do.
#[derive(Debug)]
pub(super) struct RemovePlan {
    pub(super) untag: Vec<String>,
    pub(super) delete: bool,
}

/// Docker's test: a reference is an ID prefix when the ID (with or without `sha256:`) starts with it.
pub(super) fn is_id_prefix(id: &str, reference: &str) -> bool {
    !reference.is_empty()
        && (id.starts_with(reference) || id.trim_start_matches("sha256:").starts_with(reference))
}

pub(super) fn repository_of(name: &str) -> String {
    ImageName::parse(name).map(|n| n.name()).unwrap_or_default()
}

pub(super) fn plan_remove_by_id(image: &Image, force: bool, used: bool) -> Result<RemovePlan> {
    let short = short_id(&image.id);
    if used && !force {
        return Err(Error::conflict(format!(
            "unable to delete image {short} (must force): a container uses it"
        )));
    }
    let repos: BTreeSet<String> = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .map(|n| repository_of(n))
        .collect();
    let all_names: Vec<String> = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .cloned()
        .collect();
    if repos.len() <= 1 && image.repo_tags.len() <= 1 {
        return Ok(RemovePlan {
            untag: all_names,
            delete: true,
        });
    }
    if !force {
        return Err(Error::conflict(format!(
            "unable to delete image {short} (must force): it is referenced in several repositories or by several tags"
        )));
    }
    Ok(RemovePlan {
        untag: all_names,
        delete: true,
    })
}

pub(super) fn plan_untag(image: &Image, key: &str) -> RemovePlan {
    let mut untag = vec![key.to_string()];
    let repo = repository_of(key);
    let is_tag = image.repo_tags.iter().any(|t| t == key);
    if is_tag
        && !image
            .repo_tags
            .iter()
            .any(|t| t != key && repository_of(t) == repo)
    {
        untag.extend(
            image
                .repo_digests
                .iter()
                .filter(|d| repository_of(d) == repo)
                .cloned(),
        );
    }
    let remaining = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .filter(|n| !untag.contains(n))
        .count();
    RemovePlan {
        untag,
        delete: remaining == 0,
    }
}
