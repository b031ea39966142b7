//! A container's processes and output: logs, execute (with its interactive form), attach, resize and
//! execute_resize, top and stats.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use futures::StreamExt;
use husk_api_types::ExecCreate;
use husk_core::LogOptions;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::for_action;
use crate::zun::context::Context;
use crate::zun::create::{split_command, zun_bool};
use crate::zun::error::{ZunError, ZunErrors, ZunResult};
use crate::zun::params::Params;
use crate::zun::view::ZunAction;
use crate::zun::{BaseUrl, ZunState, ws};

/// Zun's `since`: Unix seconds, or `YYYY-MM-DD HH:MM:SS,mmm` (UTC).
fn parse_since(text: &str) -> ZunResult<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S,%3f")
        .ok()
        .and_then(|t| t.and_utc().timestamp_nanos_opt())
        .ok_or_else(|| {
            ZunError::invalid(
                "since",
                format!("{text:?} is not Unix seconds or YYYY-MM-DD HH:MM:SS,mmm"),
            )
        })
}

/// `GET .../logs`: the output as one JSON string.
#[utoipa::path(get, path = "/v1/containers/{id}/logs", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("stdout" = Option<String>, Query, description = "True or False"), ("stderr" = Option<String>, Query, description = "True or False"), ("timestamps" = Option<String>, Query, description = "True or False"), ("tail" = Option<String>, Query, description = "Lines or all"), ("since" = Option<String>, Query, description = "Unix seconds or YYYY-MM-DD HH:MM:SS,mmm")), responses((status = 200, description = "Done", body = String), ZunErrors))]
pub(crate) async fn logs(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<String>> {
    params.only(&["stdout", "stderr", "timestamps", "tail", "since"])?;
    let stdout = params.flag("stdout", true)?;
    let stderr = params.flag("stderr", true)?;
    let timestamps = params.flag("timestamps", false)?;
    let tail = match params.text("tail") {
        None | Some("") | Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ZunError::invalid("tail", format!("{n:?} is not a number or all")))?,
        ),
    };
    let since_nanos = params.text("since").map(parse_since).transpose()?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Logs)?;
    let options = LogOptions {
        follow: false,
        tail,
        since_nanos,
        until_nanos: None,
    };
    let mut stream = s.engine.logs(rec.id(), &options).await?;
    let mut out = String::new();
    while let Some(entry) = stream.next().await {
        let entry = entry?;
        let wanted = if entry.stream == husk_core::OutputStream::Stderr {
            stderr
        } else {
            stdout
        };
        if !wanted {
            continue;
        }
        if timestamps {
            out.push_str(&entry.time.to_string());
            out.push(' ');
        }
        out.push_str(&entry.text);
    }
    Ok(Json(out))
}

/// The answer of `execute`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecResult {
    /// Everything the command printed (stdout and stderr interleaved).
    pub output: Option<String>,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// The exec's ID (interactive execs).
    pub exec_id: Option<String>,
    /// The WebSocket URL of an interactive exec.
    pub proxy_url: Option<String>,
}

