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

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::config::NodeLimits;
use crate::kernfs::{self, errno_of};

/// Every hierarchy a node gets a cgroup in, named by its directory under the cgroup root.
pub(crate) const HIERARCHIES: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    "unified",
];

/// CFS bandwidth period; the quota is `cpus` times this.
const CFS_PERIOD_US: u64 = 100_000;
/// The kernel rejects quotas below 1 ms.
const CFS_QUOTA_MIN_US: u64 = 1_000;
/// The default weight: nodes share CPU equally when all are busy.
const CPU_SHARES: u64 = 1024;

/// Devices a rootful node may use (its own `/dev` holds exactly these) plus `mknod` of any
/// device, which dockerd and runc need to build a container's `/dev`. v1 device rules are
/// hierarchical, so nothing below the node can widen this, and without it the node's root
/// could open host devices such as `/dev/kmsg`.
const DEVICE_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // devpts slaves
    "c 10:200 rwm", // net/tun
    "c 10:229 rwm", // fuse
];

/// How long `destroy` keeps retrying a busy cgroup.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(2);
const DESTROY_RETRY: Duration = Duration::from_millis(20);

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

    /// Creates the node's cgroup in every hierarchy with `limits`. `owner` (user-namespace
    /// mode) delegates it to the node's root; `devices_allowlist` (rootful mode) fences off
    /// host devices. On failure everything created here is removed again.
    pub fn create(
        &self,
        limits: &NodeLimits,
        owner: Option<(u32, u32)>,
        devices_allowlist: bool,
    ) -> Result<(), CgroupError> {
        // Check before touching anything, so an invalid limit leaves nothing to clean up.
        let quota = cfs_quota_us(limits.cpus)?;
        let mut created = Vec::new();
        let result = self.create_steps(limits, quota, owner, devices_allowlist, &mut created);
        match result {
            Ok(()) => {
                tracing::debug!(cgroup = %self.rel.display(), "cgroup created");
                Ok(())
            }
            Err(first) => match remove_created(&created) {
                Ok(()) => Err(first),
                Err(cleanup) => Err(CgroupError::Cleanup {
                    first: Box::new(first),
                    cleanup: Box::new(cleanup),
                }),
            },
        }
    }

    fn create_steps(
        &self,
        limits: &NodeLimits,
        quota: Option<u64>,
        owner: Option<(u32, u32)>,
        devices_allowlist: bool,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        let hierarchies = hierarchy_roots(&self.root);
        // 1. Directories first, in every hierarchy, so a missing hierarchy fails before any
        //    control file is written.
        for (h, base) in &hierarchies {
            if !base.join("cgroup.procs").exists() {
                return Err(CgroupError::NotMounted {
                    hierarchy: h,
                    path: base.clone(),
                });
            }
            let mut level = base.clone();
            for comp in self.parent_rel().components() {
                level.push(comp);
                mkdir(&level, created, true)?;
            }
            mkdir(&self.dir(h), created, false)?;
        }

        // 2. cpuset: copy cpus and mems down every level that lacks them, or attach fails with
        //    ENOSPC. Existing levels are topped up too, in case an earlier create died midway.
        if hierarchies.iter().any(|(h, _)| *h == "cpuset") {
            let mut above = self.root.join("cpuset");
            for comp in self.rel.components() {
                let level = above.join(comp);
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    // (A missing file reads as empty: a fake root in unit tests; on cgroupfs
                    // the write below would then fail with the path.)
                    let current = match read_trimmed(&level.join(file)) {
                        Err(CgroupError::Read {
                            errno: Errno::ENOENT,
                            ..
                        }) => String::new(),
                        other => other?,
                    };
                    if current.is_empty() {
                        let value = read_trimmed(&above.join(file))?;
                        write(&level.join(file), &value)?;
                    }
                }
                above = level;
            }
        }

        // 3. Limits. The period before the quota: the quota is checked against it.
        write(
            &self.file("memory", "memory.limit_in_bytes"),
            &limits.memory_bytes.to_string(),
        )?;
        // Memory plus swap to the same figure: the limit holds on hosts with swap too. The
        // file exists only where the kernel accounts swap.
        let memsw = self.file("memory", "memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &limits.memory_bytes.to_string())?;
        }
        write(&self.file("pids", "pids.max"), &limits.pids.to_string())?;
        if let Some(quota) = quota {
            write(
                &self.file("cpu", "cpu.cfs_period_us"),
                &CFS_PERIOD_US.to_string(),
            )?;
            write(&self.file("cpu", "cpu.cfs_quota_us"), &quota.to_string())?;
        }
        write(&self.file("cpu", "cpu.shares"), &CPU_SHARES.to_string())?;

        // 4. Devices: deny everything, then allow the node's own /dev. Must happen while the
        //    cgroup has no children (the kernel refuses "deny a" otherwise).
        if devices_allowlist {
            let deny = self.file("devices", "devices.deny");
            write(&deny, "a")?;
            let allow = self.file("devices", "devices.allow");
            for rule in DEVICE_ALLOW {
                write(&allow, rule)?;
            }
        }

        // 5. Delegation: only what creating children and moving processes needs.
        if let Some((uid, gid)) = owner {
            for (h, _) in &hierarchies {
                let dir = self.dir(h);
                do_chown(&dir, uid, gid)?;
                for file in delegated_files(h) {
                    do_chown(&dir.join(file), uid, gid)?;
                }
            }
        }
        Ok(())
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

    /// Current resource use of the node's tree.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let oom_path = self.file("memory", "memory.oom_control");
        Ok(CgroupStats {
            memory_bytes: read_u64(&self.file("memory", "memory.usage_in_bytes"))?,
            memory_limit_bytes: read_u64(&self.file("memory", "memory.limit_in_bytes"))?,
            cpu_usage_ns: read_u64(&self.file("cpuacct", "cpuacct.usage"))?,
            pids: read_u64(&self.file("pids", "pids.current"))?,
            oom_kills: parse_oom_kills(&oom_path, &read_trimmed(&oom_path)?)?,
        })
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

