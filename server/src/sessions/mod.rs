//! Sessions: the service's unit of ownership. A session is one runtime network (named by the
//! session id) with up to `max_nodes` nodes, an expiry time, an event stream, and the terminals
//! of its nodes.
//!
//! [`Sessions`] is the one place that creates, extends and ends sessions and adds or removes
//! their nodes, and the only way to a node: it holds the node runtime behind the
//! [`NodeRuntime`] seam, and every node request goes through one of its methods, which checks
//! that the node belongs to the live session. Limits are checked and slots reserved under one
//! lock before any slow work starts, so concurrent requests never exceed a limit and never pick
//! the same node name; the slow work (starting nodes, tearing down) and every store write run
//! without the lock. The store is written before an answer goes out, so a restarted server
//! finds every session it acknowledged (see [`Sessions::recover`]).
//!
//! The lifecycles are in `state.rs`; nodes in `nodes.rs`; expiry, extension and statistics in
//! `expiry.rs`; published ports in `ports.rs`; terminals in `terminal.rs`; recovery in
//! `recover.rs`.

mod disk;
mod error;
mod expiry;
mod nodes;
mod ports;
mod recover;
mod state;
mod terminal;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use terminals::TerminalOptions;
use tokio::sync::broadcast;

pub use error::SessionError;
pub(crate) use state::{is_session_id, valid_node_name};
use state::{now_secs, rfc3339};
pub use terminal::MAIN_TERMINAL;

use crate::metrics::Metrics;
use crate::node_runtime::NodeRuntime;
use crate::store::{SessionRow, Store};
use crate::wire::{
    EndReason, Event, Health, ImageList, NodeStatus, NodeView, PortView, SessionView, Template,
};
use disk::DiskWatch;
use state::{live, NodeMeta, NodeState, Session, SessionState, Table};

/// Limits and lifetimes of sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Lifetime of a new session unless it asks for another.
    pub lifetime: Duration,
    /// Longest a session may live in total, extensions included.
    pub max_lifetime: Duration,
    pub max_nodes: usize,
    pub sessions_per_client: usize,
    /// Nodes the host runs at most, over every session.
    pub capacity: usize,
    /// Free space on the node disks' filesystem below which no node is made (`disk.rs`).
    pub disk_reserve_bytes: u64,
    /// Where published ports are reachable: `{node}-{sid}-{port}.{base_domain}`.
    pub base_domain: String,
    /// The port browsers reach the server on (in the port URLs).
    pub public_port: u16,
    /// Ring size, read rate and the like of every node terminal.
    pub terminal: TerminalOptions,
    /// URLs below which stack files may be fetched (`--stack-source`); empty: none.
    pub stack_sources: Vec<url::Url>,
}

/// Shortest lifetime a session may ask for.
pub const MIN_LIFETIME: Duration = Duration::from_secs(5);
/// How long the end of a session waits for node creations in flight.
const END_PATIENCE: Duration = Duration::from_secs(120);

/// Every session of this server.
pub struct Sessions {
    runtime: Arc<dyn NodeRuntime>,
    store: Store,
    cfg: SessionConfig,
    metrics: Arc<Metrics>,
    inner: Mutex<Table>,
    draining: AtomicBool,
    disk: DiskWatch,
}

