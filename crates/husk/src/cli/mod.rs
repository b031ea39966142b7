//! The client commands: each translates its flags into one or a few local-API calls and prints the answer.

pub mod args;
mod capsule;
mod cp;
mod format;
mod identity;
mod images;
mod progress;
mod stdio;
pub mod template;
mod volumes;

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use args::*;
use http::Method;
use husk_api_types::{
    ContainerCreate, ContainerStats, ContainerView, ExecCreate, HealthcheckRequest, SandboxCreate,
    SandboxView, WaitResult,
};
use husk_core::{MountConfig, NetworkConfig, PortMapping, Resources, RestartPolicy, units};

use crate::client::{Client, encode};
use format::{human_size, print_table, short, status_text};
use husk_api_types::PullPolicy;
use template::OutputFormat;

/// Runs a client command; returns the process exit code.
pub async fn run(host: &str, command: Command) -> Result<i32> {
    let client = Client::new(host)?;
    match command {
        Command::Run(a) => run_container(&client, a, true).await,
        Command::Create(a) => run_container(&client, a, false).await,
        Command::Start(a) => start(&client, a).await,
        Command::Stop(a) => {
            each(&a.containers, |c| {
                client.post_path(format!("/husk/v1/containers/{c}/stop{}", t_query(a.time)))
            })
            .await
        }
        Command::Restart(a) => {
            each(&a.containers, |c| {
                client.post_path(format!(
                    "/husk/v1/containers/{c}/restart{}",
                    t_query(a.time)
                ))
            })
            .await
        }
        Command::Kill(a) => {
            units::parse_signal(&a.signal)?;
            each(&a.containers, |c| {
                client.post_path(format!(
                    "/husk/v1/containers/{c}/kill?signal={}",
                    encode(&a.signal)
                ))
            })
            .await
        }
        Command::Pause(a) => {
            each(&a.containers, |c| {
                client.post_path(format!("/husk/v1/containers/{c}/pause"))
            })
            .await
        }
        Command::Unpause(a) => {
            each(&a.containers, |c| {
                client.post_path(format!("/husk/v1/containers/{c}/unpause"))
            })
            .await
        }
        Command::Rm(a) => {
            let client = &client;
            each(&a.containers, |c| async move {
                client
                    .call(
                        Method::DELETE,
                        &format!(
                            "/husk/v1/containers/{c}?force={}&volumes={}",
                            a.force, a.volumes
                        ),
                        None::<&()>,
                    )
                    .await
                    .map(|_| ())
            })
            .await
        }
        Command::Wait(a) => {
            for c in &a.containers {
                let r: WaitResult = client
                    .json(
                        Method::POST,
                        &format!("/husk/v1/containers/{c}/wait"),
                        None::<&()>,
                    )
                    .await?;
                println!("{}", r.status_code);
            }
            Ok(0)
        }
        Command::Logs(a) => logs(&client, a).await,
        Command::Attach(a) => attach(&client, a).await,
        Command::Update(a) => update(&client, a).await,
        Command::Events(a) => events(&client, a).await,
        Command::Port(a) => port(&client, a).await,
        Command::Exec(a) => exec(&client, a).await,
        Command::Ps(a) => ps(&client, a).await,
        Command::Inspect(a) => inspect(&client, a).await,
        Command::Top(a) => top(&client, a).await,
        Command::Stats(a) => stats(&client, a).await,
        Command::Rename(a) => {
            client
                .post(&format!(
                    "/husk/v1/containers/{}/rename?name={}",
                    a.container,
                    encode(&a.new_name)
                ))
                .await?;
            Ok(0)
        }
        Command::Cp(a) => cp::cp(&client, a).await,
        Command::Volume(cmd) => volumes::volume(&client, cmd).await,
        Command::Sandbox(cmd) => sandbox(&client, cmd).await,
        Command::Image(cmd) => image(&client, cmd).await,
        Command::Images(a) => image(&client, ImageCommand::Ls(a)).await,
        Command::Network(cmd) => network(&client, cmd).await,
        Command::Capsule(cmd) => capsule::run(&client, cmd).await,
        Command::Project(cmd) => identity::project(&client, cmd).await,
        Command::User(cmd) => identity::user(&client, cmd).await,
        Command::Load(a) => image(&client, ImageCommand::Load(a)).await,
        Command::Rmi(a) => image(&client, ImageCommand::Rm(a)).await,
        Command::Tag(a) => image(&client, ImageCommand::Tag(a)).await,
        Command::Pull(a) => images::pull(&client, a).await,
        Command::Push(a) => images::push(&client, a).await,
        Command::Login(a) => images::login(&client, a).await,
        Command::Logout(a) => images::logout(&client, a).await,
        Command::Save(a) => images::save(&client, a).await,
        Command::Commit(a) => images::commit(&client, a).await,
        Command::Container(ContainerCommand::Prune(a)) => container_prune(&client, a).await,
        // main turns every other `container X` into X.
        Command::Container(c) => Box::pin(run(host, c.into_command())).await,
        Command::System(cmd) => images::system(&client, cmd).await,
        Command::Info(a) => info(&client, a).await,
        Command::Version => {
            println!("Client: husk {}", env!("CARGO_PKG_VERSION"));
            match client.get::<serde_json::Value>("/husk/v1/version").await {
                Ok(v) => println!("Server: husk {}", v["Version"].as_str().unwrap_or("?")),
                Err(e) => println!("Server: not reachable ({e})"),
            }
            Ok(0)
        }
        Command::Daemon(_)
        | Command::Shim { .. }
        | Command::SandboxPause
        | Command::ContainerFs { .. }
        | Command::Vm(_)
        | Command::Completion(_)
        | Command::Man(_) => {
            unreachable!("handled in main")
        }
    }
}

