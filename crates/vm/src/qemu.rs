//! Launching QEMU for a guest, controlling it over QMP, and finding it again after a daemon restart.
//!
//! Every VM has a directory holding everything that names it: `qmp.sock` (control), `agent.sock` (the
//! virtio-serial port the agent listens on), `console.log` (the guest's serial console), `qemu.log` (QEMU's own
//! messages), `qemu.pid` (written and locked by QEMU) and `vm.json` (the configuration it was started with).
//! QEMU runs in a session of its own, so it outlives the daemon that started it; a restarted daemon finds it
//! through the pid file, checks that the process is that QEMU (its command line names the QMP socket) and asks
//! QMP whether it runs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use husk_core::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::accel::Accel;
use crate::proto::AGENT_PORT_NAME;

/// The QEMU machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Machine {
    /// `microvm` with ACPI: virtio-mmio devices, no PCI, no firmware work. The default.
    #[default]
    Microvm,
    /// `q35`: PCI(e) and the usual PC devices; slower to boot, for kernels without virtio-mmio ACPI support.
    Q35,
}

impl Machine {
    fn device(self, kind: &str) -> String {
        match self {
            Machine::Microvm => format!("{kind}-device"),
            Machine::Q35 => format!("{kind}-pci"),
        }
    }
}

/// How the host reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Transport {
    /// A virtio-serial port backed by the VM directory's `agent.sock`.
    Serial,
    /// A vsock device with this guest CID (needs /dev/vhost-vsock on the host).
    Vsock {
        /// The guest's context ID (3 or more).
        cid: u32,
    },
}

impl Transport {
    /// vsock when the host has `/dev/vhost-vsock`, virtio-serial otherwise.
    pub fn detect() -> Transport {
        if Path::new("/dev/vhost-vsock").exists() {
            Transport::Vsock {
                cid: rand::random::<u32>() % 0x3fff_ff00 + 3,
            }
        } else {
            Transport::Serial
        }
    }
}

/// A host directory exported to the guest over virtio-9p.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The 9p mount tag the guest mounts it by.
    pub tag: String,
    /// The host directory.
    pub path: PathBuf,
    /// Export read-only.
    pub readonly: bool,
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// The VM directory (sockets, logs, pid file). Unix socket paths must stay under 108 bytes.
    pub dir: PathBuf,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Machine type.
    pub machine: Machine,
    /// Accelerator.
    pub accel: Accel,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// Guest CPUs.
    pub cpus: u32,
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// Extra kernel command line words.
    #[serde(default)]
    pub cmdline_extra: Vec<String>,
    /// 9p shares.
    #[serde(default)]
    pub shares: Vec<Share>,
    /// Agent transport.
    pub transport: Transport,
    /// The host TSC frequency in kHz, passed as `tsc_early_khz=` so the guest need not calibrate its TSC against a
    /// PIT that TCG emulates badly (boots hang at "Unable to calibrate against PIT" without it on microvm).
    #[serde(default)]
    pub tsc_khz: Option<u64>,
    /// TCG translation cache size, MiB (QEMU's default is large; a smaller one saves host memory per VM).
    #[serde(default)]
    pub tb_size_mib: Option<u32>,
    /// Let QEMU back guest RAM with transparent huge pages. Off by default: the guest kernel writes to pages
    /// scattered over its whole RAM at boot, and with 2 MiB pages each write makes 2 MiB resident (measured: an
    /// idle 256 MiB guest held ~140 MiB of huge pages).
    #[serde(default)]
    pub huge_pages: bool,
    /// A virtio balloon with free page reporting: the guest tells QEMU which pages it has freed and QEMU gives
    /// them back to the host.
    #[serde(default)]
    pub free_page_reporting: bool,
    /// The network namespace QEMU runs in (the sandbox's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// A virtio-net interface backed by a tap device QEMU makes in `netns`, with this MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_mac: Option<String>,
    /// Guest RAM in a file instead of anonymous memory: a template's (shared: the guest writes into the file)
    /// or a clone's (the template's file mapped private: read from it, written copy-on-write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_file: Option<RamFile>,
    /// Start stopped, waiting for a saved template's device state ([`Vm::restore`]).
    #[serde(default)]
    pub incoming: bool,
    /// Offer the guest's RAM to the host's KSM (QEMU's `mem-merge`): identical pages of different VMs are kept
    /// once when the host runs KSM.
    #[serde(default)]
    pub mem_merge: bool,
}

