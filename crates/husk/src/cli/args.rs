//! Command-line syntax (Docker's habits).
//!
//! Why this file is long: the command line's whole grammar, as clap declarations: every command and flag with its
//! help text, which `husk --help`, the manual pages and the completions are made from. Long because the grammar is;
//! one concern, and kept whole so flags shared by several commands (`run`/`create`, the output formats) are declared
//! once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// husk: run containers in sandboxes (namespaces or lightweight VMs) or standalone.
#[derive(Debug, Parser)]
#[command(
    name = "husk",
    version,
    disable_help_subcommand = true,
    max_term_width = 110
)]
pub struct Cli {
    /// Daemon socket to talk to.
    #[arg(
        short = 'H',
        long = "host",
        env = "HUSK_HOST",
        global = true,
        default_value = "unix:///run/husk/husk.sock"
    )]
    pub host: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
// Parsed once per process: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Run the husk daemon in the foreground.
    Daemon(DaemonArgs),
    /// The container commands (also under `husk container`).
    #[command(flatten)]
    Containers(ContainerCommand),
    /// Show container events as they happen (create, start, die, pause, unpause, destroy, health).
    Events(EventsArgs),
    /// Manage containers (Docker's `container ls`, `container rm` ... and `container prune`).
    #[command(subcommand)]
    Container(ContainerSubcommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage sandboxes.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage capsules (a sandbox with its containers, from a Kubernetes Pod or a Zun template).
    #[command(subcommand)]
    Capsule(super::capsule::CapsuleCommand),
    /// Manage projects (owners of containers, capsules and images).
    #[command(subcommand)]
    Project(super::identity::ProjectCommand),
    /// Manage users of the identity service.
    #[command(subcommand)]
    User(super::identity::UserCommand),
    /// List images.
    Images(ImageLsArgs),
    /// Load images from an archive.
    Load(ImageLoadArgs),
    /// Remove images.
    Rmi(ImageRmArgs),
    /// Give an image another name.
    Tag(ImageTagArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Log in to a registry (the credentials are checked, then stored by the daemon).
    Login(LoginArgs),
    /// Forget the stored credentials of a registry.
    Logout(LogoutArgs),
    /// Save images to a `docker save` / OCI archive.
    Save(ImageSaveArgs),
    /// Daemon-wide information and maintenance.
    #[command(subcommand)]
    System(SystemCommand),
    /// Show daemon-wide information.
    Info(InfoArgs),
    /// Show versions.
    Version,
    /// The vm driver's guest image.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Print the shell completion script for husk (bash, zsh, fish, elvish or powershell).
    Completion(CompletionArgs),
    /// Write husk's manual pages (husk.1 and one husk-COMMAND.1 per command) into a directory.
    Man(ManArgs),
    /// (internal) The per-container monitor, started by the daemon.
    #[command(hide = true)]
    Shim {
        /// The shim's config file.
        config: PathBuf,
    },
    /// (internal) The pause process of a sandbox's shared PID namespace.
    #[command(hide = true, name = "sandbox-pause")]
    SandboxPause,
    /// (internal) Works on a container's files from inside its mount namespace (cp, mount propagation).
    #[command(hide = true, name = "container-fs")]
    ContainerFs {
        /// The request (JSON).
        request: String,
    },
}

/// `husk completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell the script is for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `husk man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (made if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// `husk vm ...`: run on this host, without a daemon.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum VmCommand {
    /// Build the vm driver's guest kernel and initramfs (or find them in the cache) as the daemon with these
    /// settings would, and print where they are.
    BuildGuest(VmBuildArgs),
}

/// `husk vm build-guest`: the daemon settings that decide the guest image.
#[derive(Debug, Args, Default)]
pub struct VmBuildArgs {
    /// State directory (the guest cache is under it unless `[vm] cache_dir` says otherwise).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Configuration file (TOML), as the daemon reads it.
    #[arg(long, default_value = "/etc/husk/husk.toml")]
    pub config: PathBuf,
}

