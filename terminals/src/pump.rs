//! The WebSocket pump: one viewer served over one connection, whatever the WebSocket library.
//!
//! [`pump`] is generic over a `Sink<Frame>` and a `Stream<Item = Result<Frame, E>>`, so the
//! server adapts axum's socket in a few lines and tests adapt tokio-tungstenite. It sends the
//! hello, then runs two halves until one ends:
//!
//! - **outbound**: replies to control messages, keepalive pings, then the viewer's output. One
//!   frame is in flight at a time (each send is awaited, flush included), so a viewer that does
//!   not read only stalls its own pump while its offset falls behind in the shared ring; a
//!   connection that accepts no frame for `send_timeout` is dropped. With acks the client
//!   bounds what is unacknowledged to `ack_window`, for browsers, which do not push back.
//! - **inbound**: binary frames are input for the shell; text frames are control messages.
//!   Refusals are `error` messages; the connection and the shell go on.
//!
//! A ping goes out every `ping_interval`; a peer from which nothing at all arrived during a
//! whole interval after a ping is disconnected (ping frames are answered by the WebSocket
//! library itself, so none are answered here).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;

use crate::error::TerminalError;
use crate::protocol::{
    ClientMessage, ServerMessage, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL,
};
use crate::size::WinSize;
use crate::viewer::{Output, Viewer, DEFAULT_FRAME_BYTES};

/// A WebSocket message, independent of the library that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Binary(Bytes),
    Text(String),
    Ping(Bytes),
    Pong(Bytes),
    /// A close, with an optional code and reason.
    Close(Option<(u16, String)>),
}

/// Timing and sizes of a pump.
#[derive(Clone, Debug)]
pub struct PumpOptions {
    /// How often to ping the peer; a peer silent for a whole interval after a ping is dropped.
    pub ping_interval: Duration,
    /// Longest wait for the peer to accept one frame.
    pub send_timeout: Duration,
    /// Most terminal bytes per binary frame.
    pub frame_bytes: usize,
    /// Most unacknowledged bytes once the client acks (see [`ClientMessage::Ack`]).
    pub ack_window: u64,
}

impl Default for PumpOptions {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(20),
            send_timeout: Duration::from_secs(60),
            frame_bytes: DEFAULT_FRAME_BYTES,
            ack_window: 1 << 20,
        }
    }
}

/// How a pump ended normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpEnd {
    /// The client sent a close.
    ClientClosed,
    /// The connection ended without a close.
    Disconnected,
    /// The terminal was closed with this reason.
    TerminalClosed(String),
}

/// How a pump failed; the connection is over.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("send to the websocket: {0}")]
    Send(String),
    #[error("receive from the websocket: {0}")]
    Receive(String),
    #[error("the peer accepted no frame for {0:?}")]
    Stalled(Duration),
    #[error("the peer did not answer a ping within {0:?}")]
    PingTimeout(Duration),
    #[error("queue input: {0}")]
    Input(String),
}

/// Longest wait for the closing handshake at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Replies queued by the inbound half before it waits for the outbound half.
const REPLY_QUEUE: usize = 16;
/// Longest close reason a close frame can carry.
const MAX_CLOSE_REASON: usize = 123;

