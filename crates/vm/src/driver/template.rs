//! VM templates: a guest booted once (kernel, initramfs, agent, every module loaded, no sandbox's settings), saved,
//! and loaded by each new VM instead of a cold boot, as Kata Containers' VM templating does.
//!
//! The template's RAM is a file mapped shared while it boots; QEMU then saves only its device state
//! (`x-ignore-shared`: the RAM stays in the file). A clone maps the same file private (it reads the template's
//! pages and writes its own copies, so every clone shares what it has not changed) and loads the state. The
//! sandbox's own settings, which a cold boot reads from the kernel command line (hostname, /dev/shm size,
//! address, MAC, 9p shares, PID sharing), then reach the agent by its `Configure` call, with the host's clock and
//! a random seed (the clones resume with the template's). A template's 9p shares are never mounted (QEMU
//! refuses to save a guest that has one mounted), so each clone gets its own export paths.
//!
//! Files: `cache_dir/templates/<key>/` holds `ram` (the guest's memory), `state` (the device state) and
//! `template.json` (the template's [`VmConfig`] and the state's digest); `run_root/t/<key>/` is the template
//! VM's directory while it boots. `<key>` is a digest of everything a clone must share with its template: QEMU,
//! machine, accelerator, memory, CPUs, devices, kernel and initramfs (path, size, inode) and husk's version;
//! anything else makes another template. A template whose state does not match its digest, or that fails to
//! restore, is removed (the next VM builds it again) and the VM boots cold.

use std::path::{Path, PathBuf};
use std::time::Duration;

use husk_core::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::VmDriver;
use crate::client::AgentClient;
use crate::network::Attached;
use crate::qemu::{RamFile, Vm, VmConfig};

/// How long a clone's agent may take to answer after the restore (it is already running: this is only a
/// guard against a broken template; a cold boot follows).
const CLONE_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A saved template.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Template {
    /// The template VM's configuration; a clone's is this one with its own directory, shares, network and the
    /// RAM file mapped private.
    config: VmConfig,
    /// SHA-256 of the `state` file.
    state_sha256: String,
}

impl VmDriver {
    /// Starts VM `vm_name` of `config` from its template (built first when there is none): the clone launched,
    /// its device state loaded, joined to its network, and its agent given the sandbox's settings
    /// (`boot_options`, what a cold boot would have read from its kernel command line). On failure nothing of
    /// the clone runs and a template that could not be restored is removed.
    pub(super) async fn start_from_template(
        &self,
        vm_name: &str,
        config: &VmConfig,
        attached: &Attached,
        boot_options: &str,
    ) -> Result<(Vm, AgentClient)> {
        let key = template_key(config)?;
        let dir = self.config.cache_dir.join("templates").join(&key);
        let template = self.template(&key, &dir, config).await?;
        let mut clone = template.config.clone();
        clone.dir = config.dir.clone();
        clone.netns = config.netns.clone();
        clone.nic_mac = config.nic_mac.clone();
        for (mine, template_share) in config.shares.iter().zip(clone.shares.iter_mut()) {
            template_share.path = mine.path.clone();
        }
        clone.ram_file = Some(RamFile {
            path: dir.join("ram"),
            shared: false,
        });
        clone.incoming = true;
        let mut vm = Vm::launch(clone).await?;
        if let Err(e) = vm.restore(&dir.join("state")).await {
            vm.quit(Duration::from_secs(1)).await;
            discard(&dir);
            return Err(e.context("restore the template"));
        }
        let (mut vm, client) = match self
            .connect(vm_name, vm, attached, CLONE_ANSWER_TIMEOUT)
            .await
        {
            Ok(started) => started,
            Err(e) => {
                discard(&dir);
                return Err(e);
            }
        };
        if let Err(e) = client.configure(boot_options).await {
            vm.quit(Duration::from_secs(1)).await;
            return Err(e.context("configure the VM started from the template"));
        }
        Ok((vm, client))
    }

