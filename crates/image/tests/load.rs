//! Loading real archives (made by scripts/make-busybox-image and by the builders in tests/common), resolving,
//! tagging and removing images, sharing and collecting layers.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Layer, Tar, TestStore, docker_archive, finish_oci, oci_add_image, oci_archive};
use husk_core::ErrorKind;
use husk_image::{ImageConfig, LoadOptions, Platform, Removed};

/// Runs scripts/make-busybox-image; returns the archive path and the config digest the script printed.
fn busybox_archive(dir: &Path, name: &str, layers: usize) -> (PathBuf, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-busybox-image");
    let out = dir.join(format!("busybox-{layers}.tar"));
    let output = Command::new("sh")
        .arg(&script)
        .arg(&out)
        .arg(name)
        .args(["--layers", &layers.to_string()])
        .output()
        .expect("run make-busybox-image");
    assert!(
        output.status.success(),
        "make-busybox-image: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let id = stdout
        .split_whitespace()
        .nth(1)
        .expect("script prints NAME ID")
        .to_string();
    (out, id)
}

async fn load_file(t: &TestStore, path: &Path) -> husk_core::Result<Vec<husk_image::LoadedImage>> {
    let file = tokio::fs::File::open(path).await.unwrap();
    t.store.load(file, &LoadOptions::default()).await
}

fn never_used(_: &str) -> bool {
    false
}

#[tokio::test]
async fn busybox_archive_loads_resolves_and_unpacks() {
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox_archive(t.dir.path(), "husk.local/busybox:latest", 1);
    let loaded = load_file(&t, &archive).await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, id, "the image ID is the config digest");
    assert_eq!(loaded[0].names, vec!["husk.local/busybox:latest"]);

    let hex = id.trim_start_matches("sha256:");
    for reference in [
        "husk.local/busybox",
        "husk.local/busybox:latest",
        &id,
        hex,
        &hex[..12],
        &format!("sha256:{}", &hex[..8]),
    ] {
        assert_eq!(t.store.resolve(reference).unwrap().id, id, "{reference}");
    }
    assert_eq!(
        t.store.resolve("husk.local/busybox:nope").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        t.store.resolve("busybox").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        t.store.resolve("Bad Name").unwrap_err().kind,
        ErrorKind::InvalidArgument
    );

    let image = t.store.inspect("husk.local/busybox").unwrap();
    assert_eq!(image.config.cmd, vec!["sh"]);
    assert_eq!(image.config.working_dir, "/");
    assert!(image.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(
        (image.os.as_str(), image.architecture.as_str()),
        ("linux", "amd64")
    );
    assert!(
        image.size > 500_000,
        "busybox is in the size: {}",
        image.size
    );
    assert_eq!(
        t.store.raw_config(&image).unwrap().len() as u64,
        std::fs::metadata(t.store.blobs().path(&image.digest().unwrap()))
            .unwrap()
            .len()
    );

    let rootfs = t.store.rootfs_layers(&image).unwrap();
    assert_eq!(rootfs.image_id, id);
    assert_eq!(rootfs.image_name, "husk.local/busybox:latest");
    assert_eq!(rootfs.layers.len(), 1);
    let root = &rootfs.layers[0];
    let busybox = std::fs::metadata(root.join("bin/busybox")).unwrap();
    assert!(busybox.is_file() && busybox.permissions().mode() & 0o111 != 0);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        std::fs::metadata(root.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(
        std::fs::read_to_string(root.join("www/index.html")).unwrap(),
        "hello from husk\n"
    );
    assert_eq!(t.store.list().unwrap().len(), 1);
}

#[tokio::test]
async fn concurrent_loads_of_one_multi_layer_image_unpack_each_layer_once() {
    let t = TestStore::new(ImageConfig::default());
    let (archive, id) = busybox_archive(t.dir.path(), "husk.local/multi:3", 3);
    let (a, b, c) = tokio::join!(
        load_file(&t, &archive),
        load_file(&t, &archive),
        load_file(&t, &archive)
    );
    for r in [a, b, c] {
        assert_eq!(r.unwrap()[0].id, id);
    }
    let image = t.store.resolve("husk.local/multi:3").unwrap();
    assert_eq!(image.layers.len(), 3);
    let layer_dirs = std::fs::read_dir(t.store.root().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layer_dirs, 3);
    assert_eq!(
        std::fs::read_dir(t.store.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    // The applet links are spread over the layers; together they hold them all.
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    let links: usize = rootfs
        .layers
        .iter()
        .map(|l| {
            std::fs::read_dir(l.join("bin"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum();
    assert!(links > 100, "{links} applet links");
}

#[tokio::test]
async fn oci_layout_with_compressed_layers_whiteouts_and_modes() {
    let t = TestStore::new(ImageConfig::default());
    let mut base = Tar::new();
    base.dir("a/")
        .file("a/x", b"x")
        .file("a/y", b"y")
        .file("b", b"b")
        .file_mode("suid", b"#!", 0o4755)
        .file_mode("plain", b"#!", 0o755);
    let mut top = Tar::new();
    top.dir("a/")
        .file("a/.wh..wh..opq", b"")
        .file("a/z", b"z")
        .file(".wh.b", b"")
        .file(".wh..wh.plnk", b"");
    let mut third = Tar::new();
    third.file("c", b"c");
    let layers = vec![
        Layer::gzip(base.finish()),
        Layer::zstd(top.finish()),
        Layer::plain(third.finish()),
    ];
    let loaded = t
        .store
        .load(
            std::io::Cursor::new(oci_archive(&layers, Some("1.0"))),
            &LoadOptions {
                name: Some("example.com/app".into()),
                platform: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(loaded[0].names, vec!["example.com/app:1.0"]);
    let image = t.store.resolve("example.com/app:1.0").unwrap();
    assert_eq!(
        image.layers[0].blob.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(image.manifest.is_some());
    let manifest_digest = image.manifest.as_ref().unwrap().digest.clone();
    assert_eq!(
        image.repo_digests,
        vec![format!("example.com/app@{manifest_digest}")]
    );
    assert_eq!(
        t.store
            .resolve(&format!("example.com/app@{manifest_digest}"))
            .unwrap()
            .id,
        image.id
    );

    let rootfs = t.store.rootfs_layers(&image).unwrap();
    let (l0, l1) = (&rootfs.layers[0], &rootfs.layers[1]);
    assert_eq!(
        std::fs::metadata(l0.join("suid")).unwrap().mode() & 0o7777,
        0o4755,
        "setuid kept as in the archive"
    );
    assert_eq!(
        std::fs::metadata(l0.join("plain")).unwrap().mode() & 0o7777,
        0o755,
        "no setuid added"
    );
    let wh = std::fs::symlink_metadata(l1.join("b")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0/0 character device"
    );
    assert!(!l1.join(".wh.b").exists() && !l1.join(".wh..wh.plnk").exists());
    let opaque = rustix::fs::getxattr(
        l1.join("a").as_path(),
        "trusted.overlay.opaque",
        &mut [0u8; 8][..],
    )
    .unwrap();
    assert_eq!(opaque, 1);
    assert!(!l1.join("a/.wh..wh..opq").exists());
}

#[tokio::test]
async fn oci_index_with_platforms_picks_the_host_or_the_asked_one() {
    let t = TestStore::new(ImageConfig::default());
    let amd = vec![Layer::plain(Tar::new().file("arch", b"amd64").finish())];
    let arm = vec![Layer::plain(Tar::new().file("arch", b"arm64").finish())];
    let mut tar = Tar::new();
    let amd_entry = oci_add_image(
        &mut tar,
        &amd,
        &common::config_json(&amd, "amd"),
        Some(("linux", "amd64")),
    );
    let arm_entry = oci_add_image(
        &mut tar,
        &arm,
        &common::config_json(&arm, "arm"),
        Some(("linux", "arm64")),
    );
    let nested = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [arm_entry, amd_entry]})).unwrap();
    tar.file(
        &format!("blobs/sha256/{}", common::sha256_hex(&nested)),
        &nested,
    );
    let top = serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": format!("sha256:{}", common::sha256_hex(&nested)),
        "size": nested.len(),
        "annotations": {"org.opencontainers.image.ref.name": "example.com/multi:1"},
    });
    let archive = finish_oci(&mut tar, vec![top]);
    t.store
        .load(
            std::io::Cursor::new(archive.clone()),
            &LoadOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        t.store.resolve("example.com/multi:1").unwrap().config.cmd,
        vec!["amd"]
    );
    let arm64 = LoadOptions {
        name: None,
        platform: Some(Platform::parse("linux/arm64").unwrap()),
    };
    t.store
        .load(std::io::Cursor::new(archive.clone()), &arm64)
        .await
        .unwrap();
    let image = t.store.resolve("example.com/multi:1").unwrap();
    assert_eq!(
        image.config.cmd,
        vec!["arm"],
        "the name moved to the arm64 image"
    );
    assert_eq!(
        t.store.list().unwrap().len(),
        2,
        "the amd64 image stays, without a name"
    );
    let s390 = LoadOptions {
        name: None,
        platform: Some(Platform::parse("linux/s390x").unwrap()),
    };
    let e = t
        .store
        .load(std::io::Cursor::new(archive), &s390)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("no image for platform linux/s390x"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn tag_and_remove_follow_dockers_rules() {
    let t = TestStore::new(ImageConfig::default());
    let shared = Layer::plain(Tar::new().file("shared", b"s").finish());
    let own_a = Layer::plain(Tar::new().file("a", b"a").finish());
    let own_b = Layer::plain(Tar::new().file("b", b"b").finish());
    let a = t
        .load(docker_archive(
            &[shared.clone(), own_a.clone()],
            Some("app:a"),
        ))
        .await
        .unwrap()[0]
        .id
        .clone();
    let b = t
        .load(docker_archive(
            &[shared.clone(), own_b.clone()],
            Some("app:b"),
        ))
        .await
        .unwrap()[0]
        .id
        .clone();
    assert_eq!(
        std::fs::read_dir(t.store.root().join("layers"))
            .unwrap()
            .count(),
        3,
        "the shared layer is unpacked once"
    );

    t.store.tag("app:a", "other/name:1").unwrap();
    assert_eq!(t.store.resolve("other/name:1").unwrap().id, a);
    assert!(
        t.store
            .tag(
                "app:a",
                "x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
            .is_err()
    );

    // By name, not the last name: untag only.
    let r = t.store.remove("other/name:1", false, &never_used).unwrap();
    assert_eq!(r, vec![Removed::Untagged("docker.io/other/name:1".into())]);

    // The last name of an image a container uses: refused, then forced (the image stays, nameless).
    let used = |id: &str| id == a;
    let e = t.store.remove("app:a", false, &used).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(
        t.store.resolve("app:a").is_ok(),
        "a refused removal changes nothing"
    );
    let r = t.store.remove("app:a", true, &used).unwrap();
    assert_eq!(r, vec![Removed::Untagged("docker.io/library/app:a".into())]);
    let kept = t.store.resolve(&a).unwrap();
    assert!(kept.repo_tags.is_empty());
    assert_eq!(
        t.store.remove(&a, false, &used).unwrap_err().kind,
        ErrorKind::Conflict
    );
    assert!(
        t.store.rootfs_layers(&kept).is_ok(),
        "layers of a used image stay"
    );

    // Unused now: by ID deletes it; its own layer goes, the shared one stays for app:b.
    let r = t.store.remove(&a[7..19], false, &never_used).unwrap();
    assert_eq!(r, vec![Removed::Deleted(a.clone())]);
    assert_eq!(t.store.resolve(&a).unwrap_err().kind, ErrorKind::NotFound);
    let layers: Vec<String> = std::fs::read_dir(t.store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(layers.len(), 2);
    assert!(!layers.contains(&own_a.diff_id[7..].to_string()));
    assert!(
        t.store
            .rootfs_layers(&t.store.resolve("app:b").unwrap())
            .is_ok()
    );
    assert!(
        !t.store
            .blobs()
            .contains(&husk_image::Digest::parse(&a, "id").unwrap()),
        "the config blob went with the image"
    );

    // The last image: everything goes.
    let r = t.store.remove("app:b", false, &never_used).unwrap();
    assert_eq!(
        r,
        vec![
            Removed::Untagged("docker.io/library/app:b".into()),
            Removed::Deleted(b.clone())
        ]
    );
    assert_eq!(
        std::fs::read_dir(t.store.root().join("layers"))
            .unwrap()
            .count(),
        0
    );
    assert!(t.store.blobs().list().unwrap().is_empty());
}

#[tokio::test]
async fn a_name_given_to_a_new_image_moves_and_prune_removes_the_nameless() {
    let t = TestStore::new(ImageConfig::default());
    let one = t
        .load(docker_archive(
            &[Layer::plain(Tar::new().file("v", b"1").finish())],
            Some("app:latest"),
        ))
        .await
        .unwrap();
    let two = t
        .load(docker_archive(
            &[Layer::plain(Tar::new().file("v", b"2").finish())],
            Some("app:latest"),
        ))
        .await
        .unwrap();
    assert_eq!(t.store.resolve("app").unwrap().id, two[0].id);
    assert!(t.store.resolve(&one[0].id).unwrap().repo_tags.is_empty());
    let report = t.store.prune(false, &never_used).unwrap();
    assert_eq!(report.images_deleted, vec![one[0].id.clone()]);
    assert!(report.space_reclaimed > 0);
    assert_eq!(t.store.list().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(t.store.root().join("layers"))
            .unwrap()
            .count(),
        1
    );
    let report = t.store.prune(true, &|_| true).unwrap();
    assert!(
        report.images_deleted.is_empty(),
        "prune never removes an image a container uses"
    );
}

/// A reader that fails after `limit` bytes, like a connection that drops.
struct Failing {
    data: std::io::Cursor<Vec<u8>>,
    limit: u64,
}

impl tokio::io::AsyncRead for Failing {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.data.position() >= self.limit {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection dropped",
            )));
        }
        let want = buf
            .remaining()
            .min((self.limit - self.data.position()) as usize);
        let mut chunk = vec![0u8; want];
        let n = std::io::Read::read(&mut self.data, &mut chunk)?;
        buf.put_slice(&chunk[..n]);
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn an_interrupted_load_leaves_nothing_and_a_retry_works() {
    let t = TestStore::new(ImageConfig::default());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let archive = docker_archive(
        &[Layer::plain(Tar::new().file("big", &big).finish())],
        Some("app:1"),
    );
    let failing = Failing {
        data: std::io::Cursor::new(archive.clone()),
        limit: archive.len() as u64 / 2,
    };
    let e = t
        .store
        .load(failing, &LoadOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.message.contains("connection dropped") || e.message.contains("corrupt"),
        "{}",
        e.message
    );
    assert!(t.store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(t.store.root().join("tmp"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(t.store.root().join("layers"))
            .unwrap()
            .count(),
        0
    );
    t.load(archive).await.unwrap();
    assert!(t.store.resolve("app:1").is_ok());
}

#[tokio::test]
async fn the_store_persists_and_one_root_has_one_owner() {
    let t = TestStore::new(ImageConfig::default());
    let id = t
        .load(docker_archive(
            &[Layer::plain(Tar::new().file("f", b"f").finish())],
            Some("app:1"),
        ))
        .await
        .unwrap()[0]
        .id
        .clone();
    let root = t.store.root().to_path_buf();
    let db = std::sync::Arc::new(husk_store::Store::open(&root.join("husk.db")).unwrap());
    let e = husk_image::ImageStore::open(&root, db.clone(), ImageConfig::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict, "{}", e.message);
    drop(t.store);
    let reopened = husk_image::ImageStore::open(&root, db, ImageConfig::default()).unwrap();
    assert_eq!(reopened.resolve("app:1").unwrap().id, id);
    assert!(
        reopened
            .rootfs_layers(&reopened.resolve("app:1").unwrap())
            .unwrap()
            .layers[0]
            .join("f")
            .exists()
    );
}

#[tokio::test]
async fn newer_docker_archives_with_an_oci_layout_keep_their_manifest() {
    // Docker 25 and later: blobs/sha256/..., index.json, and a manifest.json whose paths point into blobs/.
    let t = TestStore::new(ImageConfig::default());
    let layers = vec![Layer::plain(Tar::new().file("f", b"f").finish())];
    let config = common::config_json(&layers, "sh");
    let mut tar = Tar::new();
    let mut entry = oci_add_image(&mut tar, &layers, &config, None);
    entry["annotations"] = serde_json::json!({"io.containerd.image.name": "docker.io/library/new:1", "org.opencontainers.image.ref.name": "1"});
    let manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", common::sha256_hex(&config)),
        "RepoTags": ["new:1"],
        "Layers": [format!("blobs/sha256/{}", common::sha256_hex(&layers[0].blob))],
    }]);
    tar.file("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    let loaded = t
        .load(finish_oci(&mut tar, vec![entry.clone()]))
        .await
        .unwrap();
    assert_eq!(loaded[0].names, vec!["docker.io/library/new:1"]);
    let image = t.store.resolve("new:1").unwrap();
    let digest = entry["digest"].as_str().unwrap();
    assert_eq!(image.manifest.as_ref().unwrap().digest, digest);
    assert_eq!(
        image.repo_digests,
        vec![format!("docker.io/library/new@{digest}")]
    );
    assert_eq!(
        t.store.resolve(&format!("new@{digest}")).unwrap().id,
        image.id
    );
}

#[tokio::test]
async fn a_layer_listed_twice_is_mounted_once_at_its_upper_place() {
    let t = TestStore::new(ImageConfig::default());
    let a = Layer::plain(Tar::new().file("a", b"a").finish());
    let b = Layer::plain(Tar::new().file("b", b"b").finish());
    t.load(docker_archive(
        &[a.clone(), b.clone(), a.clone()],
        Some("dup:1"),
    ))
    .await
    .unwrap();
    let rootfs = t
        .store
        .rootfs_layers(&t.store.resolve("dup:1").unwrap())
        .unwrap();
    let names: Vec<String> = rootfs
        .layers
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![b.diff_id[7..].to_string(), a.diff_id[7..].to_string()]
    );
}

#[tokio::test]
async fn disk_usage_counts_shared_and_unique_layers() {
    let t = TestStore::new(ImageConfig::default());
    let shared = Layer::plain(Tar::new().file("shared", &[1u8; 1000]).finish());
    let a = Layer::plain(Tar::new().file("a", &[2u8; 300]).finish());
    let b = Layer::plain(Tar::new().file("b", &[3u8; 200]).finish());
    let ia = t
        .load(docker_archive(&[shared.clone(), a], Some("a:1")))
        .await
        .unwrap()[0]
        .id
        .clone();
    t.load(docker_archive(&[shared, b], Some("b:1")))
        .await
        .unwrap();
    let usage = t.store.disk_usage(&|id| id == ia).unwrap();
    let img_a = usage.images.iter().find(|i| i.id == ia).unwrap();
    assert_eq!(
        (
            img_a.size,
            img_a.shared_size,
            img_a.unique_size,
            img_a.in_use
        ),
        (1300, 1000, 300, true)
    );
    let img_b = usage.images.iter().find(|i| i.id != ia).unwrap();
    assert_eq!(
        (img_b.shared_size, img_b.unique_size, img_b.in_use),
        (1000, 200, false)
    );
    assert_eq!(usage.layers_size, 1500);
    assert!(usage.blobs_size > 1500);
    assert!(
        usage.reclaimable >= 200,
        "b's own layer and blobs can go: {}",
        usage.reclaimable
    );
    assert!(
        usage.reclaimable < usage.blobs_size + 200,
        "a's blobs and the shared layer cannot"
    );
}
