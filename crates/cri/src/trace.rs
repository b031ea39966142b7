//! One tracing span a CRI call, `request{request_id, method}`, in which the service and everything the engine
//! and the drivers do for it log. The ID is the caller's `x-request-id` metadata when usable, a new
//! `req-<uuid>` otherwise, and goes back in the answer's `x-request-id`.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use husk_core::request::{REQUEST_ID_HEADER, request_id_from};
use tracing::Instrument;

/// Wraps every service of `routes` in [`request_span`].
pub fn traced(routes: tonic::service::Routes) -> tonic::service::Routes {
    routes
        .into_axum_router()
        .layer(axum::middleware::from_fn(request_span))
        .into()
}

/// Serves the call inside its span and sends its ID back; logs one line when it is answered, at debug level
/// (info when the service failed on its side: `Unknown`, `Internal`, `Unavailable`, `DataLoss`).
pub async fn request_span(request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok());
    let id = request_id_from(incoming);
    // `/runtime.v1.RuntimeService/RunPodSandbox`.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    // A failed unary call answers with its status in the headers; a success in the trailers (0).
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    span.in_scope(|| {
        if matches!(
            tonic::Code::from(code),
            tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::DataLoss
        ) {
            tracing::info!(grpc_status = code, elapsed_ms, "request failed");
        } else {
            tracing::debug!(grpc_status = code, elapsed_ms, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
