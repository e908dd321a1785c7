//! Destroying nodes: mark the record `destroying`, kill the node's PID 1 (its pid namespace
//! goes with it), delete the veth, remove the cgroups, the directory and the uid range.
//! Every step tolerates what is already gone, so a teardown that failed halfway is finished by
//! the next attempt or the next start.

use std::time::Duration;

use super::{Error, Runtime};
use crate::cgroups;
use crate::network::link;
use crate::process;
use crate::state::{self, NodeRecord, NodeStatus};

/// How long a killed node init may take to be gone.
const INIT_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

impl Runtime {
    /// Destroys a node and everything it had on the host.
    pub async fn destroy_node(&self, network: &str, hostname: &str) -> Result<(), Error> {
        let key = (network.to_string(), hostname.to_string());
        let rec = {
            let mut inner = self.lock();
            let rec = inner
                .nodes
                .get_mut(&key)
                .ok_or_else(|| Error::UnknownNode {
                    network: network.into(),
                    hostname: hostname.into(),
                })?;
            if !rec.status.can_destroy() {
                return Err(Error::NotRunning {
                    hostname: hostname.into(),
                    status: rec.status,
                });
            }
            rec.status = NodeStatus::Destroying;
            rec.clone()
        };
        let _ = state::save(&self.node_dir(&rec).record(), &rec);
        let res = self.teardown(&rec).await;
        {
            let mut inner = self.lock();
            if res.is_ok() || !self.node_dir(&rec).record().exists() {
                inner.nodes.remove(&key);
            } else if let Some(r) = inner.nodes.get_mut(&key) {
                // Its processes could not all be removed: keep the record (and the uid range)
                // so that another destroy, or the next start, tries again.
                r.status = NodeStatus::Failed;
                let _ = state::save(&self.node_dir(r).record(), r);
            }
        }
        self.refresh_hosts(network);
        res
    }

    /// Removes every trace of a node; each step tolerates what is already gone. Reports every
    /// step that failed. While any of the node's processes may still live, its directory,
    /// record and uid range stay, so that a later attempt can finish the job and no new node
    /// gets the same host uids.
    pub(super) async fn teardown(&self, rec: &NodeRecord) -> Result<(), Error> {
        let mut failures = Vec::new();
        // Killing PID 1 of the node ends every process of its pid namespace, and with the
        // last of them the mount and network namespaces (and the veth's node end).
        match rec.init() {
            Some(init) => {
                init.kill();
                if !init.wait_gone(INIT_EXIT_TIMEOUT).await {
                    failures.push(format!("node init {} did not exit", init.pid));
                }
            }
            // It had exited before its start time was read: reap it if it is ours.
            None => {
                if let Some(pid) = rec.init_pid {
                    process::reap_if_exited(pid);
                }
            }
        }
        if let Err(e) = link::delete_link(&rec.veth).await {
            failures.push(e.to_string());
        }
        let cg = self.cgroup(rec);
        match tokio::task::spawn_blocking(move || cg.destroy()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("remove cgroups: {e}")),
        }
        if !failures.is_empty() {
            return Err(Error::Teardown(failures));
        }
        if let Err(e) = self.node_dir(rec).remove().await {
            failures.push(e.to_string());
        }
        self.release_uid_range(rec);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(failures))
        }
    }

    /// Destroys every node and network of this runtime, whatever its names cover without a
    /// record (`sweep.rs`), and its cgroup parent.
    pub async fn destroy_all(&self) -> Result<(), Error> {
        let names: Vec<String> = self.lock().networks.keys().cloned().collect();
        let mut failures = Vec::new();
        for n in names {
            if let Err(e) = self.destroy_network(&n).await {
                failures.push(e.to_string());
            }
        }
        failures.extend(self.sweep_unrecorded().await);
        if let Err(e) =
            cgroups::remove_parent_if_empty(&self.cfg.cgroup_root, &self.cfg.cgroup_parent)
        {
            failures.push(e.to_string());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(failures))
        }
    }
}
