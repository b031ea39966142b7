//! Images in the local API: list, inspect, tag, remove, load and save (tar streams), prune; pull and push
//! (answered with JSON lines of progress, then one result line, like Docker's `/images/create`); registry
//! login and logout; and commit, which makes an image of a container.
//!
//! A progress answer is `application/x-ndjson`: each line is a `husk_api_types::Progress` (`{"type": "layer", ...}`),
//! and the last line is `{"type": "result", "result": ...}` or `{"type": "error", "error": {kind, message, ...}}`.
//! The HTTP status is 200 once the stream starts, so a failure of the operation itself arrives as that last line.

use std::future::Future;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use husk_api_types::{CommitRequest, LoginRequest, Progress, ProgressSink};
use husk_core::{Error, Result};
use husk_engine::Engine;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{AllQuery, ApiResult, ndjson, parse_body, tar};

/// The routes under `/husk/v1/images` and `/husk/v1/auth`, and a container's `commit`.
pub(super) fn routes() -> Router<Engine> {
    Router::new()
        .route("/husk/v1/images", get(list_images))
        .route("/husk/v1/images/load", post(load_images))
        .route("/husk/v1/images/tag", post(tag_image))
        .route("/husk/v1/images/inspect", get(inspect_image))
        .route("/husk/v1/images/remove", post(remove_image))
        .route("/husk/v1/images/pull", post(pull))
        .route("/husk/v1/images/push", post(push))
        .route("/husk/v1/images/save", post(save))
        .route("/husk/v1/images/prune", post(prune))
        .route("/husk/v1/auth/login", post(login))
        .route("/husk/v1/auth/logout", post(logout))
        .route("/husk/v1/containers/{id}/commit", post(commit))
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
    let (reader, drain) = super::upload::upload(body);
    let loaded = engine.load_images(reader, q.name).await;
    Ok(Json(drain.settle(loaded).await?))
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

/// One line of a progress answer: a progress event, or the final result or error.
fn progress_line(progress: &Progress) -> Vec<u8> {
    let mut line = serde_json::to_vec(progress).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The last line of a progress answer.
fn final_line<T: Serialize>(result: &Result<T>) -> Vec<u8> {
    let value = match result {
        Ok(v) => serde_json::json!({"type": "result", "result": v}),
        Err(e) => serde_json::json!({"type": "error", "error": e}),
    };
    let mut line = serde_json::to_vec(&value).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Runs `work` in its own task with a progress sink and answers with its progress lines, then its result. The
/// work goes on to the end if the client goes away (as a Docker pull does).
fn progress_answer<T, F>(work: impl FnOnce(ProgressSink) -> F) -> Response
where
    T: Serialize + Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    // The sender lives in the task: the progress stream ends when the work does.
    let task = tokio::spawn(work(ProgressSink(Some(tx))).instrument(tracing::Span::current()));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|p| (progress_line(&p), rx))
    });
    let last = futures::stream::once(async move {
        let result = task
            .await
            .unwrap_or_else(|e| Err(Error::internal(format!("the operation's task failed: {e}"))));
        final_line(&result)
    });
    let body = events
        .chain(last)
        .map(|line| Ok::<_, std::io::Error>(bytes::Bytes::from(line)));
    ndjson(body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PullQuery {
    reference: String,
    platform: Option<String>,
}

async fn pull(State(engine): State<Engine>, Query(q): Query<PullQuery>) -> Response {
    progress_answer(move |progress| async move {
        engine
            .pull_image(&q.reference, q.platform.as_deref(), progress)
            .await
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PushQuery {
    name: String,
}

async fn push(State(engine): State<Engine>, Query(q): Query<PushQuery>) -> Response {
    progress_answer(move |progress| async move { engine.push_image(&q.name, progress).await })
}

/// The body of `POST /husk/v1/images/save`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    names: Vec<String>,
}

/// Answers with the archive as it is written. Unknown names fail before the first byte; a failure while
/// writing ends the stream with an error (the client sees a broken transfer, never a short archive that looks
/// complete).
async fn save(State(engine): State<Engine>, body: bytes::Bytes) -> ApiResult<Response> {
    let req: SaveBody = parse_body(&body)?;
    engine.check_save(&req.names)?;
    let (reader, writer) = tokio::io::duplex(256 * 1024);
    let task = tokio::spawn(
        async move { engine.save_images(&req.names, writer).await }
            .instrument(tracing::Span::current()),
    );
    let end = futures::stream::once(async move {
        let result = task
            .await
            .unwrap_or_else(|e| Err(Error::internal(format!("save task: {e}"))));
        match result {
            Ok(()) => None,
            Err(e) => Some(Err(std::io::Error::other(e.message))),
        }
    })
    .filter_map(|item| async move { item });
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).chain(end);
    Ok(tar(Body::from_stream(stream)))
}

async fn prune(
    State(engine): State<Engine>,
    Query(q): Query<AllQuery>,
) -> ApiResult<Json<husk_api_types::PruneReport>> {
    Ok(Json(engine.prune_images(q.all).await?))
}

async fn login(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let req: LoginRequest = parse_body(&body)?;
    engine.login(&req).await?;
    Ok(Json(serde_json::json!({"Status": "Login Succeeded"})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LogoutQuery {
    registry: String,
}

async fn logout(
    State(engine): State<Engine>,
    Query(q): Query<LogoutQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let removed = engine.logout(&q.registry)?;
    Ok(Json(serde_json::json!({"Removed": removed})))
}

async fn commit(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<husk_api_types::ImageView>> {
    let req: CommitRequest = if body.is_empty() {
        CommitRequest::default()
    } else {
        parse_body(&body)?
    };
    Ok(Json(engine.commit_container(&id, &req).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_in_a_result_or_an_error() {
        let p = Progress::Done {
            id: "sha256:ab".into(),
        };
        let line = progress_line(&p);
        assert_eq!(line.last(), Some(&b'\n'));
        let back: Progress = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, p);
        let ok: serde_json::Value = serde_json::from_slice(&final_line(&Ok(1))).unwrap();
        assert_eq!(ok["type"], "result");
        assert_eq!(ok["result"], 1);
        let err: serde_json::Value =
            serde_json::from_slice(&final_line::<()>(&Err(Error::not_found("image x")))).unwrap();
        assert_eq!(err["type"], "error");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("image x")
        );
    }

    #[tokio::test]
    async fn progress_then_result() {
        use http_body_util::BodyExt;
        let response = progress_answer(|sink| async move {
            sink.send(Progress::Done { id: "x".into() });
            Ok::<_, Error>("done")
        });
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let lines: Vec<serde_json::Value> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "done");
        assert_eq!(lines[1]["result"], "done");
    }
}
