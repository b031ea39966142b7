//! The daemon's settings: the config file (`/etc/husk/husk.toml`) and the flags over it, every key checked
//! (`husk daemon --check-config`), and the reference of every key made from these types
//! (`docs/configuration.md`).
//!
//! Why this file is long: every key of the daemon's config with its documentation, which is also the generated
//! reference (`docs/configuration.md`): long because the settings are many, one concern.

#[cfg(test)]
mod reference;
pub mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use husk_core::Mode;
use serde::{Deserialize, Serialize};

use crate::cli::args::DaemonArgs;

/// The daemon's settings: the config file's, overridden by flags.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// State directory: the store, images, volumes, containers' files (`--root`).
    pub root: PathBuf,
    /// Runtime directory: mounts, namespaces, shims' sockets; gone at reboot (`--run-root`).
    pub run_root: PathBuf,
    /// The unix socket of husk's API, which the CLI talks to (`--socket`).
    pub socket: PathBuf,
    /// The driver of containers that name none: `linux`, `docker` or `vm` (`--driver`).
    pub driver: String,
    /// Drivers to run (the default one is always included).
    pub drivers: Vec<String>,
    /// The mode of containers that name none: `sandbox` or `standalone` (`--mode`).
    pub mode: String,
    /// The cgroup every container's cgroup is made under (`--cgroup-parent`).
    pub cgroup_parent: String,
    /// Turn the kernel's cgroup `favordynmods` on (the `linux` driver's starts stop waiting for an RCU grace
    /// period when they move a process into its cgroup). Global to the host and kept after the daemon stops.
    pub cgroup_favordynmods: bool,
    /// How many network namespaces the `linux` driver keeps attached to the default network ahead of time, so
    /// a sandbox on that network without published ports starts without waiting for the CNI plugins (0: none).
    pub sandbox_pool: usize,
    /// Least level logged: `error`, `warn`, `info`, `debug` or `trace` (`--log-level`; `HUSK_LOG` wins over
    /// both).
    pub log_level: String,
    /// How logs are written: `text` (lines on stderr; the journal, with each field, when systemd connects
    /// stderr to it), `json` (one JSON object a line on stderr) or `journald` (`--log-format`).
    pub log_format: String,
    /// Networking (CNI).
    pub network: NetworkSettings,
    /// The `docker` driver.
    pub docker: DockerSettings,
    /// The image store: limits, devices in layers, registries.
    pub images: ImageSettings,
    /// The `vm` driver.
    pub vm: VmSettings,
    /// TCP address of Zun's REST API (and its identity service), e.g. `127.0.0.1:9517`; off when empty.
    pub listen: String,
    /// How TCP callers authenticate: `keystone` (tokens from husk's identity service) or `none` (only with a
    /// loopback `listen` address).
    pub auth: String,
    /// How long a token of the identity service stays valid, e.g. `1h` or `30m` (at most 7 days); revoked
    /// tokens fail at once.
    pub token_lifetime: String,
    /// The group that owns the API socket (a name or a GID; its mode stays 0660), so its members may use husk
    /// without root; empty: the daemon's own group.
    pub socket_group: String,
    /// The Kubernetes CRI socket (default: `cri.sock` in the run root, `/run/husk/cri.sock`); `""` turns the
    /// CRI off.
    pub cri_socket: Option<PathBuf>,
    /// `HOST:PORT` of the CRI's streaming server (Exec, Attach, PortForward URLs); default `127.0.0.1:0`,
    /// loopback on a free port.
    pub cri_stream_address: String,
    /// `[cri]`: the CRI's registry mirrors.
    pub cri: CriSettings,
    /// `[logs]`: how much of each container's output is kept when its request says nothing.
    pub logs: LogSettings,
    /// TCP address of the Prometheus metrics (`GET /metrics`), e.g. `127.0.0.1:9518`; off when empty
    /// (`--metrics-listen`).
    pub metrics_listen: String,
}

/// `[logs]` in the config file: the defaults of `--log-opt max-size` and `max-file` (unbounded when unset).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// The size a container's log grows to before it is rotated (`10m`, `1g`, ...); unset: never rotated.
    pub max_size: Option<String>,
    /// How many files of a rotated log are kept (at least 1; 1 when only `max_size` is set).
    pub max_file: Option<u32>,
}

