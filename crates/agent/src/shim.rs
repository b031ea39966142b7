//! Containers made inside the guest with the `linux` driver's own container code: `husk_container::spec` writes the
//! OCI `config.json` (capabilities, the default seccomp profile, masked paths, device rules, limits), and the
//! `linux` driver's per-container monitor (`husk_container::shim`, run as `husk-agent shim CONFIG`) creates the
//! container with libcontainer in a fresh single-threaded process, owns its stdio, serves its control socket and
//! records its exit. The agent is the shim's client, exactly as the `linux` driver's daemon is on a host.
//!
//! What differs from a host: the containers keep the VM's network, IPC and UTS namespaces (the VM is the sandbox;
//! the agent, which starts the shims, lives in them), and join the sandbox's PID namespace through its holder
//! process when the VM was made with `share_pid`. The shim's log goes nowhere in the guest: the host keeps the
//! log, from the output the agent forwards.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use husk_container::shim::{Response, ShimClient, ShimConfig};
use husk_container::spec::{NamespacePlan, SpecInput};
use husk_core::{ContainerConfig, Context, Error, ProcessConfig, Result};
use oci_spec::runtime::LinuxNamespaceType;

use crate::reaper::Reaper;
use crate::runtime::ContainerSetup;

/// The files of one container's bundle (its directory in the guest).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory (`config.json`, `shim.json`, `shim.log`, `exit.json`).
    pub dir: PathBuf,
    /// The shim's control socket.
    pub socket: PathBuf,
}

impl Bundle {
    /// The bundle of container `c`.
    pub fn of(c: &ContainerSetup) -> Bundle {
        Bundle {
            socket: c.dir.join("sock"),
            dir: c.dir.clone(),
        }
    }

    /// A client of the container's shim.
    pub fn client(&self) -> ShimClient {
        ShimClient::new(self.socket.clone())
    }
}

/// The cgroup path of a container in the guest (relative to the cgroup2 root).
pub fn cgroup_path(id: &str) -> String {
    format!("/husk/{id}")
}

/// What every container of this VM is made with.
#[derive(Debug)]
pub struct Maker {
    /// libcontainer's state root.
    pub state_root: PathBuf,
    /// The capabilities the agent holds (the set privileged containers get).
    pub capabilities: Vec<String>,
    /// The default seccomp profile, compiled once per capability set.
    pub seccomp: husk_container::seccomp_bpf::ProgramCache,
    /// Whether cgroup v2 is mounted (always in a guest; the host's layout when the agent runs on a host).
    pub cgroup_v2: bool,
}

impl Maker {
    /// A maker keeping libcontainer's state under `run_dir/lc`.
    pub fn new(run_dir: &Path) -> Result<Maker> {
        Ok(Maker {
            state_root: run_dir.join("lc"),
            capabilities: husk_container::security::daemon_capabilities()?,
            seccomp: Default::default(),
            cgroup_v2: husk_container::cgroups::is_v2(),
        })
    }

