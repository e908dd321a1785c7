//! The runtime: session networks and the nodes on them, from creation to destruction, and
//! their recovery after the owning process restarts.
//!
//! One process owns a state directory at a time (an exclusive `flock` on `<state>/lock`). It
//! keeps every record in memory behind a mutex that is held only for bookkeeping, never across
//! the slow parts of creating or destroying a node, so nodes are created concurrently: a create
//! reserves its name, address and uid range under the lock, builds the node without it, then
//! publishes the result.
//!
//! The runtime process is a child subreaper: a node's PID 1 is re-parented to it when the
//! launcher exits, so a destroyed node is reaped at once instead of lingering as a zombie.
//!
//! This file has the owner (lock, records, recovery) and the API's types; each verb has a file
//! of its own: `network.rs`, `create.rs`, `destroy.rs`, `exec.rs` (commands, PTYs, shells, the
//! engine), `hosts.rs`, `stats.rs`, with `uid_pool.rs` and `leftovers.rs` below them.

mod create;
mod destroy;
mod exec;
mod hosts;
mod leftovers;
mod network;
mod stats;
pub use exec::Hold;
pub use stats::DiskUse;
mod sweep;
mod uid_pool;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cgroups::{CgroupError, CgroupStats, NodeCgroup};
use crate::config::{Isolation, NodeLimits, OrphanPolicy, RuntimeConfig};
use crate::engine::EngineError;
use crate::image::{self, Image, ImageError};
use crate::init::InitError;
use crate::network::{dns, firewall, host, link, NetworkError, PoolFull, Subnet};
use crate::process::Reaper;
use crate::pty::PtyError;
use crate::registry::{Attachment, Layout, NodeRegistries, Registries, RegistryError};
use crate::rootfs::{NodeDir, RootfsError};
use crate::state::{self, NetworkRecord, NodeRecord, StateError};
use uid_pool::UidPool;

pub use crate::state::NodeStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what} {name:?}: use 1 to 63 characters a-z, 0-9 and '-', starting and ending with a letter or digit")]
    InvalidName { what: &'static str, name: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("another process owns the state directory {0}; stop it or use another --state-dir")]
    Busy(PathBuf),
    #[error("unknown network {0:?}")]
    UnknownNetwork(String),
    #[error("network {0:?} already exists")]
    NetworkExists(String),
    #[error(
        "network {0:?} is busy: a node is being created on it or it is being destroyed; try again"
    )]
    NetworkBusy(String),
    #[error("unknown node {hostname:?} in network {network:?}")]
    UnknownNode { network: String, hostname: String },
    #[error("node name {hostname:?} is already taken in network {network:?}")]
    NameTaken { network: String, hostname: String },
    #[error(transparent)]
    SubnetPoolExhausted(PoolFull),
    #[error(
        "{service} cannot listen on {addr}: the address is in use on this host (another sandpit \
         instance or other software on an overlapping subnet?); configure a --subnet-pool \
         that nothing else uses"
    )]
    AddressInUse {
        service: &'static str,
        addr: std::net::SocketAddrV4,
    },
    #[error("network {0:?} has no free address left")]
    NetworkFull(String),
    #[error("no free uid range left ({0} ranges in use)")]
    UidPoolExhausted(u32),
    #[error("node {hostname:?} is {status}, not running")]
    NotRunning {
        hostname: String,
        status: NodeStatus,
    },
    #[error("the engine of node {hostname:?} did not answer within {waited:?} ({last}); dockerd log:\n{log_tail}")]
    EngineNotReady {
        hostname: String,
        waited: Duration,
        /// Why the last attempt failed.
        last: EngineError,
        log_tail: String,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{source}; cleaning up also failed: {}", cleanup.join("; "))]
    CreateAndCleanup {
        source: Box<Error>,
        cleanup: Vec<String>,
    },
    #[error("teardown incomplete: {}", .0.join("; "))]
    Teardown(Vec<String>),
    #[error("open a terminal in node {hostname:?}: {source}")]
    Pty {
        hostname: String,
        #[source]
        source: PtyError,
    },
    #[error("start a shell in node {hostname:?}: {source}")]
    Shell {
        hostname: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    pub network: String,
    /// Host name; the first free `nodeN` when None.
    pub hostname: Option<String>,
    /// Base image; the configured default when None.
    pub image: Option<String>,
}

/// A node as callers see it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub network: String,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub image: String,
    pub status: NodeStatus,
    pub isolation: Isolation,
    pub limits: NodeLimits,
    /// PID 1 of the node on the host.
    pub init_pid: Option<i32>,
    pub created_at_ms: u64,
}

