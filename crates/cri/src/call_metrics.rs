//! The CRI's part of the daemon's metrics: a tower layer on the gRPC server that counts and times every call by
//! its RPC method and gRPC status code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use husk_metrics::Metrics;

/// The CRI's methods (`runtime.v1`), the only `method` label values besides [`UNKNOWN_METHOD`]: a path is
/// whatever a client sends, so it is never a label itself.
pub const METHODS: [&str; 41] = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "StreamPodSandboxes",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "StreamContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "StreamContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "StreamPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "StreamPodSandboxMetrics",
    "RuntimeConfig",
    "UpdatePodSandboxResources",
    "ListImages",
    "StreamImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// The `method` label of a call to a path that names no CRI method.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The `method` label of a call to `path` (`/runtime.v1.RuntimeService/RunPodSandbox` → `RunPodSandbox`).
pub fn method_label(path: &str) -> &'static str {
    path.strip_prefix("/runtime.v1.RuntimeService/")
        .or_else(|| path.strip_prefix("/runtime.v1.ImageService/"))
        .and_then(|name| METHODS.iter().find(|m| **m == name))
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

/// A gRPC status code's name as gRPC's own libraries spell it (`OK`, `NotFound`, `DeadlineExceeded`).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The status code of an answer from its head: an error is answered "trailers-only", its `grpc-status` in the
/// headers; an answer without one is a success whose status comes in the trailers (a stream that fails after
/// its first message is counted as `OK`).
fn code_of(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
        .unwrap_or(tonic::Code::Ok)
}

/// Wraps the gRPC server's services in [`TrackCalls`].
#[derive(Debug, Clone)]
pub struct TrackCallsLayer {
    metrics: Arc<Metrics>,
}

impl TrackCallsLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> TrackCallsLayer {
        TrackCallsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for TrackCallsLayer {
    type Service = TrackCalls<S>;

    fn layer(&self, inner: S) -> TrackCalls<S> {
        TrackCalls {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// A service that counts and times each call of `inner` (until its answer's head) by method and status code.
#[derive(Debug, Clone)]
pub struct TrackCalls<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for TrackCalls<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let code = match &answer {
                Ok(response) => code_of(response.headers()),
                // The transport failed before any answer.
                Err(_) => tonic::Code::Unknown,
            };
            metrics.observe_cri_request(method, code_label(code), started.elapsed());
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[test]
    fn every_method_of_the_proto_is_a_label_and_nothing_else() {
        let proto = include_str!("../../cri-api/proto/api.proto");
        let mut declared: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        let mut listed = METHODS.to_vec();
        declared.sort_unstable();
        listed.sort_unstable();
        assert_eq!(declared, listed);
    }

    #[test]
    fn paths_become_bounded_method_labels() {
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(
            method_label("/runtime.v1.ImageService/PullImage"),
            "PullImage"
        );
        assert_eq!(
            method_label("/runtime.v1.RuntimeService/NoSuchCall"),
            UNKNOWN_METHOD
        );
        assert_eq!(
            method_label("/runtime.v1alpha2.RuntimeService/Version"),
            UNKNOWN_METHOD
        );
        assert_eq!(method_label(""), UNKNOWN_METHOD);
    }

    #[tokio::test]
    async fn calls_are_counted_with_the_code_of_their_answer() {
        let metrics = Arc::new(Metrics::new());
        let answer = |status: Option<&'static str>| {
            tower::service_fn(move |_: http::Request<()>| async move {
                let mut response = http::Response::new(());
                if let Some(s) = status {
                    response
                        .headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static(s));
                }
                Ok::<_, std::convert::Infallible>(response)
            })
        };
        let layer = TrackCallsLayer::new(metrics.clone());
        for (status, path) in [
            (None, "/runtime.v1.RuntimeService/Version"),
            (Some("5"), "/runtime.v1.RuntimeService/ContainerStatus"),
            (Some("0"), "/runtime.v1.RuntimeService/Version"),
        ] {
            let mut service = layer.layer(answer(status));
            let request = http::Request::builder().uri(path).body(()).unwrap();
            service.ready().await.unwrap().call(request).await.unwrap();
        }
        let text = metrics.encode(&husk_metrics::Snapshot::default());
        assert!(
            text.contains(r#"husk_cri_requests_total{method="Version",code="OK"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"husk_cri_requests_total{method="ContainerStatus",code="NotFound"} 1"#),
            "{text}"
        );
    }
}
