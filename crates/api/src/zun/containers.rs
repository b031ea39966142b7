//! `/v1/containers`: create, list, show, update, delete and the actions, each a translation to the engine.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use husk_api_types::ExecCreate;
use husk_core::{ContainerRecord, ErrorKind, LogOptions, SandboxRecord};
use husk_engine::capsules::CAPSULE_ANNOTATION;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::context::Context;
use super::create::{CreateBody, check_name, split_command, translate, zun_bool};
use super::error::{ErrorBody, ZunError, ZunResult};
use super::params::{JsonBody, Page, Params, SortValue};
use super::version::Version;
use super::view::{self, ZunAction, ZunContainer};
use super::{BaseUrl, ZunState};

/// The routes of `/v1/containers`.
pub fn routes() -> Router<ZunState> {
    Router::new()
        .route("/v1/containers", get(list).post(create))
        .route(
            "/v1/containers/{id}",
            get(show).patch(update).delete(delete),
        )
        .route("/v1/containers/{id}/start", post(start))
        .route("/v1/containers/{id}/stop", post(stop))
        .route("/v1/containers/{id}/reboot", post(reboot))
        .route("/v1/containers/{id}/pause", post(pause))
        .route("/v1/containers/{id}/unpause", post(unpause))
        .route("/v1/containers/{id}/kill", post(kill))
        .route("/v1/containers/{id}/rename", post(rename))
        .route("/v1/containers/{id}/logs", get(logs))
        .route("/v1/containers/{id}/execute", post(execute))
        .route("/v1/containers/{id}/top", get(top))
        .route("/v1/containers/{id}/stats", get(stats))
        .route("/v1/containers/{id}/network_list", get(network_list))
        .route("/v1/containers/{id}/attach", get(attach))
        .route("/v1/containers/{id}/commit", post(commit))
        .route("/v1/containers/{id}/get_archive", get(get_archive))
        .route("/v1/containers/{id}/put_archive", post(put_archive))
        .route("/v1/containers/{id}/resize", post(resize))
        .route("/v1/containers/{id}/execute_resize", post(execute_resize))
}

/// The list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainerList {
    /// One page of containers.
    pub containers: Vec<ZunContainer>,
    /// The next page, if there may be one.
    pub next: Option<String>,
}

impl ZunState {
    /// The container `ident` (name or UUID) as `ctx` may see it; 404 otherwise.
    pub fn container(
        &self,
        ctx: &Context,
        ident: &str,
        all_projects: bool,
    ) -> ZunResult<ContainerRecord> {
        let scope = ctx.scope(all_projects)?;
        self.engine
            .container_in(&scope, ident)
            .map_err(|e| match e.kind {
                ErrorKind::NotFound => {
                    ZunError::not_found(format!("Container {ident} could not be found."))
                }
                _ => e.into(),
            })
    }

    /// The Zun view of one container.
    pub fn view(&self, rec: &ContainerRecord, ctx: &Context, base: &str) -> ZunContainer {
        let sandbox = rec
            .sandbox_id
            .as_deref()
            .and_then(|id| self.engine.sandbox(id).ok());
        view::container(rec, sandbox.as_ref(), ctx, base)
    }
}

/// Fields the list may be filtered by, and sorted by.
const FILTERS: &[&str] = &[
    "name",
    "image",
    "project_id",
    "user_id",
    "memory",
    "host",
    "task_state",
    "status",
    "auto_remove",
];
const SORT_KEYS: &[&str] = &[
    "id",
    "uuid",
    "name",
    "image",
    "status",
    "created_at",
    "updated_at",
    "memory",
    "cpu",
    "project_id",
    "user_id",
    "host",
    "task_state",
];

fn sort_value(c: &ZunContainer, key: &str) -> SortValue {
    let text = |s: &str| SortValue::Text(s.to_string());
    match key {
        // Zun's `id` is the row's insertion order: creation time here.
        "id" | "created_at" => text(&c.created_at),
        "uuid" => text(&c.uuid),
        "name" => text(&c.name),
        "image" => text(&c.image),
        "status" => text(&c.status),
        "updated_at" => c.updated_at.as_deref().map(text).unwrap_or(SortValue::None),
        "memory" => c
            .memory
            .as_deref()
            .and_then(|m| m.parse().ok())
            .map(SortValue::Number)
            .unwrap_or(SortValue::None),
        "cpu" => c.cpu.map(SortValue::Number).unwrap_or(SortValue::None),
        "project_id" => text(&c.project_id),
        "user_id" => text(&c.user_id),
        "host" => c.host.as_deref().map(text).unwrap_or(SortValue::None),
        "task_state" => c.task_state.as_deref().map(text).unwrap_or(SortValue::None),
        _ => SortValue::None,
    }
}

