#![doc = include_str!("../README.md")]

pub mod keystone;
pub mod local;
pub mod metrics;
pub mod pod;
pub mod zun;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use husk_core::{Error, Result};

/// Serves `router` on a unix socket at `path` until `shutdown` resolves. The socket is made mode 0660.
pub async fn serve_unix(
    path: &Path,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_unix_listener(bind_unix(path)?, router, shutdown).await
}

/// A listening unix socket at `path` (a stale socket file there is replaced), mode 0660, its directory made if
/// missing.
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io("set the socket's mode", e))?;
    Ok(listener)
}

/// Serves `router` on a listening unix socket (one bound by `bind_unix`, or handed over by systemd) until
/// `shutdown` resolves.
pub async fn serve_unix_listener(
    listener: tokio::net::UnixListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("serve the API", e))
}

/// Serves `router` on a bound TCP listener until `shutdown` resolves.
pub async fn serve_tcp_listener(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("serve the API", e))
}

/// Everything the daemon's unix socket serves: husk's own API for the CLI and Zun's API, both for local root.
pub fn unix_router(engine: husk_engine::Engine) -> axum::Router {
    let router = local::router(engine.clone())
        .merge(keystone::router(engine.clone()))
        .merge(zun::router(engine.clone(), zun::AuthMode::LocalRoot));
    zun::accept_trailing_slashes(metrics::tracked(router, &engine))
}

/// What a TCP listener serves: Zun's API with authentication `auth`, and the identity service.
pub fn tcp_router(engine: husk_engine::Engine, auth: zun::AuthMode) -> axum::Router {
    let router = keystone::router(engine.clone()).merge(zun::router(engine.clone(), auth));
    zun::accept_trailing_slashes(metrics::tracked(router, &engine))
}