/// A session network as callers see it.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkInfo {
    pub name: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub bridge: String,
}
/// A login shell running in a node on a PTY of its own ([`Runtime::spawn_shell`]).
#[derive(Debug)]
pub struct ShellProcess {
    /// The PTY master: the shell's output is read here and keystrokes are written here.
    pub master: std::os::fd::OwnedFd,
    /// The exec helper running the shell; it exits with the shell's status.
    pub child: tokio::process::Child,
    /// The connection to the helper when it holds the shell (see `hold.rs`).
    pub holder: Option<std::os::unix::net::UnixStream>,
}

/// Live figures of a node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStats {
    #[serde(flatten)]
    pub cgroup: CgroupStats,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
}

type NodeKey = (String, String);

#[derive(Default)]
struct Inner {
    networks: BTreeMap<String, NetworkRecord>,
    /// Names and indexes of networks being created.
    pending_networks: BTreeSet<String>,
    pending_indexes: BTreeSet<u32>,
    /// Networks being destroyed: no node may be added to them.
    closing_networks: BTreeSet<String>,
    nodes: BTreeMap<NodeKey, NodeRecord>,
    /// The services of each network on its gateway.
    services: BTreeMap<String, NetServices>,
}

/// What the runtime serves a network on its gateway while it owns it.
struct NetServices {
    dns_table: dns::Table,
    dns: tokio::task::JoinHandle<()>,
    /// The registries' service (their relay); stops with the value.
    _registries: Option<Attachment>,
}

impl Drop for NetServices {
    fn drop(&mut self) {
        self.dns.abort();
    }
}

/// The node runtime of one state directory.
pub struct Runtime {
    cfg: RuntimeConfig,
    inner: Mutex<Inner>,
    /// Serialises rewrites of the nodes' /etc/hosts, so an older list never lands last.
    hosts_lock: Mutex<()>,
    /// The registries behind the nodes' `docker pull` and `docker push`, when configured.
    registries: Option<Box<dyn NodeRegistries>>,
    uid_pool: UidPool,
    /// Reaps what the nodes leave to us as their subreaper; stops with the runtime.
    _reaper: Reaper,
    _lock: nix::fcntl::Flock<std::fs::File>,
}
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidName {
            what,
            name: name.into(),
        })
    }
}

