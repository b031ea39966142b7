//! Errors across the protocol: a husk error becomes a gRPC status in the agent and the same error again in the
//! host, keeping its kind and, for bad input, the request field it names (gRPC metadata `husk-field`).

use husk_core::{CommandFailure, Error, ErrorKind};

/// Maps a husk error to a gRPC status (agent side).
pub fn status_from_error(e: &Error) -> tonic::Status {
    use tonic::Code;
    let code = match e.kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::Precondition => Code::FailedPrecondition,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::LimitExceeded => Code::ResourceExhausted,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::Backend => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    };
    let mut status = tonic::Status::new(code, e.message.clone());
    if let Some(field) = &e.field
        && let Ok(value) = field.parse()
    {
        status.metadata_mut().insert(FIELD_METADATA, value);
    }
    if let Some(why) = e.command {
        status.metadata_mut().insert(
            COMMAND_METADATA,
            tonic::metadata::MetadataValue::from_static(why.as_str()),
        );
    }
    status
}

/// The gRPC metadata key carrying [`Error::field`] from the agent.
const FIELD_METADATA: &str = "husk-field";

/// The gRPC metadata key carrying [`Error::command`] (why a command could not run) from the agent.
const COMMAND_METADATA: &str = "husk-command";

/// Maps a gRPC status from the agent to a husk error naming the call. An error about a request field (bad input,
/// such as a command the image lacks) keeps its field and the agent's words as they are.
pub fn error_from_status(call: &str, s: &tonic::Status) -> Error {
    use tonic::Code;
    let kind = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
        Code::NotFound => ErrorKind::NotFound,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => ErrorKind::Conflict,
        Code::Unimplemented => ErrorKind::Unsupported,
        Code::PermissionDenied => ErrorKind::Forbidden,
        Code::Unauthenticated => ErrorKind::Unauthorized,
        Code::ResourceExhausted => ErrorKind::LimitExceeded,
        Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Timeout,
        Code::Unavailable | Code::Unknown => ErrorKind::Backend,
        _ => ErrorKind::Internal,
    };
    let text = |key: &str| s.metadata().get(key).and_then(|v| v.to_str().ok());
    let mut error = match text(FIELD_METADATA) {
        Some(field) => Error::about(kind, field, s.message()),
        None => Error::new(kind, format!("guest agent {call}: {}", s.message())),
    };
    error.command = text(COMMAND_METADATA).and_then(CommandFailure::from_name);
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_survive_the_round_trip_through_grpc() {
        for e in [
            Error::not_found("container \"x\""),
            Error::bad_request("args must not be empty"),
            Error::conflict("already started"),
            Error::unsupported("no tty"),
            Error::timeout("slow"),
        ] {
            let back = error_from_status("start", &status_from_error(&e));
            assert_eq!(back.kind, e.kind, "{e:?}");
            assert!(
                back.message.contains(&e.message) && back.message.starts_with("guest agent start"),
                "{}",
                back.message
            );
        }
        // Bad input keeps its field and its words: the command's exit code depends on them.
        let e = Error::command_failed(
            CommandFailure::NotFound,
            "exec: \"nope\": executable file not found in $PATH",
        );
        let back = error_from_status("start", &status_from_error(&e));
        assert_eq!(back, e);
        assert_eq!(back.command_exit_code(), Some(127));
    }
}