/// The most output `execute` returns.
const EXEC_OUTPUT_LIMIT: usize = 4 << 20;
/// How long `execute` waits for the command.
const EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST .../execute?command=...[&run=false&interactive=true]`.
#[utoipa::path(post, path = "/v1/containers/{id}/execute", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("command" = Option<String>, Query, description = "Shell-quoted command"), ("run" = Option<String>, Query, description = "True or False"), ("interactive" = Option<String>, Query, description = "True or False")), responses((status = 200, description = "Done", body = ExecResult), ZunErrors))]
pub(crate) async fn execute(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<ExecResult>> {
    params.only(&["command", "run", "interactive"])?;
    let strict = |key: &str| -> ZunResult<Option<bool>> {
        params
            .text(key)
            .map(|v| zun_bool(key, &Value::String(v.to_string())))
            .transpose()
    };
    let run = strict("run")?.unwrap_or(true);
    let interactive = strict("interactive")?.unwrap_or(false);
    let command = params
        .text("command")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ZunError::invalid("command", "a command is required"))?;
    let command = split_command("command", command)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("execute"))?;
    if !run {
        // Zun's interactive exec: the process starts when the client connects to the URL.
        let exec_id = husk_core::new_id();
        let request = ExecCreate {
            command,
            tty: interactive,
            stdin: interactive,
            ..Default::default()
        };
        let target = ws::Target::Exec {
            exec_id: exec_id.clone(),
            request,
        };
        let token = s.sessions.offer(rec.id(), target);
        s.engine.record_action(
            rec.id(),
            "exec_cmd",
            &ctx.user_id,
            husk_core::Timestamp::now(),
            None,
        );
        return Ok(Json(ExecResult {
            output: None,
            exit_code: None,
            proxy_url: Some(ws::url(&base, &token, rec.id(), Some(&exec_id))),
            exec_id: Some(exec_id),
        }));
    }
    let req = ExecCreate {
        command,
        ..Default::default()
    };
    let out = s
        .engine
        .track(
            rec.id(),
            "exec_cmd",
            &ctx.user_id,
            s.engine
                .exec_output(rec.id(), &req, EXEC_OUTPUT_LIMIT, EXEC_TIMEOUT),
        )
        .await?;
    Ok(Json(ExecResult {
        output: Some(String::from_utf8_lossy(&out.combined).into_owned()),
        exit_code: Some(out.exit_code),
        exec_id: None,
        proxy_url: None,
    }))
}

/// The answer of `top`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopResult {
    /// Column names.
    #[serde(rename = "Titles")]
    pub titles: Vec<String>,
    /// One row per process.
    #[serde(rename = "Processes")]
    pub processes: Vec<Vec<String>>,
}

/// `GET .../top[?ps_args=PID ...]`: the processes (only the given PIDs when `ps_args` lists some).
#[utoipa::path(get, path = "/v1/containers/{id}/top", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("ps_args" = Option<String>, Query, description = "PIDs to show")), responses((status = 200, description = "Done", body = TopResult), ZunErrors))]
pub(crate) async fn top(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<TopResult>> {
    params.only(&["ps_args"])?;
    let pids: Vec<String> = params
        .text("ps_args")
        .unwrap_or("")
        .split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = pids.iter().find(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ZunError::invalid(
            "ps_args",
            format!("not supported by husk: {bad:?}; give process IDs to show only those"),
        ));
    }
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("top"))?;
    let top = s.engine.top(rec.id()).await?;
    let pid_col = top.titles.iter().position(|t| t == "PID");
    let processes = top
        .processes
        .into_iter()
        .filter(|row| match (pids.is_empty(), pid_col) {
            (true, _) => true,
            (false, Some(i)) => row.get(i).is_some_and(|p| pids.contains(p)),
            (false, None) => false,
        })
        .collect();
    Ok(Json(TopResult {
        titles: top.titles,
        processes,
    }))
}

/// `GET .../stats`: Zun's usage summary, CPU % over a short interval.
#[utoipa::path(get, path = "/v1/containers/{id}/stats", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn stats(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("stats"))?;
    let first = s.engine.stats(rec.id()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = s.engine.stats(rec.id()).await?;
    let cpu_delta = second.cpu_usage_ns.saturating_sub(first.cpu_usage_ns) as f64;
    let system_delta = second.system_cpu_ns.saturating_sub(first.system_cpu_ns) as f64;
    let cpus = f64::from(second.online_cpus.max(1));
    let cpu_percent = if system_delta > 0.0 {
        cpu_delta / system_delta * cpus * 100.0
    } else {
        0.0
    };
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let mem_percent = if second.memory_limit_bytes > 0 {
        second.memory_usage_bytes as f64 / second.memory_limit_bytes as f64 * 100.0
    } else {
        0.0
    };
    Ok(Json(serde_json::json!({
        "CONTAINER": rec.name(),
        "CPU %": (cpu_percent * 100.0).round() / 100.0,
        "MEM USAGE(MiB)": (mib(second.memory_usage_bytes) * 100.0).round() / 100.0,
        "MEM LIMIT(MiB)": (mib(second.memory_limit_bytes) * 100.0).round() / 100.0,
        "MEM %": (mem_percent * 100.0).round() / 100.0,
        "BLOCK I/O(B)": format!("{}/{}", second.block_read_bytes, second.block_write_bytes),
        "NET I/O(B)": format!("{}/{}", second.net_rx_bytes, second.net_tx_bytes),
    })))
}

/// `GET .../attach`: a `ws://` URL joined to the main process (the container must keep stdin open).
#[utoipa::path(get, path = "/v1/containers/{id}/attach", tag = "containers", params(("id" = String, Path, description = "Name or UUID")), responses((status = 200, description = "Done", body = String), ZunErrors))]
pub(crate) async fn attach(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<String>> {
    params.only(&[])?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("attach"))?;
    if !rec.config.process.stdin {
        return Err(ZunError::invalid(
            "interactive",
            format!("container {id} is not interactive: create it with interactive=true to attach"),
        ));
    }
    let token = s.sessions.offer(rec.id(), ws::Target::Attach);
    s.engine.record_action(
        rec.id(),
        "container_attach",
        &ctx.user_id,
        husk_core::Timestamp::now(),
        None,
    );
    Ok(Json(ws::url(&base, &token, rec.id(), None)))
}

