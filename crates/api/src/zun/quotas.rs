//! `/v1/quotas/{project_id}` and `/v1/quota_classes/{name}`: per-project limits on containers, CPUs, memory and
//! disk, enforced by the engine when containers are created.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use husk_engine::quotas::Limits;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::ZunState;
use super::context::Context;
use super::create::zun_int;
use super::error::{ZunError, ZunErrors, ZunResult};
use super::params::{JsonBody, Params};

/// The routes.
pub fn routes() -> Router<ZunState> {
    Router::new()
        .route(
            "/v1/quotas/{project_id}",
            get(show).put(update).delete(reset),
        )
        .route("/v1/quotas/{project_id}/defaults", get(defaults))
        .route(
            "/v1/quota_classes/{name}",
            get(show_class).put(update_class),
        )
}

/// The body of a quota update: any of the four limits (-1 = unlimited).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaBody {
    /// Containers.
    #[schema(value_type = Option<i64>)]
    pub containers: Option<Value>,
    /// CPUs.
    #[schema(value_type = Option<i64>)]
    pub cpu: Option<Value>,
    /// Memory in MiB.
    #[schema(value_type = Option<i64>)]
    pub memory: Option<Value>,
    /// Disk in GiB.
    #[schema(value_type = Option<i64>)]
    pub disk: Option<Value>,
}

impl QuotaBody {
    fn limits(&self) -> ZunResult<Limits> {
        let mut out = Limits::new();
        for (name, v) in [
            ("containers", &self.containers),
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("disk", &self.disk),
        ] {
            match v {
                None | Some(Value::Null) => {}
                Some(Value::Number(n)) if n.as_i64() == Some(-1) => {
                    out.insert(name.into(), -1);
                }
                Some(v) => {
                    out.insert(name.into(), zun_int(name, v, 0, i64::from(i32::MAX))?);
                }
            }
        }
        Ok(out)
    }
}

/// The project a path names (by ID or name); administrators may name any, others only their own.
fn project(s: &ZunState, ctx: &Context, ident: &str) -> ZunResult<String> {
    let p = s
        .engine
        .project(ident)
        .map_err(|_| ZunError::not_found(format!("Project {ident} could not be found.")))?;
    if !ctx.is_admin && p.id != ctx.project_id {
        return Err(ZunError::forbidden("quota:get"));
    }
    Ok(p.id)
}

fn as_json(limits: &Limits) -> Value {
    json!(limits)
}

#[utoipa::path(get, path = "/v1/quotas/{project_id}", tag = "quotas", params(("project_id" = String, Path, description = "Project ID or name"), ("usages" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn show(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(ident): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["usages"])?;
    let id = project(&s, &ctx, &ident)?;
    let limits = s.engine.quota(&id)?;
    if !params.flag("usages", false)? {
        return Ok(Json(as_json(&limits)));
    }
    let used = s.engine.quota_usage(&id)?;
    let out: BTreeMap<&String, Value> = limits
        .iter()
        .map(|(k, v)| {
            let in_use = match k.as_str() {
                "cpu" => json!(used.cpu),
                other => json!(used.get(other) as i64),
            };
            (k, json!({"limit": v, "in_use": in_use}))
        })
        .collect();
    Ok(Json(json!(out)))
}

#[utoipa::path(get, path = "/v1/quotas/{project_id}/defaults", tag = "quotas", params(("project_id" = String, Path, description = "Project ID or name")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn defaults(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(ident): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    project(&s, &ctx, &ident)?;
    Ok(Json(as_json(&s.engine.quota_class("default")?)))
}

#[utoipa::path(put, path = "/v1/quotas/{project_id}", tag = "quotas", params(("project_id" = String, Path, description = "Project ID or name")), request_body(content = QuotaBody, content_type = "application/json"), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn update(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(ident): Path<String>,
    params: Params,
    body: JsonBody,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    ctx.require_admin("quota:update")?;
    let b: QuotaBody = body.parse()?;
    let id = project(&s, &ctx, &ident)?;
    Ok(Json(as_json(&s.engine.set_quota(&id, &b.limits()?)?)))
}

#[utoipa::path(delete, path = "/v1/quotas/{project_id}", tag = "quotas", params(("project_id" = String, Path, description = "Project ID or name")), responses((status = 204, description = "Done"), ZunErrors))]
pub(crate) async fn reset(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(ident): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&[])?;
    ctx.require_admin("quota:delete")?;
    let id = project(&s, &ctx, &ident)?;
    s.engine.reset_quota(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

fn class_name(name: &str) -> ZunResult<()> {
    husk_core::units::validate_name("name", name).map_err(|e| ZunError::invalid("name", e.message))
}

#[utoipa::path(get, path = "/v1/quota_classes/{name}", tag = "quotas", params(("name" = String, Path, description = "Class (default)")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn show_class(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    ctx.require_admin("quota_class:get")?;
    class_name(&name)?;
    Ok(Json(as_json(&s.engine.quota_class(&name)?)))
}

#[utoipa::path(put, path = "/v1/quota_classes/{name}", tag = "quotas", params(("name" = String, Path, description = "Class (default)")), request_body(content = QuotaBody, content_type = "application/json"), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn update_class(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(name): Path<String>,
    params: Params,
    body: JsonBody,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    ctx.require_admin("quota_class:update")?;
    class_name(&name)?;
    let b: QuotaBody = body.parse()?;
    Ok(Json(as_json(
        &s.engine.set_quota_class(&name, &b.limits()?)?,
    )))
}
