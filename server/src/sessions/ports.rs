//! Published ports: one follower per ready node (the runtime's [`NodeRuntime::follow_ports`]),
//! started and stopped as nodes come and go, reporting into the node's view (and the events
//! stream, when the ports change).
//!
//! [`NodeRuntime::follow_ports`]: crate::node_runtime::NodeRuntime::follow_ports

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Sessions;

/// How often the supervisor looks for new and removed nodes.
const SCAN: Duration = Duration::from_secs(1);

impl Sessions {
    /// Starts the supervisor of the followers; it stops when the sessions are dropped.
    pub(super) fn start_ports(self: &Arc<Self>) {
        tokio::spawn(supervise(Arc::downgrade(self)));
    }
}

/// A node's follower; stops when dropped.
struct Follower(JoinHandle<()>);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn supervise(weak: Weak<Sessions>) {
    let mut followers: HashMap<(String, String), Follower> = HashMap::new();
    let mut tick = tokio::time::interval(SCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(sessions) = weak.upgrade() else {
            return;
        };
        let ready = sessions.ready_nodes();
        followers.retain(|key, _| ready.contains(key));
        for (sid, name) in ready {
            followers
                .entry((sid.clone(), name.clone()))
                .or_insert_with(|| {
                    let report = {
                        let (weak, sid, name) = (weak.clone(), sid.clone(), name.clone());
                        Box::new(move |ports: Vec<u16>| {
                            if let Some(s) = weak.upgrade() {
                                s.set_ports(&sid, &name, ports);
                            }
                        })
                    };
                    Follower(tokio::spawn(
                        sessions.runtime.follow_ports(&sid, &name, report),
                    ))
                });
        }
    }
}
