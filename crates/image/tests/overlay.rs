//! Root filesystems for real: overlayfs over unpacked layers, whiteouts and opaque directories honoured, many
//! layers through both kernel interfaces, unmount idempotent. Needs root (CI runs as root).

mod common;

use std::path::{Path, PathBuf};

use common::{Layer, Tar, TestStore, docker_archive};
use husk_fs::{MountMethod, mount_overlay, mount_rootfs, unmount_rootfs};
use husk_image::ImageConfig;

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = unmount_rootfs(&self.0);
    }
}

fn dirs(base: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (upper, work, target) = (
        base.join(format!("{name}-upper")),
        base.join(format!("{name}-work")),
        base.join(format!("{name}-root")),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir_all(d).unwrap();
    }
    (upper, work, target)
}

fn is_mounted(target: &Path) -> bool {
    let target = std::fs::canonicalize(target).unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.to_str().unwrap()))
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_hide_lower_files() {
    let t = TestStore::new(ImageConfig::default());
    let mut base = Tar::new();
    base.dir("a/")
        .file("a/x", b"x")
        .file("a/y", b"y")
        .file("b", b"b")
        .dir("c/")
        .file("c/keep", b"keep");
    let mut top = Tar::new();
    top.dir("a/")
        .file("a/.wh..wh..opq", b"")
        .file("a/z", b"z")
        .file(".wh.b", b"")
        .file("c/new", b"new");
    let archive = docker_archive(
        &[Layer::gzip(base.finish()), Layer::plain(top.finish())],
        Some("wh:1"),
    );
    t.load(archive).await.unwrap();
    let rootfs = t
        .store
        .rootfs_layers(&t.store.resolve("wh:1").unwrap())
        .unwrap();
    for method in [MountMethod::Auto, MountMethod::Legacy] {
        let (upper, work, target) = dirs(t.dir.path(), &format!("{method:?}"));
        mount_overlay(&rootfs.layers, &upper, &work, &target, method).unwrap();
        let _m = Mounted(target.clone());
        assert!(is_mounted(&target));
        assert!(target.join("a/z").exists());
        assert!(
            !target.join("a/x").exists() && !target.join("a/y").exists(),
            "{method:?}: the opaque dir hides lower files"
        );
        assert!(
            !target.join("b").exists(),
            "{method:?}: the whiteout hides b"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("c/keep")).unwrap(),
            "keep"
        );
        assert!(target.join("c/new").exists());
        std::fs::write(target.join("written"), b"w").unwrap();
        assert!(
            upper.join("written").exists(),
            "writes land in the upper dir"
        );
        assert!(
            !rootfs.layers.iter().any(|l| l.join("written").exists()),
            "layers stay untouched"
        );
        unmount_rootfs(&target).unwrap();
        assert!(!is_mounted(&target));
        unmount_rootfs(&target).unwrap();
    }
}

#[tokio::test]
async fn many_layers_mount_with_both_kernel_interfaces() {
    let t = TestStore::new(ImageConfig::default());
    let layers: Vec<Layer> = (0..120)
        .map(|i| {
            Layer::plain(
                Tar::new()
                    .file(&format!("f{i:03}"), format!("{i}").as_bytes())
                    .finish(),
            )
        })
        .collect();
    t.load(docker_archive(&layers, Some("many:1")))
        .await
        .unwrap();
    let image = t.store.resolve("many:1").unwrap();
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    let joined: usize = rootfs.layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(
        joined > 4096,
        "the full lowerdir list ({joined} bytes) must not fit in one page for this test to mean anything"
    );
    for method in [MountMethod::Auto, MountMethod::Legacy] {
        let (upper, work, target) = dirs(t.dir.path(), &format!("many-{method:?}"));
        mount_overlay(&rootfs.layers, &upper, &work, &target, method).unwrap();
        let _m = Mounted(target.clone());
        for i in [0, 57, 119] {
            assert_eq!(
                std::fs::read_to_string(target.join(format!("f{i:03}"))).unwrap(),
                i.to_string(),
                "{method:?}"
            );
        }
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 120);
    }
    let (upper, work, target) = dirs(t.dir.path(), "rootfs");
    mount_rootfs(&rootfs, &upper, &work, &target).unwrap();
    let _m = Mounted(target.clone());
    assert!(target.join("f000").exists());
}

