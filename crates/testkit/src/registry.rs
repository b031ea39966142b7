//! A real registry for tests: Debian's `docker-registry` on 127.0.0.1 with a free port and its own storage; open,
//! with htpasswd basic auth, or with bearer tokens from a token server of its own. Images get into it with
//! skopeo.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the registry authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// Anyone may pull and push.
    None,
    /// htpasswd basic auth with this user and password.
    Basic(&'a str, &'a str),
    /// Bearer tokens from a token server (started here) that wants this user and password.
    Token(&'a str, &'a str),
}

/// A running registry, stopped and removed on drop.
pub struct Registry {
    child: Child,
    token_server: Option<TokenServer>,
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
    /// Starts a registry; with `auth`, it requires that user and password (htpasswd basic auth).
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        match auth {
            Some((u, p)) => Self::start_with(Auth::Basic(u, p)),
            None => Self::start_with(Auth::None),
        }
    }

    /// Starts a registry with the given authentication.
    pub fn start_with(mode: Auth<'_>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("husk-registry")
            .tempdir_in(crate::test_tmp())
            .unwrap();
        let mut auth_section = String::new();
        let mut token_server = None;
        let auth = match mode {
            Auth::None => None,
            Auth::Basic(user, pass) => {
                let hash = bcrypt::hash(pass, 5).unwrap();
                std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
                let path = dir.path().join("htpasswd");
                auth_section = format!(
                    "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                    path.display()
                );
                Some((user, pass))
            }
            Auth::Token(user, pass) => {
                let server = TokenServer::start(dir.path(), user, pass);
                auth_section = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: husk-test\n    issuer: husk-test-issuer\n    rootcertbundle: {}\n",
                    server.host,
                    dir.path().join("token-cert.pem").display()
                );
                token_server = Some(server);
                Some((user, pass))
            }
        };
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
                    token_server,
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

    /// `HOST/repo_tag`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// Copies a `docker save` archive into this registry as `repo_tag`.
    pub fn push_archive(&self, archive: &Path, repo_tag: &str) {
        self.push(
            &format!("docker-archive:{}", archive.display()),
            repo_tag,
            false,
        );
    }

    /// Copies every platform of the OCI layout `layout` (index entry `tag`) into this registry as `repo:tag`.
    pub fn push_oci_all(&self, layout: &Path, repo: &str, tag: &str) {
        self.push(
            &format!("oci:{}:{tag}", layout.display()),
            &format!("{repo}:{tag}"),
            true,
        );
    }

    /// The manifest digest the registry has for `repo_tag`.
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
        drop(self.token_server.take());
    }
}

/// A token server for the registry's bearer auth: it hands one long-lived JWT (signed with a key made by openssl,
/// its certificate in the token's `x5c` header and in the registry's root bundle) to clients that send the right
/// user and password, and 401 to everyone else.
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub host: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    if let Some(data) = input {
        child.stdin.take().unwrap().write_all(data).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TokenServer {
    fn start(dir: &Path, user: &str, pass: &str) -> TokenServer {
        use base64::Engine as _;
        let (key, cert) = (dir.join("token-key.pem"), dir.join("token-cert.pem"));
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=husk-test-token",
                "-keyout",
                key.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            None,
        );
        let der = openssl(
            &["x509", "-in", cert.to_str().unwrap(), "-outform", "DER"],
            None,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [base64::engine::general_purpose::STANDARD.encode(&der)]});
        let claims = serde_json::json!({
            "iss": "husk-test-issuer", "sub": user, "aud": "husk-test", "exp": now + 3600, "nbf": now - 60, "iat": now, "jti": "husk-test",
            "access": [{"type": "repository", "name": "private/bb", "actions": ["pull", "push"]}],
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = openssl(
            &["dgst", "-sha256", "-sign", key.to_str().unwrap()],
            Some(signing_input.as_bytes()),
        );
        let token = format!("{signing_input}.{}", b64url(&signature));
        let expected = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_flag = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in listener.incoming() {
                if stop_flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                let authorized = text
                    .lines()
                    .any(|l| l.trim() == format!("authorization: {expected}").to_ascii_lowercase());
                let response = if authorized {
                    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 3600}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = conn.write_all(response.as_bytes());
            }
        });
        TokenServer {
            host,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&self.host);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
