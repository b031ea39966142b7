#![doc = include_str!("../README.md")]

mod cli;
mod client;
mod config;
mod daemon;
mod logging;
mod manuals;
mod systemd;

use clap::Parser;
use cli::args::{Cli, Command, ContainerCommand, ContainerSubcommand};

/// Logs to stderr at `level` (or `HUSK_LOG`); the libraries' own chatter (libcontainer, libcgroups) only from warnings up.
fn init_logging(level: &str) {
    let ansi = nix::unistd::isatty(2).unwrap_or(false);
    let _ = subscriber(level)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Logs like [`init_logging`], to the file that is stderr now, wherever fd 2 points later: the shim's processes
/// move a container's stderr onto fd 2 before they exec its process, and what they log meanwhile (libcontainer
/// at `HUSK_LOG=debug`) belongs in the shim's log, not in the container's output.
fn init_logging_to_this_stderr(level: &str) {
    use std::os::fd::AsFd;
    // A copy closed at exec, so a container's process never gets it.
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let file = std::sync::Mutex::new(std::fs::File::from(fd));
            let _ = subscriber(level)
                .with_writer(file)
                .with_ansi(false)
                .try_init();
        }
        Err(_) => init_logging(level),
    }
}

fn subscriber(
    level: &str,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    tracing_subscriber::fmt::format::DefaultFields,
    tracing_subscriber::fmt::format::Format,
    tracing_subscriber::EnvFilter,
> {
    tracing_subscriber::fmt()
        .with_env_filter(logging::env_filter(level))
        .with_target(false)
}

/// Caps glibc's malloc arenas at one per core (at least 2) unless the operator set `MALLOC_ARENA_MAX`. glibc
/// gives each thread that allocates an arena of its own, up to 8 per core, and the daemon's blocking pool runs
/// many short-lived threads: with 1,000 containers the arenas' unused pages were a sixth of the daemon's memory
/// (bench/scale.sh: 67.6 MiB RSS, 55.2 MiB with 2 arenas, the same work).
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: mallopt only changes an allocator setting; called before the runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, cores.max(2) as libc::c_int);
    }
}

/// The exit code of a process killed by SIGPIPE, as the shell reports it.
const SIGPIPE_EXIT: i32 = 128 + libc::SIGPIPE;

/// Whether the reader of our stdout or stderr went away (`husk ps | head -1`): a pipe whose reading end is closed
/// reports POLLERR on its writing end. Other writes (to the daemon's socket) fail with a message, as in Go,
/// where only stdout and stderr die quietly of a broken pipe.
fn output_is_gone() -> bool {
    [1, 2].into_iter().any(|fd| {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 && p.revents & libc::POLLERR != 0 }
    })
}

/// For client commands: a print to a closed pipe ends the process quietly, with the shell's code for SIGPIPE,
/// instead of a panic (`println!`) or an error message about it.
fn quiet_on_broken_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if output_is_gone() {
            std::process::exit(SIGPIPE_EXIT);
        }
        default(info);
    }));
}

/// Whether this process was started as `husk-init` (the `--init` bind mount's name in containers).
fn started_as_init() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "husk-init"))
        .unwrap_or(false)
}

fn main() {
    husk_container::sealed_exe::name_started_process("husk");
    // As a container's init, before anything else: no argument parsing, no runtime, no threads.
    if started_as_init() {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        std::process::exit(husk_pause::init::run(&args));
    }
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Container(ContainerSubcommand::Verbs(c)) => Command::Containers(c),
        other => other,
    };
    let code = match command {
        // The shim and the pause process must stay single-threaded: no async runtime before their work starts.
        Command::Shim { config } => {
            init_logging_to_this_stderr("warn");
            husk_container::shim::run(&config)
        }
        Command::SandboxPause => husk_pause::run(),
        Command::Vm(cli::args::VmCommand::BuildGuest(args)) => {
            init_logging("warn");
            match daemon::build_guest(&args) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    1
                }
            }
        }
        Command::Completion(args) => {
            quiet_on_broken_output();
            manuals::completion(args.shell, &mut std::io::stdout());
            0
        }
        Command::Man(args) => match manuals::write_man_pages(&args.dir) {
            Ok(pages) => {
                for page in pages {
                    println!("{}", page.display());
                }
                0
            }
            Err(e) => {
                eprintln!("Error: {e:#}");
                1
            }
        },
        // Joins or builds a container's mount namespace: must stay single-threaded.
        Command::ContainerFs { request } => husk_container::container_fs::run(&request),
        Command::Daemon(args) if args.check_config => config::check(&args),
        Command::Daemon(args) => {
            // The file's level and format unless the flags say otherwise; a file that cannot be read is
            // reported by `run`.
            let (level, format) = match config::DaemonConfig::load(&args) {
                Ok(c) => (c.log_level, c.log_format),
                Err(_) => (
                    args.log_level.clone().unwrap_or_else(|| "info".into()),
                    args.log_format.clone().unwrap_or_else(|| "text".into()),
                ),
            };
            logging::init_daemon_logging(
                &level,
                format.parse().unwrap_or(logging::LogFormat::Text),
            );
            // Before the runtime starts threads: this takes systemd's variables out of the environment.
            let activation = systemd::Activation::take_from_environment();
            limit_malloc_arenas();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build();
            match runtime
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(daemon::run(args, activation)))
            {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    1
                }
            }
        }
        command => {
            let failure_code = match command {
                Command::Containers(
                    ContainerCommand::Run(_)
                    | ContainerCommand::Create(_)
                    | ContainerCommand::Exec(_)
                    | ContainerCommand::Start(_),
                ) => 125,
                _ => 1,
            };
            // As with Docker: a command that cannot run makes `run` and `exec` exit as a shell would.
            let runs_a_command = matches!(
                command,
                Command::Containers(ContainerCommand::Run(_) | ContainerCommand::Exec(_))
            );
            quiet_on_broken_output();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            // A thread may still be blocked reading our stdin for a container: do not wait for it on the way out.
            let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
                let r = rt.block_on(cli::run(&cli.host, command));
                rt.shutdown_background();
                r
            });
            match result {
                Ok(code) => code,
                Err(_) if output_is_gone() => SIGPIPE_EXIT,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    e.downcast_ref::<client::DaemonError>()
                        .and_then(|d| d.0.command_exit_code())
                        .filter(|_| runs_a_command)
                        .unwrap_or(failure_code)
                }
            }
        }
    };
    std::process::exit(code);
}
