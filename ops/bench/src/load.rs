//! `load`: one `sandpit serve` holding many open sockets: its memory, and how fast its API
//! answers under that load against no load, in the same run.
//!
//! It starts its own release server on 127.0.0.1:0 (prefix `benchl`, state in
//! `/var/tmp/sandpit-bench-load`, subnet pool 10.195.0.0/16, no registries), so it runs beside a
//! production instance, the other benches and the tests. Then:
//! 1. `--sessions` sessions of `--nodes-per-session` nodes each; the API's latency with no
//!    socket open (`--requests` sequential GETs, half `GET /api/sessions/{sid}`, half
//!    `/healthz`, spread over `--idle-secs`);
//! 2. `--events` events sockets spread over the sessions (each gets its snapshot), then
//!    `--viewers` terminal viewers spread over the nodes; the first viewer of each of
//!    `--active-nodes` nodes types `--active-command`, so those nodes' viewers receive output
//!    all the time while the others idle;
//! 3. the load held `--hold-secs`: the same requests spread over it, the server's RSS sampled
//!    every 250 ms, the busy viewers' output counted; then one `extend`, timed until every
//!    events socket of its session has the `extended` event.
//!
//! Every socket is read by its own task, which keeps counters and drops the data. Requests
//! open a fresh connection each (a loopback connect is part of every figure). Prints one JSON
//! object per line on stdout and into `--out`. Whatever happens (an error, a panic, Ctrl-C),
//! the sessions are deleted, the server gets SIGTERM and `sandpit network rm --all` takes the
//! bench's instance off the host; a run killed with SIGKILL is cleaned up by the next one.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, ensure, Context};
use clap::Parser;
use futures_util::{stream, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

mod figures;
mod host;
mod instance;
mod report;
mod sockets;
mod stats;

use figures::{ms, percentile, Summary};
use host::{ensure_root, kernel_release, loadavg, mem_available_mib, traversable_dir};
use instance::{
    cpu_ticks, network_rm, rss_mib, stop_leftover_server, Api, Server, PATIENCE, POOL, PREFIX,
    STATE, TICKS,
};
use report::{Line, Report};
use sockets::{first_text, Held};
use stats::{median, round1, round_all, sorted};

/// A terminal's viewer limit.
const MAX_VIEWERS_PER_NODE: usize = 64;
/// Sockets being opened at once.
const OPENING: usize = 32;
/// How long the server is left alone after a step (nodes made, sockets opened or closed).
const SETTLE: Duration = Duration::from_secs(2);
/// How often the server's RSS is read while the load is held.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// The memory and API latency of one `sandpit serve` under many open sockets. Run as root,
/// from the workspace root.
#[derive(Parser, Clone)]
#[command(name = "load", version)]
struct Args {
    /// The server binary (a release build).
    #[arg(long, default_value = "target/release/sandpit")]
    sandpit: PathBuf,
    /// Results file, one JSON object per line (replaced on every run).
    #[arg(long, default_value = "target/bench/load.jsonl")]
    out: PathBuf,
    /// Events sockets, spread over the sessions.
    #[arg(long, default_value_t = 500)]
    events: usize,
    /// Terminal viewers, spread over the nodes (at most 64 per node).
    #[arg(long, default_value_t = 200)]
    viewers: usize,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    sessions: u64,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    nodes_per_session: u64,
    /// Nodes whose shell runs `--active-command`; their viewers are the active ones.
    #[arg(long, default_value_t = 2)]
    active_nodes: usize,
    /// What the active nodes' shells run (typed into the terminal).
    #[arg(long, default_value = "while :; do date; sleep 0.05; done")]
    active_command: String,
    /// Seconds the load is held (the requests under load are spread over it).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    hold_secs: u64,
    /// Requests in each condition (no load, load).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    requests: u64,
    /// Seconds the requests with no load are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_secs: u64,
}

impl Args {
    fn nodes(&self) -> usize {
        (self.sessions * self.nodes_per_session) as usize
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.viewers.div_ceil(self.nodes()) <= MAX_VIEWERS_PER_NODE,
            "{} viewers on {} nodes: more than {MAX_VIEWERS_PER_NODE} per terminal",
            self.viewers,
            self.nodes()
        );
        ensure!(
            self.active_nodes <= self.nodes().min(self.viewers),
            "--active-nodes is more than the nodes or the viewers"
        );
        ensure!(
            self.sandpit.is_file(),
            "{} is missing: build it with `cargo build --release --bin sandpit`",
            self.sandpit.display()
        );
        Ok(())
    }

    /// Whether node `k` is one of the active ones (spread evenly).
    fn active(&self, k: usize) -> bool {
        self.active_nodes > 0
            && k.is_multiple_of(self.nodes() / self.active_nodes)
            && k / (self.nodes() / self.active_nodes) < self.active_nodes
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure_root()?;
    args.check()?;
    raise_fd_limit(args.events + args.viewers + 256)?;
    let report = Report::create(&args.out)?;
    let load_before = loadavg();
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if Path::new(STATE).exists() {
        eprintln!("load: taking off what an earlier run left in {STATE}");
        stop_leftover_server()?;
        network_rm(&args.sandpit)?;
        std::fs::remove_dir_all(STATE).with_context(|| format!("remove {STATE}"))?;
    }
    traversable_dir(Path::new(STATE))?;
    eprintln!("load: prefix {PREFIX}, state {STATE}, pool {POOL}, load {load_before}");

    let mut server = Server::start(&args.sandpit, args.sessions, args.nodes_per_session)?;
    let api = Api {
        addr: server.addr.clone(),
    };
    let sids = Arc::new(Mutex::new(Vec::new()));
    let mut task = tokio::spawn(measure(
        args.clone(),
        api.clone(),
        server.pid,
        report.clone(),
        sids.clone(),
    ));
    let result = tokio::select! {
        r = &mut task => r.unwrap_or_else(|e| Err(anyhow!("the bench task failed: {e}"))),
        _ = tokio::signal::ctrl_c() => {
            task.abort();
            Err(anyhow!("interrupted"))
        }
    };

    eprintln!("load: cleaning up");
    let mut problems = Vec::new();
    let sids = std::mem::take(&mut *sids.lock().expect("sids"));
    for sid in sids {
        match api
            .call("DELETE", &format!("/api/sessions/{sid}"), None)
            .await
        {
            Ok((204, _)) => {}
            Ok((status, body)) => problems.push(format!("delete {sid}: {status} {body}")),
            Err(e) => problems.push(format!("delete {sid}: {e:#}")),
        }
    }
    if let Err(e) = server.stop() {
        problems.push(format!("{e:#}"));
    }
    match network_rm(&args.sandpit) {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(STATE);
        }
        Err(e) => problems.push(format!("{e:#}; run `ops/leakcheck {PREFIX}`")),
    }
    let load_after = loadavg();
    let ok = result.is_ok() && problems.is_empty();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    if let Err(e) = report.emit(
        Line::new("run")
            .with("ok", json!(ok))
            .with("started_unix", json!(started_unix))
            .with("total_s", json!(round1(started.elapsed().as_secs_f64())))
            .with("loadavg_before", json!(load_before))
            .with("loadavg_after", json!(load_after))
            .with("cpus", json!(cpus))
            .with("kernel", json!(kernel_release())),
    ) {
        problems.push(format!("{e:#}"));
    }
    eprintln!(
        "load: load before {load_before}, after {load_after}; results in {}",
        args.out.display()
    );
    // The first error stays first; cleanup failures are added, never hidden.
    match (result, problems.is_empty()) {
        (Ok(()), true) => Ok(()),
        (Ok(()), false) => bail!("{}", problems.join("; ")),
        (Err(e), true) => Err(e),
        (Err(e), false) => bail!("{e:#}; {}", problems.join("; ")),
    }
}

