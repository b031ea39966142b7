//! The daemon's structured logs: JSON lines (`--log-format json`) in which everything done for one API request
//! or CRI call, down to the drivers' blocking work, carries that request's `request_id`; the ID given in
//! `X-Request-Id` comes back in the answer; and under systemd the journal gets each field as its own.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

use common::Daemon;
use common::cri::{channel, pod_config};
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;

/// Sends one HTTP/1.1 request to the daemon's socket; the answer's status, headers (names in lower case) and
/// body.
fn http(
    d: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = UnixStream::connect(&d.socket).expect("connect to the API socket");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: husk\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every line of the daemon's log, each a JSON object (panics naming a line that is not).
fn json_lines(d: &Daemon) -> Vec<serde_json::Value> {
    d.log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

/// The lines logged inside the span of request `id`.
fn lines_of<'a>(lines: &'a [serde_json::Value], id: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == id))
        })
        .collect()
}

fn has(lines: &[&serde_json::Value], target: &str, message: &str) -> bool {
    lines.iter().any(|l| {
        l["target"].as_str().is_some_and(|t| t.starts_with(target))
            && l["fields"]["message"] == message
    })
}

#[test]
fn an_api_requests_id_is_in_every_line_logged_for_it() {
    let d = Daemon::start(&["--log-format", "json", "--log-level", "debug"]);
    let (status, headers, body) = http(
        &d,
        "POST",
        "/husk/v1/containers",
        &[("X-Request-Id", "test-123")],
        r#"{"name": "logged", "image": "test/busybox:1", "command": ["sleep", "60"]}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(header(&headers, "x-request-id"), Some("test-123"));
    // Not a Zun route: no OpenStack header.
    assert_eq!(header(&headers, "x-openstack-request-id"), None);

    let lines = json_lines(&d);
    assert!(
        lines
            .iter()
            .all(|l| l["timestamp"].is_string() && l["level"].is_string()),
        "{}",
        d.log()
    );
    let ours = lines_of(&lines, "test-123");
    let request = ours
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("no request line: {}", d.log()));
    assert_eq!(request["span"]["route"], "/husk/v1/containers");
    assert_eq!(request["span"]["method"], "POST");
    assert_eq!(request["fields"]["status"], 201);
    // The linux driver's own line, and the CNI plugins run from its blocking network setup.
    assert!(has(&ours, "husk_linux", "container created"), "{}", d.log());
    assert!(has(&ours, "husk_net", "cni plugin ran"), "{}", d.log());

    // Zun's routes answer with OpenStack's header too; an ID of ours when the caller sends none.
    let (_, headers, _) = http(&d, "GET", "/v1", &[], "");
    let id = header(&headers, "x-request-id").unwrap();
    assert!(id.starts_with("req-"), "{id}");
    assert_eq!(header(&headers, "x-openstack-request-id"), Some(id));

    d.husk(&["rm", "-f", "logged"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_calls_id_is_in_every_line_logged_for_it() {
    let d = Daemon::start(&["--log-format", "json", "--log-level", "debug"]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let answer = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("logged")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap();
    let id = answer
        .metadata()
        .get("x-request-id")
        .expect("x-request-id in the answer")
        .to_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("req-") && id.len() == 40, "{id}");
    let pod = answer.into_inner().pod_sandbox_id;

    let lines = json_lines(&d);
    let ours = lines_of(&lines, &id);
    let request = ours
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .unwrap_or_else(|| panic!("no request line for {id}: {}", d.log()));
    assert_eq!(
        request["span"]["method"],
        "/runtime.v1.RuntimeService/RunPodSandbox"
    );
    assert_eq!(request["fields"]["grpc_status"], 0);
    assert!(has(&ours, "husk_net", "cni plugin ran"), "{}", d.log());

    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
}

/// The fields of one datagram of the journal's native protocol: `KEY=value\n`, or `KEY\n`, a 64-bit
/// little-endian length and the value, then `\n`.
fn journal_fields(mut data: &[u8]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    while let Some(end) = data.iter().position(|&b| b == b'\n' || b == b'=') {
        let key = String::from_utf8_lossy(&data[..end]).into_owned();
        if data[end] == b'=' {
            let rest = &data[end + 1..];
            let stop = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            fields.push((key, String::from_utf8_lossy(&rest[..stop]).into_owned()));
            data = rest.get(stop + 1..).unwrap_or_default();
        } else {
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.push((key, String::from_utf8_lossy(value).into_owned()));
            data = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

#[test]
fn under_systemd_the_journal_gets_the_fields() {
    use std::os::unix::fs::MetadataExt;
    let mut d = Daemon::stopped(&["--log-level", "debug"], "");
    // The journal's socket, ours: the daemon runs in a mount namespace with our directory over /run/systemd.
    let systemd = d.dir.path().join("systemd");
    std::fs::create_dir_all(systemd.join("journal")).unwrap();
    let journal = UnixDatagram::bind(systemd.join("journal/socket")).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let daemon = d.command();
    // As systemd says where stderr goes: the device and inode of the daemon's log file.
    let log = std::fs::metadata(d.dir.path().join("daemon.log")).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /run/systemd && exec "$@""#)
        .arg(&systemd)
        .arg(daemon.get_program())
        .args(daemon.get_args())
        .env("JOURNAL_STREAM", format!("{}:{}", log.dev(), log.ino()))
        .stdout(
            std::fs::File::options()
                .append(true)
                .open(d.dir.path().join("daemon.log"))
                .unwrap(),
        )
        .stderr(
            std::fs::File::options()
                .append(true)
                .open(d.dir.path().join("daemon.log"))
                .unwrap(),
        );
    d.adopt(cmd.spawn().unwrap());
    d.wait_until_up();

    let (status, headers, _) = http(
        &d,
        "GET",
        "/husk/v1/info",
        &[("X-Request-Id", "jtest-1")],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-request-id"), Some("jtest-1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = Vec::new();
    let found = loop {
        assert!(
            Instant::now() < deadline,
            "no journal entry for jtest-1: {seen:#?}"
        );
        let Ok(n) = journal.recv(&mut buf) else {
            continue;
        };
        let fields = journal_fields(&buf[..n]);
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        if get("REQUEST_ID").as_deref() == Some("jtest-1")
            && get("MESSAGE").as_deref() == Some("request")
        {
            break fields;
        }
        seen.push(fields);
    };
    let get = |k: &str| {
        found
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("SYSLOG_IDENTIFIER"), Some("husk"));
    assert_eq!(get("ROUTE"), Some("/husk/v1/info"));
    assert_eq!(get("METHOD"), Some("GET"));
    assert_eq!(get("STATUS"), Some("200"));
    // DEBUG as journald's "informational".
    assert_eq!(get("PRIORITY"), Some("6"));
    // Nothing of it on stderr.
    assert!(!d.log().contains("jtest-1"), "{}", d.log());
}
