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
use crate::process::ProcessId;

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
        self.init().is_some_and(|p| p.alive())
    }

    /// The node's PID 1 as recorded (once its start time was read).
    pub fn init(&self) -> Option<ProcessId> {
        Some(ProcessId {
            pid: self.init_pid?,
            start_time: self.init_start_time?,
        })
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

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
