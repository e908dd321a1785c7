//! `GET /sessions/{sid}/ws/`: play-with-docker's WebSocket. One socket carries every node of
//! the session: JSON text frames `{"name", "args"}` both ways, terminal bytes as UTF-8 text.
//!
//! Each node's terminal is the node's shared shell (the one sandpit's page shows), attached
//! as an ordinary viewer. A task per node pulls the viewer's output into a bounded queue that
//! the socket drains, so a page that reads slowly stalls only its own viewers, which fall
//! behind in the shared ring and skip ahead with a notice, as sandpit's own viewers do. The
//! session's events become PWD's (`instance new`, `instance delete`, `instance stats`,
//! `instance docker ports`, `session end`), and sizes follow PWD's rule (`viewport.rs`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{self, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use terminals::{Output, Viewer, ViewerInput, WinSize};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::super::events::close;
use super::super::extract::{need_upgrade, PathParams};
use super::super::state::{stopped, AppState};
use super::text::Utf8Stream;
use super::viewport::Seat;
use super::wire::Envelope;
use super::{check_pwd_origin, proxy_host};
use crate::error::ApiError;
use crate::sessions::MAIN_TERMINAL;
use crate::wire::{Event, NodeStatus, NodeView, SessionView, StatsView};

/// Largest message a page may send (a pasted file arrives in one).
const MAX_MESSAGE: usize = 4 << 20;
/// The socket's read buffer (the library's 128 KiB default is zero-filled on every read).
const READ_BUFFER: usize = 16 << 10;
/// Most terminal bytes in one `instance terminal out`.
const FRAME_BYTES: usize = 16 << 10;
/// Messages waiting for the socket, over all nodes: what a slow page holds.
const OUT_QUEUE: usize = 32;
/// How long a page may take to accept one message before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Keepalive; a page that answered nothing for a whole interval after a ping is dropped.
const PING: Duration = Duration::from_secs(20);

pub async fn socket(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_pwd_origin(&s, &headers)?;
    let ws = need_upgrade(ws)?;
    let (snapshot, events) = s.sessions.subscribe(&sid)?;
    let span = tracing::info_span!("pwd_socket", session = %sid);
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            async move {
                let seat = s.pwd_viewports.join(&sid);
                let (out, queue) = mpsc::channel(OUT_QUEUE);
                let mut page = Page {
                    s,
                    sid,
                    seat,
                    out,
                    events: VecDeque::new(),
                    nodes: HashMap::new(),
                };
                let end = page.serve(socket, snapshot, events, queue).await;
                tracing::debug!(end, "pwd page left");
            }
            .instrument(span)
        }))
}

/// One page's socket: its node viewers and its place in the session's resize group.
struct Page {
    s: AppState,
    sid: String,
    seat: Seat,
    /// Terminal output from the node tasks, bounded: a slow page holds back its viewers.
    out: mpsc::Sender<String>,
    /// Everything else for the page, sent before more output. Not through `out`, which the
    /// node tasks may have filled while this page's loop is the one that empties it.
    events: VecDeque<String>,
    nodes: HashMap<String, Link>,
}

