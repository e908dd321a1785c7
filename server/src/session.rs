//! Sessions: the service's unit of ownership. A session is one runtime network (named by the
//! session id) with up to `max_nodes` nodes, an expiry time, an event stream, and the terminals
//! of its nodes.
//!
//! [`Sessions`] is the one place that creates, extends and ends sessions and adds or removes
//! their nodes; the HTTP handlers only parse, call one method and serialise. Limits are checked
//! and slots reserved under one lock before any slow work starts, so concurrent requests never
//! exceed a limit and never pick the same node name; the slow work (starting nodes, tearing
//! down) runs without the lock. The store is written before an answer goes out, so a restarted
//! server finds every session it acknowledged (see [`Sessions::recover`]).
//!
//! Lifecycle of a session: `live -> ending -> gone`. `ending` starts on `DELETE`, on expiry or
//! when a template fails; from then on no node can be added, its terminals are closed with the
//! reason, the `ended` event goes out, the network and nodes are destroyed, and the row goes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandbox::{NodeSpec, NodeStatus, Runtime};
use serde::{Deserialize, Serialize};
use terminals::{Terminal, TerminalOptions};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::store::{NodeRow, SessionRow, Store, StoreError};
use crate::template::Template;

/// Limits and lifetimes of sessions.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Lifetime of a new session unless it asks for another.
    pub lifetime: Duration,
    /// Longest a session may live in total, extensions included.
    pub max_lifetime: Duration,
    pub max_nodes: usize,
    pub sessions_per_client: usize,
    /// Nodes the host runs at most, over every session.
    pub capacity: usize,
    /// Where published ports are reachable: `{node}-{sid}-{port}.{base_domain}`.
    pub base_domain: String,
    /// The port browsers reach the server on (in the port URLs).
    pub public_port: u16,
    /// Ring size, read rate and the like of every node terminal.
    pub terminal: TerminalOptions,
}

/// Shortest lifetime a session may ask for.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(5);
/// How long before the end the `expiring` event goes out.
const WARN_BEFORE: Duration = Duration::from_secs(300);
/// How often node figures are sampled.
const STATS_INTERVAL: Duration = Duration::from_secs(3);
/// How long after a failed teardown it is tried again.
const TEARDOWN_RETRY: Duration = Duration::from_secs(30);
/// How long the end of a session waits for node creations in flight.
const END_PATIENCE: Duration = Duration::from_secs(120);
/// Terminals a node may have at once.
pub(crate) const MAX_TERMINALS: usize = 4;
/// How long a new terminal's shell may take to start.
const TERMINAL_START: Duration = Duration::from_secs(15);
/// The terminal a viewer gets when it names none.
pub(crate) const DEFAULT_TERMINAL: &str = "main";
/// Events kept for a slow events socket before it gets a fresh snapshot instead.
const EVENT_BACKLOG: usize = 256;

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("no session {0:?}")]
    UnknownSession(String),
    #[error("no node {0:?} in this session")]
    UnknownNode(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this session already has {0} nodes, its limit; delete one first")]
    NodeLimit(usize),
    #[error("node {0:?} is being created or removed; try again in a moment")]
    NodeBusy(String),
    #[error("node {node:?} already has {MAX_TERMINALS} terminals ({open}); use one of them")]
    TerminalLimit { node: String, open: String },
    #[error("node {name:?} is {status}; delete it and add a new one")]
    NodeNotRunning { name: String, status: String },
    #[error("this address already has {0} sessions, its limit; end one first")]
    ClientLimit(usize),
    #[error("the server is at capacity ({0} nodes); try again later")]
    AtCapacity(usize),
    #[error("the server is shutting down; try again in a moment")]
    Draining,
    #[error("the session is ending")]
    Ending,
    #[error("{step} failed: {message}")]
    Template { step: String, message: String },
    #[error(transparent)]
    Runtime(#[from] sandbox::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EndReason {
    Expired,
    Deleted,
    Failed,
}

/// A node's swarm role, when a template made the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    Manager,
    Worker,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "manager" => Some(Role::Manager),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// Live figures of a node, as clients see them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct StatsView {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct PortView {
    pub port: u16,
    pub url: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct NodeView {
    pub name: String,
    pub hostname: String,
    pub ip: Option<Ipv4Addr>,
    pub status: NodeStatus,
    pub image: String,
    pub role: Option<Role>,
    pub ports: Vec<PortView>,
    pub stats: Option<StatsView>,
    pub terminal: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct SessionView {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    pub max_expires_at: String,
    pub template: Option<String>,
    pub max_nodes: usize,
    pub nodes: Vec<NodeView>,
}

/// What a session's events socket carries.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event {
    Snapshot { session: SessionView },
    NodeAdded { node: NodeView },
    NodeUpdated { node: NodeView },
    NodeRemoved { name: String },
    Stats { nodes: BTreeMap<String, StatsView> },
    Progress { message: String },
    Extended { expires_at: String },
    Expiring { expires_at: String, secs_left: u64 },
    Ended { reason: EndReason },
}

/// `POST /api/sessions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateSession {
    pub template: Option<Template>,
    pub duration_secs: Option<u64>,
}