fn matches_filter(c: &ZunContainer, key: &str, want: &str) -> bool {
    match key {
        "name" => c.name == want,
        "image" => c.image == want,
        "project_id" => c.project_id == want,
        "user_id" => c.user_id == want,
        "memory" => c.memory.as_deref() == Some(want),
        "host" => view::host_name() == want,
        "task_state" => c.task_state.as_deref() == Some(want),
        "status" => c.status.eq_ignore_ascii_case(want),
        "auto_remove" => {
            zun_bool("auto_remove", &Value::String(want.into())).is_ok_and(|b| b == c.auto_remove)
        }
        _ => false,
    }
}

/// `GET /v1/containers`.
#[utoipa::path(get, path = "/v1/containers", tag = "containers", params(("limit" = Option<u32>, Query, description = "Page size (max 1000)"), ("marker" = Option<String>, Query, description = "UUID to start after"), ("sort_key" = Option<String>, Query, description = ""), ("sort_dir" = Option<String>, Query, description = "asc or desc"), ("all_projects" = Option<String>, Query, description = "True or False"), ("name" = Option<String>, Query, description = ""), ("image" = Option<String>, Query, description = ""), ("project_id" = Option<String>, Query, description = ""), ("user_id" = Option<String>, Query, description = ""), ("memory" = Option<String>, Query, description = ""), ("host" = Option<String>, Query, description = ""), ("task_state" = Option<String>, Query, description = ""), ("status" = Option<String>, Query, description = ""), ("auto_remove" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = ContainerList), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn list(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> ZunResult<Json<ContainerList>> {
    let mut allowed = vec!["limit", "marker", "sort_key", "sort_dir", "all_projects"];
    allowed.extend_from_slice(FILTERS);
    params.only(&allowed)?;
    let page = Page::from_params(&params, SORT_KEYS, "id")?;
    let scope = ctx.scope(params.flag("all_projects", false)?)?;
    let sandboxes: Vec<SandboxRecord> = s.engine.list_sandboxes()?;
    let mut views: Vec<ZunContainer> = s
        .engine
        .list_containers_in(&scope, true)?
        .iter()
        // Capsule members are shown with their capsule (Zun lists only plain containers here).
        .filter(|r| !r.annotations.contains_key(CAPSULE_ANNOTATION))
        .map(|r| {
            let sb = r
                .sandbox_id
                .as_ref()
                .and_then(|id| sandboxes.iter().find(|sb| &sb.config.id == id));
            view::container(r, sb, &ctx, &base)
        })
        .collect();
    for key in FILTERS {
        if let Some(want) = params.text(key) {
            views.retain(|c| matches_filter(c, key, want));
        }
    }
    let (containers, more) = page.apply(views, sort_value, |c| c.uuid.clone())?;
    let next = match (more, containers.last()) {
        (true, Some(last)) => {
            Some(page.next_link(&format!("{base}/v1/containers"), &params, &last.uuid))
        }
        _ => None,
    };
    Ok(Json(ContainerList { containers, next }))
}

/// `POST /v1/containers[?run=true]`: 202 with the container (started when `run`).
#[utoipa::path(post, path = "/v1/containers", tag = "containers", params(("run" = Option<String>, Query, description = "Start it too: True or False")), request_body(content = CreateBody, content_type = "application/json"), responses((status = 202, description = "Done", body = ZunContainer), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn create(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    BaseUrl(base): BaseUrl,
    params: Params,
    body: JsonBody,
) -> ZunResult<Response> {
    params.only(&["run"])?;
    let run = params.flag("run", false)?;
    let body: CreateBody = body.parse()?;
    let mut req = translate(&body, version, &ctx, &view::host_name())?;
    req.pull =
        super::create::ensure_image(&s.engine, &ctx.project_id, &req.image, req.pull).await?;
    let start = husk_core::now_rfc3339();
    let rec = s.engine.create_container(req).await?;
    s.engine
        .record_action(rec.id(), "create", &ctx.user_id, &start, None);
    let rec = if run {
        match s
            .engine
            .track(
                rec.id(),
                "start",
                &ctx.user_id,
                s.engine.start_container(rec.id()),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // Zun leaves a container that failed to start in place; so does husk (it shows as Created).
                tracing::warn!(container = rec.id(), "zun run: start failed: {e}");
                return Err(e.into());
            }
        }
    } else {
        rec
    };
    let location = format!("{base}/v1/containers/{}", rec.id());
    let mut response = (StatusCode::ACCEPTED, Json(s.view(&rec, &ctx, &base))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `GET /v1/containers/{id}`.
#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = ZunContainer), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn show(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ZunContainer>> {
    params.only(&["all_projects"])?;
    let rec = s.container(&ctx, &id, params.flag("all_projects", false)?)?;
    Ok(Json(s.view(&rec, &ctx, &base)))
}

