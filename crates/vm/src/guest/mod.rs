//! The guest image: a kernel and an initramfs holding the husk agent as `/init` and the kernel modules it loads.
//!
//! By default the kernel is the host's Debian `linux-image` kernel (`/boot/vmlinuz-<release>` whose modules are
//! in `/lib/modules/<release>`). The initramfs is built once per content: its name carries a hash of the agent
//! binary, the kernel, every module file and the build format, so a new agent, kernel or module set gives a new
//! file and an unchanged one is reused.

pub mod initramfs;
pub mod modules;
pub mod vmlinux;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use husk_core::{Context, Error, Result};
use sha2::{Digest, Sha256};

pub use initramfs::{Compression, Entry};
pub use modules::{ALWAYS_LOADED, GROUPS, LATE_GROUPS, ModuleDeps, ModuleGroup, PORT_GROUPS};

/// Bumped when the initramfs layout changes, so old cache entries are not reused.
const FORMAT: &str = "husk-initramfs-2";

/// Where the agent finds each module group's load order inside the initramfs (`<dir>/<group>`).
pub const MODULE_GROUP_DIR: &str = "etc/husk/modules";

/// What to build the guest from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestConfig {
    /// The kernel image; `None` = the newest `/boot/vmlinuz-*` with modules in `/lib/modules`.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// The kernel's module directory; `None` = `/lib/modules/<release of the kernel>`.
    #[serde(default)]
    pub modules_dir: Option<PathBuf>,
    /// The static `husk-agent` binary.
    pub agent: PathBuf,
    /// Where built initramfs files are kept.
    pub cache_dir: PathBuf,
    /// Initramfs compression.
    #[serde(default)]
    pub compression: Compression,
    /// Modules to load besides the [`GROUPS`] (with their dependencies), always (they join `base`).
    #[serde(default)]
    pub extra_modules: Vec<String>,
    /// Strip the agent's debug information (with binutils' `strip`, when installed) before packing it: a debug
    /// build is ~60 MB, ~7 MB without, and every byte is copied by an emulated CPU at each boot.
    #[serde(default = "yes")]
    pub strip_agent: bool,
    /// Pack the kernel modules without their signatures, unless the kernel refuses unsigned modules
    /// (`CONFIG_MODULE_SIG_FORCE`, or no `/boot/config-<release>` to tell). Checking a signature costs an
    /// emulated CPU ~2-3 ms per module, on the way to the first container; what the guest loads is what husk
    /// packed from the host's own module tree into an image only root can write. The guest kernel notes the
    /// unsigned modules once ("module verification failed ... tainting kernel").
    #[serde(default = "yes")]
    pub strip_module_signatures: bool,
    /// Boot the kernel's uncompressed ELF image through its PVH entry (extracted once from the bzImage and
    /// cached) instead of letting the guest decompress itself: see [`vmlinux`].
    #[serde(default = "yes")]
    pub uncompressed_kernel: bool,
}

fn yes() -> bool {
    true
}

impl GuestConfig {
    /// A configuration with the default kernel, `agent` and `cache_dir`.
    pub fn new(agent: impl Into<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        GuestConfig {
            kernel: None,
            modules_dir: None,
            agent: agent.into(),
            cache_dir: cache_dir.into(),
            compression: Compression::None,
            extra_modules: Vec::new(),
            strip_agent: true,
            strip_module_signatures: true,
            uncompressed_kernel: true,
        }
    }
}

/// A built guest image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestImage {
    /// Kernel image to pass to `-kernel` (the extracted PVH `vmlinux` when there is one).
    pub kernel: PathBuf,
    /// Initramfs to pass to `-initrd`.
    pub initramfs: PathBuf,
    /// The kernel's release (`6.1.0-56-amd64`).
    pub kernel_release: String,
    /// Module files inside the initramfs, group after group, each in load order (relative to
    /// `/lib/modules/<release>`).
    pub modules: Vec<String>,
    /// The content hash naming the initramfs.
    pub key: String,
}