struct NodeMeta {
    image: String,
    role: Option<Role>,
    /// Being created or destroyed by a request in flight.
    busy: bool,
    ports: Vec<u16>,
    stats: Option<StatsView>,
    /// CPU time and when it was read, for the next sample's rate.
    cpu: Option<(u64, Instant)>,
}

struct Session {
    row: SessionRow,
    nodes: BTreeMap<String, NodeMeta>,
    warned: bool,
    ending: bool,
    /// When a failed teardown is tried again.
    retry_at: Option<Instant>,
    events: broadcast::Sender<Event>,
    /// Terminals by node and terminal name.
    terminals: HashMap<(String, String), Terminal>,
}

impl Session {
    /// A node of this session, or the client's 404.
    fn node(&self, name: &str) -> Result<&NodeMeta, SessionError> {
        self.nodes
            .get(name)
            .ok_or_else(|| SessionError::UnknownNode(name.into()))
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut NodeMeta, SessionError> {
        self.nodes
            .get_mut(name)
            .ok_or_else(|| SessionError::UnknownNode(name.into()))
    }
}

/// Every session of this server.
pub(crate) struct Sessions {
    runtime: Arc<Runtime>,
    store: Store,
    cfg: SessionConfig,
    metrics: Arc<Metrics>,
    inner: Mutex<BTreeMap<String, Session>>,
    draining: std::sync::atomic::AtomicBool,
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// 128 random bits as 32 lowercase hex digits.
fn new_session_id() -> Result<String, SessionError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| SessionError::Internal(format!("random id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Whether `s` has the shape of a session id; anything else is an unknown session.
pub(crate) fn is_session_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The first `nodeN` not taken.
fn free_node_name(taken: &BTreeMap<String, NodeMeta>) -> String {
    (1..)
        .map(|i| format!("node{i}"))
        .find(|n| !taken.contains_key(n))
        .expect("a free name")
}

impl Sessions {
    pub fn new(
        runtime: Arc<Runtime>,
        store: Store,
        cfg: SessionConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Sessions> {
        Arc::new(Sessions {
            runtime,
            store,
            cfg,
            metrics,
            inner: Mutex::new(BTreeMap::new()),
            draining: Default::default(),
        })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses new sessions and nodes from now on (shutdown).
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_draining(&self) -> Result<(), SessionError> {
        if self.draining.load(std::sync::atomic::Ordering::SeqCst) {
            Err(SessionError::Draining)
        } else {
            Ok(())
        }
    }

    /// Loads the store and reconciles it with what the runtime adopted: sessions that expired
    /// while the server was down are destroyed, stored nodes that no longer exist are forgotten,
    /// nodes of a session that were never recorded (a crash mid-create) are adopted, and
    /// networks that look like sessions but have no row (a crash before the row) are destroyed.
    pub async fn recover(&self) -> Result<(), SessionError> {
        let now = now_secs();
        let rows = self.store.sessions()?;
        let mut stored_nodes: BTreeMap<String, Vec<NodeRow>> = BTreeMap::new();
        for n in self.store.nodes()? {
            stored_nodes.entry(n.session.clone()).or_default().push(n);
        }
        let mut expired = Vec::new();
        for row in rows {
            let ending = row.expires_at <= now;
            if ending {
                expired.push(row.id.clone());
            }
            if self.runtime.network(&row.id).is_none() {
                tracing::warn!(session = %row.id, "session's network is gone; forgetting it");
                self.store.delete_session(&row.id)?;
                continue;
            }
            let mut nodes = BTreeMap::new();
            for n in stored_nodes.remove(&row.id).unwrap_or_default() {
                if self.runtime.node(&row.id, &n.name).is_some() {
                    nodes.insert(
                        n.name.clone(),
                        meta(n.image, n.role.as_deref().and_then(Role::parse)),
                    );
                } else {
                    self.store.delete_node(&row.id, &n.name)?;
                }
            }
            for n in self
                .runtime
                .nodes()
                .into_iter()
                .filter(|n| n.network == row.id)
            {
                if !nodes.contains_key(&n.hostname) {
                    self.store.put_node(&NodeRow {
                        session: row.id.clone(),
                        name: n.hostname.clone(),
                        image: n.image.clone(),
                        role: None,
                    })?;
                    nodes.insert(n.hostname.clone(), meta(n.image, None));
                }
            }
            if !ending {
                tracing::info!(session = %row.id, nodes = nodes.len(), "session recovered");
            }
            let (events, _) = broadcast::channel(EVENT_BACKLOG);
            self.lock().insert(
                row.id.clone(),
                Session {
                    row,
                    nodes,
                    warned: false,
                    ending,
                    retry_at: None,
                    events,
                    terminals: HashMap::new(),
                },
            );
        }
        for id in expired {
            tracing::info!(session = %id, "session expired while the server was down");
            // A failure is logged and retried by the expiry loop; the server starts anyway.
            let _ = self.teardown(&id).await;
        }
        let known: Vec<String> = self.lock().keys().cloned().collect();
        for net in self.runtime.networks() {
            if is_session_id(&net.name) && !known.contains(&net.name) {
                tracing::warn!(session = %net.name, "network of an unrecorded session; destroying it");
                if let Err(e) = self.runtime.destroy_network(&net.name).await {
                    tracing::error!(session = %net.name, error = %e, "destroy an unrecorded network");
                }
            }
        }
        Ok(())
    }

    /// Starts the expiry and statistics loops; they stop when `self` is dropped.
    pub fn start_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.expire_due();
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STATS_INTERVAL);
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.sample_stats();
            }
        });
    }

