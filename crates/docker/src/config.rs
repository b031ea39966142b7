//! How the driver is set up, and the one thing it needs from husk's image store.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use husk_core::{Error, ImageRef, Result};
use tokio::io::AsyncRead;

/// The engine address used when none is configured.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// A `docker save` archive as a byte stream.
pub type ImageArchive = Pin<Box<dyn AsyncRead + Send>>;

/// Where the driver gets an image the engine does not have yet: husk's image store.
#[async_trait]
pub trait ImageSource: Send + Sync + 'static {
    /// A `docker save` archive (`manifest.json`, the config blob named by its digest, layer tars) holding the
    /// image whose ID is `image.id`, preferably tagged `image.name`. The engine computes the image ID from the
    /// config blob's bytes, so they must be the store's bytes unchanged.
    async fn export(&self, image: &ImageRef) -> Result<ImageArchive>;
}

/// Everything [`crate::DockerDriver::connect`] needs.
#[derive(Clone)]
pub struct DockerDriverConfig {
    /// The engine's address: `unix:///path/docker.sock`, `tcp://host:port` or `http://host:port`.
    pub host: String,
    /// This husk daemon's name on the engine, written into every object's labels and names, so daemons that
    /// share an engine leave each other's objects alone. Letters, digits, `.` and `-`, at most 32 characters.
    pub instance: String,
    /// The static `husk-pause` binary the infra image is built from.
    pub pause_binary: PathBuf,
    /// husk's image store.
    pub images: Arc<dyn ImageSource>,
    /// How long a request may wait for the engine's answer (image loads get an hour).
    pub request_timeout: Duration,
    /// Where the driver keeps what must outlive the daemon: where each container's CRI log ended when kubelet
    /// last rotated it, so that a follower re-attached after a restart neither repeats nor skips lines. `None`
    /// keeps nothing (a re-attached follower then resumes after the last line of the current CRI log file).
    pub state_dir: Option<PathBuf>,
}

impl DockerDriverConfig {
    /// A configuration with the default request timeout (2 minutes) and no state directory.
    pub fn new(
        host: impl Into<String>,
        instance: impl Into<String>,
        pause_binary: impl Into<PathBuf>,
        images: Arc<dyn ImageSource>,
    ) -> Self {
        DockerDriverConfig {
            host: host.into(),
            instance: instance.into(),
            pause_binary: pause_binary.into(),
            images,
            request_timeout: Duration::from_secs(120),
            state_dir: None,
        }
    }

    /// Checks the fields that do not need the engine.
    pub fn validate(&self) -> Result<()> {
        validate_instance(&self.instance)?;
        if self.host.is_empty() {
            return Err(Error::invalid(
                "docker_host",
                format!("the Docker Engine address is empty: use e.g. {DEFAULT_HOST}"),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::invalid(
                "request_timeout",
                "the engine request timeout must be above zero",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for DockerDriverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerDriverConfig")
            .field("host", &self.host)
            .field("instance", &self.instance)
            .field("pause_binary", &self.pause_binary)
            .field("request_timeout", &self.request_timeout)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// Checks an instance name: it becomes a label value and the first part of every engine object's name, where
/// `_` separates it from the rest, so it may not contain `_`.
pub fn validate_instance(instance: &str) -> Result<()> {
    let ok = !instance.is_empty()
        && instance.len() <= 32
        && instance.starts_with(|c: char| c.is_ascii_alphanumeric())
        && instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "instance",
            format!(
                "invalid docker driver instance name {instance:?}: use letters, digits, '.' and '-' (at most 32, no '_')"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names() {
        for good in ["husk", "husk-2", "a.b", "X9"] {
            assert!(validate_instance(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a_b", "a b", &"x".repeat(33)] {
            assert!(validate_instance(bad).is_err(), "{bad}");
        }
    }
}
