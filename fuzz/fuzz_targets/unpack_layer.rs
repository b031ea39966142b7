//! Layer unpacking (`husk_image::unpack::unpack_layer`) on arbitrary bytes: plain, gzip or zstd tar streams.
//!
//! Checks that unpacking never panics and never writes outside the layer directory: the layer is unpacked into
//! `<tmp>/rootfs`, next to an empty directory `<tmp>/sentinel` and a file `<tmp>/victim`; afterwards the temporary
//! directory must hold exactly those three, the sentinel must still be empty and the victim unchanged (content,
//! mode and link count: no hard link to it may appear inside the layer).

#![no_main]

use std::fs;
use std::os::unix::fs::MetadataExt;

use husk_fuzz::remove_tree;
use husk_image::unpack::{UnpackOptions, unpack_layer};
use libfuzzer_sys::fuzz_target;

const VICTIM: &[u8] = b"must not change\n";

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path().join("rootfs");
    let sentinel = tmp.path().join("sentinel");
    let victim = tmp.path().join("victim");
    fs::create_dir(&root).expect("rootfs");
    fs::create_dir(&sentinel).expect("sentinel");
    fs::write(&victim, VICTIM).expect("victim");
    let before = fs::metadata(&victim).expect("victim");

    let options = UnpackOptions {
        max_size: 8 << 20,
        max_entries: 10_000,
        allow_devices: false,
        image_budget: None,
    };
    let _ = unpack_layer(data, &root, "layer fuzz", &options);

    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .expect("list tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["rootfs", "sentinel", "victim"],
        "something was written next to the layer"
    );
    assert!(
        fs::read_dir(&sentinel)
            .expect("list sentinel")
            .next()
            .is_none(),
        "something was written into the sibling directory"
    );
    let after = fs::symlink_metadata(&victim).expect("victim");
    assert!(after.is_file(), "the sibling file was replaced");
    assert_eq!(
        fs::read(&victim).expect("victim"),
        VICTIM,
        "the sibling file was written"
    );
    assert_eq!(
        after.mode(),
        before.mode(),
        "the sibling file's mode changed"
    );
    assert_eq!(
        after.uid(),
        before.uid(),
        "the sibling file's owner changed"
    );
    assert_eq!(
        after.nlink(),
        1,
        "the sibling file was hard-linked into the layer"
    );
    assert!(
        fs::symlink_metadata(&root).expect("rootfs").is_dir(),
        "the layer root was replaced"
    );

    remove_tree(&root);
});
