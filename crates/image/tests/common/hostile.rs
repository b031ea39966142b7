//! The hostile corpus: image archives that try to write outside their layer directory, lie about their content or
//! exceed the limits. Generated, not checked in, so each case says plainly what it does.
//!
//! Escapes aim at the *sentinel* directory (the parent of the store root, three levels above any layer directory)
//! rather than at system files, so a bug shows up as a changed sentinel tree instead of damage to the machine.

use std::path::Path;

use husk_core::ErrorKind;
use husk_image::{ImageConfig, Limits};

use super::{
    Layer, Tar, docker_archive, docker_archive_with, finish_oci, gzip, oci_add_image, sha256_hex,
};

/// One hostile archive and how its refusal must read.
pub struct Case {
    /// Short name for test output.
    pub name: &'static str,
    /// The archive bytes given to `load`.
    pub archive: Vec<u8>,
    /// A piece of the error message.
    pub expect: &'static str,
    /// The error kind.
    pub kind: ErrorKind,
}

/// The limits the corpus is written against.
pub fn config() -> ImageConfig {
    ImageConfig {
        limits: Limits {
            max_layer_size: 2 << 20,
            max_image_size: 4 << 20,
            max_layer_entries: 100,
            max_archive_size: 64 << 20,
            max_json_size: 1 << 20,
        },
        allow_devices: false,
        registry: Default::default(),
    }
}

fn layer_case(name: &'static str, tar: &Tar, expect: &'static str) -> Case {
    Case {
        name,
        archive: docker_archive(&[Layer::plain(tar.finish())], Some("hostile:1")),
        expect,
        kind: ErrorKind::InvalidArgument,
    }
}

fn limit_case(name: &'static str, layers: Vec<Layer>, expect: &'static str) -> Case {
    Case {
        name,
        archive: docker_archive(&layers, Some("hostile:1")),
        expect,
        kind: ErrorKind::LimitExceeded,
    }
}

fn archive_case(name: &'static str, archive: Vec<u8>, expect: &'static str) -> Case {
    Case {
        name,
        archive,
        expect,
        kind: ErrorKind::InvalidArgument,
    }
}

