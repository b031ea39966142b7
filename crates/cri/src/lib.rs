#![doc = include_str!("../README.md")]

pub mod call_metrics;
pub mod convert;
pub mod images;
pub mod metrics;
pub mod runtime;
pub mod spdy;
pub mod streaming;
pub mod trace;

use std::future::Future;

use husk_core::{Error, ErrorKind};
use husk_cri_api::v1::image_service_server::ImageServiceServer;
use husk_cri_api::v1::runtime_service_server::RuntimeServiceServer;
use husk_engine::Engine;

pub use images::Images;
pub use runtime::Runtime;

/// The largest request or answer the CRI server takes or gives (kubelet's own limit is 16 MiB).
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// A husk error as a gRPC status: its kind decides the code, its message (naming the field for bad input) is
/// kept.
pub fn status_of(e: &Error) -> tonic::Status {
    use tonic::Code;
    let code = match e.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::LimitExceeded => Code::ResourceExhausted,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Backend => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    let message = match &e.field {
        Some(field) if !e.message.contains(field.as_str()) => format!("{field}: {}", e.message),
        _ => e.message.clone(),
    };
    tonic::Status::new(code, message)
}

/// How the CRI server is set up.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// The unix socket of the gRPC services.
    pub socket: std::path::PathBuf,
    /// `HOST:PORT` of the streaming server (Exec, Attach, PortForward); port 0 picks a free one.
    pub stream_address: String,
    /// Runtime handlers (RuntimeClass handler names) and the driver each runs its pods on.
    pub handlers: std::collections::BTreeMap<String, String>,
}

/// The streaming server's address unless configured: loopback, a free port (kubelet connects from the node).
pub const DEFAULT_STREAM_ADDRESS: &str = "127.0.0.1:0";

/// Serves the CRI's RuntimeService and ImageService on the unix socket (replacing a stale socket file, mode
/// 0660), and the streaming server, until `shutdown` completes.
pub async fn serve(
    engine: Engine,
    options: &CriOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> husk_core::Result<()> {
    let socket = options.socket.as_path();
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let (streaming, stream_listener) =
        streaming::Streaming::bind(engine.clone(), &options.stream_address).await?;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("listen on {}", socket.display()), e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
            .map_err(|e| Error::io(format!("chmod {}", socket.display()), e))?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let streams = tokio::spawn(streaming.clone().serve(stream_listener, stopped()));
    let incoming = accepted(listener);
    let metrics = engine.metrics().clone();
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(
            RuntimeServiceServer::new(Runtime::new(
                engine.clone(),
                streaming,
                options.handlers.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            ImageServiceServer::new(Images::new(engine))
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        );
    let grpc = tonic::transport::Server::builder()
        .layer(call_metrics::TrackCallsLayer::new(metrics))
        .add_routes(trace::traced(routes.routes()))
        .serve_with_incoming_shutdown(incoming, stopped())
        .await
        .map_err(|e| Error::backend(format!("CRI server on {}: {e}", socket.display())));
    streams.abort();
    grpc
}

/// The connections `listener` accepts. A failed accept (out of descriptors: the connection stays queued, so the
/// listener stays readable) is retried after a pause, never at once: tonic retries at once, and would spin.
fn accepted(
    listener: tokio::net::UnixListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => return Some((Ok(stream), listener)),
                Err(e) => {
                    tracing::warn!("accept on the CRI socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    })
}
