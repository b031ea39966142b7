//! OpenStack Zun's container API v1, over the engine, so `zun`, `openstack appcontainer` and the
//! python-zunclient library work against husk unchanged.
//!
//! Layout: [`version`] negotiates microversions, [`context`] establishes the caller (token, project, admin),
//! [`params`] reads query strings and bodies, [`error`] writes Zun's error body (and declares the error
//! answers of the OpenAPI document once), [`view`] shows containers with Zun's field and status names,
//! [`create`] translates the create body, and [`containers`] holds the container handlers, one module a
//! concern. Every handler is a translation: decisions belong to the engine.

pub mod actions;
pub mod capsules;
pub mod containers;
pub mod context;
pub mod create;
pub mod error;
pub mod hosts;
pub mod images;
pub mod openapi;
pub mod params;
pub mod quotas;
pub mod version;
pub mod view;
pub mod ws;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use husk_engine::Engine;
use serde::Serialize;
use serde_json::json;

pub use context::{AuthMode, Context};
use error::ZunError;
use version::{MAX_VERSION, MIN_VERSION};

/// What every Zun handler can reach.
#[derive(Clone, Debug)]
pub struct ZunState {
    /// The engine.
    pub engine: Engine,
    /// How callers are authenticated on this listener.
    pub auth: AuthMode,
    /// Interactive sessions handed out and not yet joined.
    pub sessions: std::sync::Arc<ws::Sessions>,
}

/// `http://HOST` as the client reached us (for links and URLs handed back).
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BaseUrl {
    type Rejection = ZunError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<BaseUrl, ZunError> {
        let host = parts
            .headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
            })
            .unwrap_or("localhost");
        Ok(BaseUrl(format!("http://{host}")))
    }
}

/// Zun's answer to a create: 202 with `body`, and `Location` naming the new resource.
pub(crate) fn accepted(location: &str, body: impl Serialize) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn version_entry(base: &str) -> serde_json::Value {
    json!({
        "id": "v1",
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "status": "CURRENT",
        "max_version": MAX_VERSION.to_string(),
        "min_version": MIN_VERSION.to_string(),
    })
}

/// `GET /`: the versions document clients negotiate with.
async fn root(BaseUrl(base): BaseUrl) -> impl IntoResponse {
    Json(json!({
        "name": "OpenStack Zun API",
        "description": "Zun is an OpenStack project which aims to provide container management (served by husk).",
        "versions": [version_entry(&base)],
        "default_version": version_entry(&base),
    }))
}

/// `GET /v1`: the resources of version 1.
async fn v1(BaseUrl(base): BaseUrl) -> impl IntoResponse {
    let link = |what: &str| {
        json!([
            {"href": format!("{base}/v1/{what}/"), "rel": "self"},
            {"href": format!("{base}/{what}/"), "rel": "bookmark"}
        ])
    };
    Json(json!({
        "id": "v1",
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.zun.v1+json"}],
        "links": [{"href": format!("{base}/v1/"), "rel": "self"}],
        "containers": link("containers"),
        "capsules": link("capsules"),
        "images": link("images"),
        "hosts": link("hosts"),
        "services": link("services"),
    }))
}

async fn not_found() -> ZunError {
    ZunError::not_found("The resource could not be found.")
}

async fn method_not_allowed() -> ZunError {
    ZunError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "The method is not allowed for this resource.",
    )
}

/// Zun's API for callers authenticated as `auth` says.
pub fn router(engine: Engine, auth: AuthMode) -> Router {
    let state = ZunState {
        engine,
        auth,
        sessions: Default::default(),
    };
    let api = containers::routes()
        .merge(capsules::routes())
        .merge(actions::routes())
        .merge(quotas::routes())
        .merge(hosts::routes())
        .merge(images::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::authenticate,
        ))
        .with_state(state.clone());
    let public = Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/websocket", get(ws::connect))
        .route("/v1/openapi.json", get(openapi::document))
        .with_state(state);
    public
        .merge(api)
        .layer(axum::middleware::from_fn(version::negotiate))
        .layer(axum::middleware::from_fn(
            crate::trace::openstack_request_id,
        ))
}

/// Accepts paths with a trailing slash (`/v1/images/`) as Zun's clients send them.
pub fn accept_trailing_slashes(router: Router) -> Router {
    Router::new()
        .fallback_service(tower_http::normalize_path::NormalizePath::trim_trailing_slash(router))
}
