//! The engine-side halves of exec and attach streams: terminal resizes and exit codes.

use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{
    ResizeContainerTTYOptions, ResizeExecOptions, WaitContainerOptions,
};
use futures::StreamExt;
use husk_core::{Error, Result};

use crate::client::engine_error;
use crate::stdio_bridge::Session;

/// Detach keys for the engine's attach and exec: a sequence nobody types, because husk's callers end streams
/// themselves and the engine's default (ctrl-p ctrl-q) would cut a session in the middle of the user's input.
pub(crate) const DETACH_KEYS: &str = "ctrl-^,ctrl-_,ctrl-^,ctrl-_,ctrl-^,ctrl-_,ctrl-^,ctrl-_";

/// How long an exec may still be reported running after its output ended.
const EXEC_EXIT_GRACE: Duration = Duration::from_secs(30);

/// An exec's session.
pub(crate) struct ExecSession {
    pub docker: Docker,
    pub exec_id: String,
}

#[async_trait]
impl Session for ExecSession {
    async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let options = ResizeExecOptions {
            h: i32::from(rows),
            w: i32::from(cols),
        };
        self.docker
            .resize_exec(&self.exec_id, options)
            .await
            .map_err(|e| engine_error("resize the exec's terminal", e))
    }

    async fn exit_code(&self) -> Result<i32> {
        // The output can end a moment before the engine records the exit.
        let deadline = tokio::time::Instant::now() + EXEC_EXIT_GRACE;
        let mut pause = Duration::from_millis(5);
        loop {
            let inspect = self
                .docker
                .inspect_exec(&self.exec_id)
                .await
                .map_err(|e| engine_error("read the exec's exit code", e))?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code.unwrap_or(-1) as i32);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::timeout(format!(
                    "the exec's output ended but the engine still reports it running after {}s",
                    EXEC_EXIT_GRACE.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

/// An attach session to a container's main process.
pub(crate) struct AttachSession {
    pub docker: Docker,
    pub engine_id: String,
    /// Counts this client among the container's attached ones until the session ends.
    pub _attached: husk_core::attached::AttachedGuard,
}

#[async_trait]
impl Session for AttachSession {
    async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let options = ResizeContainerTTYOptions {
            h: i32::from(rows),
            w: i32::from(cols),
        };
        self.docker
            .resize_container_tty(&self.engine_id, options)
            .await
            .map_err(|e| engine_error("resize the container's terminal", e))
    }

    async fn exit_code(&self) -> Result<i32> {
        wait_exit_code(&self.docker, &self.engine_id).await
    }
}

/// Waits until the container is not running and returns the exit code the engine reports.
///
/// A container that was created and never started is waited for until its first run ends (the engine's
/// "not-running" would answer at once, with exit code 0).
pub(crate) async fn wait_exit_code(docker: &Docker, engine_id: &str) -> Result<i32> {
    let state = docker
        .inspect_container(engine_id, None)
        .await
        .map_err(|e| engine_error("wait for the container", e))?
        .state
        .and_then(|s| s.status);
    let condition = if state == Some(ContainerStateStatusEnum::CREATED) {
        "next-exit"
    } else {
        "not-running"
    };
    let options = WaitContainerOptions {
        condition: condition.to_string(),
    };
    let mut answers = docker.wait_container(engine_id, Some(options));
    match answers.next().await {
        Some(Ok(answer)) => Ok(answer.status_code as i32),
        // bollard reports non-zero exits as errors.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(engine_error("wait for the container", e)),
        None => Err(Error::backend(
            "wait for the container: the engine closed the request without an answer",
        )),
    }
}