/// The run's sessions and nodes.
struct Layout {
    sids: Vec<String>,
    /// (session index, node name), in creation order.
    nodes: Vec<(usize, String)>,
}

/// The benchmark proper; every session it makes goes into `sids_made` at once, for the cleanup.
async fn measure(
    args: Args,
    api: Api,
    pid: u32,
    report: Report,
    sids_made: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let rss_empty = rss_mib(pid, "VmRSS")?;
    let layout = make_sessions(&args, &api, &sids_made).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_idle = rss_mib(pid, "VmRSS")?;
    let mem_idle = mem_available_mib();
    eprintln!("load: {} requests with no load", args.requests);
    let idle_secs = Duration::from_secs(args.idle_secs);
    let idle = latency(&api, &layout.sids, args.requests, idle_secs).await;

    let (stop_tx, stop) = watch::channel(false);
    let base = Instant::now();
    let events = open(&api, events_wanted(&args, &layout), &stop, base).await?;
    let events_open = base.elapsed();
    let rss_events = rss_mib(pid, "VmRSS")?;
    let viewers = open(&api, viewers_wanted(&args, &layout), &stop, base).await?;
    let viewers_open = base.elapsed() - events_open;
    // The shells start with their first viewer: let their prompts arrive before the hold.
    tokio::time::sleep(SETTLE).await;
    let rss_loaded = rss_mib(pid, "VmRSS")?;
    let mem_loaded = mem_available_mib();
    eprintln!(
        "load: {} events sockets open in {:.1} s, {} viewers in {:.1} s; holding {} s",
        events.len(),
        events_open.as_secs_f64(),
        viewers.len(),
        viewers_open.as_secs_f64(),
        args.hold_secs
    );

    let (busy, quiet): (Vec<&Held>, Vec<&Held>) =
        viewers.iter().partition(|v| args.active(v.group));
    let held = hold(&args, &api, pid, &layout.sids, &busy, &quiet).await?;
    let health = api.expect("GET", "/healthz", None, 200).await?;
    let first: Vec<&Held> = events.iter().filter(|h| h.group == 0).collect();
    let (extend_ms, extended_all_ms) = extend(&api, &layout.sids[0], &first, base).await?;
    let peak = rss_mib(pid, "VmHWM")?;

    let ended: Vec<usize> = events
        .iter()
        .chain(&viewers)
        .filter(|h| h.task.is_finished())
        .map(|h| h.group)
        .collect();
    let _ = stop_tx.send(true);
    let mut early = Vec::new();
    for h in events.into_iter().chain(viewers) {
        match h.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => early.push(e),
            Err(e) => early.push(format!("reader task: {e}")),
        }
    }
    tokio::time::sleep(SETTLE).await;
    let rss_closed = rss_mib(pid, "VmRSS")?;

    report.emit(
        Line::new("connections")
            .with("sessions", json!(args.sessions))
            .with("nodes", json!(layout.nodes.len()))
            .with("events", json!(args.events))
            .with("viewers", json!(args.viewers))
            .with("active_nodes", json!(args.active_nodes))
            .with("active_viewers", json!(held.busy_bps.len()))
            .with("events_open_ms", json!(round1(ms(events_open))))
            .with("viewers_open_ms", json!(round1(ms(viewers_open))))
            .with("healthz_viewers", health["viewers"].clone())
            .with("closed_early", json!(ended.len()))
            .with("extend_ms", json!(round1(extend_ms)))
            .with("extended_all_ms", json!(round1(extended_all_ms)))
            .with(
                "server_cpu_percent",
                json!(round1(held.server_cpu_s / held.secs * 100.0)),
            ),
    )?;
    let rss = Summary::of(&held.rss_mib);
    let per_kib = |mib: f64, n: usize| json!(round1(mib * 1024.0 / n.max(1) as f64));
    report.emit(
        Line::new("rss")
            .with("empty_mib", json!(round1(rss_empty)))
            .with("idle_mib", json!(round1(rss_idle)))
            .with("events_open_mib", json!(round1(rss_events)))
            .with("loaded_mib", json!(round1(rss_loaded)))
            .summary(&rss, "mib")
            .with("peak_mib", json!(round1(peak)))
            .with("after_close_mib", json!(round1(rss_closed)))
            .with(
                "per_event_socket_kib",
                per_kib(rss_events - rss_idle, args.events),
            )
            .with(
                "per_viewer_kib",
                per_kib(rss_loaded - rss_events, args.viewers),
            )
            .with(
                "per_connection_kib",
                per_kib(rss.median - rss_idle, args.events + args.viewers),
            )
            .with(
                "host_mem_available_drop_mib",
                json!(mem_idle.zip(mem_loaded).map(|(a, b)| round1(a - b))),
            ),
    )?;
    let load = &held.latency;
    report.emit(
        Line::new("api_latency")
            .with("requests", json!(args.requests))
            .with("idle", idle.figures())
            .with("load", load.figures())
            .with(
                "load_session_p99_ms",
                json!(round1(percentile(&load.session, 99.0))),
            )
            .with(
                "load_healthz_p99_ms",
                json!(round1(percentile(&load.healthz, 99.0))),
            )
            .with("idle_secs", json!(args.idle_secs))
            .with("load_secs", json!(round1(held.secs)))
            .with("failures", json!(idle.failures.len() + load.failures.len())),
    )?;
    let slowest = sorted(&held.busy_bps).first().copied().unwrap_or(f64::NAN);
    report.emit(
        Line::new("active_output")
            .with("command", json!(args.active_command))
            .with("active_viewers", json!(held.busy_bps.len()))
            .with(
                "per_viewer_median_Bps",
                json!(round1(median(&held.busy_bps))),
            )
            .with("per_viewer_min_Bps", json!(round1(slowest)))
            .with(
                "per_viewer_median_fps",
                json!(round1(median(&held.busy_fps))),
            )
            .with(
                "all_viewers_kBps",
                json!(round1(held.busy_bps.iter().sum::<f64>() / 1000.0)),
            )
            .with("per_viewer_Bps", json!(round_all(&held.busy_bps)))
            .with("idle_viewers_bytes", json!(held.quiet_bytes)),
    )?;

    let failures: Vec<&String> = idle.failures.iter().chain(&load.failures).collect();
    ensure!(failures.is_empty(), "requests failed: {failures:?}");
    ensure!(
        ended.is_empty(),
        "sockets of groups {ended:?} ended under load"
    );
    ensure!(
        early.is_empty(),
        "sockets ended before they were closed: {early:?}"
    );
    ensure!(
        held.busy_bps.iter().all(|b| *b > 0.0),
        "an active viewer received nothing during the hold"
    );
    Ok(())
}