    /// The template of `key` in `dir`: checked and used when it is there, else booted and saved now (one build at
    /// a time in a daemon; a VM that waited for another's build uses it). Daemons may share a cache directory: a
    /// template is built in a directory of the daemon's own and renamed into place whole; the first one there
    /// wins.
    async fn template(&self, key: &str, dir: &Path, config: &VmConfig) -> Result<Template> {
        if let Some(t) = saved_template(dir) {
            mark_used(dir);
            return Ok(t);
        }
        let _building = self.template_build.lock().await;
        if let Some(t) = saved_template(dir) {
            return Ok(t);
        }
        let run_dir = self.config.run_root.join("t").join(key);
        // A template VM left by this daemon's predecessor, which died while building one.
        if let Ok(Some(mut stale)) = Vm::find(&run_dir).await {
            stale.quit(Duration::from_secs(5)).await;
        }
        remove_abandoned_builds(dir);
        let build = build_dir(dir, std::process::id());
        for d in [build.as_path(), run_dir.as_path()] {
            match std::fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", d.display()), e)),
            }
        }
        let started = std::time::Instant::now();
        let built = self.build_template(&build, &run_dir, config).await;
        let _ = std::fs::remove_dir_all(&run_dir);
        if let Err(e) = built {
            discard(&build);
            return Err(e.context("build the VM template"));
        }
        let placed = std::fs::rename(&build, dir);
        if placed.is_err() {
            // Another daemon sharing the cache placed one first.
            discard(&build);
        }
        let t = saved_template(dir).ok_or_else(|| {
            Error::backend(format!(
                "the VM template built could not be placed at {}: {}",
                dir.display(),
                placed.err().map(|e| e.to_string()).unwrap_or_default()
            ))
        })?;
        tracing::info!(
            template = key,
            ms = started.elapsed().as_millis() as u64,
            "VM template built"
        );
        prune_templates(dir);
        Ok(t)
    }

    async fn build_template(
        &self,
        dir: &Path,
        run_dir: &Path,
        config: &VmConfig,
    ) -> Result<Template> {
        let mut t = config.clone();
        t.dir = run_dir.to_path_buf();
        t.cmdline_extra = vec!["husk.template".into()];
        for (i, share) in t.shares.iter_mut().enumerate() {
            // Never mounted by the template's guest; each clone exports its own.
            share.path = dir.join(format!("share{i}"));
            std::fs::create_dir_all(&share.path)
                .context(format!("create {}", share.path.display()))?;
        }
        t.ram_file = Some(RamFile {
            path: dir.join("ram"),
            shared: true,
        });
        t.incoming = false;
        let mut vm = Vm::launch(t.clone()).await?;
        let saved = async {
            let addr = super::boot::agent_addr(&t);
            let (client, _) = AgentClient::connect_when_ready(&addr, self.config.boot_timeout)
                .await
                .map_err(|e| e.context("the template's agent"))?;
            // Closed before the save: a clone must not resume a connection the host no longer has (the guest
            // would take the first clone host's greeting as the end of it). Give the agent a moment to see it.
            drop(client);
            tokio::time::sleep(Duration::from_millis(100)).await;
            vm.save(&dir.join("state.part")).await
        }
        .await;
        vm.quit(Duration::from_secs(5)).await;
        saved?;
        let state = dir.join("state");
        std::fs::rename(dir.join("state.part"), &state)
            .context(format!("rename {}", state.display()))?;
        let template = Template {
            config: t,
            state_sha256: file_sha256(&state)?,
        };
        let json = serde_json::to_vec_pretty(&template)
            .map_err(|e| Error::internal(format!("encode the template: {e}")))?;
        std::fs::write(dir.join("template.json"), json)
            .context(format!("write {}", dir.join("template.json").display()))?;
        Ok(template)
    }
}

/// How long a template no VM started from is kept once another is built.
const UNUSED_TEMPLATE_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Records that a VM started from the template in `dir` (its description's modification time).
fn mark_used(dir: &Path) {
    if let Ok(f) = std::fs::File::options()
        .write(true)
        .open(dir.join("template.json"))
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes, beside the template just built in `dir`, the templates whose kernel or initramfs file is gone (a new
/// guest image replaced it) and those no VM started from for [`UNUSED_TEMPLATE_KEPT`]. Running clones keep their
/// mapping of a removed template's memory.
fn prune_templates(dir: &Path) {
    let Some(parent) = dir.parent() else {
        return;
    };
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let path = entry.path();
        if path == dir || !path.join("template.json").exists() {
            continue;
        }
        let Ok(meta) = std::fs::metadata(path.join("template.json")) else {
            continue;
        };
        let unused = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > UNUSED_TEMPLATE_KEPT);
        let orphaned = std::fs::read_to_string(path.join("template.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<Template>(&text).ok())
            .is_none_or(|t| !t.config.kernel.exists() || !t.config.initramfs.exists());
        if unused || orphaned {
            tracing::info!(template = %path.display(), "pruned a VM template");
            discard(&path);
        }
    }
}

/// Where this process builds the template of `dir`.
fn build_dir(dir: &Path, pid: u32) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".build-{pid}"));
    dir.with_file_name(name)
}

/// Removes the build directories, next to `dir`, of processes that no longer run.
fn remove_abandoned_builds(dir: &Path) {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return;
    };
    let prefix = format!("{}.build-", name.to_string_lossy());
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = file.strip_prefix(&prefix)
            && !Path::new("/proc").join(pid).exists()
        {
            discard(&entry.path());
        }
    }
}

