//! What the host provides besides its kernel: tools on `PATH`, bridge netfilter, disk space
//! and memory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::config::NodeLimits;
use crate::reach::Unreachable;

use super::check::{gib, Check, Status, BRIDGE_NF, DISK, GIB, MEMORY, STATE_DIR, TOOLS};

// ---- host tools ----

/// Host binaries the runtime runs, with their Debian packages.
pub(super) const TOOLS_NEEDED: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("mkfs.ext4", "e2fsprogs"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("losetup", "util-linux"),
];
const TOOLS_FIX: &str = "apt-get install iproute2 util-linux mount e2fsprogs iptables";

const DISK_WARN_BYTES: u64 = 20 * GIB;
const DISK_FAIL_BYTES: u64 = 2 * GIB;

/// `PATH` plus the sbin directories, which a service's or sudo's PATH may lack.
pub(super) fn search_dirs(path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    dirs
}

pub(super) fn find_tool(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

pub(super) fn check_tools(found: &[(&str, Option<PathBuf>)]) -> Check {
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = found.iter().map(|(t, _)| *t).collect();
        Check::ok(TOOLS, format!("found {}", names.join(", ")))
    } else {
        Check::fail(
            TOOLS,
            format!(
                "not found in PATH or the sbin directories: {}",
                missing.join(", ")
            ),
            TOOLS_FIX,
        )
    }
}

// ---- bridge netfilter ----

/// The policy of the FORWARD chain from `iptables -S FORWARD` (`-P FORWARD DROP`).
pub(super) fn parse_forward_policy(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("-P FORWARD "))
        .map(|p| p.trim().to_string())
}

/// Informational: with `br_netfilter` on and a DROP policy, bridged traffic between nodes
/// would be dropped, which the runtime's own ACCEPT rules take care of.
pub(super) fn check_bridge_netfilter(
    nf_call_iptables: Option<&str>,
    forward_policy: Option<&str>,
) -> Check {
    let nf = match nf_call_iptables {
        Some(v) => format!("bridge-nf-call-iptables={v}"),
        None => "br_netfilter not loaded".to_string(),
    };
    let policy = forward_policy.unwrap_or("unknown");
    Check::ok(
        BRIDGE_NF,
        format!(
            "{nf}, FORWARD policy {policy}: fine either way, sandpit adds its own ACCEPT rules \
             for its bridges"
        ),
    )
}

// ---- disk and memory ----

/// `path` or its closest existing ancestor (the state dir may not exist before first use).
fn disk_status(free_bytes: u64) -> Status {
    if free_bytes < DISK_FAIL_BYTES {
        Status::Fail
    } else if free_bytes < DISK_WARN_BYTES {
        Status::Warn
    } else {
        Status::Ok
    }
}

pub(super) fn check_disk(state_dir: &Path, measured: &Path, free: Result<u64, Errno>) -> Check {
    let fix = format!(
        "free space on the filesystem of {} or move the state dir to a larger one (nodes' \
         /var/lib/docker images are sparse and grow with use)",
        measured.display()
    );
    let free = match free {
        Ok(f) => f,
        Err(errno) => {
            return Check::warn(
                DISK,
                format!("statvfs {}: {errno}", measured.display()),
                fix,
            )
        }
    };
    let detail = format!(
        "{} free for {} (measured at {})",
        gib(free),
        state_dir.display(),
        measured.display()
    );
    const PLAN: &str = "; `sandpit serve` keeps 4 GiB of it from nodes by default \
                        (--disk-reserve-gib) and plans node disk caps within the rest";
    match disk_status(free) {
        Status::Ok => Check::ok(DISK, format!("{detail}{PLAN}")),
        Status::Warn => Check::warn(DISK, format!("{detail}: below 20 GiB{PLAN}"), fix),
        Status::Fail => Check::fail(DISK, format!("{detail}: below 2 GiB{PLAN}"), fix),
    }
}

/// `MemAvailable` in bytes.
fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Whether the nodes' unprivileged root users can reach their directories (`crate::reach`).
pub(super) fn check_state_reach(nodes_dir: &Path, unreachable: Option<Unreachable>) -> Check {
    match unreachable {
        None => Check::ok(
            STATE_DIR,
            format!(
                "every directory above {} lets nodes in",
                nodes_dir.display()
            ),
        ),
        Some(u) => Check::fail(STATE_DIR, u.problem(), u.fix()),
    }
}

pub(super) fn check_memory(meminfo: &str) -> Check {
    let node = NodeLimits::default().memory_bytes;
    match parse_mem_available(meminfo) {
        Some(avail) => Check::ok(
            MEMORY,
            format!(
                "{} available: {} nodes fit at the default {} limit (an idle node uses ~40 MiB)",
                gib(avail),
                avail / node,
                gib(node)
            ),
        ),
        None => Check::warn(
            MEMORY,
            "no MemAvailable in /proc/meminfo",
            "check /proc/meminfo",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TempDir;

    #[test]
    fn tools_are_found_and_missing_ones_named() {
        let t = TempDir::new("tools");
        let exe = t.0.join("ip");
        fs::write(&exe, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(t.0.join("losetup"), "not executable").unwrap();
        let dirs = vec![t.0.clone()];
        assert_eq!(find_tool(&dirs, "ip"), Some(exe.clone()));
        assert_eq!(find_tool(&dirs, "losetup"), None);
        let c = check_tools(&[("ip", Some(exe)), ("losetup", None)]);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.detail,
            "not found in PATH or the sbin directories: losetup"
        );
        assert_eq!(c.fix.as_deref(), Some(TOOLS_FIX));
        let dirs = search_dirs(Some(std::ffi::OsStr::new("/opt/x:/usr/bin")));
        assert_eq!(dirs[0], Path::new("/opt/x"));
        assert!(dirs.contains(&PathBuf::from("/usr/sbin")));
        assert_eq!(
            dirs.iter().filter(|d| *d == Path::new("/usr/bin")).count(),
            1
        );
    }

    #[test]
    fn forward_policy_is_informational() {
        assert_eq!(
            parse_forward_policy("-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n").as_deref(),
            Some("DROP")
        );
        assert_eq!(parse_forward_policy(""), None);
        let c = check_bridge_netfilter(Some("1"), Some("DROP"));
        assert_eq!(c.status, Status::Ok);
        assert!(c
            .detail
            .starts_with("bridge-nf-call-iptables=1, FORWARD policy DROP"));
        assert_eq!(check_bridge_netfilter(None, None).status, Status::Ok);
    }

    #[test]
    fn disk_thresholds() {
        assert_eq!(disk_status(100 * GIB), Status::Ok);
        assert_eq!(disk_status(20 * GIB), Status::Ok);
        assert_eq!(disk_status(20 * GIB - 1), Status::Warn);
        assert_eq!(disk_status(2 * GIB), Status::Warn);
        assert_eq!(disk_status(2 * GIB - 1), Status::Fail);
        let c = check_disk(Path::new("/s/state"), Path::new("/s"), Ok(GIB));
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.starts_with("1.0 GiB free for /s/state"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn memory_is_informational() {
        let meminfo = "MemTotal:       32000000 kB\nMemFree: 1 kB\nMemAvailable:   24382148 kB\n";
        assert_eq!(parse_mem_available(meminfo), Some(24_382_148 * 1024));
        let c = check_memory(meminfo);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.detail.starts_with("23.3 GiB available: 11 nodes fit"),
            "{}",
            c.detail
        );
        assert_eq!(check_memory("").status, Status::Warn);
    }
}
