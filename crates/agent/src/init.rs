//! The agent's duties as PID 1 of the guest: the first mounts, kernel modules, leaving the initramfs, the network
//! loopback, cgroups, the 9p shares, and powering off.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use husk_agent_protocol::boot::{ALWAYS_LOADED, LATE_GROUPS, PORT_GROUPS};
use husk_core::{Context, Error, Result};
use nix::mount::{MsFlags, mount};

/// Where each module group's load order is in the initramfs (`<dir>/<group>`).
const MODULE_GROUPS: &str = "/etc/husk/modules";
/// The default seccomp program the host compiled into the guest image, and its capability set (one per line).
const SECCOMP_PROGRAM: &str = "/etc/husk/seccomp.bpf";
const SECCOMP_CAPABILITIES: &str = "/etc/husk/seccomp.caps";

/// Prints a line on the guest console (the serial port, which the host keeps in `console.log`).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { eprintln!("husk-agent: {}", format_args!($($arg)*)) };
}

/// Options from the kernel command line (`husk.*` words).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// 9p mount tags to mount under `/run/husk/shares/<tag>`.
    pub shares: Vec<String>,
    /// The tags among `shares` to mount read-write (`TAG:rw` on the command line).
    pub writable: Vec<String>,
    /// Listen on vsock instead of the virtio-serial port.
    pub vsock: bool,
    /// Print a line and power off at once (the bare-boot benchmark).
    pub bare: bool,
    /// The guest's hostname.
    pub hostname: Option<String>,
    /// Module groups to load after `port` and `base` (`husk.modules=mmio,vsock`).
    pub module_groups: Vec<String>,
    /// The containers share one PID namespace.
    pub share_pid: bool,
    /// Size of the guest's `/dev/shm`, which its containers share (`husk.shm_size=BYTES`; the kernel's default
    /// without it).
    pub shm_size: Option<u64>,
    /// The network interface's configuration, when the VM has one.
    pub nic: Option<NicConfig>,
    /// The network interface's MAC address (`husk.mac=`): sent to a guest restored from a template, whose
    /// virtio-net device kept the template's.
    pub mac: Option<[u8; 6]>,
    /// Boot as a template (`husk.template`): load every module before serving, and take the sandbox's settings
    /// (hostname, /dev/shm, network, shares, PID sharing) from the host's `Configure` call after the restore.
    pub template: bool,
}

/// How the guest's network interface (`eth0`, the VM's virtio-net device) is configured: the sandbox's address
/// and MTU (the MAC came from QEMU), and its default gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicConfig {
    /// Address.
    pub address: std::net::Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// MTU.
    pub mtu: u32,
}

impl BootOptions {
    /// Parses `/proc/cmdline` text.
    pub fn parse(cmdline: &str) -> Self {
        let mut o = BootOptions::default();
        for word in cmdline.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "husk.shares" => {
                    for item in value.split(',').filter(|s| !s.is_empty()) {
                        match item.strip_suffix(":rw") {
                            Some(tag) => {
                                o.shares.push(tag.to_string());
                                o.writable.push(tag.to_string());
                            }
                            None => o.shares.push(item.to_string()),
                        }
                    }
                }
                "husk.transport" => o.vsock = value == "vsock",
                "husk.bare" => o.bare = true,
                "husk.template" => o.template = true,
                "husk.mac" => o.mac = parse_mac(value),
                "husk.share_pid" => o.share_pid = true,
                "husk.modules" => {
                    o.module_groups = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "husk.hostname" if !value.is_empty() => o.hostname = Some(value.to_string()),
                "husk.shm_size" => o.shm_size = value.parse().ok().filter(|n| *n > 0),
                "husk.ip" => {
                    let (ip, prefix) = value.split_once('/').unwrap_or((value, "32"));
                    if let (Ok(address), Ok(prefix)) = (ip.parse(), prefix.parse::<u8>()) {
                        let nic = o.nic.get_or_insert(NicConfig {
                            address,
                            prefix: 32,
                            gateway: None,
                            mtu: 1500,
                        });
                        nic.address = address;
                        nic.prefix = prefix.min(32);
                    }
                }
                "husk.gw" => {
                    if let (Ok(gw), Some(nic)) = (value.parse(), o.nic.as_mut()) {
                        nic.gateway = Some(gw);
                    }
                }
                "husk.mtu" => {
                    if let (Ok(mtu), Some(nic)) = (value.parse(), o.nic.as_mut()) {
                        nic.mtu = mtu;
                    }
                }
                _ => {}
            }
        }
        o
    }
}

