//! `get_archive` and `put_archive`: copying files out of and into a container, as tar archives in JSON.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::for_action;
use crate::zun::ZunState;
use crate::zun::context::Context;
use crate::zun::error::{RequestErrors, ZunError, ZunResult};
use crate::zun::params::{JsonBody, Params};
use crate::zun::version::Version;
use crate::zun::view::ZunAction;

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
#[utoipa::path(get, path = "/v1/containers/{id}/get_archive", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("path" = Option<String>, Query, description = "Path in the container")), responses((status = 200, description = "Done", body = serde_json::Value), RequestErrors))]
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
#[utoipa::path(post, path = "/v1/containers/{id}/put_archive", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("path" = Option<String>, Query, description = "Directory in the container")), request_body(content = ArchiveBody, content_type = "application/json"), responses((status = 200, description = "Done", body = serde_json::Value), RequestErrors))]
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