/// `husk daemon`.
#[derive(Debug, Args, Default)]
pub struct DaemonArgs {
    /// State directory.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Runtime directory (mounts, sockets).
    #[arg(long = "run-root")]
    pub run_root: Option<PathBuf>,
    /// API socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long, default_value = "/etc/husk/husk.toml")]
    pub config: PathBuf,
    /// Default driver.
    #[arg(long)]
    pub driver: Option<String>,
    /// Default mode: sandbox or standalone.
    #[arg(long)]
    pub mode: Option<String>,
    /// Parent cgroup of every container.
    #[arg(long = "cgroup-parent")]
    pub cgroup_parent: Option<String>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    /// Log format: text (the journal when systemd connects stderr to it), json (one object a line) or
    /// journald.
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// Directory of CNI configuration lists.
    #[arg(long = "cni-conf-dir")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Bridge of the default network.
    #[arg(long)]
    pub bridge: Option<String>,
    /// Subnet of the default network.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Name of the default network.
    #[arg(long = "default-network")]
    pub default_network: Option<String>,
    /// Docker Engine address for the docker driver.
    #[arg(long = "docker-host")]
    pub docker_host: Option<String>,
    /// This daemon's name on the Docker Engine.
    #[arg(long = "docker-instance")]
    pub docker_instance: Option<String>,
    /// Serve Zun's REST API and the identity service on this TCP address (e.g. 127.0.0.1:9517).
    #[arg(long)]
    pub listen: Option<String>,
    /// Unix socket of the Kubernetes CRI (default: cri.sock in the run root; "" turns it off).
    // An OS-string parser: clap's path parser refuses the empty value that turns the CRI off.
    #[arg(long, value_name = "PATH", value_parser = clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from))]
    pub cri_socket: Option<PathBuf>,
    /// Authentication on the TCP listener: keystone (default) or none (one default project).
    #[arg(long)]
    pub auth: Option<String>,
    /// Serve Prometheus metrics (GET /metrics) on this TCP address (e.g. 127.0.0.1:9518); off by default.
    #[arg(long = "metrics-listen", value_name = "IP:PORT")]
    pub metrics_listen: Option<String>,
    /// Check the configuration file (with these flags over it) and exit: 0 when the daemon would take it, else
    /// 1 with the key that is wrong and why. Starts nothing and needs no root.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

/// Options of `run` and `create`.
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Run in the background and print the container ID.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Join this sandbox (name or ID).
    #[arg(long)]
    pub sandbox: Option<String>,
    /// sandbox or standalone.
    #[arg(long)]
    pub mode: Option<String>,
    /// Driver (linux, docker, vm).
    #[arg(long)]
    pub driver: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from this shell).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// user[:group].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Memory limit (e.g. 64m).
    #[arg(short = 'm', long, allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// CPU limit (e.g. 0.5).
    #[arg(long, allow_hyphen_values = true)]
    pub cpus: Option<String>,
    #[command(flatten)]
    pub cpu_placement: CpuPlacementArgs,
    /// Most processes at once (-1 = unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Size of /dev/shm (e.g. 256m; 64m without it). In a sandbox, give it to the sandbox.
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// The container's oom_score_adj, -1000 to 1000 (never below the daemon's own: raised to it).
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Give every capability the daemon has and lift confinement.
    #[arg(long)]
    pub privileged: bool,
    /// Give the container a host device: HOST[:CONTAINER[:PERMISSIONS]] (permissions: some of r, w, m).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// A log option: max-size=SIZE (rotate the log at this size, e.g. 10m), max-file=N (keep N files).
    #[arg(long = "log-opt")]
    pub log_opts: Vec<String>,
    /// Add a capability.
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined|PROFILE.json, systempaths=unconfined, no-new-privileges[=false].
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Set a label (KEY=VALUE).
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Share one PID namespace in the sandbox made for this container.
    #[arg(long = "share-pid")]
    pub share_pid: bool,
    /// Network: bridge, host, none or a network's name.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Publish a port: [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp] (no host port: one is picked, see `husk port`).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// DNS server.
    #[arg(long)]
    pub dns: Vec<String>,
    /// DNS search domain.
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Extra /etc/hosts entry NAME:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Signal that stops the container.
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds to wait before killing the container on stop.
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u32>,
    /// Mount a bind (/host:/ctr), a named volume (NAME:/ctr) or an anonymous volume (/ctr), with
    /// :ro, :rw, :z, :nocopy or a propagation mode.
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Mount: type=bind|volume|tmpfs|image,source=,destination=[,readonly][,bind-propagation=][,tmpfs-size=]...
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: /path[:size=64m,mode=1777,...].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Per-process limit: NAME=SOFT[:HARD] (e.g. nofile=1024:2048).
    #[arg(long = "ulimit")]
    pub ulimits: Vec<String>,
    /// Run a tiny init as PID 1 that reaps zombies and forwards signals.
    #[arg(long)]
    pub init: bool,
    /// Add a supplementary group (name or number).
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// Health check command (run with /bin/sh -c).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s).
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Time a health check may take.
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Failures in a row before the container is unhealthy.
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Time after start during which health check failures do not count.
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Time between health checks during the start period.
    #[arg(long = "health-start-interval")]
    pub health_start_interval: Option<String>,
    /// Disable any health check, the image's included.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// When unhealthy: none (default, as Docker), kill (then the restart policy decides), restart or stop.
    #[arg(long = "health-on-failure")]
    pub health_on_failure: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Pull the image: always, missing (also ifnotpresent) or never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// The image.
    pub image: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `husk start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the output and wait for the exit.
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach stdin too.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `husk stop` and `husk restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before SIGKILL.
    #[arg(short = 't', long = "time", alias = "timeout")]
    pub time: Option<u32>,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `husk kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal (name or number).
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// Commands that take only container names.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `husk rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running containers too.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove the anonymous volumes only these containers used.
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `husk logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep following new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
    /// Only lines since a time or duration (e.g. 10m).
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines before a time or duration.
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Container.
    pub container: String,
}

/// `husk exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run in the background.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Set an environment variable.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// user[:group].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Container.
    pub container: String,
    /// Command and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `husk ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (not only running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template (`{{.Field}}`; `table {{.A}}\t{{.B}}` for a table).
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::OutputFormat,
    /// Filter: label=KEY[=VALUE], name=NAME, status=STATUS, sandbox=ID.
    #[arg(long)]
    pub filter: Vec<String>,
    /// Do not shorten IDs and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

