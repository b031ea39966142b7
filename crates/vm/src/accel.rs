//! Choosing QEMU's accelerator: KVM when it really runs guest code, TCG (software emulation) otherwise.
//!
//! `/dev/kvm` existing is not enough: on a VM without nested virtualisation the device can be there while vCPUs
//! never run (KVM_RUN blocks or fails). Detection therefore has two steps, and never hangs:
//! 1. the CPU flags in `/proc/cpuinfo`: without `vmx` (Intel) or `svm` (AMD) KVM cannot work, so TCG at once;
//! 2. a probe: a forked child opens `/dev/kvm`, creates a VM with one page of guest memory holding a `hlt`
//!    instruction, and runs one vCPU on it. KVM works when the vCPU exits with `KVM_EXIT_HLT`. The parent kills
//!    the child if it has not answered within a timeout (a child stuck in KVM_RUN dies with SIGKILL), so a broken
//!    KVM costs at most that timeout.
//!
//! The flag check comes first because the probe alone can be fooled: on husk's CI machine (a Firecracker guest
//! whose CPU lacks `svm`) `/dev/kvm` exists and the probe's vCPU does execute its `hlt`, yet a real kernel under
//! QEMU + KVM hangs during early boot (and `-cpu host` aborts on an MSR). So KVM is chosen only when the CPU
//! advertises virtualisation *and* a vCPU runs.
//!
//! `accel = "kvm"` or `"tcg"` in the configuration skips detection.

use std::time::{Duration, Instant};

use husk_core::{Error, Result};

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's Tiny Code Generator (software emulation).
    Tcg,
}

impl Accel {
    /// QEMU's name of the accelerator.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The configured choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccelChoice {
    /// Detect (KVM when it works, else TCG).
    #[default]
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG.
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" | "" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(Error::invalid(
                "accel",
                format!("unknown accelerator {s:?}: use auto, kvm or tcg"),
            )),
        }
    }
}

/// The outcome of detection, with the reason for `husk info`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccelDecision {
    /// The accelerator to use.
    pub accel: Accel,
    /// Why.
    pub reason: String,
}

/// What the KVM probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// A vCPU ran and halted.
    Works,
    /// A step failed (the number says which; see [`probe_kvm`]).
    Failed(i32),
    /// The vCPU did not come back within the timeout.
    TimedOut,
}

/// Decides from the facts: the configured choice, the CPU flags, whether /dev/kvm exists, and a probe to run
/// only when it can matter.
pub fn decide(
    choice: AccelChoice,
    cpuinfo: &str,
    dev_kvm: bool,
    probe: impl FnOnce() -> ProbeResult,
) -> AccelDecision {
    let d = |accel, reason: &str| AccelDecision {
        accel,
        reason: reason.to_string(),
    };
    match choice {
        AccelChoice::Kvm => return d(Accel::Kvm, "configured (accel = kvm)"),
        AccelChoice::Tcg => return d(Accel::Tcg, "configured (accel = tcg)"),
        AccelChoice::Auto => {}
    }
    if !dev_kvm {
        return d(Accel::Tcg, "no /dev/kvm");
    }
    if !has_virt_flag(cpuinfo) {
        return d(
            Accel::Tcg,
            "/dev/kvm exists but the CPU has no vmx/svm flag (no nested virtualisation)",
        );
    }
    match probe() {
        ProbeResult::Works => d(Accel::Kvm, "KVM probe ran a vCPU"),
        ProbeResult::Failed(step) => AccelDecision {
            accel: Accel::Tcg,
            reason: format!("KVM probe failed at step {step}; using TCG"),
        },
        ProbeResult::TimedOut => d(
            Accel::Tcg,
            "KVM probe's vCPU did not run within the timeout; using TCG",
        ),
    }
}

/// Whether any CPU in `/proc/cpuinfo` text has the `vmx` or `svm` flag.
pub fn has_virt_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Detects the accelerator on this host.
pub fn detect(choice: AccelChoice) -> AccelDecision {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let dev_kvm = std::path::Path::new("/dev/kvm").exists();
    decide(choice, &cpuinfo, dev_kvm, || {
        probe_kvm(Duration::from_secs(2))
    })
}