/// A file backing a VM's RAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamFile {
    /// The file.
    pub path: PathBuf,
    /// Map it shared (the template being made) rather than private (its clones).
    pub shared: bool,
}

/// The files of a VM directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// QMP socket.
    pub qmp: PathBuf,
    /// Agent virtio-serial socket.
    pub agent: PathBuf,
    /// Guest serial console output.
    pub console: PathBuf,
    /// QEMU's stderr.
    pub log: PathBuf,
    /// QEMU's pid file.
    pub pid: PathBuf,
    /// The configuration the VM was started with.
    pub config: PathBuf,
}

impl VmPaths {
    /// The paths inside `dir`.
    pub fn new(dir: &Path) -> Self {
        VmPaths {
            qmp: dir.join("qmp.sock"),
            agent: dir.join("agent.sock"),
            console: dir.join("console.log"),
            log: dir.join("qemu.log"),
            pid: dir.join("qemu.pid"),
            config: dir.join("vm.json"),
        }
    }
}

impl VmConfig {
    /// The VM directory's files.
    pub fn paths(&self) -> VmPaths {
        VmPaths::new(&self.dir)
    }

    /// The guest kernel's command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut words: Vec<String> = [
            "console=ttyS0",
            "quiet",
            "panic=-1",
            "reboot=t",
            "pci=lastbus=0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if self.machine == Machine::Q35 {
            words.retain(|w| w != "pci=lastbus=0");
        }
        if let Some(khz) = self.tsc_khz {
            words.push(format!("tsc_early_khz={khz}"));
        }
        if !self.shares.is_empty() {
            // A writable share is `TAG:rw`: the agent mounts the others read-only.
            let tags: Vec<String> = self
                .shares
                .iter()
                .map(|s| {
                    if s.readonly {
                        s.tag.clone()
                    } else {
                        format!("{}:rw", s.tag)
                    }
                })
                .collect();
            words.push(format!("husk.shares={}", tags.join(",")));
        }
        let mut groups = vec![match self.machine {
            Machine::Microvm => "mmio",
            Machine::Q35 => "pci",
        }];
        if let Transport::Vsock { .. } = self.transport {
            words.push("husk.transport=vsock".into());
            groups.push("vsock");
        }
        if self.nic_mac.is_some() {
            groups.push("net");
        }
        words.push(format!("husk.modules={}", groups.join(",")));
        words.extend(self.cmdline_extra.iter().cloned());
        words.join(" ")
    }

    /// QEMU's arguments (without the program name).
    pub fn args(&self) -> Vec<String> {
        let p = self.paths();
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        let mut machine = match self.machine {
            Machine::Microvm => "microvm,acpi=on,pit=on,pic=on,rtc=on,isa-serial=on".to_string(),
            Machine::Q35 => "q35".to_string(),
        };
        machine.push_str(if self.mem_merge {
            ",mem-merge=on"
        } else {
            ",mem-merge=off"
        });
        if let Some(ram) = &self.ram_file {
            machine.push_str(",memory-backend=ram");
            push(&[
                "-object",
                &format!(
                    "memory-backend-file,id=ram,size={}M,mem-path={},share={}",
                    self.memory_mib,
                    path_arg(&ram.path),
                    if ram.shared { "on" } else { "off" }
                ),
            ]);
        }
        if self.incoming {
            push(&["-incoming", "defer"]);
        }
        let accel = match (self.accel, self.tb_size_mib) {
            (Accel::Tcg, Some(mib)) => format!("tcg,tb-size={mib}"),
            (accel, _) => accel.as_str().to_string(),
        };
        let cpu = if self.accel == Accel::Kvm {
            "host"
        } else {
            "max"
        };
        push(&["-name", "husk-vm,process=husk-vm"]);
        push(&["-M", &machine, "-accel", &accel, "-cpu", cpu]);
        push(&[
            "-m",
            &format!("{}M", self.memory_mib),
            "-smp",
            &self.cpus.to_string(),
        ]);
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        push(&[
            "-kernel",
            &path_arg(&self.kernel),
            "-initrd",
            &path_arg(&self.initramfs),
        ]);
        push(&["-append", &self.kernel_cmdline()]);
        push(&["-serial", &format!("file:{}", path_arg(&p.console))]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", path_arg(&p.qmp)),
        ]);
        push(&["-pidfile", &path_arg(&p.pid)]);
        match self.transport {
            Transport::Serial => {
                push(&["-device", &self.machine.device("virtio-serial")]);
                push(&[
                    "-chardev",
                    &format!(
                        "socket,id=agent,path={},server=on,wait=off",
                        path_arg(&p.agent)
                    ),
                ]);
                push(&[
                    "-device",
                    &format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
                ]);
            }
            Transport::Vsock { cid } => {
                push(&[
                    "-device",
                    &format!("{},guest-cid={cid}", self.machine.device("vhost-vsock")),
                ]);
            }
        }
        if self.free_page_reporting {
            push(&[
                "-device",
                &format!(
                    "{},free-page-reporting=on",
                    self.machine.device("virtio-balloon")
                ),
            ]);
        }
        if let Some(mac) = &self.nic_mac {
            push(&[
                "-netdev",
                &format!(
                    "tap,id=net0,ifname={},script=no,downscript=no",
                    crate::network::TAP
                ),
            ]);
            push(&[
                "-device",
                &format!(
                    "{},netdev=net0,mac={mac}",
                    self.machine.device("virtio-net")
                ),
            ]);
        }
        for (i, share) in self.shares.iter().enumerate() {
            // A read-only share is exported as `none` (nothing is ever written); a writable one as
            // `passthrough`: files the guest makes get the guest's owners and modes, and a failure to set them
            // is an error rather than silently ignored.
            let (model, ro) = if share.readonly {
                ("none", ",readonly=on")
            } else {
                ("passthrough", "")
            };
            push(&[
                "-fsdev",
                &format!(
                    "local,id=fs{i},path={},security_model={model},multidevs=remap{ro}",
                    path_arg(&share.path)
                ),
            ]);
            push(&[
                "-device",
                &format!(
                    "{},fsdev=fs{i},mount_tag={}",
                    self.machine.device("virtio-9p"),
                    share.tag
                ),
            ]);
        }
        a
    }

    /// Checks what QEMU would reject less clearly.
    pub fn validate(&self) -> Result<()> {
        let p = self.paths();
        for sock in [&p.qmp, &p.agent] {
            if sock.as_os_str().len() >= 108 {
                return Err(Error::invalid(
                    "vm_dir",
                    format!(
                        "socket path {} is too long for a unix socket",
                        sock.display()
                    ),
                ));
            }
        }
        for s in &self.shares {
            if s.tag.is_empty()
                || s.tag.len() > 31
                || !s
                    .tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::invalid(
                    "share",
                    format!("bad 9p mount tag {:?}", s.tag),
                ));
            }
            if s.path.to_string_lossy().contains(',') {
                return Err(Error::invalid(
                    "share",
                    format!("share path {} contains a comma", s.path.display()),
                ));
            }
        }
        if self.memory_mib < 64 || self.cpus == 0 {
            return Err(Error::invalid(
                "resources",
                format!(
                    "a VM needs at least 64 MiB and 1 CPU, not {} MiB and {} CPUs",
                    self.memory_mib, self.cpus
                ),
            ));
        }
        Ok(())
    }
}

