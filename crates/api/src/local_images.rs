//! The image routes of the local API: pull and push (answered with JSON lines of progress, then one result
//! line, like Docker's `/images/create`), save (a tar stream), prune, login/logout, commit and `system df`.
//!
//! A progress answer is `application/x-ndjson`: each line is a `husk_api_types::Progress` (`{"type": "layer", ...}`),
//! and the last line is `{"type": "result", "result": ...}` or `{"type": "error", "error": {kind, message, ...}}`.
//! The HTTP status is 200 once the stream starts, so a failure of the operation itself arrives as that last line.

use std::future::Future;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use husk_api_types::{CommitRequest, LoginRequest, SystemDf};
use husk_api_types::{Progress, ProgressSink};
use husk_core::{Error, Result};
use husk_engine::Engine;
use serde::{Deserialize, Serialize};

use crate::local::{ApiResult, parse_body};

/// One line of a progress answer: a progress event, or the final result or error.
pub fn progress_line(progress: &Progress) -> Vec<u8> {
    let mut line = serde_json::to_vec(progress).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The last line of a progress answer.
pub fn final_line<T: Serialize>(result: &Result<T>) -> Vec<u8> {
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
    let task = tokio::spawn(work(ProgressSink(Some(tx))));
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
    crate::local::ndjson(body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PullQuery {
    reference: String,
    platform: Option<String>,
}

pub(crate) async fn pull(State(engine): State<Engine>, Query(q): Query<PullQuery>) -> Response {
    progress_answer(move |progress| async move {
        engine
            .pull_image(&q.reference, q.platform.as_deref(), progress)
            .await
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PushQuery {
    name: String,
}

pub(crate) async fn push(State(engine): State<Engine>, Query(q): Query<PushQuery>) -> Response {
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
pub(crate) async fn save(State(engine): State<Engine>, body: bytes::Bytes) -> ApiResult<Response> {
    let req: SaveBody = parse_body(&body)?;
    engine.check_save(&req.names)?;
    let (reader, writer) = tokio::io::duplex(256 * 1024);
    let task = tokio::spawn(async move { engine.save_images(&req.names, writer).await });
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
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PruneQuery {
    all: bool,
}

pub(crate) async fn prune(
    State(engine): State<Engine>,
    Query(q): Query<PruneQuery>,
) -> ApiResult<Json<husk_api_types::PruneReport>> {
    Ok(Json(engine.prune_images(q.all).await?))
}

pub(crate) async fn login(
    State(engine): State<Engine>,
    body: bytes::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let req: LoginRequest = parse_body(&body)?;
    engine.login(&req).await?;
    Ok(Json(serde_json::json!({"Status": "Login Succeeded"})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LogoutQuery {
    registry: String,
}

pub(crate) async fn logout(
    State(engine): State<Engine>,
    Query(q): Query<LogoutQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let removed = engine.logout(&q.registry)?;
    Ok(Json(serde_json::json!({"Removed": removed})))
}

pub(crate) async fn commit(
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

pub(crate) async fn system_df(State(engine): State<Engine>) -> ApiResult<Json<SystemDf>> {
    Ok(Json(engine.system_df().await?))
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