/// The body of `PATCH /v1/containers/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// CPUs.
    #[schema(value_type = Option<f64>)]
    pub cpu: Option<Value>,
    /// Memory in MiB.
    #[schema(value_type = Option<String>)]
    pub memory: Option<Value>,
    /// New name (1.14).
    pub name: Option<String>,
    /// Heal when lost.
    #[schema(value_type = Option<bool>)]
    pub auto_heal: Option<Value>,
}

/// `PATCH /v1/containers/{id}`: rename (from 1.14); limits of an existing container cannot change.
#[utoipa::path(patch, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), request_body(content = UpdateBody, content_type = "application/json"), responses((status = 200, description = "Done", body = ZunContainer), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn update(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
    body: JsonBody,
) -> ZunResult<Json<ZunContainer>> {
    params.only(&[])?;
    let b: UpdateBody = body.parse()?;
    if let Some(cpu) = &b.cpu {
        super::create::zun_cpu("cpu", cpu)?;
    }
    if let Some(m) = &b.memory {
        super::create::zun_memory("memory", m)?;
    }
    if let Some(h) = &b.auto_heal
        && zun_bool("auto_heal", h)?
    {
        return Err(ZunError::invalid(
            "auto_heal",
            "not supported by husk: lost containers are not recreated",
        ));
    }
    if let Some(n) = &b.name {
        version.require_field("name", Version::new(1, 14))?;
        check_name("name", n)?;
    }
    let rec = s.container(&ctx, &id, false)?;
    ZunAction::Update.check(&rec)?;
    if b.cpu.is_some() || b.memory.is_some() {
        return Err(ZunError::invalid(
            "cpu/memory",
            "not supported by husk: the limits of an existing container cannot change; create a new one",
        ));
    }
    if let Some(n) = &b.name {
        s.engine
            .track(
                rec.id(),
                "update",
                &ctx.user_id,
                s.engine.rename_container(rec.id(), n),
            )
            .await?;
    }
    let rec = s.container(&ctx, rec.id(), false)?;
    Ok(Json(s.view(&rec, &ctx, &base)))
}

