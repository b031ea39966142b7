//! `/v1/containers/{id}/container_actions`: what was done to a container, by whom, with what result.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use husk_engine::actions::ActionRecord;
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::ZunState;
use super::context::Context;
use super::error::{ZunError, ZunErrors, ZunResult};
use super::params::Params;
use super::version::Version;

/// The routes.
pub fn routes() -> Router<ZunState> {
    Router::new()
        .route("/v1/containers/{id}/container_actions", get(list))
        .route(
            "/v1/containers/{id}/container_actions/{request_id}",
            get(show),
        )
}

/// The list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActionList {
    /// Actions, oldest first.
    #[serde(rename = "containerActions")]
    #[schema(value_type = Vec<Object>)]
    pub container_actions: Vec<Value>,
}

fn action_view(a: &ActionRecord, version: Version) -> Value {
    let mut v = json!({
        "action": a.action,
        "container_uuid": a.container_id,
        "request_id": a.request_id,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "start_time": a.start_time,
        "message": a.message,
    });
    if version >= Version::new(1, 33) {
        v["finish_time"] = json!(a.finish_time);
    }
    v
}

#[utoipa::path(get, path = "/v1/containers/{id}/container_actions", tag = "container actions", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = ActionList), ZunErrors))]
pub(crate) async fn list(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ActionList>> {
    params.only(&[])?;
    let rec = s.container(&ctx, &id, false)?;
    let actions = s.engine.container_actions(rec.id())?;
    Ok(Json(ActionList {
        container_actions: actions.iter().map(|a| action_view(a, version)).collect(),
    }))
}

/// One action; its events for administrators only (Zun's policy).
#[utoipa::path(get, path = "/v1/containers/{id}/container_actions/{request_id}", tag = "container actions", params(("id" = String, Path, description = "Name or UUID"), ("request_id" = String, Path, description = "req-...")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn show(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    Path((id, request_id)): Path<(String, String)>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    let rec = s.container(&ctx, &id, false)?;
    let action = s
        .engine
        .container_actions(rec.id())?
        .into_iter()
        .find(|a| a.request_id == request_id)
        .ok_or_else(|| {
            ZunError::not_found(format!(
                "Action {request_id} on container {id} could not be found."
            ))
        })?;
    let mut v = action_view(&action, version);
    if ctx.is_admin {
        v["events"] = json!(action.events);
    }
    Ok(Json(v))
}
