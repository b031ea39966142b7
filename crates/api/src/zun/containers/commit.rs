//! `commit`: a new image from a container's changes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::for_action;
use crate::zun::context::Context;
use crate::zun::error::{RequestErrors, ZunError, ZunResult};
use crate::zun::params::Params;
use crate::zun::view::ZunAction;
use crate::zun::{ZunState, images};

/// The answer of `commit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitResult {
    /// The new image's UUID.
    pub uuid: String,
}

/// `POST .../commit?repository=&tag=`: a new image from the container's changes (running containers are
/// paused while they are read).
#[utoipa::path(post, path = "/v1/containers/{id}/commit", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("repository" = Option<String>, Query, description = "Repository of the new image"), ("tag" = Option<String>, Query, description = "Tag")), responses((status = 202, description = "Done", body = CommitResult), RequestErrors))]
pub(crate) async fn commit(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<(StatusCode, Json<CommitResult>)> {
    params.only(&["repository", "tag"])?;
    let repository = params
        .text("repository")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ZunError::invalid("repository", "a repository is required"))?;
    let reference = match params.text("tag").filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repository}:{tag}"),
        None => repository.to_string(),
    };
    let rec = for_action(&s, &ctx, &id, ZunAction::Commit)?;
    let req = husk_api_types::CommitRequest {
        repo: Some(reference.clone()),
        ..Default::default()
    };
    let image = s
        .engine
        .track(
            rec.id(),
            "commit",
            &ctx.user_id,
            s.engine.commit_container(rec.id(), &req),
        )
        .await?;
    s.engine.claim_image(&rec.project, &image.id, &reference)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CommitResult {
            uuid: images::uuid_of(&image.id),
        }),
    ))
}