/// `--sessions` sessions, then all their nodes at once.
async fn make_sessions(
    args: &Args,
    api: &Api,
    sids_made: &Mutex<Vec<String>>,
) -> anyhow::Result<Layout> {
    let mut sids = Vec::new();
    for _ in 0..args.sessions {
        let s = api
            .expect("POST", "/api/sessions", Some(json!({})), 201)
            .await?;
        let sid = s["id"].as_str().context("a session id")?.to_owned();
        sids_made.lock().expect("sids").push(sid.clone());
        sids.push(sid);
    }
    let made = Instant::now();
    let session_of = |k: usize| k / args.nodes_per_session as usize;
    let creates = (0..args.nodes()).map(|k| {
        let path = format!("/api/sessions/{}/nodes", sids[session_of(k)]);
        async move {
            let node = api.expect("POST", &path, Some(json!({})), 201).await?;
            anyhow::Ok(node["name"].as_str().context("a node name")?.to_owned())
        }
    });
    let names = futures_util::future::try_join_all(creates).await?;
    let nodes: Vec<(usize, String)> = names
        .into_iter()
        .enumerate()
        .map(|(k, name)| (session_of(k), name))
        .collect();
    eprintln!(
        "load: {} nodes ready in {:.1} s",
        nodes.len(),
        made.elapsed().as_secs_f64()
    );
    Ok(Layout { sids, nodes })
}

