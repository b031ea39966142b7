//! `husk image ...`: list, inspect, load, tag, remove, history.

use super::*;

pub(super) async fn image(client: &Client, cmd: ImageCommand) -> Result<i32> {
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
