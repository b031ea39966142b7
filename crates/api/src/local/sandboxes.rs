//! Sandboxes in the local API (`husk sandbox ...`): the shared namespaces that containers join.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use husk_api_types::{SandboxCreate, SandboxView};
use husk_engine::Engine;

use super::{ApiResult, ForceQuery, parse_body};

/// The routes under `/husk/v1/sandboxes`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
        .route(
            "/husk/v1/sandboxes",
            get(list_sandboxes).post(create_sandbox),
        )
        .route(
            "/husk/v1/sandboxes/{id}",
            get(inspect_sandbox).delete(remove_sandbox),
        )
}

async fn list_sandboxes(State(engine): State<Engine>) -> ApiResult<Json<Vec<SandboxView>>> {
    let list = engine.list_sandboxes()?;
    let mut out = Vec::with_capacity(list.len());
    for sb in list {
        let containers = engine.sandbox_containers(&sb.config.id)?;
        let mut view = SandboxView::new(&sb, containers);
        view.volumes = engine.sandbox_volume_names(&sb.config.id)?;
        out.push(view);
    }
    Ok(Json(out))
}

async fn inspect_sandbox(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxView>> {
    Ok(Json(engine.inspect_sandbox(&id)?))
}

async fn create_sandbox(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<SandboxView>)> {
    let req: SandboxCreate = parse_body(&body)?;
    let sb = engine.create_sandbox(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(engine.inspect_sandbox(&sb.config.id)?),
    ))
}

async fn remove_sandbox(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    engine.remove_sandbox(&id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}
