//! Capability sets and the default seccomp profile.
//!
//! # Capabilities
//! Unprivileged containers get Docker's default set ([`DEFAULT_CAPABILITIES`]), adjusted by `--cap-add` /
//! `--cap-drop`. Privileged containers (and `--cap-add ALL`) get *every capability the daemon itself has*, read
//! from the daemon's own effective and bounding sets, never a hard-coded full list: on hosts whose bounding set
//! lacks a capability (CAP_SYS_RESOURCE on our CI machine), asking for it would make the container fail to start.
//!
//! # Seccomp
//! The default profile is an allowlist: every system call not named in [`ALLOWED_SYSCALLS`] fails with EPERM.
//! Left out on purpose (see `docs/security.md`): calls that reach across the container boundary or into the
//! kernel's global state: kernel modules and kexec, `mount`/`umount2`/`pivot_root` and the new mount API,
//! `unshare`/`setns`, namespace-creating `clone` flags, `ptrace` and `process_vm_*`, `bpf`, `perf_event_open`,
//! `keyctl`/`add_key`/`request_key`, clock and time setting, `reboot`, `swapon`/`swapoff`, `acct`,
//! `open_by_handle_at`, `userfaultfd`, NUMA policy calls, `iopl`/`ioperm`, `quotactl`, `lookup_dcookie`,
//! `personality` except the harmless values. `clone3` answers ENOSYS so C libraries fall back to `clone`, whose
//! flags can be inspected. Capabilities widen the list as in Docker: CAP_SYS_ADMIN allows the mount,
//! namespace and related calls, CAP_SYS_PTRACE allows ptrace, CAP_SYS_MODULE module loading, CAP_SYS_TIME
//! clock setting, CAP_SYS_BOOT reboot, CAP_SYS_PACCT acct, CAP_SYS_RAWIO iopl/ioperm, CAP_SYS_NICE NUMA calls.

use std::collections::BTreeSet;

use husk_core::{Error, Result};
use serde_json::{Value, json};

