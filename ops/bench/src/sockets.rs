//! The load's sockets: each is read by its own task, which keeps counters and drops the data,
//! until the bench tells it to close.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::instance::PATIENCE;

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// What one socket's reader has seen.
#[derive(Default)]
pub(crate) struct Seen {
    /// Terminal output bytes and frames.
    pub(crate) output: AtomicU64,
    pub(crate) frames: AtomicU64,
    /// When the first `extended` event came, in µs since the bench's base instant; 0 before.
    pub(crate) extended_at_us: AtomicU64,
}

/// An open socket, read by its own task until told to stop.
pub(crate) struct Held {
    /// The session (events) or node (viewers) it belongs to.
    pub(crate) group: usize,
    pub(crate) seen: Arc<Seen>,
    pub(crate) task: JoinHandle<Result<(), String>>,
}

impl Held {
    pub(crate) fn spawn(group: usize, ws: Ws, stop: watch::Receiver<bool>, base: Instant) -> Held {
        let seen = Arc::new(Seen::default());
        let task = tokio::spawn(read(ws, seen.clone(), stop, base));
        Held { group, seen, task }
    }
}

/// Reads `ws` until `stop`, keeping counts only, then closes it. An error says how the socket
/// ended before it was told to stop.
async fn read(
    mut ws: Ws,
    seen: Arc<Seen>,
    mut stop: watch::Receiver<bool>,
    base: Instant,
) -> Result<(), String> {
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    seen.output.fetch_add(b.len() as u64, Ordering::Relaxed);
                    seen.frames.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).map_err(|e| format!("{e}: {t}"))?;
                    match v["type"].as_str() {
                        Some("extended") => {
                            let at = base.elapsed().as_micros() as u64;
                            let _ = seen.extended_at_us.compare_exchange(
                                0, at.max(1), Ordering::Relaxed, Ordering::Relaxed);
                        }
                        Some("ended" | "closed") => return Err(format!("the server said {v}")),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(c))) => return Err(format!("closed by the server: {c:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("the socket ended".into()),
            },
            _ = stop.changed() => break,
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    });
    drained
        .await
        .map_err(|_| "no close from the server".to_owned())
}

/// The first text message of `ws`, as JSON.
pub(crate) async fn first_text(ws: &mut Ws) -> anyhow::Result<Value> {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => bail!("ended before its first message: {other:?}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .map_err(|_| anyhow!("no first message in {PATIENCE:?}"))?
}