/// `husk inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// What to inspect when the name is ambiguous: container, sandbox or image.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// A Go template run over each object (`{{.State.Pid}}`, `{{json .Config}}`) instead of the JSON list.
    #[arg(short = 'f', long)]
    pub format: Option<crate::cli::template::OutputFormat>,
    /// Names or IDs.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `husk events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only some events: container=NAME|ID, event=ACTION (start, die ...), image=IMAGE; repeat a key for
    /// either value.
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// Output format: Docker's lines (table), json, or a Go template (`{{.Action}} {{.Actor.ID}}`).
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::OutputFormat,
}

/// CPU weight and placement, for `run`, `create` and `update` (Docker's flags).
#[derive(Debug, Clone, Default, Args)]
pub struct CpuPlacementArgs {
    /// Relative CPU weight against other containers (2 to 262144; 1024 is the default's).
    #[arg(long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// CPUs the container may run on (e.g. 0-2,4).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (e.g. 0).
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
}

/// `husk update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU limit (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<String>,
    #[command(flatten)]
    pub cpu_placement: CpuPlacementArgs,
    /// Most processes at once (-1: no limit).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Containers.
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `husk attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach the container's input.
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Container.
    pub container: String,
}

/// `husk port`.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// Container.
    pub container: String,
    /// A port of the container: `PORT` or `PORT/PROTOCOL` (tcp unless said).
    pub port: Option<String>,
}

/// `husk top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Container.
    pub container: String,
    /// Options for the host's `ps` (`aux`, `-o pid,comm`; default: as `ps -ef`), as Docker's `top` takes them.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `husk stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One reading, then exit.
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::TableOrJson,
    /// Containers (default: every running one).
    pub containers: Vec<String>,
}

/// `husk rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Container.
    pub container: String,
    /// New name.
    pub new_name: String,
}

/// `husk sandbox ...`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SandboxCommand {
    /// Create a sandbox.
    Create(SandboxCreateArgs),
    /// List sandboxes.
    #[command(alias = "list")]
    Ls(SandboxLsArgs),
    /// Show sandboxes in detail (JSON).
    Inspect(SandboxNamesArgs),
    /// Remove sandboxes.
    Rm(SandboxRmArgs),
}