/// Docker's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the current process holds in both its effective and bounding sets, as `CAP_*` names.
pub fn daemon_capabilities() -> Result<Vec<String>> {
    let effective = caps::read(None, caps::CapSet::Effective)
        .map_err(|e| Error::backend(format!("read own capabilities: {e}")))?;
    let bounding = caps::read(None, caps::CapSet::Bounding)
        .map_err(|e| Error::backend(format!("read own capabilities: {e}")))?;
    let mut names: Vec<String> = effective
        .intersection(&bounding)
        .map(|c| c.to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// A capability as its `CAP_*` name, whether given with the prefix or without (as oci-spec prints them).
pub fn capability_name(name: &str) -> String {
    if name.starts_with("CAP_") {
        name.to_string()
    } else {
        format!("CAP_{name}")
    }
}

/// Normalises a capability name as users type it (`net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN`) to `CAP_NET_ADMIN`.
pub fn normalize_capability(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse::<caps::Capability>()
        .map(|c| c.to_string())
        .map_err(|_| Error::invalid("cap_add", format!("unknown capability {name:?}")))
}

/// The capabilities a container gets: Docker's defaults (or the daemon's whole set when `privileged` or `ALL` is
/// added), plus `add`, minus `drop` (`ALL` in `drop` removes every default first). Capabilities the daemon lacks
/// are refused with a clear error rather than failing at start.
pub fn container_capabilities(
    privileged: bool,
    add: &[String],
    drop: &[String],
    daemon: &[String],
) -> Result<Vec<String>> {
    let add: Vec<String> = add
        .iter()
        .map(|c| normalize_capability(c))
        .collect::<Result<_>>()?;
    let drop: Vec<String> = drop
        .iter()
        .map(|c| normalize_capability(c).map_err(|e| Error::invalid("cap_drop", e.message)))
        .collect::<Result<_>>()?;
    let mut set: BTreeSet<String> = if privileged || add.iter().any(|c| c == "ALL") {
        daemon.iter().cloned().collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        set.clear();
    }
    for c in add.iter().filter(|c| *c != "ALL") {
        if !daemon.contains(c) {
            return Err(Error::invalid(
                "cap_add",
                format!("cannot add {c}: the husk daemon itself does not have it"),
            ));
        }
        set.insert(c.clone());
    }
    for c in drop.iter().filter(|c| *c != "ALL") {
        set.remove(c);
    }
    Ok(set.into_iter().collect())
}

/// System calls the default profile allows (x86_64 and its 32-bit compatibility ABIs; names the kernel or
/// libseccomp does not know are skipped when the filter is built).
pub const ALLOWED_SYSCALLS: &[&str] = &[
    // files and directories
    "access",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "close",
    "close_range",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "getcwd",
    "getdents",
    "getdents64",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "_llseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "sendfile",
    "sendfile64",
    "setxattr",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "tee",
    "truncate",
    "truncate64",
    "umask",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vmsplice",
    "write",
    "writev",
    "fanotify_mark",
    "name_to_handle_at",
    "cachestat",
    "getxattrat",
    "listxattrat",
    "removexattrat",
    "setxattrat",
    "file_getattr",
    "file_setattr",
    // memory
    "brk",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "process_madvise",
    "process_mrelease",
    "remap_file_pages",
    "map_shadow_stack",
    "mseal",
    // processes, threads and scheduling
    "arch_prctl",
    "capget",
    "capset",
    "clone",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_mempolicy",
    "getrusage",
    "getsid",
    "gettid",
    "getuid",
    "getuid32",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "prctl",
    "prlimit64",
    "rseq",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setuid",
    "setuid32",
    "tgkill",
    "tkill",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "ugetrlimit",
    "uname",
    "sysinfo",
    "times",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "seccomp",
    "riscv_flush_icache",
    "lsm_get_self_attr",
    "lsm_list_modules",
    // signals
    "alarm",
    "pause",
    // The kernel restarts a system call interrupted by a stop or a freeze (SIGSTOP/SIGCONT, the cgroup v2 freezer)
    // through restart_syscall: refused, a `sleep` ends early after `unpause`.
    "restart_syscall",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sigaction",
    "sigaltstack",
    "signal",
    "signalfd",
    "signalfd4",
    "sigpending",
    "sigprocmask",
    "sigreturn",
    "sigsuspend",
    // time (reading only)
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "gettimeofday",
    "nanosleep",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    // polling and events
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "poll",
    "ppoll",
    "ppoll_time64",
    "pselect6",
    "pselect6_time64",
    "select",
    "_newselect",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "pipe",
    "pipe2",
    // sockets and IPC
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socket",
    "socketcall",
    "socketpair",
    "ipc",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
];

/// Extra system calls allowed when the container holds a capability, as `(capability, calls)`.
const CAPABILITY_SYSCALLS: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
            "listmount",
            "statmount",
            "open_tree_attr",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &["kcmp", "process_vm_readv", "process_vm_writev", "ptrace"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (
        "CAP_SYS_NICE",
        &[
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "move_pages",
            "migrate_pages",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("CAP_SYS_RESOURCE", &[]),
];

/// `personality(2)` values any container may set: Linux's default, the 32-bit address space one, and the
/// "query" value used by libc to read the current persona.
const PERSONALITY_VALUES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
/// | CLONE_NEWTIME: the namespace-creating flags `clone` may not use without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0080;

/// The default seccomp profile as an OCI `linux.seccomp` object, widened for the capabilities the container has.
pub fn default_seccomp_profile(capabilities: &[String]) -> Value {
    let has = |c: &str| capabilities.iter().any(|x| capability_name(x) == c);
    let mut allowed: Vec<&str> = ALLOWED_SYSCALLS
        .iter()
        .copied()
        .filter(|s| *s != "clone")
        .collect();
    for (cap, calls) in CAPABILITY_SYSCALLS {
        if has(cap) {
            allowed.extend_from_slice(calls);
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut rules = vec![json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    let personality: Vec<Value> = PERSONALITY_VALUES
        .iter()
        .map(|v| json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}))
        .collect();
    rules.extend(personality);
    if has("CAP_SYS_ADMIN") {
        rules.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW"}));
    } else {
        // clone is allowed only without namespace flags; clone3 passes its flags in memory that seccomp cannot
        // read, so it answers ENOSYS and libc falls back to clone.
        rules.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> Vec<String> {
        let mut d: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        d.extend(["CAP_NET_ADMIN".to_string(), "CAP_SYS_ADMIN".to_string()]);
        d
    }

    #[test]
    fn defaults_are_dockers_and_adjustable() {
        let caps = container_capabilities(false, &[], &[], &daemon()).unwrap();
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len());
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
        let caps = container_capabilities(
            false,
            &["net_admin".into()],
            &["CAP_MKNOD".into()],
            &daemon(),
        )
        .unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_MKNOD".to_string()));
        let caps =
            container_capabilities(false, &["CHOWN".into()], &["ALL".into()], &daemon()).unwrap();
        assert_eq!(caps, vec!["CAP_CHOWN".to_string()]);
    }

    #[test]
    fn privileged_gets_exactly_the_daemons_set() {
        let d = daemon();
        let mut caps = container_capabilities(true, &[], &[], &d).unwrap();
        let mut want = d.clone();
        caps.sort();
        want.sort();
        assert_eq!(caps, want);
    }

    #[test]
    fn capabilities_the_daemon_lacks_or_unknown_are_refused() {
        let e =
            container_capabilities(false, &["SYS_RESOURCE".into()], &[], &daemon()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("cap_add"));
        assert!(e.message.contains("CAP_SYS_RESOURCE"), "{}", e.message);
        assert!(container_capabilities(false, &["NOT_A_CAP".into()], &[], &daemon()).is_err());
        assert_eq!(
            container_capabilities(false, &[], &["BOGUS".into()], &daemon())
                .unwrap_err()
                .field
                .as_deref(),
            Some("cap_drop")
        );
    }

    #[test]
    fn seccomp_profile_parses_and_widens_with_capabilities() {
        let plain = default_seccomp_profile(&[]);
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(plain.clone()).unwrap();
        let names = |p: &Value| {
            p["syscalls"][0]["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let n = names(&plain);
        assert!(
            n.contains(&"read".to_string())
                && !n.contains(&"mount".to_string())
                && !n.contains(&"ptrace".to_string())
        );
        let admin = default_seccomp_profile(&["CAP_SYS_ADMIN".into()]);
        assert!(names(&admin).contains(&"mount".to_string()));
    }

    #[test]
    fn reads_own_capabilities() {
        let caps = daemon_capabilities().unwrap();
        assert!(caps.iter().all(|c| c.starts_with("CAP_")));
    }
}