impl LogSettings {
    /// The limits these settings give, checked as `--log-opt` values are; `Err` names the key and why.
    pub fn limits(&self) -> Result<husk_core::LogLimits, (&'static str, String)> {
        let mut opts = std::collections::BTreeMap::new();
        if let Some(size) = &self.max_size {
            opts.insert("max-size".to_string(), size.clone());
        }
        if let Some(files) = self.max_file {
            opts.insert("max-file".to_string(), files.to_string());
        }
        let limits = husk_core::LogLimits::from_opts(&opts).map_err(|e| {
            let key = if e.message.contains("max-file") {
                "logs.max_file"
            } else {
                "logs.max_size"
            };
            (key, e.message)
        })?;
        if limits.max_files.is_some() && limits.max_size_bytes.is_none() {
            return Err(("logs.max_file", "max_file needs max_size".to_string()));
        }
        Ok(limits)
    }
}

/// `[cri]` in the config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriSettings {
    /// `[cri.registry]`.
    pub registry: CriRegistrySettings,
    /// `[cri.runtimes.NAME] driver = "vm"`: runtime handlers (a RuntimeClass's `handler`) and their drivers.
    pub runtimes: std::collections::BTreeMap<String, CriRuntime>,
}

/// One runtime handler.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CriRuntime {
    /// The driver its pods run on: `linux`, `vm` or `docker`.
    pub driver: String,
}

/// `[cri.registry]`: where images of each registry are fetched from.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CriRegistrySettings {
    /// `[cri.registry.mirrors."registry.k8s.io"] endpoints = ["http://127.0.0.1:5000"]`: mirrors tried in order
    /// before the registry; images keep their upstream names.
    pub mirrors: std::collections::BTreeMap<String, MirrorEndpoints>,
}

/// One registry's mirrors.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorEndpoints {
    /// `host[:port]` or `http(s)://host[:port]`, in order.
    pub endpoints: Vec<String>,
}

impl DaemonConfig {
    /// The identity service's token lifetime (`token_lifetime`).
    pub fn token_lifetime(&self) -> std::result::Result<std::time::Duration, KeyError> {
        const LONGEST: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
        let nanos = husk_core::units::parse_duration(&self.token_lifetime)
            .map_err(|e| key_error("token_lifetime", e.message))?;
        let lifetime = std::time::Duration::from_nanos(nanos.max(0) as u64);
        if lifetime < std::time::Duration::from_secs(1) || lifetime > LONGEST {
            return Err(key_error(
                "token_lifetime",
                format!(
                    "{:?} is out of range: from 1s to 7 days (168h)",
                    self.token_lifetime
                ),
            ));
        }
        Ok(lifetime)
    }

    /// The GID `socket_group` names (a number, or a name in `/etc/group`), if it names one. The file is read
    /// directly: husk is linked statically, and glibc's `getgrnam` needs the host's NSS modules at run time.
    pub fn socket_gid(&self) -> std::result::Result<Option<u32>, KeyError> {
        let name = self.socket_group.trim();
        if name.is_empty() {
            return Ok(None);
        }
        if let Ok(gid) = name.parse::<u32>() {
            return Ok(Some(gid));
        }
        let groups = std::fs::read_to_string("/etc/group")
            .map_err(|e| key_error("socket_group", format!("read /etc/group: {e}")))?;
        group_id(&groups, name)
            .map(Some)
            .ok_or_else(|| key_error("socket_group", format!("no group {name:?} in /etc/group")))
    }

    /// Where the CRI listens, if it does.
    pub fn cri_socket(&self) -> Option<PathBuf> {
        match &self.cri_socket {
            None => Some(self.run_root.join("cri.sock")),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
        }
    }
}

/// `[vm]` in the config file: the `vm` driver's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmSettings {
    /// `auto` (KVM when a vCPU really runs, else TCG), `kvm` or `tcg`.
    pub accel: String,
    /// QEMU machine type: `microvm` or `q35`.
    pub machine: String,
    /// Guest kernel (default: the newest `/boot/vmlinuz-*` with modules in `/lib/modules`).
    pub kernel: Option<PathBuf>,
    /// The static `husk-agent` binary (default: next to `husk`).
    pub agent: Option<PathBuf>,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Where built guest images are cached (default: `<root>/vm/vm-cache`).
    pub cache_dir: Option<PathBuf>,
    /// Seconds a VM may take to boot to its agent's first answer.
    pub boot_timeout: u64,
    /// MiB of TCG translation cache per VM (software emulation only, 8 to 1024): less keeps each VM smaller and
    /// retranslates more code (32: an idle VM 18 MiB smaller, a cold start 2 % slower here).
    pub tcg_cache_mib: u32,
    /// Start VM sandboxes from a template: one guest booted once and saved; each new VM loads its state and maps
    /// its memory copy-on-write (a failed restore falls back to a cold boot).
    pub template: bool,
    /// Offer every VM's memory to the host's kernel samepage merging (KSM), turning KSM on if it is off: identical
    /// pages of different VMs are kept once, for the CPU KSM's scanner uses.
    pub ksm: bool,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            accel: "auto".into(),
            machine: "microvm".into(),
            kernel: None,
            agent: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            cache_dir: None,
            boot_timeout: 120,
            tcg_cache_mib: husk_vm::DEFAULT_TCG_CACHE_MIB,
            template: true,
            ksm: false,
        }
    }
}