/// Takes the one-owner lock of a state directory; it lives as long as the Runtime.
///
/// A previous owner that was just killed may still have a child between `fork` and `exec`
/// holding a copy of the lock's descriptor (it closes on `exec`), so a held lock is retried
/// for a moment before the directory is called busy.
async fn lock_state_dir(
    file: std::fs::File,
    state_dir: &Path,
) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    use nix::fcntl::{Flock, FlockArg};
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = f;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => return Err(Error::Busy(state_dir.to_owned())),
        }
    }
}
impl Runtime {
    /// Opens (or creates) the state directory, takes ownership of it, and reconciles what is on
    /// disk with what runs: live nodes are adopted (or destroyed, per `cfg.orphans`), dead or
    /// half-made ones are cleaned up, and every network's bridge and firewall is restored.
    pub async fn open(cfg: RuntimeConfig) -> Result<Runtime, Error> {
        cfg.validate().map_err(Error::Config)?;
        for d in [
            cfg.state_dir.join("nodes"),
            cfg.state_dir.join("networks"),
            cfg.uid_lock_dir.clone(),
        ] {
            std::fs::create_dir_all(&d).map_err(|e| StateError::new("create", &d, e))?;
        }
        // Refused here, with the fix, rather than as EACCES inside every node later.
        if cfg.isolation == Isolation::Userns {
            if let Some(u) = crate::reach::Unreachable::check(&cfg.state_dir.join("nodes")) {
                return Err(Error::Config(u.to_string()));
            }
        }
        let lock_path = cfg.state_dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StateError::new("open", &lock_path, e))?;
        let lock = lock_state_dir(lock, &cfg.state_dir).await?;
        // Orphaned node inits become our children, so we can reap them.
        let _ = nix::sys::prctl::set_child_subreaper(true);
        // Before recovery: the adopted networks' relays need the registries' sockets.
        let registries: Option<Box<dyn NodeRegistries>> = match &cfg.registry {
            Some(r) => {
                let layout = Layout::of_state_dir(&cfg.state_dir);
                Some(Box::new(Registries::start(r, &layout).await?))
            }
            None => None,
        };
        let reaper = Reaper::start()
            .map_err(|e| Error::Config(format!("install the SIGCHLD handler: {e}")))?;

