//! Clients attached to a container's output, counted so that its removal can let them finish.
//!
//! A container removed as soon as it exits (`run --rm`) may be removed while an attached client's stream still
//! carries the last output, or still asks the backend for the exit code: a driver counts those streams and, before
//! it removes the container, waits a little for them to end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a removal waits for attached streams to end.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(1);

/// The attached output streams of each container (by container ID).
#[derive(Debug, Default)]
pub struct AttachedStreams {
    counts: Mutex<HashMap<String, usize>>,
    changed: Notify,
}

impl AttachedStreams {
    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream of container `id` starts.
    pub fn begin(&self, id: &str) {
        *self.counts().entry(id.to_string()).or_default() += 1;
    }

    /// A stream of container `id` ended.
    pub fn end(&self, id: &str) {
        let mut counts = self.counts();
        if let Some(n) = counts.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                counts.remove(id);
            }
        }
        drop(counts);
        self.changed.notify_waiters();
    }

    /// A stream of container `id` that starts now and ends when the guard is dropped.
    pub fn guard(self: &Arc<Self>, id: &str) -> AttachedGuard {
        self.begin(id);
        AttachedGuard {
            streams: self.clone(),
            id: id.to_string(),
        }
    }

    /// Waits until no stream of container `id` is attached, for at most `limit`.
    pub async fn settle(&self, id: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !self.counts().contains_key(id) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }
}

/// One attached stream; it ends when this is dropped.
#[derive(Debug)]
pub struct AttachedGuard {
    streams: Arc<AttachedStreams>,
    id: String,
}

impl Drop for AttachedGuard {
    fn drop(&mut self) {
        self.streams.end(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settle_waits_for_the_last_stream_or_the_limit() {
        let streams = Arc::new(AttachedStreams::default());
        streams.settle("c", Duration::from_secs(5)).await;
        let guard = streams.guard("c");
        streams.begin("c");
        let waiter = {
            let streams = streams.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                streams.settle("c", Duration::from_secs(5)).await;
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        streams.end("c");
        drop(guard);
        let waited = waiter.await.unwrap();
        assert!(
            waited >= Duration::from_millis(40) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // A stream that never ends holds a removal only up to the limit.
        streams.begin("d");
        let start = std::time::Instant::now();
        streams.settle("d", Duration::from_millis(100)).await;
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