impl VmSettings {
    /// The driver's config for a daemon with `root` and `run_root`, `husk_binary` being this executable.
    pub fn to_config(
        &self,
        root: &Path,
        run_root: &Path,
        husk_binary: &Path,
    ) -> Result<husk_vm::VmDriverConfig> {
        let agent = self
            .agent
            .clone()
            .unwrap_or_else(|| husk_binary.with_file_name("husk-agent"));
        let mut c = husk_vm::VmDriverConfig::new(root.join("vm"), run_root, agent);
        c.accel = self
            .accel
            .parse()
            .map_err(|e: husk_core::Error| anyhow!("[vm] accel: {}", e.message))?;
        c.machine = match self.machine.as_str() {
            "microvm" => husk_vm::Machine::Microvm,
            "q35" => husk_vm::Machine::Q35,
            other => bail!("[vm] machine: unknown machine type {other:?}: use microvm or q35"),
        };
        c.kernel = self.kernel.clone();
        c.qemu = self.qemu.clone();
        if let Some(dir) = &self.cache_dir {
            c.cache_dir = dir.clone();
        }
        c.boot_timeout = Duration::from_secs(self.boot_timeout.max(1));
        if !(8..=1024).contains(&self.tcg_cache_mib) {
            bail!(
                "[vm] tcg_cache_mib: {} is outside 8 to 1024 (MiB of translation cache per VM)",
                self.tcg_cache_mib
            );
        }
        c.tcg_cache_mib = self.tcg_cache_mib;
        c.template = self.template;
        c.ksm = self.ksm;
        Ok(c)
    }
}

/// `[images]` in the config file: the image store's settings (`husk_image::ImageConfig`), every key checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSettings {
    /// Create device nodes found in layers (off: a layer with a device node is refused).
    pub allow_devices: bool,
    /// `[images.limits]`: what one load or pull may write.
    pub limits: ImageLimits,
    /// `[images.registry]`: mirrors, insecure registries, credentials file, concurrency.
    pub registry: RegistrySettings,
}

/// `[images.limits]` (bytes and counts).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Most bytes of one layer's uncompressed content.
    pub max_layer_size: u64,
    /// Most uncompressed bytes of all layers of one image.
    pub max_image_size: u64,
    /// Most entries in one layer.
    pub max_layer_entries: u64,
    /// Most bytes of an archive given to `load`.
    pub max_archive_size: u64,
    /// Most bytes of a manifest, index or image config.
    pub max_json_size: u64,
}

/// `[images.registry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Docker Hub mirrors, tried in order (`host[:port]` or `https://host`).
    pub mirrors: Vec<String>,
    /// Registries reached over plain HTTP (`host[:port]`, `host`, or a CIDR); loopback always is.
    pub insecure_registries: Vec<String>,
    /// The credentials file `husk login` writes (default: `<root>/images/auth.json`).
    pub auth_file: Option<PathBuf>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Layers uploaded at once per push.
    pub max_concurrent_uploads: usize,
    /// Times a broken layer download is resumed before the pull fails.
    pub download_retries: u32,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings::from(husk_image::ImageConfig::default())
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageSettings::default().limits
    }
}

impl Default for RegistrySettings {
    fn default() -> Self {
        ImageSettings::default().registry
    }
}

impl From<husk_image::ImageConfig> for ImageSettings {
    fn from(c: husk_image::ImageConfig) -> Self {
        let (l, r) = (c.limits, c.registry);
        ImageSettings {
            allow_devices: c.allow_devices,
            limits: ImageLimits {
                max_layer_size: l.max_layer_size,
                max_image_size: l.max_image_size,
                max_layer_entries: l.max_layer_entries,
                max_archive_size: l.max_archive_size,
                max_json_size: l.max_json_size,
            },
            registry: RegistrySettings {
                mirrors: r.mirrors,
                insecure_registries: r.insecure_registries,
                auth_file: r.auth_file,
                max_concurrent_downloads: r.max_concurrent_downloads,
                max_concurrent_uploads: r.max_concurrent_uploads,
                download_retries: r.download_retries,
            },
        }
    }
}

