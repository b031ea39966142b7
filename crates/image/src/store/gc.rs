//! The gate between loads and pulls, which may run together, and a sweep of unused layers and blobs, which
//! runs alone.

use std::sync::{Arc, Condvar, Mutex};

/// Lets loads and pulls in together and a sweep (removal of layers and blobs) in alone.
#[derive(Debug, Default)]
pub(crate) struct GcGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    users: usize,
    sweeping: bool,
}

/// A load or pull inside the gate (Send: it can be held across awaits).
#[derive(Debug)]
pub(crate) struct GcGuard {
    gate: Arc<GcGate>,
}

/// A sweep inside the gate.
#[derive(Debug)]
pub(crate) struct SweepGuard {
    gate: Arc<GcGate>,
}

impl GcGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters as a user, waiting for a running sweep to end.
    pub(crate) fn enter(gate: &Arc<GcGate>) -> GcGuard {
        let mut state = gate.lock();
        while state.sweeping {
            state = gate.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.users += 1;
        GcGuard { gate: gate.clone() }
    }

    /// Enters as the sweeper if nobody is inside.
    pub(super) fn try_sweep(gate: &Arc<GcGate>) -> Option<SweepGuard> {
        let mut state = gate.lock();
        if state.users > 0 || state.sweeping {
            return None;
        }
        state.sweeping = true;
        Some(SweepGuard { gate: gate.clone() })
    }
}

impl Drop for GcGuard {
    fn drop(&mut self) {
        self.gate.lock().users -= 1;
        self.gate.changed.notify_all();
    }
}

impl Drop for SweepGuard {
    fn drop(&mut self) {
        self.gate.lock().sweeping = false;
        self.gate.changed.notify_all();
    }
}
