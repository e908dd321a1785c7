//! Creating a node's cgroups: a directory per hierarchy, cpuset values copied down, the limits
//! written, the devices allow-list (rootful), and delegation to the node's root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::config::NodeLimits;
use crate::kernfs::errno_of;

use super::{do_chown, hierarchy_roots, read_trimmed, write, CgroupError, NodeCgroup};

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

impl NodeCgroup {
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
pub(super) fn delegated_files(hierarchy: &str) -> &'static [&'static str] {
    if hierarchy == "unified" {
        &["cgroup.procs", "cgroup.subtree_control", "cgroup.threads"]
    } else {
        &["cgroup.procs", "tasks", "cgroup.clone_children"]
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::testing::{fake_root, limits};
    use crate::cgroups::{leftovers, HIERARCHIES};

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
}
