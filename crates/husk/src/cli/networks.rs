//! `husk network ...`.

use super::*;

pub(super) async fn network(client: &Client, cmd: NetworkCommand) -> Result<i32> {
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
