//! Images end to end: a real `husk daemon` driven by the real CLI against a real `docker-registry` on 127.0.0.1
//! (open, or with htpasswd basic auth). Pull and run on a clean root, pull policies, push and pull back by digest,
//! login/logout, save/load, commit, prune, `system df`, refused removals, and what `pull` prints.

mod common;
use husk_testkit::registry;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Daemon, IMAGE, busybox_archive, repo_root};
use registry::Registry;

/// A clean daemon (empty image store) with the default driver.
fn clean_daemon() -> Daemon {
    Daemon::start_with(&[], "", false)
}

/// Every image as JSON (`Id`, `RepoTags`, `RepoDigests`, ...).
fn images(d: &Daemon) -> Vec<serde_json::Value> {
    let out = d.husk(&["image", "ls", "--format", "json"]).ok();
    serde_json::from_str(&out).expect("image ls JSON")
}

fn image_id(d: &Daemon, name: &str) -> String {
    let out = d.husk(&["image", "inspect", name]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).expect("image inspect JSON");
    v[0]["Id"].as_str().expect("Id").to_string()
}

/// A busybox archive whose files are spread over two layers (another image ID than `busybox_archive`).
fn two_layer_archive() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("husk-test-busybox-2layers.tar");
    if path.exists() {
        return path;
    }
    let tmp = dir.join(format!(
        "husk-test-busybox-2layers.{}.tar",
        std::process::id()
    ));
    let out = Command::new(repo_root().join("scripts/make-busybox-image"))
        .arg(&tmp)
        .arg("test/busybox:2")
        .args(["--layers", "2"])
        .output()
        .expect("run make-busybox-image");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("publish the image");
    path
}

/// The daemon's credentials file.
fn auth_file(d: &Daemon) -> PathBuf {
    d.root.join("images").join("auth.json")
}

#[test]
fn pull_and_run_by_a_loopback_reference_on_a_clean_root() {
    let registry = Registry::start(None);
    registry.push_archive(&busybox_archive(), "demo/busybox:1");
    let d = clean_daemon();
    assert!(images(&d).is_empty(), "the root starts clean");
    let reference = registry.reference("demo/busybox:1");

    let run = d.husk(&["run", "--rm", &reference, "echo", "ok"]);
    assert_eq!(run.ok(), "ok", "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("Unable to find image"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stdout.contains("Downloaded"),
        "pull output stays off the container's stdout"
    );

    let list = images(&d);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["RepoTags"][0], reference.as_str());
    assert!(
        list[0]["RepoDigests"][0]
            .as_str()
            .is_some_and(|r| r.ends_with(&registry.digest("demo/busybox:1"))),
        "{}",
        list[0]
    );
    // A second run finds it here and pulls nothing.
    let again = d.husk(&["run", "--rm", &reference, "echo", "again"]);
    assert_eq!(again.ok(), "again");
    assert!(
        !again.stderr.contains("Unable to find image"),
        "{}",
        again.stderr
    );
    d.assert_no_leftovers();
}

