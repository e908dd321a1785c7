//! What the host and the node's side of the launch agree on: the handshake socket, the node's
//! configuration (`init.json`), the environment of its processes, and the launch's errors.

use std::os::fd::RawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Isolation;

/// The fd number of the handshake socket in the launcher.
pub(super) const HANDSHAKE_FD: RawFd = 3;

/// Environment of every process the init starts.
pub(crate) const NODE_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
];

/// What the launcher and the node's init need to know, written by the host to `init.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub hostname: String,
    pub isolation: Isolation,
    /// The base image's root filesystem (used directly as the lower layer in rootful mode).
    pub image_rootfs: PathBuf,
    pub dockerd_args: Vec<String>,
    /// A certificate authority (PEM) dockerd trusts besides the system's: the offline stand-in
    /// for Docker Hub's (see `registry/mod.rs`).
    #[serde(default)]
    pub extra_ca: Option<String>,
}

/// Where the node's init puts `extra_ca` (on the node's /run tmpfs, rewritten at each start).
pub(super) const EXTRA_CA_DIR: &str = "/run/sandpit/ca";

/// Errors of the launch, as seen by the host.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("start the node launcher {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("node launch handshake: {0}")]
    Handshake(String),
    #[error("node setup failed inside the node: {0}")]
    Node(String),
    #[error("{op} for the node launcher (pid {pid}): {source}")]
    Host {
        op: &'static str,
        pid: i32,
        source: std::io::Error,
    },
}