fn size(params: &Params) -> ZunResult<(u16, u16)> {
    let dim = |k: &str| -> ZunResult<u16> {
        let v = params
            .positive(k)?
            .ok_or_else(|| ZunError::invalid(k, "required"))?;
        u16::try_from(v).map_err(|_| ZunError::invalid(k, format!("{v} is over 65535")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST .../resize?h=&w=`: the main process's terminal size.
#[utoipa::path(post, path = "/v1/containers/{id}/resize", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("h" = Option<u32>, Query, description = "Rows"), ("w" = Option<u32>, Query, description = "Columns")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn resize(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["h", "w"])?;
    let (rows, cols) = size(&params)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("resize"))?;
    s.engine.resize(rec.id(), rows, cols).await?;
    Ok(Json(Value::Null))
}

/// `POST .../execute_resize?exec_id=&h=&w=`: an interactive exec's terminal size.
#[utoipa::path(post, path = "/v1/containers/{id}/execute_resize", tag = "containers", params(("id" = String, Path, description = "Name or UUID"), ("exec_id" = Option<String>, Query, description = "64 hex characters"), ("h" = Option<u32>, Query, description = "Rows"), ("w" = Option<u32>, Query, description = "Columns")), responses((status = 200, description = "Done", body = serde_json::Value), ZunErrors))]
pub(crate) async fn execute_resize(
    State(s): State<ZunState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    params: Params,
) -> ZunResult<Json<Value>> {
    params.only(&["exec_id", "h", "w"])?;
    let exec_id = params.text("exec_id").unwrap_or("");
    if exec_id.len() != 64
        || !exec_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(ZunError::invalid(
            "exec_id",
            "64 lowercase hexadecimal characters",
        ));
    }
    let (rows, cols) = size(&params)?;
    let rec = for_action(&s, &ctx, &id, ZunAction::Running("execute_resize"))?;
    s.sessions.resize(rec.id(), exec_id, rows, cols)?;
    Ok(Json(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("10").unwrap(), 10_000_000_000);
        assert_eq!(
            parse_since("1970-01-01 00:00:01,500").unwrap(),
            1_500_000_000
        );
        assert!(parse_since("yesterday").is_err());
    }
}
