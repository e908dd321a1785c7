//! `sandpit serve`: the HTTP service. It owns the node runtime of its state directory (adopting
//! the nodes a previous run left, per `--orphans`), answers `/healthz`, prints the address it
//! listens on once it is ready, and drains on SIGTERM or SIGINT within a bound.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use sandbox::Runtime;
use serde_json::{json, Value};

use crate::RuntimeArgs;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SANDPIT_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    rt: RuntimeArgs,
}

#[derive(Clone)]
pub(crate) struct AppState {
    runtime: Arc<Runtime>,
}

/// The HTTP routes, as a function so tests can drive them.
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "networks": s.runtime.networks().len(),
        "nodes": s.runtime.nodes().len(),
    }))
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once we said we are ready must drain, not kill.
    let shutdown = shutdown_signal()?;
    let runtime = Arc::new(args.rt.open().await?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    tracing::info!(%addr, nodes = runtime.nodes().len(), "serving");
    // Tests and scripts read this line to find a port-0 server.
    println!("sandpit listening on http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server =
        axum::serve(listener, app(AppState { runtime })).with_graceful_shutdown(async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        res = &mut server => return res.context("serve HTTP"),
        sig = shutdown => tracing::info!(signal = sig, "shutting down"),
    }
    let _ = stop_tx.send(true);
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
