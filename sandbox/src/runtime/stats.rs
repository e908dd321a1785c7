//! Live figures of a running node (its cgroups' counters and its disk's use), and of the host
//! filesystem the node disks live on.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

use super::{Error, NodeStats, Runtime};
use crate::rootfs::NodeDir;

/// The filesystem of the state directory, where every node's disk image is. The images are
/// sparse: a node's cap is a promise the filesystem may not be able to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskUse {
    /// Free to unprivileged writers (`f_bavail`), like `df`'s "Avail".
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// What the node disk images have taken so far.
    pub node_disks_bytes: u64,
}

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

impl Runtime {
    /// Measures the filesystem of the state directory `state_dir` (the runtime's, with
    /// `nodes/` in it), or of its nearest existing parent before the first start.
    pub fn disk_use_of(state_dir: &Path) -> std::io::Result<DiskUse> {
        let fs = nix::sys::statvfs::statvfs(crate::reach::nearest_existing(state_dir))?;
        // The casts matter on 32-bit targets, where these are 32-bit.
        #[allow(clippy::unnecessary_cast)]
        let (free_bytes, total_bytes) = (
            fs.blocks_available() as u64 * fs.fragment_size() as u64,
            fs.blocks() as u64 * fs.fragment_size() as u64,
        );
        let node_disks_bytes = std::fs::read_dir(state_dir.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::metadata(NodeDir::new(e.path()).disk_image()).ok())
            .map(|m| m.blocks() * 512)
            .sum();
        Ok(DiskUse {
            free_bytes,
            total_bytes,
            node_disks_bytes,
        })
    }

    /// [`Runtime::disk_use_of`] this runtime's state directory.
    pub fn disk_use(&self) -> std::io::Result<DiskUse> {
        Self::disk_use_of(&self.cfg.state_dir)
    }
}
