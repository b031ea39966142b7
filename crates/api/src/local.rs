//! husk's own HTTP API, used by the `husk` CLI over the daemon's unix socket (JSON, under `/husk/v1`).
//!
//! Streams: `logs` answers with JSON lines; `attach` and `exec` upgrade the connection (`Upgrade: tcp`, as
//! Docker does) to a raw byte stream carrying husk's stdio frames in both directions.

use std::str::FromStr;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use husk_api_types::{
    ContainerCreate, ContainerView, ExecCreate, SandboxCreate, SandboxView, WaitCondition,
};
use husk_core::stdio::BoxStdio;
use husk_core::{Error, LogOptions, Result};
use husk_engine::Engine;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

mod storage;

/// An error as the local API sends it: the status from its kind, the error as JSON.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.kind.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

pub(crate) type ApiResult<T> = std::result::Result<T, ApiError>;

/// The router of the local API.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/husk/v1/version", get(version))
        .route("/husk/v1/info", get(info))
        .route(
            "/husk/v1/containers",
            get(list_containers).post(create_container),
        )
        .route("/husk/v1/containers/run", post(run_container))
        .route("/husk/v1/containers/prune", post(prune_containers))
        .route("/husk/v1/events", get(events))
        .route(
            "/husk/v1/containers/{id}",
            get(inspect_container).delete(remove_container),
        )
        .route("/husk/v1/containers/{id}/start", post(start_container))
        .route("/husk/v1/containers/{id}/stop", post(stop_container))
        .route("/husk/v1/containers/{id}/restart", post(restart_container))
        .route("/husk/v1/containers/{id}/kill", post(kill_container))
        .route("/husk/v1/containers/{id}/pause", post(pause_container))
        .route("/husk/v1/containers/{id}/unpause", post(unpause_container))
        .route("/husk/v1/containers/{id}/rename", post(rename_container))
        .route("/husk/v1/containers/{id}/update", post(update_container))
        .route("/husk/v1/containers/{id}/wait", post(wait_container))
        .route("/husk/v1/containers/{id}/logs", get(logs))
        .route("/husk/v1/containers/{id}/top", get(top))
        .route("/husk/v1/containers/{id}/stats", get(stats))
        .route("/husk/v1/containers/{id}/resize", post(resize))
        .route("/husk/v1/containers/{id}/attach", post(attach))
        .route("/husk/v1/containers/{id}/exec", post(exec))
        .route(
            "/husk/v1/sandboxes",
            get(list_sandboxes).post(create_sandbox),
        )
        .route(
            "/husk/v1/sandboxes/{id}",
            get(inspect_sandbox).delete(remove_sandbox),
        )
        .route("/husk/v1/networks", get(list_networks).post(create_network))
        .route(
            "/husk/v1/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
        .route("/husk/v1/images", get(list_images))
        .route("/husk/v1/images/load", post(load_images))
        .route("/husk/v1/images/tag", post(tag_image))
        .route("/husk/v1/images/inspect", get(inspect_image))
        .route("/husk/v1/images/remove", post(remove_image))
        .route("/husk/v1/images/pull", post(crate::local_images::pull))
        .route("/husk/v1/images/push", post(crate::local_images::push))
        .route("/husk/v1/images/save", post(crate::local_images::save))
        .route("/husk/v1/images/prune", post(crate::local_images::prune))
        .route("/husk/v1/auth/login", post(crate::local_images::login))
        .route("/husk/v1/auth/logout", post(crate::local_images::logout))
        .route(
            "/husk/v1/containers/{id}/commit",
            post(crate::local_images::commit),
        )
        .route("/husk/v1/system/df", get(crate::local_images::system_df))
        .merge(storage::routes())
        .with_state(engine)
}

async fn version() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({"Version": env!("CARGO_PKG_VERSION"), "ApiVersion": "1", "Os": "linux", "Arch": std::env::consts::ARCH}),
    )
}

