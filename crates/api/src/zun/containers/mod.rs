//! `/v1/containers`: the routes, and how a handler finds the container it acts on. The handlers, each a
//! translation to the engine: `crud` (list, create, show, update, rename, delete, network_list),
//! `lifecycle` (start, stop, reboot, pause, unpause, kill), `io` (logs, execute, attach, resize, top,
//! stats), `archive` (get_archive, put_archive) and `commit`.

use axum::Router;
use axum::routing::{get, post};
use husk_core::{ContainerRecord, ErrorKind};

use super::ZunState;
use super::context::Context;
use super::error::{ZunError, ZunResult};
use super::view::{self, ZunAction, ZunContainer};

pub(crate) mod archive;
pub(crate) mod commit;
pub(crate) mod crud;
pub(crate) mod io;
pub(crate) mod lifecycle;

pub use archive::ArchiveBody;
pub use commit::CommitResult;
pub use crud::{ContainerList, UpdateBody};
pub use io::{ExecResult, TopResult};

use archive::{get_archive, put_archive};
use commit::commit;
use crud::{create, delete, list, network_list, rename, show, update};
use io::{attach, execute, execute_resize, logs, resize, stats, top};
use lifecycle::{kill, pause, reboot, start, stop, unpause};

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

/// Looks the container up, checks Zun's state table, and returns it.
pub(crate) fn for_action(
    s: &ZunState,
    ctx: &Context,
    id: &str,
    action: ZunAction,
) -> ZunResult<ContainerRecord> {
    let rec = s.container(ctx, id, false)?;
    action.check(&rec)?;
    Ok(rec)
}
