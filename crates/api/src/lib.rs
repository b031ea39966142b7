//! husk's front ends over the engine. Each is a thin translation between a wire format and
//! [`husk_engine::Engine`] calls: [`local`] (the CLI's API); Zun's REST API and the CRI come next.

pub mod local;
mod local_images;

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
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| Error::io(format!("listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| Error::io("set the socket's mode", e))?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io("serve the API", e))
}
