//! Who is calling, and what Zun's default policy lets them do.
//!
//! Three ways in: the daemon's unix socket (local root: every project), a TCP listener without authentication
//! (one default project, administrator of it), and a TCP listener with Keystone-style tokens (the token's
//! project and roles; the `admin` role is Zun's `admin_api`).

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use husk_engine::{DEFAULT_PROJECT, Scope};

use super::ZunState;
use super::error::ZunError;

/// How a listener authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The unix socket: the caller is local root and sees every project.
    LocalRoot,
    /// No authentication: every caller works in the default project, as its administrator.
    None,
    /// `X-Auth-Token` issued by husk's identity service.
    Keystone,
}

impl std::str::FromStr for AuthMode {
    type Err = husk_core::Error;
    fn from_str(s: &str) -> husk_core::Result<AuthMode> {
        match s {
            "keystone" => Ok(AuthMode::Keystone),
            "none" | "noauth" => Ok(AuthMode::None),
            _ => Err(husk_core::Error::invalid(
                "auth",
                format!("unknown auth mode {s:?}: use keystone or none"),
            )),
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// User ID.
    pub user_id: String,
    /// Project ID the caller works in.
    pub project_id: String,
    /// Holds the `admin` role (Zun's `admin_api` rule).
    pub is_admin: bool,
    /// May look across projects (`all_projects=True`).
    pub cross_project: bool,
    /// Sees every project without asking (local root).
    pub everything: bool,
}

impl Context {
    /// The local root caller of the unix socket.
    pub fn local_root() -> Context {
        Context {
            user_id: "root".into(),
            project_id: DEFAULT_PROJECT.into(),
            is_admin: true,
            cross_project: true,
            everything: true,
        }
    }

    /// The caller of a listener without authentication.
    pub fn anonymous() -> Context {
        Context {
            user_id: "anonymous".into(),
            project_id: DEFAULT_PROJECT.into(),
            is_admin: true,
            cross_project: false,
            everything: false,
        }
    }

    /// The scope of a request; `all_projects` widens it for administrators (403 for others).
    pub fn scope(&self, all_projects: bool) -> Result<Scope, ZunError> {
        if self.everything {
            return Ok(Scope::All);
        }
        if all_projects {
            if !(self.is_admin && self.cross_project) {
                return Err(ZunError::forbidden("all_projects"));
            }
            return Ok(Scope::All);
        }
        Ok(Scope::Project(self.project_id.clone()))
    }

    /// 403 unless the caller is an administrator (`rule:admin_api`).
    pub fn require_admin(&self, action: &str) -> Result<(), ZunError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ZunError::forbidden(action))
        }
    }
}

/// Middleware: establishes the [`Context`] (401 without a valid token in keystone mode).
pub async fn authenticate(
    State(state): State<ZunState>,
    mut request: Request,
    next: Next,
) -> Response {
    let context = match state.auth {
        AuthMode::LocalRoot => Context::local_root(),
        AuthMode::None => Context::anonymous(),
        AuthMode::Keystone => {
            let token = request
                .headers()
                .get("x-auth-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match state.engine.validate_token(token) {
                Ok(t) => Context {
                    is_admin: t.is_admin(),
                    cross_project: t.is_admin(),
                    user_id: t.user_id,
                    project_id: t.project_id,
                    everything: false,
                },
                Err(_) => {
                    return ZunError::new(
                        StatusCode::UNAUTHORIZED,
                        "not-authenticated",
                        "The request you have made requires authentication.",
                    )
                    .into_response();
                }
            }
        }
    };
    request.extensions_mut().insert(context);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_policy() {
        assert_eq!(Context::local_root().scope(false).unwrap(), Scope::All);
        let anon = Context::anonymous();
        assert_eq!(
            anon.scope(false).unwrap(),
            Scope::Project(DEFAULT_PROJECT.into())
        );
        assert_eq!(anon.scope(true).unwrap_err().status.as_u16(), 403);
        let member = Context {
            user_id: "u".into(),
            project_id: "p".into(),
            is_admin: false,
            cross_project: false,
            everything: false,
        };
        assert!(member.require_admin("x").is_err());
        assert!(member.scope(true).is_err());
        let admin = Context {
            is_admin: true,
            cross_project: true,
            ..member
        };
        assert_eq!(admin.scope(true).unwrap(), Scope::All);
        assert_eq!(admin.scope(false).unwrap(), Scope::Project("p".into()));
    }
}