/// `husk sandbox create`.
#[derive(Debug, Args)]
pub struct SandboxCreateArgs {
    /// Name.
    #[arg(long)]
    pub name: Option<String>,
    /// Hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Containers share one PID namespace.
    #[arg(long = "share-pid")]
    pub share_pid: bool,
    /// Driver.
    #[arg(long)]
    pub driver: Option<String>,
    /// Network: bridge, host, none or a network's name.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Publish a port.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// DNS server.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Extra /etc/hosts entry NAME:IP.
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Memory for the whole sandbox (VM size for the vm driver).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPUs for the whole sandbox.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Size of the /dev/shm its containers share (e.g. 256m; 64m without it).
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Label KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// A volume of the sandbox (its containers mount it with -v NAME:/path); removed with the sandbox.
    #[arg(long = "volume")]
    pub volumes: Vec<String>,
}

/// `husk sandbox ls`.
#[derive(Debug, Args)]
pub struct SandboxLsArgs {
    /// Only IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template (`{{.Field}}`; `table {{.A}}\t{{.B}}` for a table).
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::OutputFormat,
}

/// Sandbox names.
#[derive(Debug, Args)]
pub struct SandboxNamesArgs {
    /// Sandboxes.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

/// `husk sandbox rm`.
#[derive(Debug, Args)]
pub struct SandboxRmArgs {
    /// Remove its containers too.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Sandboxes.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

/// `husk image ...`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// Load images from a `docker save` or OCI-layout archive.
    Load(ImageLoadArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ImageLsArgs),
    /// Show images in detail (JSON).
    Inspect(ImageNamesArgs),
    /// Remove images.
    Rm(ImageRmArgs),
    /// Give an image another name.
    Tag(ImageTagArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Save images to a `docker save` / OCI archive.
    Save(ImageSaveArgs),
    /// Remove images no container uses (nameless ones, or all with -a), and unused layers.
    Prune(ImagePruneArgs),
}

/// `husk pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Platform of a multi-platform image (os/arch[/variant]; default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image's name when done (no progress).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image reference (name[:tag] or name@sha256:...).
    pub reference: String,
}

/// `husk push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Print only the pushed name@digest when done (no progress).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image name (registry/repo[:tag]).
    pub name: String,
}

/// `husk login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (visible to other users of this host: prefer --password-stdin).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Registry (host[:port]).
    #[arg(default_value = "docker.io")]
    pub registry: String,
}

/// `husk logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry (host[:port]).
    #[arg(default_value = "docker.io")]
    pub registry: String,
}

/// `husk save` and `husk image save`.
#[derive(Debug, Args)]
pub struct ImageSaveArgs {
    /// Write to this file (default: stdout).
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `husk image prune`.
#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Remove every image no container uses, not only nameless ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `husk commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author.
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Commit message.
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Freeze the container during the commit (--pause=false to not).
    #[arg(short = 'p', long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub pause: bool,
    /// Container.
    pub container: String,
    /// Name of the new image (repo[:tag]).
    pub repository: Option<String>,
}

/// `husk system ...`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SystemCommand {
    /// Show disk use of images and containers.
    Df(SystemDfArgs),
    /// Remove stopped containers and nameless images (with -a every unused image, with --volumes unused
    /// anonymous volumes).
    Prune(SystemPruneArgs),
}

/// `husk system prune`.
#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Every image no container uses, not only nameless ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Unused anonymous volumes too.
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `husk system df`.
#[derive(Debug, Args)]
pub struct SystemDfArgs {
    /// Per image and per container.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::TableOrJson,
}

