//! The leak scan: everything a runtime's configuration names that still exists on the host.
//! Tests assert that it is empty after they clean up; `sandpit network rm --all` reports it.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::uid_pool::UidPool;
use crate::cgroups;
use crate::config::RuntimeConfig;
use crate::network::firewall;
use crate::registry::Layout;
use crate::rootfs;

/// Mounts, loop devices, links, cgroups, firewall rules, uid range locks, node and network
/// files, processes in the runtime's cgroups, and registries running with its configuration.
pub(super) async fn scan(cfg: &RuntimeConfig, uid_pool: &UidPool) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(
        rootfs::mounts_below(&cfg.state_dir)
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    // Loop devices whose backing file is one of our disk images (autoclear frees them on
    // unmount; a leaked mount namespace or a lazy unmount would keep them).
    if let Ok(blocks) = std::fs::read_dir("/sys/block") {
        for b in blocks.flatten() {
            let backing = b.path().join("loop/backing_file");
            if let Ok(file) = std::fs::read_to_string(&backing) {
                if Path::new(file.trim()).starts_with(&cfg.state_dir) {
                    out.push(format!(
                        "loop device {} ({})",
                        b.file_name().to_string_lossy(),
                        file.trim()
                    ));
                }
            }
        }
    }
    if let Ok(links) = std::fs::read_dir("/sys/class/net") {
        for l in links.flatten() {
            let name = l.file_name().to_string_lossy().into_owned();
            if name.starts_with(&cfg.prefix) {
                out.push(format!("link {name}"));
            }
        }
    }
    out.extend(
        cgroups::leftovers(&cfg.cgroup_root, &cfg.cgroup_parent)
            .into_iter()
            .map(|p| format!("cgroup {}", p.display())),
    );
    out.extend(
        firewall::leftover_rules(&cfg.prefix)
            .await
            .into_iter()
            .map(|r| format!("firewall {r}")),
    );
    out.extend(
        uid_pool
            .leftovers()
            .into_iter()
            .map(|l| format!("uid range lock {}", l.display())),
    );
    for sub in ["nodes", "networks"] {
        if let Ok(entries) = std::fs::read_dir(cfg.state_dir.join(sub)) {
            for e in entries.flatten() {
                out.push(format!("file {}", e.path().display()));
            }
        }
    }
    out.extend(processes_settled(cfg).await);
    out
}

/// Processes still exiting (a node's init that the host's PID 1 has yet to reap) are gone a
/// moment later: look again for up to 2 s before calling what is there left over.
async fn processes_settled(cfg: &RuntimeConfig) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let found = processes(cfg);
        if found.is_empty() || std::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Processes in our cgroups, and registries running with a configuration of ours.
fn processes(cfg: &RuntimeConfig) -> Vec<String> {
    let mut out = Vec::new();
    let marker = format!(":/{}/", cfg.cgroup_parent);
    let registries = Layout::of_state_dir(&cfg.state_dir);
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let in_cgroup =
            std::fs::read_to_string(p.path().join("cgroup")).is_ok_and(|c| c.contains(&marker));
        let registry = cmd
            .split(|b| *b == 0)
            .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)).starts_with(registries.dir()));
        if in_cgroup || registry {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push(format!("process {name} {}", cmd.trim()));
        }
    }
    out
}
