//! Pull policies: when `run`/`create` (and Zun's `image_pull_policy`, and the CRI) fetch an image.

use husk_core::{Error, ErrorKind, Result};

pub use husk_api_types::images::PullPolicy;

use crate::image::Image;
use crate::pull::PullOptions;
use crate::store::ImageStore;

impl ImageStore {
    /// The image `reference` names, pulled first if `policy` says so.
    pub async fn ensure_image(
        &self,
        reference: &str,
        policy: PullPolicy,
        options: &PullOptions,
    ) -> Result<Image> {
        match policy {
            PullPolicy::Always => {
                let pulled = self.pull(reference, options).await?;
                self.resolve(&pulled.id)
            }
            PullPolicy::Missing => match self.resolve(reference) {
                Ok(image) => Ok(image),
                Err(e) if e.kind == ErrorKind::NotFound => {
                    let pulled = self.pull(reference, options).await?;
                    self.resolve(&pulled.id)
                }
                Err(e) => Err(e),
            },
            PullPolicy::Never => self.resolve(reference).map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    Error::not_found(format!(
                        "image {reference} (the pull policy is never: load or pull it first)"
                    ))
                } else {
                    e
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_zun_spellings() {
        for (text, want) in [
            ("always", PullPolicy::Always),
            ("missing", PullPolicy::Missing),
            ("ifnotpresent", PullPolicy::Missing),
            ("IfNotPresent", PullPolicy::Missing),
            ("never", PullPolicy::Never),
            ("Never", PullPolicy::Never),
        ] {
            assert_eq!(text.parse::<PullPolicy>().unwrap(), want, "{text}");
        }
        assert!("sometimes".parse::<PullPolicy>().is_err());
        assert_eq!(PullPolicy::Missing.to_string(), "missing");
    }
}
