//! The client commands: each translates its flags into one or a few local-API calls and prints the answer.

pub mod args;
mod capsule;
mod cp;
mod create;
mod format;
mod identity;
mod image_commands;
mod images;
mod networks;
mod observe;
mod progress;
mod sandboxes;
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

use create::*;
use image_commands::image;
use networks::network;
use observe::*;
use sandboxes::sandbox;

/// Runs a client command; returns the process exit code.
pub async fn run(host: &str, command: Command) -> Result<i32> {
    let client = Client::new(host)?;
    match command {
        Command::Containers(ContainerCommand::Run(a)) => run_container(&client, a, true).await,
        Command::Containers(ContainerCommand::Create(a)) => run_container(&client, a, false).await,
        Command::Containers(ContainerCommand::Start(a)) => start(&client, a).await,
        Command::Containers(ContainerCommand::Stop(a)) => {
            each(&a.containers, |c| {
                client.post_path(format!("/husk/v1/containers/{c}/stop{}", t_query(a.time)))
            })
            .await
        }
        Command::Containers(ContainerCommand::Restart(a)) => {
            each(&a.containers, |c| {
                client.post_path(format!(
                    "/husk/v1/containers/{c}/restart{}",
                    t_query(a.time)
                ))
            })
            .await
        }
        Command::Containers(ContainerCommand::Kill(a)) => {
            units::parse_signal(&a.signal)?;
            each(&a.containers, |c| {
                client.post_path(format!(
                    "/husk/v1/containers/{c}/kill?signal={}",
                    encode(&a.signal)
                ))
            })
            .await
        }
        Command::Containers(ContainerCommand::Pause(a)) => {
            each(&a.containers, |c| {
                client.post_path(format!("/husk/v1/containers/{c}/pause"))
            })
            .await
        }
        Command::Containers(ContainerCommand::Unpause(a)) => {
            each(&a.containers, |c| {
                client.post_path(format!("/husk/v1/containers/{c}/unpause"))
            })
            .await
        }
        Command::Containers(ContainerCommand::Rm(a)) => {
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
        Command::Containers(ContainerCommand::Wait(a)) => {
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
        Command::Containers(ContainerCommand::Logs(a)) => logs(&client, a).await,
        Command::Containers(ContainerCommand::Attach(a)) => attach(&client, a).await,
        Command::Containers(ContainerCommand::Update(a)) => update(&client, a).await,
        Command::Events(a) => events(&client, a).await,
        Command::Containers(ContainerCommand::Port(a)) => port(&client, a).await,
        Command::Containers(ContainerCommand::Exec(a)) => exec(&client, a).await,
        Command::Containers(ContainerCommand::Ps(a)) => ps(&client, a).await,
        Command::Containers(ContainerCommand::Inspect(a)) => inspect(&client, a).await,
        Command::Containers(ContainerCommand::Top(a)) => top(&client, a).await,
        Command::Containers(ContainerCommand::Stats(a)) => stats(&client, a).await,
        Command::Containers(ContainerCommand::Rename(a)) => {
            client
                .post(&format!(
                    "/husk/v1/containers/{}/rename?name={}",
                    a.container,
                    encode(&a.new_name)
                ))
                .await?;
            Ok(0)
        }
        Command::Containers(ContainerCommand::Cp(a)) => cp::cp(&client, a).await,
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
        Command::Containers(ContainerCommand::Commit(a)) => images::commit(&client, a).await,
        Command::Container(ContainerSubcommand::Prune(a)) => container_prune(&client, a).await,
        // main turns every other `container X` into X.
        Command::Container(ContainerSubcommand::Verbs(c)) => {
            Box::pin(run(host, Command::Containers(c))).await
        }
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
            Some((number, protocol.to_ascii_lowercase()))
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
            Some((number, protocol))
                if *number == m.container_port && protocol == m.protocol.as_str() =>
            {
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
            args::Command::Containers(
                args::ContainerCommand::Run(a) | args::ContainerCommand::Create(a),
            ) => create_request(&a),
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