#[test]
fn pull_prints_only_its_result_when_quiet_and_bars_on_a_terminal() {
    let registry = Registry::start(None);
    registry.push_archive(&two_layer_archive(), "demo/busybox:2");
    let reference = registry.reference("demo/busybox:2");

    let d = clean_daemon();
    let quiet = d.husk(&["pull", "-q", &reference]);
    assert_eq!(quiet.ok(), reference, "-q: nothing but the final line");
    assert_eq!(quiet.stdout.lines().count(), 1, "{}", quiet.stdout);

    // Not a terminal: a summary and no progress.
    d.husk(&["image", "rm", &reference]).ok();
    let plain = d.husk(&["pull", &reference]);
    let out = plain.ok();
    assert!(out.starts_with("Digest: sha256:"), "{out}");
    assert_eq!(out.lines().last(), Some(reference.as_str()));
    for word in ["Downloading", "Pull complete", "Waiting"] {
        assert!(!out.contains(word), "no progress off a terminal: {out}");
    }

    // On a terminal (script(1) gives the CLI a pty): a bar per layer, each finished.
    d.husk(&["image", "rm", &reference]).ok();
    let husk = common::husk_bin();
    let cmd = format!(
        "HUSK_HOST=unix://{} {} pull {reference}",
        d.socket.display(),
        husk.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let finished: std::collections::BTreeSet<&str> = text
        .match_indices(": Pull complete")
        .filter_map(|(i, _)| text.get(i.saturating_sub(12)..i))
        .collect();
    assert_eq!(finished.len(), 2, "one finished bar per layer: {text}");
    assert!(text.contains("Downloading"), "{text}");

    // `run` on a terminal: bars (on stderr) while it pulls, then the container's output.
    d.husk(&["image", "rm", &reference]).ok();
    let cmd = format!(
        "HUSK_HOST=unix://{} {} run --rm {reference} echo ran-ok",
        d.socket.display(),
        husk.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("run script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Pull complete"), "{text}");
    assert!(text.lines().any(|l| l.trim() == "ran-ok"), "{text}");
    assert!(text.contains(&format!("Pulling {reference}")), "{text}");
}

#[test]
fn pull_never_with_a_missing_image_fails_clearly_and_changes_nothing() {
    let registry = Registry::start(None);
    registry.push_archive(&busybox_archive(), "demo/busybox:1");
    let reference = registry.reference("demo/busybox:1");
    let d = clean_daemon();
    let run = d.husk(&[
        "run", "--pull", "never", "--name", "never", &reference, "echo", "x",
    ]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("no such image") && run.stderr.contains("never"),
        "{}",
        run.stderr
    );
    assert!(images(&d).is_empty(), "nothing pulled");
    assert_eq!(d.husk(&["ps", "-aq"]).ok(), "", "no container");
    assert_eq!(d.husk(&["sandbox", "ls", "-q"]).ok(), "", "no sandbox");
    d.assert_no_leftovers();

    let create = d.husk(&["create", "--pull", "sometimes", &reference]);
    assert_ne!(create.code, 0);
    assert!(
        create.stderr.contains("invalid pull policy"),
        "{}",
        create.stderr
    );
}

#[test]
fn pull_always_fetches_what_the_registry_has_now() {
    let registry = Registry::start(None);
    registry.push_archive(&busybox_archive(), "demo/moving:1");
    let reference = registry.reference("demo/moving:1");
    let d = clean_daemon();
    d.husk(&["pull", "-q", &reference]).ok();
    let first = image_id(&d, &reference);

    // The tag moves to another image.
    registry.push_archive(&two_layer_archive(), "demo/moving:1");
    let run = d.husk(&["run", "--rm", &reference, "true"]);
    run.ok();
    assert_eq!(
        image_id(&d, &reference),
        first,
        "missing: the image here is used"
    );
    d.husk(&["run", "--rm", "--pull", "ifnotpresent", &reference, "true"])
        .ok();
    assert_eq!(image_id(&d, &reference), first, "Zun's spelling works too");

    let run = d.husk(&["run", "--rm", "--pull", "always", &reference, "true"]);
    run.ok();
    let second = image_id(&d, &reference);
    assert_ne!(second, first, "always: pulled again");
    let layers = d.husk(&["image", "inspect", &second]).ok();
    let v: serde_json::Value = serde_json::from_str(&layers).unwrap();
    assert_eq!(v[0]["Layers"].as_array().map(Vec::len), Some(2));
    // The first image lost its name to the new one, and stays (nameless) until pruned.
    assert_eq!(images(&d).len(), 2);
}

#[test]
fn push_then_pull_back_by_digest() {
    let registry = Registry::start(None);
    let d = Daemon::start(&[]);
    let target = registry.reference("demo/pushed:1");
    d.husk(&["image", "tag", IMAGE, &target]).ok();
    let pushed = d.husk(&["push", "-q", &target]);
    let by_digest = pushed.ok();
    assert_eq!(pushed.stdout.lines().count(), 1, "{}", pushed.stdout);
    let digest = registry.digest("demo/pushed:1");
    assert_eq!(by_digest, format!("{}/demo/pushed@{digest}", registry.host));

    let other = clean_daemon();
    other.husk(&["pull", "-q", &by_digest]).ok();
    assert_eq!(
        image_id(&other, &by_digest),
        image_id(&d, IMAGE),
        "the same image came back"
    );
    assert_eq!(
        other
            .husk(&["run", "--rm", &by_digest, "echo", "back"])
            .ok(),
        "back"
    );
    // Pushing again sends no layer.
    let again = d.husk(&["push", &target]);
    assert!(
        again.ok().contains(&format!("1: digest: {digest}")),
        "{}",
        again.stdout
    );
}

#[test]
fn login_and_logout_with_basic_auth() {
    let registry = Registry::start(Some(("hk-user", "s3cret")));
    registry.push_archive(&busybox_archive(), "demo/private:1");
    let reference = registry.reference("demo/private:1");
    let d = clean_daemon();

    let anonymous = d.husk(&["pull", "-q", &reference]);
    assert_ne!(anonymous.code, 0, "the registry wants credentials");
    assert!(images(&d).is_empty());

    let wrong = d.husk(&["login", "-u", "hk-user", "-p", "nope", &registry.host]);
    assert_ne!(wrong.code, 0);
    assert!(
        wrong.stderr.contains("refused the user name or password"),
        "{}",
        wrong.stderr
    );
    let stored = std::fs::read_to_string(auth_file(&d)).unwrap_or_default();
    assert!(!stored.contains(&registry.host), "nothing stored: {stored}");

    let good = d.husk_input(
        &["login", "-u", "hk-user", "--password-stdin", &registry.host],
        b"s3cret\n",
    );
    assert_eq!(good.ok(), "Login Succeeded");
    let stored = std::fs::read_to_string(auth_file(&d)).expect("credentials file");
    assert!(stored.contains(&registry.host), "{stored}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(auth_file(&d)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "only root reads the credentials");

    assert_eq!(d.husk(&["pull", "-q", &reference]).ok(), reference);
    let target = registry.reference("demo/private:copy");
    d.husk(&["image", "tag", &reference, &target]).ok();
    d.husk(&["push", "-q", &target]).ok();

    let out = d.husk(&["logout", &registry.host]);
    assert!(
        out.ok().contains("Removing login credentials"),
        "{}",
        out.stdout
    );
    let stored = std::fs::read_to_string(auth_file(&d)).unwrap_or_default();
    assert!(!stored.contains(&registry.host), "{stored}");
    assert!(
        d.husk(&["logout", &registry.host])
            .ok()
            .contains("Not logged in")
    );
    d.husk(&["image", "rm", &reference]).ok();
    assert_ne!(
        d.husk(&["pull", "-q", &reference]).code,
        0,
        "logged out: refused again"
    );
}

#[test]
fn save_then_load_round_trip() {
    let d = Daemon::start(&[]);
    let out = d.dir.path().join("saved.tar");
    d.husk(&["save", "-o", out.to_str().unwrap(), IMAGE]).ok();
    let listing = Command::new("tar").arg("tf").arg(&out).output().unwrap();
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(
        names.contains("manifest.json") && names.contains("index.json"),
        "{names}"
    );

    let missing = d.dir.path().join("missing.tar");
    let refused = d.husk(&[
        "image",
        "save",
        "-o",
        missing.to_str().unwrap(),
        "no/such:1",
    ]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("no/such:1"), "{}", refused.stderr);
    assert!(!missing.exists(), "no archive for an unknown image");
    assert!(
        !d.dir.path().join(".missing.tar.partial").exists(),
        "no partial file left"
    );

    let other = clean_daemon();
    let loaded = other.husk(&["load", "-i", out.to_str().unwrap()]);
    assert!(
        loaded.ok().contains("Loaded image: test/busybox:1"),
        "{}",
        loaded.stdout
    );
    assert_eq!(image_id(&other, IMAGE), image_id(&d, IMAGE));
    assert_eq!(
        other.husk(&["run", "--rm", IMAGE, "echo", "loaded"]).ok(),
        "loaded"
    );

    // To stdout (not a terminal) the same bytes come out.
    let piped = Command::new(common::husk_bin())
        .args(["image", "save", IMAGE])
        .env("HUSK_HOST", format!("unix://{}", d.socket.display()))
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout, std::fs::read(&out).unwrap());
}

#[test]
fn commit_makes_an_image_with_the_containers_changes() {
    let d = Daemon::start(&[]);
    d.husk(&[
        "run",
        "-d",
        "--name",
        "writer",
        IMAGE,
        "sh",
        "-c",
        "echo hello > /greeting && rm /www/index.html && sleep 300",
    ])
    .ok();
    // Both changes made (the file written, then the other removed) before the commit.
    assert!(Daemon::eventually(Duration::from_secs(10), || {
        d.husk(&["exec", "writer", "sh", "-c", "cat /greeting; ls /www"])
            .stdout
            .trim()
            == "hello"
    }));
    let id = d
        .husk(&[
            "commit",
            "-a",
            "tester",
            "-m",
            "greeting",
            "writer",
            "demo/committed:1",
        ])
        .ok();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(
        d.inspect("writer")["State"]["Status"],
        "running",
        "thawed after the commit"
    );
    assert_eq!(image_id(&d, "demo/committed:1"), id);
    let v: serde_json::Value =
        serde_json::from_str(&d.husk(&["image", "inspect", &id]).ok()).unwrap();
    assert_eq!(v[0]["Author"], "tester");
    assert_eq!(
        v[0]["Layers"].as_array().map(Vec::len),
        Some(2),
        "one layer more than busybox"
    );

    let out = d.husk(&[
        "run",
        "--rm",
        "demo/committed:1",
        "sh",
        "-c",
        "cat /greeting; ls /www",
    ]);
    assert_eq!(
        out.ok(),
        "hello",
        "the file is there and the deleted one is gone"
    );

    // Without --pause the container is not frozen either; a stopped container commits too.
    d.husk(&["stop", "-t", "1", "writer"]).ok();
    let second = d.husk(&["commit", "--pause=false", "writer"]).ok();
    assert!(second.starts_with("sha256:"));
    assert!(d.husk(&["commit", "nosuch", "x:1"]).code != 0);
}

#[test]
fn prune_removes_unused_images_and_never_a_used_one() {
    let registry = Registry::start(None);
    registry.push_archive(&two_layer_archive(), "demo/unused:1");
    let d = Daemon::start(&[]);
    d.husk(&["run", "-d", "--name", "user", IMAGE, "sleep", "300"])
        .ok();
    let used = image_id(&d, IMAGE);
    d.husk(&["pull", "-q", &registry.reference("demo/unused:1")])
        .ok();
    // A nameless image: a commit without a name.
    let nameless = d.husk(&["commit", "user"]).ok();
    assert_eq!(images(&d).len(), 3);

    let refused = d.husk(&["image", "rm", IMAGE]);
    assert_ne!(refused.code, 0, "a used image is not removed");
    assert!(
        refused.stderr.contains("container uses"),
        "{}",
        refused.stderr
    );
    let by_id = d.husk(&["image", "rm", &used]);
    assert_ne!(by_id.code, 0);
    assert_eq!(image_id(&d, IMAGE), used);

    let pruned = d.husk(&["image", "prune", "-f"]).ok();
    assert!(pruned.contains(&format!("deleted: {nameless}")), "{pruned}");
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(images(&d).len(), 2);

    let pruned = d.husk(&["image", "prune", "-a", "-f"]).ok();
    assert!(!pruned.contains(&used), "{pruned}");
    let left = images(&d);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["Id"], used.as_str());
    // The used image's layers are all still there: the container starts again.
    d.husk(&["rm", "-f", "user"]).ok();
    assert_eq!(
        d.husk(&["run", "--rm", IMAGE, "echo", "still"]).ok(),
        "still"
    );

    // Without -f and with no answer on stdin, nothing happens.
    let asked = d.husk(&["image", "prune", "-a"]);
    asked.ok();
    assert_eq!(images(&d).len(), 1);
    d.husk(&["image", "prune", "-a", "-f"]).ok();
    assert!(images(&d).is_empty(), "nothing uses it now");
    assert!(
        std::fs::read_dir(d.root.join("images/layers"))
            .unwrap()
            .next()
            .is_none(),
        "no layer left"
    );
}

