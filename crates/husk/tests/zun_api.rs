//! Zun's REST API against a real daemon: versions and microversions, errors, validation, containers through
//! HTTP and through the real `openstack appcontainer` client.

mod common;
mod zun;

use common::IMAGE;
use serde_json::json;
use zun::ZunDaemon;

#[test]
fn versions_headers_and_errors() {
    let z = ZunDaemon::start("none", &[]);
    let (status, doc) = z.get("/");
    assert_eq!(status, 200);
    assert_eq!(doc["versions"][0]["max_version"], "1.40");
    assert_eq!(doc["default_version"]["min_version"], "1.1");

    let (status, headers, _) = z.http("GET", "/v1/containers", &[], None);
    assert_eq!(status, 200);
    let h = headers.to_ascii_lowercase();
    assert!(
        h.contains("openstack-api-version: container 1.1"),
        "absent header means 1.1: {h}"
    );
    assert!(
        h.contains("openstack-api-minimum-version: container 1.1"),
        "{h}"
    );
    assert!(
        h.contains("openstack-api-maximum-version: container 1.40"),
        "{h}"
    );
    let (_, headers, _) = z.http(
        "GET",
        "/v1/containers",
        &["OpenStack-API-Version: container latest"],
        None,
    );
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("openstack-api-version: container 1.40")
    );

    for bad in ["container 1.41", "container 0.9", "container one"] {
        let (status, _, body) = z.http(
            "GET",
            "/v1/containers",
            &[&format!("OpenStack-API-Version: {bad}")],
            None,
        );
        assert_eq!(status, 406, "{bad}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["status"], 406);
        assert_eq!(v["errors"][0]["max_version"], "1.40");
    }

    // Zun's error body, a trailing slash, unknown parameters.
    let (status, headers, body) = z.http(
        "GET",
        "/v1/containers/nope",
        &["OpenStack-API-Version: container 1.40"],
        None,
    );
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let e = &v["errors"][0];
    assert_eq!(e["status"], 404);
    assert!(e["code"].as_str().unwrap().starts_with("container."));
    assert!(e["detail"].as_str().unwrap().contains("nope"));
    assert!(e["links"].is_array() && e["title"].is_string());
    // The body names the request as its header does.
    let request_id = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-openstack-request-id")
                .then(|| value.trim().to_string())
        })
        .expect("x-openstack-request-id");
    assert!(request_id.starts_with("req-"), "{request_id}");
    assert_eq!(e["request_id"], request_id.as_str());
    assert_eq!(z.get("/v1/containers/").0, 200);
    let (status, v) = z.get("/v1/containers?colour=blue");
    assert_eq!(status, 400);
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    assert_eq!(z.get("/v1/nothing-here").0, 404);
    // Rename through POST ended at 1.13.
    let (status, _, _) = z.http(
        "POST",
        "/v1/containers/x/rename?name=y",
        &["OpenStack-API-Version: container 1.14"],
        None,
    );
    assert_eq!(status, 406);
}

#[test]
fn bad_input_is_refused_with_the_field_named_and_changes_nothing() {
    let z = ZunDaemon::start("none", &[]);
    for (body, field) in [
        (json!({"image": IMAGE, "memory": "2"}), "memory"),
        (json!({"image": IMAGE, "memory": 100000}), "memory"),
        (json!({"image": IMAGE, "cpu": 99}), "cpu"),
        (json!({"image": IMAGE, "name": "-x"}), "name"),
        (
            json!({"image": IMAGE, "restart_policy": {"Name": "maybe"}}),
            "restart_policy",
        ),
        (
            json!({"image": IMAGE, "restart_policy": {"MaximumRetryCount": 1}}),
            "Name",
        ),
        (
            json!({"image": IMAGE, "image_pull_policy": "often"}),
            "image_pull_policy",
        ),
        (json!({"image": IMAGE, "surprise": 1}), "surprise"),
        (
            json!({"image": IMAGE, "environment": {"A": 1}}),
            "environment",
        ),
        (json!({"image": IMAGE, "command": "sh"}), "command"),
        (json!({"name": "x1"}), "image"),
        (json!({"image": "no/such:image"}), "image"),
        (json!({"image": "127.0.0.1:9/no/such:image"}), "image"),
    ] {
        let (status, v) = z.send("POST", "/v1/containers", &body);
        assert_eq!(status, 400, "{body}: {v}");
        let detail = v["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{body}: {detail}");
    }
    // A field newer than the requested microversion.
    let (status, _, body) = z.http(
        "POST",
        "/v1/containers",
        &[
            "OpenStack-API-Version: container 1.4",
            "Content-Type: application/json",
        ],
        Some(&json!({"image": IMAGE, "runtime": "runc"}).to_string()),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("runtime"));
    // Not JSON, not a JSON object, too big.
    let (status, _, _) = z.http(
        "POST",
        "/v1/containers",
        &["Content-Type: text/plain"],
        Some("{}"),
    );
    assert_eq!(status, 415);
    let (status, _, _) = z.http(
        "POST",
        "/v1/containers",
        &["Content-Type: application/json"],
        Some("[1,2"),
    );
    assert_eq!(status, 400);
    // A body declared over the limit is refused from its Content-Length alone, before any of it is sent (a
    // client sending the whole body first could see the connection reset under the answer).
    let declared = [
        "Content-Type: application/json".to_string(),
        format!("Content-Length: {}", 17 << 20),
    ];
    assert_eq!(
        raw_status(&z, "POST /v1/containers HTTP/1.1", &declared),
        413
    );
    // Nothing was created by any of it.
    let (_, list) = z.get("/v1/containers");
    assert_eq!(list["containers"].as_array().unwrap().len(), 0, "{list}");
}

