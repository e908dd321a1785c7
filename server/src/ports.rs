//! Published ports of one node, followed for [`crate::SandboxRuntime`]'s
//! `NodeRuntime::follow_ports` (the sessions start and stop one follower per ready node).
//!
//! Each node runs its own dockerd; `sandbox::Engine` talks to it (through its socket, resolved
//! inside the node, with lookups on the blocking pool) and knows which ports it publishes.
//! The follower reads dockerd's event stream (`Engine::port_events`) and lists the ports
//! (`Engine::published_ports`) after each burst of events, a second time a moment later (some
//! state settles after the event), and every [`RESYNC`] anyway, one request at a time. An
//! idle node costs one open connection and one listing every [`RESYNC`]; a node that floods
//! events is listed at most about every [`SETTLE`], since its stream is not read while the
//! follower waits.

use std::sync::Arc;
use std::time::Duration;

use sandbox::{Engine, Runtime};

use crate::node_runtime::PortsReport;

/// A listing without events, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(30);
/// Wait after an event before listing, so a burst of events costs one listing.
const SETTLE: Duration = Duration::from_millis(250);
/// The second listing after events.
const FOLLOW_UP: Duration = Duration::from_secs(2);
/// Wait before trying a node's engine again after it did not answer.
const RETRY: Duration = Duration::from_secs(2);
/// Bound on connecting and on one listing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps one node's ports up to date until the future is dropped. The engine is looked up
/// again after every failure, so a node that was replaced under the same name is followed too.
pub(crate) async fn follow(
    runtime: Arc<Runtime>,
    network: String,
    name: String,
    report: PortsReport,
) {
    loop {
        let err = match runtime.engine(&network, &name) {
            Ok(engine) => follow_engine(&engine, &report).await,
            Err(e) => e.to_string(),
        };
        tracing::debug!(session = %network, node = %name, error = %err, "node engine not followed");
        // No engine, no running containers.
        report(Vec::new());
        tokio::time::sleep(RETRY).await;
    }
}

/// Follows the engine's events and reports the ports; returns why it stopped.
async fn follow_engine(engine: &Engine, report: &PortsReport) -> String {
    let mut events = match tokio::time::timeout(REQUEST_TIMEOUT, engine.port_events()).await {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return "the event stream did not open in time".into(),
    };
    let mut wait = RESYNC;
    loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, engine.published_ports()).await {
            Ok(Ok(ports)) => report(ports),
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "listing the ports took too long".into(),
        }
        let event = tokio::select! {
            event = events.next() => match event {
                Some(Ok(())) => true,
                Some(Err(e)) => return e.to_string(),
                None => return "the event stream ended".into(),
            },
            () = tokio::time::sleep(wait) => false,
        };
        if event {
            tokio::time::sleep(SETTLE).await;
            wait = FOLLOW_UP;
        } else {
            wait = RESYNC;
        }
    }
}