/// A socket to open: where, the type of its first message, and what to type once it came.
struct Want {
    /// The session (events) or node (viewers) index.
    group: usize,
    path: String,
    first: &'static str,
    typed: Option<String>,
}

/// `--events` events sockets, the sessions in turn.
fn events_wanted(args: &Args, layout: &Layout) -> Vec<Want> {
    (0..args.events)
        .map(|i| {
            let group = i % layout.sids.len();
            Want {
                group,
                path: format!("/api/sessions/{}/events", layout.sids[group]),
                first: "snapshot",
                typed: None,
            }
        })
        .collect()
}

/// `--viewers` terminal viewers, the nodes in turn; the first viewer of an active node types
/// the command that keeps its shell printing.
fn viewers_wanted(args: &Args, layout: &Layout) -> Vec<Want> {
    (0..args.viewers)
        .map(|i| {
            let group = i % layout.nodes.len();
            let (s, node) = &layout.nodes[group];
            let typist = i < layout.nodes.len() && args.active(group);
            Want {
                group,
                path: format!("/api/sessions/{}/nodes/{node}/terminal", layout.sids[*s]),
                first: "hello",
                typed: typist.then(|| format!("{}\r", args.active_command)),
            }
        })
        .collect()
}

/// Opens the sockets, [`OPENING`] at a time; each is read by its own task from its first
/// message on.
async fn open(
    api: &Api,
    wanted: Vec<Want>,
    stop: &watch::Receiver<bool>,
    base: Instant,
) -> anyhow::Result<Vec<Held>> {
    stream::iter(wanted)
        .map(|w| async move {
            let mut ws = api.ws(&w.path).await?;
            let first = first_text(&mut ws).await.with_context(|| w.path.clone())?;
            ensure!(first["type"] == w.first, "{}: first {first}", w.path);
            if let Some(input) = w.typed {
                ws.send(Message::binary(input.into_bytes()))
                    .await
                    .with_context(|| format!("type into {}", w.path))?;
            }
            Ok(Held::spawn(w.group, ws, stop.clone(), base))
        })
        .buffer_unordered(OPENING)
        .collect::<Vec<anyhow::Result<Held>>>()
        .await
        .into_iter()
        .collect()
}

