//! Recovery at start: the store's sessions reconciled with what the node runtime adopted.

use std::collections::BTreeMap;

use super::error::SessionError;
use super::state::{is_session_id, now_secs, NodeMeta, NodeState, Session, SessionState};
use super::Sessions;
use crate::store::NodeRow;
use crate::wire::Role;

impl Sessions {
    /// Loads the store and reconciles it with the runtime: sessions that expired while the
    /// server was down are destroyed, stored nodes that no longer exist are forgotten, nodes of
    /// a session that were never recorded (a crash mid-create) are adopted, and networks that
    /// look like sessions but have no row (a crash before the row) are destroyed. The live
    /// sessions' terminals are taken over from their holders.
    pub async fn recover(&self) -> Result<(), SessionError> {
        let now = now_secs();
        let mut stored_nodes: BTreeMap<String, Vec<NodeRow>> = BTreeMap::new();
        for n in self.store.nodes()? {
            stored_nodes.entry(n.session.clone()).or_default().push(n);
        }
        let networks = self.runtime.networks();
        let running = self.runtime.nodes();
        let mut expired = Vec::new();
        for row in self.store.sessions()? {
            if !networks.contains(&row.id) {
                tracing::warn!(session = %row.id, "session's network is gone; forgetting it");
                self.store.delete_session(&row.id)?;
                continue;
            }
            let mut nodes = BTreeMap::new();
            for n in stored_nodes.remove(&row.id).unwrap_or_default() {
                if running
                    .iter()
                    .any(|f| f.network == row.id && f.name == n.name)
                {
                    let role = n.role.as_deref().and_then(Role::parse);
                    nodes.insert(n.name, NodeMeta::new(n.image, role, NodeState::Ready));
                } else {
                    self.store.delete_node(&row.id, &n.name)?;
                }
            }
            for f in running.iter().filter(|f| f.network == row.id) {
                if !nodes.contains_key(&f.name) {
                    self.store.put_node(&NodeRow {
                        session: row.id.clone(),
                        name: f.name.clone(),
                        image: f.image.clone(),
                        role: None,
                    })?;
                    nodes.insert(
                        f.name.clone(),
                        NodeMeta::new(f.image.clone(), None, NodeState::Ready),
                    );
                }
            }
            let state = if row.expires_at <= now {
                expired.push(row.id.clone());
                SessionState::Ending { retry_at: None }
            } else {
                tracing::info!(session = %row.id, nodes = nodes.len(), "session recovered");
                SessionState::Live
            };
            let id = row.id.clone();
            let mut session = Session::new(row, state);
            session.nodes = nodes;
            self.lock().insert(id.clone(), session);
            // The shells kept running in their holders; viewers resume where they were.
            self.adopt_terminals(&id);
        }
        for id in expired {
            tracing::info!(session = %id, "session expired while the server was down");
            // A failure is logged and retried by the expiry loop; the server starts anyway.
            let _ = self.teardown(&id).await;
        }
        for net in self.runtime.networks() {
            if is_session_id(&net) && !self.lock().contains_key(&net) {
                tracing::warn!(session = %net, "network of an unrecorded session; destroying it");
                if let Err(e) = self.runtime.destroy_network(&net).await {
                    tracing::error!(session = %net, error = %e, "destroy an unrecorded network");
                }
            }
        }
        Ok(())
    }
}
