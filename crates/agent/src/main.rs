#![doc = include_str!("../README.md")]

mod exe;
mod fdio;
mod files;
mod init;
mod reaper;
mod runtime;
mod server;
mod service;
mod shim;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use husk_agent_protocol::proto::{AGENT_PORT_NAME, AGENT_VSOCK_PORT};
use husk_core::{Error, Result};

use crate::init::BootOptions;
use crate::reaper::Reaper;
use crate::runtime::NamespaceRuntime;
use crate::service::{AgentEnv, AgentService};

fn main() {
    husk_container::sealed_exe::name_started_process("husk-agent");
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "shim" {
        // A container's monitor (the linux driver's shim), started by the agent: single-threaded until its own
        // event loop, so nothing else may run first.
        std::process::exit(husk_container::shim::run(std::path::Path::new(&args[2])));
    }
    if args.len() == 3 && args[1] == "container-fs" {
        // The linux driver's container-fs helper (cp), started by the agent: it joins or builds a container's
        // mount namespace, so it must stay single-threaded.
        std::process::exit(husk_container::container_fs::run(&args[2]));
    }
    if std::process::id() == 1 {
        pid1();
    }
    if let Err(e) = host_mode(std::env::args().skip(1).collect()) {
        eprintln!("husk-agent: {e}");
        std::process::exit(1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("cannot start the async runtime: {e}");
            init::power_off();
        }
    }
}

/// Life as PID 1. Never returns: the machine powers off at the end (or on a fatal setup error, so the host sees
/// the VM end instead of a guest that never answers).
fn pid1() -> ! {
    if let Err(e) = init::early_mounts() {
        log!("{e}");
        init::power_off();
    }
    let opts = BootOptions::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    if opts.bare {
        log!("bare boot done at {} ms", init::uptime_ms());
        init::power_off();
    }
    let t0 = init::uptime_ms();
    let release = init::release();
    let modules = match init::ModulePlan::new(&release, &opts.module_groups) {
        Ok(plan) => Some(plan),
        Err(e) => {
            log!("{e}");
            None
        }
    };
    // The agent's own channel first; the rest once it serves.
    let port_modules = modules.as_ref().map_or(0, |m| m.load(&m.first));
    if let Some(m) = &modules {
        m.discard_others(&release);
    }
    let t1 = init::uptime_ms();
    // Read before leaving the initramfs, which deletes /etc/husk.
    let seccomp_seed = init::seccomp_seed();
    if let Err(e) = init::leave_initramfs() {
        log!("{e}");
        init::power_off();
    }
    exe::use_guest_binding();
    let cgroup_root = match init::late_mounts(opts.shm_size) {
        Ok(cg) => cg,
        Err(e) => {
            log!("{e}");
            init::power_off();
        }
    };
    if let Err(e) = init::loopback_up() {
        log!("{e}");
    }
    init::set_hostname(opts.hostname.as_deref().unwrap_or("husk"));
    let vsock = opts.vsock;
    log!(
        "started at {t0} ms; {port_modules} modules for the port loaded in {} ms; serving at {} ms",
        t1 - t0,
        init::uptime_ms()
    );
    let modules = modules.map(Arc::new);
    // A template loads every module before it serves: the host saves it once it answers, and no clone loads one
    // again. Its sandbox's settings come later, from the host's `Configure` call.
    let (configure, settings) = if opts.template {
        if let Some(m) = &modules {
            let loaded = m.load(&m.rest) + m.load(&m.late);
            log!(
                "template: {loaded} more modules loaded at {} ms",
                init::uptime_ms()
            );
        }
        let (tx, rx) = std::sync::mpsc::channel::<BootOptions>();
        (Some(Arc::new(std::sync::Mutex::new(Some(tx)))), Some(rx))
    } else {
        (None, None)
    };
    // The rest of the boot runs while the host connects: what needs it (a container's creation) waits for it.
    let boot_modules = modules.clone().filter(|_| !opts.template);
    let booted = init::Pending::spawn("boot", move || {
        let opts = match settings {
            None => opts,
            Some(rx) => match rx.recv() {
                Ok(sandbox) => {
                    init::set_hostname(sandbox.hostname.as_deref().unwrap_or("husk"));
                    if let Some(bytes) = sandbox.shm_size
                        && let Err(e) = init::resize_shm(bytes)
                    {
                        log!("{e}");
                    }
                    sandbox
                }
                Err(_) => opts,
            },
        };
        let start = init::uptime_ms();
        let loaded = boot_modules.as_ref().map_or(0, |m| m.load(&m.rest));
        if let Some(nic) = &opts.nic
            && let Err(e) = init::configure_nic(nic, opts.mac)
        {
            log!("{e}");
        }
        let shares = init::mount_shares(&opts.shares, &opts.writable);
        log!(
            "{loaded} more modules loaded, {} shares mounted, from {start} to {} ms",
            shares.len(),
            init::uptime_ms()
        );
        service::Booted {
            shares,
            share_pid: opts.share_pid,
        }
    });
    if let Some(m) = modules.filter(|_| configure.is_none()) {
        let late = std::thread::Builder::new()
            .name("late".into())
            .spawn(move || {
                init::idle_priority();
                let loaded = m.load(&m.late);
                log!("{loaded} late modules loaded at {} ms", init::uptime_ms());
            });
        if let Err(e) = late {
            log!("start the late module thread: {e}");
        }
    }
    let env = AgentEnv {
        run_dir: PathBuf::from("/run/husk"),
        booted: Arc::new(booted),
        cgroup_root,
        configure,
        seccomp_seed,
    };
    let rt = runtime();
    let r: Result<()> = rt.block_on(async move {
        let (service, mut shutdown) = make_service(env)?;
        let serve = async {
            if vsock {
                server::serve_vsock(service, AGENT_VSOCK_PORT).await
            } else {
                let port = tokio::task::spawn_blocking(|| {
                    init::find_port(AGENT_PORT_NAME, Duration::from_secs(30))
                })
                .await
                .map_err(|e| Error::internal(e.to_string()))??;
                server::serve_port(service, &port).await
            }
        };
        serve_until_shutdown(serve, &mut shutdown).await
    });
    if let Err(e) = r {
        log!("{e}");
    }
    log!("powering off");
    init::power_off()
}