/// What holding the load measured.
struct Hold {
    secs: f64,
    server_cpu_s: f64,
    /// The server's RSS every [`RSS_EVERY`].
    rss_mib: Vec<f64>,
    latency: Latency,
    /// Per busy viewer: bytes and frames received per second.
    busy_bps: Vec<f64>,
    busy_fps: Vec<f64>,
    /// What the idle viewers received meanwhile, in all.
    quiet_bytes: u64,
}

/// Holds the load for `--hold-secs` with the requests spread over it and the server's RSS
/// sampled beside them.
async fn hold(
    args: &Args,
    api: &Api,
    pid: u32,
    sids: &[String],
    busy: &[&Held],
    quiet: &[&Held],
) -> anyhow::Result<Hold> {
    let counts = |hs: &[&Held]| -> Vec<(u64, u64)> {
        hs.iter()
            .map(|h| {
                let s = &h.seen;
                (
                    s.output.load(Ordering::Relaxed),
                    s.frames.load(Ordering::Relaxed),
                )
            })
            .collect()
    };
    let (busy_before, quiet_before) = (counts(busy), counts(quiet));
    let cpu_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(pid, sampling.clone()));
    let over = Duration::from_secs(args.hold_secs);
    let latency = latency(api, sids, args.requests, over).await;
    let secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::SeqCst);
    let server_cpu_s = (cpu_ticks(pid)? - cpu_before) as f64 / TICKS;
    let (busy_after, quiet_after) = (counts(busy), counts(quiet));
    let (busy_bps, busy_fps) = busy_before
        .iter()
        .zip(&busy_after)
        .map(|(b, a)| ((a.0 - b.0) as f64 / secs, (a.1 - b.1) as f64 / secs))
        .unzip();
    let quiet_bytes = quiet_before
        .iter()
        .zip(&quiet_after)
        .map(|(b, a)| a.0 - b.0)
        .sum();
    Ok(Hold {
        secs,
        server_cpu_s,
        rss_mib: sampler.await.context("the RSS sampler")?,
        latency,
        busy_bps,
        busy_fps,
        quiet_bytes,
    })
}

