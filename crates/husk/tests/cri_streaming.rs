//! The CRI's streaming sessions as kubelet's clients drive them: Exec with and without a terminal, Attach and
//! PortForward, over SPDY/3.1 (husk's own SPDY client, on the wire Go's spdystream speaks) and over WebSocket
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io` for ports), against a real daemon on the `linux` driver.

mod common;

use std::time::Duration;

use common::Daemon;
use common::cri::{channel, container_config, read_all, run_pod_with, spdy_connect};
use futures::{SinkExt, StreamExt};
use husk_cri::spdy;
use husk_cri_api::v1 as cri;
use husk_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_attach_and_port_forward_stream_over_spdy_and_websocket() {
    let d = Daemon::start(&[]);
    let mut rt = RuntimeServiceClient::new(channel(&d).await);
    let mut config = container_config(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/w && echo hello through the forward > /tmp/w/index.html && exec httpd -f -p 8080 -h /tmp/w",
        ],
    );
    config.stdin = false;
    let (pod, web) = run_pod_with(&mut rt, "streams", config).await;

    // Attach over SPDY to a shell made with stdin_once: what we type runs, our end of input ends it.
    let mut shell = container_config("shell", &["sh"]);
    shell.stdin = true;
    shell.stdin_once = true;
    let shell = common::cri::start_in_pod(
        &mut rt,
        &pod,
        shell,
        Some(common::cri::pod_config("streams")),
    )
    .await;
    // Exec without a terminal over SPDY v4: stdout and stderr apart, success as a Status.
    let url = rt
        .exec(cri::ExecRequest {
            container_id: web.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo out; echo err >&2".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (session, chosen) = spdy_connect(&url, "v4.channel.k8s.io").await;
    assert_eq!(chosen, "v4.channel.k8s.io");
    let mut error = session.open(&[("streamType", "error")]).await.unwrap();
    let stdout = session.open(&[("streamType", "stdout")]).await.unwrap();
    let stderr = session.open(&[("streamType", "stderr")]).await.unwrap();
    error.shutdown().await.unwrap();
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    let status: serde_json::Value = serde_json::from_str(&read_all(&mut error).await).unwrap();
    assert_eq!(status["status"], "Success", "{status}");

    // A URL serves once.
    let again = plain_get(&url).await;
    assert!(again.starts_with("HTTP/1.1 404"), "{again}");

    // Exec with a terminal and stdin over SPDY: the resize reaches the terminal, the exit code comes back.
    let url = rt
        .exec(cri::ExecRequest {
            container_id: web.clone(),
            cmd: vec!["sh".into()],
            tty: true,
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (session, _) = spdy_connect(&url, "v4.channel.k8s.io").await;
    let mut error = session.open(&[("streamType", "error")]).await.unwrap();
    let mut stdin = session.open(&[("streamType", "stdin")]).await.unwrap();
    let stdout = session.open(&[("streamType", "stdout")]).await.unwrap();
    let mut resize = session.open(&[("streamType", "resize")]).await.unwrap();
    error.shutdown().await.unwrap();
    resize
        .write_all(br#"{"Width":123,"Height":45}"#)
        .await
        .unwrap();
    // Give the size a moment to land before the shell reads it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin.write_all(b"stty size; exit 3\n").await.unwrap();
    let out = read_all(stdout).await;
    assert!(out.contains("45 123"), "{out:?}");
    let status: serde_json::Value = serde_json::from_str(&read_all(&mut error).await).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

    // The same over WebSocket v5.
    let url = rt
        .exec(cri::ExecRequest {
            container_id: web.clone(),
            cmd: vec!["sh".into()],
            tty: true,
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, answer) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    let frame = |channel: u8, data: &[u8]| {
        let mut m = vec![channel];
        m.extend_from_slice(data);
        Message::Binary(m.into())
    };
    ws.send(frame(4, br#"{"Width":77,"Height":22}"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(frame(0, b"stty size; exit 4\n")).await.unwrap();
    let mut out = String::new();
    let mut status = serde_json::Value::Null;
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(data) = m
                && let Some((&ch, payload)) = data.split_first()
            {
                match ch {
                    1 => out.push_str(&String::from_utf8_lossy(payload)),
                    3 => status = serde_json::from_slice(payload).unwrap(),
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the WebSocket session ended");
    assert!(out.contains("22 77"), "{out:?}");
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");

    let url = rt
        .attach(cri::AttachRequest {
            container_id: shell.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (session, _) = spdy_connect(&url, "v4.channel.k8s.io").await;
    let mut error = session.open(&[("streamType", "error")]).await.unwrap();
    let mut stdin = session.open(&[("streamType", "stdin")]).await.unwrap();
    let stdout = session.open(&[("streamType", "stdout")]).await.unwrap();
    let stderr = session.open(&[("streamType", "stderr")]).await.unwrap();
    error.shutdown().await.unwrap();
    stdin.write_all(b"echo hello from attach\n").await.unwrap();
    stdin.shutdown().await.unwrap();
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    assert_eq!((out.as_str(), err.as_str()), ("hello from attach\n", ""));
    let status: serde_json::Value = serde_json::from_str(&read_all(&mut error).await).unwrap();
    assert_eq!(status["status"], "Success", "{status}");

    // PortForward over SPDY: one connection per (error, data) pair, to the pod's localhost.
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (session, chosen) = spdy_connect(&url, "portforward.k8s.io").await;
    assert_eq!(chosen, "portforward.k8s.io");
    for request in ["0", "1"] {
        let headers = |kind| {
            [
                ("streamType", kind),
                ("port", "8080"),
                ("requestID", request),
            ]
        };
        let mut error = session.open(&headers("error")).await.unwrap();
        let mut data = session.open(&headers("data")).await.unwrap();
        error.shutdown().await.unwrap();
        data.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        // Our side is done, as a local client that sent its request and half-closed.
        data.shutdown().await.unwrap();
        let page = read_all(&mut data).await;
        assert!(page.contains("hello through the forward"), "{page:?}");
        assert_eq!(read_all(&mut error).await, "");
    }
    // A port nobody listens on: the error stream says so.
    let headers = |kind| [("streamType", kind), ("port", "9"), ("requestID", "2")];
    let mut error = session.open(&headers("error")).await.unwrap();
    let _data = session.open(&headers("data")).await.unwrap();
    error.shutdown().await.unwrap();
    let message = read_all(&mut error).await;
    assert!(message.contains("port 9"), "{message:?}");
    session.close().await;

    // PortForward over WebSocket: the port announced on both channels, then the page.
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut request = format!("{}?port=8080", url.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut announced = Vec::new();
    while announced.len() < 2 {
        if let Some(Ok(Message::Binary(m))) = ws.next().await {
            announced.push(m.to_vec());
        }
    }
    assert_eq!(announced, vec![vec![0, 0x90, 0x1f], vec![1, 0x90, 0x1f]]);
    let mut get = vec![0u8];
    get.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    ws.send(Message::Binary(get.into())).await.unwrap();
    let mut page = String::new();
    let read = async {
        while !page.contains("hello through the forward") {
            match ws.next().await {
                Some(Ok(Message::Binary(m))) if m.first() == Some(&0) => {
                    page.push_str(&String::from_utf8_lossy(&m[1..]))
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the page came in time");
    assert!(page.contains("hello through the forward"), "{page:?}");

    // PortForward as client-go does it over WebSocket: the SPDY session tunnelled in binary messages.
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut request = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "SPDY/3.1+portforward.k8s.io".parse().unwrap(),
    );
    let (ws, answer) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        answer.headers()["sec-websocket-protocol"],
        "SPDY/3.1+portforward.k8s.io"
    );
    let (session, _incoming) = spdy::Session::client(tunnel(ws));
    let headers = |kind| [("streamType", kind), ("port", "8080"), ("requestID", "0")];
    let mut error = session.open(&headers("error")).await.unwrap();
    let mut data = session.open(&headers("data")).await.unwrap();
    error.shutdown().await.unwrap();
    data.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    data.shutdown().await.unwrap();
    let page = read_all(&mut data).await;
    assert!(page.contains("hello through the forward"), "{page:?}");
    assert_eq!(read_all(&mut error).await, "");
    session.close().await;

    // Bad requests: a stopped container cannot be exec'd into, an unknown pod has no ports.
    let missing = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nope".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let none = rt
        .exec(cri::ExecRequest {
            container_id: web.clone(),
            cmd: vec!["true".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(none.code(), tonic::Code::InvalidArgument);
    assert!(none.message().contains("stdin"), "{}", none.message());

    // The pod still takes new containers after all these sessions.
    let late = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("late", &["sleep", "60"])),
            sandbox_config: Some(common::cri::pod_config("streams")),
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}"))
        .into_inner()
        .container_id;
    assert!(!late.is_empty());

    common::cri::stop_and_remove_pod(&mut rt, &pod).await;
}

/// A plain GET of `url`; returns the answer's head.
async fn plain_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tcp.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    read_all(tcp).await
}

/// A WebSocket client connection as a byte stream of binary messages (client-go's tunnelling connection).
fn tunnel(
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let (mut from_bytes, mut to_bytes) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        let inbound = async {
            while let Some(Ok(m)) = source.next().await {
                if let Message::Binary(data) = m {
                    if to_bytes.write_all(&data).await.is_err() {
                        break;
                    }
                } else if m.is_close() {
                    break;
                }
            }
            let _ = to_bytes.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 << 10];
            while let Ok(n) = from_bytes.read(&mut buf).await {
                if n == 0
                    || sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                {
                    break;
                }
            }
            let _ = sink.close().await;
        };
        tokio::join!(inbound, outbound);
    });
    theirs
}