/// The status of the answer to a request head sent raw over TCP: `request_line`, a `Host` header, `headers`
/// (each `Name: value`) and the empty line, and nothing after it (a body the head declares is never sent);
/// 0 when the connection closed with no status line.
fn raw_status(z: &ZunDaemon, request_line: &str, headers: &[String]) -> u16 {
    use std::io::{Read, Write};
    let address = z.url.strip_prefix("http://").expect("an http URL");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{request_line}\r\nHost: {address}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(head.as_bytes());
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") && matches!(stream.read(&mut byte), Ok(1)) {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line)
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn containers_over_http_states_and_pages() {
    let z = ZunDaemon::start("none", &[]);
    let (status, headers, body) = z.http(
        "POST",
        "/v1/containers?run=True",
        &["OpenStack-API-Version: container 1.40", "Content-Type: application/json"],
        Some(&json!({"name": "web", "image": IMAGE, "command": ["sh", "-c", "echo out; echo err >&2; sleep 1000"],
                      "environment": {"A": "1"}, "labels": {"app": "x"}, "memory": 64, "cpu": 0.5}).to_string()),
    );
    assert_eq!(status, 202, "{body}");
    assert!(
        headers.to_ascii_lowercase().contains("location: "),
        "{headers}"
    );
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["status"], "Running");
    assert_eq!(c["memory"], "64");
    assert_eq!(c["cpu"], 0.5);
    assert_eq!(c["environment"]["A"], "1");
    assert_eq!(c["labels"]["app"], "x");
    let uuid = c["uuid"].as_str().unwrap().to_string();
    assert_eq!(z.get(&format!("/v1/containers/{uuid}")).1["name"], "web");

    // Zun's allowed-state table: 409 with Zun's message.
    let (status, v) = z.send("POST", "/v1/containers/web/start", &json!(null));
    assert_eq!(status, 409, "{v}");
    assert!(
        v["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("in Running state")
    );
    let (status, _) = z.send("DELETE", "/v1/containers/web", &json!(null));
    assert_eq!(status, 409);

    // Output and execution.
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(5),
        || { z.get("/v1/containers/web/logs?stdout=True&stderr=False").1 == json!("out\n") }
    ));
    assert_eq!(
        z.get("/v1/containers/web/logs?stdout=False&stderr=True").1,
        json!("err\n")
    );
    let (status, v) = z.send(
        "POST",
        "/v1/containers/web/execute?command=%22sh%22+%22-c%22+%22echo+hi%3B+exit+3%22",
        &json!(null),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["output"], "hi\n");
    assert_eq!(v["exit_code"], 3);
    // A command the container lacks is the command's failure, with the shell's code, as Zun reports it.
    let (status, v) = z.send(
        "POST",
        "/v1/containers/web/execute?command=nonexist",
        &json!(null),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["exit_code"], 127, "{v}");
    assert_eq!(
        v["output"],
        "exec: \"nonexist\": executable file not found in $PATH\n"
    );
    let (status, top) = z.get("/v1/containers/web/top");
    assert_eq!(status, 200);
    assert!(
        top["Titles"].as_array().unwrap().iter().any(|t| t == "PID"),
        "{top}"
    );

    // Pause, stop, delete.
    assert_eq!(
        z.send("POST", "/v1/containers/web/pause", &json!(null)).0,
        202
    );
    assert_eq!(z.get("/v1/containers/web").1["status"], "Paused");
    assert_eq!(
        z.send("POST", "/v1/containers/web/stop", &json!(null)).0,
        409,
        "Zun stops only running containers"
    );
    assert_eq!(
        z.send("POST", "/v1/containers/web/unpause", &json!(null)).0,
        202
    );
    assert_eq!(
        z.send("POST", "/v1/containers/web/stop?timeout=1", &json!(null))
            .0,
        202
    );
    let stopped = z.get("/v1/containers/web").1;
    assert_eq!(stopped["status"], "Stopped");
    assert!(
        stopped["status_detail"]
            .as_str()
            .unwrap()
            .starts_with("Exited("),
        "{stopped}"
    );

    // Pages of a list.
    for i in 0..3 {
        let (status, v) = z.send(
            "POST",
            "/v1/containers",
            &json!({"name": format!("p{i}"), "image": IMAGE, "command": ["true"]}),
        );
        assert_eq!(status, 202, "{v}");
    }
    let (_, page) = z.get("/v1/containers?limit=2&sort_key=name&sort_dir=asc");
    let names: Vec<&str> = page["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p0", "p1"]);
    let next = page["next"].as_str().expect("a next link").to_string();
    let path = next.strip_prefix(&z.url).unwrap();
    let (_, page2) = z.get(path);
    let names: Vec<&str> = page2["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p2", "web"]);
    assert!(page2["next"].is_null());
    let (_, filtered) = z.get("/v1/containers?status=Stopped");
    assert_eq!(filtered["containers"].as_array().unwrap().len(), 1);

    let (status, _, _) = z.http(
        "DELETE",
        "/v1/containers/web?force=False&stop=True&all_projects=False",
        &["OpenStack-API-Version: container 1.40"],
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(z.get("/v1/containers/web").0, 404);
    for i in 0..3 {
        assert_eq!(
            z.http("DELETE", &format!("/v1/containers/p{i}"), &[], None)
                .0,
            204
        );
    }
    z.d.assert_no_leftovers();
}