/// Serves `viewer` over one WebSocket until either side ends it, then closes the connection
/// with a fitting code (1000 after the client's close, 1001 when the terminal closed or the
/// peer stopped reading or answering, 1011 on other failures).
pub async fn pump<S, R, E>(
    mut viewer: Viewer,
    mut sink: S,
    mut stream: R,
    opts: &PumpOptions,
) -> Result<PumpEnd, PumpError>
where
    S: Sink<Frame> + Unpin,
    S::Error: std::fmt::Display,
    R: Stream<Item = Result<Frame, E>> + Unpin,
    E: std::fmt::Display,
{
    let size = viewer.size();
    let hello = ServerMessage::Hello {
        offset: viewer.offset(),
        cols: size.cols,
        rows: size.rows,
        readonly: viewer.readonly(),
        stream: viewer.stream().to_owned(),
        window: opts.ack_window,
    };
    let mut end = send(&mut sink, Frame::Text(hello.to_json()), opts).await;
    if let (Ok(()), Some(e)) = (&end, viewer.resume_error()) {
        let msg = ServerMessage::error(format!(
            "bad since: {e}; replaying from offset {}",
            viewer.offset()
        ));
        end = send(&mut sink, Frame::Text(msg.to_json()), opts).await;
    }
    let end = match end {
        Ok(()) => serve(&mut viewer, &mut sink, &mut stream, opts).await,
        Err(e) => Err(e),
    };
    let close = match &end {
        Ok(PumpEnd::ClientClosed) => Some((CLOSE_NORMAL, String::new())),
        Ok(PumpEnd::TerminalClosed(reason)) => Some((CLOSE_GOING_AWAY, reason.clone())),
        Ok(PumpEnd::Disconnected) | Err(PumpError::Send(_)) => None,
        Err(e @ (PumpError::Stalled(_) | PumpError::PingTimeout(_))) => {
            Some((CLOSE_GOING_AWAY, e.to_string()))
        }
        Err(e @ (PumpError::Receive(_) | PumpError::Input(_))) => {
            Some((CLOSE_INTERNAL_ERROR, e.to_string()))
        }
    };
    if let Some((code, reason)) = close {
        let frame = Frame::Close(Some((code, truncate(reason, MAX_CLOSE_REASON))));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if sink.send(frame).await.is_ok() && !matches!(end, Ok(PumpEnd::ClientClosed)) {
                // Read until the peer's close, so the socket is not reset under frames the
                // peer has yet to read.
                while let Some(Ok(frame)) = stream.next().await {
                    if matches!(frame, Frame::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
    end
}

/// The two halves, until one ends.
async fn serve<S, R, E>(
    viewer: &mut Viewer,
    sink: &mut S,
    stream: &mut R,
    opts: &PumpOptions,
) -> Result<PumpEnd, PumpError>
where
    S: Sink<Frame> + Unpin,
    S::Error: std::fmt::Display,
    R: Stream<Item = Result<Frame, E>> + Unpin,
    E: std::fmt::Display,
{
    let input = viewer.input();
    let (reply_tx, mut replies) = mpsc::channel::<ServerMessage>(REPLY_QUEUE);
    let (ack_tx, mut acks) = watch::channel::<Option<u64>>(None);
    // Frames received so far: the ping timer's proof of life.
    let heard = AtomicU64::new(0);
    // Set while inbound waits for the shell to take input (it reads no pongs meanwhile).
    let busy = AtomicBool::new(false);
    // The viewer's offset after the latest frame handed to the sink: the most a client may ack.
    let sent = AtomicU64::new(viewer.offset());

    let outbound = async {
        let start = tokio::time::Instant::now() + opts.ping_interval;
        let mut ticker = tokio::time::interval_at(start, opts.ping_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard_at_ping: Option<u64> = None;
        loop {
            let allowed = match *acks.borrow_and_update() {
                None => opts.frame_bytes,
                Some(acked) => {
                    let unacked = viewer.offset().saturating_sub(acked);
                    let room = opts.ack_window.saturating_sub(unacked);
                    usize::try_from(room)
                        .unwrap_or(usize::MAX)
                        .min(opts.frame_bytes)
                }
            };
            let frame = tokio::select! {
                biased;
                Some(msg) = replies.recv() => Frame::Text(msg.to_json()),
                _ = ticker.tick() => {
                    let now_heard = heard.load(Ordering::Relaxed);
                    if heard_at_ping == Some(now_heard) && !busy.load(Ordering::Relaxed) {
                        return Err(PumpError::PingTimeout(opts.ping_interval));
                    }
                    heard_at_ping = Some(now_heard);
                    Frame::Ping(Bytes::new())
                }
                // Window full: only events flow until the client acks more.
                Ok(()) = acks.changed(), if allowed == 0 => continue,
                out = viewer.next_limited(allowed) => {
                    sent.store(viewer.offset(), Ordering::Relaxed);
                    match out {
                        Output::Data(bytes) => Frame::Binary(bytes),
                        Output::Skipped { from, to } => {
                            Frame::Text(ServerMessage::Skipped { from, to }.to_json())
                        }
                        Output::Restarted { offset } => {
                            Frame::Text(ServerMessage::Restarted { offset }.to_json())
                        }
                        Output::Resized(WinSize { cols, rows }) => {
                            Frame::Text(ServerMessage::Resized { cols, rows }.to_json())
                        }
                        Output::Closed { reason } => {
                            let msg = ServerMessage::Closed { reason: reason.clone() };
                            send(sink, Frame::Text(msg.to_json()), opts).await?;
                            return Ok(PumpEnd::TerminalClosed(reason));
                        }
                    }
                }
            };
            send(sink, frame, opts).await?;
        }
    };

    let inbound = async {
        while let Some(frame) = stream.next().await {
            heard.fetch_add(1, Ordering::Relaxed);
            let frame = frame.map_err(|e| PumpError::Receive(e.to_string()))?;
            let reply = match frame {
                Frame::Binary(_) if input.readonly() => Some(ServerMessage::error(
                    "this viewer is read-only: input ignored",
                )),
                Frame::Binary(data) => {
                    // Queued by a task of its own, so input the server has received reaches
                    // the shell whole even if this connection ends meanwhile; awaited, so this
                    // viewer's messages stay in order.
                    busy.store(true, Ordering::Relaxed);
                    let input = input.clone();
                    let written = tokio::spawn(async move { input.write(data).await }).await;
                    busy.store(false, Ordering::Relaxed);
                    match written {
                        // A closed terminal is reported by the outbound half.
                        Ok(_) => None,
                        Err(e) => return Err(PumpError::Input(e.to_string())),
                    }
                }
                Frame::Text(text) => match ClientMessage::parse(&text) {
                    Err(e) => Some(ServerMessage::error(e.to_string())),
                    Ok(ClientMessage::Ping {}) => Some(ServerMessage::Pong),
                    Ok(ClientMessage::Resize { cols, rows }) => {
                        match input.resize(WinSize { cols, rows }) {
                            Err(TerminalError::ReadOnly) => Some(ServerMessage::error(
                                "this viewer is read-only: resize ignored",
                            )),
                            Err(e) => Some(ServerMessage::error(e.to_string())),
                            Ok(()) => None,
                        }
                    }
                    Ok(ClientMessage::Ack { offset }) => {
                        let sent = sent.load(Ordering::Relaxed);
                        if offset > sent {
                            Some(ServerMessage::error(format!(
                                "ack offset {offset} is beyond the last byte sent ({sent})"
                            )))
                        } else {
                            ack_tx.send_if_modified(|acked| {
                                let newer = acked.is_none_or(|a| offset > a);
                                if newer {
                                    *acked = Some(offset);
                                }
                                newer
                            });
                            None
                        }
                    }
                },
                Frame::Ping(_) | Frame::Pong(_) => None,
                Frame::Close(_) => return Ok(PumpEnd::ClientClosed),
            };
            if let Some(reply) = reply {
                if reply_tx.send(reply).await.is_err() {
                    break;
                }
            }
        }
        Ok(PumpEnd::Disconnected)
    };

    tokio::select! {
        end = outbound => end,
        end = inbound => end,
    }
}

/// Sends one frame and waits until the sink took it (flushed), at most `send_timeout`.
async fn send<S>(sink: &mut S, frame: Frame, opts: &PumpOptions) -> Result<(), PumpError>
where
    S: Sink<Frame> + Unpin,
    S::Error: std::fmt::Display,
{
    match tokio::time::timeout(opts.send_timeout, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(PumpError::Send(e.to_string())),
        Err(_) => Err(PumpError::Stalled(opts.send_timeout)),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_close_frame() {
        assert_eq!(truncate("short".into(), 123), "short");
        let long = "é".repeat(100);
        let cut = truncate(long, 123);
        assert_eq!(cut.len(), 122);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
