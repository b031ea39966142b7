//! The one error type every husk layer speaks.
//!
//! Each variant says *what kind* of failure happened, so front ends can pick a status code (HTTP 404, 409,
//! 400 ...) without parsing messages, and the message says *what* failed in words a user can act on.

use std::fmt;
use std::sync::Arc;

/// Result with husk's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, classified for callers that must map it to a status (HTTP, gRPC, exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a field has a bad value (HTTP 400).
    InvalidArgument,
    /// The named object does not exist (HTTP 404).
    NotFound,
    /// The object exists but is in a state that forbids the action, or a name is taken (HTTP 409).
    Conflict,
    /// The driver or daemon cannot do what was asked (HTTP 400 with a clear message).
    Unsupported,
    /// The request is valid, but this host lacks what it needs (a cgroup controller where husk drives it, a
    /// security module); another host may serve it (HTTP 400; the CRI's FAILED_PRECONDITION).
    Precondition,
    /// The caller may not do this (HTTP 403).
    Forbidden,
    /// The caller is not authenticated (HTTP 401).
    Unauthorized,
    /// A quota or configured limit was reached (HTTP 403 in Zun's API).
    LimitExceeded,
    /// The backend (kernel, dockerd, QEMU, a registry) failed (HTTP 500).
    Backend,
    /// An operation did not finish in time (HTTP 504).
    Timeout,
    /// A bug or an unexpected condition inside husk (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status code that best represents this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument | ErrorKind::Unsupported | ErrorKind::Precondition => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden | ErrorKind::LimitExceeded => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Timeout => 504,
            ErrorKind::Backend | ErrorKind::Internal => 500,
        }
    }

    /// The kind for an HTTP status received from a husk daemon.
    pub fn from_http_status(status: u16) -> Self {
        match status {
            400 => ErrorKind::InvalidArgument,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            504 => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        }
    }
}

/// The request field holding a container's or an exec's command.
pub const COMMAND_FIELD: &str = "command";

/// How a runtime's message about a command that cannot be run begins (runc's words, which husk's shim uses too).
pub const EXEC_FAILURE_PREFIX: &str = "exec: \"";

/// Why a container's or an exec's command could not be run. Shells (and Docker) exit with a code of their own
/// for each: see [`Error::command_exit_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandFailure {
    /// There is no such file, or no such program on the `PATH` (a shell's 127).
    NotFound,
    /// The file exists but cannot be executed: a directory, no permission, not an executable (a shell's 126).
    NotExecutable,
}

impl CommandFailure {
    /// The code a shell exits with when it cannot run a command for this reason.
    pub fn exit_code(self) -> i32 {
        match self {
            CommandFailure::NotFound => 127,
            CommandFailure::NotExecutable => 126,
        }
    }
}

// The names on the wire (JSON, and gRPC metadata between the host and a VM's agent).
crate::names::named_values!(CommandFailure {
    NotFound => "not_found",
    NotExecutable => "not_executable",
});

/// A husk error: a kind, an optional field it is about, a message for people, and the error it came from.
///
/// The kind, field, message and [`command`](Error::command) travel between processes (the shim, a VM's agent,
/// the CLI) as JSON or gRPC metadata; the source stays in the process that saw it (it is a Rust error value),
/// for logs and for callers that look at the cause.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Error {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// The request field the error is about, when there is one (`memory`, `name`, `image` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The message, in words a user can act on.
    pub message: String,
    /// Set when the error is that a container's or an exec's command cannot be run, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandFailure>,
    /// The lower-level error this one reports, when there is one.
    #[serde(skip)]
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Two errors are equal when what they say is: kind, field, message and command failure (not their sources,
/// which do not cross process boundaries).
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.field == other.field
            && self.message == other.message
            && self.command == other.command
    }
}

impl Eq for Error {}

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            field: None,
            message: message.into(),
            command: None,
            source: None,
        }
    }

    /// A new error of `kind` about request field `field`.
    pub fn about(kind: ErrorKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            field: Some(field.into()),
            ..Self::new(kind, message)
        }
    }

    /// A bad value in request field `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::about(ErrorKind::InvalidArgument, field, message)
    }

    /// A request that is malformed as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// `what` (for example `container "web"`) does not exist.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, format!("no such {what}"))
    }

    /// The object is in a state that forbids the action.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// The driver or daemon cannot do this.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// The host lacks what the request field `field` needs (see [`ErrorKind::Precondition`]).
    pub fn precondition(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::about(ErrorKind::Precondition, field, message)
    }

    /// A backend (kernel, engine, VM) failed.
    pub fn backend(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Backend, message)
    }

    /// Something unexpected inside husk.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An operation ran out of time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    /// The error a runtime reports in `text` when a container's (or exec's) command cannot be run, if it is
    /// one: a bad value of the request's `command`, in the words runc and husk's shim both use, from
    /// `exec: "NAME": ...` on (`exec: "x": executable file not found in $PATH`, `exec: "/etc": is a
    /// directory`). The front ends turn it into the shell's codes (see [`Error::command_exit_code`]).
    ///
    /// This is where a runtime's words become a typed [`CommandFailure`]: runc's (through Docker Engine) and
    /// libcontainer's (which passes our executor's text through its error chain) carry no other form of it.
    /// From here on the error says what it is in [`Error::command`], across processes too.
    pub fn from_exec_failure(text: &str) -> Option<Error> {
        let at = text.find(EXEC_FAILURE_PREFIX)?;
        let words = text[at..]
            .trim_end()
            .trim_end_matches(": unknown")
            .trim_end_matches(['.', ' ']);
        let missing = words.contains("not found") || words.contains("no such file");
        Some(Error::command_failed(
            if missing {
                CommandFailure::NotFound
            } else {
                CommandFailure::NotExecutable
            },
            words,
        ))
    }

    /// The container's or exec's command cannot be run, for `why`: bad input in the request's `command`.
    pub fn command_failed(why: CommandFailure, message: impl Into<String>) -> Self {
        Error {
            command: Some(why),
            ..Self::invalid(COMMAND_FIELD, message)
        }
    }

    /// For an error about a command that cannot be run, the code a shell (and Docker) exits with: 127 when
    /// it does not exist, 126 when it exists but cannot be executed. `None` for any other error.
    pub fn command_exit_code(&self) -> Option<i32> {
        self.command.map(CommandFailure::exit_code)
    }

    /// Keeps `source` as the lower-level error this one reports ([`std::error::Error::source`]).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Adds context in front of the message, keeping kind and field.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// An I/O error while doing `what`, classified by its `io::ErrorKind`.
    pub fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Backend,
        };
        Self::new(kind, format!("{what}: {err}")).with_source(err)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Adds a description of the failed step to any error that converts into [`Error`].