#[test]
fn openstack_appcontainer_works_unchanged() {
    let z = ZunDaemon::start("none", &[]);
    let run = z.osc(&[
        "appcontainer",
        "run",
        "--name",
        "web",
        IMAGE,
        "sh",
        "-c",
        "echo hello-from-zun; sleep 1000",
    ]);
    assert!(run.stdout.contains("web"), "{} {}", run.stdout, run.stderr);
    let list = z.osc(&["appcontainer", "list", "-f", "json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["name"], "web");
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(5),
        || {
            z.osc(&["appcontainer", "logs", "web"])
                .stdout
                .contains("hello-from-zun")
        }
    ));
    let exec = z.osc(&["appcontainer", "exec", "web", "echo", "inside"]);
    assert!(
        exec.stdout.contains("inside"),
        "{} {}",
        exec.stdout,
        exec.stderr
    );
    let show = z.osc(&["appcontainer", "show", "web", "-f", "json"]).ok();
    let show: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["status"], "Running");
    z.osc(&["appcontainer", "stop", "web"]).ok();
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(15),
        || { z.get("/v1/containers/web").1["status"] == "Stopped" }
    ));
    z.osc(&["appcontainer", "delete", "web"]).ok();
    assert_eq!(z.get("/v1/containers/web").0, 404);
}

#[test]
fn the_listener_can_come_from_the_config_file_and_the_unix_socket_serves_zun_too() {
    let port = zun::free_port();
    let config = format!("listen = \"127.0.0.1:{port}\"\nauth = \"none\"\n");
    let d = common::Daemon::start_with(&[], &config, true);
    let url = format!("http://127.0.0.1:{port}");
    assert!(common::Daemon::eventually(
        std::time::Duration::from_secs(10),
        || zun::http("GET", &format!("{url}/"), &[], None).0 == 200
    ));
    // Without --listen or `listen`, no TCP port is opened; the unix socket answers Zun's API for local root.
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&d.socket)
        .args([
            "-H",
            "OpenStack-API-Version: container 1.40",
            "http://husk/v1/containers",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["containers"].is_array(), "{v}");
}

