//! Reaching the engine: address parsing, API version negotiation, and turning the engine's errors into husk's.

use std::fmt;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::SystemVersion;
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use husk_core::{Error, ErrorKind, Result};

/// The oldest engine API husk talks to: 1.41 (Docker 20.10), for `one-shot` stats, `IpcMode=shareable`,
/// exec working directories and log `until`.
pub const MIN_API_VERSION: (usize, usize) = (1, 41);

/// The engine's address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Address {
    /// A unix socket path.
    Unix(String),
    /// `tcp://host:port`.
    Http(String),
}

pub(crate) fn parse_address(host: &str) -> Result<Address> {
    let unix = host.strip_prefix("unix://").filter(|p| p.starts_with('/'));
    let tcp = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("http://"))
        .filter(|r| !r.is_empty());
    match (unix, tcp) {
        (Some(path), _) => return Ok(Address::Unix(path.to_string())),
        (None, Some(rest)) => return Ok(Address::Http(format!("tcp://{rest}"))),
        (None, None) => {}
    }
    Err(Error::invalid(
        "docker_host",
        format!(
            "invalid Docker Engine address {host:?}: use unix:///path/to/docker.sock or tcp://HOST:PORT"
        ),
    ))
}

fn client(
    host: &str,
    address: &Address,
    timeout: Duration,
    version: &ClientVersion,
) -> Result<Docker> {
    let secs = timeout.as_secs().max(1);
    let made = match address {
        Address::Unix(path) => Docker::connect_with_unix(path, secs, version),
        Address::Http(addr) => Docker::connect_with_http(addr, secs, version),
    };
    made.map_err(|e| unreachable(host, &e))
}

fn version_of(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The API version the engine names in a "client version X is too old. Minimum supported API version is Y"
/// answer.
fn minimum_from_refusal(e: &BollardError) -> Option<(usize, usize)> {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        } if message.contains("too old") => {
            let tail = message.split("API version is ").nth(1)?;
            let number: String = tail
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            version_of(number.trim_end_matches('.'))
        }
        _ => None,
    }
}

fn unreachable(host: &str, e: &BollardError) -> Error {
    Error::backend(format!(
        "cannot reach the Docker Engine at {host}: {e} (is dockerd running, and is the address right? set it with --docker-host)"
    ))
}

fn client_version((major, minor): (usize, usize)) -> ClientVersion {
    ClientVersion {
        major_version: major,
        minor_version: minor,
    }
}

/// Connects to the engine at `host`, checks it answers and is new enough, and returns a client speaking the
/// newest API version both sides know, with the engine's version report.
pub(crate) async fn connect(host: &str, timeout: Duration) -> Result<(Docker, SystemVersion)> {
    let address = parse_address(host)?;
    // Ask at our minimum version: engines up to Docker 28 accept it. Newer engines refuse it naming their own
    // minimum, which we then use for the question.
    let probe = client(host, &address, timeout, &client_version(MIN_API_VERSION))?;
    let report = match probe.version().await {
        Ok(v) => v,
        Err(e) => match minimum_from_refusal(&e) {
            Some(min) => {
                let ours = (
                    API_DEFAULT_VERSION.major_version,
                    API_DEFAULT_VERSION.minor_version,
                );
                if min > ours {
                    return Err(Error::unsupported(format!(
                        "the Docker Engine at {host} needs API {}.{} or newer; this husk speaks up to {}.{}",
                        min.0, min.1, ours.0, ours.1
                    )));
                }
                client(host, &address, timeout, &client_version(min))?
                    .version()
                    .await
                    .map_err(|e| unreachable(host, &e))?
            }
            None => return Err(unreachable(host, &e)),
        },
    };
    let api = check_api(host, &report)?;
    let ours = (
        API_DEFAULT_VERSION.major_version,
        API_DEFAULT_VERSION.minor_version,
    );
    let docker = client(host, &address, timeout, &client_version(api.min(ours)))?;
    docker.ping().await.map_err(|e| unreachable(host, &e))?;
    Ok((docker, report))
}

/// The API version the engine's version report names, if it is one husk can talk.
fn check_api(host: &str, report: &SystemVersion) -> Result<(usize, usize)> {
    let api = report
        .api_version
        .as_deref()
        .and_then(version_of)
        .ok_or_else(|| {
            Error::backend(format!(
                "the Docker Engine at {host} did not say which API version it speaks"
            ))
        })?;
    if api < MIN_API_VERSION {
        return Err(Error::unsupported(format!(
            "the Docker Engine at {host} (Docker {}) speaks API {}.{}; husk needs API {}.{} (Docker 20.10) or newer",
            report.version.as_deref().unwrap_or("?"),
            api.0,
            api.1,
            MIN_API_VERSION.0,
            MIN_API_VERSION.1
        )));
    }
    Ok(api)
}

/// Whether the address is a local unix socket (the engine shares our PID namespace and devices).
pub(crate) fn is_local(host: &str) -> bool {
    matches!(parse_address(host), Ok(Address::Unix(_)))
}

/// The HTTP status of an engine answer, if the error is one.
pub(crate) fn status(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        BollardError::DockerContainerWaitError { .. } => None,
        _ => None,
    }
}

