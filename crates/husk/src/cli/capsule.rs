//! `husk capsule ...`: capsules from Kubernetes `Pod` manifests (or Zun's capsule template), YAML or JSON.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use http::Method;
use husk_api::local::capsules::CapsuleView;

use super::format::print_table;
use crate::client::Client;

/// `husk capsule`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum CapsuleCommand {
    /// Create a capsule from a manifest: its sandbox, volumes and containers (init containers first).
    Create(CreateArgs),
    /// List capsules.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show capsules in detail (JSON).
    Inspect(NamesArgs),
    /// Remove capsules with their containers and volumes.
    #[command(alias = "remove")]
    Rm(NamesArgs),
}

/// `husk capsule create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The manifest (`-` for stdin): a Kubernetes Pod or a Zun capsule template, YAML or JSON.
    #[arg(short = 'f', long = "file")]
    pub file: String,
}

/// `husk capsule ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::TableOrJson,
}

/// Capsule names or IDs.
#[derive(Debug, Args)]
pub struct NamesArgs {
    /// Capsules.
    #[arg(required = true)]
    pub capsules: Vec<String>,
}

/// Reads a manifest file as JSON (YAML is a superset of JSON, so one parser reads both).
fn read_manifest(path: &str) -> Result<serde_json::Value> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).context("read the manifest from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {path}"))?
    };
    serde_yaml::from_str(&text).with_context(|| format!("{path} is not valid YAML or JSON"))
}

/// Runs a `husk capsule` command.
pub async fn run(client: &Client, cmd: CapsuleCommand) -> Result<i32> {
    match cmd {
        CapsuleCommand::Create(a) => {
            let manifest = read_manifest(&a.file)?;
            let c: CapsuleView = client
                .json(Method::POST, "/husk/v1/capsules", Some(&manifest))
                .await?;
            if c.status == "Error" {
                eprintln!("capsule {} failed: {}", c.name, c.status_reason);
                println!("{}", c.id);
                return Ok(1);
            }
            println!("{}", c.id);
        }
        CapsuleCommand::Ls(a) => {
            let list: Vec<CapsuleView> = client.get("/husk/v1/capsules").await?;
            if a.quiet {
                list.iter().for_each(|c| println!("{}", c.name));
            } else if a.format == crate::cli::template::TableOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        let running = c
                            .containers
                            .iter()
                            .filter(|m| m.status == "running")
                            .count();
                        vec![
                            c.id.chars().take(12).collect(),
                            c.name.clone(),
                            c.status.clone(),
                            format!("{running}/{}", c.containers.len()),
                            c.project.clone(),
                            c.created.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "CAPSULE ID",
                        "NAME",
                        "STATUS",
                        "RUNNING",
                        "PROJECT",
                        "CREATED",
                    ],
                    &rows,
                );
            }
        }
        CapsuleCommand::Inspect(a) => {
            let mut out = Vec::new();
            for c in &a.capsules {
                out.push(
                    client
                        .get::<CapsuleView>(&format!("/husk/v1/capsules/{c}"))
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        CapsuleCommand::Rm(a) => {
            let mut failed = false;
            for c in &a.capsules {
                match client
                    .call(
                        Method::DELETE,
                        &format!("/husk/v1/capsules/{c}"),
                        None::<&()>,
                    )
                    .await
                {
                    Ok(_) => println!("{c}"),
                    Err(e) => {
                        eprintln!("Error: {e:#}");
                        failed = true;
                    }
                }
            }
            return Ok(i32::from(failed));
        }
    }
    Ok(0)
}
