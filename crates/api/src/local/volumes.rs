//! Volumes in the local API (`husk volume ...`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use husk_api_types::{VolumeCreate, VolumePruneReport, VolumeView};
use husk_engine::Engine;
use serde::Deserialize;

use super::{AllQuery, ApiResult, parse_body};

/// The routes under `/husk/v1/volumes`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
        .route("/husk/v1/volumes", get(list_volumes).post(create_volume))
        .route("/husk/v1/volumes/prune", post(prune_volumes))
        .route(
            "/husk/v1/volumes/{name}",
            get(inspect_volume).delete(remove_volume),
        )
}

async fn list_volumes(State(engine): State<Engine>) -> ApiResult<Json<Vec<VolumeView>>> {
    Ok(Json(engine.list_volumes()?))
}

async fn create_volume(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<VolumeView>)> {
    let req: VolumeCreate = parse_body(&body)?;
    let v = engine.create_volume(req).await?;
    Ok((StatusCode::CREATED, Json(engine.inspect_volume(&v.name)?)))
}

async fn inspect_volume(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> ApiResult<Json<VolumeView>> {
    Ok(Json(engine.inspect_volume(&name)?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForceQuery {
    force: bool,
}

async fn remove_volume(
    State(engine): State<Engine>,
    Path(name): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    engine.remove_volume(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune_volumes(
    State(engine): State<Engine>,
    Query(q): Query<AllQuery>,
) -> ApiResult<Json<VolumePruneReport>> {
    Ok(Json(engine.prune_volumes(q.all).await?))
}