/// `aa:bb:cc:dd:ee:ff` as bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Sets the guest's wall clock (a guest restored from a template resumes at the moment it was saved).
pub fn set_clock(realtime_ns: u64) -> Result<()> {
    let ts = libc::timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (realtime_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec this function owns.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(Error::io("set the clock", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Mixes `seed` into the kernel's entropy pool, credited, and makes the kernel reseed its generator at once: the
/// clones of one template resume with the same random state.
pub fn reseed(seed: &[u8]) -> Result<()> {
    // <linux/random.h>: RNDADDENTROPY = _IOW('R', 0x03, int[2]), RNDRESEEDCRNG = _IO('R', 0x07).
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    if seed.is_empty() || seed.len() > 512 {
        return Err(Error::invalid(
            "seed",
            format!("a seed of 1 to 512 bytes, not {}", seed.len()),
        ));
    }
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| Error::io("open /dev/urandom", e))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    info.extend_from_slice(&((seed.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(seed.len() as i32).to_ne_bytes());
    info.extend_from_slice(seed);
    info.resize(info.len().next_multiple_of(4), 0);
    let fd = urandom.as_raw_fd();
    // SAFETY: both ioctls take (or need no) a rand_pool_info: `info` holds its two ints and `buf_size` bytes.
    unsafe {
        if libc::ioctl(fd, RNDADDENTROPY as _, info.as_ptr()) != 0 {
            return Err(Error::io("add entropy", std::io::Error::last_os_error()));
        }
        if libc::ioctl(fd, RNDRESEEDCRNG as _) != 0 {
            return Err(Error::io(
                "reseed the generator",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Gives `/dev/shm` a new size (a guest restored from a template mounted it with the template's).
pub fn resize_shm(bytes: u64) -> Result<()> {
    mount(
        None::<&str>,
        "/dev/shm",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={bytes}").as_str()),
    )
    .map_err(|e| Error::backend(format!("resize /dev/shm: {e}")))
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(target).context(format!("create {target}"))?;
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(Error::backend(format!("mount {fstype} on {target}: {e}"))),
    }
}

/// The first mounts: /dev, /proc, /sys.
pub fn early_mounts() -> Result<()> {
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mount_fs("proc", "/proc", "proc", common | MsFlags::MS_NODEV, None)?;
    mount_fs("sysfs", "/sys", "sysfs", common | MsFlags::MS_NODEV, None)?;
    Ok(())
}

/// The kernel modules this guest loads, split in two: those the agent's channel to the host needs, loaded
/// before it serves ([`PORT_GROUPS`]), and the rest (9p, overlayfs, the network card ...), loaded by a boot
/// thread while the agent already answers. The module directory is held open, so the rest can still be read
/// after the agent has left the initramfs.
pub struct ModulePlan {
    dir: std::os::fd::OwnedFd,
    /// Module files (relative to the directory), for the port, in load order.
    pub first: Vec<String>,
    /// The other module files the first container needs, in load order.
    pub rest: Vec<String>,
    /// Module files nothing waits for ([`LATE_GROUPS`]).
    pub late: Vec<String>,
}

impl ModulePlan {
    /// The plan for `release`: groups `port` and `base`, then `groups` (from the kernel command line), each in
    /// the order the initramfs lists it.
    pub fn new(release: &str, groups: &[String]) -> Result<ModulePlan> {
        let path = format!("/lib/modules/{release}");
        let dir = nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::backend(format!("open {path}: {e}")))?;
        // SAFETY: `open` just returned this descriptor, and nothing else owns it.
        let dir = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dir) };
        let (mut first, mut rest, mut late) = (Vec::new(), Vec::new(), Vec::new());
        let named = groups.iter().map(String::as_str);
        for group in ALWAYS_LOADED.iter().copied().chain(named) {
            if group.contains('/') || group.starts_with('.') {
                crate::log!("ignored module group {group:?}");
                continue;
            }
            let order =
                std::fs::read_to_string(format!("{MODULE_GROUPS}/{group}")).unwrap_or_default();
            let files = order.lines().filter(|l| !l.is_empty()).map(str::to_string);
            if PORT_GROUPS.contains(&group) {
                first.extend(files);
            } else if LATE_GROUPS.contains(&group) {
                late.extend(files);
            } else {
                rest.extend(files);
            }
        }
        Ok(ModulePlan {
            dir,
            first,
            rest,
            late,
        })
    }

    /// Loads `files` with `finit_module`, in order, and deletes each file from the initramfs (its memory goes
    /// back to the guest, and through free page reporting to the host). A module that is already there is
    /// fine; any other failure is logged and the rest are still loaded (the agent reports what is missing when
    /// a feature needs it). Returns how many were loaded.
    pub fn load(&self, files: &[String]) -> usize {
        let mut loaded = 0;
        for rel in files {
            match self.load_one(rel) {
                Ok(()) => loaded += 1,
                Err(e) => crate::log!("{e}"),
            }
            let _ = nix::unistd::unlinkat(
                Some(self.dir.as_raw_fd()),
                rel.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        loaded
    }

    /// Deletes the module files of the initramfs this plan does not load (the other transport's, devices this
    /// VM lacks), so their memory goes back; call it before leaving the initramfs.
    pub fn discard_others(&self, release: &str) {
        let root = PathBuf::from(format!("/lib/modules/{release}"));
        let keep: std::collections::HashSet<&str> = self
            .first
            .iter()
            .chain(&self.rest)
            .chain(&self.late)
            .map(String::as_str)
            .collect();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&root)
                    && !rel.to_str().is_some_and(|r| keep.contains(r))
                {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    fn load_one(&self, rel: &str) -> Result<()> {
        let fd = nix::fcntl::openat(
            Some(self.dir.as_raw_fd()),
            rel,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::backend(format!("open module {rel}: {e}")))?;
        // SAFETY: `openat` just returned this descriptor, and nothing else owns it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let compressed = [".xz", ".zst", ".gz"].iter().any(|s| rel.ends_with(s));
        let flags = if compressed { 4 } else { 0 }; // MODULE_INIT_COMPRESSED_FILE
        // SAFETY: finit_module with an open descriptor, an empty NUL-terminated parameter string and flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                c"".as_ptr(),
                flags,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::backend(format!("load module {rel}: {e}")));
            }
        }
        Ok(())
    }
}

/// Runs the calling thread at idle priority (SCHED_IDLE): it gets the CPU only when nothing else wants it.
pub fn idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on the calling thread (0) with a valid parameter block.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        crate::log!("idle priority: {}", std::io::Error::last_os_error());
    }
}

/// A value a boot thread is still making: the first reader waits for the thread, every reader gets the value.
pub struct Pending<T> {
    value: std::sync::OnceLock<T>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<T>>>,
}

impl<T: Default + Send + 'static> Pending<T> {
    /// A value known now.
    pub fn ready(value: T) -> Self {
        Pending {
            value: std::sync::OnceLock::from(value),
            thread: std::sync::Mutex::new(None),
        }
    }

    /// A value `make` computes on a thread of its own, started now.
    pub fn spawn(name: &str, make: impl FnOnce() -> T + Send + 'static) -> Self {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(make)
            .map_err(|e| crate::log!("start the {name} thread: {e}"))
            .ok();
        Pending {
            value: std::sync::OnceLock::new(),
            thread: std::sync::Mutex::new(thread),
        }
    }

    /// The value, waiting for its thread if it is still at work (blocking). A thread that panicked gives
    /// `T::default()`.
    pub fn get(&self) -> &T {
        self.value.get_or_init(|| {
            let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
            thread.and_then(|t| t.join().ok()).unwrap_or_default()
        })
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.value.get() {
            Some(v) => f.debug_tuple("Pending").field(v).finish(),
            None => f.write_str("Pending(<still at work>)"),
        }
    }
}

/// The precompiled default seccomp program of the guest image with its capability set, if it has one.
pub fn seccomp_seed() -> Option<(Vec<String>, Vec<u8>)> {
    let program = std::fs::read(SECCOMP_PROGRAM).ok()?;
    let capabilities = std::fs::read_to_string(SECCOMP_CAPABILITIES).ok()?;
    let capabilities = capabilities
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Some((capabilities, program))
}

/// Leaves the initramfs for a tmpfs root (as `switch_root` does): `pivot_root`, which containers need, refuses to
/// work when the current root is the initramfs. The initramfs's files are deleted first to give their memory
/// back; the running agent keeps its own pages.
pub fn leave_initramfs() -> Result<()> {
    // /lib holds the modules still to load (see ModulePlan): each file goes once loaded.
    let _ = std::fs::remove_dir_all("/etc/husk");
    mount_fs(
        "rootfs",
        "/newroot",
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    // /init stays (under the new root, out of sight): removed, the binding would show as "(deleted)".
    bind_agent_read_only("/newroot")?;
    for dir in ["dev", "proc", "sys"] {
        let target = format!("/newroot/{dir}");
        std::fs::create_dir_all(&target).context(format!("create {target}"))?;
        mount(
            Some(format!("/{dir}").as_str()),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| Error::backend(format!("move /{dir} to the new root: {e}")))?;
    }
    std::env::set_current_dir("/newroot").context("enter /newroot")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::backend(format!("move the new root onto /: {e}")))?;
    nix::unistd::chroot(".")
        .map_err(|e| Error::backend(format!("chroot into the new root: {e}")))?;
    std::env::set_current_dir("/").context("enter /")?;
    for dir in ["etc", "tmp", "run", "mnt"] {
        std::fs::create_dir_all(format!("/{dir}")).context(format!("create /{dir}"))?;
    }
    Ok(())
}

/// Binds the agent's own file read-only at [`crate::exe::GUEST_AGENT`] under `root`: the processes that enter
/// containers start from there, so a container that opens their `/proc/PID/exe` gets a descriptor it cannot
/// write through (EROFS), and no container process has the capability to remount it.
fn bind_agent_read_only(root: &str) -> Result<()> {
    let target = format!("{root}{}", crate::exe::GUEST_AGENT);
    if let Some(dir) = Path::new(&target).parent() {
        std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
    }
    File::create(&target).context(format!("create {target}"))?;
    mount(
        Some("/proc/self/exe"),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::backend(format!("bind the agent at {target}: {e}")))?;
    mount(
        None::<&str>,
        target.as_str(),
        None::<&str>,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| Error::backend(format!("make {target} read-only: {e}")))
}

/// Mounts made in the final root: /run, /tmp, /dev/pts, /dev/shm (of `shm_size` bytes when given) and cgroup2;
/// returns the cgroup root if any.
pub fn late_mounts(shm_size: Option<u64>) -> Result<Option<PathBuf>> {
    mount_fs(
        "run",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount_fs(
        "tmp",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620"),
    )?;
    let shm_options = match shm_size {
        Some(bytes) => format!("mode=1777,size={bytes}"),
        None => "mode=1777".to_string(),
    };
    mount_fs(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&shm_options),
    )?;
    if !Path::new("/dev/ptmx").exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    let cg = "/sys/fs/cgroup";
    // `favordynmods` (Linux 6.0): moving a process into a cgroup, which every container start does, and turning
    // controllers on stop waiting for an RCU grace period (long under TCG, even with one vCPU: the guest kernel
    // is preemptible). An older kernel refuses the option: mount without it.
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if mount_fs("cgroup2", cg, "cgroup2", flags, Some("favordynmods")).is_err()
        && mount_fs("cgroup2", cg, "cgroup2", flags, None).is_err()
    {
        crate::log!("no cgroup v2 in this kernel: no limits, statistics or pause");
        return Ok(None);
    }
    let available = std::fs::read_to_string(format!("{cg}/cgroup.controllers")).unwrap_or_default();
    let enable: Vec<String> = available
        .split_whitespace()
        .filter(|c| ["cpu", "memory", "pids", "io"].contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if let Err(e) = std::fs::write(format!("{cg}/cgroup.subtree_control"), enable.join(" ")) {
        crate::log!("enable cgroup controllers {enable:?}: {e}");
    }
    Ok(Some(PathBuf::from(cg)))
}

/// Brings the loopback interface up, so containers of one VM reach each other on localhost.
pub fn loopback_up() -> Result<()> {
    // SAFETY: a datagram socket used only for interface ioctls; `ifr` is a zeroed ifreq whose name is "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(Error::backend(format!(
                "socket: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if r < 0 {
            return Err(Error::backend(format!("bring lo up: {err}")));
        }
    }
    Ok(())
}

/// The kernel's `struct rtentry` (`<linux/route.h>`; glibc's differs and the libc crate has none for gnu).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_v4(ip: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; sockaddr is the generic view of it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Configures `eth0` (waiting up to 5 s for the virtio-net driver to make it) with `nic`: MTU, address, up, and
/// the default route through the gateway.
pub fn configure_nic(nic: &NicConfig, mac: Option<[u8; 6]>) -> Result<()> {
    let start = Instant::now();
    while !Path::new("/sys/class/net/eth0").exists() {
        if start.elapsed() > Duration::from_secs(5) {
            return Err(Error::not_found(
                "network interface eth0 (the virtio-net driver made none)",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mask = if nic.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(nic.prefix))
    };
    // SAFETY: a datagram socket used only for interface and route ioctls on structures this function owns and
    // initialises (zeroed, then the fields each ioctl reads).
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(Error::io("socket", std::io::Error::last_os_error()));
        }
        let sock = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock);
        let fd = sock.as_raw_fd();
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"eth0\0") {
            *dst = *src as libc::c_char;
        }
        let check = |r: libc::c_int, what: &str| -> Result<()> {
            if r < 0 {
                Err(Error::io(
                    format!("{what} of eth0"),
                    std::io::Error::last_os_error(),
                ))
            } else {
                Ok(())
            }
        };
        if let Some(mac) = mac {
            let mut hw: libc::sockaddr = std::mem::zeroed();
            hw.sa_family = libc::ARPHRD_ETHER;
            for (dst, src) in hw.sa_data.iter_mut().zip(mac) {
                *dst = src as libc::c_char;
            }
            ifr.ifr_ifru.ifru_hwaddr = hw;
            check(
                libc::ioctl(fd, libc::SIOCSIFHWADDR, &ifr),
                "set the MAC address",
            )?;
        }
        ifr.ifr_ifru.ifru_mtu = nic.mtu as libc::c_int;
        check(libc::ioctl(fd, libc::SIOCSIFMTU, &ifr), "set the MTU")?;
        ifr.ifr_ifru.ifru_addr = sockaddr_v4(nic.address);
        check(libc::ioctl(fd, libc::SIOCSIFADDR, &ifr), "set the address")?;
        ifr.ifr_ifru.ifru_netmask = sockaddr_v4(std::net::Ipv4Addr::from(mask));
        check(
            libc::ioctl(fd, libc::SIOCSIFNETMASK, &ifr),
            "set the netmask",
        )?;
        check(
            libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr),
            "read the flags",
        )?;
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), "bring up")?;
        if let Some(gw) = nic.gateway {
            let any = sockaddr_v4(std::net::Ipv4Addr::UNSPECIFIED);
            let mut route = RtEntry {
                rt_pad1: 0,
                rt_dst: any,
                rt_gateway: sockaddr_v4(gw),
                rt_genmask: any,
                rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
                rt_pad2: 0,
                rt_pad3: 0,
                rt_pad4: std::ptr::null_mut(),
                rt_metric: 0,
                rt_dev: std::ptr::null_mut(),
                rt_mtu: 0,
                rt_window: 0,
                rt_irtt: 0,
            };
            check(
                libc::ioctl(fd, libc::SIOCADDRT, &mut route),
                "add the default route",
            )?;
        }
    }
    Ok(())
}

