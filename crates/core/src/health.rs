//! Health checks: what the engine runs inside a container, and what it remembers of the results.
//!
//! The rules are Docker's: the state is `starting` until the first check passes (failures within the start
//! period do not count), `healthy` after a passing check, `unhealthy` after `retries` failures in a row. The
//! last five results are kept. What happens to an unhealthy container is the container's [`HealthAction`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How many results the state keeps.
pub const HEALTH_LOG_LEN: usize = 5;
/// How much of a check's output is kept.
pub const HEALTH_OUTPUT_MAX: usize = 4096;
/// Default time between checks (Docker's).
pub const DEFAULT_INTERVAL_NS: i64 = 30_000_000_000;
/// Default time a check may take (Docker's).
pub const DEFAULT_TIMEOUT_NS: i64 = 30_000_000_000;
/// Default time between checks during the start period (Docker's).
pub const DEFAULT_START_INTERVAL_NS: i64 = 5_000_000_000;
/// Default failures in a row before unhealthy (Docker's).
pub const DEFAULT_RETRIES: u32 = 3;

/// What the engine does when a container turns unhealthy (Podman's `--health-on-failure`). Docker does
/// nothing by itself; neither does husk unless asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthAction {
    /// Only record the state (Docker's behaviour).
    #[default]
    None,
    /// Kill the main process; the restart policy then decides, as for any failure.
    Kill,
    /// Restart the container, whatever its restart policy.
    Restart,
    /// Stop the container, as a user's stop would (the restart policy leaves it alone).
    Stop,
}

impl HealthAction {
    /// Parses `none`, `kill`, `restart` or `stop`.
    pub fn parse(text: &str) -> Result<HealthAction> {
        match text {
            "" | "none" => Ok(HealthAction::None),
            "kill" => Ok(HealthAction::Kill),
            "restart" => Ok(HealthAction::Restart),
            "stop" => Ok(HealthAction::Stop),
            _ => Err(Error::invalid(
                "health_on_failure",
                format!("unknown health failure action {text:?}: use none, kill, restart or stop"),
            )),
        }
    }
}

/// A resolved health check: the image's HEALTHCHECK merged with the request's flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    /// Nanoseconds between checks.
    pub interval_ns: i64,
    /// Nanoseconds a check may take.
    pub timeout_ns: i64,
    /// Nanoseconds after start during which failures do not count.
    pub start_period_ns: i64,
    /// Nanoseconds between checks during the start period.
    pub start_interval_ns: i64,
    /// Failures in a row before unhealthy.
    pub retries: u32,
    /// What to do when the container turns unhealthy.
    #[serde(default)]
    pub on_failure: HealthAction,
}

impl HealthConfig {
    /// The command the check runs.
    pub fn argv(&self) -> Vec<String> {
        match self.test.first().map(String::as_str) {
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), self.test[1..].join(" ")],
            Some("CMD") => self.test[1..].to_vec(),
            _ => self.test.clone(),
        }
    }

    /// Checks the test's form and the durations.
    pub fn check(&self) -> Result<()> {
        let bad = |why: &str| Error::invalid("healthcheck", why.to_string());
        match self.test.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") if self.test.len() > 1 && !self.test[1].is_empty() => {}
            _ => {
                return Err(bad(
                    "the health check's test must be [\"CMD\", args...] or [\"CMD-SHELL\", command]",
                ));
            }
        }
        if self.interval_ns < 1_000_000
            || self.timeout_ns < 1_000_000
            || self.start_interval_ns < 1_000_000
        {
            return Err(bad(
                "health check interval, timeout and start interval must be at least 1ms",
            ));
        }
        if self.start_period_ns < 0 {
            return Err(bad("the health check's start period cannot be negative"));
        }
        if self.retries == 0 {
            return Err(bad("health check retries must be at least 1"));
        }
        Ok(())
    }
}

/// Docker's health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No check has passed yet.
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl HealthStatus {
    /// Docker's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    /// When it started.
    pub start: crate::Timestamp,
    /// When it ended.
    pub end: crate::Timestamp,
    /// Exit code (0 = healthy; -1 = it could not run or timed out).
    pub exit_code: i32,
    /// The first bytes of its output.
    pub output: String,
}

/// The health of a running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// Current state.
    pub status: HealthStatus,
    /// Failures in a row.
    pub failing_streak: u32,
    /// The last results, oldest first.
    #[serde(default)]
    pub log: Vec<HealthResult>,
}

impl HealthState {
    /// The state of a container that just started.
    pub fn starting() -> HealthState {
        HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// Records a result; `in_start_period` says whether failures still do not count. Returns whether the
    /// status changed.
    pub fn record(&mut self, result: HealthResult, retries: u32, in_start_period: bool) -> bool {
        let before = self.status;
        if result.exit_code == 0 {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !(in_start_period && self.status == HealthStatus::Starting) {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(result);
        if self.log.len() > HEALTH_LOG_LEN {
            let extra = self.log.len() - HEALTH_LOG_LEN;
            self.log.drain(..extra);
        }
        before != self.status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start: crate::Timestamp::UNIX_EPOCH,
            end: crate::Timestamp::UNIX_EPOCH,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn states_follow_dockers_rules() {
        let mut s = HealthState::starting();
        assert!(
            !s.record(result(1), 2, true),
            "failures in the start period do not count"
        );
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Starting, 0));
        assert!(s.record(result(0), 2, true));
        assert_eq!(s.status, HealthStatus::Healthy);
        assert!(!s.record(result(1), 2, false));
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Healthy, 1));
        assert!(s.record(result(1), 2, false));
        assert_eq!(s.status, HealthStatus::Unhealthy);
        assert!(s.record(result(0), 2, false));
        assert_eq!((s.status, s.failing_streak), (HealthStatus::Healthy, 0));
        for _ in 0..10 {
            s.record(result(0), 2, false);
        }
        assert_eq!(s.log.len(), HEALTH_LOG_LEN);
    }

    #[test]
    fn tests_are_checked_and_turned_into_commands() {
        let mut c = HealthConfig {
            test: vec!["CMD-SHELL".into(), "test -f /ok".into()],
            interval_ns: DEFAULT_INTERVAL_NS,
            timeout_ns: DEFAULT_TIMEOUT_NS,
            start_period_ns: 0,
            start_interval_ns: DEFAULT_START_INTERVAL_NS,
            retries: 3,
            on_failure: HealthAction::None,
        };
        assert!(c.check().is_ok());
        assert_eq!(c.argv(), vec!["/bin/sh", "-c", "test -f /ok"]);
        c.test = vec!["CMD".into(), "true".into(), "x".into()];
        assert_eq!(c.argv(), vec!["true", "x"]);
        c.test = vec!["NONE".into()];
        assert!(c.check().is_err());
        c.test = vec!["CMD".into(), "true".into()];
        c.retries = 0;
        assert!(c.check().is_err());
        assert_eq!(HealthAction::parse("kill").unwrap(), HealthAction::Kill);
        assert!(HealthAction::parse("explode").is_err());
    }
}
