//! Published ports: which TCP ports each running node's containers publish, kept up to date
//! in the sessions (`Sessions::set_ports`, which tells the events stream when they change).
//!
//! Each node runs its own dockerd; `sandbox::Engine` talks to it (through its socket, resolved
//! inside the node, with lookups on the blocking pool) and knows which ports it publishes.
//!
//! Per node, one task follows dockerd's event stream (`Engine::port_events`) and lists the
//! ports (`Engine::published_ports`) after each burst of events, a second time a moment later
//! (some state settles after the event), and every [`RESYNC`] anyway, one request at a time.
//! An idle node costs one open connection and one listing every [`RESYNC`]; a node that
//! floods events is listed at most about every [`SETTLE`], since its stream is not read while
//! the task waits. A supervisor starts and stops the per-node tasks as nodes come and go.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sandbox::Engine;
use tokio::task::JoinHandle;

use crate::session::Sessions;

/// How often the supervisor looks for new and removed nodes.
const SCAN: Duration = Duration::from_secs(1);
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

/// Starts the supervisor; it stops when the sessions are dropped.
pub(crate) fn start(sessions: &Arc<Sessions>) {
    let weak = Arc::downgrade(sessions);
    tokio::spawn(supervise(weak));
}

/// A node's task and the PID 1 it follows (a restarted node gets a new task).
struct Watch {
    init_pid: i32,
    task: JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn supervise(weak: Weak<Sessions>) {
    let mut watches: HashMap<(String, String), Watch> = HashMap::new();
    let mut tick = tokio::time::interval(SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(sessions) = weak.upgrade() else {
            return;
        };
        let mut live = HashMap::new();
        for (sid, name) in sessions.running_nodes() {
            let pid = sessions.runtime().node(&sid, &name).and_then(|n| {
                (n.status == sandbox::NodeStatus::Running)
                    .then_some(n.init_pid)
                    .flatten()
            });
            if let Some(pid) = pid {
                live.insert((sid, name), pid);
            }
        }
        drop(sessions);
        watches.retain(|key, w| live.get(key) == Some(&w.init_pid));
        for (key, init_pid) in live {
            watches.entry(key.clone()).or_insert_with(|| Watch {
                init_pid,
                task: tokio::spawn(follow_node(weak.clone(), key.0, key.1)),
            });
        }
    }
}

/// Keeps one node's ports up to date until the task is aborted.
async fn follow_node(weak: Weak<Sessions>, sid: String, name: String) {
    let report = |ports: Vec<u16>| {
        if let Some(s) = weak.upgrade() {
            s.set_ports(&sid, &name, ports);
        }
    };
    loop {
        let engine = match weak.upgrade() {
            Some(s) => s.runtime().engine(&sid, &name),
            None => return,
        };
        let err = match engine {
            Ok(engine) => follow_engine(&engine, &report).await,
            Err(e) => e.to_string(),
        };
        tracing::debug!(session = %sid, node = %name, error = %err, "node engine not followed");
        // No engine, no running containers.
        report(Vec::new());
        tokio::time::sleep(RETRY).await;
    }
}

/// Follows the engine's events and reports the ports; returns why it stopped.
async fn follow_engine(engine: &Engine, report: &impl Fn(Vec<u16>)) -> String {
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
