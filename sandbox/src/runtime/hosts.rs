//! Names in a session network: every node's `/etc/hosts` (rewritten in place whenever a node
//! comes or goes, so bind mounts inside keep seeing it) and the table of the session's DNS
//! server, both listing the nodes and the registries' names on the gateway.

use std::net::Ipv4Addr;

use super::{Inner, Runtime};
use crate::network;
use crate::rootfs::NodeDir;
use crate::state::{NodeRecord, NodeStatus};

impl Runtime {
    /// Names and addresses of a network's nodes whose status passes `keep`, and the session
    /// registry's name when there is one.
    fn host_entries(
        &self,
        inner: &Inner,
        network: &str,
        keep: impl Fn(NodeStatus) -> bool,
    ) -> Vec<(String, Ipv4Addr)> {
        let registry: Vec<(String, Ipv4Addr)> =
            match (inner.networks.get(network), &self.registries) {
                (Some(net), Some(r)) => r
                    .host_names(net.egress)
                    .into_iter()
                    .map(|name| (name.to_string(), net.subnet.gateway()))
                    .collect(),
                _ => Vec::new(),
            };
        inner
            .nodes
            .values()
            .filter(|n| n.network == network && keep(n.status))
            .map(|n| (n.hostname.clone(), n.ip))
            .chain(registry)
            .collect()
    }

    /// `/etc/hosts` of a network's nodes: every node but those being destroyed.
    pub(super) fn hosts_of(&self, network: &str) -> String {
        network::render_hosts(
            &self.host_entries(&self.lock(), network, |s| s != NodeStatus::Destroying),
        )
    }

    /// Rewrites `/etc/hosts` of every running node of the network, and its DNS table (running
    /// nodes only: their names answer once they do).
    pub(super) fn refresh_hosts(&self, network: &str) {
        let _serial = self.hosts_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (content, running) = {
            let inner = self.lock();
            let content = network::render_hosts(
                &self.host_entries(&inner, network, |s| s != NodeStatus::Destroying),
            );
            if let Some(services) = inner.services.get(network) {
                let names = self.host_entries(&inner, network, |s| s == NodeStatus::Running);
                *services
                    .dns_table
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = names.into_iter().collect();
            }
            let running: Vec<NodeRecord> = inner
                .nodes
                .values()
                .filter(|n| n.network == network && n.status == NodeStatus::Running)
                .cloned()
                .collect();
            (content, running)
        };
        for n in running {
            let path = self.node_dir(&n).hosts();
            let owner = n.uid_base.map(|b| (b, b)).unwrap_or((0, 0));
            if let Err(e) = NodeDir::write_in_place(&path, &content, owner) {
                tracing::warn!(node = %n.hostname, error = %e, "update /etc/hosts");
            }
        }
    }
}
