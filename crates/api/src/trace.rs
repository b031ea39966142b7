//! One tracing span a request, `request{request_id, method, route}`, in which its handler and everything the
//! engine and the drivers do for it log. The ID is the caller's `X-Request-Id` when usable, a new `req-<uuid>`
//! otherwise, and goes back in the answer's `X-Request-Id` (and `x-openstack-request-id` for Zun's clients).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use husk_core::request::{REQUEST_ID_HEADER, request_id_from};
use tracing::Instrument;

/// The header OpenStack services answer with their request's ID; Zun's clients read it.
pub const OPENSTACK_REQUEST_ID_HEADER: &str = "x-openstack-request-id";

/// The ID of the request being served, in its extensions (put there by [`request_span`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Wraps every route of `router` (and its fallback) in [`request_span`].
pub fn traced(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(request_span))
}

/// Serves the request inside its span and sends its ID back; logs one line when it is answered, at debug
/// level (info for a server error).
pub async fn request_span(mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let incoming = headers
        .get(REQUEST_ID_HEADER)
        .or_else(|| headers.get(OPENSTACK_REQUEST_ID_HEADER))
        .and_then(|v| v.to_str().ok());
    let id = request_id_from(incoming);
    // The route's pattern (`/husk/v1/containers/{id}`), not the path: the same for every call of one route.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| request.uri().path().to_string());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = %route,
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::info!(status = status.as_u16(), elapsed_ms, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), elapsed_ms, "request");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

tokio::task_local! {
    /// The ID of the Zun request being served, for the error bodies that carry it.
    static ZUN_REQUEST_ID: String;
}

/// The ID of the Zun request being served (inside [`openstack_request_id`]), for its error body.
pub fn zun_request_id() -> Option<String> {
    ZUN_REQUEST_ID.try_with(Clone::clone).ok()
}

/// For Zun's routes: the request's ID also in `x-openstack-request-id`, where OpenStack's clients look, and in
/// the `request_id` of an error body ([`zun_request_id`]).
pub async fn openstack_request_id(request: Request, next: Next) -> Response {
    let id = request.extensions().get::<RequestId>().cloned();
    let mut response = match &id {
        Some(RequestId(id)) => ZUN_REQUEST_ID.scope(id.clone(), next.run(request)).await,
        None => next.run(request).await,
    };
    if let Some(value) = id.and_then(|RequestId(id)| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(OPENSTACK_REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app() -> axum::Router {
        let zun = axum::Router::new()
            .route("/v1/things/{id}", get(|| async { "zun" }))
            .route(
                "/v1/missing",
                get(|| async {
                    crate::zun::error::ZunError::new(
                        axum::http::StatusCode::NOT_FOUND,
                        "not-found",
                        "no such thing",
                    )
                }),
            )
            .layer(axum::middleware::from_fn(openstack_request_id));
        traced(
            axum::Router::new()
                .route("/husk/v1/things/{id}", get(|| async { "husk" }))
                .merge(zun),
        )
    }

    async fn call(path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn the_callers_id_comes_back() {
        let r = call("/husk/v1/things/a", &[("X-Request-Id", "test-123")]).await;
        assert_eq!(header(&r, REQUEST_ID_HEADER), Some("test-123"));
        assert_eq!(header(&r, OPENSTACK_REQUEST_ID_HEADER), None);
    }

    #[tokio::test]
    async fn zun_answers_with_openstacks_header_too() {
        let r = call("/v1/things/a", &[("x-openstack-request-id", "req-abc")]).await;
        assert_eq!(header(&r, REQUEST_ID_HEADER), Some("req-abc"));
        assert_eq!(header(&r, OPENSTACK_REQUEST_ID_HEADER), Some("req-abc"));
    }

    #[tokio::test]
    async fn a_zun_error_body_names_its_request() {
        let r = call("/v1/missing", &[("x-openstack-request-id", "req-err")]).await;
        assert_eq!(r.status(), 404);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errors"][0]["request_id"], "req-err", "{body}");
        assert_eq!(zun_request_id(), None, "only while a Zun request is served");
    }

    #[tokio::test]
    async fn a_request_without_a_usable_id_gets_a_new_one() {
        let r = call("/nowhere", &[("X-Request-Id", "has space")]).await;
        let id = header(&r, REQUEST_ID_HEADER).unwrap();
        assert!(id.starts_with("req-") && id.len() == 40, "{id}");
        let again = call("/nowhere", &[]).await;
        assert_ne!(header(&again, REQUEST_ID_HEADER), Some(id));
    }
}
