//! Giving back the pages a shim touched only to make its container.
//!
//! A shim runs husk's whole binary (from a sealed in-memory copy every shim shares), and making a container runs
//! much of it: libcontainer, the spec, seccomp. Those code pages stay mapped in the shim for its whole life,
//! although the event loop that follows needs a small part of them: a shim's resident set was ~9.5 MiB, nearly
//! all of it pages every other shim shares. Once the container runs, [`release_startup_pages`] drops the shim's
//! mappings of its executable's read-only pages (`MADV_DONTNEED`: the pages stay in the shared copy; the shim
//! faults back in, from memory, the few its loop touches) and returns the free heap to the kernel, so its
//! resident set is what it really uses.
//!
//! Only read-only mappings of a file none of whose pages were ever written are dropped: a private page the
//! process changed (relocations, then made read-only) would be lost, so a mapping with anonymous pages stays.

/// One mapping of `/proc/self/smaps`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    path: String,
    anonymous_kib: u64,
}

impl Mapping {
    /// Whether dropping its pages loses nothing: readable, never writable, backed by a file, no private copies.
    fn is_clean_code(&self) -> bool {
        self.perms.starts_with('r')
            && !self.perms.contains('w')
            && !self.path.is_empty()
            && !self.path.starts_with('[')
            && self.anonymous_kib == 0
    }
}

/// Parses `/proc/PID/smaps` text into mappings.
pub(crate) fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let perms = fields.next().unwrap_or_default().to_string();
            // offset, device, inode, then the path (which may hold spaces: "memfd:husk (deleted)").
            let path = line
                .splitn(6, char::is_whitespace)
                .nth(5)
                .map(str::trim)
                .unwrap_or_default()
                .to_string();
            mappings.push(Mapping {
                start,
                end,
                perms,
                path,
                anonymous_kib: 0,
            });
        } else if first == "Anonymous:"
            && let Some(last) = mappings.last_mut()
        {
            last.anonymous_kib = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    mappings
}

/// Drops this process's mappings of its executable's clean read-only pages and trims the heap; returns the bytes
/// of address space advised. Errors are ignored: this only saves memory.
pub(crate) fn release_startup_pages() -> usize {
    let (Ok(text), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/smaps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return 0;
    };
    let exe = exe.to_string_lossy();
    let mut released = 0;
    for m in parse_smaps(&text)
        .iter()
        .filter(|m| m.path == exe && m.is_clean_code())
    {
        // SAFETY: the range is a whole mapping of this process that is read-only, file-backed and has no
        // private pages: MADV_DONTNEED only drops its page table entries, and the next access reads the same
        // bytes from the file again. No Rust reference can be invalidated by that.
        let r = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            released += m.end - m.start;
        }
    }
    // SAFETY: malloc_trim only returns free heap memory to the kernel; it has no preconditions.
    unsafe { libc::malloc_trim(0) };
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
00400000-00600000 r--p 00000000 00:01 7 /memfd:husk (deleted)
Size:               2048 kB
Anonymous:             0 kB
00600000-02000000 r-xp 00200000 00:01 7 /memfd:husk (deleted)
Size:              26624 kB
Anonymous:             0 kB
02000000-02100000 r--p 01c00000 00:01 7 /memfd:husk (deleted)
Anonymous:            64 kB
02100000-02200000 rw-p 01d00000 00:01 7 /memfd:husk (deleted)
Anonymous:           128 kB
02200000-02300000 rw-p 00000000 00:00 0 [heap]
Anonymous:          1024 kB
7ffc0000-7ffc2000 r--p 00000000 00:00 0 [vvar]
Anonymous:             0 kB
7ffd0000-7ffd1000 r-xp 00000000 00:00 0
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let mappings = parse_smaps(SMAPS);
        assert_eq!(mappings.len(), 7);
        assert_eq!(mappings[0].path, "/memfd:husk (deleted)");
        assert_eq!(mappings[2].anonymous_kib, 64);
        let clean: Vec<usize> = mappings
            .iter()
            .filter(|m| m.is_clean_code())
            .map(|m| m.start)
            .collect();
        // The code and read-only data; not the relocated read-only part (written once), the data, the heap, the
        // kernel's [vvar] or an anonymous mapping.
        assert_eq!(clean, [0x0040_0000, 0x0060_0000]);
    }

    #[test]
    fn a_process_runs_on_after_its_code_pages_were_dropped() {
        fn resident_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap()
        }
        let before = resident_kib();
        let released = release_startup_pages();
        assert!(released > 0, "nothing released");
        let after = resident_kib();
        assert!(after < before, "file-backed RSS {before} kB -> {after} kB");
        // Code runs on: formatting, allocation and a syscall touch pages again.
        let text = format!("{:?}", parse_smaps(SMAPS));
        assert!(text.contains("memfd"));
        assert!(std::fs::read_to_string("/proc/self/stat").is_ok());
    }
}
