//! What the runtime keeps on disk, so that a restarted process finds its nodes again.
//!
//! Layout under the state directory:
//! ```text
//! lock                           flock held by the one process that owns this state dir
//! networks/<name>.json           a session network: index, subnet, bridge
//! nodes/<network>-<host>/        a node's directory (see rootfs.rs), with node.json
//! ```
//! Records are written before the host objects they name exist (status `creating`), so a crash
//! at any point leaves enough on disk to clean up. Writes are atomic (temp file + rename).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::{Isolation, NodeLimits};
use crate::network::Subnet;

/// Lifecycle of a node. `Creating -> Running -> Destroying`, or `Failed` when its init died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    Creating,
    Running,
    Failed,
    Destroying,
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeStatus::Creating => "being created",
            NodeStatus::Running => "running",
            NodeStatus::Failed => "failed",
            NodeStatus::Destroying => "being destroyed",
        })
    }
}

impl NodeStatus {
    pub fn can_exec(self) -> bool {
        self == NodeStatus::Running
    }
    /// A node being created is finished (or failed) by its creator first.
    pub fn can_destroy(self) -> bool {
        matches!(self, NodeStatus::Running | NodeStatus::Failed)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NetworkRecord {
    pub name: String,
    pub index: u32,
    pub subnet: Subnet,
    pub bridge: String,
    pub egress: bool,
    pub host_ports: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub network: String,
    pub hostname: String,
    pub image: String,
    pub isolation: Isolation,
    pub limits: NodeLimits,
    /// Position in the network's subnet: the node's address is `subnet.host(host_number)`.
    pub host_number: u32,
    pub ip: Ipv4Addr,
    /// Index of the claimed uid range (user-namespace mode).
    pub uid_range: Option<u32>,
    pub uid_base: Option<u32>,
    pub veth: String,
    pub cgroup: String,
    /// The node's PID 1 on the host, and its start time in clock ticks since boot (from
    /// `/proc/<pid>/stat`), which tells it apart from a later process that reuses the pid.
    pub init_pid: Option<i32>,
    pub init_start_time: Option<u64>,
    pub status: NodeStatus,
    pub created_at_ms: u64,
}

impl NodeRecord {
    /// True if the node's PID 1 is the process recorded at its start.
    pub fn init_alive(&self) -> bool {
        matches!((self.init_pid, self.init_start_time), (Some(p), Some(t)) if is_same_process(p, t))
    }

    /// Directory name of the node under `nodes/`.
    pub fn dir_name(&self) -> String {
        node_dir_name(&self.network, &self.hostname)
    }
}

pub(crate) fn node_dir_name(network: &str, hostname: &str) -> String {
    format!("{network}-{hostname}")
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct StateError {
    op: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl StateError {
    pub(crate) fn new(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes `value` as JSON to `path` atomically.
pub(crate) fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec_pretty(value).expect("records serialize");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| StateError::new("write", path, e))
}

pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<T, StateError> {
    let data = std::fs::read(path).map_err(|e| StateError::new("read", path, e))?;
    serde_json::from_slice(&data).map_err(|e| {
        StateError::new(
            "parse",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a live process, or None if it is gone
/// or a zombie.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip to the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state); a zombie no longer runs anything.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

/// Reaps the zombies this process adopted from nodes.
///
/// The runtime owner is a child subreaper, so a process of a node whose parent died (a command
/// whose exec helper was killed by a timeout, a shell whose helper was killed with its
/// terminal) becomes our child. Nobody else waits for it, and a node's PID 1 cannot finish
/// exiting while a process of its pid namespace is unreaped. Such processes live in a pid
/// namespace below ours (two or more `NSpid` entries), which no child we spawned ourselves
/// (and may wait for elsewhere) has; node inits are among them, and their waiters accept that
/// someone else reaped them.
pub(crate) fn reap_adopted_zombies() {
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some("Z"), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if ppid.parse::<i32>().ok() != Some(me) {
            continue;
        }
        let nested = std::fs::read_to_string(p.path().join("status")).is_ok_and(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .is_some_and(|v| v.split_whitespace().count() >= 2)
        });
        if nested {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// True if `pid` is alive and started at `start_time`.
pub(crate) fn is_same_process(pid: i32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_skips_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_start_time(stat), Some(987654));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 0 0";
        assert_eq!(parse_start_time(zombie), None);
    }

    #[test]
    fn own_process_has_a_start_time() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).unwrap();
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
    }
}
