//! `start`, `stop`, `reboot`, `pause`, `unpause` and `kill`: one handler, [`lifecycle`]. Each action checks its
//! query parameters, looks the container up, checks Zun's state table, runs the engine's operation recorded as a
//! container action, and answers 202 with no body. `route!` makes each action's route, with its OpenAPI
//! description, at the end of this file.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::for_action;
use crate::zun::ZunState;
use crate::zun::context::Context;
use crate::zun::error::{ZunErrors, ZunResult};
use crate::zun::params::Params;
use crate::zun::view::{Lifecycle, ZunAction};

/// The query parameters `action` takes.
fn params_of(action: Lifecycle) -> &'static [&'static str] {
    match action {
        Lifecycle::Stop | Lifecycle::Reboot => &["timeout"],
        Lifecycle::Kill => &["signal"],
        Lifecycle::Start | Lifecycle::Pause | Lifecycle::Unpause => &[],
    }
}

/// Runs `action` on the container `id`: 202 when done. Its parameters are checked first, so a bad one answers
/// 400 whatever the container.
pub async fn lifecycle(
    action: Lifecycle,
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<StatusCode> {
    params.only(params_of(action))?;
    let timeout = params.uint("timeout")?;
    let signal = params.text("signal").unwrap_or("KILL").to_string();
    if action == Lifecycle::Kill {
        husk_core::units::parse_signal(&signal)?;
    }
    let rec = for_action(&s, &ctx, &id, ZunAction::Lifecycle(action))?;
    let (engine, id) = (&s.engine, rec.id());
    let work = async {
        match action {
            Lifecycle::Start => engine.start_container(id).await.map(drop),
            Lifecycle::Stop => engine.stop_container(id, timeout).await.map(drop),
            Lifecycle::Reboot => engine.restart_container(id, timeout).await.map(drop),
            Lifecycle::Pause => engine.pause_container(id).await,
            Lifecycle::Unpause => engine.unpause_container(id).await,
            Lifecycle::Kill => engine.kill_container(id, &signal).await,
        }
    };
    engine.track(id, action.name(), &ctx.user_id, work).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Defines the route `$name` of `Lifecycle::$action` with its OpenAPI description: `id` and `$param`s in, 202 or
/// one of [`ZunErrors`] out. (No doc comment on the function: utoipa would make it the operation's summary.)
macro_rules! route {
    ($name:ident, $action:ident, $path:tt $(, $param:tt)*) => {
        #[utoipa::path(post, path = $path, tag = "containers", params(("id" = String, Path, description = "Name or UUID") $(, $param)*), responses((status = 202, description = "Done"), ZunErrors))]
        pub(crate) async fn $name(
            s: State<ZunState>,
            ctx: Extension<Context>,
            id: Path<String>,
            params: Params,
        ) -> ZunResult<StatusCode> {
            lifecycle(Lifecycle::$action, s, ctx, id, params).await
        }
    };
}

route!(start, Start, "/v1/containers/{id}/start");
route!(stop, Stop, "/v1/containers/{id}/stop", ("timeout" = Option<u32>, Query, description = "Seconds before SIGKILL"));
route!(reboot, Reboot, "/v1/containers/{id}/reboot", ("timeout" = Option<u32>, Query, description = "Seconds before SIGKILL"));
route!(pause, Pause, "/v1/containers/{id}/pause");
route!(unpause, Unpause, "/v1/containers/{id}/unpause");
route!(kill, Kill, "/v1/containers/{id}/kill", ("signal" = Option<String>, Query, description = "Name or number"));
