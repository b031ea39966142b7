//! Helpers for the Zun API tests: a daemon with a TCP listener, plain HTTP through curl, and Zun's real clients
//! (`openstack appcontainer`, `zun`) from a virtualenv that `scripts/zun-clients` makes once.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{Daemon, Run, repo_root};

/// A free TCP port on loopback (bound and released; the daemon takes it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A daemon serving Zun's API on loopback.
pub struct ZunDaemon {
    /// The daemon.
    pub d: Daemon,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ZunDaemon {
    /// Starts a daemon with `--listen` on a free port, `--auth auth`, and `extra` flags.
    pub fn start(auth: &str, extra: &[&str]) -> ZunDaemon {
        ZunDaemon::start_with(auth, extra, "")
    }

    /// Starts a daemon as [`ZunDaemon::start`] does, with `config` as its config file's text.
    pub fn start_with(auth: &str, extra: &[&str], config: &str) -> ZunDaemon {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut flags = vec!["--listen", listen.as_str(), "--auth", auth];
        flags.extend_from_slice(extra);
        let mut d = Daemon::start_with(&flags, config, true);
        // Registries are reached only through a proxy that is not there, so nothing a test sends (a random image
        // name) can make the daemon look up or reach a host off this machine; loopback registries stay direct.
        d.kill9();
        let proxy = "http://127.0.0.1:9";
        d.spawn(&[
            ("HTTPS_PROXY", proxy),
            ("HTTP_PROXY", proxy),
            ("https_proxy", proxy),
            ("http_proxy", proxy),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ]);
        let url = format!("http://{listen}");
        let z = ZunDaemon { d, url };
        assert!(
            Daemon::eventually(std::time::Duration::from_secs(10), || z.get("/").0 == 200),
            "the Zun listener did not answer: {}",
            z.d.log()
        );
        z
    }

    /// `method path` with `headers` and an optional JSON body: (status, response headers, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&str>,
    ) -> (u16, String, String) {
        http(method, &format!("{}{path}", self.url), headers, body)
    }

    /// GET at microversion 1.40.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, _, body) = self.http(
            "GET",
            path,
            &["OpenStack-API-Version: container 1.40"],
            None,
        );
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// A request with a JSON body at microversion 1.40.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, _, text) = self.http(
            method,
            path,
            &[
                "OpenStack-API-Version: container 1.40",
                "Content-Type: application/json",
            ],
            Some(&body.to_string()),
        );
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// `openstack --os-auth-type none --os-endpoint URL/v1 ARGS`.
    pub fn osc(&self, args: &[&str]) -> Run {
        let endpoint = format!("{}/v1", self.url);
        let mut all = vec!["--os-auth-type", "none", "--os-endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        client("openstack", &all, &[])
    }
}

/// One HTTP request through curl: (status, headers, body).
pub fn http(
    method: &str,
    url: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("h");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-g", "-X", method, "-o", "-", "-D"])
        .arg(&head)
        .args(["-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]).stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("curl");
    if let Some(b) = body {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        std::fs::read_to_string(head).unwrap_or_default(),
        body.to_string(),
    )
}

/// The virtualenv with Zun's clients (made by `scripts/zun-clients` on first use).
pub fn venv() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    let out = Command::new(repo_root().join("scripts/zun-clients"))
        .env("HUSK_ZUN_VENV", target.join("zun-venv"))
        .output()
        .expect("run scripts/zun-clients");
    assert!(
        out.status.success(),
        "scripts/zun-clients failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs a client program of the virtualenv.
pub fn client(program: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let bin = venv().join("bin").join(program);
    let mut cmd = Command::new(&bin);
    cmd.args(args).stdin(Stdio::null());
    // The clients must reach only our listener, never a proxy.
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "OS_CLOUD",
        "OS_AUTH_URL",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
        .into()
}