/// Mounts each 9p share under `/run/husk/shares/<tag>`: read-only with the guest's page cache (image layers
/// never change), or, for the tags in `writable`, read-write without caching file data (`cache=mmap`: the host
/// and the other containers see each write at once, and a write is on the host before it returns, so
/// nothing is lost when the VM is stopped).
pub fn mount_shares(tags: &[String], writable: &[String]) -> HashMap<String, PathBuf> {
    let mut shares = HashMap::new();
    for tag in tags {
        let target = PathBuf::from("/run/husk/shares").join(tag);
        let (flags, data) = if writable.contains(tag) {
            (
                MsFlags::MS_NODEV,
                "trans=virtio,version=9p2000.L,msize=262144,cache=mmap",
            )
        } else {
            (
                MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                "trans=virtio,version=9p2000.L,msize=262144,cache=loose",
            )
        };
        let r = std::fs::create_dir_all(&target)
            .map_err(|e| e.to_string())
            .and_then(|_| {
                mount(Some(tag.as_str()), &target, Some("9p"), flags, Some(data))
                    .map_err(|e| e.to_string())
            });
        match r {
            Ok(()) => {
                shares.insert(tag.clone(), target);
            }
            Err(e) => crate::log!("mount 9p share {tag}: {e}"),
        }
    }
    shares
}

