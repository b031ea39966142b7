//! Progress of pulls and pushes, per layer, for a terminal to draw (the CLI uses indicatif) or an API to stream.

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

/// What a layer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    /// Queued behind other transfers.
    Waiting,
    /// Already here (pull) or already in the registry (push): nothing to transfer.
    Exists,
    /// Bytes arriving; unpacking runs at the same time.
    Downloading,
    /// Download done and verified; the unpack is finishing.
    Unpacking,
    /// Stored (pull) or sent (push).
    Complete,
    /// Bytes leaving.
    Uploading,
}

/// One progress update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Progress {
    /// The manifest is known.
    Resolved {
        /// The reference, normalised.
        reference: String,
        /// Digest of what the reference names (index or manifest).
        digest: String,
        /// Number of layers.
        layers: usize,
    },
    /// A layer changed state or advanced.
    Layer {
        /// Layer blob digest (`sha256:...`).
        digest: String,
        /// What it is doing.
        state: LayerState,
        /// Bytes done.
        current: u64,
        /// Bytes in all.
        total: u64,
    },
    /// The operation finished.
    Done {
        /// Image ID (pull) or manifest digest (push).
        id: String,
    },
}

/// Where progress goes; `None` discards it. Sends never block and never fail the operation.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink(pub Option<UnboundedSender<Progress>>);

impl ProgressSink {
    /// Sends one update (dropped if nobody listens).
    pub fn send(&self, p: Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(p);
        }
    }

    /// A layer update.
    pub fn layer(&self, digest: &str, state: LayerState, current: u64, total: u64) {
        self.send(Progress::Layer {
            digest: digest.to_string(),
            state,
            current,
            total,
        });
    }
}
