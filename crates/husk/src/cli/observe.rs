//! Watching containers: `events`, `ps`, `inspect`, `top` and `stats`.

use super::*;
use husk_api_types::ContainerSummary;
use husk_core::{ContainerStatus, Timestamp};

pub(super) async fn events(client: &Client, a: EventsArgs) -> Result<i32> {
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
                    let time = Timestamp::from_unix_nanos(e.time_nano);
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
pub(super) fn event_matches(
    e: &husk_api_types::EventView,
    filters: &BTreeMap<String, Vec<String>>,
) -> bool {
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

/// What `ps --filter` looks at, in a full view (`--format json`) or a summary alike.
struct FilterFields<'a> {
    id: &'a str,
    name: &'a str,
    image: &'a str,
    image_id: &'a str,
    status: ContainerStatus,
    sandbox_id: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a ContainerView> for FilterFields<'a> {
    fn from(c: &'a ContainerView) -> Self {
        FilterFields {
            id: &c.id,
            name: &c.name,
            image: &c.image,
            image_id: &c.image_id,
            status: c.state.status,
            sandbox_id: c.sandbox_id.as_deref(),
            labels: &c.config.labels,
        }
    }
}

impl<'a> From<&'a ContainerSummary> for FilterFields<'a> {
    fn from(c: &'a ContainerSummary) -> Self {
        FilterFields {
            id: &c.id,
            name: &c.name,
            image: &c.image,
            image_id: &c.image_id,
            status: c.status,
            sandbox_id: c.sandbox_id.as_deref(),
            labels: &c.labels,
        }
    }
}

fn matches_filters(c: FilterFields<'_>, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.labels.get(lk).is_some_and(|x| x == lv),
            None => c.labels.contains_key(v),
        },
        "name" => c.name.contains(v.as_str()),
        "id" => c.id.starts_with(v.as_str()),
        "status" => c.status.as_str() == v,
        "sandbox" => c.sandbox_id.is_some_and(|s| s.starts_with(v.as_str())),
        "ancestor" => c.image.contains(v.as_str()) || c.image_id.contains(v.as_str()),
        _ => false,
    })
}

pub(super) async fn ps(client: &Client, a: PsArgs) -> Result<i32> {
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
    if let OutputFormat::Json = a.format {
        // JSON is the full view of each container, as `inspect` gives it.
        let mut list: Vec<ContainerView> = client
            .get(&format!("/husk/v1/containers?all={all}"))
            .await?;
        list.retain(|c| matches_filters(c.into(), &filters));
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    let mut list: Vec<ContainerSummary> = client
        .get(&format!("/husk/v1/containers?all={all}&view=summary"))
        .await?;
    list.retain(|c| matches_filters(c.into(), &filters));
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
        OutputFormat::Json => unreachable!("answered above"),
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
pub(super) fn ps_fields(c: &ContainerSummary, no_trunc: bool) -> serde_json::Value {
    let mut cmd = c.command.join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    let id = |id: &str| if no_trunc { id.to_string() } else { short(id) };
    let join = |items: Vec<String>| items.join(",");
    serde_json::json!({
        "ID": id(&c.id),
        "Image": husk_image::familiar(&c.image),
        "Command": format!("\"{cmd}\""),
        "CreatedAt": c.created.to_chrono().format("%Y-%m-%d %H:%M:%S %z UTC").to_string(),
        "RunningFor": format!("{} ago", format::human_duration(format::seconds_since(c.created))),
        "Ports": join(c.ports.iter().map(|p| p.to_string()).collect()),
        "State": c.status.to_string(),
        "Status": status_text(c),
        "Names": c.name,
        "Labels": join(c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        "Mounts": c.mounts.join(","),
        "Networks": c.network_mode,
        "Mode": c.mode.to_string(),
        "Sandbox": c.sandbox_id.as_deref().map(id).unwrap_or_default(),
    })
}

/// An image as `images` shows it, one item per name: Docker's `images --format` fields (`.Repository`, `.Tag`,
/// `.ID`, `.Digest`, `.CreatedSince`, `.CreatedAt`, `.Size`); every value a string.
pub(super) fn image_fields(i: &husk_api_types::ImageView) -> Vec<serde_json::Value> {
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
                    format!("{} ago", format::human_duration(format::seconds_since(Timestamp::parse(created).ok())))
                },
                "CreatedAt": created,
                "Size": human_size(i.size, false),
            })
        })
        .collect()
}

/// `ps`'s column names for a `table` template.
pub(super) fn ps_headers() -> serde_json::Value {
    serde_json::json!({
        "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
        "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Names": "NAMES",
        "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS", "Mode": "MODE", "Sandbox": "SANDBOX",
    })
}

pub(super) async fn inspect(client: &Client, a: InspectArgs) -> Result<i32> {
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
            // The daemon's answer that this is no such object (or no valid name of this kind) sends us on to the
            // next kind; a daemon that could not be reached, or dropped the request, is an error: it says nothing
            // of whether the object exists.
            match client.get::<serde_json::Value>(&path).await {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(e) if e.downcast_ref::<crate::client::DaemonError>().is_some() => {}
                Err(e) => return Err(e),
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

pub(super) async fn top(client: &Client, a: TopArgs) -> Result<i32> {
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

pub(super) async fn stats(client: &Client, a: StatsArgs) -> Result<i32> {
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

pub(super) fn host_memory() -> u64 {
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
