//! Kernel modules for the guest: which ones, and in what order to load them, resolved from `modules.dep`.
//!
//! `modules.dep` lists, for every module file, the files it needs (`kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko
//! ...`). We do a depth-first topological sort over that graph from the modules we want, so dependencies always
//! come before their users whatever order the file lists them in. Modules built into the kernel
//! (`modules.builtin`) need no file and are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use husk_core::{Context, Error, Result};

/// A set of modules loaded together. The initramfs holds every group; the agent always loads `port` and `base`,
/// and the groups the kernel command line names (`husk.modules=mmio,vsock`), so a VM loads only what its devices
/// need (each module costs ~10-20 ms to load under TCG). The agent loads the groups its own channel needs
/// ([`PORT_GROUPS`]) before it serves, and the others while it already answers the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleGroup {
    /// Group name.
    pub name: &'static str,
    /// Modules that must exist (as files or built in).
    pub required: &'static [&'static str],
    /// Modules loaded when the kernel has them.
    pub optional: &'static [&'static str],
}

pub use husk_agent_protocol::boot::{ALWAYS_LOADED, LATE_GROUPS, PORT_GROUPS};

/// The groups: `port` (virtio core and the virtio-serial console driver of the agent's port), `base` (9p over
/// virtio, overlayfs), `late` (the balloon for free page reporting), one per virtio transport (`mmio` for microvm, `pci`
/// for q35), and `vsock`, `net`, `blk` for those devices. Dependencies come in through `modules.dep`; a module
/// of `port` or `base` is listed there only, not again in a later group.
pub const GROUPS: &[ModuleGroup] = &[
    ModuleGroup {
        name: "port",
        required: &["virtio", "virtio_ring", "virtio_console"],
        optional: &[],
    },
    ModuleGroup {
        name: "base",
        required: &["9pnet", "9pnet_virtio", "9p", "overlay"],
        optional: &[],
    },
    ModuleGroup {
        name: "late",
        required: &[],
        optional: &["virtio_balloon"],
    },
    ModuleGroup {
        name: "mmio",
        required: &["virtio_mmio"],
        optional: &[],
    },
    ModuleGroup {
        name: "pci",
        required: &["virtio_pci"],
        optional: &[],
    },
    ModuleGroup {
        name: "vsock",
        required: &[],
        optional: &["vsock", "vmw_vsock_virtio_transport"],
    },
    ModuleGroup {
        name: "net",
        required: &[],
        optional: &["virtio_net"],
    },
    ModuleGroup {
        name: "blk",
        required: &[],
        optional: &["virtio_blk"],
    },
];

/// What ends a signed module file (after the PKCS#7 signature and its 12-byte descriptor).
const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";

/// The module file `data` without its appended signature (as `scripts/sign-file` appends it: the signature,
/// a 12-byte `struct module_signature` whose last 4 bytes are the signature's length, big-endian, then the
/// magic string); `data` itself when it carries none.
pub fn without_signature(data: &[u8]) -> &[u8] {
    let Some(rest) = data.strip_suffix(SIGNATURE_MAGIC) else {
        return data;
    };
    let Some(descriptor_at) = rest.len().checked_sub(12) else {
        return data;
    };
    let descriptor = &rest[descriptor_at..];
    let sig_len =
        u32::from_be_bytes([descriptor[8], descriptor[9], descriptor[10], descriptor[11]]);
    match descriptor_at.checked_sub(sig_len as usize) {
        Some(end) => &data[..end],
        None => data,
    }
}

/// Whether a kernel built with `config` (the text of its `/boot/config-*`) loads unsigned modules: it was
/// built with module support and without `CONFIG_MODULE_SIG_FORCE`. An unknown configuration (empty) counts
/// as no.
pub fn unsigned_modules_load(config: &str) -> bool {
    config.lines().any(|l| l == "CONFIG_MODULES=y")
        && !config.lines().any(|l| l == "CONFIG_MODULE_SIG_FORCE=y")
}

/// The dependency graph of one kernel's modules.
#[derive(Debug, Default, Clone)]
pub struct ModuleDeps {
    /// Module file (relative to `/lib/modules/<release>`) -> files it depends on.
    deps: BTreeMap<String, Vec<String>>,
    /// Module name (`virtio_net`) -> its file.
    by_name: BTreeMap<String, String>,
    /// Names of modules built into the kernel.
    builtin: BTreeSet<String>,
}

