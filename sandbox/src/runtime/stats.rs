//! Live figures of a running node: its cgroups' counters and its disk's use.

use super::{Error, NodeStats, Runtime};

impl Runtime {
    /// Memory, CPU, pids and disk use of a node.
    pub fn stats(&self, network: &str, hostname: &str) -> Result<NodeStats, Error> {
        let rec = self.running(network, hostname)?;
        let cgroup = self.cgroup(&rec).stats()?;
        let disk = self.node_dir(&rec).disk();
        let (used, total) = nix::sys::statvfs::statvfs(&disk)
            .map(|s| {
                let f = s.fragment_size();
                ((s.blocks() - s.blocks_free()) * f, s.blocks() * f)
            })
            .unwrap_or((0, 0));
        Ok(NodeStats {
            cgroup,
            disk_used_bytes: used,
            disk_total_bytes: total,
        })
    }
}
