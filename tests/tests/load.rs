//! Load: one server holds 500 events sockets and 200 terminal viewers at once (5 sessions of 2
//! nodes; the shells of 2 nodes print all the time, the others idle) with its memory bounded.
//! While the load is held, every socket stays open, the busy terminals' viewers keep receiving
//! output, an extension reaches every events socket of its session, and the API answers.
//! How fast it answers is a benchmark's business (`ops/bench/src/load.rs`), not this test's.
//!
//! The client drops what it reads and keeps only counters, so its own memory stays bounded too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, SinkExt, StreamExt};
use sandpit_tests::{TestServer, Ws};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

const SESSIONS: usize = 5;
const NODES_PER_SESSION: usize = 2;
const NODES: usize = SESSIONS * NODES_PER_SESSION;
const EVENT_SOCKETS: usize = 500;
/// Spread evenly over the nodes: 20 each, within a terminal's 64.
const VIEWERS: usize = 200;
/// Nodes whose shell prints all the time; their viewers are the active ones.
const ACTIVE_NODES: usize = 2;
const ACTIVE_COMMAND: &str = "while :; do date; sleep 0.05; done\r";
const HOLD: Duration = Duration::from_secs(10);
/// Sockets being opened at once.
const OPENING: usize = 32;
/// The server's resident memory under this load: measured at 113 MiB (debug build, 2026-12-02),
/// about 137 KiB per socket, most of it the WebSocket library's read buffer.
const RSS_BOUND_MIB: u64 = 256;
/// How long one expected thing (a first message, an event) may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// What one socket's reader has seen, read by the test while it runs.
#[derive(Default)]
struct Seen {
    /// Terminal output bytes.
    output: AtomicU64,
    /// `extended` events.
    extended: AtomicU64,
}

/// An open socket, read in its own task until `stop`.
struct Held {
    /// The session (events) or node (viewers) it belongs to.
    group: usize,
    seen: Arc<Seen>,
    task: JoinHandle<Result<(), String>>,
}

/// Reads `ws` until `stop`, keeping counts only, then closes it. An error says how the socket
/// ended before it was told to stop.
async fn hold(mut ws: Ws, seen: Arc<Seen>, mut stop: watch::Receiver<bool>) -> Result<(), String> {
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    seen.output.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).map_err(|e| format!("{e}: {t}"))?;
                    match v["type"].as_str() {
                        Some("extended") => {
                            seen.extended.fetch_add(1, Ordering::Relaxed);
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
    let drained = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(_)) = ws.next().await {}
    });
    drained
        .await
        .map_err(|_| "no close from the server".to_owned())
}

/// The first text message of `ws`, as JSON.
async fn first_text(ws: &mut Ws, what: &str) -> Value {
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("{what}: ended before its first message: {other:?}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: no first message in {PATIENCE:?}"))
}

/// The server's resident memory, in KiB.
fn rss_kib(srv: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in the server's status")
}

/// This process holds a socket per connection: more than the common soft limit of 1024.
fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let needed = (EVENT_SOCKETS + VIEWERS + 200) as u64;
    assert!(
        soft >= needed,
        "open-file limit {soft}, the test needs {needed}"
    );
}

