//! `GET /api/sessions/{sid}/events`: a snapshot, then the session's events as JSON text frames,
//! until the session ends or the server shuts down.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{self, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::sync::broadcast;
use tracing::Instrument;

use super::extract::{check_origin, need_upgrade, PathParams};
use super::state::{stopped, AppState};
use crate::error::ApiError;
use crate::wire::{EndReason, Event, SessionView};

/// How often the events socket pings.
const EVENTS_PING: Duration = Duration::from_secs(20);
/// Largest message a client may send. The socket takes none (what comes is read and dropped),
/// but the WebSocket library buffers a whole message first, up to 64 MiB by default: per
/// socket, for anyone who knows a session id.
const MAX_CLIENT_MESSAGE: usize = 4 << 10;

pub async fn events(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_origin(&s, &headers)?;
    let ws = need_upgrade(ws)?;
    let (snapshot, rx) = s.sessions.subscribe(&sid)?;
    let span = tracing::info_span!("events", session = %sid);
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        // Not the library's 128 KiB, zero-filled before every read: most of a socket's memory.
        .read_buffer_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(s, sid, snapshot, rx, socket).instrument(span)))
}

async fn serve(
    s: AppState,
    sid: String,
    snapshot: SessionView,
    mut rx: broadcast::Receiver<Event>,
    mut socket: WebSocket,
) {
    let mut shutdown = s.shutdown.clone();
    let mut ping = tokio::time::interval(EVENTS_PING);
    ping.tick().await;
    let mut next = Some(Event::Snapshot { session: snapshot });
    loop {
        if let Some(ev) = next.take() {
            let ended = matches!(ev, Event::Ended { .. });
            let text = serde_json::to_string(&ev).unwrap_or_default();
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
            if ended {
                let _ = socket.send(close(1000, "the session ended")).await;
                return;
            }
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => next = Some(ev),
                // Too slow to follow: start again from the current state.
                Err(broadcast::error::RecvError::Lagged(_)) => match s.sessions.subscribe(&sid) {
                    Ok((session, fresh)) => {
                        rx = fresh;
                        next = Some(Event::Snapshot { session });
                    }
                    Err(_) => next = Some(Event::Ended { reason: EndReason::Deleted }),
                },
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = socket.send(close(1000, "the session ended")).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            () = stopped(&mut shutdown) => {
                let _ = socket.send(close(1001, "the server is restarting")).await;
                return;
            }
        }
    }
}

/// A close frame (also the PWD socket's).
pub(super) fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}
