//! The VMs' life: booting one (its network attachment, QEMU, the first answer of its agent), finding a running
//! one again (after a daemon restart too) and the agent client of a container's VM, and removing one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use husk_core::{ContainerRecord, Context, Error, Mode, NetworkConfig, Result};

use super::shares::unmount_below;
use super::{VmDriver, VmHandle};
use crate::client::{AgentAddr, AgentClient};
use crate::network::Attached;
use crate::proto::{LAYERS_TAG as SHARE_TAG, MOUNTS_TAG};
use crate::qemu::{Share, Transport, Vm, VmConfig, host_tsc_khz, vm_size};

impl VmDriver {
    /// Whether VM `vm_name`'s QEMU is gone, or goes within `limit` (a dying VM breaks its agent's connection
    /// before QEMU has exited).
    pub(super) async fn vm_goes_within(&self, vm_name: &str, limit: Duration) -> Result<bool> {
        let pidfile = self.vm_root(vm_name).join("vm");
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if Vm::find(&pidfile).await?.is_none() {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Boots a VM named `vm_name` with `resources` on `network` and waits for its agent. On failure nothing of it
    /// is left (QEMU, namespace, network attachment).
    pub(super) async fn boot(
        &self,
        vm_name: &str,
        resources: &husk_core::Resources,
        hostname: &str,
        share_pid: bool,
        network: &NetworkConfig,
    ) -> Result<(Arc<VmHandle>, Attached)> {
        if !hostname.is_empty() {
            husk_core::units::validate_hostname(hostname)?;
        }
        let attached = self.attach_network(vm_name, hostname, network).await?;
        match self
            .boot_attached(vm_name, resources, hostname, share_pid, &attached)
            .await
        {
            Ok(h) => Ok((h, attached)),
            Err(e) => {
                let _ = self.detach_network(vm_name).await;
                let _ = std::fs::remove_dir_all(self.vm_root(vm_name));
                Err(e)
            }
        }
    }

    async fn attach_network(
        &self,
        vm_name: &str,
        hostname: &str,
        network: &NetworkConfig,
    ) -> Result<Attached> {
        let Some(networks) = self.config.networks.clone() else {
            return Ok(Attached::default());
        };
        let (owner, ns_dir, host, net) = (
            vm_name.to_string(),
            self.vm_root(vm_name).join("ns"),
            if hostname.is_empty() {
                vm_name[..vm_name.len().min(12)].to_string()
            } else {
                hostname.to_string()
            },
            network.clone(),
        );
        husk_core::spawn_blocking(move || {
            crate::network::attach(&networks, &owner, &ns_dir, &host, &net)
        })
        .await
        .map_err(|e| Error::internal(format!("network setup task: {e}")))?
    }

    /// Disconnects a VM's network and unpins its namespace (idempotent).
    async fn detach_network(&self, vm_name: &str) -> Result<()> {
        let Some(networks) = self.config.networks.clone() else {
            return Ok(());
        };
        let (owner, ns_dir) = (vm_name.to_string(), self.vm_root(vm_name).join("ns"));
        husk_core::spawn_blocking(move || crate::network::detach(&networks, &owner, &ns_dir))
            .await
            .map_err(|e| Error::internal(format!("network teardown task: {e}")))?
    }

    async fn boot_attached(
        &self,
        vm_name: &str,
        resources: &husk_core::Resources,
        hostname: &str,
        share_pid: bool,
        attached: &Attached,
    ) -> Result<Arc<VmHandle>> {
        let image = tokio::task::block_in_place(|| self.guest_image())?;
        let root = self.vm_root(vm_name);
        let share = root.join("share");
        let mounts = root.join("mounts");
        for dir in [&share, &mounts] {
            std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
        }
        if let Some(files) = &attached.files {
            publish_name_files(files, &share)?;
        }
        let (memory_mib, cpus) = vm_size(resources, host_cpus());
        // The initramfs is in guest memory twice while the kernel unpacks it (the image and its files), and the
        // agent's pages stay after: count it twice on top of the fixed overhead, so a small limit still boots.
        let initramfs_mib = std::fs::metadata(&image.initramfs)
            .map(|m| m.len().div_ceil(1 << 20))
            .unwrap_or(0);
        let memory_mib = memory_mib + 2 * initramfs_mib;
        let mut cmdline_extra = Vec::new();
        if !hostname.is_empty() {
            cmdline_extra.push(format!("husk.hostname={hostname}"));
        }
        if share_pid {
            cmdline_extra.push("husk.share_pid".into());
        }
        // The guest's /dev/shm is what its containers share (they share its IPC namespace): Docker's 64 MiB unless
        // asked, as on `linux`.
        cmdline_extra.push(format!(
            "husk.shm_size={}",
            husk_container::spec::shm_size_bytes(resources)
        ));
        if let Some(nic) = &attached.nic {
            cmdline_extra.extend(nic.cmdline());
        }
        let config = VmConfig {
            dir: root.join("vm"),
            qemu: self.config.qemu.clone(),
            machine: self.config.machine,
            accel: self.accel.accel,
            memory_mib,
            cpus,
            kernel: image.kernel,
            initramfs: image.initramfs,
            cmdline_extra,
            shares: vec![
                Share {
                    tag: SHARE_TAG.into(),
                    path: share,
                    readonly: true,
                },
                Share {
                    tag: MOUNTS_TAG.into(),
                    path: mounts,
                    readonly: false,
                },
            ],
            transport: Transport::detect(),
            tsc_khz: host_tsc_khz(),
            tb_size_mib: Some(self.config.tcg_cache_mib),
            huge_pages: false,
            free_page_reporting: true,
            netns: attached.netns.clone(),
            nic_mac: attached.nic.as_ref().map(|n| n.mac.clone()),
            ram_file: None,
            incoming: false,
            mem_merge: self.config.ksm,
        };
        // What a clone of the template is told after its restore: this VM's kernel command line, and the MAC its
        // network interface must take (the template's device kept the template's).
        let mut clone_boot_options = config.kernel_cmdline();
        if let Some(mac) = &config.nic_mac {
            clone_boot_options.push_str(&format!(" husk.mac={mac}"));
        }
        let templated = self.config.template && config.transport == Transport::Serial;
        let started = if templated {
            self.start_from_template(vm_name, &config, attached, &clone_boot_options)
                .await
                .inspect_err(|e| {
                    tracing::warn!(vm = vm_name, "start from the template: {e}; booting cold")
                })
                .ok()
        } else {
            None
        };
        let (vm, client) = match started {
            Some(started) => started,
            None => {
                let vm = Vm::launch(config).await?;
                self.connect(vm_name, vm, attached, self.config.boot_timeout)
                    .await?
            }
        };
        let handle = Arc::new(VmHandle {
            vm: tokio::sync::Mutex::new(vm),
            client,
        });
        self.vms
            .lock()
            .await
            .insert(vm_name.to_string(), handle.clone());
        Ok(handle)
    }

    /// Joins a launched VM to its network (the tap QEMU made in the sandbox's namespace) and waits up to
    /// `timeout` for its agent. On failure QEMU is stopped.
    pub(super) async fn connect(
        &self,
        vm_name: &str,
        mut vm: Vm,
        attached: &Attached,
        timeout: Duration,
    ) -> Result<(Vm, AgentClient)> {
        let addr = agent_addr(&vm.config);
        if let (Some(netns), Some(nic)) = (&attached.netns, &attached.nic) {
            let (netns, nic) = (netns.clone(), nic.clone());
            let joined =
                husk_core::spawn_blocking(move || crate::network::connect_tap(&netns, &nic))
                    .await
                    .map_err(|e| Error::internal(format!("tap setup task: {e}")))
                    .and_then(|r| r);
            if let Err(e) = joined {
                vm.quit(Duration::from_secs(1)).await;
                return Err(e.context(format!("connect VM {vm_name} to its network")));
            }
        }
        let connected = {
            let connect = AgentClient::connect_when_ready(&addr, timeout);
            tokio::pin!(connect);
            loop {
                tokio::select! {
                    r = &mut connect => break r,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        // A guest that panics or powers off while booting ends QEMU: no need to wait out the timeout.
                        if !vm.is_running() {
                            break Err(Error::backend(format!(
                                "the VM stopped while booting ({})",
                                qemu_status(&vm)
                            )));
                        }
                    }
                }
            }
        };
        match connected {
            Ok((client, _)) => Ok((vm, client)),
            Err(e) => {
                let console = std::fs::read_to_string(vm.paths().console).unwrap_or_default();
                vm.quit(Duration::from_secs(1)).await;
                Err(e.context(format!(
                    "boot VM {vm_name} (console: {})",
                    console_tail(&console)
                )))
            }
        }
    }

    /// The running VM `vm_name`: from this daemon's table, or found again on disk after a restart.
    pub(super) async fn vm(&self, vm_name: &str) -> Result<Arc<VmHandle>> {
        let mut vms = self.vms.lock().await;
        if let Some(h) = vms.get(vm_name).cloned() {
            if h.vm.lock().await.is_running() {
                return Ok(h);
            }
            // QEMU ended (the guest powered off, crashed or was killed): forget it.
            vms.remove(vm_name);
        }
        let dir = self.vm_root(vm_name).join("vm");
        let vm = Vm::find(&dir)
            .await?
            .ok_or_else(|| Error::not_found(format!("VM {vm_name} (it is not running)")))?;
        let (client, _) =
            AgentClient::connect_when_ready(&agent_addr(&vm.config), Duration::from_secs(10))
                .await?;
        let handle = Arc::new(VmHandle {
            vm: tokio::sync::Mutex::new(vm),
            client,
        });
        vms.insert(vm_name.to_string(), handle.clone());
        drop(vms);
        // Containers of this VM whose logs nobody reads since the restart.
        if let Ok(list) = handle.client.list().await {
            for c in list {
                self.follow_logs(handle.client.clone(), &c.id);
            }
        }
        Ok(handle)
    }

    pub(super) fn vm_of(container: &ContainerRecord) -> Result<String> {
        if let Some(vm) = container
            .runtime
            .driver_data
            .get("vm")
            .and_then(|v| v.as_str())
        {
            return Ok(vm.to_string());
        }
        match (container.mode, &container.sandbox_id) {
            (Mode::Sandbox, Some(s)) => Ok(s.clone()),
            _ => Ok(container.id().to_string()),
        }
    }

    pub(super) async fn client_for(&self, container: &ContainerRecord) -> Result<AgentClient> {
        Ok(self.vm(&Self::vm_of(container)?).await?.client.clone())
    }

    /// Removes a VM: QEMU is killed at once (nothing in a guest outlives its containers, so there is nothing to
    /// flush); its exit (the kernel freeing the guest's memory), the shares' unmounting, and the removal of its
    /// network and directory (CNI DEL is the slow part) finish in the background; a daemon that stops waits
    /// for them (up to 5 s). If it stops sooner, [`Driver::remove_orphans`](husk_core::Driver::remove_orphans)
    /// finishes the job at the next start: the directory still names the VM.
    pub(super) async fn destroy_vm(&self, vm_name: &str) -> Result<()> {
        const EXIT_GRACE: Duration = Duration::from_secs(5);
        let handle = self.vms.lock().await.remove(vm_name);
        let mut found = match &handle {
            Some(h) => {
                h.vm.lock().await.kill();
                None
            }
            None => Vm::find(&self.vm_root(vm_name).join("vm")).await?,
        };
        if let Some(vm) = &mut found {
            vm.kill();
        }
        let root = self.vm_root(vm_name);
        let networks = self.config.networks.clone();
        let owner = vm_name.to_string();
        self.removals.spawn(async move {
            if let Some(h) = handle {
                h.vm.lock().await.wait_gone(EXIT_GRACE).await;
            }
            if let Some(mut vm) = found {
                vm.wait_gone(EXIT_GRACE).await;
            }
            let finished = tokio::task::spawn_blocking(move || -> Result<()> {
                unmount_below(&[&root.join("share"), &root.join("mounts")]);
                if let Some(networks) = networks {
                    crate::network::detach(&networks, &owner, &root.join("ns"))?;
                }
                match std::fs::remove_dir_all(&root) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(format!("remove {}", root.display()), e)),
                }
            })
            .await;
            match finished {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    "finishing a VM's removal: {e} (retried at the next daemon start)"
                ),
                Err(e) => tracing::warn!("VM removal task: {e}"),
            }
        });
        Ok(())
    }
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Where the agent finds a VM's name files: in the share's `.etc` directory (written before the VM boots).
pub const NAME_FILES_DIR: &str = ".etc";

