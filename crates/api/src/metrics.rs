//! The APIs' part of the daemon's metrics: a middleware that counts and times every request by its matched
//! route, and the router of the metrics listener (`GET /metrics`).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use husk_engine::Engine;
use husk_metrics::Metrics;

/// The `route` label of requests that matched no route (answered by a fallback): one series for all of them,
/// whatever their paths.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Counts and times a request by the template of the route it matched (`/husk/v1/containers/{id}`, never
/// the raw path, so the series stay few), its method and its answer's status. Added with `Router::layer`,
/// which wraps each route after matching, so the matched route is known.
pub async fn track_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe_api_request(
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `router` with every request counted in `engine`'s metrics.
pub fn tracked(router: Router, engine: &Engine) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        engine.metrics().clone(),
        track_requests,
    ))
}

/// What the metrics listener serves: `GET /metrics`, Prometheus' text format.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(engine)
}

/// Reads the snapshot (objects, running containers' stats, this process) and encodes it with the counted
/// series.
async fn scrape(State(engine): State<Engine>) -> impl IntoResponse {
    let snapshot = engine.metrics_snapshot().await;
    (
        [(CONTENT_TYPE, husk_metrics::CONTENT_TYPE)],
        engine.metrics().encode(&snapshot),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn call(router: &Router, method: &str, path: &str) -> u16 {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        router
            .clone()
            .oneshot(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_unmatched_ones_share_one_series() {
        let metrics = Arc::new(Metrics::new());
        let router = Router::new()
            .route("/things/{id}", get(|| async { "thing" }))
            .layer(axum::middleware::from_fn_with_state(
                metrics.clone(),
                track_requests,
            ));
        assert_eq!(call(&router, "GET", "/things/1").await, 200);
        assert_eq!(call(&router, "GET", "/things/2").await, 200);
        assert_eq!(call(&router, "POST", "/things/2").await, 405);
        assert_eq!(call(&router, "GET", "/nothing/here").await, 404);
        assert_eq!(call(&router, "GET", "/nothing/there").await, 404);
        let text = metrics.encode(&husk_metrics::Snapshot::default());
        for (series, want) in [
            (
                r#"husk_api_requests_total{route="/things/{id}",method="GET",status="200"} "#,
                "2",
            ),
            (
                r#"husk_api_requests_total{route="/things/{id}",method="POST",status="405"} "#,
                "1",
            ),
            (
                r#"husk_api_requests_total{route="unmatched",method="GET",status="404"} "#,
                "2",
            ),
        ] {
            let line = text.lines().find(|l| l.starts_with(series));
            assert_eq!(
                line.and_then(|l| l.strip_prefix(series)),
                Some(want),
                "{series} in\n{text}"
            );
        }
        assert!(
            !text.contains("/things/1"),
            "raw paths are no labels:\n{text}"
        );
    }
}
