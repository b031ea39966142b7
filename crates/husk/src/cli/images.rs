//! Image commands that talk to registries or move whole images: `pull`, `push`, `login`, `logout`, `save`,
//! `image prune`, `commit`, `system df`, and the pull that `run`/`create` do first.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use http::Method;
use husk_api_types::ImageView;
use husk_api_types::{CommitRequest, LoginRequest, SystemDf};
use husk_api_types::{PruneReport, PullPolicy, PulledImage, PushedImage};
use husk_core::ErrorKind;
use husk_image::familiar;
use serde::de::DeserializeOwned;

use super::args::{
    CommitArgs, ImagePruneArgs, ImageSaveArgs, LoginArgs, LogoutArgs, PullArgs, PushArgs,
    SystemCommand, SystemDfArgs, SystemPruneArgs,
};
use super::format::{human_size, print_table, short};
use super::progress::{Bars, Direction, Screen};
use crate::client::{Client, DaemonError, encode};

/// Follows a progress answer (JSON lines, then a result or error line), drawing on `bars` if any.
async fn follow<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    mut bars: Option<Bars>,
) -> Result<T> {
    let mut outcome: Option<Result<T>> = None;
    let streamed = client
        .stream_lines(Method::POST, path, |line| {
            let value: serde_json::Value =
                serde_json::from_slice(line).context("unexpected line from the daemon")?;
            match value["type"].as_str() {
                Some("result") => {
                    outcome = Some(
                        serde_json::from_value(value["result"].clone())
                            .context("unexpected result from the daemon"),
                    );
                }
                Some("error") => {
                    let e: husk_core::Error = serde_json::from_value(value["error"].clone())
                        .context("unexpected error from the daemon")?;
                    outcome = Some(Err(DaemonError(e).into()));
                }
                _ => {
                    if let (Some(bars), Ok(p)) = (bars.as_mut(), serde_json::from_value(value)) {
                        bars.event(&p);
                    }
                }
            }
            Ok(())
        })
        .await;
    if let Some(bars) = &bars {
        bars.finish();
    }
    streamed?;
    outcome.unwrap_or_else(|| Err(anyhow!("the daemon's answer ended without a result")))
}

/// Pulls through the daemon, with bars on `screen` when it is a terminal and `quiet` is off.
async fn pull_with_progress(
    client: &Client,
    reference: &str,
    platform: Option<&str>,
    quiet: bool,
    screen: Screen,
) -> Result<PulledImage> {
    let mut path = format!("/husk/v1/images/pull?reference={}", encode(reference));
    if let Some(p) = platform {
        path.push_str(&format!("&platform={}", encode(p)));
    }
    let bars = (!quiet && screen.is_terminal()).then(|| Bars::new(Direction::Pull, screen));
    follow(client, &path, bars).await
}

/// `husk pull`: progress bars on a terminal; with `-q` (or not on a terminal) no progress, and with `-q` only the
/// image's name at the end.
pub async fn pull(client: &Client, a: PullArgs) -> Result<i32> {
    let pulled = pull_with_progress(
        client,
        &a.reference,
        a.platform.as_deref(),
        a.quiet,
        Screen::Stdout,
    )
    .await?;
    if !a.quiet {
        println!("Digest: {}", pulled.digest);
        println!(
            "Status: Downloaded image for {}",
            familiar(&pulled.reference)
        );
    }
    println!("{}", pulled.reference);
    Ok(0)
}

/// What `run`/`create` do before creating: with `missing`, pull (with progress on stderr) when the image is not
/// here; with `always`, pull. Returns the policy to send with the create (the daemon enforces it too, so other
/// clients get the same behaviour without the progress).
pub async fn prepare_run_image(client: &Client, image: &str, policy: &str) -> Result<PullPolicy> {
    let policy: PullPolicy = policy
        .parse()
        .map_err(|e: husk_core::Error| anyhow!(e.message))?;
    let pull = match policy {
        PullPolicy::Never => false,
        PullPolicy::Always => true,
        PullPolicy::Missing => {
            let missing = !image_exists(client, image).await?;
            if missing {
                eprintln!("Unable to find image '{image}' locally");
            }
            missing
        }
    };
    if !pull {
        return Ok(policy);
    }
    pull_for_run(client, image).await?;
    Ok(PullPolicy::Missing)
}

