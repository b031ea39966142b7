//! The containers' logs and exit records on the host: the CRI log and log limits recorded at create, the log
//! reader of each container (one per daemon; it writes `ctr.log`, the CRI log and `exit.json`), and their
//! removal.

use std::path::Path;
use std::sync::{Arc, Mutex};

use husk_container::logs::LogWriter;
use husk_core::stdio::Frame;
use husk_core::{ContainerConfig, Context, Error, ExitStatus, Result};

use super::{VmDriver, lock};
use crate::client::AgentClient;

/// The file in a container's directory naming its CRI log.
const CRI_LOG_FILE: &str = "cri-log";

/// The file in a container's directory holding its log limits (JSON [`husk_core::LogLimits`]), for the
/// readers a daemon starts after a restart.
const LOG_LIMITS_FILE: &str = "log-limits.json";

/// A container's log reader in this daemon and the writer it owns.
pub(super) struct Follower {
    task: tokio::task::JoinHandle<()>,
    /// `ctr.log` and the CRI log; shared so that `reopen_log` reaches the CRI log the reader writes.
    pub(super) log: Arc<Mutex<LogWriter>>,
}

impl Follower {
    /// Stops the reader and writes what it holds of a partial line.
    pub(super) fn stop(self) {
        self.task.abort();
        let mut log = lock(&self.log);
        log.flush_stream(0);
        log.flush_stream(1);
    }
}