/// A node this page follows.
struct Link {
    input: ViewerInput,
    task: JoinHandle<()>,
    ports: Vec<u16>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Page {
    /// Runs until the page leaves, the session ends or the server stops; says why.
    async fn serve(
        &mut self,
        socket: WebSocket,
        snapshot: SessionView,
        mut events: broadcast::Receiver<Event>,
        mut queue: mpsc::Receiver<String>,
    ) -> &'static str {
        let (mut sink, mut stream) = socket.split();
        let mut shutdown = self.s.shutdown.clone();
        let mut size = self.seat.size.clone();
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        let mut heard = true;
        self.follow_all(&snapshot.nodes).await;
        loop {
            if let Some(text) = self.events.pop_front() {
                if !send_timed(&mut sink, Message::Text(text.into())).await {
                    return "page stopped reading";
                }
                continue;
            }
            let send = tokio::select! {
                Some(text) = queue.recv() => Message::Text(text.into()),
                ev = events.recv() => match ev {
                    Ok(Event::Ended { .. }) | Err(broadcast::error::RecvError::Closed) => {
                        let end = Envelope::text("session end", vec![]);
                        let _ = send_timed(&mut sink, Message::Text(end.into())).await;
                        let _ = send_timed(&mut sink, close(1000, "the session ended")).await;
                        return "session ended";
                    }
                    Ok(ev) => {
                        self.on_event(ev).await;
                        continue;
                    }
                    // Too slow to follow: start again from the current state.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match self.s.sessions.subscribe(&self.sid) {
                            Ok((now, fresh)) => {
                                events = fresh;
                                self.follow_all(&now.nodes).await;
                            }
                            Err(_) => return "session gone",
                        }
                        continue;
                    }
                },
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        heard = true;
                        self.on_message(&text).await;
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return "page left",
                    Some(Ok(_)) => {
                        heard = true;
                        continue;
                    }
                },
                Ok(()) = size.changed() => {
                    let Some(WinSize { cols, rows }) = *size.borrow_and_update() else { continue };
                    self.resize_all(WinSize { cols, rows });
                    Message::Text(Envelope::text("instance viewport resize", vec![json!(cols), json!(rows)]).into())
                }
                _ = ping.tick() => {
                    if !std::mem::take(&mut heard) {
                        return "page answered no ping";
                    }
                    Message::Ping(Bytes::new())
                }
                () = stopped(&mut shutdown) => {
                    let _ = send_timed(&mut sink, close(1001, "the server is restarting")).await;
                    return "server stopped";
                }
            };
            if !send_timed(&mut sink, send).await {
                return "page stopped reading";
            }
        }
    }

    /// Follows every running node of `nodes` not followed yet, and forgets the others.
    async fn follow_all(&mut self, nodes: &[NodeView]) {
        let gone: Vec<String> = (self.nodes.keys())
            .filter(|name| !nodes.iter().any(|n| &n.name == *name))
            .cloned()
            .collect();
        for name in gone {
            self.nodes.remove(&name);
            self.events
                .push_back(Envelope::text("instance delete", vec![json!(name)]));
        }
        for node in nodes {
            self.follow(node).await;
        }
    }

    /// Starts following a running node: its viewer, then `instance new` (and its ports).
    async fn follow(&mut self, node: &NodeView) {
        if node.status != NodeStatus::Running || self.nodes.contains_key(&node.name) {
            return;
        }
        let term = match self
            .s
            .sessions
            .terminal(&self.sid, &node.name, MAIN_TERMINAL)
            .await
        {
            Ok(t) => t,
            Err(e) => return self.notice(&node.name, &format!("no terminal: {e}")),
        };
        let viewer = match term.attach(None, false) {
            Ok(v) => v,
            Err(e) => return self.notice(&node.name, &format!("no terminal: {e}")),
        };
        let input = viewer.input();
        if let Some(size) = *self.seat.size.borrow() {
            let _ = input.resize(size);
        }
        let ip = node.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let new = Envelope::text(
            "instance new",
            vec![
                json!(node.name),
                json!(ip),
                json!(node.hostname),
                json!(proxy_host(&node.name, &self.sid)),
            ],
        );
        self.events.push_back(new);
        let task = tokio::spawn(forward(node.name.clone(), viewer, self.out.clone()));
        let mut link = Link {
            input,
            task,
            ports: Vec::new(),
        };
        self.ports(&node.name, &mut link, node);
        self.nodes.insert(node.name.clone(), link);
    }

    /// Sends `instance docker ports` when a node's published ports changed.
    fn ports(&mut self, name: &str, link: &mut Link, node: &NodeView) {
        let ports: Vec<u16> = node.ports.iter().map(|p| p.port).collect();
        if ports != link.ports {
            link.ports = ports;
            let msg = json!({"instance": name, "ports": link.ports});
            self.events
                .push_back(Envelope::text("instance docker ports", vec![msg]));
        }
    }

    async fn on_event(&mut self, ev: Event) {
        match ev {
            Event::NodeAdded { node } | Event::NodeUpdated { node } => {
                if let Some(mut link) = self.nodes.remove(&node.name) {
                    self.ports(&node.name, &mut link, &node);
                    self.nodes.insert(node.name.clone(), link);
                } else {
                    self.follow(&node).await;
                }
            }
            Event::NodeRemoved { name } if self.nodes.remove(&name).is_some() => {
                self.events
                    .push_back(Envelope::text("instance delete", vec![json!(name)]));
            }
            Event::Stats { nodes } => {
                for (name, stats) in nodes {
                    let msg = Envelope::text("instance stats", vec![stats_json(&name, &stats)]);
                    self.events.push_back(msg);
                }
            }
            _ => {}
        }
    }

    /// A message from the page: keystrokes (or a clicked code block) for a node, or its size.
    /// Anything else is ignored, as PWD did.
    async fn on_message(&mut self, text: &str) {
        let Ok(msg) = serde_json::from_str::<Envelope>(text) else {
            return;
        };
        match (msg.name.as_str(), msg.args.as_slice()) {
            ("instance terminal in", [Value::String(name), Value::String(data)]) => {
                let Some(link) = self.nodes.get(name) else {
                    return;
                };
                // Queued by a task of its own, so input the server has taken reaches the
                // shell whole even if the page leaves meanwhile; awaited, so it stays in order.
                let input = link.input.clone();
                let data = Bytes::from(data.clone().into_bytes());
                let _ = tokio::spawn(async move { input.write(data).await }).await;
            }
            ("instance viewport resize", [cols, rows]) => {
                let size = (cols.as_u64(), rows.as_u64());
                if let (Some(cols), Some(rows)) = size {
                    let size = WinSize {
                        cols: u16::try_from(cols).unwrap_or(0),
                        rows: u16::try_from(rows).unwrap_or(0),
                    };
                    if size.is_valid() {
                        self.seat.set(size);
                    }
                }
            }
            _ => {}
        }
    }

    fn resize_all(&self, size: WinSize) {
        for link in self.nodes.values() {
            let _ = link.input.resize(size);
        }
    }

    /// A line in a node's terminal on this page only.
    fn notice(&mut self, name: &str, text: &str) {
        let msg = Envelope::text(
            "instance terminal out",
            vec![json!(name), json!(format!("\r\n[sandpit: {text}]\r\n"))],
        );
        self.events.push_back(msg);
    }
}

