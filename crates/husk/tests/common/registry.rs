//! A real registry for the product's tests: Debian's `docker-registry` on 127.0.0.1 with a free port, its own
//! storage in a temporary directory, open or with htpasswd basic auth; stopped and removed on drop. Images get
//! into it with skopeo (from `docker save` archives) or with `husk push`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    child: Child,
    /// Storage, config and log (kept for the registry's lifetime).
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// `(user, password)` with basic auth.
    pub creds: Option<(String, String)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

fn ready(child: &mut Child, host: &str) -> bool {
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

impl Registry {
    /// Starts a registry; with `auth` it wants that user and password (htpasswd, bcrypt).
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("hkreg")
            .tempdir_in("/tmp")
            .expect("registry dir");
        let mut auth_section = String::new();
        if let Some((user, pass)) = auth {
            let hash = bcrypt::hash(pass, 5).expect("bcrypt");
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
            auth_section = format!(
                "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                path.display()
            );
        }
        // A port found free can be taken before the registry binds it: try a few.
        for _ in 0..5 {
            let host = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{auth_section}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start docker-registry (apt-get install docker-registry)");
            if ready(&mut child, &host) {
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

    /// `HOST/repo_tag`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// Copies a `docker save` archive into this registry as `repo_tag`, with skopeo.
    pub fn push_archive(&self, archive: &Path, repo_tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://{}", self.reference(repo_tag)))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Copies every platform of the OCI layout `layout` (index entry `tag`) into this registry as `repo:tag`.
    pub fn push_oci_all(&self, layout: &Path, repo: &str, tag: &str) {
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--all",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!(
                "docker://{}",
                self.reference(&format!("{repo}:{tag}"))
            ))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy --all {}: {}",
            layout.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The manifest digest the registry has for `repo_tag` (skopeo inspect).
    pub fn digest(&self, repo_tag: &str) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--creds={u}:{p}"));
        }
        let out = cmd
            .arg(format!("docker://{}", self.reference(repo_tag)))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