impl ImageSettings {
    /// The image store's config.
    pub fn to_config(&self) -> husk_image::ImageConfig {
        let (l, r) = (&self.limits, &self.registry);
        husk_image::ImageConfig {
            allow_devices: self.allow_devices,
            limits: husk_image::Limits {
                max_layer_size: l.max_layer_size,
                max_image_size: l.max_image_size,
                max_layer_entries: l.max_layer_entries,
                max_archive_size: l.max_archive_size,
                max_json_size: l.max_json_size,
            },
            registry: husk_image::RegistryConfig {
                mirrors: r.mirrors.clone(),
                host_mirrors: Default::default(),
                insecure_registries: r.insecure_registries.clone(),
                auth_file: r.auth_file.clone(),
                max_concurrent_downloads: r.max_concurrent_downloads,
                max_concurrent_uploads: r.max_concurrent_uploads,
                download_retries: r.download_retries,
            },
        }
    }
}

/// `[network]` in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSettings {
    /// Directory of CNI configuration lists.
    pub cni_conf_dir: PathBuf,
    /// Directories of CNI plugins.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// Name of the default (bridge) network.
    pub default_network: String,
    /// Bridge of the default network.
    pub bridge: String,
    /// Subnet of the default network.
    pub subnet: String,
    /// Run the `bridge` CNI plugin (with `host-local` addresses) inside the daemon, over netlink, for the
    /// bridge networks husk writes itself; other lists and options still run the plugin binaries.
    pub builtin_bridge: bool,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        let d = husk_net::CniConfig::with_root("/");
        NetworkSettings {
            cni_conf_dir: d.conf_dir,
            cni_plugin_dirs: d.plugin_dirs,
            default_network: d.default_network,
            bridge: d.default_bridge,
            subnet: d.default_subnet,
            builtin_bridge: d.builtin_bridge,
        }
    }
}

/// `[docker]` in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSettings {
    /// The engine's address.
    pub host: String,
    /// This daemon's name on the engine (labels, object names).
    pub instance: String,
    /// The static `husk-pause` binary for infra containers (default: next to `husk`).
    pub pause_binary: Option<PathBuf>,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            host: husk_docker::DEFAULT_HOST.to_string(),
            instance: "husk".into(),
            pause_binary: None,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            root: PathBuf::from("/var/lib/husk"),
            run_root: PathBuf::from("/run/husk"),
            socket: PathBuf::from("/run/husk/husk.sock"),
            driver: "linux".into(),
            drivers: Vec::new(),
            mode: "sandbox".into(),
            cgroup_parent: "husk".into(),
            cgroup_favordynmods: true,
            sandbox_pool: 0,
            log_level: "info".into(),
            log_format: "text".into(),
            network: NetworkSettings::default(),
            docker: DockerSettings::default(),
            listen: String::new(),
            cri_socket: None,
            cri_stream_address: husk_cri::DEFAULT_STREAM_ADDRESS.into(),
            cri: CriSettings::default(),
            auth: "keystone".into(),
            token_lifetime: "1h".into(),
            socket_group: String::new(),
            images: ImageSettings::default(),
            vm: VmSettings::default(),
            logs: LogSettings::default(),
            metrics_listen: String::new(),
        }
    }
}

impl DaemonConfig {
    /// Reads the config file (a missing default file is fine), applies the flags and checks the result.
    pub fn load(args: &DaemonArgs) -> Result<DaemonConfig> {
        let mut config = match std::fs::read_to_string(&args.config) {
            Ok(text) => DaemonConfig::parse(&text)
                .map_err(|e| anyhow!("invalid config file {}: {e}", args.config.display()))?,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && args.config == Path::new(DEFAULT_CONFIG_FILE) =>
            {
                DaemonConfig::default()
            }
            Err(e) => {
                return Err(anyhow!(
                    "cannot read config file {}: {e}",
                    args.config.display()
                ));
            }
        };
        config.apply_flags(args);
        config.validate().map_err(|e| anyhow!("{e}"))?;
        Ok(config)
    }

