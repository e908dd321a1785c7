//! Test harness: a terminal with a real bash served over real WebSockets on loopback, and a
//! typed client that checks the offset arithmetic of everything it receives.

#![allow(dead_code)]

pub mod shell;
pub mod ws;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use terminals::{
    pump, PumpEnd, PumpError, PumpOptions, ServerMessage, Terminal, TerminalOptions, TerminalQuery,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use shell::HostShell;

/// Longest wait for anything a test expects; only a hang guard, never a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A terminal on a host bash, served on 127.0.0.1:<random>. Dropping it closes the terminal
/// (the shell is killed) and removes its directory.
pub struct TestServer {
    pub terminal: Terminal,
    pub addr: std::net::SocketAddr,
    /// How each pump ended, in order of ending.
    pub ends: mpsc::UnboundedReceiver<Result<PumpEnd, PumpError>>,
    pub dir: tempfile::TempDir,
    accept: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(TerminalOptions::default(), PumpOptions::default()).await
    }

    pub async fn start_with(opts: TerminalOptions, pump_opts: PumpOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("terminals-test-")
            .tempdir()
            .expect("create a temporary directory");
        let shell = HostShell {
            dir: dir.path().to_owned(),
        };
        let terminal = Terminal::start(shell, opts)
            .await
            .expect("start the terminal");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (end_tx, ends) = mpsc::unbounded_channel();
        let serving = terminal.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                stream.set_nodelay(true).ok();
                let terminal = serving.clone();
                let pump_opts = pump_opts.clone();
                let end_tx = end_tx.clone();
                tokio::spawn(async move {
                    let query = Arc::new(Mutex::new(String::new()));
                    let seen = query.clone();
                    // The error type is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback = move |req: &Request, resp: Response| {
                        *seen.lock().unwrap() = req.uri().query().unwrap_or("").to_owned();
                        Ok(resp)
                    };
                    let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    let query = query.lock().unwrap().clone();
                    let query: TerminalQuery =
                        serde_urlencoded::from_str(&query).expect("a valid query");
                    // What the server's handler does: attach, then pump.
                    let viewer = terminal
                        .attach(query.since_in(terminal.id()), query.readonly)
                        .expect("attach a viewer");
                    let (sink, stream) = ws::frames(socket);
                    let end = pump(viewer, sink, stream, &pump_opts).await;
                    end_tx.send(end).ok();
                });
            }
        });
        Self {
            terminal,
            addr,
            ends,
            dir,
            accept,
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!(
            "ws://{}/api/sessions/s/nodes/node1/terminal?{query}",
            self.addr
        )
    }

    /// Connects a client with the given query string.
    pub async fn connect(&self, query: &str) -> Client {
        Client::connect(&self.url(query), None).await
    }

    /// Closes the terminal and waits until its shell is reaped.
    pub async fn shutdown(self) {
        self.terminal.close("test over");
        tokio::time::timeout(PATIENCE, self.terminal.closed())
            .await
            .expect("the shell is reaped after close");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.terminal.close("test over");
    }
}

/// What the client got, with control messages parsed.
#[derive(Debug)]
pub enum Event {
    Data(Bytes),
    Msg(ServerMessage),
    Close(Option<(u16, String)>),
}

static MARKERS: AtomicU64 = AtomicU64::new(1000);

/// A typed terminal client that keeps every byte it saw and checks offsets as it goes.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    pub hello: ServerMessage,
    /// Offset of the next byte expected: hello offset + bytes + skipped gaps.
    pub offset: u64,
    /// Every terminal byte received, in order.
    pub seen: Vec<u8>,
    /// Offset of `seen[0]` (the hello offset).
    pub start: u64,
    /// Every control message after the hello.
    pub messages: Vec<ServerMessage>,
    /// `(offset, index in seen)` where each skip landed: `seen[index..]` starts at `offset`.
    pub skips: Vec<(u64, usize)>,
    /// The close frame, once received.
    pub closed: Option<Option<(u16, String)>>,
    searched: usize,
}

impl Client {
    /// Connects; `recv_buffer` caps the kernel's receive buffer (for a slow reader).
    pub async fn connect(url: &str, recv_buffer: Option<u32>) -> Self {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let stream = socket.connect(addr).await.expect("connect");
        stream.set_nodelay(true).ok();
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .expect("websocket handshake");
        let mut client = Self {
            ws,
            hello: ServerMessage::Pong,
            offset: 0,
            seen: Vec::new(),
            start: 0,
            messages: Vec::new(),
            skips: Vec::new(),
            closed: None,
            searched: 0,
        };
        match client.next_raw(Instant::now() + PATIENCE).await {
            Some(Message::Text(t)) => {
                client.hello = serde_json::from_str(t.as_str()).expect("hello is json");
            }
            other => panic!("expected a hello, got {other:?}"),
        }
        let ServerMessage::Hello { offset, .. } = client.hello else {
            panic!("first message is not a hello: {:?}", client.hello);
        };
        client.offset = offset;
        client.start = offset;
        client
    }

    pub fn hello_offset(&self) -> u64 {
        match self.hello {
            ServerMessage::Hello { offset, .. } => offset,
            _ => unreachable!(),
        }
    }