impl Sessions {
    pub fn new(
        runtime: Arc<dyn NodeRuntime>,
        store: Store,
        cfg: SessionConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Sessions> {
        let s = Arc::new(Sessions {
            runtime,
            store,
            cfg,
            metrics,
            inner: Mutex::new(Table::new()),
            draining: AtomicBool::new(false),
            disk: DiskWatch::new(),
        });
        s.sample_disk();
        s
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The images a new node may name, and the one it gets by default.
    pub fn images(&self) -> ImageList {
        ImageList {
            default: self.runtime.default_image(),
            images: self.runtime.images(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses new sessions and nodes from now on (shutdown, maintenance).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn check_draining(&self) -> Result<(), SessionError> {
        if self.draining.load(Ordering::SeqCst) {
            Err(SessionError::Draining)
        } else {
            Ok(())
        }
    }

    /// Starts the expiry, statistics and published-ports loops; they stop when `self` is
    /// dropped.
    /// Runs `tick` every `period` for as long as the sessions exist.
    fn every(self: &Arc<Self>, period: Duration, tick: fn(&Arc<Sessions>)) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            loop {
                interval.tick().await;
                let Some(s) = weak.upgrade() else { return };
                tick(&s);
            }
        });
    }

    pub fn start_background(self: &Arc<Self>) {
        self.start_expiry();
        self.start_ports();
        self.start_disk_watch();
    }

    /// Creates an empty session with its network. Room for `template`'s nodes is checked now
    /// (`provision.rs` adds them).
    pub async fn create(
        &self,
        duration_secs: Option<u64>,
        template: Option<Template>,
        client: IpAddr,
    ) -> Result<SessionView, SessionError> {
        self.check_draining()?;
        let lifetime = match duration_secs {
            None => self.cfg.lifetime,
            Some(s) => {
                let d = Duration::from_secs(s);
                if d < MIN_LIFETIME || d > self.cfg.max_lifetime {
                    return Err(SessionError::Invalid(format!(
                        "duration_secs must be between {} and {}",
                        MIN_LIFETIME.as_secs(),
                        self.cfg.max_lifetime.as_secs()
                    )));
                }
                d
            }
        };
        let wanted = template.map(|t| t.roles().len()).unwrap_or(0);
        if wanted > self.cfg.max_nodes {
            return Err(SessionError::Invalid(format!(
                "this template needs {wanted} nodes; this server allows {} per session",
                self.cfg.max_nodes
            )));
        }
        let started = Instant::now();
        let now = now_secs();
        let id = state::new_session_id()?;
        let row = SessionRow {
            id: id.clone(),
            created_at: now,
            expires_at: now + lifetime.as_secs() as i64,
            max_expires_at: now + self.cfg.max_lifetime.as_secs() as i64,
            template: template.map(|t| t.name().to_string()),
            client,
        };
        {
            let mut inner = self.lock();
            let mine = inner.values().filter(|s| s.row.client == client).count();
            if mine >= self.cfg.sessions_per_client {
                return Err(SessionError::ClientLimit(self.cfg.sessions_per_client));
            }
            let total: usize = inner.values().map(|s| s.nodes.len()).sum();
            if total + wanted > self.cfg.capacity {
                return Err(SessionError::AtCapacity(self.cfg.capacity));
            }
            if wanted > 0 {
                self.check_disk()?;
            }
            // Reserved under the lock (the limits count it from now on), invisible to clients
            // until its network exists.
            inner.insert(id.clone(), Session::new(row.clone(), SessionState::Opening));
        }
        // Recorded before the network exists: a crash after this point leaves a row that
        // recovery reconciles, never a network nobody knows.
        if let Err(e) = self.store.insert_session(&row) {
            self.lock().remove(&id);
            return Err(e.into());
        }
        if let Err(e) = self.runtime.create_network(&id).await {
            self.lock().remove(&id);
            let _ = self.store.delete_session(&id);
            self.metrics.failure("network");
            return Err(e.into());
        }
        if let Some(s) = self.lock().get_mut(&id) {
            s.state = SessionState::Live;
        }
        tracing::info!(session = %id, %client, ?template, "session created");
        if template.is_none() {
            self.metrics.observe_create("session", started.elapsed());
        }
        self.view(&id)
    }

    /// Ends a session whose template could not be formed; answers the error to report (or
    /// [`SessionError::Ending`] when the session was deleted or expired meanwhile).
    pub async fn abandon(&self, sid: &str, e: SessionError) -> SessionError {
        if self.lock().get(sid).is_none_or(|s| !s.is_live()) {
            return SessionError::Ending;
        }
        self.metrics.failure("template");
        if let Err(end) = self.end(sid, EndReason::Failed).await {
            tracing::error!(session = %sid, error = %end, "tear down a failed template");
        }
        e
    }

    /// The session as clients see it.
    pub fn view(&self, id: &str) -> Result<SessionView, SessionError> {
        let inner = self.lock();
        Ok(self.session_view(live(&inner, id)?))
    }

    fn session_view(&self, s: &Session) -> SessionView {
        SessionView {
            id: s.row.id.clone(),
            created_at: rfc3339(s.row.created_at),
            expires_at: rfc3339(s.row.expires_at),
            max_expires_at: rfc3339(s.row.max_expires_at),
            template: s.row.template.clone(),
            max_nodes: self.cfg.max_nodes,
            nodes: s
                .nodes
                .iter()
                .map(|(name, m)| self.node_view(&s.row.id, name, m))
                .collect(),
        }
    }

    fn node_view(&self, sid: &str, name: &str, m: &NodeMeta) -> NodeView {
        let facts = self.runtime.node(sid, name);
        let status = match (&facts, m.state) {
            (Some(f), _) => f.status,
            (None, NodeState::Creating) => NodeStatus::Creating,
            (None, NodeState::Removing) => NodeStatus::Destroying,
            (None, NodeState::Ready) => NodeStatus::Failed,
        };
        let port = match self.cfg.public_port {
            80 => String::new(),
            p => format!(":{p}"),
        };
        NodeView {
            name: name.to_string(),
            hostname: name.to_string(),
            ip: facts.as_ref().map(|f| f.ip),
            status,
            image: m.image.clone(),
            role: m.role,
            ports: m
                .ports
                .iter()
                .map(|p| PortView {
                    port: *p,
                    url: format!("http://{name}-{sid}-{p}.{}{port}/", self.cfg.base_domain),
                    path: format!("/p/{sid}/{name}/{p}/"),
                })
                .collect(),
            stats: m.stats.clone(),
            terminal: format!("/api/sessions/{sid}/nodes/{name}/terminal"),
        }
    }

    /// The events of a session, and a snapshot to start from.
    pub fn subscribe(
        &self,
        sid: &str,
    ) -> Result<(SessionView, broadcast::Receiver<Event>), SessionError> {
        let inner = self.lock();
        let s = live(&inner, sid)?;
        Ok((self.session_view(s), s.events.subscribe()))
    }

    /// The events of a live session, without a snapshot.
    pub fn events(&self, sid: &str) -> Result<broadcast::Receiver<Event>, SessionError> {
        Ok(live(&self.lock(), sid)?.events.subscribe())
    }

    fn emit(&self, sid: &str, make: impl FnOnce(&Session) -> Event) {
        let inner = self.lock();
        if let Some(s) = inner.get(sid) {
            let _ = s.events.send(make(s));
        }
    }

    /// Tells the session's event stream how a multi-step operation is going.
    pub fn progress(&self, sid: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(session = %sid, "{message}");
        self.emit(sid, |_| Event::Progress { message });
    }

    /// Ends a session now (`DELETE`).
    pub async fn delete(&self, sid: &str) -> Result<(), SessionError> {
        self.end(sid, EndReason::Deleted).await
    }

    /// Marks the session ending, closes its terminals, tells its viewers, destroys its
    /// network and nodes, and forgets it.
    async fn end(&self, sid: &str, reason: EndReason) -> Result<(), SessionError> {
        let terminals = {
            let mut inner = self.lock();
            let s = inner
                .get_mut(sid)
                .ok_or_else(|| SessionError::UnknownSession(sid.into()))?;
            s.begin_end()?;
            let _ = s.events.send(Event::Ended { reason });
            std::mem::take(&mut s.terminals)
        };
        let why = match reason {
            EndReason::Expired => "the session expired",
            EndReason::Deleted => "the session was deleted",
            EndReason::Failed => "the session could not be set up",
        };
        for t in terminals.values() {
            t.close(why);
        }
        tracing::info!(session = %sid, ?reason, "session ending");
        self.teardown(sid).await
    }

    /// Destroys the session's network (waiting for node creations in flight) and its row.
    pub(super) async fn destroy(&self, sid: &str) -> Result<(), SessionError> {
        let deadline = Instant::now() + END_PATIENCE;
        loop {
            match self.runtime.destroy_network(sid).await {
                Ok(()) => break,
                Err(crate::node_runtime::RuntimeError::Busy(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.store.delete_session(sid)?;
        self.lock().remove(sid);
        tracing::info!(session = %sid, "session destroyed");
        Ok(())
    }

    /// Sessions, nodes and terminal viewers right now, for `/metrics`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let nodes = inner.values().map(|s| s.nodes.len()).sum();
        let viewers = inner
            .values()
            .flat_map(|s| s.terminals.values())
            .map(|t| t.viewers())
            .sum();
        (inner.len(), nodes, viewers)
    }

    /// `GET /healthz`.
    pub fn health(&self) -> Health {
        let (sessions, session_nodes, viewers) = self.counts();
        Health {
            status: "ok",
            sessions,
            nodes: self.runtime.nodes().len(),
            session_nodes,
            viewers,
            networks: self.runtime.networks().len(),
            session_secs: self.cfg.lifetime.as_secs(),
            max_nodes: self.cfg.max_nodes,
            capacity: self.cfg.capacity,
            disk_free_bytes: self.disk_free(),
            disk_reserve_bytes: self.cfg.disk_reserve_bytes,
            disk_low: self.disk_low(),
        }
    }

    /// Every live session (admin).
    pub fn all(&self) -> Vec<SessionView> {
        let inner = self.lock();
        inner
            .values()
            .filter(|s| s.is_live())
            .map(|s| self.session_view(s))
            .collect()
    }
}

/// Resolves when the session behind `events` has ended.
pub(crate) async fn ended(events: &mut broadcast::Receiver<Event>) {
    loop {
        match events.recv().await {
            Ok(Event::Ended { .. }) | Err(broadcast::error::RecvError::Closed) => return,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
        }
    }
}
