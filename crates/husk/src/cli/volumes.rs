//! `husk volume ...`.

use anyhow::{Result, anyhow, bail};
use http::Method;
use husk_api_types::{VolumeCreate, VolumePruneReport, VolumeView};

use super::args::{VolumeCommand, VolumeLsArgs};
use super::format::{human_size, print_table};
use super::template::{self, OutputFormat};
use super::{each, parse_labels};
use crate::client::Client;

/// Runs a `volume` subcommand.
pub async fn volume(client: &Client, cmd: VolumeCommand) -> Result<i32> {
    match cmd {
        VolumeCommand::Create(a) => {
            let mut driver_opts = std::collections::BTreeMap::new();
            for o in &a.opts {
                let (k, v) = o
                    .split_once('=')
                    .ok_or_else(|| anyhow!("invalid option {o:?}: use KEY=VALUE"))?;
                driver_opts.insert(k.to_string(), v.to_string());
            }
            let req = VolumeCreate {
                name: a.name,
                driver: Some(a.driver),
                driver_opts,
                labels: parse_labels(&a.labels)?,
            };
            let v: VolumeView = client
                .json(Method::POST, "/husk/v1/volumes", Some(&req))
                .await?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCommand::Ls(a) => ls(client, a).await,
        VolumeCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = false;
            for v in &a.volumes {
                match client
                    .get::<serde_json::Value>(&format!("/husk/v1/volumes/{v}"))
                    .await
                {
                    Ok(view) => out.push(view),
                    Err(e) => {
                        eprintln!("Error: {e:#}");
                        failed = true;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(if failed { 1 } else { 0 })
        }
        VolumeCommand::Rm(a) => {
            each(&a.volumes, |v| async move {
                client
                    .call(
                        Method::DELETE,
                        &format!("/husk/v1/volumes/{v}?force={}", a.force),
                        None::<&()>,
                    )
                    .await
                    .map(|_| ())
            })
            .await
        }
        VolumeCommand::Prune(a) => {
            let what = if a.all {
                "all volumes not used by at least one container"
            } else {
                "all anonymous volumes not used by at least one container"
            };
            if !a.force && !super::confirm_prune(&[what])? {
                return Ok(0);
            }
            let report = prune(client, a.all).await?;
            println!(
                "Total reclaimed space: {}",
                human_size(report.space_reclaimed, false)
            );
            Ok(0)
        }
    }
}

/// Prunes volumes and prints what went (not the total).
pub(super) async fn prune(client: &Client, all: bool) -> Result<VolumePruneReport> {
    let report: VolumePruneReport = client
        .json(
            Method::POST,
            &format!("/husk/v1/volumes/prune?all={all}"),
            None::<&()>,
        )
        .await?;
    if !report.volumes_deleted.is_empty() {
        println!("Deleted Volumes:");
        for v in &report.volumes_deleted {
            println!("{v}");
        }
        println!();
    }
    Ok(report)
}

fn matches(v: &VolumeView, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, value)| match k.as_str() {
        "dangling" => (value == "true" || value == "1") == v.used_by.is_empty(),
        "label" => match value.split_once('=') {
            Some((lk, lv)) => v.labels.get(lk).is_some_and(|x| x == lv),
            None => v.labels.contains_key(value),
        },
        "name" => v.name.contains(value.as_str()),
        "driver" => v.driver == *value,
        _ => false,
    })
}

async fn ls(client: &Client, a: VolumeLsArgs) -> Result<i32> {
    let filters: Vec<(String, String)> = a
        .filter
        .iter()
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid filter {f:?}: use KEY=VALUE"))?;
            if !["dangling", "label", "name", "driver"].contains(&k) {
                bail!("invalid filter {k:?}: use dangling, label, name or driver");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect::<Result<_>>()?;
    let mut list: Vec<VolumeView> = client.get("/husk/v1/volumes").await?;
    list.retain(|v| matches(v, &filters));
    if a.quiet {
        for v in &list {
            println!("{}", v.name);
        }
    } else if let OutputFormat::Template { text, table } = &a.format {
        template::print_items(text, *table, None, &list)?;
    } else if a.format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|v| vec![v.driver.clone(), v.name.clone(), v.used_by.join(",")])
            .collect();
        print_table(&["DRIVER", "VOLUME NAME", "USED BY"], &rows);
    }
    Ok(0)
}
