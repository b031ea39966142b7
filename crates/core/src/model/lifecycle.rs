//! Where containers are in their life: isolation modes, statuses and the actions each allows, restart policies.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a container is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The container joins a sandbox's network, IPC and UTS (and optionally PID) namespaces.
    #[default]
    Sandbox,
    /// The container has every namespace of its own.
    Standalone,
}

impl Mode {
    /// The mode's name as users type it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sandbox => "sandbox",
            Mode::Standalone => "standalone",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sandbox" | "container-in-sandbox" => Ok(Mode::Sandbox),
            "standalone" => Ok(Mode::Standalone),
            _ => Err(Error::invalid(
                "mode",
                format!("unknown mode {s:?}: use sandbox or standalone"),
            )),
        }
    }
}

/// The lifecycle status of a container, with Docker's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Being created: recorded, not yet made real by the driver.
    #[default]
    Creating,
    /// Made real by the driver, never started (or restarted and waiting to start).
    Created,
    /// Its main process runs.
    Running,
    /// Frozen.
    Paused,
    /// Exited and about to be started again by its restart policy.
    Restarting,
    /// Its main process exited.
    Exited,
    /// Being removed.
    Removing,
    /// The driver lost it or failed it; only removal is possible.
    Dead,
}

crate::names::named_values!(ContainerStatus {
    Creating => "creating",
    Created => "created",
    Running => "running",
    Paused => "paused",
    Restarting => "restarting",
    Exited => "exited",
    Removing => "removing",
    Dead => "dead",
});

impl ContainerStatus {
    /// Whether the container's processes may be alive (running, paused or between restarts).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting
        )
    }
}

/// The actions whose allowed starting states are checked in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a created or exited container.
    Start,
    /// Stop a running container.
    Stop,
    /// Send a signal.
    Kill,
    /// Freeze.
    Pause,
    /// Thaw.
    Unpause,
    /// Stop (if needed) and start again.
    Restart,
    /// Run another process inside.
    Exec,
    /// Attach to the main process's stdio.
    Attach,
    /// Remove without force.
    Delete,
    /// Read resource usage.
    Stats,
    /// List processes.
    Top,
}

impl Action {
    /// The verb users know the action by.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Kill => "kill",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Restart => "restart",
            Action::Exec => "exec",
            Action::Attach => "attach",
            Action::Delete => "remove",
            Action::Stats => "stats",
            Action::Top => "top",
        }
    }

    /// Whether a container in `status` may undergo this action (the allowed-state table).
    pub fn allowed_in(self, status: ContainerStatus) -> bool {
        use ContainerStatus as S;
        match self {
            Action::Start => matches!(status, S::Created | S::Exited),
            Action::Stop => matches!(
                status,
                S::Running | S::Paused | S::Restarting | S::Created | S::Exited
            ),
            Action::Kill | Action::Pause | Action::Exec | Action::Top => {
                matches!(status, S::Running)
            }
            Action::Unpause => matches!(status, S::Paused),
            Action::Restart => matches!(
                status,
                S::Created | S::Running | S::Exited | S::Paused | S::Restarting
            ),
            Action::Attach => matches!(status, S::Created | S::Running | S::Paused),
            Action::Delete => matches!(status, S::Created | S::Exited | S::Dead),
            Action::Stats => matches!(status, S::Running | S::Paused),
        }
    }

    /// Checks the table and explains a refusal the way users read it.
    pub fn check(self, name: &str, status: ContainerStatus) -> Result<()> {
        if self.allowed_in(status) {
            return Ok(());
        }
        let hint = match (self, status) {
            (Action::Delete, S::Running | S::Paused | S::Restarting) => {
                ": stop it first or force the removal (rm -f)"
            }
            _ => "",
        };
        use ContainerStatus as S;
        Err(Error::conflict(format!(
            "cannot {} container {name}: it is {status}{hint}",
            self.as_str()
        )))
    }
}

/// When a container is started again after its main process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max_retries` times (0 = unlimited).
    OnFailure {
        /// The most restarts in a row (0 = no limit).
        #[serde(default)]
        max_retries: u32,
    },
    /// Always, also when the daemon starts, unless removed.
    Always,
    /// Always, except after the user stopped it.
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses Docker's syntax: `no`, `on-failure[:N]`, `always`, `unless-stopped`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "restart",
                format!(
                    "invalid restart policy {text:?}: use no, on-failure[:N], always or unless-stopped"
                ),
            )
        };
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (text, None),
        };
        match (name, arg) {
            ("no" | "", None) => Ok(RestartPolicy::No),
            ("always", None) => Ok(RestartPolicy::Always),
            ("unless-stopped", None) => Ok(RestartPolicy::UnlessStopped),
            ("on-failure", None) => Ok(RestartPolicy::OnFailure { max_retries: 0 }),
            ("on-failure", Some(n)) => Ok(RestartPolicy::OnFailure {
                max_retries: n.parse().map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }

    /// Whether a container that exited with `exit_code` after `restarts` restarts should start again.
    /// `stopped_by_user` is true when the exit followed a stop or kill request.
    pub fn should_restart(self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max_retries: 0 } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max_retries } => write!(f, "on-failure:{max_retries}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
}