#[test]
fn unmounting_nothing_is_fine_and_bad_mounts_are_clear_errors() {
    let dir = tempfile::tempdir_in(common::test_tmp()).unwrap();
    unmount_rootfs(dir.path()).unwrap();
    unmount_rootfs(&dir.path().join("missing")).unwrap();
    let (upper, work, target) = dirs(dir.path(), "bad");
    let e = mount_overlay(
        &[dir.path().join("no-such-layer")],
        &upper,
        &work,
        &target,
        MountMethod::Auto,
    )
    .unwrap_err();
    assert!(e.message.contains("overlay"), "{}", e.message);
    assert!(mount_overlay(&[], &upper, &work, &target, MountMethod::Auto).is_err());
}

#[tokio::test]
async fn commit_turns_a_containers_changes_into_a_layer() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let t = TestStore::new(ImageConfig::default());
    let mut base = Tar::new();
    base.dir("etc/")
        .file("etc/keep", b"keep")
        .file("etc/gone", b"gone")
        .dir("data/")
        .file("data/a", b"a")
        .file("data/b", b"b");
    t.load(docker_archive(
        &[Layer::plain(base.finish())],
        Some("base:1"),
    ))
    .await
    .unwrap();
    let image = t.store.resolve("base:1").unwrap();
    let rootfs = t.store.rootfs_layers(&image).unwrap();

    // A "container" changes its root filesystem.
    let (upper, work, target) = dirs(t.dir.path(), "commit");
    mount_rootfs(&rootfs, &upper, &work, &target).unwrap();
    {
        let _m = Mounted(target.clone());
        std::fs::remove_file(target.join("etc/gone")).unwrap();
        std::fs::remove_dir_all(target.join("data")).unwrap();
        std::fs::create_dir(target.join("data")).unwrap();
        std::fs::write(target.join("data/new"), b"new").unwrap();
        std::fs::write(target.join("etc/added"), b"added").unwrap();
        std::fs::write(target.join("h1"), b"linked").unwrap();
        std::fs::hard_link(target.join("h1"), target.join("h2")).unwrap();
        std::os::unix::fs::symlink("/etc/keep", target.join("link")).unwrap();
        std::fs::write(target.join("suid"), b"#!").unwrap();
        std::fs::set_permissions(target.join("suid"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
    }
    assert!(
        std::fs::symlink_metadata(upper.join("etc/gone"))
            .unwrap()
            .file_type()
            .is_char_device(),
        "the kernel made a whiteout"
    );

    let options = husk_image::CommitOptions {
        name: Some("committed:1".into()),
        comment: Some("test".into()),
        ..Default::default()
    };
    let committed = t.store.commit("base:1", &upper, &options).await.unwrap();
    assert_eq!(committed.layers.len(), 2);
    assert_eq!(committed.repo_tags, vec!["docker.io/library/committed:1"]);
    assert_ne!(committed.id, image.id);
    let config: serde_json::Value =
        serde_json::from_slice(&t.store.raw_config(&committed).unwrap()).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(
        config["history"].as_array().unwrap().last().unwrap()["comment"],
        "test"
    );

    let rootfs = t.store.rootfs_layers(&committed).unwrap();
    let (upper2, work2, target2) = dirs(t.dir.path(), "committed");
    mount_rootfs(&rootfs, &upper2, &work2, &target2).unwrap();
    let _m = Mounted(target2.clone());
    assert!(
        !target2.join("etc/gone").exists(),
        "the deletion survived the commit"
    );
    assert_eq!(
        std::fs::read_to_string(target2.join("etc/keep")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::read_to_string(target2.join("etc/added")).unwrap(),
        "added"
    );
    let data: Vec<String> = std::fs::read_dir(target2.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(data, vec!["new"], "the replaced directory is opaque");
    assert_eq!(
        std::fs::read_link(target2.join("link")).unwrap(),
        Path::new("/etc/keep")
    );
    assert_eq!(
        std::fs::metadata(target2.join("suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    let top = rootfs.layers.last().unwrap();
    assert_eq!(
        std::fs::metadata(top.join("h1")).unwrap().ino(),
        std::fs::metadata(top.join("h2")).unwrap().ino(),
        "hard links stay links"
    );
}
