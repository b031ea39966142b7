//! Which project an image belongs to. Image content is shared (content-addressed, stored once); the record of
//! who pulled an image is per project. Images that arrived without a project (loaded by local root) belong to
//! the default project.

use husk_api_types::images::ImageView;
use husk_core::{ErrorKind, Result};
use husk_image::PullOptions;
use husk_store::Object;
use serde::{Deserialize, Serialize};

use crate::{DEFAULT_PROJECT, Engine, Scope};

/// A project's claim on an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOwner {
    /// `<project>/<image ID>`.
    pub id: String,
    /// Project.
    pub project: String,
    /// Image ID.
    pub image_id: String,
    /// The reference pulled (`busybox:1`).
    pub reference: String,
    /// When it was pulled for the project.
    pub created_at: husk_core::Timestamp,
}

impl Object for ImageOwner {
    const KIND: &'static str = "image_owner";
    fn id(&self) -> &str {
        &self.id
    }
    fn project(&self) -> &str {
        &self.project
    }
}

/// An image with the projects that hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedImage {
    /// The image.
    pub image: ImageView,
    /// Projects that pulled it (the default one when none did).
    pub projects: Vec<String>,
}

impl Engine {
    /// Images with their projects, those `scope` may see.
    pub fn list_owned_images(&self, scope: &Scope) -> Result<Vec<OwnedImage>> {
        let owners = self.inner.store.list::<ImageOwner>()?;
        let mut out = Vec::new();
        for image in self.inner.images.list()? {
            let mut projects: Vec<String> = owners
                .iter()
                .filter(|o| o.image_id == image.id)
                .map(|o| o.project.clone())
                .collect();
            if projects.is_empty() {
                projects.push(DEFAULT_PROJECT.into());
            }
            if projects.iter().any(|p| scope.allows(p)) {
                out.push(OwnedImage {
                    image: image.view(),
                    projects,
                });
            }
        }
        Ok(out)
    }

    /// Pulls `reference` from its registry for `project` (or, with `only_if_missing`, uses the local copy when
    /// there is one) and records the project's claim.
    pub async fn pull_image_for(
        &self,
        project: &str,
        reference: &str,
        only_if_missing: bool,
    ) -> Result<ImageView> {
        let project = crate::scope::project_of(Some(project))?;
        let image = match self.inner.images.resolve(reference) {
            Ok(i) if only_if_missing => i,
            Err(e) if e.kind != ErrorKind::NotFound => return Err(e),
            _ => {
                let pulled = self
                    .inner
                    .images
                    .pull(reference, &PullOptions::default())
                    .await?;
                self.inner.images.resolve(&pulled.id)?
            }
        };
        self.claim_image(&project, &image.id, reference)?;
        Ok(image.view())
    }

    /// Records that `project` holds image `image_id` (pulled or committed as `reference`).
    pub fn claim_image(&self, project: &str, image_id: &str, reference: &str) -> Result<()> {
        let project = crate::scope::project_of(Some(project))?;
        self.inner.store.upsert(&ImageOwner {
            id: format!("{project}/{image_id}"),
            project,
            image_id: image_id.to_string(),
            reference: reference.to_string(),
            created_at: husk_core::Timestamp::now(),
        })
    }

    /// Removes an image and every project's claim on it (refused while a container uses it).
    pub fn remove_owned_image(&self, image_id: &str) -> Result<()> {
        self.remove_image(image_id, false)?;
        for o in self.inner.store.list::<ImageOwner>()? {
            if o.image_id == image_id {
                self.inner.store.delete::<ImageOwner>(&o.id)?;
            }
        }
        Ok(())
    }
}