fn output_of(held: &[&Held]) -> Vec<u64> {
    held.iter()
        .map(|h| h.seen.output.load(Ordering::Relaxed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_holds_500_event_sockets_and_200_viewers_with_bounded_memory() {
    let t0 = Instant::now();
    raise_own_fd_limit();
    let srv = TestServer::start(&[]);
    let mut sids = Vec::new();
    for _ in 0..SESSIONS {
        sids.push(srv.session_id().await);
    }
    // Created at once; (session index, node name).
    let creates = (0..NODES).map(|k| {
        let (srv, sid) = (&srv, &sids[k / NODES_PER_SESSION]);
        async move { srv.node(sid).await["name"].as_str().unwrap().to_owned() }
    });
    let names = futures_util::future::join_all(creates).await;
    let nodes: Vec<(usize, String)> = names
        .into_iter()
        .enumerate()
        .map(|(k, name)| (k / NODES_PER_SESSION, name))
        .collect();
    let active = |k: usize| k.is_multiple_of(NODES / ACTIVE_NODES);
    let rss_idle = rss_kib(&srv);
    eprintln!(
        "{NODES} nodes ready after {:?}; server RSS {} MiB",
        t0.elapsed(),
        rss_idle >> 10
    );

    let (stop_tx, stop) = watch::channel(false);
    let opened = Instant::now();
    let events: Vec<Held> = stream::iter(0..EVENT_SOCKETS)
        .map(|i| {
            let group = i % SESSIONS;
            let sid = &sids[group];
            let (srv, stop) = (&srv, stop.clone());
            async move {
                let path = format!("/api/sessions/{sid}/events");
                let mut ws = srv.ws(&path, None).await.expect("open an events socket");
                let snapshot = first_text(&mut ws, &path).await;
                assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
                assert_eq!(snapshot["session"]["id"], sid.as_str(), "{snapshot}");
                let seen = Arc::new(Seen::default());
                let task = tokio::spawn(hold(ws, seen.clone(), stop));
                Held { group, seen, task }
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let events_opened = opened.elapsed();
    let viewers: Vec<Held> = stream::iter(0..VIEWERS)
        .map(|i| {
            let group = i % NODES;
            let (s, node) = &nodes[group];
            let sid = &sids[*s];
            let (srv, stop) = (&srv, stop.clone());
            async move {
                let path = format!("/api/sessions/{sid}/nodes/{node}/terminal");
                let mut ws = srv.ws(&path, None).await.expect("open a viewer");
                let hello = first_text(&mut ws, &path).await;
                assert_eq!(hello["type"], "hello", "{hello}");
                // The first viewer of an active node starts its printing.
                if active(group) && i < NODES {
                    let typed = Message::binary(ACTIVE_COMMAND.as_bytes().to_vec());
                    ws.send(typed).await.expect("type into the terminal");
                }
                let seen = Arc::new(Seen::default());
                let task = tokio::spawn(hold(ws, seen.clone(), stop));
                Held { group, seen, task }
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let rss_loaded = rss_kib(&srv);
    eprintln!(
        "{EVENT_SOCKETS} events sockets open in {events_opened:?}, {VIEWERS} viewers {:?} \
         later; server RSS {} MiB",
        opened.elapsed() - events_opened,
        rss_loaded >> 10
    );

    // Hold the load: the API answers, memory stays bounded, the busy shells' output flows.
    let busy: Vec<&Held> = viewers.iter().filter(|v| active(v.group)).collect();
    assert_eq!(busy.len(), ACTIVE_NODES * VIEWERS / NODES);
    let mut marks = vec![output_of(&busy)];
    let held = Instant::now();
    let (mut rss_peak, mut api_slowest, mut rounds) = (rss_loaded, Duration::ZERO, 0);
    let mut extended = false;
    while held.elapsed() < HOLD {
        let asked = Instant::now();
        let (status, health) = srv.get("/healthz").await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["viewers"], VIEWERS, "{health}");
        assert_eq!(health["sessions"], SESSIONS, "{health}");
        let sid = &sids[rounds % SESSIONS];
        let (status, session) = srv.get(&format!("/api/sessions/{sid}")).await;
        assert_eq!(status, 200, "{session}");
        assert_eq!(
            session["nodes"].as_array().unwrap().len(),
            NODES_PER_SESSION
        );
        api_slowest = api_slowest.max(asked.elapsed());

        let rss = rss_kib(&srv);
        rss_peak = rss_peak.max(rss);
        assert!(
            rss >> 10 < RSS_BOUND_MIB,
            "server RSS {} MiB under load, bound {RSS_BOUND_MIB} MiB",
            rss >> 10
        );
        if !extended && held.elapsed() >= HOLD / 2 {
            marks.push(output_of(&busy));
            extend_reaches_every_socket(&srv, &sids, &events).await;
            extended = true;
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    marks.push(output_of(&busy));
    // Every busy viewer got output in each half of the hold.
    for pair in marks.windows(2) {
        for (i, (before, after)) in pair[0].iter().zip(&pair[1]).enumerate() {
            assert!(after > before, "busy viewer {i} got no output: {marks:?}");
        }
    }
    let ended: Vec<String> = events
        .iter()
        .chain(&viewers)
        .filter(|h| h.task.is_finished())
        .map(|h| format!("group {}", h.group))
        .collect();
    assert!(ended.is_empty(), "sockets ended under load: {ended:?}");
    let busy_bytes: u64 = busy
        .iter()
        .map(|h| h.seen.output.load(Ordering::Relaxed))
        .sum();
    eprintln!(
        "held {:?}: {rounds} rounds of /healthz and GET session, slowest pair {api_slowest:?}; \
         server RSS peak {} MiB; busy viewers received {} KiB in all",
        held.elapsed(),
        rss_peak >> 10,
        busy_bytes >> 10
    );

    stop_tx.send(true).unwrap();
    for h in events.into_iter().chain(viewers) {
        h.task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("group {}: {e}", h.group));
    }
    for sid in &sids {
        let (status, body) = srv.delete(&format!("/api/sessions/{sid}")).await;
        assert_eq!(status, 204, "{body}");
    }
    srv.finish().await;
    eprintln!("load test done in {:?}", t0.elapsed());
}

/// Extends each session; every one of its events sockets gets the `extended` event.
async fn extend_reaches_every_socket(srv: &TestServer, sids: &[String], events: &[Held]) {
    for (s, sid) in sids.iter().enumerate() {
        let (status, body) = srv
            .post(&format!("/api/sessions/{sid}/extend"), json!({"secs": 600}))
            .await;
        assert_eq!(status, 200, "extend: {body}");
        let mine: Vec<&Held> = events.iter().filter(|h| h.group == s).collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = mine
                .iter()
                .filter(|h| h.seen.extended.load(Ordering::Relaxed) > 0)
                .count();
            if got == mine.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "`extended` reached {got} of {} events sockets of session {s}",
                mine.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
