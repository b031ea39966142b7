//! Generates the agent service's client and server from a Rust description (tonic-build's manual builder), so no
//! `protoc` is needed. The messages are plain `prost` derives in `src/proto.rs`.

use tonic_build::manual::{Builder, Method, Service};

/// (name, route, input, output, client streaming, server streaming)
const METHODS: &[(&str, &str, &str, &str, bool, bool)] = &[
    (
        "version",
        "Version",
        "VersionRequest",
        "VersionResponse",
        false,
        false,
    ),
    (
        "create_container",
        "CreateContainer",
        "CreateContainerRequest",
        "Empty",
        false,
        false,
    ),
    (
        "start",
        "Start",
        "StartRequest",
        "StartResponse",
        false,
        false,
    ),
    ("exec", "Exec", "ExecRequest", "StartResponse", false, false),
    ("signal", "Signal", "SignalRequest", "Empty", false, false),
    ("wait", "Wait", "WaitRequest", "WaitResponse", false, false),
    ("stdio", "Stdio", "StdioIn", "StdioOut", true, true),
    ("resize", "Resize", "ResizeRequest", "Empty", false, false),
    (
        "update_limits",
        "UpdateLimits",
        "UpdateLimitsRequest",
        "Empty",
        false,
        false,
    ),
    (
        "stats",
        "Stats",
        "StatsRequest",
        "StatsResponse",
        false,
        false,
    ),
    ("list", "List", "Empty", "ListResponse", false, false),
    (
        "remove_container",
        "RemoveContainer",
        "RemoveRequest",
        "Empty",
        false,
        false,
    ),
    ("pause", "Pause", "PauseRequest", "Empty", false, false),
    ("shutdown", "Shutdown", "Empty", "Empty", false, false),
    ("top", "Top", "StatsRequest", "TopResponse", false, false),
    (
        "stat_path",
        "StatPath",
        "PathRequest",
        "PathStatResponse",
        false,
        false,
    ),
    (
        "archive",
        "Archive",
        "PathRequest",
        "ArchiveChunk",
        false,
        true,
    ),
    ("extract", "Extract", "ExtractRequest", "Empty", true, false),
    (
        "configure",
        "Configure",
        "ConfigureRequest",
        "Empty",
        false,
        false,
    ),
];

fn main() {
    let mut service = Service::builder().name("Agent").package("husk.agent.v1");
    for &(name, route, input, output, client_streaming, server_streaming) in METHODS {
        let mut m = Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::proto::{input}"))
            .output_type(format!("crate::proto::{output}"))
            .codec_path("tonic_prost::ProstCodec");
        if client_streaming {
            m = m.client_streaming();
        }
        if server_streaming {
            m = m.server_streaming();
        }
        service = service.method(m.build());
    }
    Builder::new()
        .build_transport(false)
        .compile(&[service.build()]);
    println!("cargo:rerun-if-changed=build.rs");
}