/// Why the engine could not be reached at all (its socket refuses connections or is gone), if that is the error.
fn connect_failure(e: &BollardError) -> Option<String> {
    use std::error::Error as _;
    let io = match e {
        BollardError::HyperLegacyError { err } if err.is_connect() => {
            let mut source = err.source();
            let mut io = None;
            while let Some(s) = source {
                if let Some(found) = s.downcast_ref::<std::io::Error>() {
                    io = Some(found);
                }
                source = s.source();
            }
            return Some(io.map_or_else(|| "cannot connect".to_string(), |io| io.to_string()));
        }
        BollardError::IOError { err } => err,
        _ => return None,
    };
    matches!(
        io.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    )
    .then(|| io.to_string())
}

/// Turns an engine error met while doing `what` into husk's error, keeping its kind.
pub(crate) fn engine_error(what: impl fmt::Display, e: BollardError) -> Error {
    let kind = match &e {
        BollardError::DockerResponseServerError { status_code, .. } => match status_code {
            400 => ErrorKind::InvalidArgument,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            _ => ErrorKind::Backend,
        },
        BollardError::RequestTimeoutError => ErrorKind::Timeout,
        _ => ErrorKind::Backend,
    };
    if let Some(why) = connect_failure(&e) {
        return Error::new(
            ErrorKind::Backend,
            format!("{what}: the Docker Engine is not answering ({why}): is dockerd running?"),
        );
    }
    let detail = match e {
        BollardError::DockerResponseServerError { message, .. } => message,
        other => other.to_string(),
    };
    // runc could not run the container's (or exec's) command: the user's input, in runc's words.
    if let Some(command) = Error::from_exec_failure(&detail) {
        return command;
    }
    Error::new(kind, format!("{what}: Docker Engine: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("unix:///run/docker.sock").unwrap(),
            Address::Unix("/run/docker.sock".into())
        );
        assert_eq!(
            parse_address("tcp://127.0.0.1:2375").unwrap(),
            Address::Http("tcp://127.0.0.1:2375".into())
        );
        assert_eq!(
            parse_address("http://h:1").unwrap(),
            Address::Http("tcp://h:1".into())
        );
        for bad in [
            "",
            "/run/docker.sock",
            "unix://relative",
            "npipe:////./pipe/docker",
            "tcp://",
        ] {
            let e = parse_address(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(is_local("unix:///x"));
        assert!(!is_local("tcp://h:1"));
    }

    #[test]
    fn refusals_name_the_minimum() {
        let e = BollardError::DockerResponseServerError {
            status_code: 400,
            message: "client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client".into(),
        };
        assert_eq!(minimum_from_refusal(&e), Some((1, 44)));
        let e = BollardError::DockerResponseServerError {
            status_code: 400,
            message: "client version 1.41 is too old. Minimum supported API version is 1.44."
                .into(),
        };
        assert_eq!(minimum_from_refusal(&e), Some((1, 44)));
        let other = BollardError::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        assert_eq!(minimum_from_refusal(&other), None);
    }

    #[test]
    fn old_engines_are_refused_naming_host_and_minimum() {
        let report = |api: &str| SystemVersion {
            api_version: Some(api.into()),
            version: Some("18.09.1".into()),
            ..Default::default()
        };
        let e = check_api("unix:///x.sock", &report("1.39")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert!(
            e.message.contains("unix:///x.sock")
                && e.message.contains("1.39")
                && e.message.contains("1.41"),
            "{}",
            e.message
        );
        assert_eq!(check_api("h", &report("1.41")).unwrap(), (1, 41));
        assert_eq!(
            check_api("h", &report("1.100")).unwrap(),
            (1, 100),
            "numeric, not text, comparison"
        );
        assert_eq!(
            check_api("h", &SystemVersion::default()).unwrap_err().kind,
            ErrorKind::Backend
        );
    }

    #[test]
    fn an_engine_that_is_not_there_is_named_as_such() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = engine_error("list containers", BollardError::IOError { err: refused });
        assert_eq!(e.kind, ErrorKind::Backend);
        assert!(
            e.message
                .starts_with("list containers: the Docker Engine is not answering ("),
            "{}",
            e.message
        );
        let other = std::io::Error::other("bad chunk");
        let e = engine_error("read logs", BollardError::IOError { err: other });
        assert!(!e.message.contains("not answering"), "{}", e.message);
    }

    #[test]
    fn engine_errors_keep_their_kind() {
        let e = engine_error(
            "start container web",
            BollardError::DockerResponseServerError {
                status_code: 404,
                message: "No such container: x".into(),
            },
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(
            e.message
                .starts_with("start container web: Docker Engine: No such container"),
            "{}",
            e.message
        );
        assert_eq!(
            engine_error("x", BollardError::RequestTimeoutError).kind,
            ErrorKind::Timeout
        );
        let e = engine_error(
            "start container web",
            BollardError::DockerResponseServerError {
                status_code: 400,
                message: "failed to create task for container: failed to create shim task: OCI runtime \
                          create failed: runc create failed: unable to start container process: exec: \
                          \"nope\": executable file not found in $PATH: unknown"
                    .into(),
            },
        );
        assert_eq!(e.field.as_deref(), Some("command"));
        assert_eq!(
            e.message,
            "exec: \"nope\": executable file not found in $PATH"
        );
    }
}
