//! Per-node cgroups on cgroup v1: creation with limits, attaching processes, delegation to a
//! user namespace, statistics and teardown.
//!
//! Kernel background. On a cgroup v1 ("hybrid") host every controller is its own hierarchy,
//! mounted at `/sys/fs/cgroup/<controller>` (plus `systemd`, a named hierarchy without a
//! controller, and `unified`, the cgroup v2 tree with no controllers in it). A cgroup is a
//! directory; creating one is `mkdir`, removing one is `rmdir` (allowed only when it has no
//! processes and no child cgroups, whatever control files it shows). Limits are control files
//! written with one `write(2)` each. A process is in exactly one cgroup per hierarchy, so a
//! node's processes must be moved into the node's cgroup in *every* hierarchy, and that has to
//! happen before the node creates its cgroup namespace: the namespace root is fixed at the
//! cgroups the process is in at that moment.
//!
//! Layout: `<root>/<hierarchy>/<parent>/<node>`. In user-namespace mode the node's directory
//! and the few files needed to create child cgroups and move processes (`cgroup.procs`,
//! `tasks`, `cgroup.clone_children`, and on v2 `cgroup.subtree_control`, `cgroup.threads`) are
//! chowned to the node's root uid ("delegation"). The limit files stay owned by host root, so
//! the node can limit its own containers (dockerd creates `docker/<id>` below) but cannot raise
//! its own limits. Nested cgroups inherit nothing that lifts the parent's limits: v1 enforces
//! memory, pids and devices hierarchically.
//!
//! Quirks handled here: a new cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems`, and
//! attaching a process to it fails with ENOSPC until they are copied down from the level
//! above; `cpu` and `cpuacct` may be co-mounted (two symlinks to one hierarchy), so
//! hierarchies are de-duplicated by their resolved path; exiting tasks keep a cgroup busy for
//! a moment after SIGKILL, so removal retries EBUSY briefly.
//!
//! Files: `create.rs` (limits and delegation), `destroy.rs` (teardown of a tree), `stats.rs`
//! (the figures of a node); this one has the paths, attaching, and the file helpers.

mod create;
mod destroy;
mod stats;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::kernfs::{self, errno_of};

/// Resource use of one node, read from its cgroups.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// `memory.usage_in_bytes`: includes page cache, as the limit does.
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    /// `cpuacct.usage`: total CPU time of the node's tree.
    pub cpu_usage_ns: u64,
    /// `pids.current`: tasks (threads included) in the node's tree.
    pub pids: u64,
    /// OOM kills inside the node's memory cgroup (`oom_kill` in `memory.oom_control`).
    pub oom_kills: u64,
}

/// Every hierarchy a node gets a cgroup in, named by its directory under the cgroup root.
pub(crate) const HIERARCHIES: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    "unified",
];

/// `pub` (in this private module) because `runtime::Error` wraps it in a public variant.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup hierarchy {hierarchy} is not mounted at {path} (no cgroup.procs there)")]
    NotMounted {
        hierarchy: &'static str,
        path: PathBuf,
    },
    #[error("cgroup {path} already exists: a node of that name is running or was not cleaned up")]
    Exists { path: PathBuf },
    #[error("mkdir {path}: {errno}")]
    Mkdir { path: PathBuf, errno: Errno },
    #[error("read {path}: {errno}")]
    Read { path: PathBuf, errno: Errno },
    #[error("parse {path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("write {path}: {errno} (writing {value:?})")]
    Write {
        path: PathBuf,
        value: String,
        errno: Errno,
    },
    #[error("chown {path} to {uid}:{gid}: {errno}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        errno: Errno,
    },
    #[error("cpu limit {0} is not a number of cores >= 0")]
    InvalidCpus(f64),
    #[error("kill pid {pid} of cgroup {path}: {errno}")]
    Kill {
        pid: i32,
        path: PathBuf,
        errno: Errno,
    },
    #[error("rmdir {path}: {errno}")]
    Remove { path: PathBuf, errno: Errno },
    #[error("rmdir {path}: still busy after {waited_ms} ms, pids left: {pids:?}")]
    Busy {
        path: PathBuf,
        waited_ms: u128,
        pids: Vec<i32>,
    },
    #[error("{first}; cleaning up also failed: {cleanup}")]
    Cleanup {
        first: Box<CgroupError>,
        cleanup: Box<CgroupError>,
    },
}