/// Pulls `image` for `run`/`create`, with progress on stderr when it is a terminal.
pub async fn pull_for_run(client: &Client, image: &str) -> Result<()> {
    let pulled = pull_with_progress(client, image, None, false, Screen::Stderr).await?;
    eprintln!("Digest: {}", pulled.digest);
    eprintln!(
        "Status: Downloaded image for {}",
        familiar(&pulled.reference)
    );
    Ok(())
}

/// Whether the daemon refused because the image is not there (and may be pulled).
pub fn is_missing_image(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::client::DaemonError>()
        .is_some_and(|d| {
            d.0.kind == husk_core::ErrorKind::NotFound && d.0.field.as_deref() == Some("image")
        })
}

/// Whether the daemon has the image (a name it cannot parse counts as present: the create reports it).
async fn image_exists(client: &Client, image: &str) -> Result<bool> {
    let path = format!("/husk/v1/images/inspect?name={}", encode(image));
    match client.get::<serde_json::Value>(&path).await {
        Ok(_) => Ok(true),
        Err(e) => match e.downcast_ref::<DaemonError>() {
            Some(DaemonError(d)) if d.kind == ErrorKind::NotFound => Ok(false),
            Some(_) => Ok(true),
            None => Err(e),
        },
    }
}

/// `husk push`.
pub async fn push(client: &Client, a: PushArgs) -> Result<i32> {
    let path = format!("/husk/v1/images/push?name={}", encode(&a.name));
    let bars = (!a.quiet && Screen::Stdout.is_terminal()).then(|| {
        println!("The push refers to {}", a.name);
        Bars::new(Direction::Push, Screen::Stdout)
    });
    let pushed: PushedImage = follow(client, &path, bars).await?;
    let name = husk_image::ImageName::parse(&pushed.reference)?;
    if a.quiet {
        println!("{}@{}", name.name(), pushed.digest);
    } else {
        println!(
            "{}: digest: {} size: {}",
            name.tag().unwrap_or("latest"),
            pushed.digest,
            pushed.size
        );
    }
    Ok(0)
}

/// `husk login`: the daemon checks the credentials with the registry and stores them.
pub async fn login(client: &Client, a: LoginArgs) -> Result<i32> {
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin => bail!("give --username with --password-stdin"),
        None => prompt("Username: ")?,
    };
    let password = if a.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the password from stdin")?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        eprintln!(
            "WARNING! Using --password on the command line is insecure. Use --password-stdin."
        );
        p
    } else {
        prompt_password("Password: ")?
    };
    if password.is_empty() {
        bail!("no password given");
    }
    let req = LoginRequest {
        registry: a.registry,
        username,
        password,
    };
    client
        .call(Method::POST, "/husk/v1/auth/login", Some(&req))
        .await?;
    println!("Login Succeeded");
    Ok(0)
}

fn prompt(text: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("no user name given: use -u USER");
    }
    eprint!("{text}");
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read the user name")?;
    Ok(line.trim().to_string())
}

