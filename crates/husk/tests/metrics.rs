//! `husk daemon --metrics-listen`: a real daemon on the `linux` driver runs, creates, stops and pulls, then
//! `/metrics` is scraped and read with a Prometheus text parser and checked against what was done; CRI calls
//! are counted by method and code. Without the flag (and with the CRI off), the daemon listens on no TCP port
//! at all.

mod common;
use husk_testkit::registry;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{Daemon, IMAGE, busybox_archive};
use prometheus_parse::{Sample, Scrape, Value};
use registry::Registry;

/// A loopback address with a port free right now.
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").to_string()
}

/// The body of `GET /metrics` at `address` (HTTP/1.0: the answer ends with the connection).
fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("connect to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: husk\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

fn parse(text: &str) -> Vec<Sample> {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus' text format")
        .samples
}

/// The value of a counter, gauge or untyped sample.
fn number(sample: &Sample) -> f64 {
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{} is not a number: {other:?}", sample.metric),
    }
}

/// The samples of `metric` whose labels include every one of `labels`.
fn find<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The sum of the values of `metric` with `labels`.
fn total(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, metric, labels).into_iter().map(number).sum()
}

#[test]
fn a_scrape_shows_what_the_daemon_did() {
    let registry = Registry::start(None);
    registry.push_archive(&busybox_archive(), "demo/busybox:1");
    let address = free_address();
    let d = Daemon::start(&["--metrics-listen", &address]);

    d.husk(&["run", "-d", "--name", "web", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["create", "--name", "idle", IMAGE, "true"]).ok();
    d.husk(&["run", "-d", "--name", "done", IMAGE, "sleep", "1000"])
        .ok();
    d.husk(&["stop", "-t", "1", "done"]).ok();
    d.husk(&["pull", "-q", &registry.reference("demo/busybox:1")])
        .ok();
    let missing = d.husk(&["pull", &registry.reference("demo/none:1")]);
    assert_ne!(missing.code, 0, "a pull of nothing fails");

    let started = Instant::now();
    let text = scrape(&address);
    eprintln!(
        "scrape with 3 containers (1 running): {:?}, {} bytes",
        started.elapsed(),
        text.len()
    );
    let samples = parse(&text);

    for (state, want) in [("running", 1.0), ("created", 1.0), ("exited", 1.0)] {
        assert_eq!(
            total(
                &samples,
                "husk_containers",
                &[("state", state), ("driver", "linux")]
            ),
            want,
            "{state} containers in\n{text}"
        );
    }
    // `run` made a sandbox of its own for each of web and done; `create` one for idle.
    assert_eq!(
        total(&samples, "husk_sandboxes", &[("driver", "linux")]),
        3.0,
        "{text}"
    );

    let operation = |name: &str| {
        total(
            &samples,
            "husk_driver_operation_duration_seconds_count",
            &[("driver", "linux"), ("operation", name), ("result", "ok")],
        )
    };
    assert_eq!(operation("create"), 3.0, "{text}");
    assert_eq!(operation("start"), 2.0, "{text}");
    assert_eq!(operation("stop"), 1.0, "{text}");
    let histogram = find(
        &samples,
        "husk_driver_operation_duration_seconds",
        &[
            ("driver", "linux"),
            ("operation", "create"),
            ("result", "ok"),
        ],
    );
    assert!(
        matches!(&histogram[..], [s] if matches!(&s.value, Value::Histogram(b) if b.len() > 5)),
        "create latencies are a histogram with buckets: {histogram:?}"
    );

    // The CLI's requests, by route template: `run` posts to /husk/v1/containers/run, `create` to
    // /husk/v1/containers.
    assert_eq!(
        total(
            &samples,
            "husk_api_requests_total",
            &[("route", "/husk/v1/containers/run"), ("method", "POST")]
        ),
        2.0,
        "{text}"
    );
    assert!(
        total(
            &samples,
            "husk_api_requests_total",
            &[("route", "/husk/v1/containers"), ("method", "POST")]
        ) >= 1.0,
        "{text}"
    );
    // prometheus-parse reads no label value holding `}`: templates with parameters are checked in the text.
    assert!(
        text.lines().any(|l| l.starts_with(
            r#"husk_api_requests_total{route="/husk/v1/containers/{id}/stop",method="POST",status="2"#
        )),
        "{text}"
    );
    assert!(
        !text.contains("/containers/web") && !text.contains("/containers/done"),
        "raw paths are no labels:\n{text}"
    );

    assert_eq!(
        total(&samples, "husk_image_pulls_total", &[("result", "ok")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(&samples, "husk_image_pulls_total", &[("result", "error")]),
        1.0,
        "{text}"
    );
    assert!(
        total(&samples, "husk_image_pull_bytes_total", &[]) > 0.0,
        "{text}"
    );

    assert!(
        total(&samples, "process_resident_memory_bytes", &[]) > 0.0,
        "{text}"
    );
    assert!(total(&samples, "process_open_fds", &[]) > 0.0, "{text}");

    let web = [("name", "web"), ("driver", "linux")];
    assert!(
        total(&samples, "husk_container_memory_usage_bytes", &web) > 0.0,
        "{text}"
    );
    assert_eq!(
        find(&samples, "husk_container_cpu_usage_seconds_total", &web).len(),
        1,
        "{text}"
    );
    assert!(
        find(
            &samples,
            "husk_container_memory_usage_bytes",
            &[("name", "done")]
        )
        .is_empty(),
        "a stopped container has no usage series:\n{text}"
    );
    assert_eq!(
        total(&samples, "husk_container_stats_failures", &[]),
        0.0,
        "{text}"
    );

    d.husk(&["rm", "-f", "web", "idle", "done"]).ok();
    d.assert_no_leftovers();
}

/// Inodes of the TCP sockets listening on this host (`/proc/net/tcp{,6}`, state 0A).
fn listening_socket_inodes() -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(3) == Some(&"0A")
                && let Some(inode) = fields.get(9)
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    inodes
}

#[test]
fn without_the_flag_the_daemon_listens_on_no_tcp_port() {
    // The CRI's streaming server listens on TCP (loopback, a free port): off here, so any TCP listener would be
    // one the flag's absence should have prevented.
    let d = Daemon::start_with(&[], "cri_socket = \"\"\n", false);
    let listening = listening_socket_inodes();
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.daemon_pid())).unwrap();
    let own: Vec<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().to_string();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .filter(|inode| listening.contains(inode))
        .collect();
    assert!(
        own.is_empty(),
        "the daemon listens on TCP sockets {own:?} without --metrics-listen (or --listen)"
    );
    assert!(!d.log().contains("Prometheus metrics"), "{}", d.log());
}

