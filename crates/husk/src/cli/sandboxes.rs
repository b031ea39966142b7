//! `husk sandbox ...`.

use super::*;

pub(super) async fn sandbox(client: &Client, cmd: SandboxCommand) -> Result<i32> {
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
                            s.status.to_string(),
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
                                format::human_duration(format::seconds_since(s.created))
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