/// Reads a password from the terminal without echoing it.
fn prompt_password(text: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no password given: use -p PASSWORD, --password-stdin, or a terminal");
    }
    let saved = tcgetattr(&stdin).context("read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn off echo")?;
    eprint!("{text}");
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.context("read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// `husk logout`.
pub async fn logout(client: &Client, a: LogoutArgs) -> Result<i32> {
    let answer: serde_json::Value = client
        .json(
            Method::POST,
            &format!("/husk/v1/auth/logout?registry={}", encode(&a.registry)),
            None::<&()>,
        )
        .await?;
    if answer["Removed"] == true {
        println!("Removing login credentials for {}", a.registry);
    } else {
        println!("Not logged in to {}", a.registry);
    }
    Ok(0)
}

/// `husk save`: to `-o FILE` (written beside it and renamed when complete) or to stdout (not a terminal).
pub async fn save(client: &Client, a: ImageSaveArgs) -> Result<i32> {
    let body = serde_json::json!({"names": a.images});
    match &a.output {
        Some(path) => save_to_file(client, &body, path).await?,
        None => {
            if std::io::stdout().is_terminal() {
                bail!(
                    "refusing to write an image archive to a terminal: use -o FILE or redirect stdout"
                );
            }
            let mut out = tokio::io::stdout();
            client
                .download("/husk/v1/images/save", &body, &mut out)
                .await?;
        }
    }
    Ok(0)
}

async fn save_to_file(client: &Client, body: &serde_json::Value, path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("create {}", tmp.display()))?;
    let written = client
        .download("/husk/v1/images/save", body, &mut file)
        .await;
    drop(file);
    match written {
        Ok(_) => tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("move the archive to {}", path.display())),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}

/// `husk image prune`.
pub async fn prune(client: &Client, a: ImagePruneArgs) -> Result<i32> {
    if !a.force && !super::confirm_prune(&[images_to_prune(a.all)])? {
        return Ok(0);
    }
    let report = prune_images(client, a.all).await?;
    println!(
        "Total reclaimed space: {}",
        human_size(report.space_reclaimed, false)
    );
    Ok(0)
}

fn images_to_prune(all: bool) -> &'static str {
    if all {
        "all images without at least one container associated to them"
    } else {
        "all nameless images"
    }
}

