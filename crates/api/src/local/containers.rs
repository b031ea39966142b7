//! Containers in the local API: create, run, inspect and remove; the lifecycle actions; logs, top, stats and
//! events; `attach` and `exec`, which upgrade the connection to the process's stdio stream; and copying files in
//! and out.
//!
//! `GET /husk/v1/containers/{id}/archive?path=` answers with a tar stream (`application/x-tar`) whose top entry
//! is the path's last component; `PUT` with the same path unpacks the request's tar stream into that directory;
//! `GET .../archive/stat?path=` describes the path. An archive that fails half-way ends the response with an
//! error instead of a clean end, so a client never mistakes a truncated archive for a whole one.

use std::str::FromStr;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use husk_api_types::{
    ContainerCreate, ContainerStats, ContainerSummary, ContainerView, ExecCreate, WaitCondition,
};
use husk_core::stdio::BoxStdio;
use husk_core::{Error, ExtractOptions, LogOptions, PathStat, Result};
use husk_engine::Engine;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tracing::Instrument;

use super::{ApiResult, ForceQuery, ndjson, parse_body, tar};

/// The routes under `/husk/v1/containers`, and `/husk/v1/events`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
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
        .route(
            "/husk/v1/containers/{id}/start",
            post(|e, id| lifecycle(e, id, Lifecycle::Start)),
        )
        .route(
            "/husk/v1/containers/{id}/stop",
            post(|e, id, Query(q): Query<TimeoutQuery>| lifecycle(e, id, Lifecycle::Stop(q.t))),
        )
        .route(
            "/husk/v1/containers/{id}/restart",
            post(|e, id, Query(q): Query<TimeoutQuery>| lifecycle(e, id, Lifecycle::Restart(q.t))),
        )
        .route(
            "/husk/v1/containers/{id}/kill",
            post(|e, id, Query(q): Query<SignalQuery>| lifecycle(e, id, Lifecycle::Kill(q.signal))),
        )
        .route(
            "/husk/v1/containers/{id}/pause",
            post(|e, id| lifecycle(e, id, Lifecycle::Pause)),
        )
        .route(
            "/husk/v1/containers/{id}/unpause",
            post(|e, id| lifecycle(e, id, Lifecycle::Unpause)),
        )
        .route("/husk/v1/containers/{id}/rename", post(rename_container))
        .route("/husk/v1/containers/{id}/update", post(update_container))
        .route("/husk/v1/containers/{id}/wait", post(wait_container))
        .route("/husk/v1/containers/{id}/logs", get(logs))
        .route("/husk/v1/containers/{id}/top", get(top))
        .route("/husk/v1/containers/{id}/stats", get(stats))
        .route("/husk/v1/stats", get(stats_of))
        .route("/husk/v1/containers/{id}/resize", post(resize))
        .route("/husk/v1/containers/{id}/attach", post(attach))
        .route("/husk/v1/containers/{id}/exec", post(exec))
        .route(
            "/husk/v1/containers/{id}/archive",
            get(get_archive).put(put_archive),
        )
        .route("/husk/v1/containers/{id}/archive/stat", get(stat_path))
}

/// `?all=&view=` of the container list.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    /// Stopped containers too.
    all: bool,
    /// How much of each container.
    view: ListView,
}

/// How much of each container the list gives.
#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ListView {
    /// [`ContainerView`]s, as `inspect`.
    #[default]
    Full,
    /// [`ContainerSummary`]s: what `ps` shows.
    Summary,
}

