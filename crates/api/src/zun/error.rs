//! Zun's error body: `{"errors": [{"request_id", "code", "status", "title", "detail", "links"}]}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use husk_core::{Error, ErrorKind};
use serde::Serialize;

use super::version::{MAX_VERSION, MIN_VERSION};

/// An error as Zun's API answers it.
#[derive(Debug, Clone)]
pub struct ZunError {
    /// HTTP status.
    pub status: StatusCode,
    /// `container.<kebab-case-name>`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// 406 version errors carry the supported range.
    pub version_range: bool,
}

/// One entry of the error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEntry {
    /// The request's ID, as in its `x-openstack-request-id` header (Zun itself leaves it empty; its clients
    /// accept either).
    pub request_id: String,
    /// Machine-readable error name.
    pub code: String,
    /// HTTP status.
    pub status: u16,
    /// Short description.
    pub title: String,
    /// Full description.
    pub detail: String,
    /// Always empty.
    pub links: Vec<String>,
    /// Highest microversion (406 version errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_version: Option<String>,
    /// Lowest microversion (406 version errors only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
}

/// The error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The errors (always one).
    pub errors: Vec<ErrorEntry>,
}

/// The error answers of Zun's routes in the OpenAPI document: `responses(..., ZunErrors)` in a
/// `#[utoipa::path]` lists them all, each with an [`ErrorBody`]. Each variant's doc comment is its description.
#[derive(Debug, utoipa::IntoResponses)]
pub enum ZunErrors {
    /// Bad input (the field is named)
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No valid token
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Forbidden by policy or over quota
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Not found
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Microversion not supported
    #[response(status = 406)]
    NotAcceptable(ErrorBody),
    /// Invalid state
    #[response(status = 409)]
    Conflict(ErrorBody),
}

/// The error answers documented for `commit`, `get_archive` and `put_archive`: the request's own errors (400,
/// 404, 409) of [`ZunErrors`].
#[derive(Debug, utoipa::IntoResponses)]
pub enum RequestErrors {
    /// Bad input (the field is named)
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Not found
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// Invalid state
    #[response(status = 409)]
    Conflict(ErrorBody),
}

impl ZunError {
    /// An error with this status, code suffix and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ZunError {
        ZunError {
            status,
            code: format!("container.{code}"),
            message: message.into(),
            version_range: false,
        }
    }

    /// 400: a bad value in field `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ZunError {
        ZunError::new(
            StatusCode::BAD_REQUEST,
            "validation-error",
            format!("Invalid input for field/attribute {field}. {message}"),
        )
    }

    /// 400: a request malformed as a whole.
    pub fn bad_request(message: impl Into<String>) -> ZunError {
        ZunError::new(StatusCode::BAD_REQUEST, "invalid-value", message)
    }

    /// 403: the policy forbids the action.
    pub fn forbidden(action: &str) -> ZunError {
        ZunError::new(
            StatusCode::FORBIDDEN,
            "policy-not-authorized",
            format!("Policy doesn't allow {action} to be performed."),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ZunError {
        ZunError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 406: a microversion outside the supported range, or an API that the version does not have.
    pub fn not_acceptable(message: impl Into<String>) -> ZunError {
        ZunError {
            status: StatusCode::NOT_ACCEPTABLE,
            code: "zun.microversion-unsupported".into(),
            message: message.into(),
            version_range: true,
        }
    }

    /// 409: the container's state forbids the action (Zun's `InvalidStateException`).
    pub fn invalid_state(action: &str, uuid: &str, status: &str) -> ZunError {
        ZunError::new(
            StatusCode::CONFLICT,
            "invalid-state-exception",
            format!("Cannot {action} container {uuid} in {status} state."),
        )
    }

    /// The body as sent.
    pub fn body(&self) -> ErrorBody {
        let server_side = self.status.is_server_error();
        let reason = self
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        ErrorBody {
            errors: vec![ErrorEntry {
                request_id: crate::trace::zun_request_id().unwrap_or_default(),
                code: self.code.clone(),
                status: self.status.as_u16(),
                title: if server_side {
                    reason
                } else {
                    self.message.clone()
                },
                detail: self.message.clone(),
                links: Vec::new(),
                max_version: self.version_range.then(|| MAX_VERSION.to_string()),
                min_version: self.version_range.then(|| MIN_VERSION.to_string()),
            }],
        }
    }
}

impl From<Error> for ZunError {
    fn from(e: Error) -> ZunError {
        let status =
            StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match e.kind {
            ErrorKind::InvalidArgument => "validation-error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Precondition => "precondition-failed",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "policy-not-authorized",
            ErrorKind::Unauthorized => "not-authenticated",
            ErrorKind::LimitExceeded => "over-quota",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Backend | ErrorKind::Internal => "internal-error",
        };
        let message = match &e.field {
            Some(f) if !e.message.contains(f.as_str()) => format!("{f}: {}", e.message),
            _ => e.message.clone(),
        };
        if status.is_server_error() {
            tracing::warn!("zun API: {}", e.message);
        }
        ZunError::new(status, code, message)
    }
}

impl IntoResponse for ZunError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The result of a Zun handler.
pub type ZunResult<T> = std::result::Result<T, ZunError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_their_status_and_name_the_field() {
        let e: ZunError = Error::invalid("memory", "too small").into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, "memory: too small");
        let e: ZunError = Error::conflict("busy").into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        let b = ZunError::not_acceptable("no").body();
        assert_eq!(b.errors[0].max_version.as_deref(), Some("1.40"));
        assert_eq!(b.errors[0].code, "zun.microversion-unsupported");
    }

    #[test]
    fn server_errors_show_the_reason_as_title() {
        let e: ZunError = Error::backend("disk on fire").into();
        let b = e.body();
        assert_eq!(b.errors[0].status, 500);
        assert_eq!(b.errors[0].title, "Internal Server Error");
    }
}
