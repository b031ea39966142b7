//! The attachment cache: for every sandbox attached to a CNI network, the exact configuration list, runtime
//! arguments and (latest) result of its ADD, so that CHECK and DEL can run with the same inputs after a daemon
//! restart or after the network's file changed or was removed, as the CNI specification asks of runtimes.
//!
//! A record is written *before* the first plugin runs and updated after each one, so a daemon that dies in the
//! middle of an ADD leaves enough behind for DEL to undo what was done.

use std::io::Write;
use std::path::{Path, PathBuf};

use husk_core::{Context, Error, PortMapping, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conflist::NetworkList;

/// Format version of a record; bumped on incompatible changes.
const FORMAT: u32 = 1;

/// What husk remembers about one sandbox's attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// Record format.
    pub format: u32,
    /// Sandbox ID (also `CNI_CONTAINERID`, unless `container_id` says otherwise).
    pub sandbox_id: String,
    /// `CNI_CONTAINERID` of the ADD when it is not the sandbox ID: an attachment made ahead of time for a pool
    /// entry and handed to a sandbox later ([`Networks::adopt`](crate::Networks::adopt)) keeps the ID the
    /// plugins saw (host-local's allocation and any iptables rule carry it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    /// Network name.
    pub network: String,
    /// Interface inside the sandbox (`CNI_IFNAME`).
    pub ifname: String,
    /// Network namespace path used for ADD.
    pub netns: PathBuf,
    /// The configuration list as used for ADD.
    pub config: Value,
    /// Published ports (passed as `runtimeConfig.portMappings`).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// The result so far: the last plugin's output; `None` before the first plugin finished.
    #[serde(default)]
    pub result: Option<Value>,
    /// How many plugins of the list completed ADD.
    #[serde(default)]
    pub plugins_added: usize,
    /// Whether every plugin completed ADD.
    #[serde(default)]
    pub complete: bool,
}

impl Attachment {
    /// A new record for an ADD about to start.
    pub fn new(
        sandbox_id: &str,
        list: &NetworkList,
        ifname: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Self {
        Attachment {
            format: FORMAT,
            sandbox_id: sandbox_id.to_string(),
            container_id: String::new(),
            network: list.name.clone(),
            ifname: ifname.to_string(),
            netns: netns.to_path_buf(),
            config: list.to_json(),
            ports: ports.to_vec(),
            result: None,
            plugins_added: 0,
            complete: false,
        }
    }

    /// The `CNI_CONTAINERID` the plugins know this attachment by.
    pub fn cni_container_id(&self) -> &str {
        if self.container_id.is_empty() {
            &self.sandbox_id
        } else {
            &self.container_id
        }
    }

    /// The cached configuration list.
    pub fn list(&self) -> Result<NetworkList> {
        let bytes = serde_json::to_vec(&self.config)
            .map_err(|e| Error::internal(format!("encode cached list: {e}")))?;
        NetworkList::parse(&bytes, &format!("(cached for sandbox {})", self.sandbox_id))
    }
}

/// The directory of records, one `<sandbox id>.json` each.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache in `dir` (created if missing).
    pub fn open(dir: PathBuf) -> Result<Cache> {
        std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        Ok(Cache { dir })
    }

    fn path(&self, sandbox_id: &str) -> PathBuf {
        self.dir.join(format!("{sandbox_id}.json"))
    }

    /// The record of a sandbox, if any.
    pub fn get(&self, sandbox_id: &str) -> Result<Option<Attachment>> {
        let path = self.path(sandbox_id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!("corrupt network cache {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
        }
    }

    /// Writes a record atomically (a temporary file renamed over the old one).
    pub fn put(&self, record: &Attachment) -> Result<()> {
        let path = self.path(&record.sandbox_id);
        let tmp = self.dir.join(format!(".{}.tmp", record.sandbox_id));
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| Error::internal(format!("encode cache: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            std::fs::rename(&tmp, &path)
        };
        write().context(format!("write network cache {}", path.display()))
    }

    /// Removes a record; absent is fine.
    pub fn remove(&self, sandbox_id: &str) -> Result<()> {
        let path = self.path(sandbox_id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("remove {}", path.display()), e))
            }
            _ => Ok(()),
        }
    }

    /// Every record (unreadable ones are skipped with a warning: one bad file must not hide the others).
    pub fn all(&self) -> Result<Vec<Attachment>> {
        let entries =
            std::fs::read_dir(&self.dir).context(format!("list {}", self.dir.display()))?;
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.context(format!("list {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            match self.get(id) {
                Ok(Some(record)) => records.push(record),
                Ok(None) => {}
                Err(e) => tracing::warn!("skipping network cache entry: {e}"),
            }
        }
        records.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("attachments")).unwrap();
        let list = NetworkList::parse(
            br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
            "x",
        )
        .unwrap();
        let mut record = Attachment::new("abc", &list, "eth0", Path::new("/run/netns/abc"), &[]);
        cache.put(&record).unwrap();
        assert_eq!(cache.get("abc").unwrap(), Some(record.clone()));
        record.result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        record.complete = true;
        cache.put(&record).unwrap();
        assert_eq!(cache.get("abc").unwrap().unwrap().result, record.result);
        assert_eq!(cache.get("abc").unwrap().unwrap().list().unwrap(), list);
        std::fs::write(dir.path().join("attachments/broken.json"), "{").unwrap();
        assert_eq!(cache.all().unwrap().len(), 1);
        cache.remove("abc").unwrap();
        cache.remove("abc").unwrap();
        assert_eq!(cache.get("abc").unwrap(), None);
    }
}