/// The containers, newest first, as full views or summaries (`?view=summary`).
async fn list_containers(
    State(engine): State<Engine>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Response> {
    let recs = engine.list_containers(q.all)?;
    let sandboxes = engine.list_sandboxes()?;
    let sandboxes: std::collections::HashMap<&str, &husk_core::SandboxRecord> = sandboxes
        .iter()
        .map(|s| (s.config.id.as_str(), s))
        .collect();
    let sandbox_of = |r: &husk_core::ContainerRecord| {
        r.sandbox_id
            .as_deref()
            .and_then(|id| sandboxes.get(id).copied())
    };
    Ok(match q.view {
        ListView::Full => Json(
            recs.iter()
                .map(|r| ContainerView::new(r, sandbox_of(r)))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        ListView::Summary => Json(
            recs.iter()
                .map(|r| ContainerSummary::new(r, sandbox_of(r)))
                .collect::<Vec<_>>(),
        )
        .into_response(),
    })
}

async fn prune_containers(
    State(engine): State<Engine>,
) -> ApiResult<Json<husk_api_types::ContainerPruneReport>> {
    Ok(Json(engine.prune_containers().await?))
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

/// Reads a small JSON body of at most `limit` bytes, for the handlers that keep the request's parts: the
/// upgrade handle stays in their extensions.
async fn read_body<T: serde::de::DeserializeOwned>(body: Body, limit: usize) -> Result<T> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| Error::bad_request(format!("read the request body: {e}")))?;
    parse_body(&bytes)
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
    let req: ContainerCreate = read_body(body, 2 << 20).await?;
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

/// The actions of `POST /husk/v1/containers/{id}/ACTION` that answer 204 No Content once done, with their
/// options: `stop` and `restart` take `?t=` (seconds before SIGKILL), `kill` takes `?signal=`.
enum Lifecycle {
    Start,
    Stop(Option<u32>),
    Restart(Option<u32>),
    Kill(String),
    Pause,
    Unpause,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TimeoutQuery {
    t: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SignalQuery {
    signal: String,
}

/// Runs `action` on the container `id`.
async fn lifecycle(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    action: Lifecycle,
) -> ApiResult<StatusCode> {
    match action {
        Lifecycle::Start => engine.start_container(&id).await.map(drop),
        Lifecycle::Stop(t) => engine.stop_container(&id, t).await.map(drop),
        Lifecycle::Restart(t) => engine.restart_container(&id, t).await.map(drop),
        Lifecycle::Kill(signal) => engine.kill_container(&id, &signal).await,
        Lifecycle::Pause => engine.pause_container(&id).await,
        Lifecycle::Unpause => engine.unpause_container(&id).await,
    }?;
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
    // The entries read at once go out as one chunk: a follower keeps up with a container writing fast.
    let body = stream.ready_chunks(1024).map(
        |entries| -> std::result::Result<bytes::Bytes, std::io::Error> {
            let mut lines = Vec::new();
            for entry in entries {
                let line = match entry {
                    Ok(e) => serde_json::to_vec(&e).unwrap_or_default(),
                    Err(e) => {
                        serde_json::to_vec(&serde_json::json!({"error": e})).unwrap_or_default()
                    }
                };
                lines.extend_from_slice(&line);
                lines.push(b'\n');
            }
            Ok(bytes::Bytes::from(lines))
        },
    );
    Ok(ndjson(body))
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

/// `GET /husk/v1/stats?ids=A,B`: the usage of the containers named (names and IDs never hold a comma), or of
/// every running one.
async fn stats_of(
    State(engine): State<Engine>,
    Query(q): Query<StatsQuery>,
) -> ApiResult<Json<Vec<ContainerStats>>> {
    let ids: Vec<String> = q
        .ids
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(String::from)
        .collect();
    Ok(Json(engine.stats_of(&ids).await?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatsQuery {
    /// Containers by name or ID, separated by commas; none for all running.
    ids: String,
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
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(upgraded) => relay(TokioIo::new(upgraded), stdio).await,
                Err(e) => tracing::warn!("stream upgrade failed: {e}"),
            }
        }
        .instrument(tracing::Span::current()),
    );
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
    let req: ExecCreate = read_body(body, 1 << 20).await?;
    let stdio = engine.exec(&id, &req).await?;
    Ok(upgrade(Request::from_parts(parts, Body::empty()), stdio))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PathQuery {
    path: String,
    copy_uid_gid: bool,
}

async fn stat_path(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<PathStat>> {
    Ok(Json(engine.stat_path(&id, &q.path).await?))
}

async fn get_archive(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (_, archive) = engine.archive_path(&id, &q.path).await?;
    let body = tokio_util::io::ReaderStream::with_capacity(archive, 256 * 1024);
    Ok(tar(Body::from_stream(body)))
}

async fn put_archive(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    body: Body,
) -> ApiResult<StatusCode> {
    let (reader, drain) = super::upload::upload(body);
    let extracted = async {
        if q.path.is_empty() {
            return Err(Error::invalid("path", "no destination directory given"));
        }
        let options = ExtractOptions {
            copy_owners: q.copy_uid_gid,
            no_overwrite_dir_non_dir: true,
        };
        engine
            .extract_archive(&id, &q.path, Box::pin(reader), &options)
            .await
    };
    drain.settle(extracted.await).await?;
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
