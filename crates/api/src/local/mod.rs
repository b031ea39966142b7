//! husk's own HTTP API, used by the `husk` CLI over the daemon's unix socket (JSON, under `/husk/v1`).
//!
//! Streams: `logs` answers with JSON lines; `attach` and `exec` upgrade the connection (`Upgrade: tcp`, as
//! Docker does) to a raw byte stream carrying husk's stdio frames in both directions.
//!
//! One module a resource: `containers` (lifecycle, logs, attach and exec, events, archives), `sandboxes`,
//! `images` (pull and push with progress, save, registry login, commit), `networks`, `volumes`, [`capsules`]
//! and [`identity`] (projects and users). This module has the router, the error answer and what they share.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use husk_api_types::SystemDf;
use husk_core::{Error, Result};
use husk_engine::Engine;
use serde::Deserialize;

pub mod capsules;
mod containers;
pub mod identity;
mod images;
mod networks;
mod sandboxes;
mod upload;
mod volumes;

/// An error as the local API sends it: the status from its kind, the error as JSON.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// The router of the local API: every resource's routes, and the daemon-wide `version`, `info` and
/// `system df`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/husk/v1/version", get(version))
        .route("/husk/v1/info", get(info))
        .route("/husk/v1/system/df", get(system_df))
        .merge(containers::routes())
        .merge(sandboxes::routes())
        .merge(images::routes())
        .merge(networks::routes())
        .merge(volumes::routes())
        .merge(capsules::routes())
        .merge(identity::routes())
        .with_state(engine)
}

async fn version() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"Version": env!("CARGO_PKG_VERSION"), "ApiVersion": "1", "Os": "linux", "Arch": std::env::consts::ARCH}),
    )
}

async fn info(State(engine): State<Engine>) -> ApiResult<Json<husk_api_types::Info>> {
    Ok(Json(engine.info().await?))
}

async fn system_df(State(engine): State<Engine>) -> ApiResult<Json<SystemDf>> {
    Ok(Json(engine.system_df().await?))
}

/// Parses a JSON body with a clear error (axum's own rejection text is not ours).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("invalid request body: {e}")))
}

/// A streamed answer of JSON lines (`application/x-ndjson`).
pub(crate) fn ndjson<S>(lines: S) -> Response
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// A streamed answer of a tar archive (`application/x-tar`).
pub(crate) fn tar(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    response
}

/// `?all=`: list or prune everything, not only what is running or unused.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct AllQuery {
    pub(crate) all: bool,
}

/// `?force=&volumes=` of removing a container or a sandbox.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ForceQuery {
    pub(crate) force: bool,
    /// Also remove the container's anonymous volumes (`rm -v`).
    pub(crate) volumes: bool,
}
