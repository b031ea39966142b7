//! Mount behaviour of the `linux` driver that goes beyond what every driver must do (the conformance suite
//! covers that): the mount namespace containers start from, read-only binds are read-only all the way down,
//! bind propagation, image `VOLUME`s and `HEALTHCHECK`s, volume population, `cp` against a stopped container
//! with a read-only root, image mounts; and the daemon's root on a full disk.

mod common;
use husk_testkit::registry;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Daemon, IMAGE};

fn daemon() -> Daemon {
    Daemon::start(&["--driver", "linux"])
}

/// A host directory removed (and unmounted below) at the end of the test, even when it fails.
struct HostDir {
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl HostDir {
    fn new() -> HostDir {
        HostDir {
            dir: tempfile::Builder::new()
                .prefix("hkls")
                .tempdir_in("/tmp")
                .unwrap(),
            mounts: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn mount(&mut self, args: &[&str], target: &Path) {
        let status = Command::new("mount")
            .args(args)
            .arg(target)
            .status()
            .unwrap();
        assert!(status.success(), "mount {args:?} {}", target.display());
        self.mounts.push(target.to_path_buf());
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn parent_pid(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A container starts from the base mount namespace (husk_container::base_ns): its shim's namespace holds its
/// own mounts and none of the other containers' (roots, pinned namespaces), which stay in the daemon's; and a
/// host directory mounted after the daemon started is seen through a bind though this host's `/` propagates
/// nothing.
#[test]
fn a_container_starts_from_a_mount_namespace_without_the_other_containers_mounts() {
    let d = daemon();
    let first = d
        .husk(&[
            "run",
            "-d",
            "--name",
            "first",
            "--mode",
            "standalone",
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    let mut host = HostDir::new();
    let late = host.path().join("late");
    std::fs::create_dir_all(&late).unwrap();
    host.mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &late);
    std::fs::write(late.join("file"), "mounted after the daemon").unwrap();
    let second = d
        .husk(&[
            "run",
            "-d",
            "--name",
            "second",
            "-v",
            &format!("{}:/late:ro", late.display()),
            IMAGE,
            "sleep",
            "1000",
        ])
        .ok();
    let (first, second) = (first.trim(), second.trim());
    let shim = parent_pid(d.pid("second"));
    let shim_mounts = std::fs::read_to_string(format!("/proc/{shim}/mountinfo")).unwrap();
    assert!(
        shim_mounts.contains(&format!("/c/{second}/rootfs")),
        "{shim_mounts}"
    );
    assert!(!shim_mounts.contains(first), "{shim_mounts}");
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(host_mounts.contains(&format!("/c/{first}/rootfs")));
    assert!(host_mounts.contains(&format!("/c/{second}/rootfs")));
    assert_eq!(
        d.husk(&["exec", "second", "cat", "/late/file"]).ok(),
        "mounted after the daemon"
    );
}

fn mounted_at(path: &Path) -> bool {
    let path = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*path))
}

/// The run root's bind onto itself and the base namespace's pin stay while containers outlive their daemon, and
/// go with a daemon that stops when none is left.
#[test]
fn the_base_mount_namespace_goes_with_the_last_container() {
    let mut d = daemon();
    let pin = d.run_root.join("base.mnt");
    d.husk(&["run", "-d", "--name", "kept", IMAGE, "sleep", "1000"])
        .ok();
    assert!(mounted_at(&pin) && mounted_at(&d.run_root));
    assert!(d.terminate().success());
    assert!(mounted_at(&pin) && mounted_at(&d.run_root));
    d.spawn(&[]);
    assert_eq!(
        d.husk(&["exec", "kept", "echo", "found"]).ok().trim(),
        "found"
    );
    d.husk(&["rm", "-f", "kept"]).ok();
    assert!(d.terminate().success());
    assert!(!mounted_at(&pin) && !mounted_at(&d.run_root));
    assert!(!pin.exists());
    d.spawn(&[]);
}

/// A read-only bind is read-only below its source's own mounts too (`rro`); a read-write one is not.
#[test]
fn read_only_binds_are_read_only_below() {
    let d = daemon();
    let mut host = HostDir::new();
    let sub = host.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    host.mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], &sub);
    let src = host.path().to_str().unwrap().to_string();
    let try_write = "echo x > /b/sub/new 2>/dev/null && echo wrote || echo refused";
    for flag in [
        format!("{src}:/b:ro"),
        format!("type=bind,src={src},dst=/b,readonly"),
    ] {
        let kind = if flag.starts_with("type=") {
            "--mount"
        } else {
            "-v"
        };
        let out = d
            .husk(&["run", "--rm", kind, &flag, IMAGE, "sh", "-c", try_write])
            .ok();
        assert_eq!(out, "refused", "{flag}");
    }
    assert!(!sub.join("new").exists());
    let rw = format!("{src}:/b");
    assert_eq!(
        d.husk(&["run", "--rm", "-v", &rw, IMAGE, "sh", "-c", try_write])
            .ok(),
        "wrote"
    );
    assert!(sub.join("new").exists(), "the submount is in the container");
}

/// `rslave` binds see mounts the host makes later below the source; default (`rprivate`) ones do not.
#[test]
fn bind_propagation_is_honoured() {
    let d = daemon();
    let mut host = HostDir::new();
    let shared = host.path().join("shared");
    std::fs::create_dir_all(shared.join("late")).unwrap();
    host.mount(&["--bind", shared.to_str().unwrap()], &shared);
    let status = Command::new("mount")
        .arg("--make-shared")
        .arg(&shared)
        .status()
        .unwrap();
    assert!(status.success());
    let src = shared.to_str().unwrap();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "slave",
        "-v",
        &format!("{src}:/b:rslave"),
        // The same source again: only the rslave bind may receive, this one stays rprivate.
        "-v",
        &format!("{src}:/p"),
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "private",
        "-v",
        &format!("{src}:/b"),
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let v = d.inspect("slave");
    assert_eq!(v["Mounts"][0]["Propagation"], "rslave");
    host.mount(
        &["-t", "tmpfs", "-o", "size=1m", "tmpfs"],
        &shared.join("late"),
    );
    std::fs::write(shared.join("late/file"), "arrived").unwrap();
    assert!(Daemon::eventually(Duration::from_secs(5), || d
        .husk(&["exec", "slave", "cat", "/b/late/file"])
        .stdout
        == "arrived"));
    assert_ne!(
        d.husk(&["exec", "private", "cat", "/b/late/file"]).code,
        0,
        "a private bind does not receive the host's new mounts"
    );
    assert_ne!(
        d.husk(&["exec", "slave", "cat", "/p/late/file"]).code,
        0,
        "nor does the private bind of a container that has a slave one"
    );
    let r = d.husk(&[
        "run",
        "--rm",
        "-v",
        &format!("{src}:/b:ro,rshared"),
        IMAGE,
        "true",
    ]);
    assert!(
        r.stderr.contains("rprivate"),
        "read-only needs rprivate: {}",
        r.stderr
    );
}

/// An image with a `VOLUME /www` and a `HEALTHCHECK`, built once per test binary.
fn volume_image(d: &Daemon) -> &'static str {
    const NAME: &str = "test/busyvol:1";
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("husk-test-busyvol.{}.tar", std::process::id()));
    if !path.exists() {
        let out = Command::new(common::repo_root().join("scripts/make-busybox-image"))
            .arg(&path)
            .arg(NAME)
            .args(["--volume", "/www", "--health-cmd", "test -e /tmp/healthy"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.husk(&["image", "load", "-i", path.to_str().unwrap()])
        .ok();
    NAME
}

fn mountpoint(d: &Daemon, volume: &str) -> PathBuf {
    let v: serde_json::Value =
        serde_json::from_str(&d.husk(&["volume", "inspect", volume]).ok()).unwrap();
    PathBuf::from(v[0]["Mountpoint"].as_str().unwrap())
}

/// An image's `VOLUME` becomes an anonymous volume filled with the image's files; its `HEALTHCHECK` runs.
#[test]
fn image_volumes_and_health_checks() {
    let d = daemon();
    let image = volume_image(&d);
    d.husk(&["run", "-d", "--name", "web", image, "sleep", "1000"])
        .ok();
    let v = d.inspect("web");
    let m = &v["Mounts"][0];
    assert_eq!(
        (m["Type"].as_str(), m["Destination"].as_str()),
        (Some("volume"), Some("/www"))
    );
    let name = m["Name"].as_str().unwrap().to_string();
    assert_eq!(name.len(), 64, "anonymous volumes have IDs for names");
    assert_eq!(
        std::fs::read_to_string(mountpoint(&d, &name).join("index.html")).unwrap(),
        "hello from husk\n",
        "filled from the image"
    );
    assert_eq!(
        v["Config"]["Healthcheck"]["Test"][1],
        "test -e /tmp/healthy"
    );
    assert!(Daemon::eventually(Duration::from_secs(10), || d
        .inspect("web")["State"]["Health"]["Status"]
        == "unhealthy"));
    d.husk(&["exec", "web", "touch", "/tmp/healthy"]).ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || d
        .inspect("web")["State"]["Health"]["Status"]
        == "healthy"));
    d.husk(&["rm", "-f", "-v", "web"]).ok();
    assert!(d.husk(&["volume", "ls", "-q"]).ok().is_empty());
    d.husk(&[
        "run",
        "-d",
        "--name",
        "plain",
        "--no-healthcheck",
        image,
        "sleep",
        "1000",
    ])
    .ok();
    std::thread::sleep(Duration::from_millis(600));
    assert!(d.inspect("plain")["State"]["Health"].is_null());
}

/// A new named volume is filled from the image once (an empty volume is filled, a used one is not); `nocopy`
/// leaves it empty.
#[test]
fn volumes_are_filled_from_the_image_when_empty() {
    let d = daemon();
    d.husk(&[
        "run",
        "--rm",
        "-v",
        "site:/www",
        IMAGE,
        "sh",
        "-c",
        "cat /www/index.html; echo mine > /www/extra",
    ])
    .ok();
    assert_eq!(
        d.husk(&["run", "--rm", "-v", "site:/www", IMAGE, "ls", "/www"])
            .ok(),
        "extra\nindex.html"
    );
    d.husk(&[
        "run",
        "--rm",
        "-v",
        "site:/www",
        IMAGE,
        "rm",
        "/www/index.html",
    ])
    .ok();
    assert_eq!(
        d.husk(&["run", "--rm", "-v", "site:/www", IMAGE, "ls", "/www"])
            .ok(),
        "extra",
        "a volume with data is not filled again"
    );
    assert_eq!(
        d.husk(&["run", "--rm", "-v", "bare:/www:nocopy", IMAGE, "ls", "/www"])
            .ok(),
        ""
    );
    // The data directory takes the image directory's mode.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(mountpoint(&d, "site"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o7777, 0o755);
    let tmp = d
        .husk(&[
            "run",
            "--rm",
            "-v",
            "tmpvol:/tmp",
            IMAGE,
            "stat",
            "-c",
            "%a",
            "/tmp",
        ])
        .ok();
    assert_eq!(
        tmp, "1777",
        "the sticky /tmp of the image keeps its mode in the volume"
    );
}

/// `cp` into a stopped container with a read-only root works into its volumes only.
#[test]
fn cp_into_a_stopped_read_only_container() {
    let d = daemon();
    d.husk(&[
        "create",
        "--name",
        "ro",
        "--read-only",
        "-v",
        "data:/data",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    let host = HostDir::new();
    let file = host.path().join("f");
    std::fs::write(&file, "into the volume").unwrap();
    d.husk(&["cp", file.to_str().unwrap(), "ro:/data/f"]).ok();
    let r = d.husk(&["cp", file.to_str().unwrap(), "ro:/etc/f"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);
    d.husk(&["start", "ro"]).ok();
    assert_eq!(
        d.husk(&["exec", "ro", "cat", "/data/f"]).ok(),
        "into the volume"
    );
    assert_ne!(d.husk(&["exec", "ro", "cat", "/etc/f"]).code, 0);
}

/// `--mount type=image` shows an image read-only; `cp` reads and refuses writes through it in a stopped container
/// (the mount is made again for the view); a missing image makes nothing; removal leaves no mount.
#[test]
fn image_mounts_from_the_cli() {
    let d = daemon();
    let mount = format!("type=image,source={IMAGE},target=/img");
    assert_eq!(
        d.husk(&[
            "run",
            "--rm",
            "--mount",
            &mount,
            IMAGE,
            "cat",
            "/img/www/index.html"
        ])
        .ok(),
        "hello from husk"
    );
    let r = d.husk(&["run", "--rm", "--mount", &mount, IMAGE, "touch", "/img/x"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stdout.contains("Read-only") || r.stderr.contains("Read-only"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    d.husk(&[
        "create", "--name", "viewer", "--mount", &mount, IMAGE, "true",
    ])
    .ok();
    let host = HostDir::new();
    d.husk(&[
        "cp",
        "viewer:/img/www/index.html",
        host.path().to_str().unwrap(),
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(host.path().join("index.html")).unwrap(),
        "hello from husk\n"
    );
    let r = d.husk(&[
        "cp",
        host.path().join("index.html").to_str().unwrap(),
        "viewer:/img/www/new",
    ]);
    assert_ne!(r.code, 0, "cp wrote into an image mount");
    let missing = d.husk(&[
        "create",
        "--name",
        "missing",
        "--mount",
        "type=image,source=nothing/here:1,target=/img",
        IMAGE,
        "true",
    ]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("no such image nothing/here:1 for the image mount on /img"),
        "{}",
        missing.stderr
    );
    assert_ne!(d.husk(&["inspect", "missing"]).code, 0, "nothing made");
    d.husk(&["rm", "viewer"]).ok();
    d.assert_no_leftovers();
}

/// Health checks go on after the daemon is killed and started again.
#[test]
fn health_checks_resume_after_a_daemon_restart() {
    let mut d = daemon();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "h",
        "--health-cmd",
        "true",
        "--health-interval",
        "200ms",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    assert!(Daemon::eventually(Duration::from_secs(10), || d
        .inspect("h")["State"]["Health"]["Status"]
        == "healthy"));
    d.kill9();
    d.spawn(&[]);
    let last = |d: &Daemon| {
        d.inspect("h")["State"]["Health"]["Log"]
            .as_array()
            .and_then(|l| l.last())
            .and_then(|r| r["End"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let before = last(&d);
    assert!(
        Daemon::eventually(Duration::from_secs(10), || last(&d) != before),
        "new results after the restart"
    );
}

/// Mounts are made parents first whatever order they are given in: a volume on `/a` does not hide a bind on
/// `/a/b` given before it.
#[test]
fn nested_mounts_are_made_parents_first() {
    let d = daemon();
    let host = HostDir::new();
    std::fs::write(host.path().join("inner"), "from the bind").unwrap();
    let bind = format!("{}:/a/b", host.path().display());
    let out = d
        .husk(&[
            "run",
            "--rm",
            "-v",
            &bind,
            "-v",
            "outer:/a",
            IMAGE,
            "cat",
            "/a/b/inner",
        ])
        .ok();
    assert_eq!(out, "from the bind");
}

/// Whether `text` says the disk is full (the kernel's ENOSPC, or SQLite's "database or disk is full").
fn says_disk_full(text: &str) -> bool {
    text.contains("No space left on device") || text.contains("disk is full")
}

/// Fills the filesystem of `dir` with `dir/filler` until a write fails for want of space.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    loop {
        if let Err(e) = file.write_all(&chunk).and_then(|_| file.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return path;
        }
    }
}

/// The last number a `line N` log has so far.
fn last_line(d: &Daemon, name: &str) -> u64 {
    let tail = d.husk(&["logs", "--tail", "1", name]).ok();
    tail.trim()
        .strip_prefix("line ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered line: {tail:?}"))
}

/// The daemon's root on a full filesystem: every operation that needs space (create, run, image load, pull, cp,
/// volume create, commit) fails with an error that says the disk is full and leaves nothing behind; a running
/// container is never blocked by the log it cannot write; once space is freed everything works again, and the
/// store is whole (the daemon restarts on it and finds everything).
#[test]
fn a_full_disk_fails_operations_clearly_and_loses_nothing() {
    let mut d = Daemon::stopped(&["--driver", "linux"], "");
    std::fs::create_dir_all(&d.root).unwrap();
    let root = d.root.to_string_lossy().to_string();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs", &root])
        .status()
        .unwrap();
    assert!(status.success());
    d.spawn(&[]);
    let archive = common::busybox_archive();
    d.husk(&["image", "load", "-i", archive.to_str().unwrap()])
        .ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "talker",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.02; done",
    ])
    .ok();
    d.husk(&["volume", "create", "vol"]).ok();
    d.husk(&[
        "run",
        "-d",
        "--name",
        "vuser",
        "--network",
        "none",
        "-v",
        "vol:/data",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    // An image whose layer the store does not have, to load when the disk is full.
    d.husk(&[
        "exec",
        "talker",
        "sh",
        "-c",
        "head -c 3000000 /dev/urandom > /big",
    ])
    .ok();
    d.husk(&["commit", "talker", "bigger"]).ok();
    let saved = d.dir.path().join("bigger.tar");
    d.husk(&["image", "save", "-o", saved.to_str().unwrap(), "bigger"])
        .ok();
    d.husk(&["rmi", "bigger"]).ok();
    // The same image in a registry, to pull when the disk is full.
    let registry = registry::Registry::start(None);
    registry.push_archive(&saved, "demo/bigger:1");
    let pulled = registry.reference("demo/bigger:1");

    let filler = fill(&d.root);
    let file = d.dir.path().join("file");
    std::fs::write(&file, "data\n").unwrap();
    let copy_in = format!("{}", file.display());
    for args in [
        &["create", "--name", "c2", "--network", "none", IMAGE, "true"][..],
        &["run", "--rm", "--network", "none", IMAGE, "true"],
        &["image", "load", "-i", saved.to_str().unwrap()],
        &["pull", "-q", &pulled],
        &["cp", &copy_in, "talker:/file"],
        &["volume", "create", "vol2"],
        &["commit", "talker", "snapshot"],
    ] {
        let r = d.husk(args);
        assert_ne!(r.code, 0, "{args:?} worked on a full disk");
        assert!(says_disk_full(&r.stderr), "{args:?}: {}", r.stderr);
    }
    // A container writing to its volume meets the full disk itself.
    let r = d.husk(&["exec", "vuser", "sh", "-c", "echo x > /data/f"]);
    assert_ne!(r.code, 0);
    assert!(says_disk_full(&r.stderr), "{}", r.stderr);
    // Nothing half-made is left, and nothing else changed.
    assert_eq!(d.husk(&["ps", "-aq"]).ok().lines().count(), 2);
    assert_eq!(d.husk(&["volume", "ls", "-q"]).ok().trim(), "vol");
    let images = d.husk(&["image", "ls", "-q"]).ok();
    assert_eq!(images.lines().count(), 1, "{images}");
    let staged: Vec<_> = std::fs::read_dir(d.root.join("images/tmp"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "partial downloads left: {staged:?}");
    // The talker writes on, though its log cannot keep what it writes.
    let talker = d.pid("talker");
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::alive(talker));
    assert_eq!(d.husk(&["exec", "talker", "true"]).code, 0);
    let before = last_line(&d, "talker");

    std::fs::remove_file(&filler).unwrap();
    assert!(
        Daemon::eventually(Duration::from_secs(10), || last_line(&d, "talker") > before),
        "the log took nothing new after space was freed"
    );
    assert_eq!(
        d.husk(&["run", "--rm", "--network", "none", IMAGE, "echo", "hi"])
            .ok()
            .trim(),
        "hi"
    );
    d.husk(&["pull", "-q", &pulled]).ok();
    d.husk(&["image", "load", "-i", saved.to_str().unwrap()])
        .ok();
    d.husk(&["cp", &copy_in, "talker:/file"]).ok();
    assert_eq!(d.husk(&["exec", "talker", "cat", "/file"]).ok(), "data");
    d.husk(&["volume", "create", "vol2"]).ok();
    d.husk(&["commit", "talker", "snapshot"]).ok();

    // The store is whole: a restart finds every container, volume and image.
    assert!(d.terminate().success());
    d.spawn(&[]);
    assert_eq!(d.pid("talker"), talker, "still the same process");
    assert_eq!(d.inspect("vuser")["State"]["Status"], "running");
    let volumes = d.husk(&["volume", "ls", "-q"]).ok();
    assert_eq!(volumes.lines().collect::<Vec<_>>(), ["vol", "vol2"]);
    let sizes = d
        .husk(&[
            "run",
            "--rm",
            "--network",
            "none",
            "bigger",
            "wc",
            "-c",
            "/big",
        ])
        .ok();
    assert_eq!(sizes.trim(), "3000000 /big");
    assert_eq!(d.husk(&["image", "ls", "-q"]).ok().lines().count(), 3);
}