/// `DELETE /v1/containers/{id}[?force][&stop]`: 204.
#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("force" = Option<String>, Query, description = "True or False"), ("stop" = Option<String>, Query, description = "True or False"), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 204, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn delete(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&["force", "stop", "all_projects"])?;
    let force = params.flag("force", false)?;
    let stop = params.flag("stop", false)?;
    if force && version >= Version::new(1, 7) {
        ctx.require_admin("container:delete_force")?;
    }
    if stop {
        version.require_field("stop", Version::new(1, 12))?;
    }
    let rec = s.container(&ctx, &id, params.flag("all_projects", false)?)?;
    if let Some(capsule) = rec.annotations.get(CAPSULE_ANNOTATION) {
        return Err(ZunError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("Container {id} belongs to capsule {capsule}: delete the capsule instead."),
        ));
    }
    if force {
        s.engine.remove_container(rec.id(), true).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    ZunAction::Delete { stop }.check(&rec)?;
    if stop && view::status(&rec) == "Running" {
        s.engine.stop_container(rec.id(), None).await?;
    }
    s.engine.remove_container(rec.id(), false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Looks the container up, checks Zun's state table, and returns it.
fn for_action(
    s: &ZunState,
    ctx: &Context,
    id: &str,
    action: ZunAction,
) -> ZunResult<ContainerRecord> {
    let rec = s.container(ctx, id, false)?;
    action.check(&rec)?;
    Ok(rec)
}

#[utoipa::path(post, path = "/v1/containers/{id}/start", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 202, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn start(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Start)?;
    s.engine
        .track(
            rec.id(),
            "start",
            &ctx.user_id,
            s.engine.start_container(rec.id()),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/v1/containers/{id}/stop", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("timeout" = Option<u32>, Query, description = "Seconds before SIGKILL")), responses((status = 202, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn stop(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&["timeout"])?;
    let timeout = params.uint("timeout")?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Stop)?;
    s.engine
        .track(
            rec.id(),
            "stop",
            &ctx.user_id,
            s.engine.stop_container(rec.id(), timeout),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/v1/containers/{id}/reboot", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("timeout" = Option<u32>, Query, description = "Seconds before SIGKILL")), responses((status = 202, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn reboot(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&["timeout"])?;
    let timeout = params.uint("timeout")?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Reboot)?;
    s.engine
        .track(
            rec.id(),
            "reboot",
            &ctx.user_id,
            s.engine.restart_container(rec.id(), timeout),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/v1/containers/{id}/pause", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 202, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn pause(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Pause)?;
    s.engine
        .track(
            rec.id(),
            "pause",
            &ctx.user_id,
            s.engine.pause_container(rec.id()),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/v1/containers/{id}/unpause", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 202, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn unpause(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Unpause)?;
    s.engine
        .track(
            rec.id(),
            "unpause",
            &ctx.user_id,
            s.engine.unpause_container(rec.id()),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/v1/containers/{id}/kill", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("signal" = Option<String>, Query, description = "Name or number")), responses((status = 202, description = "Done"), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn kill(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(&["signal"])?;
    let signal = params.text("signal").unwrap_or("KILL").to_string();
    husk_core::units::parse_signal(&signal)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Kill)?;
    s.engine
        .track(
            rec.id(),
            "kill",
            &ctx.user_id,
            s.engine.kill_container(rec.id(), &signal),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST .../rename?name=` (1.1 to 1.13; later versions rename with PATCH).
#[utoipa::path(post, path = "/v1/containers/{id}/rename", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("name" = Option<String>, Query, description = "New name (API 1.1 to 1.13)")), responses((status = 200, description = "Done", body = ZunContainer), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn rename(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ZunContainer>> {
    version.require_api("rename", Version::new(1, 1), Version::new(1, 13))?;
    params.only(&["name"])?;
    let name = params
        .text("name")
        .ok_or_else(|| ZunError::invalid("name", "a new name is required"))?
        .to_string();
    check_name("name", &name)?;
    let rec = s.container(&ctx, &id, false)?;
    s.engine.rename_container(rec.id(), &name).await?;
    let rec = s.container(&ctx, rec.id(), false)?;
    Ok(Json(s.view(&rec, &ctx, &base)))
}

/// Zun's `since`: Unix seconds, or `YYYY-MM-DD HH:MM:SS,mmm` (UTC).
fn parse_since(text: &str) -> ZunResult<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S,%3f")
        .ok()
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
        .ok_or_else(|| {
            ZunError::invalid(
                "since",
                format!("{text:?} is not Unix seconds or YYYY-MM-DD HH:MM:SS,mmm"),
            )
        })
}

/// `GET .../logs`: the output as one JSON string.
#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("stdout" = Option<String>, Query, description = "True or False"), ("stderr" = Option<String>, Query, description = "True or False"), ("timestamps" = Option<String>, Query, description = "True or False"), ("tail" = Option<String>, Query, description = "Lines or all"), ("since" = Option<String>, Query, description = "Unix seconds or YYYY-MM-DD HH:MM:SS,mmm")), responses((status = 200, description = "Done", body = String), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn logs(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<String>> {
    params.only(&["stdout", "stderr", "timestamps", "tail", "since"])?;
    let stdout = params.flag("stdout", true)?;
    let stderr = params.flag("stderr", true)?;
    let timestamps = params.flag("timestamps", false)?;
    let tail = match params.text("tail") {
        None | Some("") | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ZunError::invalid("tail", format!("{n:?} is not a number or all")))?,
        ),
    };
    let since_nanos = params.text("since").map(parse_since).transpose()?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Logs)?;
    let options = LogOptions {
        follow: false,
        tail,
        since_nanos,
        until_nanos: None,
    };
    let mut stream = s.engine.logs(rec.id(), &options).await?;
    let mut out = String::new();
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        let wanted = if entry.stream == "stderr" {
            stderr
        } else {
            stdout
        };
        if !wanted {
            continue;
        }
        if timestamps {
            out.push_str(&entry.time);
            out.push(' ');
        }
        out.push_str(&entry.text);
    }
    Ok(Json(out))
}

/// The answer of `execute`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    /// Everything the command printed (stdout and stderr interleaved).
    pub output: Option<String>,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The exec's ID (interactive execs).
    pub exec_id: Option<String>,
    /// The WebSocket URL of an interactive exec.
    pub proxy_url: Option<String>,
}

/// The most output `execute` returns.
const EXEC_OUTPUT_LIMIT: usize = 4 << 20;
/// How long `execute` waits for the command.
const EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST .../execute?command=...[&run=false&interactive=true]`.
#[utoipa::path(post, path = "/v1/containers/{id}/execute", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("command" = Option<String>, Query, description = "Shell-quoted command"), ("run" = Option<String>, Query, description = "True or False"), ("interactive" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = ExecResult), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn execute(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ExecResult>> {
    params.only(&["command", "run", "interactive"])?;
    let strict = |key: &str| -> ZunResult<Option<bool>> {
        params
            .text(key)
            .map(|v| zun_bool(key, &Value::String(v.to_string())))
            .transpose()
    };
    let run = strict("run")?.unwrap_or(true);
    let interactive = strict("interactive")?.unwrap_or(false);
    let command = params
        .text("command")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ZunError::invalid("command", "a command is required"))?;
    let command = split_command("command", command)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("execute"))?;
    if !run {
        // Zun's interactive exec: the process starts when the client connects to the URL.
        let exec_id = husk_core::new_id();
        let request = ExecCreate {
            command,
            tty: interactive,
            stdin: interactive,
            ..Default::default()
        };
        let target = super::ws::Target::Exec {
            exec_id: exec_id.clone(),
            request,
        };
        let token = s.sessions.offer(rec.id(), target);
        s.engine.record_action(
            rec.id(),
            "exec_cmd",
            &ctx.user_id,
            &husk_core::now_rfc3339(),
            None,
        );
        return Ok(Json(ExecResult {
            output: None,
            exit_code: None,
            proxy_url: Some(super::ws::url(&base, &token, rec.id(), Some(&exec_id))),
            exec_id: Some(exec_id),
        }));
    }
    let req = ExecCreate {
        command,
        ..Default::default()
    };
    let out = s
        .engine
        .track(
            rec.id(),
            "exec_cmd",
            &ctx.user_id,
            s.engine
                .exec_output(rec.id(), &req, EXEC_OUTPUT_LIMIT, EXEC_TIMEOUT),
        )
        .await?;
    Ok(Json(ExecResult {
        output: Some(String::from_utf8_lossy(&out.combined).into_owned()),
        exit_code: Some(out.exit_code),
        exec_id: None,
        proxy_url: None,
    }))
}

/// The answer of `top`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopResult {
    /// Column names.
    #[serde(rename = "Titles")]
    pub titles: Vec<String>,
    /// One row per process.
    #[serde(rename = "Processes")]
    pub processes: Vec<Vec<String>>,
}

/// `GET .../top[?ps_args=PID ...]`: the processes (only the given PIDs when `ps_args` lists some).
#[utoipa::path(get, path = "/v1/containers/{id}/top", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("ps_args" = Option<String>, Query, description = "PIDs to show")), responses((status = 200, description = "Done", body = TopResult), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn top(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<TopResult>> {
    params.only(&["ps_args"])?;
    let pids: Vec<String> = params
        .text("ps_args")
        .unwrap_or("")
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = pids.iter().find(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ZunError::invalid(
            "ps_args",
            format!("not supported by husk: {bad:?}; give process IDs to show only those"),
        ));
    }
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("top"))?;
    let top = s.engine.top(rec.id()).await?;
    let pid_col = top.titles.iter().position(|t| t == "PID");
    let processes = top
        .processes
        .into_iter()
        .filter(|row| match (pids.is_empty(), pid_col) {
            (true, _) => true,
            (false, Some(i)) => row.get(i).is_some_and(|p| pids.contains(p)),
            (false, None) => false,
        })
        .collect();
    Ok(Json(TopResult {
        titles: top.titles,
        processes,
    }))
}

