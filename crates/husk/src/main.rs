//! `husk`: the daemon, the CLI and the per-container shim in one executable.

mod cli;
mod client;
mod daemon;

use clap::Parser;
use cli::args::{Cli, Command};

/// Logs to stderr at `level` (or `HUSK_LOG`); the libraries' own chatter (libcontainer, libcgroups) only from warnings up.
fn init_logging(level: &str) {
    let default = format!("{level},libcontainer=error,libcgroups=error");
    let filter = tracing_subscriber::EnvFilter::try_from_env("HUSK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = nix::unistd::isatty(2).unwrap_or(false);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        // The shim and the pause process must stay single-threaded: no async runtime before their work starts.
        Command::Shim { config } => {
            init_logging("warn");
            husk_linux::shim::run(&config)
        }
        Command::SandboxPause => husk_pause::run(),
        Command::Daemon(args) => {
            init_logging(args.log_level.as_deref().unwrap_or("info"));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build();
            match runtime
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(daemon::run(args)))
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
                Command::Run(_) | Command::Create(_) | Command::Exec(_) | Command::Start(_) => 125,
                _ => 1,
            };
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
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    failure_code
                }
            }
        }
    };
    std::process::exit(code);
}