impl Client {
    async fn post_path(&self, path: String) -> Result<()> {
        self.post(&path).await
    }
}

fn t_query(t: Option<u32>) -> String {
    t.map(|t| format!("?t={t}")).unwrap_or_default()
}

/// Runs `f` for every name, printing each name that succeeded and each error; fails if any failed.
pub(crate) async fn each<F, Fut>(names: &[String], f: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut failed = false;
    for name in names {
        match f(name.clone()).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub(crate) fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !l.is_empty() => Ok((l.clone(), String::new())),
            _ => Err(anyhow!("invalid label {l:?}: use KEY=VALUE")),
        })
        .collect()
}

/// `-e KEY` takes KEY from this shell (skipped if unset), as Docker does; `--env-file` lines likewise.
fn resolve_env(env: &[String], files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |e: &str| {
        if e.contains('=') {
            out.push(e.to_string());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    };
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("read env file {}", f.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            add(line);
        }
    }
    for e in env {
        add(e);
    }
    Ok(out)
}

fn network_config(
    network: Option<String>,
    publish: &[String],
    dns: &[String],
    dns_search: &[String],
    add_host: &[String],
) -> Result<NetworkConfig> {
    Ok(NetworkConfig {
        mode: network.unwrap_or_default(),
        ports: publish
            .iter()
            .map(|p| PortMapping::parse(p))
            .collect::<husk_core::Result<_>>()?,
        dns: dns.to_vec(),
        dns_search: dns_search.to_vec(),
        dns_options: Vec::new(),
        extra_hosts: add_host.to_vec(),
    })
}

fn read_security_opts(opts: &[String]) -> Result<Vec<String>> {
    // A seccomp profile given as a file is read here and sent as JSON.
    opts.iter()
        .map(|o| match o.split_once(['=', ':']) {
            Some(("seccomp", v)) if v != "unconfined" && !v.trim_start().starts_with('{') => {
                let text = std::fs::read_to_string(v)
                    .with_context(|| format!("read seccomp profile {v}"))?;
                Ok(format!("seccomp={text}"))
            }
            _ => Ok(o.clone()),
        })
        .collect()
}

fn create_request(a: &RunArgs) -> Result<ContainerCreate> {
    Ok(ContainerCreate {
        name: a.name.clone(),
        image: a.image.clone(),
        command: if a.command.is_empty() {
            None
        } else {
            Some(a.command.clone())
        },
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        env: resolve_env(&a.env, &a.env_file)?,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        stdin: a.interactive,
        resources: Resources {
            shm_size_bytes: a
                .shm_size
                .as_deref()
                .map(|s| units::parse_memory("shm_size", s))
                .transpose()?,
            oom_score_adj: a.oom_score_adj,
            ..with_cpu_placement(
                limits(a.memory.as_deref(), a.cpus.as_deref(), a.pids_limit)?,
                &a.cpu_placement,
            )
        },
        devices: a
            .devices
            .iter()
            .map(|d| husk_core::DeviceMapping::parse(d))
            .collect::<husk_core::Result<_>>()?,
        log_opts: a
            .log_opts
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(anyhow!("invalid --log-opt {o:?}: use KEY=VALUE")),
            })
            .collect::<Result<_>>()?,
        restart_policy: a
            .restart
            .as_deref()
            .map(RestartPolicy::parse)
            .transpose()?
            .unwrap_or_default(),
        auto_remove: a.rm,
        mode: a.mode.as_deref().map(str::parse).transpose()?,
        sandbox: a.sandbox.clone(),
        driver: a.driver.clone(),
        share_pid: a.share_pid,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        security_opt: read_security_opts(&a.security_opt)?,
        read_only: a.read_only,
        labels: parse_labels(&a.labels)?,
        mounts: mounts(a)?,
        network: network_config(
            a.network.clone(),
            &a.publish,
            &a.dns,
            &a.dns_search,
            &a.add_host,
        )?,
        publish_all: a.publish_all,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        pull: a.pull.parse()?,
        init: a.init,
        ulimits: a
            .ulimits
            .iter()
            .map(|u| husk_core::Ulimit::parse(u))
            .collect::<husk_core::Result<_>>()?,
        group_add: a.group_add.clone(),
        healthcheck: healthcheck(a)?,
        ..Default::default()
    })
}

/// `-v`, `--mount` and `--tmpfs`, in that order; a relative bind source is made absolute here (it means a path
/// of this shell's).
fn mounts(a: &RunArgs) -> Result<Vec<MountConfig>> {
    let mut out = Vec::new();
    for v in &a.volumes {
        out.push(MountConfig::parse_volume_flag(v)?);
    }
    for m in &a.mounts {
        out.push(MountConfig::parse_mount_flag(m)?);
    }
    for t in &a.tmpfs {
        out.push(MountConfig::parse_tmpfs_flag(t)?);
    }
    for m in out.iter_mut().filter(|m| m.kind == "bind") {
        if m.source.starts_with('~') {
            let home =
                std::env::var("HOME").context("expand ~ in a bind source: HOME is not set")?;
            m.source = m.source.replacen('~', &home, 1);
        }
        if !m.source.starts_with('/') {
            let cwd = std::env::current_dir().context("find the current directory")?;
            m.source = cwd.join(&m.source).display().to_string();
        }
    }
    Ok(out)
}

