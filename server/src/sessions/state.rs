//! What [`super::Sessions`] keeps of each session and node, and the rules of their lifecycles.
//!
//! A session is `Opening` while its network is being made (its reservation counts against the
//! limits, but clients cannot see it), `Live`, then `Ending` from `DELETE`, expiry or a failed
//! template until its network is destroyed (a failed teardown is retried at `retry_at`). A node
//! is `Creating` until its engine answers, `Ready`, and `Removing` while it is destroyed; only a
//! ready node takes commands, shells and proxied requests.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use terminals::Terminal;
use tokio::sync::broadcast;

use super::error::SessionError;
use crate::store::SessionRow;
use crate::wire::{Event, Role, StatsView};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionState {
    Opening,
    Live,
    Ending { retry_at: Option<Instant> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeState {
    Creating,
    Ready,
    Removing,
}

pub(super) struct NodeMeta {
    pub image: String,
    pub role: Option<Role>,
    pub state: NodeState,
    pub ports: Vec<u16>,
    pub stats: Option<StatsView>,
    /// CPU time and when it was read, for the next sample's rate.
    pub cpu: Option<(u64, Instant)>,
}

impl NodeMeta {
    pub fn new(image: String, role: Option<Role>, state: NodeState) -> NodeMeta {
        NodeMeta {
            image,
            role,
            state,
            ports: Vec::new(),
            stats: None,
            cpu: None,
        }
    }

    /// Commands, shells and proxied requests need a ready node.
    pub fn can_use(&self, name: &str) -> Result<(), SessionError> {
        match self.state {
            NodeState::Ready => Ok(()),
            NodeState::Creating | NodeState::Removing => Err(SessionError::NodeBusy(name.into())),
        }
    }

    /// A node being created or removed is left to the request doing it.
    pub fn can_remove(&self, name: &str) -> Result<(), SessionError> {
        self.can_use(name)
    }
}

pub(super) struct Session {
    pub row: SessionRow,
    pub state: SessionState,
    pub nodes: BTreeMap<String, NodeMeta>,
    /// Whether the `expiring` event went out for the current expiry time.
    pub warned: bool,
    pub events: broadcast::Sender<Event>,
    /// Terminals by node and terminal name.
    pub terminals: HashMap<(String, String), Terminal>,
}

/// Events kept for a slow events socket before it gets a fresh snapshot instead.
const EVENT_BACKLOG: usize = 256;

impl Session {
    pub fn new(row: SessionRow, state: SessionState) -> Session {
        Session {
            row,
            state,
            nodes: BTreeMap::new(),
            warned: false,
            events: broadcast::channel(EVENT_BACKLOG).0,
            terminals: HashMap::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.state == SessionState::Live
    }

    pub fn is_ending(&self) -> bool {
        matches!(self.state, SessionState::Ending { .. })
    }

    /// A node of this session, or the client's 404.
    pub fn node(&self, name: &str) -> Result<&NodeMeta, SessionError> {
        self.nodes
            .get(name)
            .ok_or_else(|| SessionError::UnknownNode(name.into()))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut NodeMeta, SessionError> {
        self.nodes
            .get_mut(name)
            .ok_or_else(|| SessionError::UnknownNode(name.into()))
    }

    /// One more node fits in this session.
    pub fn can_add_node(&self, max_nodes: usize) -> Result<(), SessionError> {
        if self.nodes.len() >= max_nodes {
            return Err(SessionError::NodeLimit(max_nodes));
        }
        Ok(())
    }

    /// The name a new node gets: the one asked for if it is free, else the first `nodeN` not
    /// taken.
    pub fn node_name_for(&self, wanted: Option<&str>) -> Result<String, SessionError> {
        match wanted {
            Some(name) if self.nodes.contains_key(name) => {
                Err(SessionError::NameTaken(name.into()))
            }
            Some(name) => Ok(name.into()),
            None => Ok((1..)
                .map(|i| format!("node{i}"))
                .find(|n| !self.nodes.contains_key(n))
                .expect("a free name")),
        }
    }

    /// Starts the end: from now on the session is invisible to clients.
    pub fn begin_end(&mut self) -> Result<(), SessionError> {
        if self.is_ending() {
            return Err(SessionError::Ending);
        }
        self.state = SessionState::Ending { retry_at: None };
        Ok(())
    }
}

/// The sessions by id.
pub(super) type Table = BTreeMap<String, Session>;

/// A live session, or the client's 404 (an ending or opening one does not exist for clients).
pub(super) fn live<'a>(table: &'a Table, sid: &str) -> Result<&'a Session, SessionError> {
    match table.get(sid) {
        Some(s) if s.is_live() => Ok(s),
        _ => Err(SessionError::UnknownSession(sid.into())),
    }
}

pub(super) fn live_mut<'a>(
    table: &'a mut Table,
    sid: &str,
) -> Result<&'a mut Session, SessionError> {
    match table.get_mut(sid) {
        Some(s) if s.is_live() => Ok(s),
        _ => Err(SessionError::UnknownSession(sid.into())),
    }
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC, to the second.
pub(super) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// 128 random bits as 32 lowercase hex digits.
pub(super) fn new_session_id() -> Result<String, SessionError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| SessionError::Internal(format!("random id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Longest node name: `{node}-{sid}-{port}` must stay one DNS label (63 bytes) for the port
/// proxy's host names.
pub const MAX_NODE_NAME: usize = 24;

/// Whether `name` may name a node: a DNS label of at most [`MAX_NODE_NAME`] bytes of a-z, 0-9
/// and '-', and not the name of the session registry.
pub fn valid_node_name(name: &str) -> bool {
    (1..=MAX_NODE_NAME).contains(&name.len())
        && name != "registry"
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// Whether `s` has the shape of a session id; anything else is an unknown session.
pub fn is_session_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        let row = SessionRow {
            id: "s".into(),
            created_at: 0,
            expires_at: 1,
            max_expires_at: 2,
            template: None,
            client: "127.0.0.1".parse().unwrap(),
        };
        Session::new(row, SessionState::Live)
    }

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
    fn node_names_fill_the_first_gap_or_are_asked_for() {
        let mut s = session();
        assert_eq!(s.node_name_for(None).unwrap(), "node1");
        for n in ["node1", "node3", "manager1"] {
            s.nodes
                .insert(n.into(), NodeMeta::new("x".into(), None, NodeState::Ready));
        }
        assert_eq!(s.node_name_for(None).unwrap(), "node2");
        assert_eq!(s.node_name_for(Some("worker1")).unwrap(), "worker1");
        assert!(matches!(
            s.node_name_for(Some("manager1")),
            Err(SessionError::NameTaken(_))
        ));
    }

    #[test]
    fn node_names_are_short_dns_labels() {
        for ok in ["node1", "manager-1", "a", &"a".repeat(MAX_NODE_NAME)] {
            assert!(valid_node_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Node1",
            "-a",
            "a-",
            "a.b",
            "a_b",
            "registry",
            &"a".repeat(MAX_NODE_NAME + 1),
        ] {
            assert!(!valid_node_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_ready_nodes_are_used_or_removed() {
        let mut m = NodeMeta::new("x".into(), None, NodeState::Creating);
        assert!(matches!(m.can_use("n"), Err(SessionError::NodeBusy(_))));
        assert!(m.can_remove("n").is_err());
        m.state = NodeState::Ready;
        assert!(m.can_use("n").is_ok() && m.can_remove("n").is_ok());
        m.state = NodeState::Removing;
        assert!(m.can_remove("n").is_err());
    }

    #[test]
    fn a_session_ends_once() {
        let mut s = session();
        assert!(s.can_add_node(1).is_ok());
        s.nodes.insert(
            "node1".into(),
            NodeMeta::new("x".into(), None, NodeState::Ready),
        );
        assert!(matches!(s.can_add_node(1), Err(SessionError::NodeLimit(1))));
        s.begin_end().unwrap();
        assert!(!s.is_live());
        assert!(matches!(s.begin_end(), Err(SessionError::Ending)));
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
