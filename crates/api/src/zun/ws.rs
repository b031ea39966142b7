//! Interactive attach and exec over WebSocket, as Zun's clients use them: `GET .../attach` and
//! `POST .../execute?run=false` hand back a `ws://` URL with a one-time token; the client connects, sends its
//! keystrokes as binary messages and reads the process's output from the messages it receives. Terminal sizes
//! travel through the REST API (`resize`, `execute_resize`). Each WebSocket message is translated to and from
//! husk's stdio frames ([`husk_core::stdio`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use husk_api_types::ExecCreate;
use husk_core::stdio::{BoxStdio, Frame, read_frame, write_frame};
use tokio::sync::mpsc;

use super::ZunState;
use super::error::ZunError;
use super::params::Params;

/// The terminal sizes sent to a running exec, and the size asked for before it started.
type Resizes = (mpsc::Receiver<(u16, u16)>, Option<(u16, u16)>);

/// How long a handed-out URL stays valid.
const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// The largest WebSocket message (and frame) a client may send: keystrokes and pasted text, never more
/// (tungstenite's defaults, 16 MiB frames and 64 MiB messages, would let one client make the daemon buffer that
/// much).
const MAX_WS_MESSAGE: usize = 1 << 20;

/// What a WebSocket connection will be joined to.
#[derive(Debug, Clone)]
pub enum Target {
    /// The container's main process.
    Attach,
    /// A new process, started when the client connects.
    Exec {
        /// The exec's ID (64 hex characters).
        exec_id: String,
        /// What to run.
        request: ExecCreate,
    },
}

#[derive(Debug)]
struct Pending {
    container_id: String,
    target: Target,
    expires: Instant,
}

/// Handed-out URLs not used yet, and the terminal-size channels of running execs.
#[derive(Debug, Default)]
pub struct Sessions {
    pending: Mutex<HashMap<String, Pending>>,
    resizers: Mutex<HashMap<String, ExecResize>>,
}

#[derive(Debug)]
struct ExecResize {
    container_id: String,
    /// Set while the exec runs.
    live: Option<mpsc::Sender<(u16, u16)>>,
    /// A size asked for before the client connected.
    initial: Option<(u16, u16)>,
}

impl Sessions {
    /// Registers a URL for `target` in `container_id`; returns its token.
    pub fn offer(&self, container_id: &str, target: Target) -> String {
        let token = hex::encode(rand::random::<[u8; 24]>());
        if let Target::Exec { exec_id, .. } = &target {
            self.resizers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    exec_id.clone(),
                    ExecResize {
                        container_id: container_id.to_string(),
                        live: None,
                        initial: None,
                    },
                );
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let expired: Vec<String> = pending
            .values()
            .filter(|p| p.expires <= now)
            .filter_map(|p| match &p.target {
                Target::Exec { exec_id, .. } => Some(exec_id.clone()),
                Target::Attach => None,
            })
            .collect();
        pending.retain(|_, p| p.expires > now);
        for e in &expired {
            self.forget(e);
        }
        pending.insert(
            token.clone(),
            Pending {
                container_id: container_id.to_string(),
                target,
                expires: Instant::now() + TOKEN_LIFETIME,
            },
        );
        token
    }

    fn take(&self, token: &str, container_id: &str) -> Option<Target> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.remove(token) {
            Some(p) if p.container_id == container_id && p.expires > Instant::now() => {
                Some(p.target)
            }
            _ => None,
        }
    }

    /// Resizes the terminal of exec `exec_id` of `container_id` (now, or when it starts).
    pub fn resize(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), ZunError> {
        let mut resizers = self.resizers.lock().unwrap_or_else(|p| p.into_inner());
        let r = resizers
            .get_mut(exec_id)
            .filter(|r| r.container_id == container_id)
            .ok_or_else(|| {
                ZunError::not_found(format!("Exec instance {exec_id} could not be found."))
            })?;
        match &r.live {
            Some(tx) => {
                let _ = tx.try_send((rows, cols));
            }
            None => r.initial = Some((rows, cols)),
        }
        Ok(())
    }

    fn attach_resizer(&self, exec_id: &str) -> Resizes {
        let (tx, rx) = mpsc::channel(8);
        let mut resizers = self.resizers.lock().unwrap_or_else(|p| p.into_inner());
        let initial = resizers.get_mut(exec_id).and_then(|r| {
            r.live = Some(tx);
            r.initial.take()
        });
        (rx, initial)
    }

    fn forget(&self, exec_id: &str) {
        self.resizers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
    }
}

/// The `ws://` URL for a token.
pub fn url(base: &str, token: &str, uuid: &str, exec_id: Option<&str>) -> String {
    let ws = base.replacen("http://", "ws://", 1);
    match exec_id {
        Some(e) => format!("{ws}/websocket?token={token}&uuid={uuid}&exec_id={e}"),
        None => format!("{ws}/websocket?token={token}&uuid={uuid}"),
    }
}