/// `cpu.cfs_quota_us` for `cpus` cores, or `None` for no quota (`cpus == 0`).
fn cfs_quota_us(cpus: f64) -> Result<Option<u64>, CgroupError> {
    if !cpus.is_finite() || cpus < 0.0 {
        return Err(CgroupError::InvalidCpus(cpus));
    }
    if cpus == 0.0 {
        return Ok(None);
    }
    let quota = (cpus * CFS_PERIOD_US as f64).round() as u64;
    Ok(Some(quota.max(CFS_QUOTA_MIN_US)))
}

/// Files the node's root needs to own in `hierarchy` to create child cgroups and move its
/// processes between them. Limit files are deliberately not among them.
fn delegated_files(hierarchy: &str) -> &'static [&'static str] {
    if hierarchy == "unified" {
        &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"]
    } else {
        &["cgroup.procs", "tasks", "cgroup.clone_children"]
    }
}

/// The hierarchies under `root` with their resolved directories. Co-mounted controllers (the
/// common `cpu` and `cpuacct` symlinks to `cpu,cpuacct`) appear once, under the first name.
fn hierarchy_roots(root: &Path) -> Vec<(&'static str, PathBuf)> {
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

/// `mkdir`, recording what it made. `may_exist` for shared levels such as the parent.
fn mkdir(path: &Path, created: &mut Vec<PathBuf>, may_exist: bool) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => {
            created.push(path.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if may_exist {
                Ok(())
            } else {
                Err(CgroupError::Exists {
                    path: path.to_path_buf(),
                })
            }
        }
        Err(e) => Err(CgroupError::Mkdir {
            path: path.to_path_buf(),
            errno: errno_of(&e),
        }),
    }
}

/// Undoes a failed create, newest first. Shared parents that someone else started using in
/// the meantime are left alone.
fn remove_created(created: &[PathBuf]) -> Result<(), CgroupError> {
    let mut first_error = None;
    for dir in created.iter().rev() {
        if let Err(e) = fs::remove_dir(dir) {
            match errno_of(&e) {
                Errno::ENOENT | Errno::EBUSY | Errno::ENOTEMPTY => {}
                errno => {
                    first_error.get_or_insert(CgroupError::Remove {
                        path: dir.clone(),
                        errno,
                    });
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One `write(2)` of `value`: cgroup files take a whole value per write.
fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|e| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        errno: errno_of(&e),
    })
}

fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    kernfs::read_trimmed(path).map_err(|e| CgroupError::Read {
        path: path.to_path_buf(),
        errno: errno_of(&e),
    })
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read_trimmed(path)?)
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.to_string(),
    })
}