    /// The settings of a config file's text: every key known and of its type, or the first key that is not.
    pub fn parse(text: &str) -> Result<DaemonConfig, KeyError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .and_then(|span| text.get(..span.start))
                .map(|before| before.matches('\n').count() + 1);
            KeyError::from_serde(path, inner.message(), line)
        })
    }

    /// Applies the daemon's flags over the file's settings.
    fn apply_flags(&mut self, args: &DaemonArgs) {
        let set = |target: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                target.clone_from(v);
            }
        };
        if let Some(v) = &args.root {
            self.root = v.clone();
        }
        if let Some(v) = &args.run_root {
            self.run_root = v.clone();
        }
        if let Some(v) = &args.socket {
            self.socket = v.clone();
        }
        set(&mut self.driver, &args.driver);
        set(&mut self.mode, &args.mode);
        set(&mut self.cgroup_parent, &args.cgroup_parent);
        set(&mut self.log_level, &args.log_level);
        set(&mut self.log_format, &args.log_format);
        if let Some(v) = &args.cni_conf_dir {
            self.network.cni_conf_dir = v.clone();
        }
        set(&mut self.network.bridge, &args.bridge);
        set(&mut self.network.subnet, &args.subnet);
        set(&mut self.network.default_network, &args.default_network);
        set(&mut self.docker.host, &args.docker_host);
        set(&mut self.docker.instance, &args.docker_instance);
        set(&mut self.listen, &args.listen);
        if let Some(v) = &args.cri_socket {
            self.cri_socket = Some(v.clone());
        }
        set(&mut self.auth, &args.auth);
        set(&mut self.metrics_listen, &args.metrics_listen);
        if !self.drivers.contains(&self.driver) {
            self.drivers.insert(0, self.driver.clone());
        }
    }

    /// Checks the values a type alone does not: names of drivers, modes, levels, addresses.
    pub fn validate(&self) -> Result<(), KeyError> {
        let invalid = |key: &str, reason: String| KeyError {
            key: key.to_string(),
            line: None,
            reason,
        };
        if let Err(e) = self.mode.parse::<Mode>() {
            return Err(invalid("mode", e.message));
        }
        for (key, name) in std::iter::once(("driver", &self.driver))
            .chain(self.drivers.iter().map(|d| ("drivers", d)))
        {
            if !DRIVERS.contains(&name.as_str()) {
                return Err(invalid(
                    key,
                    format!(
                        "unknown driver {name:?}: this husk has {}",
                        DRIVERS.join(", ")
                    ),
                ));
            }
        }
        if let Err((key, reason)) = self.logs.limits() {
            return Err(invalid(key, reason));
        }
        if self.log_level.parse::<tracing::Level>().is_err() {
            return Err(invalid(
                "log_level",
                format!(
                    "unknown level {:?}: use error, warn, info, debug or trace",
                    self.log_level
                ),
            ));
        }
        if let Err(e) = self.log_format.parse::<crate::logging::LogFormat>() {
            return Err(invalid("log_format", e));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen",
                format!("invalid address {:?}: use IP:PORT", self.listen),
            ));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "metrics_listen",
                format!("invalid address {:?}: use IP:PORT", self.metrics_listen),
            ));
        }
        match self.auth.parse::<husk_api::zun::AuthMode>() {
            Err(e) => return Err(invalid("auth", e.message)),
            Ok(husk_api::zun::AuthMode::None) => {
                if let Ok(addr) = self.listen.parse::<std::net::SocketAddr>()
                    && !addr.ip().is_loopback()
                {
                    return Err(invalid(
                        "auth",
                        format!(
                            "\"none\" lets anyone who reaches {addr} act as the default project: use it only with a \
                             loopback listen address (127.0.0.1:PORT), or auth = \"keystone\""
                        ),
                    ));
                }
            }
            Ok(_) => {}
        }
        self.token_lifetime()?;
        self.socket_gid()?;
        if let Err(e) = self
            .vm
            .to_config(&self.root, &self.run_root, Path::new("/usr/bin/husk"))
        {
            // `[vm] accel: ...`: the key is in the message.
            let text = e.to_string();
            let (key, reason) = text
                .strip_prefix("[vm] ")
                .and_then(|t| t.split_once(": "))
                .map(|(k, r)| (format!("vm.{k}"), r.to_string()))
                .unwrap_or(("vm".into(), text.clone()));
            return Err(invalid(&key, reason));
        }
        for (name, runtime) in &self.cri.runtimes {
            if name.is_empty() {
                return Err(invalid(
                    "cri.runtimes.\"\"",
                    "the empty handler is the default driver's (set `driver`)".into(),
                ));
            }
            if !self.drivers.contains(&runtime.driver) {
                return Err(invalid(
                    &format!("cri.runtimes.{name}.driver"),
                    format!(
                        "{:?}: this daemon runs {} (add it to `drivers`)",
                        runtime.driver,
                        self.drivers.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The drivers this husk has.
const DRIVERS: [&str; 3] = ["linux", "docker", "vm"];

/// Where the daemon reads its settings unless `--config` says otherwise.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/husk/husk.toml";

/// The GID of group `name` in the text of a group file (`name:password:GID:members` lines).
fn group_id(groups: &str, name: &str) -> Option<u32> {
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        let (group, _, gid) = (fields.next()?, fields.next()?, fields.next()?);
        (group == name).then(|| gid.trim().parse().ok()).flatten()
    })
}

/// A [`KeyError`] for `key` with no line.
fn key_error(key: &str, reason: impl Into<String>) -> KeyError {
    KeyError {
        key: key.to_string(),
        line: None,
        reason: reason.into(),
    }
}

/// What is wrong with one key of a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The key's dotted path (`vm.accel`), or empty when the file is not TOML at all.
    pub key: String,
    /// The line it is on, when known.
    pub line: Option<usize>,
    /// Why it is refused, with a hint when there is one.
    pub reason: String,
}

impl KeyError {
    /// From a deserializer's error at `path` (serde_path_to_error's: `.` for the top, `vm.accel`).
    fn from_serde(path: String, message: &str, line: Option<usize>) -> KeyError {
        let table = if path == "." { String::new() } else { path };
        // serde's words for a key no struct has: "unknown field `acel`, expected one of `accel`, ...".
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((name, _)) = rest.split_once('`')
        {
            // The path ends at the table holding the key, or at the key itself (toml's tables name it).
            let key = if table.is_empty() {
                name.to_string()
            } else if table.ends_with(&format!(".{name}")) || table == name {
                table.clone()
            } else {
                format!("{table}.{name}")
            };
            let reason = match schema::suggest::<DaemonConfig>(&key) {
                Some(hint) => format!("unknown key; did you mean `{hint}`?"),
                None => "unknown key".to_string(),
            };
            return KeyError { key, line, reason };
        }
        KeyError {
            key: table,
            line,
            reason: message
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for KeyError {}

/// `husk daemon --check-config`: reads the config file as the daemon would, with the same flags, and says what
/// is wrong with it. Returns the exit code: 0 when the daemon would accept it, 1 otherwise.
pub fn check(args: &DaemonArgs) -> i32 {
    let file = args.config.display();
    let mut config = match std::fs::read_to_string(&args.config) {
        Ok(text) => match DaemonConfig::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{file}: {e}");
                return 1;
            }
        },
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && args.config == Path::new(DEFAULT_CONFIG_FILE) =>
        {
            println!("{file}: no such file; the defaults apply");
            DaemonConfig::default()
        }
        Err(e) => {
            eprintln!("{file}: cannot read: {e}");
            return 1;
        }
    };
    config.apply_flags(args);
    match config.validate() {
        Ok(()) => {
            println!("{file}: ok");
            0
        }
        Err(e) => {
            eprintln!("{file}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_section_reaches_the_image_store() {
        let text = r#"
[images]
allow_devices = true
[images.limits]
max_layer_size = 1048576
[images.registry]
mirrors = ["mirror.example:5000"]
insecure_registries = ["10.0.0.0/8"]
max_concurrent_downloads = 2
"#;
        let config: DaemonConfig = toml::from_str(text).unwrap();
        let c = config.images.to_config();
        assert!(c.allow_devices);
        assert_eq!(c.limits.max_layer_size, 1 << 20);
        let defaults = husk_image::ImageConfig::default();
        assert_eq!(
            c.limits.max_image_size, defaults.limits.max_image_size,
            "unset keys keep their defaults"
        );
        assert_eq!(c.registry.mirrors, ["mirror.example:5000"]);
        assert_eq!(c.registry.insecure_registries, ["10.0.0.0/8"]);
        assert_eq!(c.registry.max_concurrent_downloads, 2);
        assert_eq!(
            c.registry.download_retries,
            defaults.registry.download_retries
        );
        assert_eq!(DaemonConfig::default().images.to_config(), defaults);
    }

    #[test]
    fn logs_section_gives_the_default_log_limits() {
        let config = DaemonConfig::parse("[logs]\nmax_size = \"10m\"\nmax_file = 3\n").unwrap();
        let limits = config.logs.limits().unwrap();
        assert_eq!(limits.max_size_bytes, Some(10 << 20));
        assert_eq!(limits.max_files, Some(3));
        assert!(
            DaemonConfig::default()
                .logs
                .limits()
                .unwrap()
                .is_unbounded()
        );
        for (text, key, words) in [
            ("[logs]\nmax_size = \"0\"\n", "logs.max_size", "max-size"),
            (
                "[logs]\nmax_file = 0\nmax_size = \"1m\"\n",
                "logs.max_file",
                "max-file",
            ),
            (
                "[logs]\nmax_file = 2\n",
                "logs.max_file",
                "max_file needs max_size",
            ),
        ] {
            let e = DaemonConfig::parse(text).unwrap().validate().unwrap_err();
            assert_eq!(e.key, key, "{text}");
            assert!(e.reason.contains(words), "{text}: {}", e.reason);
        }
        assert!(DaemonConfig::parse("[logs]\nmax_files = 2\n").is_err());
    }

    #[test]
    fn vm_section_reaches_the_vm_driver() {
        let text = "[vm]\naccel = \"tcg\"\nmachine = \"q35\"\ncache_dir = \"/c\"\nboot_timeout = 7\ntcg_cache_mib = 32\ntemplate = false\nksm = true\n";
        let config: DaemonConfig = toml::from_str(text).unwrap();
        let c = config
            .vm
            .to_config(Path::new("/r"), Path::new("/run/x"), Path::new("/bin/husk"))
            .unwrap();
        assert_eq!(c.accel, husk_vm::AccelChoice::Tcg);
        assert_eq!(c.machine, husk_vm::Machine::Q35);
        assert_eq!(c.cache_dir, Path::new("/c"));
        assert_eq!(
            c.agent,
            Path::new("/bin/husk-agent"),
            "the agent is next to husk"
        );
        assert_eq!(c.root, Path::new("/r/vm"));
        assert_eq!(c.boot_timeout, Duration::from_secs(7));
        assert_eq!(c.tcg_cache_mib, 32);
        assert!(!c.template && c.ksm);
        let bad: DaemonConfig = toml::from_str("[vm]\naccel = \"fast\"\n").unwrap();
        let e = bad
            .vm
            .to_config(Path::new("/r"), Path::new("/run/x"), Path::new("/bin/husk"))
            .unwrap_err();
        assert!(e.to_string().contains("auto, kvm or tcg"), "{e}");
        assert!(toml::from_str::<DaemonConfig>("[vm]\nacel = \"tcg\"\n").is_err());
    }

    #[test]
    fn parse_errors_name_the_key_its_line_and_a_hint() {
        let e = DaemonConfig::parse("root = \"/x\"\n[vm]\nacel = \"tcg\"\n").unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.line, e.reason.as_str()),
            ("vm.acel", Some(3), "unknown key; did you mean `vm.accel`?")
        );
        let e = DaemonConfig::parse("\nbridge = \"b\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2: bridge: unknown key; did you mean `network.bridge`?"
        );
        let e = DaemonConfig::parse("[cri.runtimes.kata]\ndrivr = \"vm\"\n").unwrap_err();
        assert_eq!(e.key, "cri.runtimes.kata.drivr");
        assert!(
            e.reason
                .ends_with("did you mean `cri.runtimes.kata.driver`?"),
            "{e}"
        );
        let e = DaemonConfig::parse("[network]\nsubnet = 16\n").unwrap_err();
        assert_eq!(e.key, "network.subnet");
        assert!(e.reason.contains("invalid type: integer"), "{e}");
        let e = DaemonConfig::parse("root = \n").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("", Some(1)));
        assert!(!e.reason.contains('\n'), "one line: {e}");
        assert_eq!(
            DaemonConfig::parse("").unwrap().root,
            Path::new("/var/lib/husk")
        );
    }

    #[test]
    fn an_empty_cri_socket_flag_turns_the_cri_off() {
        use clap::Parser;
        let daemon = |argv: &[&str]| match crate::cli::args::Cli::try_parse_from(argv)
            .expect("the arguments parse")
            .command
        {
            crate::cli::args::Command::Daemon(a) => a,
            _ => unreachable!(),
        };
        let mut config = DaemonConfig::default();
        config.apply_flags(&daemon(&["husk", "daemon", "--cri-socket", ""]));
        assert_eq!(config.cri_socket(), None);
        let mut config = DaemonConfig::default();
        config.apply_flags(&daemon(&[
            "husk",
            "daemon",
            "--cri-socket",
            "/run/x/cri.sock",
        ]));
        assert_eq!(config.cri_socket(), Some(PathBuf::from("/run/x/cri.sock")));
    }

    #[test]
    fn values_are_checked_after_the_flags() {
        let args = |config: &Path, mode: Option<&str>| DaemonArgs {
            config: config.to_path_buf(),
            mode: mode.map(String::from),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("husk.toml");
        std::fs::write(
            &file,
            "drivers = [\"linux\", \"vm\"]\n[cri.runtimes.kata]\ndriver = \"vm\"\n",
        )
        .unwrap();
        assert!(DaemonConfig::load(&args(&file, None)).is_ok());
        assert_eq!(check(&args(&file, None)), 0);
        let e = DaemonConfig::load(&args(&file, Some("box"))).unwrap_err();
        assert!(e.to_string().contains("mode: unknown mode \"box\""), "{e}");
        assert_eq!(check(&args(&file, Some("box"))), 1);
        for (text, key) in [
            (
                "[cri.runtimes.kata]\ndriver = \"vm\"\n",
                "cri.runtimes.kata.driver",
            ),
            ("drivers = [\"linux\", \"dockr\"]\n", "drivers"),
            ("log_level = \"loud\"\n", "log_level"),
            ("log_format = \"xml\"\n", "log_format"),
            ("listen = \"1.2.3.4\"\n", "listen"),
            ("auth = \"magic\"\n", "auth"),
            ("listen = \"0.0.0.0:9517\"\nauth = \"none\"\n", "auth"),
            ("listen = \"192.0.2.1:9517\"\nauth = \"none\"\n", "auth"),
            ("token_lifetime = \"soon\"\n", "token_lifetime"),
            ("token_lifetime = \"0s\"\n", "token_lifetime"),
            ("token_lifetime = \"200h\"\n", "token_lifetime"),
            ("socket_group = \"no-such-group-here\"\n", "socket_group"),
            ("[vm]\nmachine = \"pc\"\n", "vm.machine"),
            ("[vm]\ntcg_cache_mib = 4\n", "vm.tcg_cache_mib"),
        ] {
            let config = DaemonConfig::parse(text).unwrap();
            let mut config = config;
            config.apply_flags(&DaemonArgs::default());
            let e = config.validate().unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        assert_eq!(check(&args(&dir.path().join("missing.toml"), None)), 1);
        for good in [
            "listen = \"127.0.0.1:9517\"\nauth = \"none\"\n",
            "listen = \"[::1]:9517\"\nauth = \"none\"\n",
            "listen = \"0.0.0.0:9517\"\nauth = \"keystone\"\ntoken_lifetime = \"30m\"\n",
            "socket_group = \"root\"\n",
            "socket_group = \"0\"\n",
        ] {
            let mut config = DaemonConfig::parse(good).unwrap();
            config.apply_flags(&DaemonArgs::default());
            config.validate().unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(
            group_id("root:x:0:\n# x\nhusk:x:998:alice,bob\n", "husk"),
            Some(998)
        );
        assert_eq!(group_id("root:x:0:\n", "hus"), None);
        let mut config = DaemonConfig::parse("token_lifetime = \"1h30m\"\n").unwrap();
        config.apply_flags(&DaemonArgs::default());
        assert_eq!(config.token_lifetime().unwrap().as_secs(), 5400);
        assert_eq!(
            DaemonConfig::parse("socket_group = \"root\"\n")
                .unwrap()
                .socket_gid()
                .unwrap(),
            Some(0)
        );
    }

    #[test]
    fn the_packaged_config_file_shows_the_defaults() {
        // contrib/husk.toml (the package's /etc/husk/husk.toml) shows keys commented out at their defaults:
        // uncommented, it must parse and change nothing.
        let text = include_str!("../../../contrib/husk.toml");
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| {
                l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.lines().count() > 20, "{uncommented}");
        let shown: toml::Value = toml::from_str(&uncommented).unwrap();
        DaemonConfig::parse(&uncommented).unwrap();
        let defaults = toml::Value::try_from(DaemonConfig::default()).unwrap();
        for (table, values) in shown.as_table().unwrap() {
            match values.as_table() {
                Some(keys) => {
                    for (key, value) in keys {
                        assert_eq!(Some(value), defaults[table].get(key), "[{table}] {key}");
                    }
                }
                None => assert_eq!(Some(values), defaults.get(table), "{table}"),
            }
        }
        DaemonConfig::parse(text).unwrap();
    }

    #[test]
    fn unknown_image_keys_are_refused() {
        for text in [
            "[images]\nallow_device = true\n",
            "[images.limits]\nmax_layer = 1\n",
            "[images.registry]\nmirror = []\n",
        ] {
            let e = toml::from_str::<DaemonConfig>(text).unwrap_err();
            assert!(e.to_string().contains("unknown field"), "{text}: {e}");
        }
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_a_bad_address_is_refused_by_its_key() {
        assert_eq!(DaemonConfig::default().metrics_listen, "");
        let config = DaemonConfig::parse("metrics_listen = \"127.0.0.1:9518\"\n").unwrap();
        config.validate().unwrap();
        for bad in ["localhost", "127.0.0.1", "127.0.0.1:port", ":9518"] {
            let e = DaemonConfig::parse(&format!("metrics_listen = {bad:?}\n"))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(e.key, "metrics_listen", "{bad}");
            assert!(e.reason.contains("IP:PORT"), "{bad}: {}", e.reason);
        }
    }
}
