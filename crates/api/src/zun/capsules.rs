//! `/v1/capsules`: Zun's capsule template in, the engine's capsule service behind.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Json, Router};
use husk_core::{ContainerRecord, ErrorKind};
use husk_engine::capsules::CapsuleRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::context::Context;
use super::create::AVAILABILITY_ZONE;
use super::error::{ZunError, ZunErrors, ZunResult};
use super::params::{JsonBody, Page, Params, SortValue};
use super::view::{self, Address, Link, ZunContainer, ZunRestartPolicy};
use super::{BaseUrl, ZunState};

/// The routes of `/v1/capsules`.
pub fn routes() -> Router<ZunState> {
    Router::new()
        .route("/v1/capsules", get(list).post(create))
        .route("/v1/capsules/{id}", get(show).delete(delete))
}

/// The body of `POST /v1/capsules`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapsuleBody {
    /// The capsule template (`kind: capsule`) or a Kubernetes `Pod`, as JSON.
    #[schema(value_type = Object)]
    pub template: Value,
}

/// A capsule in Zun's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZunCapsule {
    /// ID.
    pub uuid: String,
    /// Links.
    pub links: Vec<Link>,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// `Creating`, `Running`, `Stopped` or `Error`.
    pub status: String,
    /// Why it is in `Error`.
    pub status_reason: Option<String>,
    /// CPUs of its containers.
    pub cpu: f64,
    /// Memory of its containers in MiB.
    pub memory: String,
    /// Restart policy of its containers.
    pub restart_policy: ZunRestartPolicy,
    /// Addresses by network.
    pub addresses: BTreeMap<String, Vec<Address>>,
    /// Host (administrators only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The containers.
    pub containers: Vec<ZunContainer>,
    /// The init containers.
    pub init_containers: Vec<ZunContainer>,
    /// Owning project.
    pub project_id: String,
    /// Creating user.
    pub user_id: String,
    /// When it was created (RFC 3339).
    #[schema(value_type = String)]
    pub created_at: husk_core::Timestamp,
    /// RFC 3339; never set.
    pub updated_at: Option<String>,
}

/// The list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapsuleList {
    /// One page of capsules.
    pub capsules: Vec<ZunCapsule>,
    /// The next page, if there may be one.
    pub next: Option<String>,
}

const USER: &str = "zun.user_id";

