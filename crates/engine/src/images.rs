//! Image operations, with the one rule the image store cannot know: an image a container uses stays.

use husk_core::{ContainerRecord, Result};
use husk_image::{Image, LoadOptions, LoadedImage, Removed};
use tokio::io::AsyncRead;

use crate::Engine;

impl Engine {
    /// Loads a `docker save` or OCI-layout archive.
    pub async fn load_images<R: AsyncRead + Send + Unpin + 'static>(
        &self,
        reader: R,
        options: &LoadOptions,
    ) -> Result<Vec<LoadedImage>> {
        self.inner.images.load(reader, options).await
    }

    /// Every image.
    pub fn list_images(&self) -> Result<Vec<Image>> {
        self.inner.images.list()
    }

    /// One image by name, ID or digest.
    pub fn inspect_image(&self, reference: &str) -> Result<Image> {
        self.inner.images.inspect(reference)
    }

    /// IDs of images some container uses.
    fn images_in_use(&self) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .inner
            .store
            .list::<ContainerRecord>()?
            .into_iter()
            .map(|c| c.config.image.id)
            .collect())
    }

    /// Removes (or untags) an image; one a container uses is refused unless forced (and then only untagged).
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Vec<Removed>> {
        let used = self.images_in_use()?;
        self.inner
            .images
            .remove(reference, force, &|id| used.contains(id))
    }

    /// Gives an image another name.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<()> {
        self.inner.images.tag(source, target)
    }
}
