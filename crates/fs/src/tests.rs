//! Unit tests of the tree operations on temporary directories (as root: owners and device nodes).

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use super::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A tree with a file, a directory, a symbolic link inside, a hard link and odd permissions.
fn sample(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("sub/file"), b"hello").unwrap();
    std::fs::set_permissions(
        dir.join("sub/file"),
        std::fs::Permissions::from_mode(0o4751),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o1733),
    )
    .unwrap();
    symlink("../sub/file", dir.join("sub/deeper/link")).unwrap();
    std::fs::hard_link(dir.join("sub/file"), dir.join("sub/hard")).unwrap();
    let long = "n".repeat(150);
    std::fs::write(dir.join("sub").join(&long), b"long name").unwrap();
    if is_root() {
        std::os::unix::fs::lchown(dir.join("sub/file"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(dir.join("sub/deeper/link"), Some(42), Some(43)).unwrap();
    }
}

fn describe(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let extra = if m.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().display().to_string()
        } else if m.is_file() {
            String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
        } else {
            String::new()
        };
        out.push(format!(
            "{rel} {:o} {}:{} {} {extra}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink() > 1 && m.is_file()
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn archive_and_extract_round_trip() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    sample(src.path());
    let tree = Tree::in_root(src.path()).unwrap();
    let mut tar = Vec::new();
    tree.archive("/sub", None, &mut tar).unwrap();
    let out = Tree::beneath(dst.path()).unwrap();
    let options = ExtractOptions {
        copy_owners: true,
        ..Default::default()
    };
    out.extract(".", tar.as_slice(), &options).unwrap();
    assert_eq!(
        describe(&src.path().join("sub")),
        describe(&dst.path().join("sub"))
    );
    let a = std::fs::metadata(dst.path().join("sub/file")).unwrap();
    let b = std::fs::metadata(dst.path().join("sub/hard")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links stay hard links");
}

#[test]
fn stat_describes_without_following_and_resolves_links_inside() {
    let root = tempfile::tempdir().unwrap();
    sample(root.path());
    symlink("/sub", root.path().join("abs")).unwrap();
    let tree = Tree::in_root(root.path()).unwrap();
    let s = tree.stat("/sub/deeper/link").unwrap();
    assert!(s.is_symlink());
    assert_eq!(s.name, "link");
    let s = tree.stat("/abs").unwrap();
    assert!(s.is_symlink());
    assert!(
        tree.stat("/abs/").unwrap().is_dir(),
        "a trailing slash follows"
    );
    assert_eq!(tree.stat("/sub/file").unwrap().size, 5);
    assert_eq!(
        tree.stat("/nope").unwrap_err().kind,
        husk_core::ErrorKind::NotFound
    );
    assert!(tree.stat("/").unwrap().is_dir());
}

#[test]
fn links_out_of_the_root_stay_inside() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::create_dir_all(root.path().join("a/b")).unwrap();
    std::fs::write(root.path().join("etc/passwd"), b"container passwd").unwrap();
    symlink("/etc", root.path().join("evil")).unwrap();
    symlink("../../../../../../etc", root.path().join("a/b/up")).unwrap();
    let tree = Tree::in_root(root.path()).unwrap();
    for path in ["/evil/passwd", "/a/b/up/passwd", "/../../etc/passwd"] {
        let mut tar = Vec::new();
        tree.archive(path, None, &mut tar).unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).unwrap();
        assert_eq!(text, "container passwd", "{path}");
    }
    // Writing through the same links lands inside the root too.
    let marker = format!("husk-fs-test-{}", std::process::id());
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    tar.append_data(&mut h, &marker, &b"pwn"[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    for dir in ["/evil", "/a/b/up"] {
        tree.extract(dir, tar.as_slice(), &ExtractOptions::default())
            .unwrap();
    }
    assert!(root.path().join("etc").join(&marker).exists());
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "the host's /etc is untouched"
    );
}

/// An archive built by hand, with entries a normal archiver would never write.
fn hostile_archive(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn hostile_archives_cannot_leave_the_destination() {
    let outer = tempfile::tempdir().unwrap();
    let dest = outer.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let tree = Tree::beneath(&dest).unwrap();
    let none = ExtractOptions::default();
    let e = tree
        .extract(
            ".",
            hostile_archive(&[("../escaped", tar::EntryType::Regular, "")]).as_slice(),
            &none,
        )
        .unwrap_err();
    assert!(e.message.contains(".."), "{}", e.message);
    let e = tree
        .extract(
            ".",
            hostile_archive(&[
                ("l", tar::EntryType::Symlink, "/tmp"),
                ("l/x", tar::EntryType::Regular, ""),
            ])
            .as_slice(),
            &none,
        )
        .unwrap_err();
    assert!(e.message.contains("outside"), "{}", e.message);
    let e = tree
        .extract(
            ".",
            hostile_archive(&[
                ("up", tar::EntryType::Symlink, ".."),
                ("up/escaped", tar::EntryType::Regular, ""),
            ])
            .as_slice(),
            &none,
        )
        .unwrap_err();
    assert!(e.message.contains("outside"), "{}", e.message);
    let e = tree
        .extract(
            ".",
            hostile_archive(&[("h", tar::EntryType::Link, "../../etc/passwd")]).as_slice(),
            &none,
        )
        .unwrap_err();
    assert!(e.message.contains(".."), "{}", e.message);
    tree.extract(
        ".",
        hostile_archive(&[("/abs", tar::EntryType::Regular, "")]).as_slice(),
        &none,
    )
    .unwrap();
    assert!(
        dest.join("abs").exists(),
        "absolute names are made relative"
    );
    assert!(!outer.path().join("escaped").exists());
}

#[test]
fn renaming_the_top_entry_and_refusing_dir_swaps() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    sample(src.path());
    let tree = Tree::in_root(src.path()).unwrap();
    let mut tar = Vec::new();
    tree.archive("/sub", None, &mut tar).unwrap();
    let out = Tree::beneath(dst.path()).unwrap();
    let options = ExtractOptions {
        rename_top: Some(("sub".into(), "renamed".into())),
        ..Default::default()
    };
    out.extract(".", tar.as_slice(), &options).unwrap();
    assert_eq!(
        std::fs::read(dst.path().join("renamed/file")).unwrap(),
        b"hello"
    );
    std::fs::write(dst.path().join("blocker"), b"").unwrap();
    let options = ExtractOptions {
        rename_top: Some(("sub".into(), "blocker".into())),
        no_overwrite_dir_non_dir: true,
        ..Default::default()
    };
    let e = out.extract(".", tar.as_slice(), &options).unwrap_err();
    assert!(e.message.contains("cannot overwrite"), "{}", e.message);
}

#[test]
fn copy_tree_copies_the_top_directory_metadata() {
    let src = tempfile::tempdir().unwrap();
    let dst = tempfile::tempdir().unwrap();
    sample(src.path());
    std::fs::set_permissions(
        src.path().join("sub"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    if is_root() {
        std::os::unix::fs::lchown(src.path().join("sub"), Some(7), Some(8)).unwrap();
    }
    let from = Tree::in_root(src.path()).unwrap();
    let to = Tree::beneath(dst.path()).unwrap();
    copy_tree(&from, "/sub", &to, ".").unwrap();
    let a = std::fs::metadata(src.path().join("sub")).unwrap();
    let b = std::fs::metadata(dst.path()).unwrap();
    assert_eq!((a.mode(), a.uid(), a.gid()), (b.mode(), b.uid(), b.gid()));
    assert_eq!(std::fs::read(dst.path().join("file")).unwrap(), b"hello");
    assert_eq!(
        std::fs::read_link(dst.path().join("deeper/link")).unwrap(),
        Path::new("../sub/file")
    );
}

#[test]
fn paths_are_trimmed_like_dockers() {
    assert_eq!(trim_path("/a/b/."), "/a/b");
    assert_eq!(trim_path("/a/b/"), "/a/b");
    assert_eq!(trim_path("/"), "/");
    assert_eq!(trim_path("/."), "/");
    assert!(follows_final("/a/."));
    assert!(!follows_final("/a"));
    assert_eq!(relative("/"), ".");
}

#[test]
fn resolve_follows_links_without_leaving_the_root() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/ssl")).unwrap();
    std::fs::write(root.path().join("etc/passwd"), b"inside").unwrap();
    symlink("/etc", root.path().join("abs")).unwrap();
    symlink("../../../../etc/ssl", root.path().join("up")).unwrap();
    let real = root.path().canonicalize().unwrap();
    let tree = Tree::in_root(root.path()).unwrap();
    for (path, want) in [
        ("etc", "etc"),
        ("/abs/passwd", "etc/passwd"),
        ("up", "etc/ssl"),
        ("../../abs/ssl/..", "etc"),
        ("/", ""),
    ] {
        let got = tree.resolve(path).unwrap();
        assert_eq!(got, real.join(want), "{path}");
    }
    let e = tree.resolve("abs/shadow").unwrap_err();
    assert_eq!(e.kind, husk_core::ErrorKind::NotFound, "{}", e.message);
}

#[test]
fn paths_for_new_mounts_resolve_inside_the_tree() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/ssl")).unwrap();
    std::fs::write(root.path().join("etc/passwd"), b"inside").unwrap();
    symlink("/etc", root.path().join("abs")).unwrap();
    symlink("../../../../../../tmp/outside", root.path().join("up")).unwrap();
    symlink("/", root.path().join("top")).unwrap();
    let tree = Tree::in_root(root.path()).unwrap();
    for (path, want) in [
        ("/", "/"),
        ("/etc/ssl", "/etc/ssl"),
        ("/abs/ssl/new/deeper", "/etc/ssl/new/deeper"),
        ("/up/inside", "/tmp/outside/inside"),
        ("/top/abs", "/etc"),
        ("/missing/x", "/missing/x"),
        ("abs/./new", "/etc/new"),
    ] {
        assert_eq!(tree.resolve_in_tree(path).unwrap(), want, "{path}");
    }
    symlink("loop", root.path().join("loop")).unwrap();
    assert!(tree.resolve_in_tree("/loop/x").is_err(), "a loop ends");
    assert!(tree.resolve_in_tree("/missing/../etc").is_err());
    assert!(
        tree.resolve_in_tree("/etc/passwd/x").is_err(),
        "a file is no directory"
    );
}