/// `GET /websocket?token=&uuid=[&exec_id=]`: upgrades and joins the client to the process (public: the token
/// is the credential).
pub async fn connect(
    State(s): State<ZunState>,
    params: Params,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match join(s, params, upgrade.ok()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn join(
    s: ZunState,
    params: Params,
    upgrade: Option<WebSocketUpgrade>,
) -> Result<Response, ZunError> {
    params.only(&["token", "uuid", "exec_id"])?;
    let upgrade =
        upgrade.ok_or_else(|| ZunError::bad_request("this URL takes a WebSocket connection"))?;
    let token = params.text("token").unwrap_or("");
    let uuid = params.text("uuid").unwrap_or("");
    let target = s.sessions.take(token, uuid).ok_or_else(|| {
        ZunError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "not-authenticated",
            "invalid or expired token",
        )
    })?;
    // Detaching from the main process leaves its stdin open (as `docker attach` does); an exec's client going
    // away closes its stdin.
    let close_stdin = matches!(target, Target::Exec { .. });
    let (stdio, resizes) = match &target {
        Target::Attach => (s.engine.attach(uuid, true).await?, None),
        Target::Exec { exec_id, request } => {
            // A command the runtime cannot start (no such executable) is the client's to fix.
            let stdio = s
                .engine
                .exec(uuid, request)
                .await
                .map_err(|e| match e.kind {
                    husk_core::ErrorKind::Backend => ZunError::invalid("command", e.message),
                    _ => e.into(),
                })?;
            (stdio, Some(s.sessions.attach_resizer(exec_id)))
        }
    };
    let sessions = s.sessions.clone();
    let exec_id = match &target {
        Target::Exec { exec_id, .. } => Some(exec_id.clone()),
        Target::Attach => None,
    };
    Ok(upgrade
        .protocols(["binary"])
        .max_frame_size(MAX_WS_MESSAGE)
        .max_message_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| async move {
            splice(socket, stdio, resizes, close_stdin).await;
            if let Some(e) = exec_id {
                sessions.forget(&e);
            }
        }))
}

/// Copies WebSocket messages to stdin frames and output frames to WebSocket messages until either side ends.
async fn splice(socket: WebSocket, stdio: BoxStdio, resizes: Option<Resizes>, close_stdin: bool) {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut reader, mut writer) = tokio::io::split(stdio);
    let (mut resize_rx, initial) = match resizes {
        Some((rx, initial)) => (Some(rx), initial),
        None => (None, None),
    };
    if let Some((rows, cols)) = initial {
        let _ = write_frame(&mut writer, &Frame::Resize { rows, cols }).await;
    }
    let output = async {
        loop {
            match read_frame(&mut reader).await {
                Ok(Some(Frame::Stdout(b) | Frame::Stderr(b))) => {
                    if ws_tx.send(Message::Binary(b.into())).await.is_err() {
                        break;
                    }
                }
                Ok(Some(Frame::Error(m))) => {
                    let _ = ws_tx
                        .send(Message::Text(format!("\r\nerror: {m}\r\n").into()))
                        .await;
                    break;
                }
                Ok(Some(Frame::Exit(_))) | Ok(None) | Err(_) => break,
                Ok(Some(_)) => {}
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    let input = async {
        loop {
            let next_resize = async {
                match resize_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = ws_rx.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if write_frame(&mut writer, &Frame::Stdin(b.to_vec())).await.is_err() { break; }
                    }
                    Some(Ok(Message::Text(t))) => {
                        if write_frame(&mut writer, &Frame::Stdin(t.as_bytes().to_vec())).await.is_err() { break; }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                        if close_stdin {
                            let _ = write_frame(&mut writer, &Frame::CloseStdin).await;
                        }
                        break;
                    }
                    Some(Ok(_)) => {}
                },
                size = next_resize => match size {
                    Some((rows, cols)) => {
                        let _ = write_frame(&mut writer, &Frame::Resize { rows, cols }).await;
                    }
                    None => resize_rx = None,
                },
            }
        }
    };
    // The output side decides the end: the process exited (or the stream failed). When the client goes first,
    // stdin is closed and the process gets a moment to finish its output.
    tokio::pin!(output);
    tokio::select! {
        _ = &mut output => {}
        _ = input => {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut output).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_bound_to_their_container() {
        let s = Sessions::default();
        let t = s.offer("c1", Target::Attach);
        assert!(s.take(&t, "c2").is_none(), "another container's token");
        let t = s.offer("c1", Target::Attach);
        assert!(matches!(s.take(&t, "c1"), Some(Target::Attach)));
        assert!(s.take(&t, "c1").is_none(), "used once");
        assert!(s.take("nope", "c1").is_none());
    }

    #[test]
    fn exec_sizes_wait_for_the_start_then_go_live() {
        let s = Sessions::default();
        let exec = Target::Exec {
            exec_id: "e1".into(),
            request: ExecCreate::default(),
        };
        s.offer("c1", exec);
        assert!(
            s.resize("c2", "e1", 1, 1).is_err(),
            "another container's exec"
        );
        assert!(s.resize("c1", "nope", 1, 1).is_err());
        s.resize("c1", "e1", 30, 100).unwrap();
        let (mut rx, initial) = s.attach_resizer("e1");
        assert_eq!(initial, Some((30, 100)));
        s.resize("c1", "e1", 40, 120).unwrap();
        assert_eq!(rx.try_recv().unwrap(), (40, 120));
        s.forget("e1");
        assert!(s.resize("c1", "e1", 1, 1).is_err());
    }
}
