//! The host's disk as a resource. Node disks are sparse images capped at `--node-disk-gib`, so
//! the caps of every node together may promise more than the filesystem holds: one `dd` per
//! learner would then fill it, and the store and every session with it. So at start the server
//! plans within what the filesystem of its state directory has: free space, plus what node
//! disks took already, less a reserve (`--disk-reserve-gib`) that nodes never get. The cap of a
//! node is derived from that budget unless set, and capacity is lowered until every node can
//! fill its cap. While it runs, the server watches the free space and stops making nodes below
//! the reserve (something else on the host may be filling it).

use sandbox::DiskUse;

const GIB: u64 = 1 << 30;
/// A derived cap never goes below this (room for a few images and a build) nor above
/// [`MAX_DERIVED_CAP`].
pub const MIN_DERIVED_CAP: u64 = 2 * GIB;
pub const MAX_DERIVED_CAP: u64 = 10 * GIB;

/// How nodes share the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPlan {
    /// What node disks may take in all: free, plus what they hold, less the reserve.
    pub budget: u64,
    /// Every node's cap.
    pub node_cap: u64,
    /// Nodes on this host: what was asked for, or fewer if their caps would not fit.
    pub capacity: usize,
}

impl DiskPlan {
    /// Plans `wanted` nodes on `disk` keeping `reserve` free; `cap` is the operator's, or
    /// derived (whole GiB, within the bounds above) so that `wanted` nodes fit.
    pub fn new(disk: DiskUse, reserve: u64, cap: Option<u64>, wanted: usize) -> DiskPlan {
        let budget = (disk.free_bytes + disk.node_disks_bytes).saturating_sub(reserve);
        let node_cap = cap.unwrap_or_else(|| {
            let share = budget / wanted.max(1) as u64;
            (share / GIB * GIB).clamp(MIN_DERIVED_CAP, MAX_DERIVED_CAP)
        });
        let fits = (budget / node_cap.max(1)) as usize;
        DiskPlan {
            budget,
            node_cap,
            capacity: wanted.min(fits),
        }
    }

    /// One line for the log at start.
    pub fn describe(&self, wanted: usize) -> String {
        let limited = if self.capacity < wanted {
            format!(" (not {wanted}: their caps would not fit)")
        } else {
            String::new()
        };
        format!(
            "{} nodes{limited} of {} GiB each within {:.1} GiB of disk",
            self.capacity,
            self.node_cap / GIB,
            self.budget as f64 / GIB as f64
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(free_gib: u64, used_gib: u64) -> DiskUse {
        DiskUse {
            free_bytes: free_gib * GIB,
            total_bytes: 250 * GIB,
            node_disks_bytes: used_gib * GIB,
        }
    }

    #[test]
    fn caps_and_capacity_fit_the_budget() {
        // This machine: 72 GiB free, 61 nodes by memory, 4 GiB kept: 2 GiB each, 34 nodes.
        let p = DiskPlan::new(disk(72, 0), 4 * GIB, None, 61);
        assert_eq!((p.budget, p.node_cap, p.capacity), (68 * GIB, 2 * GIB, 34));
        assert!(
            p.describe(61).contains("34 nodes (not 61"),
            "{}",
            p.describe(61)
        );
        // A large disk: the default cap of 10 GiB, every node fits.
        let p = DiskPlan::new(disk(900, 0), 4 * GIB, None, 61);
        assert_eq!((p.node_cap, p.capacity), (10 * GIB, 61));
        // In between: the cap is the whole GiB share.
        let p = DiskPlan::new(disk(300, 0), 4 * GIB, None, 61);
        assert_eq!((p.node_cap, p.capacity), (4 * GIB, 61));
        // What nodes hold already counts as theirs.
        let p = DiskPlan::new(disk(10, 30), 4 * GIB, Some(4 * GIB), 61);
        assert_eq!((p.budget, p.capacity), (36 * GIB, 9));
        // An operator's cap is kept, and capacity follows it.
        let p = DiskPlan::new(disk(72, 0), 4 * GIB, Some(10 * GIB), 61);
        assert_eq!((p.node_cap, p.capacity), (10 * GIB, 6));
        // Less free than the reserve: no node at all.
        let p = DiskPlan::new(disk(3, 0), 4 * GIB, None, 61);
        assert_eq!((p.budget, p.capacity), (0, 0));
        assert_eq!(p.node_cap, MIN_DERIVED_CAP);
    }
}
