//! The clients of a test server's WebSockets: a session's events socket and a node's
//! terminal, each with waits bounded by a deadline.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::body::Bytes;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A WebSocket to the test server.
pub type Ws = WebSocketStream<TcpStream>;

/// A session's events socket.
pub struct Events {
    ws: Ws,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl Events {
    pub(crate) fn new(ws: Ws) -> Events {
        Events {
            ws,
            seen: Vec::new(),
        }
    }

    /// The next event; None once the server closed the socket.
    pub async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no event in {within:?}; so far: {:#?}", self.seen));
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("an event is JSON");
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Skips events until one of type `ty` (which must come within `within`).
    pub async fn until(&mut self, ty: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(v) if v["type"] == ty => return v,
                Some(_) => {}
                None => panic!(
                    "the events socket closed before {ty:?}; seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Skips events until the server closes the socket.
    pub async fn until_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
            .is_some()
        {}
    }
}

/// A node's terminal: binary frames are output, text frames control messages.
pub struct TermClient {
    ws: Ws,
    /// The server's hello (stream id, offset of the first byte, size).
    pub hello: Value,
    /// Every output byte received.
    pub output: Vec<u8>,
    searched: usize,
    /// Control messages received after the hello.
    pub texts: Vec<Value>,
    /// The close frame's code and reason, once the server closed.
    pub closed: Option<(u16, String)>,
}

impl TermClient {
    /// A viewer on `ws`, once the server's hello arrived (within `within`).
    pub(crate) async fn open(ws: Ws, within: Duration) -> TermClient {
        let mut t = TermClient {
            ws,
            hello: Value::Null,
            output: Vec::new(),
            searched: 0,
            texts: Vec::new(),
            closed: None,
        };
        t.hello = t.text(within).await;
        assert_eq!(t.hello["type"], "hello", "{}", t.hello);
        t
    }

    /// The stream id from the hello.
    pub fn stream(&self) -> &str {
        self.hello["stream"]
            .as_str()
            .expect("a hello names its stream")
    }

    /// Offset of the next byte this viewer will receive.
    pub fn offset(&self) -> u64 {
        self.hello["offset"]
            .as_u64()
            .expect("a hello has an offset")
            + self.output.len() as u64
    }

    /// Types `input` into the shell.
    pub async fn send(&mut self, input: &str) {
        self.ws
            .send(Message::Binary(Bytes::from(input.as_bytes().to_vec())))
            .await
            .expect("send terminal input");
    }

    /// Reads one frame into the buffers; false once the socket ended.
    async fn pump(&mut self, deadline: tokio::time::Instant) -> bool {
        let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
            Ok(m) => m,
            Err(_) => return true,
        };
        match msg {
            Some(Ok(Message::Binary(b))) => self.output.extend_from_slice(&b),
            Some(Ok(Message::Text(t))) => self
                .texts
                .push(serde_json::from_str(&t).expect("a control message is JSON")),
            Some(Ok(Message::Close(c))) => {
                self.closed = Some(
                    c.map(|c| (u16::from(c.code), c.reason.to_string()))
                        .unwrap_or((1005, String::new())),
                );
                return false;
            }
            None | Some(Err(_)) => return false,
            Some(Ok(_)) => {}
        }
        true
    }

    /// The next text (control) message.
    pub async fn text(&mut self, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let before = self.texts.len();
        while self.texts.len() == before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no control message in {within:?}"
            );
            assert!(
                self.pump(deadline).await,
                "the terminal closed: {:?}",
                self.closed
            );
        }
        self.texts.remove(before)
    }

    /// Waits until the output (after what earlier waits consumed) contains `needle`.
    pub async fn expect(&mut self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(at) = find(&self.output[self.searched..], needle.as_bytes()) {
                self.searched += at + needle.len();
                return;
            }
            let open = tokio::time::Instant::now() < deadline && self.pump(deadline).await;
            assert!(
                open,
                "{needle:?} not in the terminal output within {within:?} (closed: {:?}); got:\n{}",
                self.closed,
                String::from_utf8_lossy(&self.output[self.searched..])
            );
        }
    }

    /// Reads until the server closes the socket; its close code and reason.
    pub async fn until_closed(&mut self, within: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + within;
        while self.pump(deadline).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the terminal stayed open for {within:?}"
            );
        }
        self.closed.clone().unwrap_or((1006, String::new()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