/// `GET .../stats`: Zun's usage summary, CPU % over a short interval.
#[utoipa::path(get, path = "/v1/containers/{id}/stats", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn stats(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("stats"))?;
    let first = s.engine.stats(rec.id()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = s.engine.stats(rec.id()).await?;
    let cpu_delta = second.cpu_usage_ns.saturating_sub(first.cpu_usage_ns) as f64;
    let system_delta = second.system_cpu_ns.saturating_sub(first.system_cpu_ns) as f64;
    let cpus = f64::from(second.online_cpus.max(1));
    let cpu_percent = if system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    };
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let mem_percent = if second.memory_limit_bytes > 0 {
        second.memory_usage_bytes as f64 / second.memory_limit_bytes as f64 * 100.0
    } else {
        0.0
    };
    Ok(Json(serde_json::json!({
        "CONTAINER": rec.name(),
        "CPU %": (cpu_percent * 100.0).round() / 100.0,
        "MEM USAGE(MiB)": (mib(second.memory_usage_bytes) * 100.0).round() / 100.0,
        "MEM LIMIT(MiB)": (mib(second.memory_limit_bytes) * 100.0).round() / 100.0,
        "MEM %": (mem_percent * 100.0).round() / 100.0,
        "BLOCK I/O(B)": format!("{}/{}", second.block_read_bytes, second.block_write_bytes),
        "NET I/O(B)": format!("{}/{}", second.net_rx_bytes, second.net_tx_bytes),
    })))
}

