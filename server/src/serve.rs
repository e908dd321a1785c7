//! `sandpit serve`: the HTTP service. It owns the node runtime of its state directory (adopting
//! the nodes a previous run left), loads the sessions from the store and reconciles them, serves
//! the API and the page, prints the address it listens on once it is ready, and drains on
//! SIGTERM or SIGINT within a bound. Nodes outlive a stopped server; the next one adopts them.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::cli::RuntimeArgs;
use crate::metrics::Metrics;
use crate::routes::{app, AppState, MAX_UPLOADS};
use crate::sandbox_runtime::SandboxRuntime;
use crate::sessions::{SessionConfig, Sessions};
use crate::store::Store;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SANDPIT_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Lifetime of a new session, in seconds (4 h).
    #[arg(long, env = "SANDPIT_SESSION_SECS", default_value_t = 4 * 3600)]
    session_secs: u64,
    /// Longest a session may live with extensions, in seconds (8 h).
    #[arg(long, env = "SANDPIT_SESSION_MAX_SECS", default_value_t = 8 * 3600)]
    session_max_secs: u64,
    /// Nodes per session.
    #[arg(long, env = "SANDPIT_MAX_NODES", default_value_t = 5)]
    max_nodes: usize,
    /// Live sessions per client address (a classroom behind one NAT needs a high value).
    #[arg(long, env = "SANDPIT_SESSIONS_PER_CLIENT", default_value_t = 10)]
    sessions_per_client: usize,
    /// Nodes on this host in total (default: one per 384 MiB of memory).
    #[arg(long, env = "SANDPIT_CAPACITY")]
    capacity: Option<usize>,
    /// Published ports are reachable at http://{node}-{session}-{port}.{base-domain}.
    #[arg(long, env = "SANDPIT_BASE_DOMAIN", default_value = "localhost")]
    base_domain: String,
    /// Port in the links to published ports (default: the port listened on).
    #[arg(long, env = "SANDPIT_PUBLIC_PORT")]
    public_port: Option<u16>,
    /// Bearer token of the admin routes (/api/admin/...); no token, no admin routes.
    #[arg(long, env = "SANDPIT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Origin allowed to open WebSockets besides the server's own (repeatable).
    #[arg(
        long = "allowed-origin",
        env = "SANDPIT_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// Most terminal output read per second from one node's shell, in MiB: above it the shell's
    /// writes wait, so a flood (`yes`) costs the server bounded CPU.
    #[arg(long, env = "SANDPIT_TERMINAL_READ_MIB", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    terminal_read_mib: u64,
    /// Largest file upload, in MiB.
    #[arg(long, env = "SANDPIT_MAX_UPLOAD_MIB", default_value_t = 64)]
    max_upload_mib: usize,
    #[command(flatten)]
    rt: RuntimeArgs,
}

/// Nodes this host can hold: one per 384 MiB of memory (an idle node with its engine uses
/// about 100 MiB; a room of learners running containers needs the rest).
fn default_capacity() -> usize {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    ((total << 10) / (384 << 20)).max(1) as usize
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once we said we are ready must drain, not kill.
    let shutdown = shutdown_signal()?;
    if args.session_secs == 0 || args.session_secs > args.session_max_secs {
        anyhow::bail!("--session-secs must be between 1 and --session-max-secs");
    }
    let runtime = Arc::new(SandboxRuntime::new(Arc::new(args.rt.open().await?)));
    let store_path = args.rt.state_dir.join("sandpit.db");
    let store = Store::open(&store_path)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    let metrics = Arc::new(Metrics::new());
    let cfg = SessionConfig {
        lifetime: Duration::from_secs(args.session_secs),
        max_lifetime: Duration::from_secs(args.session_max_secs),
        max_nodes: args.max_nodes,
        sessions_per_client: args.sessions_per_client,
        capacity: args.capacity.unwrap_or_else(default_capacity),
        base_domain: args.base_domain.clone(),
        public_port: args.public_port.unwrap_or(addr.port()),
        terminal: terminals::TerminalOptions {
            read_bytes_per_sec: args.terminal_read_mib << 20,
            ..Default::default()
        },
    };
    let sessions = Sessions::new(runtime, store, cfg, metrics.clone());
    sessions
        .recover()
        .await
        .context("recover the sessions of the store")?;
    sessions.start_background();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState {
        sessions: sessions.clone(),
        metrics,
        admin_token: args.admin_token.clone(),
        allowed_origins: args.allowed_origins.clone(),
        max_upload_bytes: args.max_upload_mib << 20,
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        shutdown: stop_rx.clone(),
    };
    let (live_sessions, session_nodes, _) = sessions.counts();
    tracing::info!(%addr, sessions = live_sessions, nodes = session_nodes, "serving");
    // Tests and scripts read this line to find a port-0 server.
    println!("sandpit listening on http://{addr}");
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        res = &mut server => return res.context("serve HTTP"),
        sig = shutdown => tracing::info!(signal = sig, "shutting down"),
    }
    sessions.drain();
    let _ = stop_tx.send(true);
    // Terminal sockets end with the process, without a `closed` message (which would tell
    // the page not to reconnect); viewers reconnect to the next server and its fresh shells.
    match tokio::time::timeout(DRAIN, server).await {
        Ok(res) => res.context("serve HTTP")?,
        Err(_) => tracing::warn!("requests still running after {DRAIN:?}; stopping anyway"),
    }
    // Nodes keep running: the next start adopts them.
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now and resolves when one of them fires.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