#[test]
fn check_config_refuses_a_bad_metrics_address_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("husk.toml");
    std::fs::write(&file, "metrics_listen = \"localhost:9518\"\n").unwrap();
    let check = |extra: &[&str]| {
        std::process::Command::new(common::husk_bin())
            .args(["daemon", "--check-config", "--config"])
            .arg(&file)
            .args(extra)
            .output()
            .expect("run husk")
    };
    let bad = check(&[]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("metrics_listen: invalid address \"localhost:9518\": use IP:PORT"),
        "{stderr}"
    );
    // The flag wins over the file, and is checked the same way.
    let good = check(&["--metrics-listen", "127.0.0.1:9518"]);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

#[tokio::test]
async fn cri_calls_are_counted_by_method_and_code() {
    use husk_cri_api::v1 as cri;
    use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;

    let address = free_address();
    let d = Daemon::start_with(&["--metrics-listen", &address], "", false);
    let mut runtime = RuntimeServiceClient::new(common::cri::channel(&d).await);
    runtime
        .version(cri::VersionRequest::default())
        .await
        .expect("Version");
    let missing = runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: "no-such-container".into(),
            verbose: false,
        })
        .await
        .expect_err("the status of no container");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let text = tokio::task::spawn_blocking(move || scrape(&address))
        .await
        .unwrap();
    let samples = parse(&text);
    assert_eq!(
        total(
            &samples,
            "husk_cri_requests_total",
            &[("method", "Version"), ("code", "OK")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(
            &samples,
            "husk_cri_requests_total",
            &[("method", "ContainerStatus"), ("code", "NotFound")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(
            &samples,
            "husk_cri_request_duration_seconds_count",
            &[("method", "Version"), ("code", "OK")]
        ),
        1.0,
        "{text}"
    );
}