    fn input<'a>(
        &'a self,
        c: &'a ContainerSetup,
        config: &'a ContainerConfig,
        process: &'a ProcessConfig,
        rootfs: &'a Path,
    ) -> Result<SpecInput<'a>> {
        Ok(SpecInput {
            config,
            process,
            rootfs,
            namespaces: NamespacePlan {
                pid: c
                    .shared_pid_ns
                    .map(|holder| PathBuf::from(format!("/proc/{holder}/ns/pid"))),
                ..Default::default()
            },
            cgroup_path: cgroup_path(&c.id),
            user: husk_container::user::resolve_user_with_groups(
                rootfs,
                &process.user,
                &config.security.group_add,
                config.security.groups_policy,
            )?,
            etc_files: c.etc_files.clone(),
            // The VM's /dev/shm, so the containers of a sandbox share it as they share its IPC namespace.
            shm: Some(PathBuf::from("/dev/shm")),
            daemon_capabilities: &self.capabilities,
            cgroup_v2: self.cgroup_v2,
        })
    }

    /// Writes the container's `config.json` (the main process) and `shim.json`.
    pub fn write_bundle(&self, c: &ContainerSetup, config: &ContainerConfig) -> Result<Bundle> {
        let bundle = Bundle::of(c);
        let rootfs = c.rootfs();
        let config = with_vm_hostname(config);
        let input = self.input(c, &config, &config.process, &rootfs)?;
        let mut spec = husk_container::spec::container_spec(&input)?;
        keep_vm_namespaces(&mut spec);
        let seccomp = self.precompile_seccomp(&config, &spec, &bundle.dir)?;
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(|e| Error::internal(e.to_string()))?;
        let path = bundle.dir.join("config.json");
        std::fs::write(&path, spec_json).context(format!("write {}", path.display()))?;
        let shim = ShimConfig {
            id: c.id.clone(),
            bundle: bundle.dir.clone(),
            state_root: self.state_root.clone(),
            socket: bundle.socket.clone(),
            log: PathBuf::from("/dev/null"),
            exit_file: bundle.dir.join("exit.json"),
            work_dir: bundle.dir.join("w"),
            tty: config.process.tty,
            stdin: config.process.stdin,
            cgroup_path: cgroup_path(&c.id),
            seccomp_program: seccomp,
            // The CRI's log file is a host path: the host's daemon writes it from the output this agent sends.
            cri_log: None,
            // Nothing is written here; the host's daemon keeps the log within the limits.
            log_limits: Default::default(),
            cgroup_mounts: husk_container::cgroups::cgroup_mount_lines().to_vec(),
            // A guest runs the containers of one sandbox: its mount table stays small.
            base_mount_namespace: None,
            carried_mounts: Vec::new(),
        };
        let shim_json =
            serde_json::to_vec_pretty(&shim).map_err(|e| Error::internal(e.to_string()))?;
        let path = bundle.dir.join("shim.json");
        std::fs::write(&path, shim_json).context(format!("write {}", path.display()))?;
        Ok(bundle)
    }

    /// The OCI `process` object of an exec in container `c`.
    pub fn exec_process(
        &self,
        c: &ContainerSetup,
        config: &ContainerConfig,
        process: &ProcessConfig,
    ) -> Result<serde_json::Value> {
        let rootfs = c.rootfs();
        let config = with_vm_hostname(config);
        let input = self.input(c, &config, process, &rootfs)?;
        husk_container::spec::process_json(&input)
    }

    /// Serves the default seccomp profile as a program compiled once per VM (as the `linux` driver does per
    /// daemon): the spec then carries no filter and the bundle holds `seccomp.bpf`, which the shim installs.
    fn precompile_seccomp(
        &self,
        config: &ContainerConfig,
        spec: &oci_spec::runtime::Spec,
        dir: &Path,
    ) -> Result<Option<PathBuf>> {
        if !husk_container::spec::seccomp_precompiled(config) {
            return Ok(None);
        }
        let caps: Vec<String> = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.bounding().as_ref())
            .map(|set| set.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default();
        let program = self.seccomp.default_program(&caps)?;
        let path = dir.join("seccomp.bpf");
        std::fs::write(&path, program.as_slice()).context(format!("write {}", path.display()))?;
        Ok(Some(path))
    }
}

/// The container's config with the VM's hostname (for `HOSTNAME` in the environment; containers share the VM's
/// UTS namespace).
fn with_vm_hostname(config: &ContainerConfig) -> ContainerConfig {
    let mut config = config.clone();
    if config.hostname.is_empty() {
        config.hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    config
}

/// Drops the network, IPC and UTS namespaces from the spec: the containers keep the VM's, which the shim (started
/// by the agent) is in. So the spec sets no hostname either: the VM's is the sandbox's.
fn keep_vm_namespaces(spec: &mut oci_spec::runtime::Spec) {
    spec.set_hostname(None);
    if let Some(linux) = spec.linux_mut()
        && let Some(list) = linux.namespaces().clone()
    {
        let kept = list
            .into_iter()
            .filter(|n| {
                !matches!(
                    n.typ(),
                    LinuxNamespaceType::Network | LinuxNamespaceType::Ipc | LinuxNamespaceType::Uts
                )
            })
            .collect();
        linux.set_namespaces(Some(kept));
    }
}

/// Starts `husk-agent shim BUNDLE/shim.json` (this very binary) and waits for its one-line answer: the container
/// is then created (its init waits for `start`). Returns the init's PID. The agent's reaper collects the shim when
/// it exits. Blocking.
pub fn spawn(reaper: &Reaper, bundle: &Bundle) -> Result<i32> {
    let log_path = bundle.dir.join("shim.log");
    let log = File::create(&log_path).context(format!("create {}", log_path.display()))?;
    let mut stdout = None;
    let _ = std::fs::remove_file(bundle.dir.join("exit.json"));
    let exe = crate::exe::path()?;
    reaper.spawn(|| -> Result<i32> {
        let mut child = Command::new(&exe)
            .arg0("husk-agent")
            .arg("shim")
            .arg(bundle.dir.join("shim.json"))
            .current_dir(&bundle.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("start the container's shim")?;
        stdout = child.stdout.take();
        // The reaper, not this handle, collects the shim.
        Ok(child.id() as i32)
    })?;
    let stdout = stdout.ok_or_else(|| Error::internal("the shim's stdout is missing"))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("read the shim's answer")?;
    if line.is_empty() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(Error::backend(format!(
            "the container's shim exited without an answer: {}",
            log.trim()
        )));
    }
    let response: Response = serde_json::from_str(&line)
        .map_err(|e| Error::internal(format!("bad shim answer {line:?}: {e}")))?;
    if !response.ok {
        return Err(response
            .error
            .unwrap_or_else(|| Error::backend("the shim failed without a message")));
    }
    Ok(response.pid.unwrap_or(0))
}