impl ZunState {
    fn capsule(&self, ctx: &Context, ident: &str, all_projects: bool) -> ZunResult<CapsuleRecord> {
        let scope = ctx.scope(all_projects)?;
        self.engine
            .capsule_in(&scope, ident)
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => {
                    ZunError::not_found(format!("Capsule {ident} could not be found."))
                }
                _ => e.into(),
            })
    }

    fn capsule_view(&self, c: &CapsuleRecord, ctx: &Context, base: &str) -> ZunCapsule {
        let sandbox = self.engine.sandbox(&c.sandbox_id).ok();
        let members = |ids: &[String]| -> Vec<(ContainerRecord, ZunContainer)> {
            ids.iter()
                .filter_map(|id| self.engine.container(id).ok())
                .map(|r| {
                    let v = view::container(&r, sandbox.as_ref(), ctx, base);
                    (r, v)
                })
                .collect()
        };
        let containers = members(&c.containers);
        let init = members(&c.init_containers);
        let running = containers
            .iter()
            .filter(|(_, v)| v.status == "Running")
            .count();
        let status = match c.status.as_str() {
            "Running" if running == containers.len() => "Running",
            "Running" if running == 0 => "Stopped",
            "Running" => "Running",
            other => other,
        };
        let cpu: f64 = containers.iter().filter_map(|(_, v)| v.cpu).sum();
        let memory: i64 = containers
            .iter()
            .filter_map(|(_, v)| v.memory.as_deref().and_then(|m| m.parse::<i64>().ok()))
            .sum();
        let addresses = containers
            .first()
            .map(|(_, v)| v.addresses.clone())
            .unwrap_or_default();
        ZunCapsule {
            uuid: c.id.clone(),
            links: view::links(base, "capsules", &c.id),
            name: c.name.clone(),
            labels: c.labels.clone(),
            annotations: c
                .annotations
                .iter()
                .filter(|(k, _)| !k.starts_with("zun."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            status: status.to_string(),
            status_reason: Some(c.status_reason.clone()).filter(|r| !r.is_empty()),
            cpu,
            memory: memory.to_string(),
            restart_policy: c.restart_policy.into(),
            addresses,
            host: ctx.is_admin.then(view::host_name),
            containers: containers.into_iter().map(|(_, v)| v).collect(),
            init_containers: init.into_iter().map(|(_, v)| v).collect(),
            project_id: c.project.clone(),
            user_id: c.annotations.get(USER).cloned().unwrap_or_default(),
            created_at: c.created_at,
            updated_at: None,
        }
    }
}

/// `POST /v1/capsules`: 202 with the capsule (made, its init containers done and its containers started).
#[utoipa::path(post, path = "/v1/capsules", tag = "capsules", request_body(content = CapsuleBody, content_type = "application/json"), responses((status = 202, description = "Done", body = ZunCapsule), ZunErrors))]
pub(crate) async fn create(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    params: Params,
    body: JsonBody,
) -> ZunResult<Response> {
    params.only(&[])?;
    let body: CapsuleBody = body.parse()?;
    let (mut req, asked) = crate::pod::translate(&body.template).map_err(|e| {
        ZunError::invalid(
            &format!("template.{}", e.field.clone().unwrap_or_default()),
            e.message,
        )
    })?;
    if let Some(az) = &asked.availability_zone
        && az != AVAILABILITY_ZONE
    {
        return Err(ZunError::invalid(
            "availabilityZone",
            format!("no such availability zone {az:?}: use {AVAILABILITY_ZONE}"),
        ));
    }
    if asked.privileged && !ctx.everything {
        return Err(ZunError::forbidden("container:create:privileged"));
    }
    req.project = Some(ctx.project_id.clone());
    req.annotations.insert(USER.into(), ctx.user_id.clone());
    for c in req
        .containers
        .iter_mut()
        .chain(req.init_containers.iter_mut())
    {
        c.spec
            .annotations
            .insert(view::keys::USER.into(), ctx.user_id.clone());
        c.spec
            .annotations
            .insert(view::keys::IMAGE.into(), c.spec.image.clone());
    }
    for c in req
        .containers
        .iter_mut()
        .chain(req.init_containers.iter_mut())
    {
        c.spec.pull =
            super::create::ensure_image(&s.engine, &ctx.project_id, &c.spec.image, c.spec.pull)
                .await?;
    }
    let rec = s.engine.create_capsule(req).await?;
    let location = format!("{base}/v1/capsules/{}", rec.id);
    Ok(super::accepted(
        &location,
        s.capsule_view(&rec, &ctx, &base),
    ))
}

const SORT_KEYS: &[&str] = &["id", "uuid", "name", "created_at", "status", "project_id"];

/// `GET /v1/capsules`.
#[utoipa::path(get, path = "/v1/capsules", tag = "capsules", params(("limit" = Option<u32>, Query, description = ""), ("marker" = Option<String>, Query, description = ""), ("sort_key" = Option<String>, Query, description = ""), ("sort_dir" = Option<String>, Query, description = ""), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = CapsuleList), ZunErrors))]
pub(crate) async fn list(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> ZunResult<Json<CapsuleList>> {
    params.only(&["limit", "marker", "sort_key", "sort_dir", "all_projects"])?;
    let page = Page::from_params(&params, SORT_KEYS, "id")?;
    let scope = ctx.scope(params.flag("all_projects", false)?)?;
    let views: Vec<ZunCapsule> = s
        .engine
        .list_capsules(&scope)?
        .iter()
        .map(|c| s.capsule_view(c, &ctx, &base))
        .collect();
    let key = |c: &ZunCapsule, k: &str| {
        SortValue::Text(match k {
            "uuid" => c.uuid.clone(),
            "name" => c.name.clone(),
            "status" => c.status.clone(),
            "project_id" => c.project_id.clone(),
            _ => c.created_at.to_string(),
        })
    };
    let (capsules, more) = page.apply(views, key, |c| c.uuid.clone())?;
    let next = match (more, capsules.last()) {
        (true, Some(last)) => {
            Some(page.next_link(&format!("{base}/v1/capsules"), &params, &last.uuid))
        }
        _ => None,
    };
    Ok(Json(CapsuleList { capsules, next }))
}

/// `GET /v1/capsules/{id}`.
#[utoipa::path(get, path = "/v1/capsules/{id}", tag = "capsules", params(("id" = String, Path, description = "Name or UUID"), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = ZunCapsule), ZunErrors))]
pub(crate) async fn show(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ZunCapsule>> {
    let c = s.capsule(&ctx, &id, params.only_all_projects()?)?;
    Ok(Json(s.capsule_view(&c, &ctx, &base)))
}

/// `DELETE /v1/capsules/{id}`: 204.
#[utoipa::path(delete, path = "/v1/capsules/{id}", tag = "capsules", params(("id" = String, Path, description = "Name or UUID"), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 204, description = "Done"), ZunErrors))]
pub(crate) async fn delete(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    let c = s.capsule(&ctx, &id, params.only_all_projects()?)?;
    s.engine.remove_capsule(&c.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