pub trait Context<T> {
    /// Wraps the error with what was being done, as an error of kind `Backend` unless it already had a kind.
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(what, e))
    }
}

impl<T> Context<T> for Result<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_that_cannot_run_become_bad_input_with_the_shells_codes() {
        // runc's words through Docker Engine, and husk's shim's through libcontainer's wrapping.
        let docker = "failed to create task for container: failed to create shim task: OCI runtime create \
                      failed: runc create failed: unable to start container process: exec: \"nope\": \
                      executable file not found in $PATH: unknown";
        let e = Error::from_exec_failure(docker).unwrap();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(e.field.as_deref(), Some(COMMAND_FIELD));
        assert_eq!(
            e.message,
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(e.command_exit_code(), Some(127));
        let shim = "failed to create container: exec process failed with error error in executing process : \
                    exec: \"/nope\": stat /nope: no such file or directory";
        assert_eq!(
            Error::from_exec_failure(shim).unwrap().command_exit_code(),
            Some(127)
        );
        for not_runnable in [
            "exec: \"/etc/passwd\": permission denied",
            "exec: \"/etc\": is a directory",
        ] {
            let e = Error::from_exec_failure(not_runnable).unwrap();
            assert_eq!(e.message, not_runnable);
            assert_eq!(e.command_exit_code(), Some(126), "{not_runnable}");
            // Context in front keeps it recognisable.
            assert_eq!(
                e.context("start container web").command_exit_code(),
                Some(126)
            );
        }
        assert!(Error::from_exec_failure("exec: failed to create container: no cgroup").is_none());
        assert_eq!(
            Error::invalid("memory", "exec: \"x\": bad").command_exit_code(),
            None
        );
        assert_eq!(
            Error::backend("exec: \"x\": not found").command_exit_code(),
            None
        );
    }

    #[test]
    fn kinds_map_to_http_statuses_and_back() {
        for kind in [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Timeout,
        ] {
            assert_eq!(ErrorKind::from_http_status(kind.http_status()), kind);
        }
        assert_eq!(ErrorKind::Unsupported.http_status(), 400);
        assert_eq!(ErrorKind::Precondition.http_status(), 400);
    }

    #[test]
    fn context_keeps_kind_and_field() {
        let e = Error::invalid("memory", "bad size \"12q\"").context("create");
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(e.field.as_deref(), Some("memory"));
        assert_eq!(e.to_string(), "create: bad size \"12q\"");
    }

    #[test]
    fn io_not_found_is_not_found() {
        let e = Error::io("open x", std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(e.kind, ErrorKind::NotFound);
    }

    #[test]
    fn an_error_keeps_its_source_in_the_process_and_its_command_failure_everywhere() {
        use std::error::Error as _;
        let e = Error::io("open x", std::io::Error::other("disk on fire")).context("load");
        let source = e.source().expect("the io error is kept");
        assert_eq!(source.to_string(), "disk on fire");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert!(Error::backend("no cause").source().is_none());

        // Across a process boundary (JSON: the shim's and the local API's form) the kind, field, message and
        // command failure arrive; the source does not, and equality does not look at it.
        let e = Error::command_failed(
            CommandFailure::NotExecutable,
            "exec: \"/etc\": is a directory",
        )
        .with_source(std::io::Error::other("EACCES"));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""command":"not_executable""#), "{json}");
        let back: Error = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        assert!(back.source().is_none());
        assert_eq!(back.command_exit_code(), Some(126));
        // Only the typed field says that a command could not run, not words that look like it.
        let old: Error = serde_json::from_str(
            r#"{"kind":"invalid_argument","field":"command","message":"exec: \"x\": not found"}"#,
        )
        .unwrap();
        assert_eq!(old.command_exit_code(), None);
        for c in [CommandFailure::NotFound, CommandFailure::NotExecutable] {
            assert_eq!(CommandFailure::from_name(c.as_str()), Some(c));
        }
        assert_eq!(CommandFailure::from_name("nope"), None);
    }
}
