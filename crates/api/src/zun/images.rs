//! `/v1/images`: the host's images with the projects that hold them; pulls onto the host (administrators
//! only, as Zun's policy says).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use husk_engine::Scope;
use husk_engine::image_owners::OwnedImage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::context::Context;
use super::error::{ZunError, ZunErrors, ZunResult};
use super::params::{JsonBody, Page, Params, SortValue};
use super::view::{Link, host_name, links};
use super::{BaseUrl, ZunState};

/// The routes.
pub fn routes() -> Router<ZunState> {
    Router::new()
        .route("/v1/images", get(list).post(pull))
        .route("/v1/images/{id}", get(show).delete(delete))
}

/// An image in Zun's shape.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ZunImage {
    /// ID (from the image's digest).
    pub uuid: String,
    /// Links.
    pub links: Vec<Link>,
    /// `sha256:` image ID.
    pub image_id: String,
    /// Repository.
    pub repo: String,
    /// Tag.
    pub tag: String,
    /// Bytes.
    pub size: u64,
    /// The (first) project holding it.
    pub project_id: String,
    /// Host.
    pub host: String,
}

/// The body of a pull.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    /// Repository (`busybox`, `registry:5000/app`).
    pub repo: String,
    /// Host to pull onto (this host's name).
    pub host: Option<String>,
    /// Tag (default `latest`).
    pub tag: Option<String>,
    /// `always` (default) or `ifnotpresent`.
    pub image_pull_policy: Option<String>,
}

/// The UUID Zun shows for an image ID.
pub fn uuid_of(image_id: &str) -> String {
    let h = image_id.trim_start_matches("sha256:");
    if h.len() < 32 {
        return h.to_string();
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn split_reference(name: &str) -> (String, String) {
    let without_digest = name.split('@').next().unwrap_or(name);
    match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (without_digest.to_string(), "latest".to_string()),
    }
}

fn image_view(o: &OwnedImage, base: &str) -> ZunImage {
    let (repo, tag) = split_reference(&o.image.display_name());
    let uuid = uuid_of(&o.image.id);
    ZunImage {
        links: links(base, "images", &uuid),
        uuid,
        image_id: o.image.id.clone(),
        repo,
        tag,
        size: o.image.size,
        project_id: o.projects.first().cloned().unwrap_or_default(),
        host: host_name(),
    }
}

fn find(s: &ZunState, ident: &str) -> ZunResult<OwnedImage> {
    s.engine
        .list_owned_images(&Scope::All)?
        .into_iter()
        .find(|o| {
            uuid_of(&o.image.id) == ident
                || o.image.id == ident
                || o.image.id.trim_start_matches("sha256:") == ident
                || o.image.repo_tags.iter().any(|t| t == ident)
        })
        .ok_or_else(|| ZunError::not_found(format!("Image {ident} could not be found.")))
}

#[utoipa::path(get, path = "/v1/images", tag = "images", params(("limit" = Option<u32>, Query, description = ""), ("marker" = Option<String>, Query, description = ""), ("sort_key" = Option<String>, Query, description = ""), ("sort_dir" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn list(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["limit", "marker", "sort_key", "sort_dir"])?;
    ctx.require_admin("image:get_all")?;
    let page = Page::from_params(&params, &["id", "uuid", "repo", "tag", "size"], "id")?;
    let views: Vec<ZunImage> = s
        .engine
        .list_owned_images(&Scope::All)?
        .iter()
        .map(|o| image_view(o, &base))
        .collect();
    let key = |i: &ZunImage, k: &str| match k {
        "size" => SortValue::Number(i.size as f64),
        "repo" => SortValue::Text(i.repo.clone()),
        "tag" => SortValue::Text(i.tag.clone()),
        _ => SortValue::Text(i.uuid.clone()),
    };
    let (images, more) = page.apply(views, key, |i| i.uuid.clone())?;
    let next = match (more, images.last()) {
        (true, Some(last)) => {
            Some(page.next_link(&format!("{base}/v1/images"), &params, &last.uuid))
        }
        _ => None,
    };
    Ok(Json(json!({"images": images, "next": next})))
}

#[utoipa::path(get, path = "/v1/images/{id}", tag = "images", params(("id" = String, Path, description = "UUID, ID or name")), responses((status = 200, description = "Done", body = ZunImage), ZunErrors))]
pub(crate) async fn show(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ZunImage>> {
    params.only(&[])?;
    ctx.require_admin("image:get_one")?;
    Ok(Json(image_view(&find(&s, &id)?, &base)))
}

/// `POST /v1/images`: pulls the image onto this host for the caller's project; 202 with the image.
#[utoipa::path(post, path = "/v1/images", tag = "images", request_body(content = PullBody, content_type = "application/json"), responses((status = 202, description = "Done", body = ZunImage), ZunErrors))]
pub(crate) async fn pull(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    params: Params,
    body: JsonBody,
) -> ZunResult<(StatusCode, Json<ZunImage>)> {
    params.only(&[])?;
    ctx.require_admin("image:pull")?;
    let b: PullBody = body.parse()?;
    if b.repo.len() < 2 || b.repo.len() > 255 {
        return Err(ZunError::invalid("repo", "2 to 255 characters"));
    }
    if let Some(h) = &b.host
        && *h != host_name()
    {
        return Err(ZunError::invalid(
            "host",
            format!("no such host {h:?}: this husk runs on {}", host_name()),
        ));
    }
    let only_if_missing = match b
        .image_pull_policy
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("always") => false,
        Some("ifnotpresent") => true,
        Some(other) => {
            return Err(ZunError::invalid(
                "image_pull_policy",
                format!("{other:?} is not always or ifnotpresent"),
            ));
        }
    };
    let reference = match &b.tag {
        Some(t) if !t.is_empty() => format!("{}:{t}", b.repo),
        _ => b.repo.clone(),
    };
    let image = s
        .engine
        .pull_image_for(&ctx.project_id, &reference, only_if_missing)
        .await?;
    let owned = s
        .engine
        .list_owned_images(&Scope::All)?
        .into_iter()
        .find(|o| o.image.id == image.id)
        .ok_or_else(|| {
            ZunError::not_found(format!(
                "Image {reference} could not be found after the pull."
            ))
        })?;
    Ok((StatusCode::ACCEPTED, Json(image_view(&owned, &base))))
}

#[utoipa::path(delete, path = "/v1/images/{id}", tag = "images", params(("id" = String, Path, description = "UUID, ID or name")), responses((status = 204, description = "Done"), ZunErrors))]
pub(crate) async fn delete(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&[])?;
    ctx.require_admin("image:delete")?;
    let o = find(&s, &id)?;
    s.engine.remove_owned_image(&o.image.id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(
            split_reference("docker.io/library/busybox:1"),
            ("docker.io/library/busybox".into(), "1".into())
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app".into(), "latest".into())
        );
        assert_eq!(
            uuid_of("sha256:0123456789abcdef0123456789abcdef0123"),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
    }
}