    pub fn stream_id(&self) -> String {
        match &self.hello {
            ServerMessage::Hello { stream, .. } => stream.clone(),
            _ => unreachable!(),
        }
    }

    async fn next_raw(&mut self, deadline: Instant) -> Option<Message> {
        tokio::time::timeout_at(deadline, self.ws.next())
            .await
            .expect("a message within the patience limit")
            .map(|m| m.expect("websocket receive"))
    }

    /// The next event, with the offset bookkeeping checked; `None` when the connection ended.
    pub async fn recv(&mut self) -> Option<Event> {
        self.recv_by(Instant::now() + PATIENCE).await
    }

    async fn recv_by(&mut self, deadline: Instant) -> Option<Event> {
        loop {
            let event = match self.next_raw(deadline).await? {
                Message::Binary(b) => {
                    self.offset += b.len() as u64;
                    self.seen.extend_from_slice(&b);
                    Event::Data(b)
                }
                Message::Text(t) => {
                    let msg: ServerMessage =
                        serde_json::from_str(t.as_str()).expect("control message is json");
                    match &msg {
                        ServerMessage::Skipped { from, to } => {
                            assert_eq!(*from, self.offset, "skipped starts where we are");
                            assert!(to > from);
                            self.offset = *to;
                            self.skips.push((*to, self.seen.len()));
                        }
                        ServerMessage::Restarted { offset } => {
                            assert_eq!(*offset, self.offset, "restart comes in stream order");
                        }
                        _ => {}
                    }
                    self.messages.push(msg.clone());
                    Event::Msg(msg)
                }
                Message::Close(c) => {
                    let c = c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned()));
                    self.closed = Some(c.clone());
                    Event::Close(c)
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            return Some(event);
        }
    }

    /// Reads until `needle` appears in the output (after earlier finds); returns the index in
    /// `seen` just past it.
    pub async fn wait_for(&mut self, needle: &[u8]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        let mut from = self.searched;
        loop {
            if let Some(i) = find(&self.seen[from..], needle) {
                self.searched = from + i + needle.len();
                return self.searched;
            }
            // Only the tail that could still start a match is searched again.
            from = from.max(self.seen.len().saturating_sub(needle.len() - 1));
            if self.recv_by(deadline).await.is_none() {
                panic!(
                    "connection ended before {:?} appeared; tail: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.seen[self.seen.len().saturating_sub(400)..])
                );
            }
        }
    }

    /// Reads until a control message matching `pred` arrives.
    pub async fn wait_msg(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        if let Some(m) = self.messages.iter().find(|m| pred(m)) {
            return m.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.recv_by(deadline).await {
                Some(Event::Msg(m)) if pred(&m) => return m,
                Some(_) => {}
                None => panic!("connection ended; messages so far: {:?}", self.messages),
            }
        }
    }

    /// Reads until the server closes; returns the close frame.
    pub async fn wait_close(&mut self) -> Option<(u16, String)> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.recv_by(deadline).await {
                Some(Event::Close(c)) => return c,
                Some(_) => {}
                None => return self.closed.clone().flatten(),
            }
        }
    }

    pub async fn send_bytes(&mut self, data: &[u8]) {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(data)))
            .await
            .expect("send input");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send text");
    }

    /// Closes cleanly and waits for the server's close.
    pub async fn close(mut self) {
        self.ws.send(Message::Close(None)).await.ok();
        let deadline = Instant::now() + PATIENCE;
        while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, self.ws.next()).await {}
    }

    /// Types `cmd` and returns its output (with the PTY's `\r\n` line ends). The markers are
    /// written as arithmetic so that the echo of the command line never matches them.
    pub async fn run(&mut self, cmd: &str) -> String {
        let (start, end) = markers();
        let line = format!("echo {}; {cmd}; echo {}\r", start.typed, end.typed);
        self.send_bytes(line.as_bytes()).await;
        let from = self.wait_for(start.printed.as_bytes()).await;
        let to = self.wait_for(end.printed.as_bytes()).await - end.printed.len();
        String::from_utf8_lossy(&self.seen[from..to]).into_owned()
    }

    /// Offset (in the stream) of `seen[i]`, valid while nothing was skipped.
    pub fn offset_of(&self, i: usize) -> u64 {
        self.start + i as u64
    }
}

/// A marker as typed (`M$((1001))M`) and as printed (`M1001M\r\n` or `M1001M\n`).
pub struct Marker {
    pub typed: String,
    pub printed: String,
}

/// A fresh pair of markers; the printed form ends with a newline so it is a whole line.
pub fn markers() -> (Marker, Marker) {
    let n = MARKERS.fetch_add(2, Ordering::Relaxed);
    let make = |n: u64| Marker {
        typed: format!("M$(({n}))M"),
        printed: format!("M{n}M\r\n"),
    };
    (make(n), make(n + 1))
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while let Some(p) = haystack[i..=haystack.len() - needle.len()]
        .iter()
        .position(|b| *b == first)
    {
        let at = i + p;
        if &haystack[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// `seq 1 n` as it prints, with `\n` line ends (the test turns `onlcr` off).
pub fn seq_output(n: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((n as usize) * 8);
    for i in 1..=n {
        out.extend_from_slice(i.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
