//! A pool of ready network namespaces (`sandbox_pool = N` in husk.toml, off by default).
//!
//! Attaching a new network namespace to a CNI network is most of what creating a sandbox costs: the bridge
//! plugin and its IPAM plugin are two process starts and a dozen netlink round trips, 10-20 ms on a small host,
//! against 2-3 ms for everything else. With a pool, that work is done ahead of time: the pool keeps up to N
//! namespaces pinned under `RUN_ROOT/pool/<entry>/net`, each already attached to the default network with no
//! published ports, and a sandbox (or standalone container) that asks for exactly that takes one, pins it as its
//! own and adopts its attachment ([`husk_net::Networks::adopt`]); the pool refills in the background. Requests
//! for another network, published ports or a user namespace of their own never use the pool.
//!
//! It never leaks: an entry is torn down (CNI DEL, then unpinned) when it is refused, at shutdown, and at the
//! next start for whatever a crash left in `RUN_ROOT/pool`. An entry whose attachment a sandbox adopted just
//! before a crash is only forgotten there, never deleted, since the sandbox owns its address now.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use husk_container::namespaces;
use husk_core::{Error, NetworkConfig, NetworkStatus, Result};
use husk_net::{Mode, Networks};

/// The prefix of every entry's ID (its `CNI_CONTAINERID`, kept by the sandbox that adopts it).
const ENTRY_PREFIX: &str = "pool-";

/// Ready network namespaces on the default network; see the module documentation.
#[derive(Debug)]
pub struct NetnsPool {
    dir: PathBuf,
    size: usize,
    networks: Arc<Networks>,
    ready: Mutex<VecDeque<String>>,
    filling: AtomicBool,
}

impl NetnsPool {
    /// A pool of up to `size` entries kept in `dir` (nothing is made until [`fill`](Self::fill)).
    pub fn new(dir: PathBuf, size: usize, networks: Arc<Networks>) -> NetnsPool {
        NetnsPool {
            dir,
            size,
            networks,
            ready: Mutex::new(VecDeque::new()),
            filling: AtomicBool::new(false),
        }
    }

    /// Whether the pool is on (`size` > 0).
    pub fn enabled(&self) -> bool {
        self.size > 0
    }

    /// How many entries are ready.
    pub fn ready(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Whether the pool is on and a request for `net` is one it serves: the default network, no published
    /// ports.
    pub fn serves(&self, net: &NetworkConfig) -> bool {
        self.enabled()
            && net.ports.is_empty()
            && self.networks.mode_of(net)
                == Mode::Cni(self.networks.config().default_network.clone())
    }

    /// Makes entries until the pool holds `size` (blocking; one filler at a time, others return at once). Stops
    /// at the first failure, logged: the next take tries again.
    pub fn fill(&self) {
        if !self.enabled() || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        while self.ready() < self.size {
            match self.make_entry() {
                Ok(id) => self.lock().push_back(id),
                Err(e) => {
                    tracing::warn!("sandbox pool: cannot make a ready network namespace: {e}");
                    break;
                }
            }
        }
        self.filling.store(false, Ordering::Release);
    }

    fn make_entry(&self) -> Result<String> {
        let id = format!("{ENTRY_PREFIX}{}", husk_core::new_id());
        let dir = self.entry_dir(&id);
        let pinned = namespaces::create_pinned(&dir, "", &["net"])?;
        let net = NetworkConfig::default();
        if let Err(e) = self.networks.setup(&id, &pinned["net"], &net) {
            let _ = namespaces::remove_pinned(&dir);
            return Err(e);
        }
        Ok(id)
    }

    /// Serves `net` for `owner` from the pool: pins a ready namespace at `target` and hands its attachment to
    /// `owner`. `None` when the pool is off or empty or cannot serve this request; the caller then sets up a
    /// namespace of its own. A taken entry is replaced in the background by the caller's [`fill`](Self::fill).
    pub fn take(&self, owner: &str, net: &NetworkConfig, target: &Path) -> Option<NetworkStatus> {
        if !self.serves(net) {
            return None;
        }
        let id = self.lock().pop_front()?;
        let entry = self.entry_dir(&id).join("net");
        if let Err(e) = namespaces::pin_again(&entry, target) {
            tracing::warn!("sandbox pool: {e}");
            self.discard(&id);
            return None;
        }
        match self.networks.adopt(&id, owner, target, net) {
            Ok(Some(status)) => {
                if let Err(e) = namespaces::remove_pinned(&self.entry_dir(&id)) {
                    tracing::warn!("sandbox pool: {e}");
                }
                Some(status)
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!("sandbox pool: adopt {id}: {e}");
                }
                let _ = namespaces::unpin(target);
                self.discard(&id);
                None
            }
        }
    }

    /// Tears an entry down: DEL through its cached attachment, then unpins it.
    fn discard(&self, id: &str) {
        let dir = self.entry_dir(id);
        if let Err(e) = self.networks.teardown(id, Some(&dir.join("net"))) {
            tracing::warn!("sandbox pool: tear down {id}: {e}");
        }
        if let Err(e) = namespaces::remove_pinned(&dir) {
            tracing::warn!("sandbox pool: {e}");
        }
    }

    /// Tears down every ready entry (at shutdown).
    pub fn drain(&self) {
        let ids: Vec<String> = self.lock().drain(..).collect();
        for id in ids {
            self.discard(&id);
        }
    }

    /// Removes whatever an earlier run left in the pool's directory (at start, before [`fill`](Self::fill)).
    /// An entry a sandbox adopted is only forgotten: the sandbox's attachment is the live one.
    pub fn remove_leftovers(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("list {}", self.dir.display()), e)),
        };
        let ids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| id.starts_with(ENTRY_PREFIX))
            .collect();
        let adopted = self.networks.adopted_container_ids()?;
        for id in &ids {
            if adopted.contains(id) {
                self.networks.forget(id)?;
                namespaces::remove_pinned(&self.entry_dir(id))?;
            } else {
                self.discard(id);
            }
        }
        Ok(ids)
    }
}