/// Prunes images and prints what went (not the total).
async fn prune_images(client: &Client, all: bool) -> Result<PruneReport> {
    let report: PruneReport = client
        .json(
            Method::POST,
            &format!("/husk/v1/images/prune?all={all}"),
            None::<&()>,
        )
        .await?;
    if !report.images_deleted.is_empty() {
        println!("Deleted Images:");
        for id in &report.images_deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    if report.deferred {
        println!("A pull or load is running: unused layers go when it ends (prune again later).");
    }
    Ok(report)
}

/// `husk system prune`: `container prune`, `image prune` and with `--volumes` `volume prune`, asked once.
async fn system_prune(client: &Client, a: SystemPruneArgs) -> Result<i32> {
    let mut what = vec!["all stopped containers", images_to_prune(a.all)];
    if a.volumes {
        what.push("all anonymous volumes not used by at least one container");
    }
    if !a.force && !super::confirm_prune(&what)? {
        return Ok(0);
    }
    let mut total = super::prune_containers(client).await?.space_reclaimed;
    if a.volumes {
        total += super::volumes::prune(client, false).await?.space_reclaimed;
    }
    total += prune_images(client, a.all).await?.space_reclaimed;
    println!("Total reclaimed space: {}", human_size(total, false));
    Ok(0)
}

/// `husk commit`: prints the new image's ID.
pub async fn commit(client: &Client, a: CommitArgs) -> Result<i32> {
    let req = CommitRequest {
        repo: a.repository,
        author: a.author,
        comment: a.message,
        pause: a.pause,
    };
    let image: ImageView = client
        .json(
            Method::POST,
            &format!("/husk/v1/containers/{}/commit", encode(&a.container)),
            Some(&req),
        )
        .await?;
    println!("{}", image.id);
    Ok(0)
}

/// `husk system ...`.
pub async fn system(client: &Client, cmd: SystemCommand) -> Result<i32> {
    match cmd {
        SystemCommand::Df(a) => system_df(client, a).await,
        SystemCommand::Prune(a) => system_prune(client, a).await,
    }
}

fn percent(part: u64, whole: u64) -> String {
    format!("{}%", (part * 100).checked_div(whole).unwrap_or(0))
}

/// The summary rows of `system df`: images and containers.
fn df_rows(df: &SystemDf) -> Vec<Vec<String>> {
    let i = &df.images;
    let images_size = i.layers_size + i.blobs_size;
    let active_images = i.images.iter().filter(|u| u.in_use).count();
    let containers_size: u64 = df.containers.iter().filter_map(|c| c.size).sum();
    let idle_size: u64 = df
        .containers
        .iter()
        .filter(|c| !c.active)
        .filter_map(|c| c.size)
        .sum();
    vec![
        vec![
            "Images".into(),
            i.images.len().to_string(),
            active_images.to_string(),
            human_size(images_size, false),
            format!(
                "{} ({})",
                human_size(i.reclaimable, false),
                percent(i.reclaimable, images_size)
            ),
        ],
        vec![
            "Containers".into(),
            df.containers.len().to_string(),
            df.containers
                .iter()
                .filter(|c| c.active)
                .count()
                .to_string(),
            human_size(containers_size, false),
            format!(
                "{} ({})",
                human_size(idle_size, false),
                percent(idle_size, containers_size)
            ),
        ],
    ]
}

async fn system_df(client: &Client, a: SystemDfArgs) -> Result<i32> {
    let df: SystemDf = client.get("/husk/v1/system/df").await?;
    if a.format == crate::cli::template::TableOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&df)?);
        return Ok(0);
    }
    print_table(
        &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        &df_rows(&df),
    );
    if a.verbose {
        println!("\nImages space usage:\n");
        let rows: Vec<Vec<String>> = df
            .images
            .images
            .iter()
            .map(|u| {
                vec![
                    u.names
                        .first()
                        .map(|n| familiar(n))
                        .unwrap_or_else(|| "<none>".into()),
                    short(&u.id),
                    human_size(u.size, false),
                    human_size(u.shared_size, false),
                    human_size(u.unique_size, false),
                    if u.in_use { "yes".into() } else { "no".into() },
                ]
            })
            .collect();
        print_table(
            &[
                "IMAGE",
                "IMAGE ID",
                "SIZE",
                "SHARED SIZE",
                "UNIQUE SIZE",
                "IN USE",
            ],
            &rows,
        );
        println!("\nContainers space usage:\n");
        let rows: Vec<Vec<String>> = df
            .containers
            .iter()
            .map(|c| {
                vec![
                    short(&c.id),
                    c.name.clone(),
                    short(&c.image_id),
                    c.size
                        .map(|s| human_size(s, false))
                        .unwrap_or_else(|| "-".into()),
                    if c.active { "yes".into() } else { "no".into() },
                ]
            })
            .collect();
        print_table(
            &["CONTAINER ID", "NAME", "IMAGE ID", "SIZE", "ACTIVE"],
            &rows,
        );
    }
    std::io::stdout().flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use husk_api_types::ContainerUsage;
    use husk_api_types::{DiskUsage, ImageUsage};

    #[test]
    fn df_summary() {
        let df = SystemDf {
            images: DiskUsage {
                images: vec![
                    ImageUsage {
                        id: "sha256:a".into(),
                        in_use: true,
                        ..Default::default()
                    },
                    ImageUsage {
                        id: "sha256:b".into(),
                        ..Default::default()
                    },
                ],
                layers_size: 3000,
                blobs_size: 1000,
                reclaimable: 1000,
            },
            containers: vec![
                ContainerUsage {
                    id: "c1".into(),
                    name: "one".into(),
                    image_id: "sha256:a".into(),
                    active: true,
                    size: Some(100),
                },
                ContainerUsage {
                    id: "c2".into(),
                    name: "two".into(),
                    image_id: "sha256:a".into(),
                    active: false,
                    size: Some(300),
                },
            ],
        };
        let rows = df_rows(&df);
        assert_eq!(rows[0][1..3], ["2".to_string(), "1".to_string()]);
        assert_eq!(rows[0][3], human_size(4000, false));
        assert!(rows[0][4].ends_with("(25%)"), "{}", rows[0][4]);
        assert_eq!(rows[1][1..3], ["2".to_string(), "1".to_string()]);
        assert!(rows[1][4].ends_with("(75%)"), "{}", rows[1][4]);
    }
}