/// The template saved in `dir`, if it is whole: its description read, its state matching the digest recorded
/// (a template that is not is removed, to be built again).
fn saved_template(dir: &Path) -> Option<Template> {
    if !dir.exists() {
        return None;
    }
    let whole = std::fs::read_to_string(dir.join("template.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Template>(&text).ok())
        .filter(|t| {
            dir.join("ram").is_file()
                && file_sha256(&dir.join("state")).is_ok_and(|d| d == t.state_sha256)
        });
    if whole.is_none() {
        tracing::warn!(template = %dir.display(), "a damaged VM template: removed, to be built again");
        discard(dir);
    }
    whole
}

/// Removes a template (clones that map its RAM file keep their mapping).
fn discard(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("remove the VM template {}: {e}", dir.display());
    }
}

fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).context(format!("read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The template key of a VM of `config`: what its clone shares with the template, digested (the VM's own
/// directory, shares, network namespace and MAC left out).
fn template_key(config: &VmConfig) -> Result<String> {
    let mut shape = config.clone();
    shape.dir = PathBuf::new();
    shape.cmdline_extra.clear();
    for share in &mut shape.shares {
        share.path = PathBuf::new();
    }
    shape.netns = None;
    shape.nic_mac = shape.nic_mac.as_ref().map(|_| String::new());
    shape.ram_file = None;
    shape.incoming = false;
    let mut digest = Sha256::new();
    digest.update(
        serde_json::to_vec(&shape)
            .map_err(|e| Error::internal(format!("encode the VM's shape: {e}")))?,
    );
    // A file by its path, size and inode: a new guest image is a new file (the cache names its files by their
    // content and renames them into place). Not its modification time, which the cache touches on each use.
    for file in [&config.kernel, &config.initramfs] {
        let meta = std::fs::metadata(file).context(format!("stat {}", file.display()))?;
        digest.update(format!(
            "{}:{}:{}:{}\n",
            file.display(),
            meta.len(),
            std::os::unix::fs::MetadataExt::dev(&meta),
            std::os::unix::fs::MetadataExt::ino(&meta)
        ));
    }
    digest.update(env!("CARGO_PKG_VERSION"));
    Ok(hex::encode(&digest.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{Machine, Share, Transport};

    fn config(dir: &Path, kernel: &Path) -> VmConfig {
        VmConfig {
            dir: dir.join("vm"),
            qemu: "qemu-system-x86_64".into(),
            machine: Machine::Microvm,
            accel: crate::accel::Accel::Tcg,
            memory_mib: 352,
            cpus: 1,
            kernel: kernel.to_path_buf(),
            initramfs: kernel.to_path_buf(),
            cmdline_extra: vec!["husk.hostname=web".into()],
            shares: vec![Share {
                tag: "husk0".into(),
                path: dir.join("share"),
                readonly: true,
            }],
            transport: Transport::Serial,
            tsc_khz: None,
            tb_size_mib: Some(64),
            huge_pages: false,
            free_page_reporting: true,
            netns: Some(dir.join("ns/net")),
            nic_mac: Some("02:00:00:00:00:01".into()),
            ram_file: None,
            incoming: false,
            mem_merge: false,
        }
    }

    #[test]
    fn the_key_ignores_what_each_clone_has_of_its_own_and_follows_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let kernel = tmp.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        let a = config(&tmp.path().join("a"), &kernel);
        let mut b = config(&tmp.path().join("b"), &kernel);
        b.cmdline_extra = vec!["husk.hostname=db".into(), "husk.share_pid".into()];
        b.nic_mac = Some("02:00:00:00:00:02".into());
        assert_eq!(template_key(&a).unwrap(), template_key(&b).unwrap());
        let mut bigger = a.clone();
        bigger.memory_mib = 512;
        let mut no_nic = a.clone();
        no_nic.nic_mac = None;
        for other in [bigger, no_nic] {
            assert_ne!(template_key(&a).unwrap(), template_key(&other).unwrap());
        }
        let before = template_key(&a).unwrap();
        let used = std::fs::File::options().write(true).open(&kernel).unwrap();
        used.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        assert_eq!(template_key(&a).unwrap(), before, "the cache marking a use");
        let new = tmp.path().join("vmlinux.new");
        std::fs::write(&new, b"a new kernel").unwrap();
        std::fs::rename(&new, &kernel).unwrap();
        assert_ne!(template_key(&a).unwrap(), before, "a new kernel file");
    }

    #[test]
    fn a_damaged_template_is_refused_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ram"), b"").unwrap();
        std::fs::write(dir.join("state"), b"device state").unwrap();
        let t = Template {
            config: config(tmp.path(), &dir.join("ram")),
            state_sha256: file_sha256(&dir.join("state")).unwrap(),
        };
        std::fs::write(dir.join("template.json"), serde_json::to_vec(&t).unwrap()).unwrap();
        assert!(saved_template(&dir).is_some());
        std::fs::write(dir.join("state"), b"device stat\0").unwrap();
        assert!(saved_template(&dir).is_none());
        assert!(!dir.exists(), "removed, to be built again");
    }
}