/// One node's cgroup, `<root>/<hierarchy>/<parent>/<name>` in every hierarchy.
#[derive(Debug, Clone)]
pub(crate) struct NodeCgroup {
    root: PathBuf,
    rel: PathBuf,
}

impl NodeCgroup {
    pub fn new(root: &Path, parent: &str, name: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            rel: Path::new(parent).join(name),
        }
    }

    /// The node's directory in `hierarchy`.
    pub fn dir(&self, hierarchy: &str) -> PathBuf {
        self.root.join(hierarchy).join(&self.rel)
    }

    fn parent_rel(&self) -> &Path {
        self.rel.parent().unwrap_or(Path::new(""))
    }

    fn file(&self, hierarchy: &str, name: &str) -> PathBuf {
        self.dir(hierarchy).join(name)
    }

    /// Moves `pid` (a whole process) into the node's cgroup in every hierarchy. Must happen
    /// before that process creates its cgroup namespace.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let value = pid.to_string();
        for path in self.procs_files() {
            write(&path, &value)?;
        }
        Ok(())
    }

    /// The node's `cgroup.procs` files, one per hierarchy, for a helper that attaches itself
    /// by writing its own pid into each.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        hierarchy_roots(&self.root)
            .into_iter()
            .map(|(h, _)| self.file(h, "cgroup.procs"))
            .collect()
    }

    /// Whether the node's cgroup exists in any hierarchy.
    pub fn exists(&self) -> bool {
        HIERARCHIES.iter().any(|h| self.dir(h).is_dir())
    }

    /// Every process in the node's cgroup tree (memory hierarchy), sorted.
    pub fn pids(&self) -> Vec<i32> {
        tree_pids(&[self.dir("memory")])
    }
}

/// Removes `<root>/<hierarchy>/<parent>` in every hierarchy where it has no child cgroups.
/// One still in use (children or processes) is left alone; a missing one is fine. Only the
/// last component goes: levels above it may not be ours.
///
/// Racing this against `create` under the same parent can make the create fail; callers
/// serialise the two.
pub(crate) fn remove_parent_if_empty(root: &Path, parent: &str) -> Result<(), CgroupError> {
    let mut first_error = None;
    for (_, base) in hierarchy_roots(root) {
        let dir = base.join(parent);
        if has_child_dirs(&dir) {
            continue;
        }
        if let Err(e) = fs::remove_dir(&dir) {
            match errno_of(&e) {
                Errno::ENOENT | Errno::EBUSY | Errno::ENOTEMPTY => {}
                errno => {
                    first_error.get_or_insert(CgroupError::Remove { path: dir, errno });
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Names of the cgroups right below `<root>/<hierarchy>/<parent>`, in any hierarchy: one per
/// node, recorded or not.
pub(crate) fn children(root: &Path, parent: &str) -> BTreeSet<String> {
    hierarchy_roots(root)
        .into_iter()
        .filter_map(|(_, base)| fs::read_dir(base.join(parent)).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Every cgroup at or below `<root>/<hierarchy>/<parent>` in any hierarchy: what a leak check
/// expects to be empty once everything is torn down.
pub(crate) fn leftovers(root: &Path, parent: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for (h, _) in hierarchy_roots(root) {
        let top = root.join(h).join(parent);
        let mut dirs = subtree_post_order(&top);
        dirs.reverse();
        found.extend(dirs);
    }
    found
}

/// The hierarchies under `root` with their resolved directories. Co-mounted controllers (the
/// common `cpu` and `cpuacct` symlinks to `cpu,cpuacct`) appear once, under the first name.
pub(super) fn hierarchy_roots(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for h in HIERARCHIES {
        let path = root.join(h);
        let resolved = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.insert(resolved) {
            out.push((*h, path));
        }
    }
    out
}

/// One `write(2)` of `value`: cgroup files take a whole value per write.
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|e| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        errno: errno_of(&e),
    })
}

pub(super) fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    kernfs::read_trimmed(path).map_err(|e| CgroupError::Read {
        path: path.to_path_buf(),
        errno: errno_of(&e),
    })
}

pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read_trimmed(path)?)
}

pub(super) fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.to_string(),
    })
}

pub(super) fn do_chown(path: &Path, uid: u32, gid: u32) -> Result<(), CgroupError> {
    chown(path, Some(uid), Some(gid)).map_err(|e| CgroupError::Chown {
        path: path.to_path_buf(),
        uid,
        gid,
        errno: errno_of(&e),
    })
}

