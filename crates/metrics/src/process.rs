//! The daemon's own usage, read from `/proc/self` as Prometheus' client libraries read it.

use std::path::Path;

/// What the daemon process uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessUsage {
    /// Resident set size, bytes (`process_resident_memory_bytes`).
    pub resident_memory_bytes: u64,
    /// Open file descriptors (`process_open_fds`).
    pub open_fds: u64,
}

impl ProcessUsage {
    /// This process's usage, or `None` when `/proc/self` cannot be read.
    pub fn read_self() -> Option<ProcessUsage> {
        Self::read(Path::new("/proc/self"))
    }

    /// The usage of the process whose `/proc` directory is `proc_dir`.
    fn read(proc_dir: &Path) -> Option<ProcessUsage> {
        let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
        let resident_memory_bytes = resident_kib(&status)?.saturating_mul(1024);
        let open_fds = std::fs::read_dir(proc_dir.join("fd")).ok()?.count() as u64;
        Some(ProcessUsage {
            resident_memory_bytes,
            open_fds,
        })
    }
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB (the kernel's `kB`).
fn resident_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_size_is_read_from_the_status_text() {
        let status = "Name:\thusk\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t4\n";
        assert_eq!(resident_kib(status), Some(5120));
        assert_eq!(
            resident_kib("Name:\thusk\n"),
            None,
            "a kernel thread has none"
        );
        assert_eq!(resident_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn this_process_uses_memory_and_descriptors() {
        let usage = ProcessUsage::read_self().expect("/proc/self is readable");
        assert!(usage.resident_memory_bytes > 0, "{usage:?}");
        assert!(
            usage.open_fds >= 3,
            "stdin, stdout, stderr at least: {usage:?}"
        );
    }

    #[test]
    fn a_missing_process_reads_as_none() {
        assert_eq!(ProcessUsage::read(Path::new("/proc/no-such-process")), None);
    }
}
