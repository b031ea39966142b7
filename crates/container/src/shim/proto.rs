//! The shim's control protocol and its on-disk contract.
//!
//! A client connects to the shim's unix socket and sends one request as a JSON line; the shim answers with one
//! JSON line. For `attach` and `exec`, once the answer is `ok` the connection carries stdio frames
//! ([`husk_core::stdio`]) both ways until the process's `Exit` frame.

use std::path::PathBuf;

use husk_core::{Error, ExitStatus};
use serde::{Deserialize, Serialize};

/// What the daemon tells a new shim (written as `shim.json` in the container's bundle directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimConfig {
    /// Container ID (also libcontainer's).
    pub id: String,
    /// OCI bundle directory (holds `config.json`).
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The control socket to listen on.
    pub socket: PathBuf,
    /// The log file (JSON lines).
    pub log: PathBuf,
    /// Where the exit status is recorded (JSON [`ExitStatus`]).
    pub exit_file: PathBuf,
    /// A directory for console sockets and exec process files.
    pub work_dir: PathBuf,
    /// The main process has a terminal.
    pub tty: bool,
    /// The main process's stdin is kept open for attach.
    pub stdin: bool,
    /// Cgroup path (for OOM detection).
    pub cgroup_path: String,
    /// A precompiled seccomp program the container's processes install before `execve`, if the file exists.
    #[serde(default)]
    pub seccomp_program: Option<PathBuf>,
    /// A second log in the Kubernetes CRI format, for kubelet ([`crate::logs::CriLog`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_log: Option<PathBuf>,
    /// How much of the log is kept: it is rotated within these limits.
    #[serde(default, skip_serializing_if = "husk_core::LogLimits::is_unbounded")]
    pub log_limits: husk_core::LogLimits,
    /// The cgroup lines of the daemon's mount table (`/proc/self/mountinfo` form; the shim's namespace holds
    /// the same cgroup mounts), so neither the shim nor libcontainer's processes read the whole table for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup_mounts: Vec<String>,
    /// The mount namespace the container starts from ([`crate::base_ns`]): the shim leaves the daemon's for a copy
    /// of this one before it makes the container. `None`: it stays in the daemon's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_mount_namespace: Option<PathBuf>,
    /// The mounts the container uses (its root, the namespace files it joins, its bind sources), cloned from the
    /// daemon's namespace into the shim's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried_mounts: Vec<crate::base_ns::CarriedMount>,
}

/// A request to the shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the created container.
    Start,
    /// Report the state.
    State,
    /// Answer when the main process exits.
    Wait,
    /// Send a signal to the main process (or to every process with `all`).
    Kill {
        /// Signal number.
        signal: i32,
        /// Every process of the container.
        all: bool,
    },
    /// Freeze.
    Pause,
    /// Thaw.
    Resume,
    /// Stream the main process's stdio.
    Attach {
        /// Forward stdin frames.
        stdin: bool,
    },
    /// Run another process in the container and stream its stdio.
    Exec {
        /// The OCI `process` object.
        process: serde_json::Value,
        /// Keep the process's stdin open for the client's input.
        stdin: bool,
        /// Kill the process (SIGKILL) if it still runs this many milliseconds after it started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
    },
    /// Resize the main process's terminal.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Open the CRI log file again (kubelet rotated it).
    ReopenLog,
    /// Kill everything and exit.
    Shutdown,
}

/// The shim's view of its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimStatus {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// The main process exited.
    Exited,
}

/// The shim's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Response {
    /// Success.
    pub ok: bool,
    /// The failure, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    /// Main process (or exec) PID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Container status (`state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ShimStatus>,
    /// Exit status (`wait`, or `state` after exit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

impl Response {
    /// A successful answer.
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    /// A failed answer.
    pub fn err(error: Error) -> Response {
        Response {
            ok: false,
            error: Some(error),
            ..Default::default()
        }
    }
}
