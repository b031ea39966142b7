//! Decoding in the host-agent protocol (`husk-agent-protocol`): the virtio-serial handshake's marker reader, every
//! gRPC message type (prost), the JSON documents the agent reads from its requests (`config_json`,
//! `resources_json`) and the host reads from its answers, and a gRPC status turned back into a husk error.
//!
//! Checks that nothing panics, and: a marker the reader returns is really in the stream; a marker after any bytes
//! that cannot start one is found with its kind and nonce; a message that decodes re-encodes to bytes that decode to
//! the same message; a JSON document that parses survives being written and read again.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use husk_agent_protocol::handshake::{Kind, MAGIC, NONCE_LEN, marker, read_marker};
use husk_agent_protocol::proto::*;
use husk_agent_protocol::status::error_from_status;
use husk_core::{ContainerConfig, PathStat, Resources};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Runs a future that never waits (its reader is a byte slice).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("reading from a byte slice waited"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn handshake(data: &[u8]) {
    let mut reader = data;
    if let Ok((kind, nonce)) = now(read_marker(&mut reader)) {
        assert!(
            contains(data, &marker(kind, &nonce)),
            "read_marker returned a marker that is not in the stream"
        );
    }
    // Bytes without MAGIC's first byte cannot start a marker: the marker after them is the one found.
    let mut nonce = [0u8; NONCE_LEN];
    for (n, b) in nonce.iter_mut().zip(data) {
        *n = *b;
    }
    let kind = [Kind::Hello, Kind::Ready, Kind::Start][data.len() % 3];
    let mut stream: Vec<u8> = data.iter().copied().filter(|b| *b != MAGIC[0]).collect();
    stream.extend_from_slice(&marker(kind, &nonce));
    stream.extend_from_slice(data);
    let mut reader = &stream[..];
    assert_eq!(
        now(read_marker(&mut reader)).ok(),
        Some((kind, nonce)),
        "the marker after the noise was missed"
    );
}

fn round_trip<M: Message + Default>(data: &[u8]) -> Option<M> {
    let message = M::decode(data).ok()?;
    let bytes = message.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    // Compared as bytes: a float field may hold a NaN, which equals nothing.
    assert_eq!(
        again.encode_to_vec(),
        bytes,
        "a message changed when encoded and decoded again"
    );
    Some(message)
}

fn json_round_trip<
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
>(
    text: &str,
) {
    let Ok(value) = serde_json::from_str::<T>(text) else {
        return;
    };
    let written = serde_json::to_string(&value).expect("serialises");
    let again: T = serde_json::from_str(&written).expect("what was written reads back");
    assert_eq!(
        again, value,
        "a JSON document changed when written and read again"
    );
}

fn messages(data: &[u8]) {
    round_trip::<Empty>(data);
    round_trip::<VersionRequest>(data);
    round_trip::<VersionResponse>(data);
    round_trip::<Process>(data);
    if let Some(req) = round_trip::<CreateContainerRequest>(data) {
        json_round_trip::<ContainerConfig>(&req.config_json);
    }
    round_trip::<StartRequest>(data);
    round_trip::<StartResponse>(data);
    round_trip::<ExecRequest>(data);
    round_trip::<SignalRequest>(data);
    round_trip::<WaitRequest>(data);
    round_trip::<WaitResponse>(data);
    round_trip::<StdioIn>(data);
    round_trip::<StdioOut>(data);
    round_trip::<ResizeRequest>(data);
    if let Some(req) = round_trip::<UpdateLimitsRequest>(data) {
        json_round_trip::<Resources>(&req.resources_json);
    }
    round_trip::<StatsRequest>(data);
    round_trip::<StatsResponse>(data);
    round_trip::<ContainerInfo>(data);
    round_trip::<ListResponse>(data);
    round_trip::<RemoveRequest>(data);
    round_trip::<PauseRequest>(data);
    round_trip::<TopRow>(data);
    round_trip::<TopResponse>(data);
    round_trip::<PathRequest>(data);
    round_trip::<PathStatResponse>(data);
    round_trip::<ArchiveChunk>(data);
    round_trip::<ExtractRequest>(data);
}

fn status(data: &[u8]) {
    let Some((&code, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (field, message) = text.split_once('\n').unwrap_or(("", &text));
    let mut s = tonic::Status::new(tonic::Code::from(i32::from(code) % 20), message);
    if let Ok(value) = field.parse() {
        s.metadata_mut().insert("husk-field", value);
    }
    let e = error_from_status("Fuzz", &s);
    assert!(!e.message.is_empty() || message.is_empty());
}

fuzz_target!(|data: &[u8]| {
    handshake(data);
    messages(data);
    if let Ok(text) = std::str::from_utf8(data) {
        json_round_trip::<ContainerConfig>(text);
        json_round_trip::<Resources>(text);
        json_round_trip::<PathStat>(text);
    }
    status(data);
});
