//! `/v1/hosts`, `/v1/services` and `/v1/availability_zones`: this host as Zun's single compute node.

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use husk_engine::host::{HostInfo, ServiceChange, ServiceRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::context::Context;
use super::create::AVAILABILITY_ZONE;
use super::error::{ZunError, ZunErrors, ZunResult};
use super::params::{Page, Params, SortValue, read_limited};
use super::version::{MAX_VERSION, Version};
use super::view::{Link, links, runtime_of_driver};
use super::{BaseUrl, ZunState};

/// The routes.
pub fn routes() -> Router<ZunState> {
    Router::new()
        .route("/v1/hosts", get(list_hosts))
        .route("/v1/hosts/{ident}", get(show_host))
        .route("/v1/services", get(list_services).delete(delete_service))
        .route("/v1/services/enable", put(enable))
        .route("/v1/services/disable", put(disable))
        .route("/v1/services/force_down", put(force_down))
        .route("/v1/availability_zones", get(zones))
}

/// A host in Zun's shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ZunHost {
    /// ID.
    pub uuid: String,
    /// Links.
    pub links: Vec<Link>,
    /// Name.
    pub hostname: String,
    /// Memory, MiB.
    pub mem_total: u64,
    /// Memory in use, MiB.
    pub mem_used: u64,
    /// CPUs.
    pub cpus: u32,
    /// CPUs reserved by containers.
    pub cpu_used: f64,
    /// Disk, GiB.
    pub disk_total: u64,
    /// Disk used, GiB.
    pub disk_used: u64,
    /// Whether disk quotas work (no).
    pub disk_quota_supported: bool,
    /// Containers.
    pub total_containers: usize,
    /// Distribution.
    pub os: String,
    /// `linux`.
    pub os_type: String,
    /// Architecture.
    pub architecture: String,
    /// Kernel release.
    pub kernel_version: String,
    /// Labels.
    pub labels: serde_json::Map<String, Value>,
    /// Runtimes.
    pub runtimes: Vec<String>,
    /// CPU pinning (1.29; no).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_cpu_pinning: Option<bool>,
}

fn host_view(h: HostInfo, base: &str, version: Version) -> ZunHost {
    ZunHost {
        links: links(base, "hosts", &h.uuid),
        uuid: h.uuid,
        hostname: h.hostname,
        mem_total: h.mem_total,
        mem_used: h.mem_used,
        cpus: h.cpus,
        cpu_used: h.cpu_used,
        disk_total: h.disk_total,
        disk_used: h.disk_used,
        disk_quota_supported: false,
        total_containers: h.total_containers,
        os: h.os,
        os_type: h.os_type,
        architecture: h.architecture,
        kernel_version: h.kernel_version,
        labels: Default::default(),
        runtimes: h
            .runtimes
            .iter()
            .map(|d| runtime_of_driver(d).to_string())
            .collect(),
        enable_cpu_pinning: (version >= Version::new(1, 29)).then_some(false),
    }
}

#[utoipa::path(get, path = "/v1/hosts", tag = "hosts and services", params(("limit" = Option<u32>, Query, description = ""), ("marker" = Option<String>, Query, description = ""), ("sort_key" = Option<String>, Query, description = ""), ("sort_dir" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn list_hosts(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> ZunResult<Json<Value>> {
    version.require_api("hosts", Version::new(1, 4), MAX_VERSION)?;
    params.only(&["limit", "marker", "sort_key", "sort_dir"])?;
    ctx.require_admin("host:get_all")?;
    let page = Page::from_params(&params, &["id", "uuid", "hostname"], "id")?;
    let hosts = vec![host_view(s.engine.host_info()?, &base, version)];
    let (hosts, _) = page.apply(
        hosts,
        |h, _| SortValue::Text(h.hostname.clone()),
        |h| h.uuid.clone(),
    )?;
    Ok(Json(json!({"hosts": hosts, "next": null})))
}

#[utoipa::path(get, path = "/v1/hosts/{ident}", tag = "hosts and services", params(("ident" = String, Path, description = "UUID or host name")), responses((status = 200, description = "Done", body = ZunHost), ZunErrors))]
pub(crate) async fn show_host(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Extension(version): Extension<Version>,
    BaseUrl(base): BaseUrl,
    Path(ident): Path<String>,
    params: Params,
) -> ZunResult<Json<ZunHost>> {
    version.require_api("hosts", Version::new(1, 4), MAX_VERSION)?;
    params.only(&[])?;
    ctx.require_admin("host:get")?;
    let h = s.engine.host_info()?;
    if ident != h.uuid && ident != h.hostname {
        return Err(ZunError::not_found(format!(
            "Host {ident} could not be found."
        )));
    }
    Ok(Json(host_view(h, &base, version)))
}

fn service_view(svc: &ServiceRecord) -> Value {
    let state = if svc.forced_down { "down" } else { "up" };
    json!({
        "id": 1,
        "binary": svc.binary,
        "host": svc.host,
        "state": state,
        "disabled": svc.disabled,
        "disabled_reason": svc.disabled_reason,
        "forced_down": svc.forced_down,
        "availability_zone": AVAILABILITY_ZONE,
        "report_count": 1,
        "last_seen_up": husk_core::Timestamp::now(),
        "created_at": svc.created_at,
        "updated_at": svc.updated_at,
    })
}

