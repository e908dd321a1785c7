//! The cgroup v1 hierarchies a node is put in: mounted, and where.

use std::path::{Path, PathBuf};

use super::check::{Check, CGROUPS};

/// A mounted cgroup filesystem, from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq)]
pub(super) struct CgroupMount {
    mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2`.
    fstype: String,
    /// Super options: the v1 controllers (`memory`, `cpu,cpuacct`) or `name=systemd`.
    options: Vec<String>,
}

pub(super) fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <type> <src> <super opts>"
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
            let mut right = right.split(' ');
            let fstype = right.next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let options = right.nth(1).unwrap_or("").split(',').map(str::to_string);
            Some(CgroupMount {
                mount_point: mount_point.into(),
                fstype: fstype.into(),
                options: options.collect(),
            })
        })
        .collect()
}

/// Whether `m` is the hierarchy `h` of [`HIERARCHIES`].
fn mount_is(m: &CgroupMount, h: &str) -> bool {
    match h {
        "unified" => m.fstype == "cgroup2",
        "systemd" => m.fstype == "cgroup" && m.options.iter().any(|o| o == "name=systemd"),
        c => m.fstype == "cgroup" && m.options.iter().any(|o| o == c),
    }
}

fn mount_command(h: &str, path: &Path) -> String {
    let p = path.display();
    match h {
        "unified" => format!("mkdir -p {p} && mount -t cgroup2 none {p}"),
        "systemd" => format!("mkdir -p {p} && mount -t cgroup -o none,name=systemd cgroup {p}"),
        c => format!("mkdir -p {p} && mount -t cgroup -o {c} cgroup {p}"),
    }
}

/// `root` and each hierarchy's directory, symlinks resolved (co-mounted `cpu,cpuacct`).
pub(super) fn check_cgroups(
    root: &Path,
    mounts: &[CgroupMount],
    hierarchies: &[(&str, PathBuf)],
) -> Check {
    if mounts
        .iter()
        .any(|m| m.mount_point == root && m.fstype == "cgroup2")
    {
        return Check::fail(
            CGROUPS,
            format!(
                "cgroup v2 only ({} is the unified hierarchy): sandpit needs the cgroup v1 \
                 hierarchies, v2-only hosts are not supported yet",
                root.display()
            ),
            "boot with systemd.unified_cgroup_hierarchy=0 on the kernel command line \
             (systemd >= 256 also needs SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1)",
        );
    }
    let missing: Vec<&(&str, PathBuf)> = hierarchies
        .iter()
        .filter(|(h, path)| {
            !mounts
                .iter()
                .any(|m| m.mount_point == *path && mount_is(m, h))
        })
        .collect();
    let names: Vec<&str> = hierarchies.iter().map(|(h, _)| *h).collect();
    if missing.is_empty() {
        return Check::ok(
            CGROUPS,
            format!(
                "cgroup v1 hybrid: {} mounted under {}",
                names.join(", "),
                root.display()
            ),
        );
    }
    if missing.len() == hierarchies.len() {
        return Check::fail(
            CGROUPS,
            format!("no cgroup v1 hierarchies mounted under {}", root.display()),
            "boot with systemd.unified_cgroup_hierarchy=0, or mount each hierarchy: `mount -t \
             cgroup -o memory cgroup /sys/fs/cgroup/memory` and so on",
        );
    }
    let missing_names: Vec<&str> = missing.iter().map(|(h, _)| *h).collect();
    let commands: Vec<String> = missing.iter().map(|(h, p)| mount_command(h, p)).collect();
    Check::fail(
        CGROUPS,
        format!(
            "not mounted under {}: {} (every node gets a cgroup in each of {})",
            root.display(),
            missing_names.join(", "),
            names.join(", ")
        ),
        format!(
            "{}; or boot with systemd.unified_cgroup_hierarchy=0",
            commands.join("; ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::HIERARCHIES;
    use crate::doctor::check::Status;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /proc rw - proc proc rw
";

    fn hierarchies(root: &str) -> Vec<(&'static str, PathBuf)> {
        HIERARCHIES
            .iter()
            .map(|h| (*h, Path::new(root).join(h)))
            .collect()
    }

    #[test]
    fn cgroup_mounts_are_parsed() {
        let m = parse_cgroup_mounts(MOUNTINFO);
        assert_eq!(m.len(), 10);
        assert_eq!(
            m[3],
            CgroupMount {
                mount_point: "/sys/fs/cgroup/memory".into(),
                fstype: "cgroup".into(),
                options: vec!["rw".into(), "memory".into()],
            }
        );
        assert_eq!(m[9].fstype, "cgroup2");
    }

    #[test]
    fn cgroup_classification() {
        let root = Path::new("/sys/fs/cgroup");
        let mounts = parse_cgroup_mounts(MOUNTINFO);
        assert_eq!(
            check_cgroups(root, &mounts, &hierarchies("/sys/fs/cgroup")).status,
            Status::Ok
        );

        // pids and devices missing.
        let partial: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains("pids") && !l.contains("devices"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = check_cgroups(
            root,
            &parse_cgroup_mounts(&partial),
            &hierarchies("/sys/fs/cgroup"),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .starts_with("not mounted under /sys/fs/cgroup: devices, pids"),
            "{}",
            c.detail
        );
        let fix = c.fix.unwrap();
        assert!(
            fix.contains("mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids"),
            "{fix}"
        );
        assert!(fix.contains("systemd.unified_cgroup_hierarchy=0"));

        // Co-mounted cpu,cpuacct: both names resolve to one mount.
        let co = "1 0 0:1 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let mut text: String = MOUNTINFO
            .lines()
            .filter(|l| !l.contains("/cpu ") && !l.contains("/cpuacct "))
            .map(|l| format!("{l}\n"))
            .collect();
        text += co;
        let mut hs = hierarchies("/sys/fs/cgroup");
        hs[0].1 = "/sys/fs/cgroup/cpu,cpuacct".into();
        hs[1].1 = "/sys/fs/cgroup/cpu,cpuacct".into();
        assert_eq!(
            check_cgroups(root, &parse_cgroup_mounts(&text), &hs).status,
            Status::Ok
        );

        // v2-only.
        let v2 = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let c = check_cgroups(
            root,
            &parse_cgroup_mounts(v2),
            &hierarchies("/sys/fs/cgroup"),
        );
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.contains("v2-only hosts are not supported yet"),
            "{}",
            c.detail
        );
    }
}