    /// Creates a session, with its template's nodes and swarm when it names one.
    pub async fn create(
        self: &Arc<Self>,
        req: CreateSession,
        client: IpAddr,
    ) -> Result<SessionView, SessionError> {
        self.check_draining()?;
        let lifetime = match req.duration_secs {
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
        let started = Instant::now();
        let now = now_secs();
        let id = new_session_id()?;
        let row = SessionRow {
            id: id.clone(),
            created_at: now,
            expires_at: now + lifetime.as_secs() as i64,
            max_expires_at: now + self.cfg.max_lifetime.as_secs() as i64,
            template: req.template.map(|t| t.name().to_string()),
            client,
        };
        let wanted = req.template.map(|t| t.roles().len()).unwrap_or(0);
        if wanted > self.cfg.max_nodes {
            return Err(SessionError::Invalid(format!(
                "this template needs {wanted} nodes; this server allows {} per session",
                self.cfg.max_nodes
            )));
        }
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
            // Reserved in memory under the lock (the limits count it from now on); recorded
            // without the lock, so one slow disk write does not hold up every request.
            let (events, _) = broadcast::channel(EVENT_BACKLOG);
            inner.insert(
                id.clone(),
                Session {
                    row: row.clone(),
                    nodes: BTreeMap::new(),
                    warned: false,
                    ending: true, // until its network exists
                    retry_at: None,
                    events,
                    terminals: HashMap::new(),
                },
            );
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
            s.ending = false;
        }
        tracing::info!(session = %id, %client, template = ?req.template, "session created");
        if let Some(t) = req.template {
            if let Err(e) = crate::template::form(self, &id, t).await {
                if self.lock().get(&id).is_none_or(|s| s.ending) {
                    // Deleted (or expired) while it was being set up.
                    return Err(SessionError::Ending);
                }
                self.metrics.failure("template");
                tracing::warn!(session = %id, error = %e, "template failed; ending the session");
                if let Err(end) = self.end(&id, EndReason::Failed).await {
                    tracing::error!(session = %id, error = %end, "tear down a failed template");
                }
                return Err(e);
            }
        }
        self.metrics.observe_create(
            if wanted > 0 {
                "session_template"
            } else {
                "session"
            },
            started.elapsed(),
        );
        self.view(&id)
    }

