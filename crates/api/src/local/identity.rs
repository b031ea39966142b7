//! Projects and users in husk's own API (`husk project ...`, `husk user ...`), for local root only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use husk_engine::Engine;
use husk_engine::identity::{ProjectRecord, UserCreate, UserRecord};
use serde::{Deserialize, Serialize};

use super::{ApiResult, parse_body};

/// A project as the CLI shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectView {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// When it was created; `""` for the default project.
    #[serde(default, with = "husk_core::time::optional")]
    pub created: Option<husk_core::Timestamp>,
}

impl From<ProjectRecord> for ProjectView {
    fn from(p: ProjectRecord) -> Self {
        ProjectView {
            id: p.id,
            name: p.name,
            description: p.description,
            created: p.created_at,
        }
    }
}

/// A user as the CLI shows it (never the password hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserView {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Default project (ID).
    pub project: String,
    /// Roles in that project.
    pub roles: Vec<String>,
    /// When it was created.
    pub created: husk_core::Timestamp,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            roles: u.roles.get(&u.default_project).cloned().unwrap_or_default(),
            id: u.id,
            name: u.name,
            project: u.default_project,
            created: u.created_at,
        }
    }
}

/// The body of `POST /husk/v1/projects`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectCreate {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// The routes under `/husk/v1/projects` and `/husk/v1/users`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
        .route("/husk/v1/projects", get(list_projects).post(create_project))
        .route("/husk/v1/users", get(list_users).post(create_user))
}

async fn list_projects(State(engine): State<Engine>) -> ApiResult<Json<Vec<ProjectView>>> {
    Ok(Json(
        engine
            .list_projects()?
            .into_iter()
            .map(Into::into)
            .collect(),
    ))
}

async fn create_project(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
    let req: ProjectCreate = parse_body(&body)?;
    let p = engine.create_project(&req.name, &req.description)?;
    Ok((StatusCode::CREATED, Json(p.into())))
}

async fn list_users(State(engine): State<Engine>) -> ApiResult<Json<Vec<UserView>>> {
    Ok(Json(
        engine.list_users()?.into_iter().map(Into::into).collect(),
    ))
}

async fn create_user(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let req: UserCreate = parse_body(&body)?;
    let u = engine.create_user(req).await?;
    Ok((StatusCode::CREATED, Json(u.into())))
}