// QEMU splits option values at commas (",," escapes one). Paths we make never contain one; `validate` refuses
// shares that do.
fn path_arg(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// Guest memory and CPUs for a sandbox or container with `resources`: the limit the user asked for plus a fixed
/// overhead for the guest kernel, the agent and the containers' writable layers (tmpfs in guest memory).
pub fn vm_size(resources: &husk_core::Resources, host_cpus: u32) -> (u64, u32) {
    let asked = resources
        .memory_bytes
        .map(|b| (b.max(0) as u64).div_ceil(1 << 20))
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let cpus = resources
        .nano_cpus
        .map(|n| (n.max(1) as u64).div_ceil(1_000_000_000) as u32)
        .unwrap_or(1);
    (asked + GUEST_OVERHEAD_MIB, cpus.clamp(1, host_cpus.max(1)))
}

/// Guest memory for a sandbox with no memory limit, MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest memory added to every VM for the guest kernel, the agent and page cache, MiB.
pub const GUEST_OVERHEAD_MIB: u64 = 64;

/// The host TSC frequency in kHz, when the host says it.
pub fn host_tsc_khz() -> Option<u64> {
    if let Some(khz) = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/tsc_freq_khz")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Some(khz);
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    tsc_khz_from_cpuinfo(&cpuinfo)
}

fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    // With an invariant TSC, "cpu MHz" of a VM is the TSC rate the hypervisor told the kernel.
    let constant = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "constant_tsc"));
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    (constant && mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// A running (or recently running) QEMU.
#[derive(Debug)]
pub struct Vm {
    /// The configuration it was started with.
    pub config: VmConfig,
    /// QEMU's PID.
    pub pid: i32,
    child: Option<tokio::process::Child>,
}

impl Vm {
    /// Starts QEMU in its own session and waits until its QMP socket answers.
    pub async fn launch(config: VmConfig) -> Result<Vm> {
        config.validate()?;
        let paths = config.paths();
        std::fs::create_dir_all(&config.dir)
            .context(format!("create VM directory {}", config.dir.display()))?;
        for stale in [&paths.qmp, &paths.agent, &paths.pid] {
            let _ = std::fs::remove_file(stale);
        }
        let cfg_json = serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::internal(format!("encode VM config: {e}")))?;
        std::fs::write(&paths.config, cfg_json)
            .context(format!("write {}", paths.config.display()))?;
        let log =
            std::fs::File::create(&paths.log).context(format!("create {}", paths.log.display()))?;
        let log2 = log.try_clone().context("duplicate the QEMU log file")?;
        let mut cmd = std::process::Command::new(&config.qemu);
        cmd.args(config.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let huge_pages = config.huge_pages;
        let netns = match &config.netns {
            Some(p) => Some(
                std::fs::File::open(p)
                    .context(format!("open network namespace {}", p.display()))?,
            ),
            None => None,
        };
        let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        // SAFETY: setsid, prctl and setns are async-signal-safe and only affect the child. setsid makes QEMU the
        // leader of a new session so that it outlives the daemon and gets no signals meant for the daemon's
        // terminal. PR_SET_THP_DISABLE survives execve and overrides QEMU's MADV_HUGEPAGE on guest RAM. setns
        // puts QEMU (and the tap it makes) in the sandbox's network namespace.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if !huge_pages {
                    libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
                }
                if let Some(fd) = netns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .context(format!("start {}", config.qemu.display()))?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| Error::backend("QEMU exited at once"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
                return Err(Error::backend(format!(
                    "QEMU exited at start ({status}): {}",
                    log.trim()
                )));
            }
            if paths.qmp.exists() && Qmp::connect(&paths.qmp).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(Error::timeout(format!(
                    "QEMU's QMP socket {} did not answer within 20 s",
                    paths.qmp.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Vm {
            config,
            pid,
            child: Some(child),
        })
    }

    /// Finds the VM of directory `dir` again (after a daemon restart): `None` when no QEMU runs for it.
    pub async fn find(dir: &Path) -> Result<Option<Vm>> {
        let paths = VmPaths::new(dir);
        let Ok(text) = std::fs::read_to_string(&paths.config) else {
            return Ok(None);
        };
        let config: VmConfig = serde_json::from_str(&text)
            .map_err(|e| Error::internal(format!("bad {}: {e}", paths.config.display())))?;
        let Some(pid) = read_pid(&paths.pid) else {
            return Ok(None);
        };
        if !is_our_qemu(pid, &paths.qmp) {
            return Ok(None);
        }
        Ok(Some(Vm {
            config,
            pid,
            child: None,
        }))
    }

    /// The VM directory's files.
    pub fn paths(&self) -> VmPaths {
        self.config.paths()
    }

    /// A fresh QMP connection.
    pub async fn qmp(&self) -> Result<Qmp> {
        Qmp::connect(&self.paths().qmp).await
    }

    /// QMP's `query-status` (`running`, `paused`, `shutdown` ...).
    pub async fn status(&self) -> Result<String> {
        let v = self.qmp().await?.execute("query-status", None).await?;
        Ok(v.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Pauses every vCPU (QMP `stop`).
    pub async fn pause(&self) -> Result<()> {
        self.qmp().await?.execute("stop", None).await.map(drop)
    }

    /// Resumes the vCPUs (QMP `cont`).
    pub async fn resume(&self) -> Result<()> {
        self.qmp().await?.execute("cont", None).await.map(drop)
    }

    /// Stops the guest and saves its device state to `state`, leaving out its RAM, which stays in the shared
    /// [`RamFile`] (QEMU's `x-ignore-shared`): a template's clones map that file and load this state. QEMU
    /// refuses while a 9p share is mounted in the guest.
    pub async fn save(&self, state: &Path) -> Result<()> {
        let target = shell_path(state)?;
        let mut qmp = self.qmp().await?;
        qmp.execute("stop", None).await?;
        ignore_shared_ram(&mut qmp).await?;
        qmp.execute(
            "migrate",
            Some(json!({ "uri": format!("exec:cat > {target}") })),
        )
        .await?;
        migration_done(&mut qmp, "save").await
    }

    /// Loads the device state `state` saved by [`Vm::save`] into this VM, started with `incoming` and the
    /// template's RAM file, and runs it.
    pub async fn restore(&self, state: &Path) -> Result<()> {
        let source = shell_path(state)?;
        let mut qmp = self.qmp().await?;
        ignore_shared_ram(&mut qmp).await?;
        qmp.execute(
            "migrate-incoming",
            Some(json!({ "uri": format!("exec:cat {source}") })),
        )
        .await?;
        migration_done(&mut qmp, "restore").await?;
        qmp.execute("cont", None).await.map(drop)
    }

    /// Whether QEMU still runs.
    pub fn is_running(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            return matches!(child.try_wait(), Ok(None));
        }
        is_our_qemu(self.pid, &self.paths().qmp)
    }

    /// Waits up to `timeout` for QEMU to exit; true if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> bool {
        if let Some(child) = &mut self.child {
            // Our own child: woken by its exit, not by polling.
            return tokio::time::timeout(timeout, child.wait()).await.is_ok();
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        !self.is_running()
    }

    /// Stops QEMU at once with SIGKILL and waits up to `grace` for its exit: [`Vm::kill`], then
    /// [`Vm::wait_gone`].
    pub async fn quit(&mut self, grace: Duration) {
        self.kill();
        self.wait_gone(grace).await;
    }

    /// Stops the guest at once: SIGKILL to QEMU, and its pid file goes (so [`Vm::find`] no longer finds the VM
    /// while the kernel finishes QEMU's exit). Nothing is lost: nothing in a guest outlives its containers, and
    /// a guest's write to a 9p share is on the host once the guest sees it done. (QMP `quit` took QEMU ~20 ms
    /// to answer under TCG before it even began to exit.)
    pub fn kill(&mut self) {
        if self.is_running() {
            match &mut self.child {
                Some(child) => {
                    let _ = child.start_kill();
                }
                // SAFETY: plain kill(2); `pid` was checked to be our QEMU by is_running just above.
                None => unsafe {
                    libc::kill(self.pid, libc::SIGKILL);
                },
            }
        }
        let _ = std::fs::remove_file(self.paths().pid);
    }

    /// Waits up to `grace` for QEMU's exit (after [`Vm::kill`]: the kernel frees the guest's memory, ~20-40 ms
    /// for a small TCG guest here) and removes the VM directory's sockets and pid file.
    pub async fn wait_gone(&mut self, grace: Duration) {
        if !self.wait_exit(grace).await {
            tracing::warn!(pid = self.pid, "QEMU did not exit within {grace:?}");
        }
        let p = self.paths();
        for f in [&p.qmp, &p.agent, &p.pid] {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// `path` for a QEMU `exec:` migration URI (run by `/bin/sh -c`): only paths that need no quoting.
fn shell_path(path: &Path) -> Result<String> {
    let text = path.to_string_lossy();
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        return Err(Error::invalid(
            "vm_dir",
            format!("{text:?} cannot be named in a QEMU migration command"),
        ));
    }
    Ok(text.into_owned())
}

/// Turns on `x-ignore-shared`: shared RAM is neither sent nor loaded.
async fn ignore_shared_ram(qmp: &mut Qmp) -> Result<()> {
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })),
    )
    .await
    .map(drop)
}

/// Waits (up to 30 s) for the migration under way to complete; its error when it fails.
async fn migration_done(qmp: &mut Qmp, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = qmp.execute("query-migrate", None).await?;
        match info.get("status").and_then(Value::as_str).unwrap_or("") {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                return Err(Error::backend(format!(
                    "the VM's {what} failed: {}",
                    info.get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("QEMU gave no reason")
                )));
            }
            _ if Instant::now() > deadline => {
                return Err(Error::timeout(format!(
                    "the VM's {what} did not complete within 30 s"
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) QEMU whose command line names `qmp` (so a reused PID is not mistaken).
fn is_our_qemu(pid: i32, qmp: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z') | Some('X') | None) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = qmp.to_string_lossy();
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .any(|arg| arg.contains(needle.as_ref()))
}

/// A QMP connection (QEMU's JSON control protocol), ready for commands.
pub struct Qmp {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Qmp")
    }
}

/// How long a QMP exchange may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

impl Qmp {
    /// Connects, reads the greeting and enters command mode.
    pub async fn connect(path: &Path) -> Result<Qmp> {
        let stream = tokio::time::timeout(QMP_TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| Error::timeout(format!("connect to QMP socket {}", path.display())))?
            .context(format!("connect to QMP socket {}", path.display()))?;
        let (r, w) = stream.into_split();
        let mut q = Qmp {
            reader: BufReader::new(r),
            writer: w,
        };
        let greeting = q.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(Error::backend(format!(
                "unexpected QMP greeting: {greeting}"
            )));
        }
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    async fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(QMP_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .map_err(|_| Error::timeout("QMP did not answer within 10 s"))?
            .context("read from QMP")?;
        if n == 0 {
            return Err(Error::backend("QMP connection closed"));
        }
        serde_json::from_str(&line)
            .map_err(|e| Error::backend(format!("bad QMP message {line:?}: {e}")))
    }

    /// Runs `command` with `arguments`; returns its `return` value. Events arriving meanwhile are skipped.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(b'\n');
        self.writer
            .write_all(&bytes)
            .await
            .context(format!("send QMP {command}"))?;
        loop {
            let m = self.read_message().await?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(Error::backend(format!("QMP {command} failed: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests;