impl VmDriver {
    /// Records where the container's CRI log goes (or that it has none) and makes the file, as the `linux`
    /// driver's shim does when the container is created; records the limits of its log too.
    pub(super) fn prepare_cri_log(&self, config: &ContainerConfig) -> Result<()> {
        let dir = self.ctr_dir(&config.id);
        std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        let limits = dir.join(LOG_LIMITS_FILE);
        std::fs::write(
            &limits,
            serde_json::to_vec(&config.log).map_err(|e| Error::internal(e.to_string()))?,
        )
        .context(format!("write {}", limits.display()))?;
        let record = dir.join(CRI_LOG_FILE);
        match &config.cri_log_path {
            Some(path) => {
                husk_container::logs::CriLog::open(Path::new(path))?;
                std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
                std::fs::write(&record, path).context(format!("write {}", record.display()))
            }
            None => match std::fs::remove_file(&record) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(format!("remove {}", record.display()), e)),
            },
        }
    }

    /// Opens container `id`'s log for its reader: `ctr.log`, and its CRI log when the file `cri-log` in the
    /// container's directory names one (written at create, so a daemon that re-attaches to the container after a
    /// restart finds it). Both are appended to, never truncated; `ctr.log` is rotated within the container's
    /// log limits.
    fn open_log(&self, id: &str) -> Result<LogWriter> {
        let dir = self.ctr_dir(id);
        std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
        let mut log = LogWriter::open_limited(&dir.join("ctr.log"), self.log_limits(id))?;
        match std::fs::read_to_string(dir.join(CRI_LOG_FILE)) {
            Ok(path) if !path.is_empty() => log.also_cri(Path::new(&path))?,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("read {}", dir.join(CRI_LOG_FILE).display()),
                    e,
                ));
            }
        }
        Ok(log)
    }

    /// The log limits recorded for container `id` at create (none for a container an older husk made).
    fn log_limits(&self, id: &str) -> husk_core::LogLimits {
        std::fs::read(self.ctr_dir(id).join(LOG_LIMITS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Starts the log reader of container `id` (once per daemon): every output frame goes, split into lines,
    /// to `ctr.log` (and to the container's CRI log), the exit to `exit.json`. The agent sends each frame to
    /// one reader connection only once (it keeps only what nobody read), so a reader re-attached after a daemon
    /// restart writes no line twice.
    pub(super) fn follow_logs(&self, client: AgentClient, id: &str) {
        let mut logging = lock(&self.logging);
        if logging.get(id).is_some_and(|f| !f.task.is_finished()) {
            return;
        }
        let log = match self.open_log(id) {
            Ok(log) => Arc::new(Mutex::new(log)),
            Err(e) => {
                tracing::warn!(container = id, "cannot keep the container's logs: {e}");
                return;
            }
        };
        let dir = self.ctr_dir(id);
        let id2 = id.to_string();
        let writer = log.clone();
        let task = tokio::spawn(async move {
            let Ok((_in, mut out)) = client.stdio(&id2, "").await else {
                return;
            };
            let mut exit = None;
            while let Some(frame) = out.recv().await {
                let (stream, data) = match frame {
                    Frame::Stdout(d) => (0, d),
                    Frame::Stderr(d) => (1, d),
                    Frame::Exit(code) => {
                        exit = Some(code);
                        break;
                    }
                    _ => break,
                };
                lock(&writer).write(stream, &data);
            }
            // A last line without its newline is written now (as a partial line in the CRI log): the process is
            // gone, or this reader is (the next one continues after it).
            {
                let mut log = lock(&writer);
                log.flush_stream(0);
                log.flush_stream(1);
            }
            if let Some(code) = exit {
                let exit = ExitStatus {
                    code,
                    finished_at: Some(husk_core::Timestamp::now()),
                    ..Default::default()
                };
                let _ = std::fs::write(
                    dir.join("exit.json"),
                    serde_json::to_vec(&exit).unwrap_or_default(),
                );
            }
        });
        logging.insert(id.to_string(), Follower { task, log });
    }

    /// Until this daemon's log reader of container `id` has written everything the container printed (it ends
    /// at the exit frame, which the agent sends after the last output), or `limit` passes: a `wait` that
    /// returned before the reader finished left `logs` without the last lines.
    pub(super) async fn logs_written(&self, id: &str, limit: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !lock(&self.logging)
            .get(id)
            .is_none_or(|f| f.task.is_finished())
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Stops this daemon's log reader of container `id`, keeping what it read.
    pub(super) fn stop_logs(&self, id: &str) {
        if let Some(f) = lock(&self.logging).remove(id) {
            f.stop();
        }
    }

    /// Removes container `id`'s directory of logs and exit record.
    pub(super) fn remove_logs(&self, id: &str) -> Result<()> {
        match std::fs::remove_dir_all(self.ctr_dir(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove the container's logs", e)),
        }
    }

    pub(super) fn read_exit(&self, id: &str) -> Option<ExitStatus> {
        serde_json::from_slice(&std::fs::read(self.ctr_dir(id).join("exit.json")).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::AccelChoice;
    use crate::driver::VmDriverConfig;
    use husk_core::LogOptions;
    use serde_json::json;

    /// A driver with its root and run root under `dir`, on TCG (no KVM probe); it boots nothing.
    fn driver_in(dir: &Path) -> VmDriver {
        let mut vm =
            VmDriverConfig::new(dir.join("root"), dir.join("run"), "/nonexistent/husk-agent");
        vm.accel = AccelChoice::Tcg;
        VmDriver::new(vm).unwrap()
    }

    #[test]
    fn the_log_reader_rotates_within_the_limits_recorded_at_create() {
        let dir = tempfile::tempdir().unwrap();
        let driver = driver_in(dir.path());
        let mut config: ContainerConfig = serde_json::from_value(json!({
            "id": "c1", "name": "n", "image": { "name": "i", "id": "x" }, "process": { "args": ["sh"] }
        }))
        .unwrap();
        config.log = husk_core::LogLimits {
            max_size_bytes: Some(1000),
            max_files: Some(2),
        };
        driver.prepare_cri_log(&config).unwrap();
        // A reader started after a daemon restart finds the limits too.
        for _ in 0..2 {
            let mut log = driver.open_log("c1").unwrap();
            for i in 0..100 {
                log.write(0, format!("line {i}\n").as_bytes());
            }
        }
        let ctr = driver.ctr_dir("c1");
        for name in ["ctr.log", "ctr.log.1"] {
            let len = std::fs::metadata(ctr.join(name)).unwrap().len();
            assert!(len <= 1000, "{name}: {len}");
        }
        assert!(!ctr.join("ctr.log.2").exists());
        let (entries, _) =
            husk_container::logs::read_entries(&ctr.join("ctr.log"), 2, &LogOptions::default())
                .unwrap();
        assert_eq!(entries.last().unwrap().text, "line 99\n");
    }

    #[test]
    fn the_log_reader_writes_husks_log_and_the_cri_log_and_appends_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let driver = driver_in(dir.path());
        let cri = dir.path().join("pods/c/0.log");
        let mut config: ContainerConfig = serde_json::from_value(json!({
            "id": "c1", "name": "n", "image": { "name": "i", "id": "x" }, "process": { "args": ["sh"] }
        }))
        .unwrap();
        config.cri_log_path = Some(cri.display().to_string());
        driver.prepare_cri_log(&config).unwrap();
        assert_eq!(std::fs::read(&cri).unwrap(), b"", "made at create, empty");
        let mut log = driver.open_log("c1").unwrap();
        log.write(0, b"one\ntw");
        log.write(1, b"err\n");
        log.write(0, b"o\n");
        log.flush_stream(0);
        drop(log);
        // The daemon restarted: the next reader appends to both files.
        let mut log = driver.open_log("c1").unwrap();
        log.write(0, b"three");
        log.flush_stream(0);
        let cri_lines: Vec<String> = std::fs::read_to_string(&cri)
            .unwrap()
            .lines()
            .map(|l| l.split_once(' ').unwrap().1.to_string())
            .collect();
        assert_eq!(
            cri_lines,
            [
                "stdout F one",
                "stderr F err",
                "stdout F two",
                "stdout P three"
            ]
        );
        let (entries, _) = husk_container::logs::read_entries(
            &driver.ctr_dir("c1").join("ctr.log"),
            1,
            &LogOptions::default(),
        )
        .unwrap();
        let entries: Vec<(String, String)> = entries
            .into_iter()
            .map(|e| (e.stream.to_string(), e.text))
            .collect();
        assert_eq!(
            entries,
            [
                ("stdout".into(), "one\n".into()),
                ("stderr".into(), "err\n".into()),
                ("stdout".into(), "two\n".into()),
                ("stdout".into(), "three".into())
            ]
        );
        assert!(log.has_cri());
        // Without a CRI log: none is written, and an old record of one is gone.
        config.cri_log_path = None;
        driver.prepare_cri_log(&config).unwrap();
        assert!(!driver.open_log("c1").unwrap().has_cri());
    }
}