#[test]
fn system_df_counts_images_layers_and_container_changes() {
    let d = Daemon::start(&[]);
    let df = |d: &Daemon| -> serde_json::Value {
        serde_json::from_str(&d.husk(&["system", "df", "--format", "json"]).ok()).unwrap()
    };
    let before = df(&d);
    assert_eq!(before["images"]["images"].as_array().map(Vec::len), Some(1));
    assert!(
        before["images"]["layers_size"].as_u64().unwrap() > 500_000,
        "{before}"
    );
    assert_eq!(
        before["images"]["reclaimable"].as_u64(),
        Some(
            before["images"]["layers_size"].as_u64().unwrap()
                + before["images"]["blobs_size"].as_u64().unwrap()
        ),
        "nothing uses the image: all of it is reclaimable"
    );
    d.husk(&[
        "run",
        "-d",
        "--name",
        "big",
        IMAGE,
        "sh",
        "-c",
        "head -c 300000 /dev/zero > /blob && sleep 300",
    ])
    .ok();
    // The writable layer holds the file (and the empty mount points the runtime makes).
    let size_ok = |v: &serde_json::Value| {
        v["containers"][0]["size"]
            .as_u64()
            .is_some_and(|s| (300_000..310_000).contains(&s))
    };
    assert!(
        Daemon::eventually(Duration::from_secs(10), || size_ok(&df(&d))),
        "{}",
        df(&d)
    );
    let after = df(&d);
    assert_eq!(after["images"]["images"][0]["in_use"], true);
    assert_eq!(after["images"]["reclaimable"], 0, "{after}");
    assert_eq!(after["containers"][0]["active"], true);
    let table = d.husk(&["system", "df"]).ok();
    let containers = table
        .lines()
        .find(|l| l.starts_with("Containers"))
        .unwrap_or_default()
        .to_string();
    assert!(
        containers
            .split_whitespace()
            .take(3)
            .eq(["Containers", "1", "1"]),
        "{table}"
    );
    assert!(containers.contains("kB"), "{table}");
    let verbose = d.husk(&["system", "df", "-v"]).ok();
    assert!(
        verbose.contains("test/busybox:1") && verbose.contains("big"),
        "{verbose}"
    );
}