/// `husk image load`.
#[derive(Debug, Args)]
pub struct ImageLoadArgs {
    /// Archive (default: stdin).
    #[arg(short = 'i', long)]
    pub input: Option<PathBuf>,
    /// Only print image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `husk image ls`.
#[derive(Debug, Args)]
pub struct ImageLsArgs {
    /// Only IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template (`{{.Field}}`; `table {{.A}}\t{{.B}}` for a table).
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::OutputFormat,
}

/// Image names.
#[derive(Debug, Args)]
pub struct ImageNamesArgs {
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `husk image rm`.
#[derive(Debug, Args)]
pub struct ImageRmArgs {
    /// Remove even if tagged several times or used.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `husk image tag`.
#[derive(Debug, Args)]
pub struct ImageTagArgs {
    /// Existing image.
    pub source: String,
    /// New name.
    pub target: String,
}

/// `husk network ...`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum NetworkCommand {
    /// List networks.
    #[command(alias = "list")]
    Ls(NetworkLsArgs),
    /// Show networks in detail (JSON).
    Inspect(NetworkNamesArgs),
    /// Create a bridge network.
    Create(NetworkCreateArgs),
    /// Remove networks.
    Rm(NetworkNamesArgs),
}

/// `husk network ls`.
#[derive(Debug, Args)]
pub struct NetworkLsArgs {
    /// Only names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template (`{{.Field}}`; `table {{.A}}\t{{.B}}` for a table).
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::OutputFormat,
}

/// Network names.
#[derive(Debug, Args)]
pub struct NetworkNamesArgs {
    /// Networks.
    #[arg(required = true)]
    pub networks: Vec<String>,
}

/// `husk network create`.
#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Subnet in CIDR notation.
    #[arg(long)]
    pub subnet: Option<String>,
    /// Gateway address.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Linux bridge name.
    #[arg(long)]
    pub bridge: Option<String>,
    /// Network name.
    pub name: String,
}

/// `husk cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Keep owners (uid and gid) from the source.
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Follow a symbolic link given as the source.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// CONTAINER:PATH, a local path, or - (a tar stream on stdin).
    pub source: String,
    /// CONTAINER:PATH, a local path, or - (a tar stream on stdout).
    pub destination: String,
}

/// `husk volume ...`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Show volumes in detail (JSON).
    Inspect(VolumeNamesArgs),
    /// Remove volumes (never one a container uses).
    Rm(VolumeRmArgs),
    /// Remove unused anonymous volumes (with --all, unused named ones too).
    Prune(VolumePruneArgs),
}

/// `husk volume create`.
#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Driver (only local).
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Label KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Driver option KEY=VALUE (the local driver takes none).
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    /// Name (a random one when absent).
    pub name: Option<String>,
}

/// `husk volume ls`.
#[derive(Debug, Args)]
pub struct VolumeLsArgs {
    /// Only names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, json, or a Go template (`{{.Field}}`; `table {{.A}}\t{{.B}}` for a table).
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::OutputFormat,
    /// Filter: dangling=true|false, label=KEY[=VALUE], name=NAME, driver=DRIVER.
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
}

/// Volume names.
#[derive(Debug, Args)]
pub struct VolumeNamesArgs {
    /// Volumes.
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

/// `husk volume rm`.
#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// No error for volumes that do not exist.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Volumes.
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

/// The container commands, at the top (`husk run`, Docker's habit) and under `husk container`: one list, so
/// the two can never differ.
// Parsed once per process: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ContainerCommand {
    /// Create and start a container.
    Run(RunArgs),
    /// Create a container.
    Create(RunArgs),
    /// Start containers.
    Start(StartArgs),
    /// Stop containers (stop signal, then SIGKILL after a timeout).
    Stop(StopArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Send a signal to containers.
    Kill(KillArgs),
    /// Freeze containers.
    Pause(NamesArgs),
    /// Thaw containers.
    Unpause(NamesArgs),
    /// Remove containers.
    Rm(RmArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(NamesArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Attach to a running container's output (and input, when it was started with -i) until it exits.
    Attach(AttachArgs),
    /// List a container's published ports, or where one of its ports is published.
    Port(PortArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// List containers.
    #[command(alias = "ls", alias = "list")]
    Ps(PsArgs),
    /// Show low-level information on containers.
    Inspect(InspectArgs),
    /// Show a container's processes.
    Top(TopArgs),
    /// Show containers' resource usage.
    Stats(StatsArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Change containers' limits (now, and for their next starts) or restart policy.
    Update(UpdateArgs),
    /// Copy files between a container and the local file system (tar streams with `-`).
    Cp(CpArgs),
    /// Make an image from a container's changes.
    Commit(CommitArgs),
}

/// `husk container ...`: the container commands under Docker's management command, and `prune`.
// Parsed once per process: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ContainerSubcommand {
    /// The container commands.
    #[command(flatten)]
    Verbs(ContainerCommand),
    /// Remove every stopped container.
    Prune(ContainerPruneArgs),
}

/// `husk container prune`.
#[derive(Debug, Args)]
pub struct ContainerPruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `husk volume prune`.
#[derive(Debug, Args)]
pub struct VolumePruneArgs {
    /// Named volumes too.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `husk info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format: text, json, or a Go template (`{{.Driver}}`).
    #[arg(long, default_value = "text")]
    pub format: crate::cli::template::OutputFormat,
}