/// A node's output as `instance terminal out` messages, until its terminal closes or the page
/// leaves (the task is aborted).
async fn forward(name: String, mut viewer: Viewer, out: mpsc::Sender<String>) {
    let mut text = Utf8Stream::default();
    loop {
        let chunk = match viewer.next_limited(FRAME_BYTES).await {
            Output::Data(bytes) => text.push(&bytes),
            Output::Skipped { from, to } => {
                text.reset();
                format!(
                    "\r\n[sandpit: {} bytes of output skipped: this page read too slowly]\r\n",
                    to - from
                )
            }
            Output::Restarted { .. } => {
                text.reset();
                continue;
            }
            Output::Resized(_) => continue,
            Output::Closed { .. } => return,
        };
        if chunk.is_empty() {
            continue;
        }
        let msg = Envelope::text("instance terminal out", vec![json!(name), json!(chunk)]);
        if out.send(msg).await.is_err() {
            return;
        }
    }
}

/// PWD's figures: memory as "12.34% (45.6MiB / 1GiB)", CPU as "3.50%".
fn stats_json(name: &str, s: &StatsView) -> Value {
    let mem_percent = if s.memory_limit_bytes > 0 {
        s.memory_bytes as f64 * 100.0 / s.memory_limit_bytes as f64
    } else {
        0.0
    };
    json!({
        "instance": name,
        "mem": format!(
            "{mem_percent:.2}% ({} / {})",
            bytes(s.memory_bytes),
            bytes(s.memory_limit_bytes)
        ),
        "cpu": format!("{:.2}%", s.cpu_percent),
    })
}

/// A size in binary units, as Docker's `units.BytesSize` writes it.
fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    let v = format!("{v:.3}");
    let v = v.trim_end_matches('0').trim_end_matches('.');
    format!("{v}{}", units[unit])
}

async fn send_timed<S>(sink: &mut S, msg: Message) -> bool
where
    S: futures_util::Sink<Message> + Unpin,
{
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, sink.send(msg)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_like_pwd() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(1 << 30), "1GiB");
        let s = StatsView {
            cpu_percent: 3.5,
            memory_bytes: 256 << 20,
            memory_limit_bytes: 1 << 30,
            pids: 1,
            disk_used_bytes: 0,
            disk_total_bytes: 0,
        };
        assert_eq!(
            stats_json("node1", &s),
            json!({"instance": "node1", "mem": "25.00% (256MiB / 1GiB)", "cpu": "3.50%"})
        );
    }
}