#[test]
fn daemon_config_sets_mirrors_and_limits() {
    let registry = Registry::start(None);
    registry.push_archive(&busybox_archive(), "library/husk-mirror-test:1");
    let config = format!(
        "[images.registry]\nmirrors = [\"{}\"]\nmax_concurrent_downloads = 2\n",
        registry.host
    );
    let d = Daemon::start_with(&[], &config, false);
    // A Docker Hub name comes from the mirror (nothing here reaches Docker Hub).
    assert_eq!(
        d.husk(&["pull", "-q", "husk-mirror-test:1"]).ok(),
        "docker.io/library/husk-mirror-test:1"
    );

    let tight = Daemon::start_with(&[], "[images.limits]\nmax_layer_size = 1000\n", false);
    let pull = tight.husk(&[
        "pull",
        "-q",
        &registry.reference("library/husk-mirror-test:1"),
    ]);
    assert_ne!(pull.code, 0);
    // (husk-image reports this as "unpacking stopped" for now: the unpacker's LimitExceeded error is lost.)
    assert!(pull.stderr.contains("layer sha256:"), "{}", pull.stderr);
    assert!(images(&tight).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("husk.toml");
    std::fs::write(&file, "[images]\nmirror = []\n").unwrap();
    let out = Command::new(common::husk_bin())
        .args(["daemon", "--root"])
        .arg(dir.path().join("root"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid config file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_commit_cut_short_by_a_crash_leaves_the_container_thawed() {
    let mut d = Daemon::start(&[]);
    d.husk(&["run", "-d", "--name", "busy", IMAGE, "sleep", "300"])
        .ok();
    let id = d.inspect("busy")["Id"].as_str().unwrap().to_string();
    let freezer = format!(
        "/sys/fs/cgroup/freezer/{}/{id}/freezer.state",
        d.cgroup_parent
    );
    let state = || {
        std::fs::read_to_string(&freezer)
            .unwrap_or_else(|e| panic!("{freezer}: {e}"))
            .trim()
            .to_string()
    };
    d.kill9();
    d.spawn(&[("HUSK_FAILPOINT", "commit_container:paused")]);
    let r = d.husk(&["commit", "busy", "demo/cut:1"]);
    assert_ne!(r.code, 0, "the daemon stopped mid-commit");
    assert_eq!(
        state(),
        "FROZEN",
        "the crash came while the container was frozen"
    );
    d.kill9();
    d.spawn(&[]);
    assert_eq!(state(), "THAWED", "the restarted daemon thaws it");
    assert_eq!(d.inspect("busy")["State"]["Status"], "running");
    assert_eq!(d.husk(&["exec", "busy", "echo", "alive"]).ok(), "alive");
    assert_eq!(images(&d).len(), 1, "no image was made");
}

#[test]
fn pull_picks_the_platform_asked_for() {
    let registry = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("multi");
    let out = Command::new(repo_root().join("scripts/make-multiarch-image"))
        .arg(&layout)
        .arg("1")
        .output()
        .expect("run make-multiarch-image");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    registry.push_oci_all(&layout, "demo/multi", "1");
    let reference = registry.reference("demo/multi:1");
    let d = clean_daemon();

    // The host's platform by default: the amd64 image runs.
    assert_eq!(
        d.husk(&["run", "--rm", &reference, "cat", "/ARCH"]).ok(),
        "amd64"
    );
    let arch = |d: &Daemon| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&d.husk(&["image", "inspect", &reference]).ok()).unwrap();
        v[0]["Architecture"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(arch(&d), "amd64");

    d.husk(&["pull", "-q", "--platform", "linux/arm64", &reference])
        .ok();
    assert_eq!(arch(&d), "arm64", "the name now names the arm64 image");

    let missing = d.husk(&["pull", "-q", "--platform", "linux/s390x", &reference]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("s390x"), "{}", missing.stderr);
    let bad = d.husk(&["pull", "--platform", "???", &reference]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.to_lowercase().contains("platform"),
        "{}",
        bad.stderr
    );
    assert_eq!(arch(&d), "arm64", "failed pulls changed nothing");
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` that cuts every connection once it has passed `cut_after`
/// bytes of answers (in the middle of a large layer), as a failing network does; 0 passes everything.
struct CuttingProxy {
    /// `127.0.0.1:PORT`.
    host: String,
    cut_after: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: &str) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let cut_after = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.to_string();
        let (limit, c) = (cut_after.clone(), cuts.clone());
        // Threads of a test process: they end with it.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut to_server, mut from_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                let (cut_after, cuts) = (limit.load(Ordering::SeqCst), c.clone());
                std::thread::spawn(move || {
                    let (mut server, mut client) = (server, client);
                    let mut passed = 0;
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cut_after > 0 && passed + n > cut_after {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let _ = client.write_all(&buf[..cut_after - passed]);
                            break;
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        passed += n;
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy {
            host,
            cut_after,
            cuts,
        }
    }
}

/// A registry that drops the connection in the middle of a layer: a pull resumes where the layer broke off
/// (HTTP ranges) and what runs is exactly what was pushed; a pull whose every try is cut fails with an error,
/// keeps no part of the layer and makes no image.
#[test]
fn a_layer_cut_off_mid_way_is_resumed_or_refused_and_never_kept_in_part() {
    use std::sync::atomic::Ordering;
    let registry = Registry::start(None);
    let d = Daemon::start(&[]);
    // A 3 MB layer of random bytes (it does not compress), pushed, then gone from the daemon.
    d.husk(&[
        "run",
        "--name",
        "maker",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "head -c 3000000 /dev/urandom > /big && sha256sum /big",
    ])
    .ok();
    let sum = d.husk(&["logs", "maker"]).ok();
    let pushed = registry.reference("demo/big:1");
    d.husk(&["commit", "maker", &pushed]).ok();
    d.husk(&["push", "-q", &pushed]).ok();
    d.husk(&["rm", "maker"]).ok();
    d.husk(&["rmi", &pushed]).ok();
    let proxy = CuttingProxy::start(&registry.host);
    let through = format!("{}/demo/big:1", proxy.host);

    // Every connection cut at 256 KiB: the download's tries (4) cannot bring 3 MB.
    proxy.cut_after.store(256 << 10, Ordering::SeqCst);
    let cut = d.husk(&["pull", "-q", &through]);
    assert_ne!(
        cut.code, 0,
        "a pull with its layer cut worked: {}",
        cut.stdout
    );
    assert!(proxy.cuts.load(Ordering::SeqCst) > 1);
    assert!(
        cut.stderr.contains("download failed after"),
        "{}",
        cut.stderr
    );
    assert!(!d.husk(&["image", "ls"]).ok().contains("demo/big"));
    let staged: Vec<_> = std::fs::read_dir(d.root.join("images/tmp"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "part of a layer kept: {staged:?}");

    // Cut at 1 MiB: each try brings a part, and the next one asks for the rest.
    proxy.cuts.store(0, Ordering::SeqCst);
    proxy.cut_after.store(1 << 20, Ordering::SeqCst);
    d.husk(&["pull", "-q", &through]).ok();
    assert!(proxy.cuts.load(Ordering::SeqCst) >= 2);
    let ran = d.husk(&[
        "run",
        "--rm",
        "--network",
        "none",
        &through,
        "sha256sum",
        "/big",
    ]);
    assert_eq!(ran.ok(), sum);
}
