//! Container events as the events API sends them (Docker's shape).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An event as the events API sends it, in Docker's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// What the event is about: `container`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// What happened (`create`, `start`, `die` ...).
    #[serde(rename = "Action")]
    pub action: String,
    /// The object.
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// When, in seconds since the Unix epoch.
    pub time: i64,
    /// When, in nanoseconds since the Unix epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

/// The object an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventActor {
    /// Its ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name, image and what else the event says (`exitCode`).
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}
