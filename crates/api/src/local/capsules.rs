//! Capsules in husk's own API (`husk capsule ...`): a Kubernetes `Pod` manifest or Zun's capsule template in,
//! the capsule and its containers out.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use husk_core::Error;
use husk_engine::capsules::CapsuleRecord;
use husk_engine::{Engine, Scope};
use serde::{Deserialize, Serialize};

use super::ApiResult;

/// One member of a capsule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemberView {
    /// Container ID.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Docker's status name.
    pub status: String,
    /// Last exit code (when it exited).
    pub exit_code: Option<i32>,
}

/// A capsule as the CLI shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapsuleView {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owning project.
    pub project: String,
    /// `Creating`, `Running` or `Error`.
    pub status: String,
    /// Why it is in `Error`.
    pub status_reason: String,
    /// The sandbox's ID.
    pub sandbox: String,
    /// Init containers, in order.
    pub init_containers: Vec<MemberView>,
    /// Containers.
    pub containers: Vec<MemberView>,
    /// Local volumes.
    pub volumes: Vec<String>,
    /// When it was created.
    pub created: husk_core::Timestamp,
}

fn members(engine: &Engine, ids: &[String]) -> Vec<MemberView> {
    ids.iter()
        .filter_map(|id| engine.container(id).ok())
        .map(|c| MemberView {
            id: c.config.id.clone(),
            name: c.config.name.clone(),
            status: c.status.to_string(),
            exit_code: c.exit.as_ref().map(|e| e.code),
        })
        .collect()
}

/// The CLI's view of a capsule.
pub fn view(engine: &Engine, c: &CapsuleRecord) -> CapsuleView {
    CapsuleView {
        id: c.id.clone(),
        name: c.name.clone(),
        project: c.project.clone(),
        status: c.status.clone(),
        status_reason: c.status_reason.clone(),
        sandbox: c.sandbox_id.clone(),
        init_containers: members(engine, &c.init_containers),
        containers: members(engine, &c.containers),
        volumes: c.volumes.clone(),
        created: c.created_at,
    }
}

/// The routes under `/husk/v1/capsules`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
        .route("/husk/v1/capsules", get(list).post(create))
        .route("/husk/v1/capsules/{id}", get(inspect).delete(remove))
}

async fn list(State(engine): State<Engine>) -> ApiResult<Json<Vec<CapsuleView>>> {
    let list = engine.list_capsules(&Scope::All)?;
    Ok(Json(list.iter().map(|c| view(&engine, c)).collect()))
}

/// `POST /husk/v1/capsules`: the body is the manifest as JSON.
async fn create(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<CapsuleView>)> {
    let manifest: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request(format!("the manifest is not valid JSON: {e}")))?;
    let (req, _) = crate::pod::translate(&manifest)?;
    let c = engine.create_capsule(req).await?;
    Ok((StatusCode::CREATED, Json(view(&engine, &c))))
}

async fn inspect(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<Json<CapsuleView>> {
    let c = engine.capsule_in(&Scope::All, &id)?;
    Ok(Json(view(&engine, &c)))
}

async fn remove(State(engine): State<Engine>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let c = engine.capsule_in(&Scope::All, &id)?;
    engine.remove_capsule(&c.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