async fn info(State(engine): State<Engine>) -> ApiResult<Json<husk_api_types::Info>> {
    Ok(Json(engine.info().await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    all: bool,
}

fn views(engine: &Engine, recs: Vec<husk_core::ContainerRecord>) -> Result<Vec<ContainerView>> {
    let sandboxes = engine.list_sandboxes()?;
    Ok(recs
        .iter()
        .map(|r| {
            let sb = r
                .sandbox_id
                .as_ref()
                .and_then(|id| sandboxes.iter().find(|s| &s.config.id == id));
            ContainerView::new(r, sb)
        })
        .collect())
}

async fn list_containers(
    State(engine): State<Engine>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ContainerView>>> {
    let recs = engine.list_containers(q.all)?;
    Ok(Json(views(&engine, recs)?))
}

async fn prune_containers(
    State(engine): State<Engine>,
) -> ApiResult<Json<husk_api_types::ContainerPruneReport>> {
    Ok(Json(engine.prune_containers().await?))
}

/// Parses a JSON body with a clear error (axum's own rejection text is not ours).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("invalid request body: {e}")))
}

async fn create_container(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<ContainerView>)> {
    let req: ContainerCreate = parse_body(&body)?;
    let rec = engine.create_container(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(engine.inspect_container(rec.id())?),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RunQuery {
    detach: bool,
    stdin: bool,
}

/// `husk run`: create, attach (unless detached) and start in one request. Detached, it answers with the
/// container; attached, it upgrades to the stdio stream.
async fn run_container(
    State(engine): State<Engine>,
    Query(q): Query<RunQuery>,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 2 << 20)
        .await
        .map_err(|e| Error::bad_request(format!("read the request body: {e}")))?;
    let req: ContainerCreate = parse_body(&bytes)?;
    let (rec, stdio) = engine
        .run_container(req, if q.detach { None } else { Some(q.stdin) })
        .await?;
    match stdio {
        Some(stdio) => {
            let mut response = upgrade(Request::from_parts(parts, Body::empty()), stdio);
            if let Ok(v) = HeaderValue::from_str(rec.id()) {
                response.headers_mut().insert("x-husk-container-id", v);
            }
            Ok(response)
        }
        None => Ok((
            StatusCode::CREATED,
            Json(engine.inspect_container(rec.id())?),
        )
            .into_response()),
    }
}

async fn inspect_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<Json<ContainerView>> {
    Ok(Json(engine.inspect_container(&id)?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ForceQuery {
    force: bool,
    /// Also remove the container's anonymous volumes (`rm -v`).
    volumes: bool,
}

async fn remove_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    engine
        .remove_container_with(&id, q.force, q.volumes)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.start_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TimeoutQuery {
    t: Option<u32>,
}

async fn stop_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<TimeoutQuery>,
) -> ApiResult<StatusCode> {
    engine.stop_container(&id, q.t).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<TimeoutQuery>,
) -> ApiResult<StatusCode> {
    engine.restart_container(&id, q.t).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignalQuery {
    signal: String,
}

async fn kill_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<SignalQuery>,
) -> ApiResult<StatusCode> {
    engine.kill_container(&id, &q.signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.pause_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpause_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    engine.unpause_container(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RenameQuery {
    name: String,
}

async fn update_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<ContainerView>> {
    let req: husk_api_types::ContainerUpdate = parse_body(&body)?;
    let rec = engine.update_container(&id, &req).await?;
    Ok(Json(engine.inspect_container(rec.id())?))
}

async fn rename_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<RenameQuery>,
) -> ApiResult<StatusCode> {
    engine.rename_container(&id, &q.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WaitQuery {
    condition: String,
}

async fn wait_container(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> ApiResult<Json<husk_api_types::WaitResult>> {
    let condition = WaitCondition::from_str(&q.condition)?;
    Ok(Json(engine.wait_container(&id, condition).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogsQuery {
    follow: bool,
    tail: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

async fn logs(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let tail = match q.tail.as_deref() {
        None | Some("") | Some("all") => None,
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            Error::invalid("tail", format!("invalid --tail {n:?}: use a number or all"))
        })?),
    };
    let options = LogOptions {
        follow: q.follow,
        tail,
        since_nanos: q
            .since
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| husk_core::units::parse_since(s, now_nanos()))
            .transpose()?,
        until_nanos: q
            .until
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| husk_core::units::parse_since(s, now_nanos()))
            .transpose()?,
    };
    let stream = engine.logs(&id, &options).await?;
    let body = stream.map(
        |entry| -> std::result::Result<bytes::Bytes, std::io::Error> {
            let mut line = match entry {
                Ok(e) => serde_json::to_vec(&e).unwrap_or_default(),
                Err(e) => serde_json::to_vec(&serde_json::json!({"error": e})).unwrap_or_default(),
            };
            line.push(b'\n');
            Ok(bytes::Bytes::from(line))
        },
    );
    Ok(ndjson(body))
}

/// A streamed answer of JSON lines (`application/x-ndjson`).
pub(crate) fn ndjson<S>(lines: S) -> Response
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// Container events as they happen, one JSON object per line (Docker's shape), until the client goes. A client
/// too slow for the daemon's buffer (1024 events) misses the oldest.
async fn events(State(engine): State<Engine>) -> Response {
    let receiver = engine.subscribe();
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    let mut line = serde_json::to_vec(&husk_api_types::EventView::from(&event))
                        .unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(line)), receiver));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    ndjson(body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TopQuery {
    ps_args: Option<String>,
}

async fn top(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<TopQuery>,
) -> ApiResult<Json<husk_core::Top>> {
    Ok(Json(engine.top_with(&id, q.ps_args.as_deref()).await?))
}

async fn stats(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<Json<husk_core::Stats>> {
    Ok(Json(engine.stats(&id).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResizeQuery {
    h: u16,
    w: u16,
}

async fn resize(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<ResizeQuery>,
) -> ApiResult<StatusCode> {
    engine.resize(&id, q.h, q.w).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Answers 101 and splices the upgraded connection with the process's stdio stream.
/// Copies between a client and a process's stdio stream until the process's side ends. Input that can no longer
/// be delivered (the process is gone: a late `CloseStdin` meets a closed stream) is dropped, never the rest of
/// the output: `copy_bidirectional` gave up both directions on the first error, and a client could lose the exit
/// frame that was already on its way.
async fn relay<C>(client: C, stdio: BoxStdio)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_process, mut to_process) = tokio::io::split(stdio);
    let input = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_process).await;
        let _ = to_process.shutdown().await;
    };
    let output = async {
        let _ = tokio::io::copy(&mut from_process, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(input, output);
    tokio::select! {
        _ = &mut input => output.await,
        _ = &mut output => {}
    }
}

fn upgrade(mut request: Request, stdio: BoxStdio) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(TokioIo::new(upgraded), stdio).await,
            Err(e) => tracing::warn!("stream upgrade failed: {e}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    response
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AttachQuery {
    stdin: bool,
}

async fn attach(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    request: Request,
) -> ApiResult<Response> {
    let stdio = engine.attach(&id, q.stdin).await?;
    Ok(upgrade(request, stdio))
}

async fn exec(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    // The body is small JSON; read it while keeping the upgrade handle in the parts' extensions.
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| Error::bad_request(format!("read the request body: {e}")))?;
    let req: ExecCreate = parse_body(&bytes)?;
    let stdio = engine.exec(&id, &req).await?;
    Ok(upgrade(Request::from_parts(parts, Body::empty()), stdio))
}

async fn list_sandboxes(State(engine): State<Engine>) -> ApiResult<Json<Vec<SandboxView>>> {
    let list = engine.list_sandboxes()?;
    let mut out = Vec::with_capacity(list.len());
    for sb in list {
        let containers = engine.sandbox_containers(&sb.config.id)?;
        let mut view = SandboxView::new(&sb, containers);
        view.volumes = engine.sandbox_volume_names(&sb.config.id)?;
        out.push(view);
    }
    Ok(Json(out))
}

async fn create_sandbox(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<SandboxView>)> {
    let req: SandboxCreate = parse_body(&body)?;
    let sb = engine.create_sandbox(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(engine.inspect_sandbox(&sb.config.id)?),
    ))
}

async fn inspect_sandbox(
    State(engine): State<Engine>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxView>> {
    Ok(Json(engine.inspect_sandbox(&id)?))
}

async fn remove_sandbox(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    engine.remove_sandbox(&id, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_images(
    State(engine): State<Engine>,
) -> ApiResult<Json<Vec<husk_api_types::ImageView>>> {
    Ok(Json(engine.list_images()?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoadQuery {
    name: Option<String>,
}

async fn load_images(
    State(engine): State<Engine>,
    Query(q): Query<LoadQuery>,
    body: Body,
) -> ApiResult<Json<Vec<husk_api_types::LoadedImage>>> {
    let stream = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let reader = tokio_util::io::StreamReader::new(stream);
    Ok(Json(engine.load_images(reader, q.name).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NameQuery {
    name: String,
    force: bool,
}

async fn inspect_image(
    State(engine): State<Engine>,
    Query(q): Query<NameQuery>,
) -> ApiResult<Json<husk_api_types::ImageView>> {
    Ok(Json(engine.inspect_image(&q.name)?))
}

async fn remove_image(
    State(engine): State<Engine>,
    Query(q): Query<NameQuery>,
) -> ApiResult<Json<Vec<husk_api_types::Removed>>> {
    Ok(Json(engine.remove_image(&q.name, q.force)?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TagQuery {
    source: String,
    target: String,
}

async fn tag_image(
    State(engine): State<Engine>,
    Query(q): Query<TagQuery>,
) -> ApiResult<StatusCode> {
    engine.tag_image(&q.source, &q.target)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_networks(
    State(engine): State<Engine>,
) -> ApiResult<Json<Vec<husk_api_types::NetworkInfo>>> {
    Ok(Json(engine.list_networks().await?))
}

async fn inspect_network(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> ApiResult<Json<husk_api_types::NetworkInfo>> {
    Ok(Json(engine.inspect_network(&name).await?))
}

/// The body of `POST /husk/v1/networks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkCreateBody {
    name: String,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
}

async fn create_network(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<husk_api_types::NetworkInfo>)> {
    let b: NetworkCreateBody = parse_body(&body)?;
    let info = engine
        .create_network(husk_api_types::NewNetwork {
            name: b.name,
            subnet: b.subnet,
            gateway: b.gateway,
            bridge: b.bridge,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn remove_network(
    State(engine): State<Engine>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    engine.remove_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn the_output_outlives_input_the_process_can_no_longer_take() {
        let (client, mut client_far) = tokio::io::duplex(64);
        let (process, mut process_far) = tokio::io::duplex(64);
        // The process writes its last output and goes before the client's last input arrives.
        process_far.write_all(b"exit frame").await.unwrap();
        drop(process_far);
        let relayed = tokio::spawn(relay(client, Box::new(process)));
        client_far.write_all(b"late input").await.unwrap();
        let mut got = Vec::new();
        client_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"exit frame");
        relayed.await.unwrap();
    }
}
