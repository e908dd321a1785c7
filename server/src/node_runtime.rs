//! The seam between sessions and nodes: what [`crate::Sessions`] needs from whatever runs the
//! nodes. The real implementation is [`crate::SandboxRuntime`] (the `sandbox` crate's runtime:
//! namespaces, cgroups, a dockerd per node); unit tests use a fake, so limits, reservations,
//! expiry, recovery and template clean-up are tested without root and without nodes.
//!
//! Networks are named by session id; nodes by their network and host name. Destroying what is
//! already gone succeeds, so teardown can be retried.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use terminals::{PtyProcess, Spawner, WinSize};

use crate::wire::{ExecResult, ImageView, NodeStatus};

/// What the runtime knows of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub network: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub image: String,
    pub status: NodeStatus,
}

/// One reading of a node's cgroup and disk.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeSample {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

/// A command to run in a node.
#[derive(Debug, Clone)]
pub struct Command {
    pub argv: Vec<String>,
    pub stdin: Option<Bytes>,
    pub timeout: Duration,
}

/// Called with a node's published TCP ports (sorted) whenever they may have changed.
pub type PortsReport = Box<dyn Fn(Vec<u16>) + Send + Sync>;

/// Why the runtime refused or failed, sorted by what a client can do about it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The request names something impossible (a bad name, an unknown image).
    #[error("{0}")]
    Invalid(String),
    /// The node or network does not exist (any more).
    #[error("{0}")]
    Unknown(String),
    /// The network is being changed by another request; the same call may succeed soon.
    #[error("{0}")]
    Busy(String),
    /// Not in a state for this (a node that is not running, a full network).
    #[error("{0}")]
    Conflict(String),
    /// The host has no room left (subnets, uid ranges) or another process holds an address a
    /// new network needs. Clients are told the server is full; the detail (which, and what
    /// the operator can do) goes to the server's log.
    #[error("the server is at capacity; try again later")]
    Exhausted(String),
    /// A node's engine did not start in time; `detail` has its log for the operator.
    #[error("the engine of {node} did not start in time; try again")]
    EngineNotReady { node: String, detail: String },
    /// Anything else: a failure of the host, for the operator's log.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// What sessions drive. Implementations are shared by every request (`Arc<dyn NodeRuntime>`).
#[async_trait]
pub trait NodeRuntime: Send + Sync + 'static {
    /// The image of nodes that name none.
    fn default_image(&self) -> String;
    /// The images nodes can be made from, sorted by name.
    fn images(&self) -> Vec<ImageView>;
    /// Free bytes on the filesystem of the node disks; None if it cannot be read.
    fn disk_free(&self) -> Option<u64>;

    async fn create_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// Destroys a network and every node on it; [`RuntimeError::Busy`] while a node is being
    /// created on it.
    async fn destroy_network(&self, name: &str) -> Result<(), RuntimeError>;
    /// Names of every network, for recovery.
    fn networks(&self) -> Vec<String>;

    /// Creates node `name` on `network` and answers once its engine is ready.
    async fn create_node(
        &self,
        network: &str,
        name: &str,
        image: &str,
    ) -> Result<NodeFacts, RuntimeError>;
    async fn destroy_node(&self, network: &str, name: &str) -> Result<(), RuntimeError>;
    fn node(&self, network: &str, name: &str) -> Option<NodeFacts>;
    /// Every node, for recovery and health.
    fn nodes(&self) -> Vec<NodeFacts>;

    /// Runs a command in the node (all of its namespaces and cgroups) with bounded output.
    async fn exec(
        &self,
        network: &str,
        name: &str,
        cmd: Command,
    ) -> Result<ExecResult, RuntimeError>;
    /// A login shell on a PTY of the node's own devpts, for the node's terminal `terminal`.
    /// With `keep` the shell gets a holder that keeps it, its PTY and `keep` when the server
    /// goes, for the next server to take over ([`NodeRuntime::adopt_shell`]).
    fn spawn_shell(
        &self,
        network: &str,
        name: &str,
        terminal: &str,
        size: WinSize,
        keep: Option<BorrowedFd<'_>>,
    ) -> Result<PtyProcess, RuntimeError>;
    /// The shells a previous server left with holders in the node: `(terminal, holder)`.
    fn held_shells(&self, network: &str, name: &str) -> Vec<(String, String)>;
    /// Takes over a held shell: the shell (running, or ended while no server was there) and
    /// the descriptor kept with it.
    fn adopt_shell(
        &self,
        network: &str,
        name: &str,
        holder: &str,
    ) -> Result<(PtyProcess, OwnedFd), RuntimeError>;
    fn sample(&self, network: &str, name: &str) -> Result<NodeSample, RuntimeError>;
    /// Follows the node's published ports until the future is dropped; while the engine does
    /// not answer, the node has none.
    fn follow_ports(
        &self,
        network: &str,
        name: &str,
        report: PortsReport,
    ) -> BoxFuture<'static, ()>;
}

/// Starts login shells for one terminal of a node: the terminals' [`Spawner`]. The terminal
/// calls it for the first shell and again after each exit, so a shell that was ended with
/// `exit` comes back.
pub struct NodeShell {
    runtime: Arc<dyn NodeRuntime>,
    network: String,
    name: String,
    terminal: String,
}

impl NodeShell {
    pub fn new(
        runtime: Arc<dyn NodeRuntime>,
        network: &str,
        name: &str,
        terminal: &str,
    ) -> NodeShell {
        NodeShell {
            runtime,
            network: network.into(),
            name: name.into(),
            terminal: terminal.into(),
        }
    }
}

impl Spawner for NodeShell {
    fn spawn(&self, size: WinSize, keep: Option<BorrowedFd<'_>>) -> io::Result<PtyProcess> {
        self.runtime
            .spawn_shell(&self.network, &self.name, &self.terminal, size, keep)
            .map_err(io::Error::other)
    }
}