/// `GET .../network_list` (1.13): the container's network and addresses.
#[utoipa::path(get, path = "/v1/containers/{id}/network_list", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn network_list(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    version.require_api(
        "network_list",
        Version::new(1, 13),
        super::version::MAX_VERSION,
    )?;
    params.only(&[])?;
    let rec = s.container(&ctx, &id, false)?;
    let v = s.view(&rec, &ctx, "");
    let networks: Vec<Value> = v
        .addresses
        .iter()
        .map(|(net, addrs)| {
            serde_json::json!({
                "net_id": net,
                "port_id": null,
                "fixed_ips": addrs.iter().map(|a| serde_json::json!({
                    "ip_address": a.addr, "version": a.version, "subnet_id": a.subnet_id,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "networks": networks })))
}

/// `GET .../attach`: a `ws://` URL joined to the main process (the container must keep stdin open).
#[utoipa::path(get, path = "/v1/containers/{id}/attach", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = String), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn attach(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<String>> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("attach"))?;
    if !rec.config.process.stdin {
        return Err(ZunError::invalid(
            "interactive",
            format!("container {id} is not interactive: create it with interactive=true to attach"),
        ));
    }
    let token = s.sessions.offer(rec.id(), super::ws::Target::Attach);
    s.engine.record_action(
        rec.id(),
        "container_attach",
        &ctx.user_id,
        &husk_core::now_rfc3339(),
        None,
    );
    Ok(Json(super::ws::url(&base, &token, rec.id(), None)))
}

fn size(params: &Params) -> ZunResult<(u16, u16)> {
    let dim = |k: &str| -> ZunResult<u16> {
        let v = params
            .positive(k)?
            .ok_or_else(|| ZunError::invalid(k, "required"))?;
        u16::try_from(v).map_err(|_| ZunError::invalid(k, format!("{v} is over 65535")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST .../resize?h=&w=`: the main process's terminal size.
#[utoipa::path(post, path = "/v1/containers/{id}/resize", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("h" = Option<u32>, Query, description = "Rows"), ("w" = Option<u32>, Query, description = "Columns")), responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn resize(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["h", "w"])?;
    let (rows, cols) = size(&params)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("resize"))?;
    s.engine.resize(rec.id(), rows, cols).await?;
    Ok(Json(Value::Null))
}

/// `POST .../execute_resize?exec_id=&h=&w=`: an interactive exec's terminal size.
#[utoipa::path(post, path = "/v1/containers/{id}/execute_resize", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("exec_id" = Option<String>, Query, description = "64 hex characters"), ("h" = Option<u32>, Query, description = "Rows"), ("w" = Option<u32>, Query, description = "Columns")), responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 403, description = "Forbidden by policy or over quota", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 406, description = "Microversion not supported", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn execute_resize(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["exec_id", "h", "w"])?;
    let exec_id = params.text("exec_id").unwrap_or("");
    if exec_id.len() != 64
        || !exec_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ZunError::invalid(
            "exec_id",
            "64 lowercase hexadecimal characters",
        ));
    }
    let (rows, cols) = size(&params)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("execute_resize"))?;
    s.sessions.resize(rec.id(), exec_id, rows, cols)?;
    Ok(Json(Value::Null))
}

/// The answer of `commit`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitResult {
    /// The new image's UUID.
    pub uuid: String,
}

/// `POST .../commit?repository=&tag=`: a new image from the container's changes (running containers are
/// paused while they are read).
#[utoipa::path(post, path = "/v1/containers/{id}/commit", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("repository" = Option<String>, Query, description = "Repository of the new image"), ("tag" = Option<String>, Query, description = "Tag")), responses((status = 202, description = "Done", body = CommitResult), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
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
            uuid: super::images::uuid_of(&image.id),
        }),
    ))
}

/// The largest archive `get_archive` returns (it travels base64-encoded in JSON).
const ARCHIVE_LIMIT: usize = 64 << 20;

/// Since 1.25 archives travel base64-encoded; before, as the tar bytes in a JSON string.
fn encode_archive(tar: &[u8], version: Version) -> String {
    use base64::Engine as _;
    if version >= Version::new(1, 25) {
        base64::engine::general_purpose::STANDARD.encode(tar)
    } else {
        String::from_utf8_lossy(tar).into_owned()
    }
}

fn archive_path(params: &Params) -> ZunResult<String> {
    params
        .text("path")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ZunError::invalid("path", "a path in the container is required"))
}

/// `GET .../get_archive?path=`: the path as a tar archive with its `stat`.
#[utoipa::path(get, path = "/v1/containers/{id}/get_archive", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("path" = Option<String>, Query, description = "Path in the container")), responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn get_archive(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    use tokio::io::AsyncReadExt;
    params.only(&["path"])?;
    let path = archive_path(&params)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Archive("get_archive"))?;
    let (stat, reader) = s.engine.archive_path(rec.id(), &path).await?;
    let mut tar = Vec::new();
    let read = reader
        .take(ARCHIVE_LIMIT as u64 + 1)
        .read_to_end(&mut tar)
        .await
        .map_err(|e| {
            ZunError::from(husk_core::Error::io(
                format!("read the archive of {path}"),
                e,
            ))
        })?;
    if read > ARCHIVE_LIMIT {
        return Err(ZunError::invalid(
            "path",
            format!("{path} makes an archive over {ARCHIVE_LIMIT} bytes: copy less at a time"),
        ));
    }
    Ok(Json(serde_json::json!({
        "data": encode_archive(&tar, version),
        "stat": {
            "name": stat.name,
            "size": stat.size,
            "mode": stat.mode,
            "mtime": stat.mtime,
            "linkTarget": stat.link_target,
        },
    })))
}

/// The body of `put_archive`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveBody {
    /// A tar archive (base64 since 1.25).
    pub data: String,
}

/// `POST .../put_archive?path=`: unpacks a tar archive into a directory of the container.
#[utoipa::path(post, path = "/v1/containers/{id}/put_archive", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("path" = Option<String>, Query, description = "Directory in the container")), request_body(content = ArchiveBody, content_type = "application/json"), responses((status = 200, description = "Done", body = serde_json::Value), (status = 400, description = "Bad input (the field is named)", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 409, description = "Invalid state", body = ErrorBody)))]
pub(crate) async fn put_archive(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    Path(id): Path<String>,
    params: Params,
    body: JsonBody,
) -> ZunResult<Json<Value>> {
    use base64::Engine as _;
    params.only(&["path"])?;
    let path = archive_path(&params)?;
    let b: ArchiveBody = body.parse()?;
    let tar = if version >= Version::new(1, 25) {
        base64::engine::general_purpose::STANDARD
            .decode(b.data.trim())
            .map_err(|e| ZunError::invalid("data", format!("not base64: {e}")))?
    } else {
        b.data.into_bytes()
    };
    let rec = for_action(&s, &ctx, &id, ZunAction::Archive("put_archive"))?;
    let reader: husk_core::ArchiveReader = Box::pin(std::io::Cursor::new(tar));
    s.engine
        .track(
            rec.id(),
            "put_archive",
            &ctx.user_id,
            s.engine.extract_archive(
                rec.id(),
                &path,
                reader,
                &husk_core::ExtractOptions::default(),
            ),
        )
        .await?;
    Ok(Json(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("10").unwrap(), 10_000_000_000);
        assert_eq!(
            parse_since("1970-01-01 00:00:01,500").unwrap(),
            1_500_000_000
        );
        assert!(parse_since("yesterday").is_err());
    }
}
