//! Sweeping the host objects of the runtime's prefix that no record accounts for: what an owner
//! killed in the middle of a create or a teardown left (a node's cgroups and processes, its
//! mounts, a bridge or veth, firewall chains). Names say what is ours: cgroups below the
//! runtime's parent, mounts below its state directory, links `{prefix}b{net}` and
//! `{prefix}{net}v{host}`, chains `{PREFIX}-{NET}-{kind}`. Node directories without a record,
//! and uid locks without a node, are recovery's (`mod.rs`).

use std::path::Path;

use super::Runtime;
use crate::cgroups::{self, NodeCgroup};
use crate::network::{firewall, is_link_of, link};
use crate::rootfs;

impl Runtime {
    /// Removes what this runtime's names cover and its records do not keep; returns what
    /// could not be removed. Run at start, after recovery, and by `destroy_all`.
    pub(super) async fn sweep_unrecorded(&self) -> Vec<String> {
        let (nets, nodes) = {
            let inner = self.lock();
            let nets: Vec<_> = inner.networks.values().cloned().collect();
            let nodes: Vec<_> = inner.nodes.values().cloned().collect();
            (nets, nodes)
        };
        let mut failures = Vec::new();

        // Cgroups first: destroying one kills the processes inside (a node's init and engine).
        for name in cgroups::children(&self.cfg.cgroup_root, &self.cfg.cgroup_parent) {
            if nodes.iter().any(|n| n.cgroup == name) {
                continue;
            }
            tracing::warn!(cgroup = %name, "removing a node cgroup that no record names");
            let cg = NodeCgroup::new(&self.cfg.cgroup_root, &self.cfg.cgroup_parent, &name);
            if let Err(e) = cg.destroy() {
                failures.push(e.to_string());
            }
        }

        // Mounts below the state directory that no recorded node owns, deepest first; the loop
        // devices of node disks go with their mounts (autoclear).
        let kept: Vec<_> = nodes.iter().map(|n| self.node_dir(n).dir).collect();
        let mut mounts = rootfs::mounts_below(&self.cfg.state_dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            if kept.iter().any(|k| Path::new(&m).starts_with(k)) {
                continue;
            }
            tracing::warn!(mount = %m, "unmounting what no record names");
            if let Err(errno) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
                failures.push(format!("unmount {m}: {errno}"));
            }
        }

        let links = std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok());
        for name in links {
            let recorded =
                nets.iter().any(|n| n.bridge == name) || nodes.iter().any(|n| n.veth == name);
            if recorded || !is_link_of(&self.cfg.prefix, &name) {
                continue;
            }
            tracing::warn!(link = %name, "deleting a link that no record names");
            if let Err(e) = link::delete_link(&name).await {
                failures.push(e.to_string());
            }
        }

        let recorded = |index: u32| nets.iter().any(|n| n.index == index);
        if let Err(e) = firewall::remove_unkept(&self.cfg.prefix, recorded).await {
            failures.push(e.to_string());
        }
        failures
    }
}
