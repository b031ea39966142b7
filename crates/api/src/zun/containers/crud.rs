//! The container itself: list, create, show, update (and the older rename), delete, and its networks.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use husk_api_types::ContainerUpdate;
use husk_core::{Resources, SandboxRecord};
use husk_engine::capsules::CAPSULE_ANNOTATION;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::zun::context::Context;
use crate::zun::create::{CreateBody, check_name, translate, zun_bool};
use crate::zun::error::{ZunError, ZunErrors, ZunResult};
use crate::zun::params::{JsonBody, Page, Params, SortValue};
use crate::zun::version::Version;
use crate::zun::view::{self, ZunAction, ZunContainer};
use crate::zun::{BaseUrl, ZunState, accepted};

/// The list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainerList {
    /// One page of containers.
    pub containers: Vec<ZunContainer>,
    /// The next page, if there may be one.
    pub next: Option<String>,
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
        "id" | "created_at" => text(&c.created_at.to_string()),
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
#[utoipa::path(get, path = "/v1/containers", tag = "containers", params(("limit" = Option<u32>, Query, description = "Page size (max 1000)"), ("marker" = Option<String>, Query, description = "UUID to start after"), ("sort_key" = Option<String>, Query, description = ""), ("sort_dir" = Option<String>, Query, description = "asc or desc"), ("all_projects" = Option<String>, Query, description = "True or False"), ("name" = Option<String>, Query, description = ""), ("image" = Option<String>, Query, description = ""), ("project_id" = Option<String>, Query, description = ""), ("user_id" = Option<String>, Query, description = ""), ("memory" = Option<String>, Query, description = ""), ("host" = Option<String>, Query, description = ""), ("task_state" = Option<String>, Query, description = ""), ("status" = Option<String>, Query, description = ""), ("auto_remove" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = ContainerList), ZunErrors))]
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
#[utoipa::path(post, path = "/v1/containers", tag = "containers", params(("run" = Option<String>, Query, description = "Start it too: True or False")), request_body(content = CreateBody, content_type = "application/json"), responses((status = 202, description = "Done", body = ZunContainer), ZunErrors))]
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
        crate::zun::create::ensure_image(&s.engine, &ctx.project_id, &req.image, req.pull).await?;
    let start = husk_core::Timestamp::now();
    let rec = s.engine.create_container(req).await?;
    s.engine
        .record_action(rec.id(), "create", &ctx.user_id, start, None);
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
    Ok(accepted(&location, s.view(&rec, &ctx, &base)))
}

/// `GET /v1/containers/{id}`.
#[utoipa::path(get, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = ZunContainer), ZunErrors))]
pub(crate) async fn show(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ZunContainer>> {
    let rec = s.container(&ctx, &id, params.only_all_projects()?)?;
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

/// `PATCH /v1/containers/{id}`: new CPU and memory limits (applied at once to a running container, as Zun's
/// docker driver does with `docker update`; growth counts against the project's quota) and, from 1.14, a new
/// name.
#[utoipa::path(patch, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), request_body(content = UpdateBody, content_type = "application/json"), responses((status = 200, description = "Done", body = ZunContainer), ZunErrors))]
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
    let cpu = b
        .cpu
        .as_ref()
        .map(|v| crate::zun::create::zun_cpu("cpu", v))
        .transpose()?;
    let memory = b
        .memory
        .as_ref()
        .map(|v| crate::zun::create::zun_memory("memory", v))
        .transpose()?;
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
    if cpu.is_some() || memory.is_some() {
        let update = ContainerUpdate {
            resources: Resources {
                memory_bytes: memory.map(|mib| mib << 20),
                nano_cpus: cpu.map(crate::zun::create::nano_cpus),
                ..Default::default()
            },
            restart_policy: None,
        };
        s.engine
            .track(
                rec.id(),
                "update",
                &ctx.user_id,
                s.engine.update_container(rec.id(), &update),
            )
            .await?;
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
#[utoipa::path(delete, path = "/v1/containers/{id}", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("force" = Option<String>, Query, description = "True or False"), ("stop" = Option<String>, Query, description = "True or False"), ("all_projects" = Option<String>, Query, description = "True or False")), responses((status = 204, description = "Done"), ZunErrors))]
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

/// `POST .../rename?name=` (1.1 to 1.13; later versions rename with PATCH).
#[utoipa::path(post, path = "/v1/containers/{id}/rename", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("name" = Option<String>, Query, description = "New name (API 1.1 to 1.13)")), responses((status = 200, description = "Done", body = ZunContainer), ZunErrors))]
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

/// `GET .../network_list` (1.13): the container's network and addresses.
#[utoipa::path(get, path = "/v1/containers/{id}/network_list", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
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
        crate::zun::version::MAX_VERSION,
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