fn parse_pids(text: &str) -> impl Iterator<Item = i32> + '_ {
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
}

/// Directories of the tree at `top`, children before their parents; none if `top` is missing.
/// Symlinks are not followed.
pub(super) fn subtree_post_order(top: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if fs::symlink_metadata(top).is_ok_and(|m| m.is_dir()) {
        walk(top, &mut out);
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    // A directory vanishing mid-walk (a container exiting) is not an error.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

fn has_child_dirs(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    })
}

/// Pids in `cgroup.procs` of every cgroup in the trees at `tops`, sorted and de-duplicated.
pub(super) fn tree_pids(tops: &[PathBuf]) -> Vec<i32> {
    let mut pids = BTreeSet::new();
    for top in tops {
        for dir in subtree_post_order(top) {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(parse_pids(&text));
            }
        }
    }
    pids.into_iter().collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::config::NodeLimits;
    use crate::testdir::TempDir;

    /// A fake cgroup root: one directory per hierarchy with a `cgroup.procs`, and cpuset
    /// values at the top like a real root.
    pub(crate) fn fake_root(tag: &str) -> TempDir {
        let t = TempDir::new(tag);
        for h in HIERARCHIES {
            fs::create_dir(t.0.join(h)).unwrap();
            fs::write(t.0.join(h).join("cgroup.procs"), "").unwrap();
        }
        fs::write(t.0.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(t.0.join("cpuset/cpuset.mems"), "0\n").unwrap();
        t
    }

    pub(crate) fn limits(memory_bytes: u64, pids: u64, cpus: f64) -> NodeLimits {
        NodeLimits {
            memory_bytes,
            pids,
            cpus,
            disk_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::create::delegated_files;
    use crate::cgroups::testing::{fake_root, limits};
    use crate::testdir::TempDir;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    #[test]
    fn paths_are_built_per_hierarchy() {
        let cg = NodeCgroup::new(Path::new("/sys/fs/cgroup"), "sandpit", "n1");
        assert_eq!(
            cg.dir("memory"),
            Path::new("/sys/fs/cgroup/memory/sandpit/n1")
        );
        assert_eq!(
            cg.file("memory", "memory.limit_in_bytes"),
            Path::new("/sys/fs/cgroup/memory/sandpit/n1/memory.limit_in_bytes")
        );
        let nested = NodeCgroup::new(Path::new("/r"), "a/b", "n1");
        assert_eq!(nested.dir("pids"), Path::new("/r/pids/a/b/n1"));
        assert_eq!(nested.parent_rel(), Path::new("a/b"));
    }

    #[test]
    fn procs_files_cover_every_hierarchy_once() {
        let root = fake_root("procs");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        let files = cg.procs_files();
        assert_eq!(files.len(), HIERARCHIES.len());
        for (f, h) in files.iter().zip(HIERARCHIES) {
            assert_eq!(*f, root.0.join(h).join("sp/n1/cgroup.procs"));
        }

        // cpu and cpuacct co-mounted: one hierarchy, one file.
        let co = TempDir::new("comount");
        fs::create_dir(co.0.join("cpu,cpuacct")).unwrap();
        for h in HIERARCHIES {
            if *h == "cpu" || *h == "cpuacct" {
                std::os::unix::fs::symlink("cpu,cpuacct", co.0.join(h)).unwrap();
            } else {
                fs::create_dir(co.0.join(h)).unwrap();
            }
        }
        let files = NodeCgroup::new(&co.0, "sp", "n1").procs_files();
        assert_eq!(files.len(), HIERARCHIES.len() - 1);
        assert!(!files.iter().any(|f| f.starts_with(co.0.join("cpuacct"))));
    }

    #[test]
    fn errors_name_path_and_errno() {
        let e = CgroupError::Write {
            path: "/sys/fs/cgroup/memory/sandpit/n1/memory.limit_in_bytes".into(),
            value: "1073741824".into(),
            errno: Errno::EACCES,
        };
        assert!(e
            .to_string()
            .starts_with("write /sys/fs/cgroup/memory/sandpit/n1/memory.limit_in_bytes: EACCES"));
    }

    /// Parent used by the real-cgroup test; `leftovers` must find nothing under it at the end.
    const REAL_PARENT: &str = "cgtst";

    /// Removes the test's cgroups and kills its child even when an assertion fails.
    struct RealGuard {
        cg: NodeCgroup,
        child: Option<std::process::Child>,
    }

    impl Drop for RealGuard {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = self.cg.destroy();
            let _ = remove_parent_if_empty(&self.cg.root, REAL_PARENT);
        }
    }

    /// Hierarchy name as used here for one line of /proc/<pid>/cgroup.
    fn hierarchy_names(controllers: &str) -> Vec<String> {
        match controllers {
            "" => vec!["unified".into()],
            "name=systemd" => vec!["systemd".into()],
            c => c.split(',').map(str::to_string).collect(),
        }
    }

    #[test]
    #[ignore = "needs root and cgroup v1 at /sys/fs/cgroup"]
    fn real_cgroup_lifecycle() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};

        let root = Path::new("/sys/fs/cgroup");
        let name = format!("t{}", std::process::id());
        let cg = NodeCgroup::new(root, REAL_PARENT, &name);
        let mut guard = RealGuard {
            cg: cg.clone(),
            child: None,
        };
        let owner = (1_000_000, 1_000_000);
        cg.create(&limits(64 << 20, 50, 0.5), Some(owner), false)
            .unwrap();

        // A shell that waits until it is attached, then becomes `sleep 30`: the exec and the
        // sleep are charged to the node, so memory and CPU are non-zero.
        let mut child = Command::new("sh")
            .args(["-c", "read _; exec sleep 30"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut stdin = child.stdin.take().unwrap();
        guard.child = Some(child);
        cg.attach(pid).unwrap();
        stdin.write_all(b"go\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(10));
        }

        // In the node's cgroup in every hierarchy.
        let want = format!("/{REAL_PARENT}/{name}");
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mut seen = BTreeSet::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            for h in hierarchy_names(controllers) {
                if HIERARCHIES.contains(&h.as_str()) {
                    assert_eq!(path, want, "{h} in {text}");
                    seen.insert(h);
                }
            }
        }
        assert_eq!(seen.len(), HIERARCHIES.len(), "{text}");
        assert_eq!(cg.pids(), vec![pid]);

        // Delegated: directory and membership files; limits stay with host root.
        for (h, _) in hierarchy_roots(root) {
            let dir = cg.dir(h);
            let owned = |p: &Path| {
                let m = fs::metadata(p).unwrap();
                (m.uid(), m.gid())
            };
            assert_eq!(owned(&dir), owner, "{}", dir.display());
            for f in delegated_files(h) {
                assert_eq!(owned(&dir.join(f)), owner, "{h}/{f}");
            }
        }
        for f in [
            "memory/cgtst/{}/memory.limit_in_bytes",
            "pids/cgtst/{}/pids.max",
            "cpu/cgtst/{}/cpu.cfs_quota_us",
            "devices/cgtst/{}/devices.allow",
        ] {
            let p = root.join(f.replace("{}", &name));
            assert_eq!(fs::metadata(&p).unwrap().uid(), 0, "{}", p.display());
        }
        assert_eq!(
            fs::read_to_string(cg.file("cpu", "cpu.cfs_quota_us")).unwrap(),
            "50000\n"
        );
        assert_eq!(
            fs::read_to_string(cg.file("pids", "pids.max")).unwrap(),
            "50\n"
        );

        let stats = cg.stats().unwrap();
        eprintln!("{stats:?}");
        assert_eq!(stats.memory_limit_bytes, 64 << 20);
        assert_eq!(stats.pids, 1);
        assert!(stats.memory_bytes > 0);
        assert!(stats.cpu_usage_ns > 0);
        assert_eq!(stats.oom_kills, 0);

        // A nested cgroup such as dockerd would make, with the process moved into it.
        for (h, _) in hierarchy_roots(root) {
            fs::create_dir(cg.dir(h).join("docker")).unwrap();
            if h == "cpuset" {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let v = fs::read_to_string(cg.file(h, f)).unwrap();
                    fs::write(cg.dir(h).join("docker").join(f), v.trim()).unwrap();
                }
            }
            fs::write(cg.dir(h).join("docker/cgroup.procs"), pid.to_string()).unwrap();
        }
        assert_eq!(cg.pids(), vec![pid]);

        let started = Instant::now();
        cg.destroy().unwrap();
        eprintln!("destroy took {:?}", started.elapsed());
        let status = guard.child.as_mut().unwrap().wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(!cg.exists());
        cg.destroy().unwrap();
        remove_parent_if_empty(root, REAL_PARENT).unwrap();
        assert_eq!(leftovers(root, REAL_PARENT), Vec::<PathBuf>::new());
    }
}