/// Copies the sandbox's `hosts`, `resolv.conf` and `hostname` into the VM's share, for the agent to bind-mount
/// into the containers.
fn publish_name_files(files: &husk_net::SandboxFiles, share: &Path) -> Result<()> {
    let dir = share.join(NAME_FILES_DIR);
    std::fs::create_dir_all(&dir).context(format!("create {}", dir.display()))?;
    for (src, name) in [
        (&files.hosts, "hosts"),
        (&files.resolv_conf, "resolv.conf"),
        (&files.hostname, "hostname"),
    ] {
        std::fs::copy(src, dir.join(name))
            .context(format!("copy {} into the VM's share", src.display()))?;
    }
    Ok(())
}

/// The last lines of a guest console worth showing: a kernel panic's reason rather than its stack trace.
fn console_tail(console: &str) -> String {
    let lines: Vec<&str> = console
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(panic) = lines.iter().find(|l| l.contains("Kernel panic")) {
        return panic.to_string();
    }
    let skip = lines.len().saturating_sub(5);
    lines[skip..].join(" | ")
}

/// What QEMU said before it exited (its log), for errors.
fn qemu_status(vm: &Vm) -> String {
    let log = std::fs::read_to_string(vm.paths().log).unwrap_or_default();
    let log = log.trim();
    if log.is_empty() {
        "QEMU exited".into()
    } else {
        format!("QEMU exited: {log}")
    }
}

pub(super) fn agent_addr(config: &VmConfig) -> AgentAddr {
    match config.transport {
        Transport::Serial => AgentAddr::Serial(config.paths().agent),
        Transport::Vsock { cid } => AgentAddr::Vsock {
            cid,
            port: crate::proto::AGENT_VSOCK_PORT,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_find_their_vm() {
        let mut r: ContainerRecord = serde_json::from_value(json!({
            "config": { "id": "c1", "name": "n", "image": { "name": "i", "id": "x" }, "process": { "args": ["sh"] } },
            "driver": "vm", "mode": "sandbox", "sandbox_id": "s1", "status": "created", "created_at": "2024-05-01T12:00:00Z"
        }))
        .unwrap();
        assert_eq!(VmDriver::vm_of(&r).unwrap(), "s1");
        r.mode = Mode::Standalone;
        r.sandbox_id = None;
        assert_eq!(VmDriver::vm_of(&r).unwrap(), "c1");
        r.runtime.driver_data = json!({ "vm": "other" });
        assert_eq!(VmDriver::vm_of(&r).unwrap(), "other");
    }
}