/// Every hostile case. `sentinel` is the absolute path of the directory escapes aim at; it holds `secret` and
/// `victim` files the cases try to link to, overwrite or delete.
pub fn corpus(sentinel: &Path) -> Vec<Case> {
    let s = sentinel.to_str().expect("utf-8 test path");
    let mut cases = Vec::new();
    let t = || Tar::new();

    cases.push(layer_case(
        "dotdot path",
        t().file("../../../pwned", b"x"),
        "'..' component",
    ));
    cases.push(layer_case(
        "dotdot in the middle",
        t().dir("a/").file("a/../../../../pwned", b"x"),
        "'..' component",
    ));
    cases.push(layer_case(
        "absolute path",
        t().file(&format!("{s}/pwned"), b"x"),
        "absolute path",
    ));
    cases.push(layer_case(
        "symlink to the sentinel, then a file through it",
        t().symlink("evil", s).file("evil/pwned", b"x"),
        "symbolic link",
    ));
    cases.push(layer_case(
        "symlink to /, then a file through it",
        t().symlink("root", "/")
            .file(&format!("root{s}/pwned"), b"x"),
        "symbolic link",
    ));
    cases.push(layer_case(
        "relative symlink climbing out, then a file through it",
        t().symlink("up", "../../..").file("up/pwned", b"x"),
        "symbolic link",
    ));
    cases.push(layer_case(
        "symlink chain escape",
        t().symlink("a", "b")
            .symlink("b", "../../..")
            .file("a/pwned", b"x"),
        "symbolic link",
    ));
    cases.push(layer_case(
        "directory through a symlink",
        t().symlink("d", s).dir("d/newdir/"),
        "symbolic link",
    ));
    cases.push(layer_case(
        "hardlink to /etc/passwd",
        t().file("x", b"x").hardlink("pw", "/etc/passwd"),
        "hard link target",
    ));
    cases.push(layer_case(
        "hardlink climbing out",
        t().hardlink("s", "../../../secret"),
        "hard link target",
    ));
    cases.push(layer_case(
        "hardlink through a symlink",
        t().symlink("l", s).hardlink("s", "l/secret"),
        "not a file created earlier",
    ));
    cases.push(layer_case(
        "hardlink to a directory",
        t().dir("d/").hardlink("s", "d"),
        "not a file created earlier",
    ));
    cases.push(layer_case(
        "character device",
        t().chardev("mem", 1, 1),
        "device",
    ));
    cases.push(layer_case(
        "duplicate entry swapping a symlink for a file",
        t().symlink("x", &format!("{s}/secret")).file("x", b"pwned"),
        "more than once",
    ));
    cases.push(layer_case(
        "duplicate file",
        t().file("x", b"one").file("x", b"two"),
        "more than once",
    ));
    cases.push(layer_case(
        "whiteout climbing out",
        t().file("../../../.wh.victim", b""),
        "'..' component",
    ));
    cases.push(layer_case(
        "whiteout through a symlink",
        t().symlink("l", s).file("l/.wh.victim", b""),
        "symbolic link",
    ));
    cases.push(layer_case(
        "opaque marker through a symlink",
        t().symlink("l", s).file("l/.wh..wh..opq", b""),
        "symbolic link",
    ));
    cases.push(layer_case(
        "whiteout of '..'",
        t().file(".wh...", b""),
        "names no file",
    ));

    // Limits.
    let mut huge = Tar::new();
    huge.entry(b"big", b'0', 1 << 40, b"", 0o644, &[0u8; 512]);
    cases.push(Case {
        name: "huge declared size",
        archive: docker_archive(&[Layer::plain(huge.finish())], Some("hostile:1")),
        expect: "declares",
        kind: ErrorKind::LimitExceeded,
    });
    let mut bomb = Tar::new();
    for i in 0..3 {
        bomb.file(&format!("zeros{i}"), &vec![0u8; 1 << 20]);
    }
    cases.push(limit_case(
        "decompression bomb past the layer limit",
        vec![Layer::gzip(bomb.finish())],
        "layer size limit",
    ));
    let mut many = Tar::new();
    for i in 0..150 {
        many.file(&format!("f{i}"), b"");
    }
    cases.push(limit_case(
        "too many entries",
        vec![Layer::plain(many.finish())],
        "entries",
    ));
    let big_layers = (0..3)
        .map(|i| {
            Layer::gzip(
                t().file(&format!("f{i}"), &vec![i as u8; 1536 << 10])
                    .finish(),
            )
        })
        .collect();
    cases.push(limit_case(
        "image past the image limit",
        big_layers,
        "image size limit",
    ));

    // Corrupt content.
    let mut data = Tar::new();
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    data.file("noise", &noise);
    let whole = data.finish();
    let mut truncated = Layer::gzip(whole.clone());
    truncated.blob.truncate(truncated.blob.len() / 2);
    cases.push(archive_case(
        "truncated gzip",
        docker_archive(&[truncated], Some("hostile:1")),
        "corrupt or truncated",
    ));
    let mut cut = Layer::plain(whole.clone());
    cut.blob.truncate(100_000);
    cases.push(archive_case(
        "truncated tar",
        docker_archive(&[cut], Some("hostile:1")),
        "truncated",
    ));
    let mut wrong_diff = Layer::plain(whole.clone());
    wrong_diff.diff_id = format!("sha256:{}", sha256_hex(b"something else"));
    cases.push(archive_case(
        "wrong diff_id",
        docker_archive(&[wrong_diff], Some("hostile:1")),
        "the image config says",
    ));
    cases.push(archive_case(
        "not a tar archive",
        vec![0x42; 4096],
        "image archive",
    ));
    cases.push(archive_case(
        "gzip garbage as a layer",
        docker_archive(
            &[Layer {
                blob: gzip(b"not a tar at all, just text"),
                ..Layer::plain(b"x".to_vec())
            }],
            None,
        ),
        "layer",
    ));

    // Archive structure.
    let good = Layer::plain(t().file("ok", b"ok").finish());
    let config = super::config_json(std::slice::from_ref(&good), "sh");
    cases.push(archive_case(
        "manifest naming a layer outside the archive",
        docker_archive_with(
            std::slice::from_ref(&good),
            &config,
            Some("hostile:1"),
            Some(vec!["../../etc/passwd".into()]),
        ),
        "outside the archive",
    ));
    cases.push(archive_case(
        "manifest naming an absolute layer path",
        docker_archive_with(
            std::slice::from_ref(&good),
            &config,
            Some("hostile:1"),
            Some(vec!["/etc/passwd".into()]),
        ),
        "outside the archive",
    ));
    let mut linked = Tar::new();
    linked.file(&format!("{}.json", sha256_hex(&config)), &config);
    linked.symlink("l0/layer.tar", "../../../secret");
    let manifest = serde_json::json!([{"Config": format!("{}.json", sha256_hex(&config)), "RepoTags": ["hostile:1"], "Layers": ["l0/layer.tar"]}]);
    linked.file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    cases.push(archive_case(
        "layer path is a symlink out of the archive",
        linked.finish(),
        "points outside the archive",
    ));

    // OCI layouts whose blobs do not match their descriptors.
    let mut wrong_digest = Tar::new();
    let entry = oci_add_image(
        &mut wrong_digest,
        std::slice::from_ref(&good),
        &config,
        None,
    );
    let mut swapped = wrong_digest.raw();
    let needle = b"ok\0";
    if let Some(pos) = swapped.windows(needle.len()).position(|w| w == needle) {
        swapped[pos] = b'k'; // one byte of the layer's file name changes: the blob no longer matches its digest
    }
    let mut archive = swapped;
    let mut tail = Tar::new();
    let tail_bytes = finish_oci(&mut tail, vec![entry.clone()]);
    archive.extend_from_slice(&tail_bytes);
    cases.push(archive_case(
        "OCI blob with the wrong digest",
        archive,
        "does not match its digest",
    ));
    let mut wrong_size = Tar::new();
    let mut entry = oci_add_image(&mut wrong_size, std::slice::from_ref(&good), &config, None);
    entry["size"] = serde_json::json!(entry["size"].as_u64().unwrap() + 1);
    cases.push(archive_case(
        "OCI manifest with the wrong size",
        finish_oci(&mut wrong_size, vec![entry]),
        "expected",
    ));
    let mut bad_digest = Tar::new();
    let entry = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../../etc/passwd", "size": 10});
    cases.push(archive_case(
        "OCI index with a path as digest",
        finish_oci(&mut bad_digest, vec![entry]),
        "image archive",
    ));
    cases
}