/// The `--health-*` flags (`None` when none is given: the image's check applies).
fn healthcheck(a: &RunArgs) -> Result<Option<HealthcheckRequest>> {
    if a.no_healthcheck {
        if a.health_cmd.is_some() {
            bail!("conflicting options: --no-healthcheck and --health-cmd");
        }
        return Ok(Some(HealthcheckRequest {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    let r = HealthcheckRequest {
        test: a
            .health_cmd
            .as_ref()
            .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
            .unwrap_or_default(),
        interval: a.health_interval.clone(),
        timeout: a.health_timeout.clone(),
        start_period: a.health_start_period.clone(),
        start_interval: a.health_start_interval.clone(),
        retries: a.health_retries,
        on_failure: a.health_on_failure.clone(),
    };
    Ok(if r == HealthcheckRequest::default() {
        None
    } else {
        Some(r)
    })
}

async fn run_container(client: &Client, a: RunArgs, start: bool) -> Result<i32> {
    if a.rm && a.restart.as_deref().is_some_and(|r| r != "no") {
        bail!("conflicting options: --rm and --restart cannot be used together");
    }
    let mut req = create_request(&a)?;
    if !start {
        req.pull = images::prepare_run_image(client, &a.image, &a.pull).await?;
        let view: ContainerView = client
            .json(Method::POST, "/husk/v1/containers", Some(&req))
            .await?;
        println!("{}", view.id);
        return Ok(0);
    }
    // One request creates, attaches and starts. With the `missing` policy it first goes without pulling, and
    // pulls (with progress on the terminal) only when the daemon says the image is not there.
    let policy: PullPolicy = a
        .pull
        .parse()
        .map_err(|e: husk_core::Error| anyhow!(e.message))?;
    req.pull = match policy {
        PullPolicy::Always => images::prepare_run_image(client, &a.image, &a.pull).await?,
        _ => PullPolicy::Never,
    };
    let path = format!(
        "/husk/v1/containers/run?detach={}&stdin={}",
        a.detach, a.interactive
    );
    let mut pulled = false;
    loop {
        let attempt = if a.detach {
            client
                .json::<ContainerView>(Method::POST, &path, Some(&req))
                .await
                .map(|view| {
                    println!("{}", view.id);
                    None
                })
        } else {
            client.upgrade_with_id(&path, Some(&req)).await.map(Some)
        };
        match attempt {
            Ok(None) => return Ok(0),
            Ok(Some((stream, id))) => {
                let code = stdio::pump(stream, a.interactive, a.tty).await?;
                if a.rm {
                    // The daemon removes it; wait until it has, so the caller sees it gone (a not-found
                    // answer: it is gone already).
                    let _ = client
                        .status(
                            Method::POST,
                            &format!("/husk/v1/containers/{id}/wait?condition=removed"),
                        )
                        .await;
                }
                return Ok(code);
            }
            Err(e) if policy == PullPolicy::Missing && !pulled && images::is_missing_image(&e) => {
                eprintln!("Unable to find image '{}' locally", a.image);
                images::pull_for_run(client, &a.image).await?;
                pulled = true;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn start(client: &Client, a: StartArgs) -> Result<i32> {
    if !a.attach && !a.interactive {
        return each(&a.containers, |c| {
            client.post_path(format!("/husk/v1/containers/{c}/start"))
        })
        .await;
    }
    if a.containers.len() != 1 {
        bail!("you cannot attach to more than one container at a time");
    }
    let c = &a.containers[0];
    let view: ContainerView = client.get(&format!("/husk/v1/containers/{c}")).await?;
    let stream = client
        .upgrade(
            &format!(
                "/husk/v1/containers/{}/attach?stdin={}",
                view.id, a.interactive
            ),
            None::<&()>,
        )
        .await?;
    client
        .post(&format!("/husk/v1/containers/{}/start", view.id))
        .await?;
    stdio::pump(stream, a.interactive, view.config.tty).await
}

async fn container_prune(client: &Client, a: ContainerPruneArgs) -> Result<i32> {
    if !a.force && !confirm_prune(&["all stopped containers"])? {
        return Ok(0);
    }
    let report = prune_containers(client).await?;
    println!(
        "Total reclaimed space: {}",
        human_size(report.space_reclaimed, false)
    );
    Ok(0)
}

/// Prunes containers and prints what went (not the total).
async fn prune_containers(client: &Client) -> Result<husk_api_types::ContainerPruneReport> {
    let report: husk_api_types::ContainerPruneReport = client
        .json(Method::POST, "/husk/v1/containers/prune", None::<&()>)
        .await?;
    if !report.containers_deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &report.containers_deleted {
            println!("{id}");
        }
        println!();
    }
    Ok(report)
}

/// Asks before a prune removes each of `what`, as Docker does: the answer is a line of stdin (`echo y | husk
/// system prune` works); anything but yes, or no line at all, means no.
fn confirm_prune(what: &[&str]) -> Result<bool> {
    use std::io::BufRead;
    println!("WARNING! This will remove:");
    for w in what {
        println!("  - {w}");
    }
    print!("Are you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

async fn events(client: &Client, a: EventsArgs) -> Result<i32> {
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &a.filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid filter {f:?}: use KEY=VALUE"))?;
        if !["container", "event", "image"].contains(&k) {
            bail!("invalid filter {k:?}: use container, event or image");
        }
        filters
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    let template = match &a.format {
        OutputFormat::Template { text, .. } => {
            Some(template::compile(text).map_err(|e| anyhow!("bad template: {e}"))?)
        }
        _ => None,
    };
    let mut stdout = std::io::stdout();
    client
        .lines("/husk/v1/events", |line| {
            let e: husk_api_types::EventView = serde_json::from_slice(line)?;
            if !event_matches(&e, &filters) {
                return Ok(());
            }
            match (&a.format, &template) {
                (OutputFormat::Json, _) => {
                    stdout.write_all(line)?;
                    stdout.write_all(b"\n")?;
                }
                (_, Some(t)) => {
                    writeln!(stdout, "{}", template::run(t, &serde_json::to_value(&e)?)?)?
                }
                _ => {
                    let time = chrono::DateTime::from_timestamp(
                        e.time_nano.div_euclid(1_000_000_000),
                        e.time_nano.rem_euclid(1_000_000_000) as u32,
                    )
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                    .unwrap_or_default();
                    let attributes: Vec<String> = e
                        .actor
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    writeln!(
                        stdout,
                        "{time} {} {} {} ({})",
                        e.kind,
                        e.action,
                        e.actor.id,
                        attributes.join(", ")
                    )?;
                }
            }
            stdout.flush()?;
            Ok(())
        })
        .await?;
    Ok(0)
}

/// Whether event `e` passes `filters` (every key must match one of its values).
fn event_matches(e: &husk_api_types::EventView, filters: &BTreeMap<String, Vec<String>>) -> bool {
    let attribute = |k: &str| {
        e.actor
            .attributes
            .get(k)
            .map(String::as_str)
            .unwrap_or_default()
    };
    filters.iter().all(|(k, values)| {
        values.iter().any(|v| match k.as_str() {
            "container" => e.actor.id.starts_with(v.as_str()) || attribute("name") == v,
            "event" => e.action == *v || e.action.split(':').next() == Some(v.as_str()),
            "image" => attribute("image") == v || husk_image::familiar(v) == attribute("image"),
            _ => false,
        })
    })
}

/// Limits from the command line's `--memory`, `--cpus` and `--pids-limit`.
fn limits(memory: Option<&str>, cpus: Option<&str>, pids_limit: Option<i64>) -> Result<Resources> {
    Ok(Resources {
        memory_bytes: memory
            .map(|m| units::parse_memory("memory", m))
            .transpose()?,
        nano_cpus: cpus.map(units::parse_cpus).transpose()?,
        pids_limit,
        ..Default::default()
    })
}

/// `limits` with the command line's `--cpu-shares`, `--cpuset-cpus` and `--cpuset-mems` (the daemon checks them).
fn with_cpu_placement(limits: Resources, a: &args::CpuPlacementArgs) -> Resources {
    Resources {
        cpu_shares: a.cpu_shares,
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        ..limits
    }
}

async fn update(client: &Client, a: UpdateArgs) -> Result<i32> {
    let req = husk_api_types::ContainerUpdate {
        resources: with_cpu_placement(
            limits(a.memory.as_deref(), a.cpus.as_deref(), a.pids_limit)?,
            &a.cpu_placement,
        ),
        restart_policy: a.restart.as_deref().map(RestartPolicy::parse).transpose()?,
    };
    each(&a.containers, |c| {
        let req = req.clone();
        async move {
            client
                .json::<ContainerView>(
                    Method::POST,
                    &format!("/husk/v1/containers/{c}/update"),
                    Some(&req),
                )
                .await
                .map(|_| ())
        }
    })
    .await
}

async fn attach(client: &Client, a: AttachArgs) -> Result<i32> {
    let view: ContainerView = client
        .get(&format!("/husk/v1/containers/{}", a.container))
        .await?;
    if !view.state.running {
        bail!("you cannot attach to a stopped container, start it first");
    }
    let stdin = view.config.open_stdin && !a.no_stdin;
    let stream = client
        .upgrade(
            &format!("/husk/v1/containers/{}/attach?stdin={stdin}", view.id),
            None::<&()>,
        )
        .await?;
    stdio::pump(stream, stdin, view.config.tty).await
}

async fn port(client: &Client, a: PortArgs) -> Result<i32> {
    let view: ContainerView = client
        .get(&format!("/husk/v1/containers/{}", a.container))
        .await?;
    let wanted = match &a.port {
        None => None,
        Some(p) => {
            let (number, protocol) = p.split_once('/').unwrap_or((p, "tcp"));
            let number: u16 = number
                .parse()
                .map_err(|_| anyhow!("invalid port {p:?}: use PORT or PORT/PROTOCOL"))?;
            Some((number, protocol.to_string()))
        }
    };
    let mut found = false;
    for m in &view.host_config.port_bindings {
        let host = format!(
            "{}:{}",
            if m.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &m.host_ip
            },
            m.host_port
        );
        match &wanted {
            None => println!("{}/{} -> {host}", m.container_port, m.protocol),
            Some((number, protocol)) if *number == m.container_port && *protocol == m.protocol => {
                println!("{host}")
            }
            Some(_) => continue,
        }
        found = true;
    }
    match (&a.port, found) {
        (Some(p), false) => bail!("no public port '{p}' published for {}", view.name),
        _ => Ok(0),
    }
}

async fn exec(client: &Client, a: ExecArgs) -> Result<i32> {
    let req = ExecCreate {
        command: a.command.clone(),
        env: resolve_env(&a.env, &[])?,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        tty: a.tty,
        stdin: a.interactive,
    };
    let stream = client
        .upgrade(
            &format!("/husk/v1/containers/{}/exec", a.container),
            Some(&req),
        )
        .await?;
    if a.detach {
        return Ok(0);
    }
    stdio::pump(stream, a.interactive, a.tty).await
}

async fn logs(client: &Client, a: LogsArgs) -> Result<i32> {
    let mut q = vec![format!("follow={}", a.follow)];
    if let Some(t) = &a.tail {
        q.push(format!("tail={}", encode(t)));
    }
    if let Some(s) = &a.since {
        q.push(format!("since={}", encode(s)));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", encode(u)));
    }
    let path = format!("/husk/v1/containers/{}/logs?{}", a.container, q.join("&"));
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    client
        .lines(&path, |line| {
            let v: serde_json::Value = serde_json::from_slice(line)?;
            if let Some(e) = v.get("error") {
                bail!("{}", e["message"].as_str().unwrap_or("log stream failed"));
            }
            let text = v["text"].as_str().unwrap_or_default();
            let prefix = if a.timestamps {
                format!("{} ", v["time"].as_str().unwrap_or_default())
            } else {
                String::new()
            };
            if v["stream"] == "stderr" {
                let mut e = stderr.lock();
                write!(e, "{prefix}{text}")?;
                e.flush()?;
            } else {
                let mut o = stdout.lock();
                write!(o, "{prefix}{text}")?;
                o.flush()?;
            }
            Ok(())
        })
        .await?;
    Ok(0)
}

fn matches_filters(c: &ContainerView, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.config.labels.get(lk).is_some_and(|x| x == lv),
            None => c.config.labels.contains_key(v),
        },
        "name" => c.name.contains(v.as_str()),
        "id" => c.id.starts_with(v.as_str()),
        "status" => c.state.status.as_str() == v,
        "sandbox" => c
            .sandbox_id
            .as_deref()
            .is_some_and(|s| s.starts_with(v.as_str())),
        "ancestor" => c.image.contains(v.as_str()) || c.image_id.contains(v.as_str()),
        _ => false,
    })
}

async fn ps(client: &Client, a: PsArgs) -> Result<i32> {
    let filters: Vec<(String, String)> = a
        .filter
        .iter()
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid filter {f:?}: use KEY=VALUE"))?;
            if !["label", "name", "id", "status", "sandbox", "ancestor"].contains(&k) {
                bail!("invalid filter {k:?}: use label, name, id, status, sandbox or ancestor");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<_>>()?;
    let all = a.all || filters.iter().any(|(k, _)| k == "status");
    let mut list: Vec<ContainerView> = client
        .get(&format!("/husk/v1/containers?all={all}"))
        .await?;
    list.retain(|c| matches_filters(c, &filters));
    if a.quiet {
        for c in &list {
            println!(
                "{}",
                if a.no_trunc {
                    c.id.clone()
                } else {
                    short(&c.id)
                }
            );
        }
        return Ok(0);
    }
    match &a.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        OutputFormat::Template { text, table } => {
            let items: Vec<serde_json::Value> =
                list.iter().map(|c| ps_fields(c, a.no_trunc)).collect();
            template::print_items(text, *table, Some(ps_headers()), &items)?;
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let f = ps_fields(c, a.no_trunc);
                    [
                        "ID",
                        "Image",
                        "Command",
                        "RunningFor",
                        "Status",
                        "Ports",
                        "Mode",
                        "Names",
                    ]
                    .iter()
                    .map(|k| f[*k].as_str().unwrap_or_default().to_string())
                    .collect()
                })
                .collect();
            print_table(
                &[
                    "CONTAINER ID",
                    "IMAGE",
                    "COMMAND",
                    "CREATED",
                    "STATUS",
                    "PORTS",
                    "MODE",
                    "NAMES",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}

/// A container as `ps` shows it: Docker's `ps --format` fields (`.ID`, `.Names`, `.Status` ...), husk's
/// `.Mode` and `.Sandbox`; every value a string.
fn ps_fields(c: &ContainerView, no_trunc: bool) -> serde_json::Value {
    let mut cmd = c.config.cmd.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    let id = |id: &str| if no_trunc { id.to_string() } else { short(id) };
    let join = |items: Vec<String>| items.join(",");
    serde_json::json!({
        "ID": id(&c.id),
        "Image": husk_image::familiar(&c.image),
        "Command": format!("\"{cmd}\""),
        "CreatedAt": chrono::DateTime::parse_from_rfc3339(&c.created)
            .map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S %z UTC").to_string())
            .unwrap_or_default(),
        "RunningFor": format!("{} ago", format::human_duration(format::seconds_since(&c.created))),
        "Ports": join(c.host_config.port_bindings.iter().map(|p| p.to_string()).collect()),
        "State": c.state.status.to_string(),
        "Status": status_text(c),
        "Names": c.name,
        "Labels": join(c.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        "Mounts": join(c.mounts.iter().map(|m| if m.name.is_empty() { m.source.clone() } else { m.name.clone() }).collect()),
        "Networks": c.host_config.network_mode,
        "Mode": c.mode.to_string(),
        "Sandbox": c.sandbox_id.as_deref().map(id).unwrap_or_default(),
    })
}

/// An image as `images` shows it, one item per name: Docker's `images --format` fields (`.Repository`, `.Tag`,
/// `.ID`, `.Digest`, `.CreatedSince`, `.CreatedAt`, `.Size`); every value a string.
fn image_fields(i: &husk_api_types::ImageView) -> Vec<serde_json::Value> {
    let created = i.created.as_deref().unwrap_or_default();
    let names: Vec<String> = if i.repo_tags.is_empty() {
        vec!["<none>:<none>".into()]
    } else {
        i.repo_tags.clone()
    };
    names
        .iter()
        .map(|n| {
            let familiar = husk_image::familiar(n);
            let (repo, tag) = match familiar.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
                _ => (familiar.clone(), "<none>".into()),
            };
            serde_json::json!({
                "ID": short(&i.id),
                "Repository": repo,
                "Tag": tag,
                "Digest": i.repo_digests.first().and_then(|d| d.rsplit_once('@')).map(|(_, d)| d).unwrap_or("<none>"),
                "CreatedSince": if created.is_empty() { String::new() } else {
                    format!("{} ago", format::human_duration(format::seconds_since(created)))
                },
                "CreatedAt": created,
                "Size": human_size(i.size, false),
            })
        })
        .collect()
}

/// `ps`'s column names for a `table` template.
fn ps_headers() -> serde_json::Value {
    serde_json::json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Names": "NAMES",
        "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "Mode": "MODE", "Sandbox": "SANDBOX",
    })
}

async fn inspect(client: &Client, a: InspectArgs) -> Result<i32> {
    let mut out = Vec::new();
    let mut failed = false;
    for name in &a.names {
        let kinds: Vec<&str> = match a.kind.as_deref() {
            Some(k @ ("container" | "sandbox" | "image" | "volume")) => vec![k],
            Some(other) => {
                bail!("unknown --type {other:?}: use container, sandbox, image or volume")
            }
            None => vec!["container", "sandbox", "image", "volume"],
        };
        let mut found = None;
        for kind in kinds {
            let path = match kind {
                "container" => format!("/husk/v1/containers/{name}"),
                "sandbox" => format!("/husk/v1/sandboxes/{name}"),
                "volume" => format!("/husk/v1/volumes/{name}"),
                _ => format!("/husk/v1/images/inspect?name={}", encode(name)),
            };
            if let Ok(v) = client.get::<serde_json::Value>(&path).await {
                found = Some(v);
                break;
            }
        }
        match found {
            Some(v) => out.push(v),
            None => {
                eprintln!("Error: no such object: {name}");
                failed = true;
            }
        }
    }
    match &a.format {
        Some(OutputFormat::Template { text, .. }) => {
            let template = template::compile(text).map_err(|e| anyhow!("bad template: {e}"))?;
            for v in &out {
                println!("{}", template::run(&template, v)?);
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(if failed { 1 } else { 0 })
}

async fn top(client: &Client, a: TopArgs) -> Result<i32> {
    let mut path = format!("/husk/v1/containers/{}/top", a.container);
    if !a.ps_args.is_empty() {
        // Words joined by spaces, as Docker sends them (the engine splits them on spaces).
        path.push_str(&format!("?ps_args={}", encode(&a.ps_args.join(" "))));
    }
    let t: husk_core::Top = client.get(&path).await?;
    let headers: Vec<&str> = t.titles.iter().map(String::as_str).collect();
    print_table(&headers, &t.processes);
    Ok(0)
}

async fn stats(client: &Client, a: StatsArgs) -> Result<i32> {
    // One request for all of them: the daemon reads the containers side by side.
    let path = if a.containers.is_empty() {
        "/husk/v1/stats".to_string()
    } else {
        format!("/husk/v1/stats?ids={}", encode(&a.containers.join(",")))
    };
    let mut before: Vec<ContainerStats> = client.get(&path).await?;
    let host_memory = host_memory();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now: Vec<ContainerStats> = client.get(&path).await?;
        let earlier: BTreeMap<&str, &husk_core::Stats> =
            before.iter().map(|c| (c.id.as_str(), &c.stats)).collect();
        let mut rows = Vec::new();
        let mut json = Vec::new();
        for c in &now {
            let s = &c.stats;
            // A container first seen in this reading shows no CPU use yet, as in Docker.
            let cpu = match earlier.get(c.id.as_str()) {
                Some(before) => {
                    let cpu_delta = s.cpu_usage_ns.saturating_sub(before.cpu_usage_ns) as f64;
                    let sys_delta = s.system_cpu_ns.saturating_sub(before.system_cpu_ns) as f64;
                    if sys_delta > 0.0 {
                        cpu_delta / sys_delta * s.online_cpus as f64 * 100.0
                    } else {
                        0.0
                    }
                }
                None => 0.0,
            };
            let limit = if s.memory_limit_bytes > 0 {
                s.memory_limit_bytes
            } else {
                host_memory
            };
            let mem_pct = if limit > 0 {
                s.memory_usage_bytes as f64 / limit as f64 * 100.0
            } else {
                0.0
            };
            json.push(serde_json::json!({"id": c.id, "name": c.name, "cpu_percent": cpu, "memory_percent": mem_pct, "stats": s}));
            rows.push(vec![
                short(&c.id),
                c.name.clone(),
                format!("{cpu:.2}%"),
                format!(
                    "{} / {}",
                    human_size(s.memory_usage_bytes, true),
                    human_size(limit, true)
                ),
                format!("{mem_pct:.2}%"),
                format!(
                    "{} / {}",
                    human_size(s.net_rx_bytes, false),
                    human_size(s.net_tx_bytes, false)
                ),
                format!(
                    "{} / {}",
                    human_size(s.block_read_bytes, false),
                    human_size(s.block_write_bytes, false)
                ),
                s.pids.to_string(),
            ]);
        }
        if a.format == template::TableOrJson::Json {
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            print_table(
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ],
                &rows,
            );
        }
        if a.no_stream {
            return Ok(0);
        }
        before = now;
    }
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

async fn sandbox(client: &Client, cmd: SandboxCommand) -> Result<i32> {
    match cmd {
        SandboxCommand::Create(a) => {
            let req = SandboxCreate {
                name: a.name,
                hostname: a.hostname,
                share_pid: a.share_pid,
                driver: a.driver,
                network: network_config(a.network, &a.publish, &a.dns, &[], &a.add_host)?,
                resources: Resources {
                    shm_size_bytes: a
                        .shm_size
                        .as_deref()
                        .map(|s| units::parse_memory("shm_size", s))
                        .transpose()?,
                    ..limits(a.memory.as_deref(), a.cpus.as_deref(), None)?
                },
                labels: parse_labels(&a.labels)?,
                volumes: a.volumes,
                ..Default::default()
            };
            let sb: SandboxView = client
                .json(Method::POST, "/husk/v1/sandboxes", Some(&req))
                .await?;
            println!("{}", sb.id);
            Ok(0)
        }
        SandboxCommand::Ls(a) => {
            let list: Vec<SandboxView> = client.get("/husk/v1/sandboxes").await?;
            if a.quiet {
                for s in &list {
                    println!("{}", short(&s.id));
                }
            } else if let OutputFormat::Template { text, table } = &a.format {
                template::print_items(text, *table, None, &list)?;
            } else if a.format == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            short(&s.id),
                            s.name.clone(),
                            s.driver.clone(),
                            s.status.clone(),
                            s.containers.len().to_string(),
                            if s.share_pid {
                                "yes".into()
                            } else {
                                "no".into()
                            },
                            s.network_settings
                                .as_ref()
                                .map(|n| n.addresses.join(","))
                                .unwrap_or_default(),
                            format!(
                                "{} ago",
                                format::human_duration(format::seconds_since(&s.created))
                            ),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "SANDBOX ID",
                        "NAME",
                        "DRIVER",
                        "STATUS",
                        "CONTAINERS",
                        "SHARED PID",
                        "IP",
                        "CREATED",
                    ],
                    &rows,
                );
            }
            Ok(0)
        }
        SandboxCommand::Inspect(a) => {
            let mut out = Vec::new();
            for s in &a.sandboxes {
                out.push(
                    client
                        .get::<serde_json::Value>(&format!("/husk/v1/sandboxes/{s}"))
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        SandboxCommand::Rm(a) => {
            each(&a.sandboxes, |s| async move {
                client
                    .call(
                        Method::DELETE,
                        &format!("/husk/v1/sandboxes/{s}?force={}", a.force),
                        None::<&()>,
                    )
                    .await
                    .map(|_| ())
            })
            .await
        }
    }
}

async fn image(client: &Client, cmd: ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Load(a) => {
            let loaded = match &a.input {
                Some(path) => {
                    let file = tokio::fs::File::open(path)
                        .await
                        .with_context(|| format!("open {}", path.display()))?;
                    client.upload("/husk/v1/images/load", file).await?
                }
                None => {
                    client
                        .upload("/husk/v1/images/load", tokio::io::stdin())
                        .await?
                }
            };
            let loaded: Vec<husk_api_types::LoadedImage> = serde_json::from_slice(&loaded)?;
            for img in loaded {
                if a.quiet || img.names.is_empty() {
                    println!("Loaded image ID: {}", img.id);
                } else {
                    for n in &img.names {
                        println!("Loaded image: {}", husk_image::familiar(n));
                    }
                }
            }
            Ok(0)
        }
        ImageCommand::Ls(a) => {
            let list: Vec<husk_api_types::ImageView> = client.get("/husk/v1/images").await?;
            if a.quiet {
                for i in &list {
                    println!("{}", short(&i.id));
                }
            } else if a.format == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                // One row per name, as Docker lists them.
                let items: Vec<serde_json::Value> = list.iter().flat_map(image_fields).collect();
                match &a.format {
                    OutputFormat::Template { text, table } => {
                        let headers = serde_json::json!({
                            "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST",
                            "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                        });
                        template::print_items(text, *table, Some(headers), &items)?;
                    }
                    _ => {
                        let rows: Vec<Vec<String>> = items
                            .iter()
                            .map(|f| {
                                ["Repository", "Tag", "ID", "CreatedSince", "Size"]
                                    .iter()
                                    .map(|k| f[*k].as_str().unwrap_or_default().to_string())
                                    .collect()
                            })
                            .collect();
                        print_table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows);
                    }
                }
            }
            Ok(0)
        }
        ImageCommand::Inspect(a) => {
            let mut out = Vec::new();
            for i in &a.images {
                out.push(
                    client
                        .get::<serde_json::Value>(&format!(
                            "/husk/v1/images/inspect?name={}",
                            encode(i)
                        ))
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        ImageCommand::Rm(a) => {
            let mut failed = false;
            for i in &a.images {
                match client
                    .json::<Vec<husk_api_types::Removed>>(
                        Method::POST,
                        &format!(
                            "/husk/v1/images/remove?name={}&force={}",
                            encode(i),
                            a.force
                        ),
                        None::<&()>,
                    )
                    .await
                {
                    Ok(removed) => {
                        for r in removed {
                            match r {
                                husk_api_types::Removed::Untagged(n) => {
                                    println!("Untagged: {}", husk_image::familiar(&n))
                                }
                                husk_api_types::Removed::Deleted(id) => println!("Deleted: {id}"),
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("Error: {e:#}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        ImageCommand::Pull(a) => images::pull(client, a).await,
        ImageCommand::Push(a) => images::push(client, a).await,
        ImageCommand::Save(a) => images::save(client, a).await,
        ImageCommand::Prune(a) => images::prune(client, a).await,
        ImageCommand::Tag(a) => {
            client
                .post(&format!(
                    "/husk/v1/images/tag?source={}&target={}",
                    encode(&a.source),
                    encode(&a.target)
                ))
                .await?;
            Ok(0)
        }
    }
}

async fn network(client: &Client, cmd: NetworkCommand) -> Result<i32> {
    match cmd {
        NetworkCommand::Ls(a) => {
            let list: Vec<serde_json::Value> = client.get("/husk/v1/networks").await?;
            if a.quiet {
                for n in &list {
                    println!("{}", n["name"].as_str().unwrap_or_default());
                }
            } else if let OutputFormat::Template { text, table } = &a.format {
                template::print_items(text, *table, None, &list)?;
            } else if a.format == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let text = |v: &serde_json::Value| {
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                };
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|n| {
                        vec![
                            n["name"].as_str().unwrap_or_default().to_string(),
                            if n["default"] == true {
                                "yes".into()
                            } else {
                                String::new()
                            },
                            n["bridge"].as_str().unwrap_or_default().to_string(),
                            text(&n["subnets"]),
                            text(&n["plugins"]),
                            n["attached"]
                                .as_array()
                                .map(|a| a.len())
                                .unwrap_or(0)
                                .to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "NAME",
                        "DEFAULT",
                        "BRIDGE",
                        "SUBNET",
                        "PLUGINS",
                        "SANDBOXES",
                    ],
                    &rows,
                );
            }
            Ok(0)
        }
        NetworkCommand::Inspect(a) => {
            let mut out = Vec::new();
            for n in &a.networks {
                out.push(
                    client
                        .get::<serde_json::Value>(&format!("/husk/v1/networks/{n}"))
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(0)
        }
        NetworkCommand::Create(a) => {
            let body = serde_json::json!({"name": a.name, "subnet": a.subnet, "gateway": a.gateway, "bridge": a.bridge});
            let n: serde_json::Value = client
                .json(Method::POST, "/husk/v1/networks", Some(&body))
                .await?;
            println!("{}", n["name"].as_str().unwrap_or_default());
            Ok(0)
        }
        NetworkCommand::Rm(a) => {
            each(&a.networks, |n| async move {
                client
                    .call(
                        Method::DELETE,
                        &format!("/husk/v1/networks/{n}"),
                        None::<&()>,
                    )
                    .await
                    .map(|_| ())
            })
            .await
        }
    }
}

async fn info(client: &Client, a: InfoArgs) -> Result<i32> {
    let info: husk_api_types::Info = client.get("/husk/v1/info").await?;
    match &a.format {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&info)?);
            return Ok(0);
        }
        OutputFormat::Template { text, table } => {
            template::print_items(text, *table, None, std::slice::from_ref(&info))?;
            return Ok(0);
        }
        OutputFormat::Table => {}
    }
    println!("Server Version: {}", info.version);
    println!(
        "Containers: {} (running: {})",
        info.containers, info.containers_running
    );
    println!("Sandboxes: {}", info.sandboxes);
    println!("Images: {}", info.images);
    println!("Default Driver: {}", info.default_driver);
    println!("Default Mode: {}", info.default_mode);
    println!("Root Dir: {}", info.root);
    println!("Run Dir: {}", info.run_root);
    for d in &info.drivers {
        let modes: Vec<&str> = d.capabilities.modes().iter().map(|m| m.as_str()).collect();
        println!("Driver: {}", d.name);
        println!("  Modes: {}", modes.join(", "));
        for (k, v) in &d.details {
            println!("  {k}: {v}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn request(argv: &[&str]) -> Result<ContainerCreate> {
        let cli = args::Cli::try_parse_from(argv).expect("the arguments parse");
        match cli.command {
            args::Command::Run(a) | args::Command::Create(a) => create_request(&a),
            other => panic!("not run or create: {other:?}"),
        }
    }

    #[test]
    fn devices_and_oom_score_adj_reach_the_request() {
        let req = request(&[
            "husk",
            "create",
            "--device",
            "/dev/fuse:/dev/f:r",
            "--device",
            "/dev/null",
            "--oom-score-adj",
            "-500",
            "busybox",
        ])
        .unwrap();
        assert_eq!(req.resources.oom_score_adj, Some(-500));
        assert_eq!(req.devices.len(), 2);
        assert_eq!(
            (req.devices[0].path_in_container(), req.devices[0].access()),
            ("/dev/f", "r")
        );
        assert_eq!(req.devices[1].path_in_container(), "/dev/null");
        let e = request(&["husk", "run", "--device", "dev/fuse", "busybox"]).unwrap_err();
        assert!(e.to_string().contains("devices"), "{e}");
    }
}
