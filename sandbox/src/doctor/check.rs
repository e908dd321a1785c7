//! What a check yields (its name, outcome, detail and fix) and the names of all checks.

use serde::Serialize;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with a limitation the user should know about.
    Warn,
    /// Nodes (or the isolation mode in question) cannot work.
    Fail,
}

/// One host check: a short name, its outcome, one line of detail, and the fix when not Ok.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub(super) fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(super) fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(super) fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

// Check names, also what `supported_isolation` keys on.
pub(super) const ROOT: &str = "root";
pub(super) const KERNEL: &str = "kernel";
pub(super) const FILESYSTEMS: &str = "filesystems";
pub(super) const USERNS: &str = "user-namespaces";
pub(super) const BRIDGE: &str = "bridge";
pub(super) const VETH: &str = "veth";
pub(super) const VXLAN: &str = "vxlan";
pub(super) const IPVS: &str = "ipvs";
pub(super) const IDMAP: &str = "idmapped-mounts";
pub(super) const CGROUPS: &str = "cgroups";
pub(super) const TOOLS: &str = "host-tools";
pub(super) const BRIDGE_NF: &str = "bridge-netfilter";
pub(super) const BASE_IMAGE: &str = "base-image";
pub(super) const DISK: &str = "disk-space";
pub(super) const STATE_DIR: &str = "state-dir";
pub(super) const MEMORY: &str = "memory";
pub(super) const MIRROR: &str = "registry-mirror";

pub(super) const GIB: u64 = 1 << 30;

pub(super) fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}