    /// The session as clients see it.
    pub fn view(&self, id: &str) -> Result<SessionView, SessionError> {
        let inner = self.lock();
        let s = live(&inner, id)?;
        Ok(self.session_view(s))
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
        let info = self.runtime.node(sid, name);
        let status = match &info {
            Some(i) => i.status,
            None if m.busy => NodeStatus::Creating,
            None => NodeStatus::Failed,
        };
        let port = match self.cfg.public_port {
            80 => String::new(),
            p => format!(":{p}"),
        };
        NodeView {
            name: name.to_string(),
            hostname: name.to_string(),
            ip: info.as_ref().map(|i| i.ip),
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

    /// A node of a live session as clients see it.
    pub fn node(&self, sid: &str, name: &str) -> Result<NodeView, SessionError> {
        let inner = self.lock();
        let s = live(&inner, sid)?;
        let m = s.node(name)?;
        Ok(self.node_view(sid, name, m))
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

    fn emit_node(&self, sid: &str, name: &str, added: bool) {
        self.emit(sid, |s| match s.nodes.get(name) {
            Some(m) => {
                let node = self.node_view(sid, name, m);
                if added {
                    Event::NodeAdded { node }
                } else {
                    Event::NodeUpdated { node }
                }
            }
            None => Event::NodeRemoved { name: name.into() },
        });
    }

    /// Tells the session's event stream how a multi-step operation is going.
    pub fn progress(&self, sid: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(session = %sid, "{message}");
        self.emit(sid, |_| Event::Progress { message });
    }

    /// Adds a node and answers once its engine is ready.
    pub async fn add_node(
        &self,
        sid: &str,
        image: Option<String>,
        role: Option<Role>,
    ) -> Result<NodeView, SessionError> {
        self.check_draining()?;
        let image = image.unwrap_or_else(|| self.runtime.config().default_image.clone());
        let name = {
            let mut inner = self.lock();
            let total: usize = inner.values().map(|s| s.nodes.len()).sum();
            let s = live_mut(&mut inner, sid)?;
            if s.nodes.len() >= self.cfg.max_nodes {
                return Err(SessionError::NodeLimit(self.cfg.max_nodes));
            }
            if total >= self.cfg.capacity {
                return Err(SessionError::AtCapacity(self.cfg.capacity));
            }
            let name = free_node_name(&s.nodes);
            let mut m = meta(image.clone(), role);
            m.busy = true;
            s.nodes.insert(name.clone(), m);
            name
        };
        self.emit_node(sid, &name, true);
        let started = Instant::now();
        let created = self
            .runtime
            .create_node(NodeSpec {
                network: sid.into(),
                hostname: Some(name.clone()),
                image: Some(image.clone()),
            })
            .await;
        let recorded = created.as_ref().map_err(|_| ()).and_then(|_| {
            self.store
                .put_node(&NodeRow {
                    session: sid.into(),
                    name: name.clone(),
                    image: image.clone(),
                    role: role.map(|r| r.as_str().into()),
                })
                .map_err(
                    |e| tracing::error!(session = %sid, node = %name, error = %e, "record node"),
                )
        });
        match (created, recorded) {
            (Ok(_), Ok(())) => {
                if let Some(m) = self
                    .lock()
                    .get_mut(sid)
                    .and_then(|s| s.nodes.get_mut(&name))
                {
                    m.busy = false;
                }
                self.metrics.observe_create("node", started.elapsed());
                tracing::info!(session = %sid, node = %name, ms = started.elapsed().as_millis() as u64, "node ready");
                self.emit_node(sid, &name, false);
                self.node(sid, &name)
            }
            (created, _) => {
                self.metrics.failure("node");
                if created.is_ok() {
                    let _ = self.runtime.destroy_node(sid, &name).await;
                }
                if let Some(s) = self.lock().get_mut(sid) {
                    s.nodes.remove(&name);
                }
                self.emit_node(sid, &name, false);
                Err(match created {
                    Err(e) => e.into(),
                    Ok(_) => SessionError::Internal("record the node in the store".into()),
                })
            }
        }
    }

    /// Sets a node's swarm role (templates).
    pub fn set_role(&self, sid: &str, name: &str, role: Role) -> Result<(), SessionError> {
        let image = {
            let mut inner = self.lock();
            let s = live_mut(&mut inner, sid)?;
            let m = s.node_mut(name)?;
            m.role = Some(role);
            m.image.clone()
        };
        self.store.put_node(&NodeRow {
            session: sid.into(),
            name: name.into(),
            image,
            role: Some(role.as_str().into()),
        })?;
        self.emit_node(sid, name, false);
        Ok(())
    }

    /// Records the ports published on a node; tells the events stream when they changed.
    pub fn set_ports(&self, sid: &str, name: &str, ports: Vec<u16>) {
        let changed = {
            let mut inner = self.lock();
            match inner.get_mut(sid).and_then(|s| s.nodes.get_mut(name)) {
                Some(m) if m.ports != ports => {
                    m.ports = ports;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.emit_node(sid, name, false);
        }
    }

    /// Every running node of every live session, for watchers.
    pub fn running_nodes(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .values()
            .filter(|s| !s.ending)
            .flat_map(|s| {
                s.nodes
                    .iter()
                    .filter(|(_, m)| !m.busy)
                    .map(|(n, _)| (s.row.id.clone(), n.clone()))
            })
            .collect()
    }

    /// Checks that `name` is a running node of live session `sid` (every node route does).
    pub fn running_node(&self, sid: &str, name: &str) -> Result<(), SessionError> {
        {
            let inner = self.lock();
            let s = live(&inner, sid)?;
            let m = s.node(name)?;
            if m.busy {
                return Err(SessionError::NodeBusy(name.into()));
            }
        }
        match self.runtime.node(sid, name) {
            Some(i) if i.status == NodeStatus::Running => Ok(()),
            Some(i) => Err(SessionError::NodeNotRunning {
                name: name.into(),
                status: i.status.to_string(),
            }),
            None => Err(SessionError::UnknownNode(name.into())),
        }
    }

    /// Removes a node: its terminals close, then it is destroyed.
    pub async fn remove_node(&self, sid: &str, name: &str) -> Result<(), SessionError> {
        let terminals = {
            let mut inner = self.lock();
            let s = live_mut(&mut inner, sid)?;
            let m = s.node_mut(name)?;
            if m.busy {
                return Err(SessionError::NodeBusy(name.into()));
            }
            m.busy = true;
            let mine: Vec<_> = s
                .terminals
                .keys()
                .filter(|(n, _)| n == name)
                .cloned()
                .collect();
            mine.iter()
                .filter_map(|k| s.terminals.remove(k))
                .collect::<Vec<_>>()
        };
        for t in terminals {
            t.close("the node was deleted");
        }
        let result = match self.runtime.destroy_node(sid, name).await {
            Ok(()) | Err(sandbox::Error::UnknownNode { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.store.delete_node(sid, name)?;
                if let Some(s) = self.lock().get_mut(sid) {
                    s.nodes.remove(name);
                }
                tracing::info!(session = %sid, node = %name, "node removed");
                self.emit_node(sid, name, false);
                Ok(())
            }
            Err(e) => {
                if let Some(m) = self.lock().get_mut(sid).and_then(|s| s.nodes.get_mut(name)) {
                    m.busy = false;
                }
                Err(e.into())
            }
        }
    }

    /// Pushes the expiry back by `secs` (default: the default lifetime), up to the maximum.
    pub fn extend(&self, sid: &str, secs: Option<u64>) -> Result<SessionView, SessionError> {
        let secs = secs.unwrap_or(self.cfg.lifetime.as_secs());
        if secs == 0 || secs > self.cfg.max_lifetime.as_secs() {
            return Err(SessionError::Invalid(format!(
                "secs must be between 1 and {}",
                self.cfg.max_lifetime.as_secs()
            )));
        }
        let expires_at = {
            let mut inner = self.lock();
            let s = live_mut(&mut inner, sid)?;
            let now = now_secs();
            let new = (s.row.expires_at.max(now) + secs as i64).min(s.row.max_expires_at);
            self.store.set_expiry(sid, new)?;
            s.row.expires_at = new;
            if new - now > WARN_BEFORE.as_secs() as i64 {
                s.warned = false;
            }
            let _ = s.events.send(Event::Extended {
                expires_at: rfc3339(new),
            });
            new
        };
        tracing::info!(session = %sid, expires_at = %rfc3339(expires_at), "session extended");
        self.view(sid)
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
            if s.ending {
                return Err(SessionError::Ending);
            }
            s.ending = true;
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

    /// Destroys an ending session; a failure is retried later by the expiry loop (the session
    /// stays ending, invisible to clients, until it is gone).
    async fn teardown(&self, sid: &str) -> Result<(), SessionError> {
        let result = self.destroy(sid).await;
        if let Err(e) = &result {
            tracing::error!(session = %sid, error = %e, "tear down a session; retrying in {TEARDOWN_RETRY:?}");
            if let Some(s) = self.lock().get_mut(sid) {
                s.retry_at = Some(Instant::now() + TEARDOWN_RETRY);
            }
        }
        result
    }

    /// Destroys the session's network (waiting for node creations in flight) and its row.
    async fn destroy(&self, sid: &str) -> Result<(), SessionError> {
        let deadline = Instant::now() + END_PATIENCE;
        loop {
            match self.runtime.destroy_network(sid).await {
                Ok(()) | Err(sandbox::Error::UnknownNetwork(_)) => break,
                Err(sandbox::Error::NetworkBusy(_)) if Instant::now() < deadline => {
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

    /// Warns sessions near their end and ends those past it.
    fn expire_due(self: &Arc<Self>) {
        let now = now_secs();
        let mut due = Vec::new();
        let mut retry = Vec::new();
        {
            let mut inner = self.lock();
            for s in inner.values_mut() {
                if s.retry_at.is_some_and(|t| t <= Instant::now()) {
                    s.retry_at = None;
                    retry.push(s.row.id.clone());
                }
            }
            for s in inner.values_mut().filter(|s| !s.ending) {
                let left = s.row.expires_at - now;
                if left <= 0 {
                    due.push(s.row.id.clone());
                } else if left <= WARN_BEFORE.as_secs() as i64 && !s.warned {
                    s.warned = true;
                    let _ = s.events.send(Event::Expiring {
                        expires_at: rfc3339(s.row.expires_at),
                        secs_left: left as u64,
                    });
                }
            }
        }
        for id in due {
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.end(&id, EndReason::Expired).await {
                    tracing::error!(session = %id, error = %e, "end an expired session");
                }
            });
        }
        for id in retry {
            let me = self.clone();
            // A failure is logged and scheduled again by `teardown`.
            tokio::spawn(async move { me.teardown(&id).await });
        }
    }

    /// Reads every running node's cgroup and disk figures and sends them to the sessions.
    fn sample_stats(&self) {
        for (sid, name) in self.running_nodes() {
            let Ok(st) = self.runtime.stats(&sid, &name) else {
                continue;
            };
            let now = Instant::now();
            let mut inner = self.lock();
            let Some(m) = inner.get_mut(&sid).and_then(|s| s.nodes.get_mut(&name)) else {
                continue;
            };
            let cpu_percent = match m.cpu {
                Some((prev, at)) if now > at => {
                    let ns = st.cgroup.cpu_usage_ns.saturating_sub(prev) as f64;
                    (ns / (now - at).as_nanos() as f64 * 1000.0).round() / 10.0
                }
                _ => 0.0,
            };
            m.cpu = Some((st.cgroup.cpu_usage_ns, now));
            m.stats = Some(StatsView {
                cpu_percent,
                memory_bytes: st.cgroup.memory_bytes,
                memory_limit_bytes: st.cgroup.memory_limit_bytes,
                pids: st.cgroup.pids,
                disk_used_bytes: st.disk_used_bytes,
                disk_total_bytes: st.disk_total_bytes,
            });
        }
        let inner = self.lock();
        for s in inner.values().filter(|s| s.events.receiver_count() > 0) {
            let nodes: BTreeMap<String, StatsView> = s
                .nodes
                .iter()
                .filter_map(|(n, m)| m.stats.clone().map(|st| (n.clone(), st)))
                .collect();
            if !nodes.is_empty() {
                let _ = s.events.send(Event::Stats { nodes });
            }
        }
    }

    /// The shared terminal `term` of a running node, started on first use.
    ///
    /// The shell is started without the sessions' lock (it opens files inside the node, which
    /// the node can make slow) and within [`TERMINAL_START`]; if another request started the
    /// same terminal meanwhile, that one is used.
    pub async fn terminal(
        &self,
        sid: &str,
        name: &str,
        term: &str,
    ) -> Result<Terminal, SessionError> {
        self.running_node(sid, name)?;
        let key = (name.to_string(), term.to_string());
        if let Some(t) = terminal_or_room(live_mut(&mut self.lock(), sid)?, &key)? {
            return Ok(t);
        }
        let shell = crate::shell::NodeShell {
            runtime: self.runtime.clone(),
            network: sid.into(),
            hostname: name.into(),
        };
        let started = tokio::time::timeout(
            TERMINAL_START,
            Terminal::start(shell, self.cfg.terminal.clone()),
        )
        .await
        .map_err(|_| SessionError::Internal(format!("a shell on {name} did not start")))?
        .map_err(|e| SessionError::Internal(format!("start a terminal on {name}: {e}")))?;
        let mut inner = self.lock();
        // Checked again: the same or other terminals may have been started meanwhile.
        let s = live_mut(&mut inner, sid);
        match s.and_then(|s| terminal_or_room(s, &key).map(|t| (s, t))) {
            Ok((s, None)) => {
                s.terminals.insert(key, started.clone());
                Ok(started)
            }
            Ok((_, Some(theirs))) => {
                started.close("started twice");
                Ok(theirs)
            }
            Err(e) => {
                started.close("not needed");
                Err(e)
            }
        }
    }

    /// Sessions, nodes and terminal viewers right now, for `/metrics` and `/healthz`.
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

    /// Every live session (admin).
    pub fn all(&self) -> Vec<SessionView> {
        let inner = self.lock();
        inner
            .values()
            .filter(|s| !s.ending)
            .map(|s| self.session_view(s))
            .collect()
    }
}

/// The live terminal `(node, name)` of a session, or None if one more may be started.
fn terminal_or_room(
    s: &mut Session,
    (node, name): &(String, String),
) -> Result<Option<Terminal>, SessionError> {
    s.terminals.retain(|_, t| !t.is_closed());
    if let Some(t) = s.terminals.get(&(node.clone(), name.clone())) {
        return Ok(Some(t.clone()));
    }
    let open: Vec<&str> = s
        .terminals
        .keys()
        .filter(|(n, _)| n == node)
        .map(|(_, t)| t.as_str())
        .collect();
    if open.len() >= MAX_TERMINALS {
        return Err(SessionError::TerminalLimit {
            node: node.clone(),
            open: open.join(", "),
        });
    }
    Ok(None)
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

fn meta(image: String, role: Option<Role>) -> NodeMeta {
    NodeMeta {
        image,
        role,
        busy: false,
        ports: Vec::new(),
        stats: None,
        cpu: None,
    }
}

fn live<'a>(inner: &'a BTreeMap<String, Session>, sid: &str) -> Result<&'a Session, SessionError> {
    match inner.get(sid) {
        Some(s) if !s.ending => Ok(s),
        _ => Err(SessionError::UnknownSession(sid.into())),
    }
}

fn live_mut<'a>(
    inner: &'a mut BTreeMap<String, Session>,
    sid: &str,
) -> Result<&'a mut Session, SessionError> {
    match inner.get_mut(sid) {
        Some(s) if !s.ending => Ok(s),
        _ => Err(SessionError::UnknownSession(sid.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_128_random_bits_in_hex() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert!(is_session_id(&a) && is_session_id(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(!is_session_id("node1"));
        assert!(!is_session_id(&a.to_uppercase()));
    }

    #[test]
    fn node_names_fill_the_first_gap() {
        let mut taken = BTreeMap::new();
        assert_eq!(free_node_name(&taken), "node1");
        taken.insert("node1".into(), meta("x".into(), None));
        taken.insert("node3".into(), meta("x".into(), None));
        assert_eq!(free_node_name(&taken), "node2");
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
