//! `husk project ...` and `husk user ...`: the projects and users of the identity service Zun's API uses.

use anyhow::Result;
use clap::{Args, Subcommand};
use http::Method;
use husk_api::local::identity::{ProjectCreate, ProjectView, UserView};
use husk_engine::identity::UserCreate;

use super::format::print_table;
use crate::client::Client;

/// `husk project`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ProjectCommand {
    /// Create a project.
    Create(ProjectCreateArgs),
    /// List projects.
    #[command(alias = "list")]
    Ls(ListArgs),
}

/// `husk user`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum UserCommand {
    /// Create a user of one project.
    Create(UserCreateArgs),
    /// List users.
    #[command(alias = "list")]
    Ls(ListArgs),
}

/// `husk project create`.
#[derive(Debug, Args)]
pub struct ProjectCreateArgs {
    /// Project name.
    pub name: String,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// `husk user create`.
#[derive(Debug, Args)]
pub struct UserCreateArgs {
    /// User name.
    pub name: String,
    /// Password (at least 8 characters).
    #[arg(long)]
    pub password: String,
    /// The user's project (name or ID).
    #[arg(long)]
    pub project: String,
    /// Give the user the admin role.
    #[arg(long)]
    pub admin: bool,
}

/// Options of the `ls` commands.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only names.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: crate::cli::template::TableOrJson,
}

/// `husk project ...`.
pub async fn project(client: &Client, cmd: ProjectCommand) -> Result<i32> {
    match cmd {
        ProjectCommand::Create(a) => {
            let body = ProjectCreate {
                name: a.name,
                description: a.description,
            };
            let p: ProjectView = client
                .json(Method::POST, "/husk/v1/projects", Some(&body))
                .await?;
            println!("{}", p.id);
        }
        ProjectCommand::Ls(a) => {
            let list: Vec<ProjectView> = client.get("/husk/v1/projects").await?;
            if a.quiet {
                list.iter().for_each(|p| println!("{}", p.name));
            } else if a.format == crate::cli::template::TableOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .into_iter()
                    .map(|p| vec![p.id, p.name, p.description])
                    .collect();
                print_table(&["ID", "NAME", "DESCRIPTION"], &rows);
            }
        }
    }
    Ok(0)
}

/// `husk user ...`.
pub async fn user(client: &Client, cmd: UserCommand) -> Result<i32> {
    match cmd {
        UserCommand::Create(a) => {
            let body = UserCreate {
                name: a.name,
                password: a.password,
                project: a.project,
                admin: a.admin,
            };
            let u: UserView = client
                .json(Method::POST, "/husk/v1/users", Some(&body))
                .await?;
            println!("{}", u.id);
        }
        UserCommand::Ls(a) => {
            let list: Vec<UserView> = client.get("/husk/v1/users").await?;
            if a.quiet {
                list.iter().for_each(|u| println!("{}", u.name));
            } else if a.format == crate::cli::template::TableOrJson::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .into_iter()
                    .map(|u| vec![u.id, u.name, u.project, u.roles.join(",")])
                    .collect();
                print_table(&["ID", "NAME", "PROJECT", "ROLES"], &rows);
            }
        }
    }
    Ok(0)
}
