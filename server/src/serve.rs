//! `sandpit serve`: the HTTP service. It owns the node runtime of its state directory (adopting
//! the nodes a previous run left), loads the sessions from the store and reconciles them, serves
//! the API and the page, prints the address it listens on once it is ready, and drains on
//! SIGTERM or SIGINT within a bound. Nodes and their shells outlive a stopped server; the next one adopts them.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sandbox::{Runtime, RuntimeConfig};

use crate::disk::DiskPlan;
use crate::metrics::Metrics;
use crate::routes::{app, AppState, MAX_UPLOADS};
use crate::sandbox_runtime::SandboxRuntime;
use crate::sessions::{SessionConfig, Sessions};
use crate::store::Store;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// What `sandpit serve` runs with (`cli` builds it from the command line).
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub store_path: PathBuf,
    /// `public_port` 0: the port listened on.
    pub sessions: SessionConfig,
    pub admin_token: Option<String>,
    pub allowed_origins: Vec<String>,
    pub pwd_origins: Vec<String>,
    pub max_upload_bytes: usize,
    /// Whether the runtime's node disk cap is the operator's (else it is derived, `disk.rs`).
    pub node_disk_set: bool,
}

/// Serves until SIGTERM or SIGINT, then drains.
pub async fn run(mut opts: ServeOptions, mut runtime: RuntimeConfig) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once we said we are ready must drain, not kill.
    let shutdown = shutdown_signal()?;
    raise_fd_limit();
    let disk =
        Runtime::disk_use_of(&runtime.state_dir).context("measure the state directory's disk")?;
    let wanted = opts.sessions.capacity;
    let cap = opts.node_disk_set.then_some(runtime.limits.disk_bytes);
    let plan = DiskPlan::new(disk, opts.sessions.disk_reserve_bytes, cap, wanted);
    runtime.limits.disk_bytes = plan.node_cap;
    opts.sessions.capacity = plan.capacity;
    if plan.capacity < wanted {
        tracing::warn!("capacity: {}", plan.describe(wanted));
    } else {
        tracing::info!("capacity: {}", plan.describe(wanted));
    }
    let runtime = Runtime::open(runtime)
        .await
        .context("open the node runtime")?;
    // Said at start, not only at the first session: another instance or program may hold
    // every subnet of the pool.
    match runtime.next_subnet().await {
        Ok(subnet) => tracing::info!(%subnet, "the next session network's subnet"),
        Err(e) => tracing::warn!(error = %e, "no session network can be made"),
    }
    let runtime = Arc::new(SandboxRuntime::new(Arc::new(runtime)));
    let store = Store::open(&opts.store_path)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listen on {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    let metrics = Arc::new(Metrics::new());
    let mut cfg = opts.sessions;
    if cfg.public_port == 0 {
        cfg.public_port = addr.port();
    }
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
        admin_token: opts.admin_token,
        allowed_origins: opts.allowed_origins,
        pwd_origins: opts.pwd_origins,
        max_upload_bytes: opts.max_upload_bytes,
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        shutdown: stop_rx.clone(),
        pwd_viewports: Arc::default(),
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
    // the page not to reconnect); the shells keep running in their holders (`Sessions` leaves
    // its terminals when it goes), and viewers resume on the next server, which takes them over.
    match tokio::time::timeout(DRAIN, server).await {
        Ok(res) => res.context("serve HTTP")?,
        Err(_) => tracing::warn!("requests still running after {DRAIN:?}; stopping anyway"),
    }
    // Nodes keep running: the next start adopts them.
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every WebSocket, terminal and proxied
/// connection holds descriptors (700 sockets on 10 terminals took 771), and the common soft
/// limit is 1024. Nodes inherit the raised limit, as Docker's engines have long run with a high
/// one.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let show = |n: Option<u64>| n.map_or("unlimited".to_owned(), |n| n.to_string());
    let mut limit = getrlimit(Resource::Nofile);
    let soft = limit.current;
    if soft != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, soft = %show(soft), "raise the open-file limit");
        }
    }
    let limit = getrlimit(Resource::Nofile);
    tracing::info!(soft = %show(limit.current), hard = %show(limit.maximum), "open-file limit");
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
