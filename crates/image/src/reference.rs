//! Image references, normalised as Docker does: `busybox` is `docker.io/library/busybox:latest`,
//! `localhost:5000/x` keeps its registry, `name@sha256:...` names a manifest digest.
//!
//! Parsing is oci-spec's `Reference`, a port of the reference grammar Docker uses; this module adds the rules
//! husk needs around it (64-hex strings are IDs, not names; a tag for `tag` must not carry a digest).

use std::fmt;

use husk_core::{Error, Result};
use oci_spec::distribution::Reference;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    inner: Reference,
}

impl ImageName {
    /// Parses a reference typed by a user.
    pub fn parse(text: &str) -> Result<ImageName> {
        if looks_like_full_id(text) {
            return Err(Error::invalid(
                "image",
                format!(
                    "invalid reference {text:?}: a 64-character hexadecimal string is an image ID, not a name"
                ),
            ));
        }
        let inner = Reference::try_from(text)
            .map_err(|e| Error::invalid("image", format!("invalid reference {text:?}: {e}")))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            let message = format!("invalid reference {text:?}: repository name must be lowercase");
            return Err(Error::invalid("image", message));
        }
        Ok(ImageName { inner })
    }

    /// `docker.io`, `127.0.0.1:5000` ...
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// `library/busybox`.
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (a reference without tag and digest gets `latest`).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// `registry/repository:tag` when the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` when the reference has a digest.
    pub fn digested(&self) -> Option<String> {
        self.digest().map(|d| format!("{}@{d}", self.name()))
    }

    /// The same repository with another digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The underlying oci-spec reference (for registry clients).
    pub fn reference(&self) -> &Reference {
        &self.inner
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest wins over a tag when both are given, as in Docker.
        match (self.digested(), self.tagged()) {
            (Some(d), _) => f.write_str(&d),
            (None, Some(t)) => f.write_str(&t),
            (None, None) => f.write_str(&self.name()),
        }
    }
}

/// Normalises a name to the form images are recorded under (`docker.io/library/busybox:latest`).
pub fn normalize(text: &str) -> Result<String> {
    Ok(ImageName::parse(text)?.to_string())
}

/// Normalises a name that must be a tag (for `tag` and `load`): digests are refused.
pub fn normalize_tag(text: &str) -> Result<String> {
    let name = ImageName::parse(text)?;
    if name.digest().is_some() {
        return Err(Error::invalid(
            "image",
            format!("{text:?} has a digest: a tag name cannot carry one"),
        ));
    }
    name.tagged()
        .ok_or_else(|| Error::invalid("image", format!("{text:?} has no tag")))
}

/// Docker's short form of a normalised name: `docker.io/library/busybox:latest` is `busybox:latest`.
pub fn familiar(name: &str) -> String {
    let rest = match name.strip_prefix("docker.io/") {
        Some(r) => r,
        None => return name.to_string(),
    };
    rest.strip_prefix("library/")
        .filter(|r| !r.contains('/'))
        .unwrap_or(rest)
        .to_string()
}

/// Whether `text` is a full 64-hex ID (with or without `sha256:`).
pub fn looks_like_full_id(text: &str) -> bool {
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            (
                "127.0.0.1:5000/demo/busybox:1",
                "127.0.0.1:5000/demo/busybox:1",
            ),
            ("quay.io/a/b/c:t", "quay.io/a/b/c:t"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            normalize(&format!("busybox@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            normalize(&format!("busybox:1@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "busybox@sha256:123",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
        assert!(
            normalize_tag(
                "busybox@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
            .is_err()
        );
    }

    #[test]
    fn familiar_names() {
        assert_eq!(
            familiar("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(familiar("docker.io/user/app:v1"), "user/app:v1");
        assert_eq!(
            familiar("localhost:5000/x:latest"),
            "localhost:5000/x:latest"
        );
    }
}
