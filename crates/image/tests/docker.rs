//! Archives written by a real `docker save` load into husk with the same image IDs. The test starts its own dockerd
//! (own data root, exec root, pidfile and socket in a temporary directory, no networking) and stops it after.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestStore;
use husk_image::{ImageConfig, LoadOptions};

/// A private dockerd, stopped and cleaned up on drop.
struct Dockerd {
    child: Child,
    dir: PathBuf,
    socket: String,
}

impl Dockerd {
    fn start() -> Option<Dockerd> {
        if Command::new("dockerd").arg("--version").output().is_err() {
            eprintln!("dockerd not installed: docker save test skipped");
            return None;
        }
        let dir = PathBuf::from(format!("/tmp/hid-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = format!("unix://{}/docker.sock", dir.display());
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args([
                "-H",
                &socket,
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let d = Dockerd { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if d.docker(&["version"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
            {
                return Some(d);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "dockerd did not start: {}",
            std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default()
        );
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.args(["-H", &self.socket])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, args: &[&str]) {
        let out = self.docker(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Anything dockerd left mounted under its directories goes before the directory does.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let prefix = self.dir.display().to_string();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|t| t.starts_with(&prefix))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = husk_fs::unmount_rootfs(Path::new(t));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_busybox(out: &Path, name: &str, layers: usize) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make-busybox-image");
    let output = Command::new("sh")
        .arg(script)
        .arg(out)
        .arg(name)
        .args(["--layers", &layers.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_save_archives_load_with_the_same_ids() {
    let Some(dockerd) = Dockerd::start() else {
        return;
    };
    let t = TestStore::new(ImageConfig::default());
    let one = make_busybox(&t.dir.path().join("one.tar"), "husk.local/one:1", 1);
    let three = make_busybox(&t.dir.path().join("three.tar"), "husk.local/three:3", 3);
    for f in ["one.tar", "three.tar"] {
        dockerd.run(&["load", "-i", t.dir.path().join(f).to_str().unwrap()]);
    }
    let saved = t.dir.path().join("saved.tar");
    dockerd.run(&[
        "save",
        "-o",
        saved.to_str().unwrap(),
        "husk.local/one:1",
        "husk.local/three:3",
    ]);

    let file = tokio::fs::File::open(&saved).await.unwrap();
    let mut loaded = t.store.load(file, &LoadOptions::default()).await.unwrap();
    loaded.sort_by(|a, b| a.names.cmp(&b.names));
    assert_eq!(loaded.len(), 2);
    assert_eq!(
        (loaded[0].id.as_str(), loaded[0].names.as_slice()),
        (one.as_str(), &["husk.local/one:1".to_string()][..])
    );
    assert_eq!(
        (loaded[1].id.as_str(), loaded[1].names.as_slice()),
        (three.as_str(), &["husk.local/three:3".to_string()][..])
    );
    let image = t.store.resolve("husk.local/three:3").unwrap();
    assert_eq!(image.layers.len(), 3);
    let rootfs = t.store.rootfs_layers(&image).unwrap();
    assert!(rootfs.layers[0].join("bin/busybox").is_file());
    assert_eq!(image.config.cmd, vec!["sh"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn husk_save_output_loads_into_docker() {
    let Some(dockerd) = Dockerd::start() else {
        return;
    };
    let t = TestStore::new(ImageConfig::default());
    let id = make_busybox(&t.dir.path().join("bb.tar"), "husk.local/saved:2", 2);
    let file = tokio::fs::File::open(t.dir.path().join("bb.tar"))
        .await
        .unwrap();
    t.store.load(file, &LoadOptions::default()).await.unwrap();
    let saved = t.dir.path().join("husk-saved.tar");
    t.store
        .save(
            &["husk.local/saved:2".to_string()],
            tokio::fs::File::create(&saved).await.unwrap(),
        )
        .await
        .unwrap();
    dockerd.run(&["load", "-i", saved.to_str().unwrap()]);
    let out = dockerd
        .docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "husk.local/saved:2",
        ])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), id);
}