/// The newest `/boot/vmlinuz-<release>` whose modules are in `/lib/modules/<release>`, with that release.
pub fn default_kernel() -> Result<(PathBuf, String)> {
    find_kernel(Path::new("/boot"), Path::new("/lib/modules"))
}

fn find_kernel(boot: &Path, modules: &Path) -> Result<(PathBuf, String)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(boot)
        .context(format!("list {}", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            modules
                .join(&release)
                .join("modules.dep")
                .exists()
                .then(|| (release, e.path()))
        })
        .collect();
    found.sort_by_key(|a| version_key(&a.0));
    let (release, path) = found.pop().ok_or_else(|| {
        Error::not_found(format!(
            "guest kernel: no {}/vmlinuz-* with modules in {} (install linux-image-amd64 or configure a kernel)",
            boot.display(),
            modules.display()
        ))
    })?;
    Ok((path, release))
}

fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The release of a kernel image file, read from its bzImage header (the version string the header points to).
pub fn kernel_release_of(kernel: &Path) -> Result<String> {
    let data = std::fs::read(kernel).context(format!("read kernel {}", kernel.display()))?;
    bzimage_release(&data).ok_or_else(|| {
        Error::bad_request(format!(
            "{} is not a bzImage with a version string; name its modules_dir",
            kernel.display()
        ))
    })
}

fn bzimage_release(data: &[u8]) -> Option<String> {
    // Boot protocol: "HdrS" at 0x202; the version string's offset minus 0x200 is the u16 at 0x20e.
    if data.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([*data.get(0x20e)?, *data.get(0x20f)?]) as usize + 0x200;
    let text = data.get(off..off.checked_add(256)?.min(data.len()))?;
    let end = text.iter().position(|b| *b == 0 || *b == b' ')?;
    String::from_utf8(text[..end].to_vec()).ok()
}

