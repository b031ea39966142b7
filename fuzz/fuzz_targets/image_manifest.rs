//! Registry documents as a pull reads them: manifests, indexes (manifest lists) and image configs, plus the
//! digests, platforms and image references inside them.
//!
//! Checks that no parser panics on any input, and round trips where they are cheap: a digest or platform that
//! parses prints back to the same text, and a normalised image reference normalises to itself.

#![no_main]

use husk_image::image::ConfigFile;
use husk_image::pull::{choose_platform, media_type_of};
use husk_image::{Digest, Platform, normalize};
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageManifest;

fuzz_target!(|data: &[u8]| {
    // Whole documents.
    if let Ok(media_type) = media_type_of(data) {
        let _ = media_type.len();
    }
    for platform in ["linux/amd64", "linux/arm64/v8", "windows/amd64"] {
        let platform = Platform::parse(platform).expect("a valid platform");
        if let Ok(digest) = choose_platform(data, &platform, "fuzz") {
            let _ = Digest::parse(&digest, "manifest digest");
        }
    }
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        let _ = Digest::parse(manifest.config().digest().as_ref(), "config digest");
        for layer in manifest.layers() {
            let _ = Digest::parse(layer.digest().as_ref(), "layer digest");
        }
    }
    if let Ok((config, diff_ids)) = ConfigFile::parse(data, "fuzz config") {
        assert_eq!(config.rootfs.kind, "layers");
        assert_eq!(diff_ids.len(), config.rootfs.diff_ids.len());
        for (id, text) in diff_ids.iter().zip(&config.rootfs.diff_ids) {
            assert_eq!(
                &id.to_string(),
                text,
                "a diff ID does not print back as it was written"
            );
        }
    }

    // The small strings inside them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(digest) = Digest::parse(text, "fuzz") {
        assert_eq!(digest.to_string(), text);
        assert_eq!(
            Digest::parse(&digest.to_string(), "again").ok(),
            Some(digest)
        );
    }
    if let Ok(platform) = Platform::parse(text) {
        assert_eq!(platform.to_string(), text);
        assert_eq!(Platform::parse(&platform.to_string()).ok(), Some(platform));
    }
    if let Ok(name) = normalize(text) {
        assert_eq!(
            normalize(&name).ok().as_deref(),
            Some(name.as_str()),
            "normalising {text:?} gave {name:?}, which does not normalise to itself"
        );
    }
});