/// Runs the KVM probe in a forked child, killing it after `timeout`.
pub fn probe_kvm(timeout: Duration) -> ProbeResult {
    // SAFETY: the child calls only async-signal-safe functions (open, ioctl, mmap, _exit) on values on its own
    // stack; it never allocates, locks or returns into Rust code that could.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return ProbeResult::Failed(-1);
    }
    if pid == 0 {
        // SAFETY: see above; `_exit` ends the child without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(kvm_child()) };
    }
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
                (true, 0) => ProbeResult::Works,
                (true, code) => ProbeResult::Failed(code),
                (false, _) => ProbeResult::Failed(100),
            };
        }
        if r < 0 {
            return ProbeResult::Failed(-2);
        }
        if start.elapsed() >= timeout {
            // SAFETY: `pid` is our unreaped child, so the PID cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return ProbeResult::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ioctl numbers from <linux/kvm.h> (type 0xAE).
const fn io(nr: u64) -> u64 {
    (0xAE << 8) | nr
}
const fn iow(nr: u64, size: u64) -> u64 {
    (1 << 30) | (size << 16) | (0xAE << 8) | nr
}
const fn ior(nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (0xAE << 8) | nr
}
const KVM_GET_API_VERSION: u64 = io(0x00);
const KVM_CREATE_VM: u64 = io(0x01);
const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
const KVM_CREATE_VCPU: u64 = io(0x41);
const KVM_SET_USER_MEMORY_REGION: u64 = iow(0x46, 32);
const KVM_RUN: u64 = io(0x80);
const REGS_SIZE: usize = 144; // struct kvm_regs: 18 u64
const SREGS_SIZE: usize = 312; // struct kvm_sregs on x86_64
const KVM_SET_REGS: u64 = iow(0x82, REGS_SIZE as u64);
const KVM_GET_SREGS: u64 = ior(0x83, SREGS_SIZE as u64);
const KVM_SET_SREGS: u64 = iow(0x84, SREGS_SIZE as u64);
const KVM_EXIT_HLT: u32 = 5;
const GUEST_ADDR: u64 = 0x1000;

/// The probe itself, run in the forked child. Returns 0 when the vCPU halted, else the failing step.
fn kvm_child() -> i32 {
    // SAFETY: plain syscalls on file descriptors and mappings this function creates; the pointers passed to the
    // kernel point at stack arrays of the sizes the ioctls expect or at the mappings created here.
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if kvm < 0 {
            return 2;
        }
        if libc::ioctl(kvm, KVM_GET_API_VERSION as _, 0) != 12 {
            return 3;
        }
        let vm = libc::ioctl(kvm, KVM_CREATE_VM as _, 0);
        if vm < 0 {
            return 4;
        }
        let mem = libc::mmap(
            std::ptr::null_mut(),
            0x1000,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if mem == libc::MAP_FAILED {
            return 5;
        }
        *(mem as *mut u8) = 0xf4; // hlt
        // struct kvm_userspace_memory_region { u32 slot; u32 flags; u64 guest_phys_addr; u64 memory_size; u64 userspace_addr; }
        let region: [u64; 4] = [0, GUEST_ADDR, 0x1000, mem as u64];
        if libc::ioctl(vm, KVM_SET_USER_MEMORY_REGION as _, region.as_ptr()) < 0 {
            return 6;
        }
        let vcpu = libc::ioctl(vm, KVM_CREATE_VCPU as _, 0);
        if vcpu < 0 {
            return 7;
        }
        let size = libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE as _, 0);
        if size <= 0 {
            return 8;
        }
        let run = libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        );
        if run == libc::MAP_FAILED {
            return 9;
        }
        let mut sregs = [0u8; SREGS_SIZE];
        if libc::ioctl(vcpu, KVM_GET_SREGS as _, sregs.as_mut_ptr()) < 0 {
            return 10;
        }
        sregs[0..8].fill(0); // cs.base = 0
        sregs[12..14].fill(0); // cs.selector = 0
        if libc::ioctl(vcpu, KVM_SET_SREGS as _, sregs.as_ptr()) < 0 {
            return 11;
        }
        let mut regs = [0u64; REGS_SIZE / 8];
        regs[16] = GUEST_ADDR; // rip
        regs[17] = 0x2; // rflags (bit 1 is always set)
        if libc::ioctl(vcpu, KVM_SET_REGS as _, regs.as_ptr()) < 0 {
            return 12;
        }
        if libc::ioctl(vcpu, KVM_RUN as _, 0) < 0 {
            return 13;
        }
        let exit_reason = *((run as *const u8).add(8) as *const u32);
        if exit_reason == KVM_EXIT_HLT { 0 } else { 14 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH_VMX: &str = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
    const WITHOUT: &str = "processor\t: 0\nflags\t\t: fpu vme hypervisor sse\n";

    #[test]
    fn configured_choice_wins_and_never_probes() {
        let never = || panic!("must not probe");
        assert_eq!(
            decide(AccelChoice::Tcg, WITH_VMX, true, never).accel,
            Accel::Tcg
        );
        assert_eq!(
            decide(AccelChoice::Kvm, WITHOUT, false, never).accel,
            Accel::Kvm
        );
    }

    #[test]
    fn auto_needs_device_flags_and_a_running_vcpu() {
        let never = || panic!("must not probe");
        assert_eq!(
            decide(AccelChoice::Auto, WITH_VMX, false, never).accel,
            Accel::Tcg
        );
        let d = decide(AccelChoice::Auto, WITHOUT, true, never);
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("vmx/svm"), "{}", d.reason);
        assert_eq!(
            decide(AccelChoice::Auto, WITH_VMX, true, || ProbeResult::Works).accel,
            Accel::Kvm
        );
        assert_eq!(
            decide(AccelChoice::Auto, WITH_VMX, true, || ProbeResult::TimedOut).accel,
            Accel::Tcg
        );
        assert_eq!(
            decide(AccelChoice::Auto, WITH_VMX, true, || ProbeResult::Failed(
                13
            ))
            .accel,
            Accel::Tcg
        );
        assert!(has_virt_flag("flags : a svm b\n"));
        assert!(!has_virt_flag("flags : svmx\n"));
    }

    #[test]
    fn choice_parses() {
        assert_eq!("kvm".parse::<AccelChoice>().unwrap(), AccelChoice::Kvm);
        assert_eq!("auto".parse::<AccelChoice>().unwrap(), AccelChoice::Auto);
        assert!("hvf".parse::<AccelChoice>().is_err());
    }

    #[test]
    fn probe_answers_within_its_timeout() {
        // Whatever KVM does here (works, fails, or blocks in KVM_RUN), the probe must come back in time.
        let start = Instant::now();
        let _ = probe_kvm(Duration::from_millis(1500));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "probe took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn detection_on_this_host_never_picks_kvm_without_cpu_support() {
        let start = Instant::now();
        let d = detect(AccelChoice::Auto);
        assert!(start.elapsed() < Duration::from_secs(5));
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if !has_virt_flag(&cpuinfo) {
            assert_eq!(d.accel, Accel::Tcg, "{}", d.reason);
        }
    }
}