/// How long an initramfs nobody built or used stays in the cache once another one is built.
const UNUSED_IMAGE_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Removes the cache's other initramfs files (made for other agents, kernels or module sets, ~17 MB each) that
/// were neither built nor used in the last [`UNUSED_IMAGE_LIFETIME`]: a cache shared by daemons of several
/// versions keeps what they use, and an upgraded host does not keep every old image.
fn prune_old_images(cache_dir: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_image = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("initramfs-"));
        let unused = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNUSED_IMAGE_LIFETIME);
        if is_image && unused && path != current {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The build configuration of kernel `release` (`/boot/config-<release>`), empty when there is none.
fn kernel_config(release: &str) -> String {
    std::fs::read_to_string(format!("/boot/config-{release}")).unwrap_or_default()
}

/// Builds (or finds in the cache) the guest image for `config`.
pub fn build_guest(config: &GuestConfig) -> Result<GuestImage> {
    let (kernel, release) = match &config.kernel {
        Some(k) => (k.clone(), kernel_release_of(k)?),
        None => default_kernel()?,
    };
    let modules_dir = config
        .modules_dir
        .clone()
        .unwrap_or_else(|| Path::new("/lib/modules").join(&release));
    let deps = ModuleDeps::load(&modules_dir)?;
    let extra: Vec<&str> = config.extra_modules.iter().map(String::as_str).collect();
    let groups = deps.resolve_groups(GROUPS, &extra)?;
    let modules: Vec<String> = groups
        .iter()
        .flat_map(|(_, files)| files.iter().cloned())
        .collect();
    let agent = std::fs::read(&config.agent)
        .context(format!("read the agent binary {}", config.agent.display()))?;
    let strip_signatures =
        config.strip_module_signatures && modules::unsigned_modules_load(&kernel_config(&release));
    let mut module_files = Vec::with_capacity(modules.len());
    for m in &modules {
        let path = modules_dir.join(m);
        let data =
            std::fs::read(&path).context(format!("read kernel module {}", path.display()))?;
        module_files.push(if strip_signatures {
            modules::without_signature(&data).to_vec()
        } else {
            data
        });
    }
    let kernel_bytes =
        std::fs::read(&kernel).context(format!("read kernel {}", kernel.display()))?;
    let (seccomp_caps, seccomp_program) = default_seccomp_seed()?;
    let mut key = content_key(
        config,
        &agent,
        &kernel_bytes,
        &release,
        &modules,
        &module_files,
    );
    // The precompiled seccomp program is part of the image too.
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(seccomp_caps.join("\n").as_bytes());
    h.update(Sha256::digest(&seccomp_program));
    key = hex::encode(h.finalize());
    let suffix = match config.compression {
        Compression::None => "cpio",
        Compression::Gzip => "cpio.gz",
    };
    let initramfs = config
        .cache_dir
        .join(format!("initramfs-{}.{suffix}", &key[..16]));
    if !initramfs.exists() {
        let agent = if config.strip_agent {
            strip(&config.agent, &config.cache_dir).unwrap_or(agent)
        } else {
            agent
        };
        let mut entries = initramfs_entries(&release, agent, &groups, &modules, module_files);
        entries.push(Entry::File {
            path: "etc/husk/seccomp.caps".into(),
            mode: 0o644,
            data: seccomp_caps
                .iter()
                .map(|c| format!("{c}\n"))
                .collect::<String>()
                .into_bytes(),
        });
        entries.push(Entry::File {
            path: "etc/husk/seccomp.bpf".into(),
            mode: 0o644,
            data: seccomp_program,
        });
        write_atomically(&initramfs, |f| {
            initramfs::write_initramfs(f, &entries, config.compression)
        })?;
        prune_old_images(&config.cache_dir, &initramfs);
    } else if let Ok(f) = std::fs::File::options().append(true).open(&initramfs) {
        // Marks it as in use, for the pruning of other images.
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    let kernel = if config.uncompressed_kernel {
        boot_kernel(&kernel, &kernel_bytes, &config.cache_dir)?
    } else {
        kernel
    };
    Ok(GuestImage {
        kernel,
        initramfs,
        kernel_release: release,
        modules,
        key,
    })
}

/// The default seccomp program of a container in a guest, compiled here once per image: the agent holds every
/// capability in the guest, so a container without `--cap-add`/`--cap-drop` gets Docker's default set, and this is
/// its program. Compiling it in the guest costs ~100 ms under TCG at every VM's first container; other sets are
/// still compiled there.
fn default_seccomp_seed() -> Result<(Vec<String>, Vec<u8>)> {
    let mut capabilities: Vec<String> = husk_container::security::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    capabilities.sort();
    let profile = husk_container::security::default_seccomp_profile(&capabilities);
    let program = husk_container::seccomp_bpf::compile(&profile)?;
    Ok((capabilities, program))
}

/// The kernel to boot: the cached PVH `vmlinux` extracted from `bzimage`, or `bzimage` itself when it has none.
fn boot_kernel(bzimage: &Path, bytes: &[u8], cache: &Path) -> Result<PathBuf> {
    let hash = hex::encode(Sha256::digest(bytes));
    let vmlinux = cache.join(format!("vmlinux-{}", &hash[..16]));
    let none = cache.join(format!("vmlinux-{}.none", &hash[..16]));
    if vmlinux.exists() {
        return Ok(vmlinux);
    }
    if none.exists() {
        return Ok(bzimage.to_path_buf());
    }
    match vmlinux::extract_vmlinux(bytes) {
        Some(elf) => {
            write_atomically(&vmlinux, |f| f.write_all(&elf))?;
            Ok(vmlinux)
        }
        None => {
            write_atomically(&none, |_| Ok(()))?;
            Ok(bzimage.to_path_buf())
        }
    }
}

/// The agent without debug information, or `None` when `strip` is not installed or fails.
fn strip(agent: &Path, scratch: &Path) -> Option<Vec<u8>> {
    std::fs::create_dir_all(scratch).ok()?;
    let out = scratch.join(format!(".agent-{:08x}.stripped", rand::random::<u32>()));
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(agent)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let data = if ok { std::fs::read(&out).ok() } else { None };
    let _ = std::fs::remove_file(&out);
    data
}

fn content_key(
    config: &GuestConfig,
    agent: &[u8],
    kernel: &[u8],
    release: &str,
    modules: &[String],
    module_files: &[Vec<u8>],
) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    h.update(format!(
        "{:?}\0{}\0{release}\0",
        config.compression, config.strip_agent
    ));
    h.update(Sha256::digest(agent));
    h.update(Sha256::digest(kernel));
    for (name, data) in modules.iter().zip(module_files) {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(Sha256::digest(data));
    }
    hex::encode(h.finalize())
}

fn initramfs_entries(
    release: &str,
    agent: Vec<u8>,
    groups: &[(String, Vec<String>)],
    modules: &[String],
    module_files: Vec<Vec<u8>>,
) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut seen = BTreeSet::new();
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "mnt",
        "etc",
        "etc/husk",
        MODULE_GROUP_DIR,
    ] {
        seen.insert(dir.to_string());
        entries.push(Entry::Dir {
            path: dir.into(),
            mode: if dir == "tmp" { 0o1777 } else { 0o755 },
        });
    }
    entries.push(Entry::CharDev {
        path: "dev/console".into(),
        mode: 0o600,
        major: 5,
        minor: 1,
    });
    entries.push(Entry::CharDev {
        path: "dev/null".into(),
        mode: 0o666,
        major: 1,
        minor: 3,
    });
    entries.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: agent,
    });
    for (group, files) in groups {
        let order: String = files.iter().map(|m| format!("{m}\n")).collect();
        entries.push(Entry::File {
            path: format!("{MODULE_GROUP_DIR}/{group}"),
            mode: 0o644,
            data: order.into_bytes(),
        });
    }
    for (m, data) in modules.iter().zip(module_files) {
        let path = format!("lib/modules/{release}/{m}");
        initramfs::parents(&path, &mut seen, &mut entries);
        entries.push(Entry::File {
            path,
            mode: 0o644,
            data,
        });
    }
    entries
}

