//! Interactive attach and exec over WebSocket, as Zun's clients do them: the URL the API hands back is served
//! by husk; keystrokes go in as binary messages, output comes back as messages, terminal sizes go through the
//! REST API.

mod common;
mod zun;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Daemon, IMAGE};
use serde_json::json;
use zun::{ZunDaemon, venv};

/// A WebSocket client (python's websocket-client, as zunclient uses): connects to `url`, sends each input
/// after a pause, and prints everything received until the server closes or `seconds` pass.
const CLIENT: &str = r#"
import sys, time, websocket
url, seconds = sys.argv[1], float(sys.argv[2])
inputs = sys.argv[3:]
try:
    ws = websocket.create_connection(url, subprotocols=["binary", "base64"], timeout=seconds)
except Exception as e:
    print("CONNECT-FAILED", e); sys.exit(3)
for i in inputs:
    time.sleep(0.3)
    ws.send_binary(i.encode())
end = time.time() + seconds
out = b""
while time.time() < end:
    try:
        m = ws.recv()
    except Exception:
        break
    if not m:
        break
    out += m if isinstance(m, bytes) else m.encode()
sys.stdout.write(out.decode(errors="replace"))
ws.close()
"#;

fn ws_client(url: &str, seconds: f64, inputs: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.args(["-c", CLIENT, url, &seconds.to_string()])
        .args(inputs);
    let out = cmd.output().expect("python websocket client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A daemon serving Zun's API with container `shell` (an interactive `sh` on a terminal) running.
fn daemon_with_a_shell() -> ZunDaemon {
    let z = ZunDaemon::start("none", &[]);
    let (status, c) = z.send(
        "POST",
        "/v1/containers?run=true",
        &json!({"name": "shell", "image": IMAGE, "command": ["sh"], "interactive": true, "tty": true}),
    );
    assert_eq!(status, 202, "{c}");
    assert!(Daemon::eventually(Duration::from_secs(5), || z
        .get("/v1/containers/shell")
        .1["status"]
        == "Running"));
    z
}

#[test]
fn attach_and_exec_over_websocket() {
    let z = daemon_with_a_shell();

    // Attach: the URL points at this listener; what we type reaches the shell, its output comes back.
    let (status, url) = z.get("/v1/containers/shell/attach");
    assert_eq!(status, 200, "{url}");
    let url = url.as_str().unwrap().to_string();
    assert!(
        url.starts_with(&z.url.replacen("http://", "ws://", 1)),
        "{url}"
    );
    let (code, out) = ws_client(&url, 3.0, &["echo attached-$((40+2))\n"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("attached-42"), "{out}");
    // The token was for one connection; detaching left the shell running.
    let (code, out) = ws_client(&url, 1.0, &[]);
    assert_eq!(code, 3, "a used token is refused: {out}");
    assert_eq!(z.get("/v1/containers/shell").1["status"], "Running");
    assert_eq!(
        z.send(
            "POST",
            "/v1/containers/shell/resize?h=40&w=120",
            &json!(null)
        )
        .0,
        200
    );
    let (_, url) = z.get("/v1/containers/shell/attach");
    let (_, out) = ws_client(url.as_str().unwrap(), 3.0, &["stty size\n"]);
    assert!(
        out.contains("40 120"),
        "resize reached the main process's terminal: {out}"
    );

    // Interactive exec: nothing runs until the client connects; a size set before applies at start.
    let (status, e) = z.send(
        "POST",
        "/v1/containers/shell/execute?command=sh&run=false&interactive=true",
        &json!(null),
    );
    assert_eq!(status, 200, "{e}");
    assert!(e["output"].is_null() && e["exit_code"].is_null(), "{e}");
    let exec_id = e["exec_id"].as_str().unwrap().to_string();
    let proxy = e["proxy_url"].as_str().unwrap().to_string();
    assert!(proxy.contains(&exec_id));
    let resize = format!("/v1/containers/shell/execute_resize?exec_id={exec_id}&h=30&w=100");
    assert_eq!(z.send("POST", &resize, &json!(null)).0, 200);
    let (code, out) = ws_client(&proxy, 5.0, &["stty size; echo exec-$((6*7))\n", "exit\n"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("30 100"),
        "the size given before the start: {out}"
    );
    assert!(out.contains("exec-42"), "{out}");
    // Unknown exec IDs and malformed ones.
    let other = "0".repeat(64);
    assert_eq!(
        z.send(
            "POST",
            &format!("/v1/containers/shell/execute_resize?exec_id={other}&h=1&w=1"),
            &json!(null)
        )
        .0,
        404
    );
    assert_eq!(
        z.send(
            "POST",
            "/v1/containers/shell/execute_resize?exec_id=xyz&h=1&w=1",
            &json!(null)
        )
        .0,
        400
    );
    // A bad token, a plain HTTP request to the WebSocket URL.
    let (code, _) = ws_client(
        &format!(
            "{}/websocket?token=nope&uuid=x",
            z.url.replacen("http", "ws", 1)
        ),
        1.0,
        &[],
    );
    assert_eq!(code, 3);
    assert_eq!(z.get("/websocket?token=x&uuid=y").0, 400);
    // A container without stdin cannot be attached to.
    z.send(
        "POST",
        "/v1/containers?run=true",
        &json!({"name": "plain", "image": IMAGE, "command": ["sleep", "100"]}),
    );
    assert_eq!(z.get("/v1/containers/plain/attach").0, 400);
    let v = ["OpenStack-API-Version: container 1.12"];
    assert_eq!(
        z.http("DELETE", "/v1/containers/plain?stop=True", &v, None)
            .0,
        204
    );
    assert_eq!(
        z.http("DELETE", "/v1/containers/shell?stop=True", &v, None)
            .0,
        204
    );
    assert_eq!(
        z.http("DELETE", "/v1/containers/gone?stop=True", &[], None)
            .0,
        400,
        "stop arrived in 1.12"
    );
}

#[test]
fn zun_exec_interactive_with_the_real_client() {
    let z = ZunDaemon::start("keystone", &[]);
    z.d.husk(&["project", "create", "p1"]).ok();
    z.d.husk(&[
        "user",
        "create",
        "alice",
        "--password",
        "alice-pw-1",
        "--project",
        "p1",
    ])
    .ok();
    let bypass = format!("{}/v1", z.url);
    let auth_url = format!("{}/identity/v3", z.url);
    let base = [
        "--bypass-url",
        bypass.as_str(),
        "--os-auth-url",
        auth_url.as_str(),
        "--os-username",
        "alice",
        "--os-password",
        "alice-pw-1",
        "--os-project-name",
        "p1",
        "--os-user-domain-name",
        "Default",
        "--os-project-domain-name",
        "Default",
    ];
    let zun = |args: &[&str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(args);
        zun::client("zun", &all, &[])
    };
    zun(&["run", "--name", "web", IMAGE, "sleep", "1000"]).ok();
    let mut child = Command::new(venv().join("bin/zun"))
        .args(base)
        .args(["exec", "-i", "web", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stdin.write_all(b"echo interactive-$((20+22))\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stdin.write_all(b"exit\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("interactive-42"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    zun(&["delete", "--stop", "web"]).ok();
}

/// A WebSocket client that sends one binary message of `size` bytes and reports how the server answered: the
/// close frame's status code (`CLOSED <code>`), `ENDED` when the connection ended without one, or `OPEN` when it
/// was still open after `seconds`.
const OVERSIZE_CLIENT: &str = r#"
import sys, websocket
url, size, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ws = websocket.create_connection(url, subprotocols=["binary", "base64"], timeout=seconds)
try:
    ws.send_binary(b"x" * size)
except Exception:
    print("ENDED"); sys.exit(0)
while True:
    try:
        opcode, data = ws.recv_data(control_frame=True)
    except websocket.WebSocketTimeoutException:
        print("OPEN"); sys.exit(0)
    except Exception:
        print("ENDED"); sys.exit(0)
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        print("CLOSED", int.from_bytes(data[:2], "big") if len(data) >= 2 else 0); sys.exit(0)
"#;

/// A WebSocket message over the 1 MiB limit ends that connection (with "message too big", 1009, where the
/// server can say so) and nothing else: the container runs on, the daemon serves, a new attach works.
#[test]
fn an_oversized_websocket_message_ends_only_its_connection() {
    let z = daemon_with_a_shell();
    let (_, url) = z.get("/v1/containers/shell/attach");
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            OVERSIZE_CLIENT,
            url.as_str().unwrap(),
            &(2 << 20).to_string(),
            "10",
        ])
        .output()
        .expect("python websocket client");
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        said == "CLOSED 1009" || said == "ENDED",
        "the server kept a connection past its message limit: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(z.get("/v1/containers/shell").1["status"], "Running");
    let (_, url) = z.get("/v1/containers/shell/attach");
    let (code, out) = ws_client(url.as_str().unwrap(), 3.0, &["echo still-$((40+2))\n"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("still-42"), "{out}");
}