#[test]
fn archives_go_in_and_out_as_zun_clients_send_them() {
    let z = ZunDaemon::start("none", &[]);
    let (status, v) = z.send(
        "POST",
        "/v1/containers?run=true",
        &json!({"name": "box", "image": IMAGE, "command": ["sleep", "1000"]}),
    );
    assert_eq!(status, 202, "{v}");
    // In: a tar made by tar(1), base64 in JSON (1.25 and later).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello archive\n").unwrap();
    let tar = std::process::Command::new("tar")
        .args(["-C"])
        .arg(dir.path())
        .args(["-cf", "-", "hello.txt"])
        .output()
        .unwrap()
        .stdout;
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(&tar);
    let (status, v) = z.send(
        "POST",
        "/v1/containers/box/put_archive?path=/tmp",
        &json!({"data": data}),
    );
    assert_eq!(status, 200, "{v}");
    let (_, out) = z.send(
        "POST",
        "/v1/containers/box/execute?command=cat+/tmp/hello.txt",
        &json!(null),
    );
    assert_eq!(out["output"], "hello archive\n");
    // Out: the same file back, with its stat.
    let (status, v) = z.get("/v1/containers/box/get_archive?path=/tmp/hello.txt");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["stat"]["name"], "hello.txt");
    assert_eq!(v["stat"]["size"], 14);
    let tar = base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap())
        .unwrap();
    let listing = dir.path().join("back.tar");
    std::fs::write(&listing, &tar).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-xOf")
        .arg(&listing)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello archive\n");
    // Bad input: not base64, a missing path, a path that is not there.
    assert_eq!(
        z.send(
            "POST",
            "/v1/containers/box/put_archive?path=/tmp",
            &json!({"data": "%%%"})
        )
        .0,
        400
    );
    assert_eq!(z.get("/v1/containers/box/get_archive").0, 400);
    assert_eq!(z.get("/v1/containers/box/get_archive?path=/nope").0, 404);
    // The real client: openstack appcontainer cp, both ways.
    let local = dir.path().join("from-container");
    let src = "box:/tmp/hello.txt".to_string();
    z.osc(&["appcontainer", "cp", &src, local.to_str().unwrap()])
        .ok();
    let got = std::fs::read_to_string(&local)
        .or_else(|_| std::fs::read_to_string(local.join("hello.txt")));
    assert_eq!(got.unwrap(), "hello archive\n");
    let v12 = ["OpenStack-API-Version: container 1.12"];
    assert_eq!(
        z.http("DELETE", "/v1/containers/box?force=True", &v12, None)
            .0,
        204
    );
}

#[test]
fn stats_report_usage_block_and_network_io() {
    let z = ZunDaemon::start("none", &[]);
    let (status, _, body) = z.http(
        "POST",
        "/v1/containers?run=True",
        &["OpenStack-API-Version: container 1.40", "Content-Type: application/json"],
        Some(&json!({"name": "io", "image": IMAGE, "memory": 64,
                      "command": ["sh", "-c", "dd if=/dev/zero of=/written bs=1M count=2 oflag=direct 2>/dev/null; sleep 1000"]})
            .to_string()),
    );
    assert_eq!(status, 202, "{body}");
    // Zun's shape: "BLOCK I/O(B)" and "NET I/O(B)" as "read/written" byte counts.
    let mut stats = json!(null);
    let written = common::Daemon::eventually(std::time::Duration::from_secs(15), || {
        let (status, v) = z.get("/v1/containers/io/stats");
        assert_eq!(status, 200, "{v}");
        stats = v;
        stats["BLOCK I/O(B)"]
            .as_str()
            .and_then(|b| b.split_once('/'))
            .and_then(|(_, w)| w.parse::<u64>().ok())
            .is_some_and(|w| w >= 2 << 20)
    });
    assert!(written, "{stats}");
    assert_eq!(stats["CONTAINER"], "io");
    assert_eq!(stats["MEM LIMIT(MiB)"], 64.0);
    let net = stats["NET I/O(B)"].as_str().unwrap();
    assert!(net.split('/').all(|n| n.parse::<u64>().is_ok()), "{stats}");
}

/// Request heads have limits: one header too large, or too many headers, get 431 (or the connection closed),
/// never the daemon's memory; an ordinary request on the next connection is served.
#[test]
fn oversized_request_heads_are_refused() {
    let z = ZunDaemon::start("none", &[]);
    let huge = vec![format!("X-Huge: {}", "a".repeat(1 << 20))];
    let many: Vec<String> = (0..500).map(|i| format!("X-Many-{i}: {i}")).collect();
    for (what, headers) in [("one huge header", huge), ("500 headers", many)] {
        let status = raw_status(&z, "GET /v1/containers HTTP/1.1", &headers);
        assert!(status == 431 || status == 0, "{what}: {status}");
    }
    let ordinary = ["OpenStack-API-Version: container 1.40".to_string()];
    assert_eq!(
        raw_status(&z, "GET /v1/containers HTTP/1.1", &ordinary),
        200
    );
}