fn make_service(env: AgentEnv) -> Result<(AgentService, tokio::sync::mpsc::Receiver<()>)> {
    let reaper = Reaper::start().map_err(|e| Error::backend(format!("watch SIGCHLD: {e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    Ok((
        AgentService::new(env, Arc::new(NamespaceRuntime), reaper, tx)?,
        rx,
    ))
}

/// Serving on a unix socket on the host, for tests.
fn host_mode(args: Vec<String>) -> Result<()> {
    let usage = || {
        Error::bad_request(
            "usage: husk-agent --listen SOCKET --run-dir DIR [--share TAG=DIR]... [--cgroup DIR]",
        )
    };
    let (mut listen, mut run_dir, mut shares, mut cgroup_root) = (None, None, HashMap::new(), None);
    let mut share_pid = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(usage);
        match a.as_str() {
            "--listen" => listen = Some(PathBuf::from(value()?)),
            "--run-dir" => run_dir = Some(PathBuf::from(value()?)),
            "--cgroup" => cgroup_root = Some(PathBuf::from(value()?)),
            "--share-pid" => share_pid = true,
            "--share" => {
                let v = value()?;
                let (tag, dir) = v.split_once('=').ok_or_else(usage)?;
                shares.insert(tag.to_string(), PathBuf::from(dir));
            }
            _ => return Err(usage()),
        }
    }
    let (Some(listen), Some(run_dir)) = (listen, run_dir) else {
        return Err(usage());
    };
    // Orphans of the containers come back to us, as they would to PID 1.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let env = AgentEnv {
        run_dir,
        booted: Arc::new(init::Pending::ready(service::Booted { shares, share_pid })),
        cgroup_root,
        configure: None,
        seccomp_seed: None,
    };
    runtime().block_on(async move {
        let (service, mut shutdown) = make_service(env)?;
        serve_until_shutdown(server::serve_unix(service, &listen), &mut shutdown).await
    })
}

/// Runs `serve` until it fails or a shutdown is asked for; then keeps serving a little longer so that the
/// answer to the shutdown call (and any other call in flight) reaches the host.
async fn serve_until_shutdown(
    serve: impl std::future::Future<Output = Result<()>>,
    shutdown: &mut tokio::sync::mpsc::Receiver<()>,
) -> Result<()> {
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r,
        _ = shutdown.recv() => {
            let _ = tokio::time::timeout(Duration::from_millis(500), &mut serve).await;
            Ok(())
        }
    }
}
