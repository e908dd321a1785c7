//! `GET .../nodes/{node}/terminal`: a viewer of the node's shared shell over a WebSocket
//! (`docs/protocol.md`). The terminal core (`terminals`) knows nothing of axum: this file only
//! converts frames.

use axum::extract::ws::{self, Message, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use terminals::{Frame, PumpOptions, TerminalQuery};
use tracing::Instrument;

use super::extract::{check_origin, need_upgrade, PathParams, StrictQuery};
use super::nodes::NodePath;
use super::state::AppState;
use crate::error::ApiError;
use crate::sessions::MAIN_TERMINAL;

/// Largest WebSocket message a client may send (a big paste arrives in one). Each viewer holds
/// at most one message until the shell takes it, so with the terminal's viewer limit this
/// bounds the input a terminal holds.
const MAX_WS_MESSAGE: usize = 4 << 20;
/// Each socket's read buffer: the library's default (128 KiB, zero-filled before every read)
/// was most of a viewer's memory; a 1 MiB paste only takes more reads.
const WS_READ_BUFFER: usize = 16 << 10;

pub async fn terminal(
    State(s): State<AppState>,
    PathParams(p): PathParams<NodePath>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<TerminalQuery>,
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_origin(&s, &headers)?;
    let ws = need_upgrade(ws)?;
    let name = q.name.as_deref().unwrap_or(MAIN_TERMINAL);
    if !valid_terminal_name(name) {
        return Err(ApiError::bad_request(
            "name must be 1 to 16 of a-z, 0-9 and '-'",
        ));
    }
    let term = s.sessions.terminal(&p.sid, &p.node, name).await?;
    let viewer = term.attach(q.since_in(term.id()), q.readonly)?;
    let span = tracing::info_span!("terminal", session = %p.sid, node = %p.node);
    Ok(ws
        .max_message_size(MAX_WS_MESSAGE)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| {
            async move {
                let (sink, stream) = socket.split();
                let sink = sink.with(|f: Frame| async move { Ok::<_, axum::Error>(to_message(f)) });
                let stream = stream.map(|m| m.map(from_message));
                match terminals::pump(viewer, Box::pin(sink), stream, &PumpOptions::default()).await
                {
                    Ok(end) => tracing::debug!(?end, "viewer left"),
                    Err(e) => tracing::info!(error = %e, "viewer dropped"),
                }
            }
            .instrument(span)
        }))
}

fn valid_terminal_name(name: &str) -> bool {
    (1..=16).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Binary(b) => Message::Binary(b),
        Frame::Text(t) => Message::Text(t.into()),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(c) => Message::Close(c.map(|(code, reason)| ws::CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

fn from_message(m: Message) -> Frame {
    match m {
        Message::Binary(b) => Frame::Binary(b),
        Message::Text(t) => Frame::Text(t.to_string()),
        Message::Ping(b) => Frame::Ping(b),
        Message::Pong(b) => Frame::Pong(b),
        Message::Close(c) => Frame::Close(c.map(|c| (c.code, c.reason.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_names() {
        assert!(valid_terminal_name("main"));
        assert!(valid_terminal_name("build-2"));
        assert!(!valid_terminal_name(""));
        assert!(!valid_terminal_name("Main"));
        assert!(!valid_terminal_name("a/b"));
        assert!(!valid_terminal_name("seventeen-chars-x"));
    }
}