/// The module name of a module file: the file name without `.ko` and compression suffix, `-` read as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleDeps {
    /// Parses the text of `modules.dep` (and optionally `modules.builtin`).
    pub fn parse(modules_dep: &str, modules_builtin: &str) -> Result<Self> {
        let mut g = ModuleDeps::default();
        for (n, line) in modules_dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (file, rest) = line.split_once(':').ok_or_else(|| {
                Error::bad_request(format!("modules.dep line {}: no ':' in {line:?}", n + 1))
            })?;
            let file = file.trim().to_string();
            let deps = rest.split_whitespace().map(str::to_string).collect();
            g.by_name.insert(module_name(&file), file.clone());
            g.deps.insert(file, deps);
        }
        g.builtin = modules_builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(g)
    }

    /// Reads `modules.dep` and `modules.builtin` from a kernel's module directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let dep = std::fs::read_to_string(dir.join("modules.dep"))
            .context(format!("read {}/modules.dep", dir.display()))?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
        Self::parse(&dep, &builtin)
    }

    /// Whether `name` is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name.replace('-', "_"))
    }

    /// The module files to load, dependencies first, for the `required` modules (an error names any that is
    /// neither a module nor built in) and the `optional` ones the kernel has.
    pub fn resolve(&self, required: &[&str], optional: &[&str]) -> Result<Vec<String>> {
        let mut order = Vec::new();
        let mut state = BTreeMap::new();
        for (names, must) in [(required, true), (optional, false)] {
            for name in names {
                let name = name.replace('-', "_");
                match self.by_name.get(&name) {
                    Some(file) => self.visit(file, &mut state, &mut order)?,
                    None if self.builtin.contains(&name) || !must => {}
                    None => {
                        return Err(Error::not_found(format!(
                            "kernel module {name} (not in modules.dep and not built into the kernel)"
                        )));
                    }
                }
            }
        }
        Ok(order)
    }

    /// Each group's module files in load order, without the files of the groups every guest loads first
    /// ([`ALWAYS_LOADED`]); `extra` modules join `base`.
    pub fn resolve_groups(
        &self,
        groups: &[ModuleGroup],
        extra: &[&str],
    ) -> Result<Vec<(String, Vec<String>)>> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        let mut always: BTreeSet<String> = BTreeSet::new();
        for g in groups {
            let mut required = g.required.to_vec();
            if g.name == "base" {
                required.extend_from_slice(extra);
            }
            let files: Vec<String> = self
                .resolve(&required, g.optional)?
                .into_iter()
                .filter(|f| !always.contains(f))
                .collect();
            if ALWAYS_LOADED.contains(&g.name) {
                always.extend(files.iter().cloned());
            }
            out.push((g.name.to_string(), files));
        }
        Ok(out)
    }

    fn visit(
        &self,
        file: &str,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        match state.get(file) {
            Some(true) => return Ok(()),
            Some(false) => {
                return Err(Error::bad_request(format!(
                    "modules.dep has a dependency cycle through {file}"
                )));
            }
            None => {}
        }
        state.insert(file.to_string(), false);
        let deps = self.deps.get(file).ok_or_else(|| {
            Error::not_found(format!(
                "module file {file} named in modules.dep but not listed in it"
            ))
        })?;
        for dep in deps {
            self.visit(dep, state, order)?;
        }
        state.insert(file.to_string(), true);
        order.push(file.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt of Debian 6.1's modules.dep, with lines deliberately out of dependency order.
    const SAMPLE: &str = "\
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

    fn pos(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|f| module_name(f) == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    }

    #[test]
    fn dependencies_come_first() {
        let g = ModuleDeps::parse(SAMPLE, "kernel/fs/tmpfs.ko\n").unwrap();
        let groups = g.resolve_groups(GROUPS, &[]).unwrap();
        let order: Vec<String> = groups
            .iter()
            .flat_map(|(_, files)| files.iter().cloned())
            .collect();
        for (before, after) in [
            ("virtio_ring", "virtio"),
            ("virtio", "virtio_mmio"),
            ("virtio_pci_legacy_dev", "virtio_pci"),
            ("virtio_pci_modern_dev", "virtio_pci"),
            ("virtio", "virtio_console"),
            ("9pnet", "9pnet_virtio"),
            ("netfs", "fscache"),
            ("fscache", "9p"),
            ("9pnet", "9p"),
            ("failover", "net_failover"),
            ("net_failover", "virtio_net"),
        ] {
            assert!(
                pos(&order, before) < pos(&order, after),
                "{before} must load before {after}: {order:?}"
            );
        }
        // each file once, nothing that was not asked for
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len());
        assert!(!order.iter().any(|f| f.contains("virtio-rng")));
        assert_eq!(order.len(), 16);
        let group = |n: &str| {
            groups
                .iter()
                .find(|(g, _)| g == n)
                .unwrap()
                .1
                .iter()
                .map(|f| module_name(f))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            group("port"),
            ["virtio_ring", "virtio", "virtio_console"],
            "the agent's port first"
        );
        assert_eq!(
            group("mmio"),
            ["virtio_mmio"],
            "shared dependencies stay in port"
        );
        assert_eq!(
            group("pci"),
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
        assert_eq!(group("net"), ["failover", "net_failover", "virtio_net"]);
        assert!(group("vsock").is_empty(), "the sample has no vsock modules");
        assert!(
            !group("base").contains(&"virtio_ring".to_string())
                && group("base").contains(&"fscache".to_string())
        );
    }

    #[test]
    fn signatures_come_off_and_unsigned_files_stay() {
        let body = b"\x7fELF module body".to_vec();
        let signature = vec![0xAB; 300];
        let mut signed = body.clone();
        signed.extend_from_slice(&signature);
        // algo, hash, id_type (PKCS#7 = 2), signer_len, key_id_len, 3 pad bytes, sig_len (big-endian)
        signed.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
        signed.extend_from_slice(&(signature.len() as u32).to_be_bytes());
        signed.extend_from_slice(SIGNATURE_MAGIC);
        assert_eq!(without_signature(&signed), &body[..]);
        assert_eq!(without_signature(&body), &body[..]);
        // A length that points before the file's start leaves it alone.
        let mut bogus = b"x".to_vec();
        bogus.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        bogus.extend_from_slice(SIGNATURE_MAGIC);
        assert_eq!(without_signature(&bogus), &bogus[..]);
        assert!(without_signature(SIGNATURE_MAGIC) == SIGNATURE_MAGIC);
    }

    #[test]
    fn unsigned_modules_load_only_without_forced_signatures() {
        assert!(unsigned_modules_load(
            "CONFIG_MODULES=y\nCONFIG_MODULE_SIG=y\n# CONFIG_MODULE_SIG_FORCE is not set\n"
        ));
        assert!(!unsigned_modules_load(
            "CONFIG_MODULES=y\nCONFIG_MODULE_SIG_FORCE=y\n"
        ));
        assert!(!unsigned_modules_load(""));
    }

    #[test]
    fn missing_required_module_is_an_error_but_builtin_or_optional_is_not() {
        let g = ModuleDeps::parse(SAMPLE, "kernel/fs/configfs/configfs.ko\n").unwrap();
        let e = g.resolve(&["nosuchmod"], &[]).unwrap_err();
        assert!(e.message.contains("nosuchmod"), "{}", e.message);
        assert!(g.resolve(&["configfs"], &["vsock"]).unwrap().is_empty());
        assert!(g.is_builtin("configfs"));
    }

    #[test]
    fn cycles_and_garbage_are_reported() {
        let g = ModuleDeps::parse("a.ko: b.ko\nb.ko: a.ko\n", "").unwrap();
        assert!(
            g.resolve(&["a"], &[])
                .unwrap_err()
                .message
                .contains("cycle")
        );
        assert!(ModuleDeps::parse("no colon here\n", "").is_err());
        let g = ModuleDeps::parse("a.ko: gone.ko\n", "").unwrap();
        assert!(g.resolve(&["a"], &[]).is_err());
    }

    #[test]
    fn names_from_files() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
        assert_eq!(module_name("x.ko.zst"), "x");
    }
}
