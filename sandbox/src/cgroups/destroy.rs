//! Removing a node's cgroup trees, children first, killing what is still inside.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::kernfs::errno_of;

use super::{hierarchy_roots, subtree_post_order, tree_pids, CgroupError, NodeCgroup};

/// How long `destroy` keeps retrying a busy cgroup.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(2);
const DESTROY_RETRY: Duration = Duration::from_millis(20);

impl NodeCgroup {
    /// Removes the node's cgroup tree in every hierarchy, children first: a killed nested
    /// dockerd leaves `docker/<id>` cgroups behind. Processes still inside are SIGKILLed.
    /// Missing directories are fine, so this is idempotent; the parent stays.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        if !self.exists() {
            return Ok(());
        }
        let tops: Vec<PathBuf> = hierarchy_roots(&self.root)
            .into_iter()
            .map(|(h, _)| self.dir(h))
            .collect();
        let me = std::process::id() as i32;
        let start = Instant::now();
        loop {
            // Kill on every round: a process may have forked between reading cgroup.procs and
            // the kill. pids.max bounds how long that can go on.
            let mut hard_error = None;
            for pid in tree_pids(&tops) {
                // Never ourselves: a helper attached to the node may be the one tearing it down.
                if pid <= 1 || pid == me {
                    continue;
                }
                match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(errno) => {
                        hard_error.get_or_insert(CgroupError::Kill {
                            pid,
                            path: self.rel.clone(),
                            errno,
                        });
                    }
                }
            }
            let mut busy = None;
            for top in &tops {
                for dir in subtree_post_order(top) {
                    match fs::remove_dir(&dir) {
                        Ok(()) => {}
                        Err(e) => match errno_of(&e) {
                            Errno::ENOENT => {}
                            // Tasks still exiting, or a child created since the walk.
                            Errno::EBUSY | Errno::ENOTEMPTY => {
                                busy.get_or_insert(dir);
                            }
                            errno => {
                                hard_error.get_or_insert(CgroupError::Remove { path: dir, errno });
                            }
                        },
                    }
                }
            }
            if let Some(e) = hard_error {
                return Err(e);
            }
            let Some(path) = busy else {
                tracing::debug!(cgroup = %self.rel.display(), "cgroup removed");
                return Ok(());
            };
            if start.elapsed() >= DESTROY_TIMEOUT {
                return Err(CgroupError::Busy {
                    path,
                    waited_ms: start.elapsed().as_millis(),
                    pids: self.pids(),
                });
            }
            std::thread::sleep(DESTROY_RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::testing::fake_root;
    use crate::cgroups::{leftovers, remove_parent_if_empty, HIERARCHIES};

    #[test]
    fn destroy_removes_nested_trees_and_is_idempotent() {
        let root = fake_root("destroy");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        for h in HIERARCHIES {
            fs::create_dir_all(cg.dir(h).join("docker/abc")).unwrap();
        }
        fs::create_dir_all(root.0.join("memory/sp/n2")).unwrap();
        cg.destroy().unwrap();
        assert!(!cg.exists());
        cg.destroy().unwrap();
        // The sibling keeps the parent in memory; elsewhere the parent goes.
        remove_parent_if_empty(&root.0, "sp").unwrap();
        assert_eq!(
            leftovers(&root.0, "sp"),
            vec![root.0.join("memory/sp"), root.0.join("memory/sp/n2")]
        );
        remove_parent_if_empty(&root.0, "sp").unwrap();
        fs::remove_dir(root.0.join("memory/sp/n2")).unwrap();
        remove_parent_if_empty(&root.0, "sp").unwrap();
        assert!(leftovers(&root.0, "sp").is_empty());
        remove_parent_if_empty(&root.0, "sp").unwrap();
    }

    #[test]
    fn pids_are_collected_recursively() {
        let root = fake_root("pids");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        let dir = cg.dir("memory");
        fs::create_dir_all(dir.join("docker/abc")).unwrap();
        fs::write(dir.join("cgroup.procs"), "12\n7\n").unwrap();
        fs::write(dir.join("docker/abc/cgroup.procs"), "40\n12\n0\n").unwrap();
        assert_eq!(cg.pids(), vec![7, 12, 40]);
        assert!(NodeCgroup::new(&root.0, "sp", "gone").pids().is_empty());
    }
}