/// Extends session `sid`; how long the request took and how long until the last of its events
/// sockets had the `extended` event, in ms.
async fn extend(
    api: &Api,
    sid: &str,
    sockets: &[&Held],
    base: Instant,
) -> anyhow::Result<(f64, f64)> {
    let sent_us = base.elapsed().as_micros() as f64;
    let asked = Instant::now();
    let path = format!("/api/sessions/{sid}/extend");
    api.expect("POST", &path, Some(json!({"secs": 600})), 200)
        .await?;
    let took = ms(asked.elapsed());
    let at = |h: &&Held| h.seen.extended_at_us.load(Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while sockets.iter().any(|h| at(h) == 0) {
        ensure!(
            Instant::now() < deadline,
            "`extended` reached {} of {} events sockets in {PATIENCE:?}",
            sockets.iter().filter(|h| at(h) > 0).count(),
            sockets.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_us = sockets.iter().map(at).max().unwrap_or(0) as f64;
    Ok((took, (last_us - sent_us) / 1000.0))
}

/// Latencies of one condition, in ms.
struct Latency {
    session: Vec<f64>,
    healthz: Vec<f64>,
    failures: Vec<String>,
}

impl Latency {
    fn figures(&self) -> Value {
        let all: Vec<f64> = self.session.iter().chain(&self.healthz).copied().collect();
        let s = Summary::of(&all);
        json!({
            "p50_ms": round1(s.median),
            "p95_ms": round1(s.p95),
            "p99_ms": round1(percentile(&all, 99.0)),
            "max_ms": round1(s.max),
            "mean_ms": round1(s.mean),
        })
    }
}

/// `n` sequential requests spread evenly over `over`, alternating `GET /api/sessions/{sid}`
/// (the sessions in turn) and `GET /healthz`; each must answer 200.
async fn latency(api: &Api, sids: &[String], n: u64, over: Duration) -> Latency {
    let mut l = Latency {
        session: Vec::new(),
        healthz: Vec::new(),
        failures: Vec::new(),
    };
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + over.mul_f64(i as f64 / n as f64)).await;
        let path = if i.is_multiple_of(2) {
            format!("/api/sessions/{}", sids[(i / 2) as usize % sids.len()])
        } else {
            "/healthz".to_owned()
        };
        let asked = Instant::now();
        let answer = api.call("GET", &path, None).await;
        let took = ms(asked.elapsed());
        match answer {
            Ok((200, _)) if i.is_multiple_of(2) => l.session.push(took),
            Ok((200, _)) => l.healthz.push(took),
            Ok((status, body)) => l.failures.push(format!("{path}: {status} {body}")),
            Err(e) => l.failures.push(format!("{path}: {e:#}")),
        }
    }
    l
}

/// Reads the server's RSS every [`RSS_EVERY`] while `on`; the samples in MiB.
async fn sample_rss(pid: u32, on: Arc<AtomicBool>) -> Vec<f64> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(RSS_EVERY);
    while on.load(Ordering::SeqCst) {
        tick.tick().await;
        if let Ok(mib) = rss_mib(pid, "VmRSS") {
            samples.push(mib);
        }
    }
    samples
}

/// This process holds a socket per connection: more than the common soft limit of 1024.
fn raise_fd_limit(needed: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raise the open-file limit")?;
    }
    ensure!(
        hard >= needed as u64,
        "the open-file limit is {hard}; the bench needs {needed}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_nodes_are_spread_and_counted() {
        let args = |a: &[&str]| Args::parse_from([&["load"], a].concat());
        let active =
            |args: &Args| -> Vec<usize> { (0..args.nodes()).filter(|k| args.active(*k)).collect() };
        assert_eq!(active(&args(&[])), [0, 5]);
        assert_eq!(active(&args(&["--active-nodes", "3"])), [0, 3, 6]);
        assert_eq!(active(&args(&["--active-nodes", "0"])), [] as [usize; 0]);
        let all = args(&[
            "--sessions",
            "1",
            "--nodes-per-session",
            "3",
            "--active-nodes",
            "3",
        ]);
        assert_eq!(active(&all), [0, 1, 2]);
    }
}