        let uid_pool = UidPool::new(&cfg);
        let rt = Runtime {
            cfg,
            inner: Mutex::new(Inner::default()),
            hosts_lock: Mutex::new(()),
            registries,
            uid_pool,
            _reaper: reaper,
            _lock: lock,
        };
        rt.recover().await?;
        Ok(rt)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// The base images nodes can be made from, sorted by name.
    pub fn images(&self) -> Vec<Image> {
        image::usable(&self.cfg.images_dir)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn network_path(&self, name: &str) -> PathBuf {
        self.cfg
            .state_dir
            .join("networks")
            .join(format!("{name}.json"))
    }

    fn node_dir(&self, rec: &NodeRecord) -> NodeDir {
        self.node_dir_of(&rec.network, &rec.hostname)
    }

    fn node_dir_of(&self, network: &str, hostname: &str) -> NodeDir {
        let name = state::node_dir_name(network, hostname);
        NodeDir::new(self.cfg.state_dir.join("nodes").join(name))
    }

    fn cgroup(&self, rec: &NodeRecord) -> NodeCgroup {
        NodeCgroup::new(&self.cfg.cgroup_root, &self.cfg.cgroup_parent, &rec.cgroup)
    }

    fn release_uid_range(&self, rec: &NodeRecord) {
        if let Some(r) = rec.uid_range {
            self.uid_pool.release(r);
        }
    }

    async fn recover(&self) -> Result<(), Error> {
        let nets_dir = self.cfg.state_dir.join("networks");
        for entry in std::fs::read_dir(&nets_dir)
            .map_err(|e| StateError::new("read", &nets_dir, e))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&path); // an interrupted atomic write
                continue;
            }
            let net: NetworkRecord = state::load(&path)?;
            self.lock().networks.insert(net.name.clone(), net);
        }
        let nodes_dir = self.cfg.state_dir.join("nodes");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&nodes_dir)
            .map_err(|e| StateError::new("read", &nodes_dir, e))?
            .flatten()
        {
            let nd = NodeDir::new(entry.path());
            match state::load::<NodeRecord>(&nd.record()) {
                Ok(rec) => found.push(rec),
                Err(e) => {
                    // A directory without a readable record never got past its first step.
                    tracing::warn!(dir = %nd.dir.display(), error = %e, "removing node directory without a record");
                    if let Err(e) = nd.remove().await {
                        tracing::error!(error = %e, "remove stray node directory");
                    }
                }
            }
        }
        for rec in found {
            let alive = rec.status == NodeStatus::Running && rec.init_alive();
            if alive && self.cfg.orphans == OrphanPolicy::Adopt {
                tracing::info!(network = %rec.network, node = %rec.hostname, "adopted running node");
                self.lock()
                    .nodes
                    .insert((rec.network.clone(), rec.hostname.clone()), rec);
            } else {
                tracing::info!(network = %rec.network, node = %rec.hostname, status = ?rec.status, alive, "cleaning up node found on disk");
                if let Err(e) = self.teardown(&rec).await {
                    tracing::error!(node = %rec.hostname, error = %e, "clean up orphaned node");
                }
            }
        }
        {
            let inner = self.lock();
            let known = |dir: &str| inner.nodes.values().any(|n| n.dir_name() == dir);
            self.uid_pool.sweep(known);
        }
        let nets: Vec<NetworkRecord> = self.lock().networks.values().cloned().collect();
        for net in nets {
            if self.cfg.orphans == OrphanPolicy::Destroy {
                self.destroy_network(&net.name).await?;
                continue;
            }
            // Restore the bridge and rules if the host lost them (e.g. after a reboot).
            if !link::link_exists(&net.bridge).await {
                let _host = host::HostLock::take(&self.cfg.network_lock).await?;
                link::create_bridge(&net.bridge, net.subnet).await?;
            }
            firewall::install(&self.firewall_spec(&net)).await?;
            self.start_services(&net).await?;
            self.refresh_hosts(&net.name);
        }
        for failure in self.sweep_unrecorded().await {
            tracing::error!(%failure, "could not remove what an earlier owner left");
        }
        Ok(())
    }

    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.lock().nodes.values().map(node_info).collect()
    }

    pub fn node(&self, network: &str, hostname: &str) -> Option<NodeInfo> {
        self.lock()
            .nodes
            .get(&(network.into(), hostname.into()))
            .map(node_info)
    }

    fn running(&self, network: &str, hostname: &str) -> Result<NodeRecord, Error> {
        let rec = self
            .lock()
            .nodes
            .get(&(network.into(), hostname.into()))
            .cloned()
            .ok_or_else(|| Error::UnknownNode {
                network: network.into(),
                hostname: hostname.into(),
            })?;
        let alive = rec.init_alive();
        if !rec.status.can_exec() || !alive {
            let status = if alive {
                rec.status
            } else {
                NodeStatus::Failed
            };
            if !alive && rec.status == NodeStatus::Running {
                if let Some(r) = self
                    .lock()
                    .nodes
                    .get_mut(&(network.into(), hostname.into()))
                {
                    r.status = NodeStatus::Failed;
                }
            }
            return Err(Error::NotRunning {
                hostname: hostname.into(),
                status,
            });
        }
        Ok(rec)
    }

    /// Everything this runtime's configuration names that still exists on the host: mounts,
    /// loop devices, links, cgroups, firewall rules, uid range locks, node and network files,
    /// processes in its cgroups, registries. Empty when the runtime is clean.
    pub async fn leftovers(cfg: &RuntimeConfig) -> Vec<String> {
        leftovers::scan(cfg, &UidPool::new(cfg)).await
    }
}

impl Drop for Runtime {
    /// DNS servers and relays are tasks of this process, and the registries its children: they
    /// stop with it. Nodes and networks stay (a restart adopts them).
    fn drop(&mut self) {
        self.lock().services.clear();
    }
}

fn network_info(n: &NetworkRecord) -> NetworkInfo {
    NetworkInfo {
        name: n.name.clone(),
        subnet: n.subnet,
        gateway: n.subnet.gateway(),
        bridge: n.bridge.clone(),
    }
}

fn node_info(n: &NodeRecord) -> NodeInfo {
    NodeInfo {
        network: n.network.clone(),
        hostname: n.hostname.clone(),
        ip: n.ip,
        image: n.image.clone(),
        status: n.status,
        isolation: n.isolation,
        limits: n.limits,
        init_pid: n.init_pid,
        created_at_ms: n.created_at_ms,
    }
}

fn with_cleanup(err: Error, cleanup: Vec<String>) -> Error {
    if cleanup.is_empty() {
        err
    } else {
        Error::CreateAndCleanup {
            source: Box::new(err),
            cleanup,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("node1"));
        assert!(valid_name("0abc-def"));
        for bad in ["", "-a", "Node", "a_b", &"x".repeat(64)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