#[utoipa::path(get, path = "/v1/services", tag = "hosts and services", responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn list_services(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    ctx.require_admin("zun-service:get_all")?;
    let svc = s.engine.compute_service()?;
    Ok(Json(json!({"services": [service_view(&svc)]})))
}

/// The arguments of a service change, from the query string or a JSON body (clients use both).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBody {
    /// Host name.
    pub host: Option<String>,
    /// `zun-compute`.
    pub binary: Option<String>,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// Forced down (`True`/`False`).
    #[schema(value_type = Option<bool>)]
    pub forced_down: Option<Value>,
}

async fn service_args(params: &Params, request: axum::extract::Request) -> ZunResult<ServiceBody> {
    params.only(&["host", "binary", "disabled_reason", "forced_down"])?;
    let bytes = read_limited(request).await?;
    let mut b: ServiceBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        ServiceBody::default()
    } else {
        super::params::parse_json(&bytes)?
    };
    let text = |k: &str| params.text(k).map(str::to_string);
    b.host = b.host.or_else(|| text("host"));
    b.binary = b.binary.or_else(|| text("binary"));
    b.disabled_reason = b.disabled_reason.or_else(|| text("disabled_reason"));
    if b.forced_down.is_none() {
        b.forced_down = text("forced_down").map(Value::String);
    }
    Ok(b)
}

fn host_binary(b: &ServiceBody) -> ZunResult<(String, String)> {
    let host = b
        .host
        .clone()
        .ok_or_else(|| ZunError::invalid("host", "the host is required"))?;
    let binary = b
        .binary
        .clone()
        .ok_or_else(|| ZunError::invalid("binary", "the binary is required"))?;
    Ok((host, binary))
}

async fn change(
    s: &ZunState,
    ctx: &Context,
    action: &str,
    params: Params,
    request: axum::extract::Request,
    what: impl FnOnce(&ServiceBody) -> ZunResult<ServiceChange>,
) -> ZunResult<Json<Value>> {
    ctx.require_admin(&format!("zun-service:{action}"))?;
    let b = service_args(&params, request).await?;
    let (host, binary) = host_binary(&b)?;
    let svc = s.engine.change_service(&host, &binary, what(&b)?)?;
    let mut out = json!({"host": svc.host, "binary": svc.binary});
    match action {
        "force_down" => out["forced_down"] = json!(svc.forced_down),
        _ => {
            out["disabled"] = json!(svc.disabled);
            out["disabled_reason"] = json!(svc.disabled_reason);
        }
    }
    Ok(Json(json!({ "service": out })))
}

#[utoipa::path(put, path = "/v1/services/enable", tag = "hosts and services", params(("host" = Option<String>, Query, description = ""), ("binary" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn enable(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    params: Params,
    request: axum::extract::Request,
) -> ZunResult<Json<Value>> {
    change(&s, &ctx, "enable", params, request, |_| {
        Ok(ServiceChange::Enable)
    })
    .await
}

#[utoipa::path(put, path = "/v1/services/disable", tag = "hosts and services", params(("host" = Option<String>, Query, description = ""), ("binary" = Option<String>, Query, description = ""), ("disabled_reason" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn disable(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    params: Params,
    request: axum::extract::Request,
) -> ZunResult<Json<Value>> {
    change(&s, &ctx, "disable", params, request, |b| {
        Ok(ServiceChange::Disable(b.disabled_reason.clone()))
    })
    .await
}

#[utoipa::path(put, path = "/v1/services/force_down", tag = "hosts and services", params(("host" = Option<String>, Query, description = ""), ("binary" = Option<String>, Query, description = ""), ("forced_down" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn force_down(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    params: Params,
    request: axum::extract::Request,
) -> ZunResult<Json<Value>> {
    change(&s, &ctx, "force_down", params, request, |b| {
        let v = b
            .forced_down
            .as_ref()
            .ok_or_else(|| ZunError::invalid("forced_down", "True or False is required"))?;
        let down = match v {
            Value::Bool(x) => *x,
            Value::String(t) => {
                Params(std::iter::once(("forced_down".to_string(), t.clone())).collect())
                    .flag("forced_down", false)?
            }
            other => {
                return Err(ZunError::invalid(
                    "forced_down",
                    format!("{other} is not a boolean"),
                ));
            }
        };
        Ok(ServiceChange::ForceDown(down))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/services", tag = "hosts and services", params(("host" = Option<String>, Query, description = ""), ("binary" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn delete_service(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["host", "binary"])?;
    ctx.require_admin("zun-service:delete")?;
    let host = params
        .text("host")
        .ok_or_else(|| ZunError::invalid("host", "the host is required"))?;
    let binary = params
        .text("binary")
        .ok_or_else(|| ZunError::invalid("binary", "the binary is required"))?;
    s.engine.reset_service(host, binary)?;
    Ok(Json(json!({})))
}

#[utoipa::path(get, path = "/v1/availability_zones", tag = "hosts and services", params(("limit" = Option<u32>, Query, description = ""), ("marker" = Option<String>, Query, description = ""), ("sort_key" = Option<String>, Query, description = ""), ("sort_dir" = Option<String>, Query, description = "")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn zones(
    Extension(_ctx): Extension<Context>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["limit", "marker", "sort_key", "sort_dir"])?;
    Ok(Json(
        json!({"availability_zones": [{"availability_zone": AVAILABILITY_ZONE}]}),
    ))
}
