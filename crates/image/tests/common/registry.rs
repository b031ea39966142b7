//! A real registry for tests: Debian's `docker-registry` on 127.0.0.1 with a free port and its own storage, with
//! or without htpasswd basic auth; images pushed to it with skopeo.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry, stopped and removed on drop.
pub struct Registry {
    child: Child,
    /// Storage and config directory.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// `(user, password)` when basic auth is on.
    pub creds: Option<(String, String)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Starts a registry; with `auth`, it requires that user and password.
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("husk-registry")
            .tempdir_in(super::test_tmp())
            .unwrap();
        let mut auth_section = String::new();
        if let Some((user, pass)) = auth {
            let hash = bcrypt::hash(pass, 5).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            auth_section = format!(
                "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        for _ in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth_section}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start docker-registry (apt-get install docker-registry)");
            let mut child = child;
            if wait_ready(&mut child, &host) {
                return Registry {
                    child,
                    dir,
                    host,
                    creds: auth.map(|(u, p)| (u.to_string(), p.to_string())),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start: {log}");
    }

    /// Pushes `source` (a skopeo transport reference such as `docker-archive:/x.tar` or `oci:/dir:1`) to
    /// `repo_tag` in this registry; `all` copies every platform of an index.
    pub fn push(&self, source: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {source}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `skopeo inspect --raw` of an image in this registry.
    pub fn inspect_raw(&self, repo_tag: &str) -> Vec<u8> {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The file the registry stores a blob in.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, host: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if std::net::TcpStream::connect(host).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs a repo script; returns its last printed word (an ID or digest).
pub fn script(name: &str, args: &[&Path], extra: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name);
    let out = Command::new("sh")
        .arg(path)
        .args(args)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}