/// Writes a file through a temporary file in the same directory and a rename, so readers never see half of it.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::internal(format!("{} has no parent directory", path.display())))?;
    std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{:08x}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.context(format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_unused_images_are_pruned_recent_ones_and_other_files_kept() {
        let d = tempfile::tempdir().unwrap();
        let file = |name: &str, age_hours: u64| {
            let path = d.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            let when =
                std::time::SystemTime::now() - std::time::Duration::from_secs(age_hours * 3600);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
            path
        };
        let current = file("initramfs-aaaa.cpio", 48);
        let old = file("initramfs-bbbb.cpio", 48);
        let recent = file("initramfs-cccc.cpio", 1);
        let kernel = file("vmlinux-dddd", 48);
        prune_old_images(d.path(), &current);
        assert!(current.exists(), "the image in use stays");
        assert!(!old.exists(), "an image unused for two days goes");
        assert!(
            recent.exists(),
            "an image another daemon used an hour ago stays"
        );
        assert!(kernel.exists(), "only initramfs files are pruned");
    }

    #[test]
    fn newest_kernel_with_modules_wins() {
        let d = tempfile::tempdir().unwrap();
        let (boot, lib) = (d.path().join("boot"), d.path().join("modules"));
        for r in ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.9.0-1-amd64"] {
            std::fs::create_dir_all(&boot).unwrap();
            std::fs::write(boot.join(format!("vmlinuz-{r}")), b"k").unwrap();
        }
        for r in ["6.1.0-9-amd64", "6.1.0-56-amd64"] {
            std::fs::create_dir_all(lib.join(r)).unwrap();
            std::fs::write(lib.join(r).join("modules.dep"), b"").unwrap();
        }
        let (path, release) = find_kernel(&boot, &lib).unwrap();
        assert_eq!(
            release, "6.1.0-56-amd64",
            "6.9 has no modules; 56 > 9 numerically"
        );
        assert!(path.ends_with("vmlinuz-6.1.0-56-amd64"));
        assert!(find_kernel(&lib, &boot).is_err());
    }

    #[test]
    fn release_from_bzimage_header() {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&(0x300u16).to_le_bytes());
        img[0x500..0x516].copy_from_slice(b"6.1.0-56-amd64 (debian");
        assert_eq!(bzimage_release(&img).as_deref(), Some("6.1.0-56-amd64"));
        assert_eq!(bzimage_release(&[0u8; 10]), None);
    }

    #[test]
    fn layout_has_init_console_and_module_order() {
        let groups = vec![
            (
                "base".to_string(),
                vec!["kernel/a.ko".to_string(), "kernel/x/b.ko".to_string()],
            ),
            ("net".to_string(), vec![]),
        ];
        let entries = initramfs_entries(
            "6.1",
            b"AGENT".to_vec(),
            &groups,
            &["kernel/a.ko".into(), "kernel/x/b.ko".into()],
            vec![b"A".to_vec(), b"B".to_vec()],
        );
        let find = |p: &str| {
            entries
                .iter()
                .find(|e| matches!(e, Entry::File { path, .. } if path == p))
                .cloned()
        };
        assert!(
            matches!(find("init"), Some(Entry::File { mode: 0o755, data, .. }) if data == b"AGENT")
        );
        assert!(
            matches!(find("etc/husk/modules/base"), Some(Entry::File { data, .. }) if data == b"kernel/a.ko\nkernel/x/b.ko\n")
        );
        assert!(
            matches!(find("etc/husk/modules/net"), Some(Entry::File { data, .. }) if data.is_empty())
        );
        assert!(find("lib/modules/6.1/kernel/x/b.ko").is_some());
        assert!(entries.iter().any(|e| matches!(e, Entry::CharDev { path, major: 5, minor: 1, .. } if path == "dev/console")));
        assert!(
            entries.iter().any(
                |e| matches!(e, Entry::Dir { path, .. } if path == "lib/modules/6.1/kernel/x")
            )
        );
    }

    #[test]
    fn host_kernel_image_builds_and_is_cached() {
        // Uses the machine's Debian kernel and modules when present (it is on husk's CI machines).
        let Ok((kernel, release)) = default_kernel() else {
            return;
        };
        assert_eq!(kernel_release_of(&kernel).unwrap(), release);
        let d = tempfile::tempdir().unwrap();
        let agent = d.path().join("agent");
        std::fs::write(&agent, b"not really an agent").unwrap();
        let cfg = GuestConfig::new(&agent, d.path().join("cache"));
        let a = build_guest(&cfg).unwrap();
        assert!(a.modules.iter().any(|m| m.ends_with("/9p.ko")));
        let booted = std::fs::read(&a.kernel).unwrap();
        let pvh = std::fs::read_to_string(format!("/boot/config-{release}"))
            .is_ok_and(|c| c.lines().any(|l| l == "CONFIG_PVH=y"));
        if pvh {
            assert!(
                booted.starts_with(b"\x7fELF") && vmlinux::has_pvh_note(&booted),
                "no PVH vmlinux extracted"
            );
            assert_eq!(kernel_release_of(&kernel).unwrap(), release);
        } else {
            assert_eq!(a.kernel, kernel);
        }
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&a.initramfs).unwrap().ino();
        let b = build_guest(&cfg).unwrap();
        assert_eq!(a, b);
        // A rewrite would be a new file (written aside, then renamed over).
        assert_eq!(
            std::fs::metadata(&b.initramfs).unwrap().ino(),
            inode,
            "reused, not rewritten"
        );
        std::fs::write(&agent, b"a new agent").unwrap();
        let c = build_guest(&cfg).unwrap();
        assert_ne!(
            c.initramfs, a.initramfs,
            "a changed agent gives a new initramfs"
        );
    }
}
