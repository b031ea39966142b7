//! Networks in the local API (`husk network ...`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use husk_engine::Engine;
use serde::Deserialize;

use super::{ApiResult, parse_body};

/// The routes under `/husk/v1/networks`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
        .route("/husk/v1/networks", get(list_networks).post(create_network))
        .route(
            "/husk/v1/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
}

async fn list_networks(
    State(engine): State<Engine>,
) -> ApiResult<Json<Vec<husk_api_types::NetworkInfo>>> {
    Ok(Json(engine.list_networks().await?))
}

async fn inspect_network(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> ApiResult<Json<husk_api_types::NetworkInfo>> {
    Ok(Json(engine.inspect_network(&name).await?))
}

/// The body of `POST /husk/v1/networks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkCreateBody {
    name: String,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
}

async fn create_network(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<husk_api_types::NetworkInfo>)> {
    let b: NetworkCreateBody = parse_body(&body)?;
    let info = engine
        .create_network(husk_api_types::NewNetwork {
            name: b.name,
            subnet: b.subnet,
            gateway: b.gateway,
            bridge: b.bridge,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn remove_network(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    engine.remove_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
