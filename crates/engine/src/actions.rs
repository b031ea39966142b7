//! The history of what was done to each container, by whom and with what result (Zun's container actions).
//! Front ends wrap the engine calls they make on a user's behalf in [`Engine::track`]; the records go with
//! the container.

use std::future::Future;

use husk_core::{ContainerRecord, Error, Result, Timestamp};
use husk_store::Object;
use serde::{Deserialize, Serialize};

use crate::Engine;

/// One step of an action and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionEvent {
    /// What was done (`compute__do_container_start`).
    pub event: String,
    /// When it started.
    pub start_time: Timestamp,
    /// When it ended.
    pub finish_time: Timestamp,
    /// `Success` or `Error`.
    pub result: String,
    /// The error's message when it failed.
    pub traceback: Option<String>,
}

/// One action on a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The request's ID (`req-<uuid>`).
    pub request_id: String,
    /// The container.
    pub container_id: String,
    /// `create`, `start`, `stop`, `reboot`, `pause`, `unpause`, `kill`, `delete`, `exec_cmd`, `update` ...
    pub action: String,
    /// Who asked.
    pub user_id: String,
    /// The container's project.
    pub project_id: String,
    /// When it started.
    pub start_time: Timestamp,
    /// When it ended (none while running).
    pub finish_time: Option<Timestamp>,
    /// `Error` when it failed.
    pub message: Option<String>,
    /// Its steps.
    pub events: Vec<ActionEvent>,
}

impl Object for ActionRecord {
    const KIND: &'static str = "container_action";
    fn id(&self) -> &str {
        &self.request_id
    }
    fn project(&self) -> &str {
        &self.project_id
    }
}

/// A new request ID in OpenStack's form.
pub fn new_request_id() -> String {
    husk_core::new_request_id()
}

impl Engine {
    /// Runs `work` (an operation on container `container_id` for `user`) and records it as `action`, with its
    /// start, end and result.
    pub async fn track<T>(
        &self,
        container_id: &str,
        action: &str,
        user: &str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let start = Timestamp::now();
        let result = work.await;
        self.record_action(container_id, action, user, start, result.as_ref().err());
        result
    }

    /// Records a finished action (`error` when it failed). A container that no longer exists (deleted by this
    /// very action) keeps no history.
    pub fn record_action(
        &self,
        container_id: &str,
        action: &str,
        user: &str,
        start: Timestamp,
        error: Option<&Error>,
    ) {
        let Ok(Some(c)) = self.inner.store.get::<ContainerRecord>(container_id) else {
            return;
        };
        let finish = Timestamp::now();
        let rec = ActionRecord {
            request_id: new_request_id(),
            container_id: container_id.to_string(),
            action: action.to_string(),
            user_id: user.to_string(),
            project_id: c.project,
            start_time: start,
            finish_time: Some(finish),
            message: error.map(|_| "Error".to_string()),
            events: vec![ActionEvent {
                event: format!("compute__do_container_{action}"),
                start_time: start,
                finish_time: finish,
                result: if error.is_some() { "Error" } else { "Success" }.into(),
                traceback: error.map(|e| e.message.clone()),
            }],
        };
        if let Err(e) = self.inner.store.insert(&rec) {
            tracing::warn!(container = container_id, "record action {action}: {e}");
        }
    }

    /// The actions on a container, oldest first.
    pub fn container_actions(&self, container_id: &str) -> Result<Vec<ActionRecord>> {
        let mut list: Vec<ActionRecord> = self
            .inner
            .store
            .list::<ActionRecord>()?
            .into_iter()
            .filter(|a| a.container_id == container_id)
            .collect();
        list.sort_by_key(|a| a.start_time);
        Ok(list)
    }

    /// Forgets the history of a removed container.
    pub(crate) fn forget_actions(&self, container_id: &str) {
        if let Ok(list) = self.container_actions(container_id) {
            for a in list {
                let _ = self.inner.store.delete::<ActionRecord>(&a.request_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_openstacks() {
        let id = new_request_id();
        assert_eq!(id.len(), 40);
        assert!(id.starts_with("req-"));
        assert_eq!(id.matches('-').count(), 5);
    }
}