/// The device node of the virtio-serial port called `name`, waiting up to `timeout` for it to appear.
pub fn find_port(name: &str, timeout: Duration) -> Result<PathBuf> {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let port_name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                let dev = Path::new("/dev").join(e.file_name());
                if port_name.trim() == name && dev.exists() {
                    return Ok(dev);
                }
            }
        }
        if start.elapsed() > timeout {
            return Err(Error::not_found(format!(
                "virtio-serial port {name:?} (no /sys/class/virtio-ports/*/name says so)"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sets the guest's hostname.
pub fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        crate::log!("set hostname {name:?}: {e}");
    }
}

/// Ends every other process, flushes and powers the machine off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: as PID 1, kill(-1) signals every other process (it fails when there is none).
    let others = unsafe { libc::kill(-1, libc::SIGTERM) } == 0;
    if others {
        // Up to 100 ms for them to end; the zombies are ours to reap, or kill(-1, 0) would keep finding them.
        let deadline = std::time::Instant::now() + Duration::from_millis(100);
        while std::time::Instant::now() < deadline {
            // SAFETY: waitpid without a status pointer; kill with signal 0 only checks.
            let all_gone = unsafe {
                while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
                libc::kill(-1, 0) != 0
            };
            if all_gone {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // SAFETY: kill(-1) as above; sync and reboot take no pointers.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 must not exit (the kernel would panic), so wait to be killed.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Time since the kernel booted (CLOCK_BOOTTIME, the clock of /proc/uptime, which only shows 10 ms steps).
pub fn uptime_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// The kernel's release, for finding modules.
pub fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_options_parse() {
        let o = BootOptions::parse(
            "console=ttyS0 quiet husk.shares=husk0,husk1:rw husk.transport=vsock husk.hostname=web panic=-1",
        );
        assert_eq!(o.shares, ["husk0", "husk1"]);
        assert_eq!(o.writable, ["husk1"]);
        assert!(o.vsock && !o.bare);
        assert_eq!(o.hostname.as_deref(), Some("web"));
        assert!(o.module_groups.is_empty());
        let o = BootOptions::parse("husk.template husk.mac=02:4a:0b:ff:00:9e");
        assert!(o.template);
        assert_eq!(o.mac, Some([0x02, 0x4a, 0x0b, 0xff, 0x00, 0x9e]));
        for bad in [
            "husk.mac=02:4a:0b:ff:00",
            "husk.mac=02:4a:0b:ff:00:9e:01",
            "husk.mac=zz:4a:0b:ff:00:9e",
        ] {
            assert_eq!(BootOptions::parse(bad).mac, None, "{bad}");
        }
        let o = BootOptions::parse("husk.bare husk.shares= husk.modules=mmio,vsock");
        assert_eq!(o.module_groups, ["mmio", "vsock"]);
        assert!(!o.share_pid && BootOptions::parse("husk.share_pid").share_pid);
        assert_eq!(o.shm_size, None);
        assert_eq!(
            BootOptions::parse("husk.shm_size=100663296").shm_size,
            Some(96 << 20)
        );
        assert_eq!(BootOptions::parse("husk.shm_size=x").shm_size, None);
        assert!(o.bare && o.shares.is_empty() && !o.vsock);
        assert!(o.nic.is_none());
        let o = BootOptions::parse("husk.ip=10.88.0.5/16 husk.gw=10.88.0.1 husk.mtu=1400");
        assert_eq!(
            o.nic,
            Some(NicConfig {
                address: "10.88.0.5".parse().unwrap(),
                prefix: 16,
                gateway: Some("10.88.0.1".parse().unwrap()),
                mtu: 1400,
            })
        );
    }
}
