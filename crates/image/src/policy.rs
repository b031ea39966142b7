//! Pull policies: when `run`/`create` (and Zun's `image_pull_policy`, and the CRI) fetch an image.

use std::fmt;
use std::str::FromStr;

use husk_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::image::Image;
use crate::pull::PullOptions;
use crate::store::ImageStore;

/// When to pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Pull every time (the registry's image wins).
    Always,
    /// Pull only when the image is not here (Docker's `missing`, Zun's and Kubernetes' `ifnotpresent`).
    #[default]
    Missing,
    /// Never pull: the image must be here.
    Never,
}

impl FromStr for PullPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(PullPolicy::Always),
            "missing" | "ifnotpresent" | "if-not-present" => Ok(PullPolicy::Missing),
            "never" => Ok(PullPolicy::Never),
            _ => Err(Error::invalid(
                "pull",
                format!("invalid pull policy {s:?}: use always, missing (ifnotpresent) or never"),
            )),
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::Always => "always",
            PullPolicy::Missing => "missing",
            PullPolicy::Never => "never",
        })
    }
}

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
