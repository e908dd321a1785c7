//! Host uid ranges for user-namespace nodes, shared by every instance on the host.
//!
//! Each node of `userns` isolation maps its uids 0-65535 to a range of its own on the host:
//! range `r` starts at `start + r * 65536`. A range is claimed by creating the lock file
//! `<lock_dir>/<r>` exclusively (`O_EXCL`), so instances with other state directories (and
//! parallel tests) never hand out the same range; the file says who owns it:
//! `<prefix> <state_dir> <node dir name>`. A lock outlives its owner's process, so a crash
//! leaves it behind, and the next owner of that state directory sweeps those whose node has no
//! record.

use std::io::Write;
use std::path::PathBuf;

use crate::config::RuntimeConfig;
use crate::state::StateError;

/// The host uids of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UidRange {
    /// The lock's number.
    pub index: u32,
    /// The host uid (and gid) of the node's root.
    pub base: u32,
}

/// The ranges of one state directory's owner.
pub(crate) struct UidPool {
    lock_dir: PathBuf,
    start: u32,
    ranges: u32,
    /// `<prefix> <state_dir> `: how the locks of this state directory begin.
    owner: String,
}

impl UidPool {
    pub fn new(cfg: &RuntimeConfig) -> UidPool {
        UidPool {
            lock_dir: cfg.uid_lock_dir.clone(),
            start: cfg.uid_pool_start,
            ranges: cfg.uid_pool_ranges,
            owner: format!("{} {} ", cfg.prefix, cfg.state_dir.display()),
        }
    }

    /// How many ranges there are.
    pub fn size(&self) -> u32 {
        self.ranges
    }

    /// Claims the first free range for the node in directory `node`; None when all are taken.
    pub fn claim(&self, node: &str) -> Result<Option<UidRange>, StateError> {
        for index in 0..self.ranges {
            let path = self.lock_dir.join(index.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("{}{node}\n", self.owner).as_bytes())
                        .map_err(|e| StateError::new("write", &path, e))?;
                    return Ok(Some(UidRange {
                        index,
                        base: self.start + index * 65536,
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StateError::new("create", &path, e)),
            }
        }
        Ok(None)
    }

    /// Releases range `index` if its lock is still ours.
    pub fn release(&self, index: u32) {
        let path = self.lock_dir.join(index.to_string());
        if self.owned(&path).is_some() {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Releases this state directory's locks whose node is not `known` (a crash between
    /// claiming the range and saving the node's record).
    pub fn sweep(&self, known: impl Fn(&str) -> bool) {
        for (path, node) in self.locks() {
            if !known(&node) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// This state directory's lock files.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.locks().into_iter().map(|(path, _)| path).collect()
    }

    /// This state directory's locks and the node directory each names.
    fn locks(&self) -> Vec<(PathBuf, String)> {
        let Ok(entries) = std::fs::read_dir(&self.lock_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| Some((e.path(), self.owned(&e.path())?)))
            .collect()
    }

    /// The node named by lock `path` if the lock is ours.
    fn owned(&self, path: &std::path::Path) -> Option<String> {
        let content = std::fs::read_to_string(path).ok()?;
        Some(content.strip_prefix(&self.owner)?.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_claimed_released_and_swept_per_state_dir() {
        let dir = crate::testdir::TempDir::new("uid-pool");
        let mut cfg = RuntimeConfig::new("/bin/true".into());
        cfg.uid_lock_dir = dir.0.clone();
        cfg.uid_pool_ranges = 3;
        let pool = UidPool::new(&cfg);
        cfg.state_dir = "/elsewhere".into();
        let other = UidPool::new(&cfg);

        let a = pool.claim("net-node1").unwrap().unwrap();
        let b = other.claim("net-node1").unwrap().unwrap();
        let c = pool.claim("net-node2").unwrap().unwrap();
        assert_eq!((a.index, b.index, c.index), (0, 1, 2));
        assert_eq!(c.base, cfg.uid_pool_start + 2 * 65536);
        assert_eq!(pool.claim("net-node3").unwrap(), None);
        assert_eq!(pool.leftovers().len(), 2);

        other.release(a.index); // not its own
        assert_eq!(pool.leftovers().len(), 2);
        pool.sweep(|node| node == "net-node1");
        assert_eq!(pool.leftovers(), vec![dir.0.join("0")]);
        pool.release(a.index);
        assert!(pool.leftovers().is_empty());
        assert_eq!(other.leftovers(), vec![dir.0.join("1")]);
    }
}
