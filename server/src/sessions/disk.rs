//! Watching the free space of the node disks' filesystem (`crate::disk` plans the rest at
//! start): below the reserve no node is made, so what is left stays for the store and the
//! nodes that run. Sampled every few seconds, and the operator's log says when it changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{SessionError, Sessions};

const DISK_INTERVAL: Duration = Duration::from_secs(5);
/// Stands for "could not be read" in the atomic.
const UNKNOWN: u64 = u64::MAX;

/// The last reading.
pub(super) struct DiskWatch {
    free: AtomicU64,
}

impl DiskWatch {
    pub(super) fn new() -> DiskWatch {
        DiskWatch {
            free: AtomicU64::new(UNKNOWN),
        }
    }
}

impl Sessions {
    pub(super) fn start_disk_watch(self: &Arc<Self>) {
        self.every(DISK_INTERVAL, |s| s.sample_disk());
    }

    /// Reads the free space now; says so in the log when it falls below the reserve or rises
    /// above it again.
    pub(super) fn sample_disk(&self) {
        let free = self.runtime.disk_free().unwrap_or(UNKNOWN);
        let before = self.disk.free.swap(free, Ordering::Relaxed);
        let reserve = self.cfg.disk_reserve_bytes;
        let low = |f: u64| f != UNKNOWN && f < reserve;
        match (low(before), low(free)) {
            (false, true) => tracing::warn!(
                free_mib = free >> 20,
                reserve_mib = reserve >> 20,
                "the disk of the node images is below its reserve: no new nodes until there is \
                 room again (free space on it, or a smaller --disk-reserve-gib)"
            ),
            (true, false) => tracing::info!(free_mib = free >> 20, "the disk has room again"),
            _ => {}
        }
    }

    /// Free bytes at the last reading, if it could be read.
    pub fn disk_free(&self) -> Option<u64> {
        Some(self.disk.free.load(Ordering::Relaxed)).filter(|f| *f != UNKNOWN)
    }

    /// Whether the free space is below the reserve (an unreadable figure is not low).
    pub fn disk_low(&self) -> bool {
        self.disk_free()
            .is_some_and(|f| f < self.cfg.disk_reserve_bytes)
    }

    /// Refuses to make nodes while the disk is low.
    pub(super) fn check_disk(&self) -> Result<(), SessionError> {
        match self.disk_free() {
            Some(free) if free < self.cfg.disk_reserve_bytes => Err(SessionError::DiskLow {
                free,
                reserve: self.cfg.disk_reserve_bytes,
            }),
            _ => Ok(()),
        }
    }
}
