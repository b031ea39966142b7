//! Volumes and copying files in and out of containers, in the local API.
//!
//! `GET /husk/v1/containers/{id}/archive?path=` answers with a tar stream (`application/x-tar`) whose top entry
//! is the path's last component; `PUT` with the same path unpacks the request's tar stream into that directory;
//! `GET .../archive/stat?path=` describes the path. An archive that fails half-way ends the response with an
//! error instead of a clean end, so a client never mistakes a truncated archive for a whole one.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use husk_api_types::{VolumeCreate, VolumePruneReport, VolumeView};
use husk_core::{Error, ExtractOptions, PathStat};
use husk_engine::Engine;
use serde::Deserialize;

use super::{ApiError, parse_body};

type ApiResult<T> = std::result::Result<T, ApiError>;

/// The routes of this module.
pub(crate) fn routes() -> Router<Engine> {
    Router::new()
        .route("/husk/v1/volumes", get(list_volumes).post(create_volume))
        .route("/husk/v1/volumes/prune", post(prune_volumes))
        .route(
            "/husk/v1/volumes/{name}",
            get(inspect_volume).delete(remove_volume),
        )
        .route(
            "/husk/v1/containers/{id}/archive",
            get(get_archive).put(put_archive),
        )
        .route("/husk/v1/containers/{id}/archive/stat", get(stat_path))
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

#[derive(Deserialize, Default)]
#[serde(default)]
struct PruneQuery {
    all: bool,
}

async fn prune_volumes(
    State(engine): State<Engine>,
    Query(q): Query<PruneQuery>,
) -> ApiResult<Json<VolumePruneReport>> {
    Ok(Json(engine.prune_volumes(q.all).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PathQuery {
    path: String,
    copy_uid_gid: bool,
}

async fn stat_path(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<PathStat>> {
    Ok(Json(engine.stat_path(&id, &q.path).await?))
}

async fn get_archive(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (_, archive) = engine.archive_path(&id, &q.path).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(archive, 256 * 1024);
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

async fn put_archive(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    body: Body,
) -> ApiResult<StatusCode> {
    if q.path.is_empty() {
        return Err(Error::invalid("path", "no destination directory given").into());
    }
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(stream);
    let options = ExtractOptions {
        copy_owners: q.copy_uid_gid,
        no_overwrite_dir_non_dir: true,
    };
    engine
        .extract_archive(&id, &q.path, Box::pin(reader), &options)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