/// The `oom_kill` counter of `memory.oom_control` (Linux >= 4.13; 0 when absent).
fn parse_oom_kills(path: &Path, text: &str) -> Result<u64, CgroupError> {
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("oom_kill ") {
            return parse_u64(path, value);
        }
    }
    Ok(0)
}

fn do_chown(path: &Path, uid: u32, gid: u32) -> Result<(), CgroupError> {
    chown(path, Some(uid), Some(gid)).map_err(|e| CgroupError::Chown {
        path: path.to_path_buf(),
        uid,
        gid,
        errno: errno_of(&e),
    })
}

/// Directories of the tree at `top`, children before their parents; none if `top` is missing.
/// Symlinks are not followed.
fn subtree_post_order(top: &Path) -> Vec<PathBuf> {
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
fn tree_pids(tops: &[PathBuf]) -> Vec<i32> {
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

fn parse_pids(text: &str) -> impl Iterator<Item = i32> + '_ {
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;
    use std::os::unix::fs::MetadataExt;

    /// A fake cgroup root: one directory per hierarchy with a `cgroup.procs`, and cpuset
    /// values at the top like a real root.
    fn fake_root(tag: &str) -> TempDir {
        let t = TempDir::new(tag);
        for h in HIERARCHIES {
            fs::create_dir(t.0.join(h)).unwrap();
            fs::write(t.0.join(h).join("cgroup.procs"), "").unwrap();
        }
        fs::write(t.0.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        fs::write(t.0.join("cpuset/cpuset.mems"), "0\n").unwrap();
        t
    }

    fn limits(memory_bytes: u64, pids: u64, cpus: f64) -> NodeLimits {
        NodeLimits {
            memory_bytes,
            pids,
            cpus,
            disk_bytes: 0,
        }
    }

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
    fn device_rules_fence_off_host_devices() {
        assert_eq!(DEVICE_ALLOW.len(), 13);
        assert_eq!(&DEVICE_ALLOW[..2], &["c *:* m", "b *:* m"]);
        // Only mknod is allowed broadly; read/write only on the node's own /dev.
        for rule in DEVICE_ALLOW {
            let access = rule.rsplit(' ').next().unwrap();
            if rule.contains("*:*") {
                assert_eq!(access, "m", "{rule}");
            }
        }
        assert!(!DEVICE_ALLOW.contains(&"c 1:11 rwm")); // /dev/kmsg
        for rule in ["c 10:200 rwm", "c 10:229 rwm", "c 136:* rwm", "c 5:2 rwm"] {
            assert!(DEVICE_ALLOW.contains(&rule), "{rule}");
        }
    }

    #[test]
    fn quota_arithmetic() {
        assert_eq!(cfs_quota_us(0.0).unwrap(), None);
        assert_eq!(cfs_quota_us(1.0).unwrap(), Some(100_000));
        assert_eq!(cfs_quota_us(0.5).unwrap(), Some(50_000));
        assert_eq!(cfs_quota_us(2.25).unwrap(), Some(225_000));
        assert_eq!(cfs_quota_us(0.001).unwrap(), Some(1_000));
        assert_eq!(cfs_quota_us(0.0001).unwrap(), Some(1_000)); // kernel minimum
        assert_eq!(cfs_quota_us(1.0 / 3.0).unwrap(), Some(33_333));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                cfs_quota_us(bad),
                Err(CgroupError::InvalidCpus(_))
            ));
        }
    }

    #[test]
    fn delegated_files_leave_limits_to_root() {
        assert_eq!(
            delegated_files("memory"),
            &["cgroup.procs", "tasks", "cgroup.clone_children"]
        );
        assert_eq!(
            delegated_files("unified"),
            &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"]
        );
        for h in HIERARCHIES {
            assert!(delegated_files(h).iter().all(|f| !f.contains("limit")
                && !f.ends_with(".max")
                && !f.starts_with("devices")));
        }
    }

    #[test]
    fn create_writes_limits_and_copies_cpuset() {
        let root = fake_root("create");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        cg.create(&limits(64 << 20, 50, 0.5), None, true).unwrap();
        let read = |h: &str, f: &str| fs::read_to_string(cg.file(h, f)).unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("pids", "pids.max"), "50");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.shares"), "1024");
        assert_eq!(read("cpuset", "cpuset.cpus"), "0-1");
        assert_eq!(read("cpuset", "cpuset.mems"), "0");
        // The parent level got them too.
        assert_eq!(
            fs::read_to_string(root.0.join("cpuset/sp/cpuset.cpus")).unwrap(),
            "0-1"
        );
        // A plain file keeps only the last write; the kernel file would hold all rules.
        assert_eq!(read("devices", "devices.deny"), "a");
        assert_eq!(read("devices", "devices.allow"), "c 10:229 rwm");
        assert!(cg.exists());

        // Same name again: refused, and the existing cgroup is left as it was.
        assert!(matches!(
            cg.create(&limits(1, 1, 0.0), None, false),
            Err(CgroupError::Exists { .. })
        ));
        assert_eq!(read("pids", "pids.max"), "50");
    }

    #[test]
    fn create_without_quota_skips_cfs_files() {
        let root = fake_root("noquota");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        cg.create(&limits(1 << 30, 10, 0.0), None, false).unwrap();
        assert!(!cg.file("cpu", "cpu.cfs_quota_us").exists());
        assert!(!cg.file("devices", "devices.deny").exists());
        assert!(cg.file("cpu", "cpu.shares").exists());
    }

    #[test]
    fn failed_create_removes_what_it_made() {
        let root = fake_root("fail");
        // An existing parent must survive the cleanup; a missing one must not.
        fs::create_dir(root.0.join("memory/sp")).unwrap();
        // A file where the parent should be: mkdir of the node fails with ENOTDIR in pids,
        // after the hierarchies before it were done.
        fs::write(root.0.join("pids/sp"), "not a dir").unwrap();

        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        let err = cg
            .create(&limits(1 << 30, 10, 1.0), None, false)
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("mkdir "), "{msg}");
        assert!(msg.contains("pids/sp/n1: ENOTDIR"), "{msg}");
        assert!(!cg.exists());
        assert!(root.0.join("memory/sp").is_dir());
        assert!(!root.0.join("cpu/sp").exists());
        assert!(leftovers(&root.0, "sp")
            .iter()
            .all(|p| p == &root.0.join("memory/sp")));
    }

    #[test]
    fn create_refuses_unmounted_hierarchy() {
        let root = fake_root("unmounted");
        fs::remove_file(root.0.join("freezer/cgroup.procs")).unwrap();
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        let err = cg
            .create(&limits(1 << 30, 10, 1.0), None, false)
            .unwrap_err();
        assert!(matches!(
            err,
            CgroupError::NotMounted {
                hierarchy: "freezer",
                ..
            }
        ));
        assert!(leftovers(&root.0, "sp").is_empty());
    }

    #[test]
    fn invalid_cpus_create_nothing() {
        let root = fake_root("badcpu");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        assert!(cg.create(&limits(1, 1, -2.0), None, false).is_err());
        assert!(leftovers(&root.0, "sp").is_empty());
    }

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

    #[test]
    fn stats_are_parsed_from_files() {
        let root = fake_root("stats");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        for h in HIERARCHIES {
            fs::create_dir_all(cg.dir(h)).unwrap();
        }
        fs::write(cg.file("memory", "memory.usage_in_bytes"), "35651584\n").unwrap();
        fs::write(cg.file("memory", "memory.limit_in_bytes"), "1073741824\n").unwrap();
        fs::write(
            cg.file("memory", "memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        fs::write(cg.file("cpuacct", "cpuacct.usage"), "123456789\n").unwrap();
        fs::write(cg.file("pids", "pids.current"), "17\n").unwrap();
        assert_eq!(
            cg.stats().unwrap(),
            CgroupStats {
                memory_bytes: 35_651_584,
                memory_limit_bytes: 1 << 30,
                cpu_usage_ns: 123_456_789,
                pids: 17,
                oom_kills: 3,
            }
        );

        // Kernels before 4.13 have no oom_kill line.
        let p = Path::new("x");
        assert_eq!(
            parse_oom_kills(p, "oom_kill_disable 0\nunder_oom 0").unwrap(),
            0
        );
        fs::write(cg.file("pids", "pids.current"), "max\n").unwrap();
        let msg = cg.stats().unwrap_err().to_string();
        assert!(
            msg.starts_with("parse ") && msg.contains("pids.current"),
            "{msg}"
        );
        fs::remove_file(cg.file("cpuacct", "cpuacct.usage")).unwrap();
        let msg = cg.stats().unwrap_err().to_string();
        assert!(msg.contains("cpuacct.usage: ENOENT"), "{msg}");
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
