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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::registry::{Registries, RegistryError, Relay, MIRROR_PORT, PUSH_PORT, REGISTRY_HOST};
use serde::Serialize;
use tracing::Instrument;

use crate::cgroups::{self, CgroupError, CgroupStats, NodeCgroup};
use crate::config::{Isolation, NodeLimits, OrphanPolicy, RuntimeConfig};
use crate::exec::{ExecOptions, ExecTarget};
use crate::image::{self, ImageError};
use crate::init::{InitConfig, InitError, Launch};
use crate::network::{self, dns, firewall, link, NetworkError, Subnet};
use crate::pty::{NodePty, PtyError};
use crate::rootfs::{self, NodeDir, RootfsError};
use crate::state::{self, NetworkRecord, NodeRecord, StateError};

pub use crate::state::NodeStatus;

/// How long a node's dockerd may take to answer after the node started.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each step of the launch handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

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
    #[error("no free subnet left in the pool {0}; destroy a network or configure a larger pool")]
    SubnetPoolExhausted(Subnet),
    #[error("network {0:?} has no free address left")]
    NetworkFull(String),
    #[error("no free uid range left ({0} ranges in use)")]
    UidPoolExhausted(u32),
    #[error("node {hostname:?} is {status}, not running")]
    NotRunning {
        hostname: String,
        status: NodeStatus,
    },
    #[error("the engine of node {hostname:?} did not answer within {waited:?}; dockerd log:\n{log_tail}")]
    EngineNotReady {
        hostname: String,
        waited: Duration,
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
    /// Limits; the configured defaults when None.
    pub limits: Option<NodeLimits>,
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
}

/// The environment of a node's interactive shells, on top of the exec defaults (`PATH`,
/// `HOME=/root`, `LANG=C.UTF-8`).
const SHELL_ENV: &[&str] = &[
    "TERM=xterm-256color",
    "SHELL=/bin/bash",
    "USER=root",
    "LOGNAME=root",
];

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
    /// Stops with the value.
    _relay: Option<Relay>,
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
    registries: Option<Registries>,
    /// Reaps what the nodes leave to us as their subreaper; stops with the runtime.
    _reaper: AbortOnDrop,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// A task that ends when its owner is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reaps adopted zombies whenever a child exits (at most every 200 ms).
fn start_reaper() -> Result<AbortOnDrop, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut chld = signal(SignalKind::child())
        .map_err(|e| Error::Config(format!("install the SIGCHLD handler: {e}")))?;
    Ok(AbortOnDrop(tokio::spawn(async move {
        while chld.recv().await.is_some() {
            let _ = tokio::task::spawn_blocking(state::reap_adopted_zombies).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })))
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
        let registries = match &cfg.registry {
            Some(r) => Some(Registries::start(r, &cfg.state_dir.join("registry")).await?),
            None => None,
        };

        let rt = Runtime {
            cfg,
            inner: Mutex::new(Inner::default()),
            hosts_lock: Mutex::new(()),
            registries,
            _reaper: start_reaper()?,
            _lock: lock,
        };
        rt.recover().await?;
        Ok(rt)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
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
        NodeDir::new(self.cfg.state_dir.join("nodes").join(rec.dir_name()))
    }

    fn cgroup(&self, rec: &NodeRecord) -> NodeCgroup {
        NodeCgroup::new(&self.cfg.cgroup_root, &self.cfg.cgroup_parent, &rec.cgroup)
    }

    fn firewall_spec(&self, net: &NetworkRecord) -> firewall::FirewallSpec {
        firewall::FirewallSpec {
            prefix: self.cfg.prefix.clone(),
            net_index: net.index,
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            host_ports: net
                .host_ports
                .iter()
                .copied()
                .chain(
                    self.registries
                        .as_ref()
                        .map(|r| r.ports(net.egress))
                        .unwrap_or_default(),
                )
                .collect(),
            egress: net.egress,
            uplink: if net.egress {
                let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
                network::default_route_interface(&routes).unwrap_or_default()
            } else {
                String::new()
            },
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
        self.sweep_uid_locks();
        let nets: Vec<NetworkRecord> = self.lock().networks.values().cloned().collect();
        for net in nets {
            if self.cfg.orphans == OrphanPolicy::Destroy {
                self.destroy_network(&net.name).await?;
                continue;
            }
            // Restore the bridge and rules if the host lost them (e.g. after a reboot).
            if !link::link_exists(&net.bridge).await {
                link::create_bridge(&net.bridge, net.subnet).await?;
            }
            firewall::install(&self.firewall_spec(&net)).await?;
            self.start_services(&net).await?;
            self.refresh_hosts(&net.name);
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Networks
    // -----------------------------------------------------------------------------------------

    /// Creates a session network: a bridge with the first address of a free subnet, and the
    /// firewall rules that let its nodes talk to each other and to nothing else.
    pub async fn create_network(&self, name: &str) -> Result<NetworkInfo, Error> {
        check_name("network name", name)?;
        let len = self.cfg.network_prefix_len;
        let index = {
            let mut inner = self.lock();
            if inner.networks.contains_key(name) || inner.pending_networks.contains(name) {
                return Err(Error::NetworkExists(name.into()));
            }
            let used: BTreeSet<u32> = inner
                .networks
                .values()
                .map(|n| n.index)
                .chain(inner.pending_indexes.iter().copied())
                .collect();
            let index = (0..self.cfg.subnet_pool.subnet_count(len).min(0x1000))
                .find(|i| !used.contains(i))
                .ok_or(Error::SubnetPoolExhausted(self.cfg.subnet_pool))?;
            inner.pending_networks.insert(name.into());
            inner.pending_indexes.insert(index);
            index
        };
        let net = NetworkRecord {
            name: name.into(),
            index,
            subnet: self
                .cfg
                .subnet_pool
                .nth_subnet(len, index)
                .expect("index below subnet_count"),
            bridge: network::bridge_name(&self.cfg.prefix, index),
            egress: self.cfg.egress,
            host_ports: self.cfg.host_ports_for_nodes.clone(),
        };
        let mut res = self.build_network(&net).await;
        if res.is_ok() {
            if let Err(e) = self.start_services(&net).await {
                res = Err(with_cleanup(e, self.unbuild_network(&net).await));
            }
        }
        let mut inner = self.lock();
        inner.pending_networks.remove(name);
        inner.pending_indexes.remove(&index);
        res?;
        inner.networks.insert(name.into(), net.clone());
        Ok(network_info(&net))
    }

    async fn build_network(&self, net: &NetworkRecord) -> Result<(), Error> {
        let spec = self.firewall_spec(net);
        let res: Result<(), Error> = async {
            state::save(&self.network_path(&net.name), net)?;
            link::create_bridge(&net.bridge, net.subnet).await?;
            firewall::install(&spec).await?;
            Ok(())
        }
        .await;
        if let Err(e) = res {
            return Err(with_cleanup(e, self.unbuild_network(net).await));
        }
        Ok(())
    }

    /// Removes a network's rules, bridge and record; returns what failed.
    async fn unbuild_network(&self, net: &NetworkRecord) -> Vec<String> {
        let mut failures = Vec::new();
        drop(self.lock().services.remove(&net.name));
        if let Some(r) = &self.registries {
            if let Err(e) = r.forget(&net.name) {
                failures.push(e.to_string());
            }
        }
        // The bridge first: rules without a bridge are harmless, a bridge without rules is not.
        if let Err(e) = link::delete_link(&net.bridge).await {
            failures.push(e.to_string());
            return failures;
        }
        if let Err(e) = firewall::remove(&self.firewall_spec(net)).await {
            failures.push(e.to_string());
            return failures;
        }
        let _ = std::fs::remove_file(self.network_path(&net.name));
        failures
    }

    /// Starts the network's DNS server (see `network/dns.rs`) and registry relay (see
    /// `registry/relay.rs`) on its gateway.
    async fn start_services(&self, net: &NetworkRecord) -> Result<(), Error> {
        let upstream = if net.egress {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            network::host_nameservers(&host)
        } else {
            Vec::new()
        };
        let dns_table = dns::Table::default();
        let dns = dns::serve(net.subnet, dns_table.clone(), upstream)
            .await
            .map_err(|e| {
                Error::Network(NetworkError::Dns {
                    gateway: net.subnet.gateway(),
                    source: e,
                })
            })?;
        let relay = match &self.registries {
            Some(r) => match r.relay(net.subnet, &net.name, net.egress).await {
                Ok(relay) => Some(relay),
                Err(e) => {
                    dns.abort();
                    return Err(e.into());
                }
            },
            None => None,
        };
        let services = NetServices {
            dns_table,
            dns,
            _relay: relay,
        };
        // The old one (if any) stops when dropped.
        drop(self.lock().services.insert(net.name.clone(), services));
        Ok(())
    }

    /// Destroys every node of the network, then its bridge and firewall rules. Refused while a
    /// node is being created on it.
    pub async fn destroy_network(&self, name: &str) -> Result<(), Error> {
        let (net, hostnames) = {
            let mut inner = self.lock();
            let net = inner
                .networks
                .get(name)
                .cloned()
                .ok_or_else(|| Error::UnknownNetwork(name.into()))?;
            let nodes: Vec<&NodeRecord> =
                inner.nodes.values().filter(|n| n.network == name).collect();
            if inner.closing_networks.contains(name)
                || nodes.iter().any(|n| n.status == NodeStatus::Creating)
            {
                return Err(Error::NetworkBusy(name.into()));
            }
            let hostnames: Vec<String> = nodes.iter().map(|n| n.hostname.clone()).collect();
            inner.closing_networks.insert(name.into());
            (net, hostnames)
        };
        let results =
            futures_util::future::join_all(hostnames.iter().map(|h| self.destroy_node(name, h)))
                .await;
        let mut failures: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| e.to_string())
            .collect();
        if failures.is_empty() {
            failures.extend(self.unbuild_network(&net).await);
        }
        let mut inner = self.lock();
        inner.closing_networks.remove(name);
        if failures.is_empty() {
            inner.networks.remove(name);
            Ok(())
        } else {
            Err(Error::Teardown(failures))
        }
    }

    pub fn networks(&self) -> Vec<NetworkInfo> {
        self.lock().networks.values().map(network_info).collect()
    }

    pub fn network(&self, name: &str) -> Option<NetworkInfo> {
        self.lock().networks.get(name).map(network_info)
    }

    // -----------------------------------------------------------------------------------------
    // Nodes
    // -----------------------------------------------------------------------------------------

    /// Creates a node and returns once its Docker engine answers. On failure nothing of the node
    /// is left behind; if cleaning up failed too, the error says so.
    pub async fn create_node(&self, spec: NodeSpec) -> Result<NodeInfo, Error> {
        let image_name = spec
            .image
            .clone()
            .unwrap_or_else(|| self.cfg.default_image.clone());
        let image = image::find(&self.cfg.images_dir, &image_name)?;
        if let Some(h) = &spec.hostname {
            check_name("node name", h)?;
            if h == REGISTRY_HOST {
                return Err(Error::NameTaken {
                    network: spec.network.clone(),
                    hostname: h.clone(),
                });
            }
        }
        let rec = self.reserve_node(&spec, &image_name)?;
        let span = tracing::info_span!("node", network = %rec.network, node = %rec.hostname);
        self.finish_create(rec, &image.rootfs)
            .instrument(span)
            .await
    }

    async fn finish_create(
        &self,
        mut rec: NodeRecord,
        image_rootfs: &Path,
    ) -> Result<NodeInfo, Error> {
        let started = Instant::now();
        match self.build_node(&mut rec, image_rootfs).await {
            Ok(()) => {
                rec.status = NodeStatus::Running;
                let saved = state::save(&self.node_dir(&rec).record(), &rec);
                self.lock()
                    .nodes
                    .insert((rec.network.clone(), rec.hostname.clone()), rec.clone());
                if let Err(e) = saved {
                    return Err(self.fail_create(&rec, e.into()).await);
                }
                self.refresh_hosts(&rec.network);
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "node ready"
                );
                Ok(node_info(&rec))
            }
            Err(e) => Err(self.fail_create(&rec, e).await),
        }
    }

    async fn fail_create(&self, rec: &NodeRecord, err: Error) -> Error {
        tracing::warn!(error = %err, "node creation failed, cleaning up");
        let cleanup = match self.teardown(rec).await {
            Ok(()) => Vec::new(),
            Err(Error::Teardown(steps)) => steps,
            Err(other) => vec![other.to_string()],
        };
        self.lock()
            .nodes
            .remove(&(rec.network.clone(), rec.hostname.clone()));
        self.refresh_hosts(&rec.network);
        with_cleanup(err, cleanup)
    }

    /// Picks the name, address and uid range under the lock and records the node as creating.
    fn reserve_node(&self, spec: &NodeSpec, image: &str) -> Result<NodeRecord, Error> {
        let mut inner = self.lock();
        let net = inner
            .networks
            .get(&spec.network)
            .cloned()
            .ok_or_else(|| Error::UnknownNetwork(spec.network.clone()))?;
        if inner.closing_networks.contains(&net.name) {
            return Err(Error::NetworkBusy(net.name.clone()));
        }
        let siblings: Vec<&NodeRecord> = inner
            .nodes
            .values()
            .filter(|n| n.network == net.name)
            .collect();
        let hostname = match &spec.hostname {
            Some(h) => {
                if siblings.iter().any(|n| &n.hostname == h) {
                    return Err(Error::NameTaken {
                        network: net.name.clone(),
                        hostname: h.clone(),
                    });
                }
                h.clone()
            }
            None => (1..)
                .map(|i| format!("node{i}"))
                .find(|h| !siblings.iter().any(|n| &n.hostname == h))
                .expect("a free name exists"),
        };
        // Host 1 is the bridge; nodes take the lowest free address after it.
        let host_number = (2..=net.subnet.max_hosts())
            .find(|h| !siblings.iter().any(|n| n.host_number == *h))
            .filter(|h| *h <= 0xff)
            .ok_or_else(|| Error::NetworkFull(net.name.clone()))?;
        let ip = net.subnet.host(host_number).expect("host number in range");
        let (uid_range, uid_base) = match self.cfg.isolation {
            Isolation::Userns => {
                let r = self.claim_uid_range(&net.name, &hostname)?;
                (Some(r), Some(self.cfg.uid_pool_start + r * 65536))
            }
            Isolation::Rootful => (None, None),
        };
        let rec = NodeRecord {
            network: net.name.clone(),
            hostname: hostname.clone(),
            image: image.into(),
            isolation: self.cfg.isolation,
            limits: spec.limits.unwrap_or(self.cfg.limits),
            host_number,
            ip,
            uid_range,
            uid_base,
            veth: network::veth_name(&self.cfg.prefix, net.index, host_number),
            cgroup: state::node_dir_name(&net.name, &hostname),
            init_pid: None,
            init_start_time: None,
            status: NodeStatus::Creating,
            created_at_ms: state::now_ms(),
        };
        let nd = self.node_dir(&rec);
        let saved = std::fs::create_dir_all(&nd.dir)
            .map_err(|e| StateError::new("create", &nd.dir, e))
            .and_then(|_| state::save(&nd.record(), &rec));
        if let Err(e) = saved {
            self.release_uid_range(&rec);
            let _ = std::fs::remove_dir_all(&nd.dir);
            return Err(e.into());
        }
        inner
            .nodes
            .insert((rec.network.clone(), rec.hostname.clone()), rec.clone());
        Ok(rec)
    }

    /// Claims a uid range with an exclusive lock file shared by every instance on the host.
    fn claim_uid_range(&self, network: &str, hostname: &str) -> Result<u32, Error> {
        let owner = format!(
            "{} {} {}\n",
            self.cfg.prefix,
            self.cfg.state_dir.display(),
            state::node_dir_name(network, hostname)
        );
        for r in 0..self.cfg.uid_pool_ranges {
            let path = self.cfg.uid_lock_dir.join(r.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(owner.as_bytes())
                        .map_err(|e| StateError::new("write", &path, e))?;
                    return Ok(r);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StateError::new("create", &path, e).into()),
            }
        }
        Err(Error::UidPoolExhausted(self.cfg.uid_pool_ranges))
    }

    /// Releases uid range locks of this state directory whose node has no record (a crash
    /// between claiming the range and saving the record).
    fn sweep_uid_locks(&self) {
        let ours = format!("{} {} ", self.cfg.prefix, self.cfg.state_dir.display());
        let Ok(entries) = std::fs::read_dir(&self.cfg.uid_lock_dir) else {
            return;
        };
        let inner = self.lock();
        for e in entries.flatten() {
            let Ok(owner) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Some(dir) = owner.strip_prefix(&ours) else {
                continue;
            };
            let known = inner.nodes.values().any(|n| n.dir_name() == dir.trim());
            if !known {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn release_uid_range(&self, rec: &NodeRecord) {
        if let Some(r) = rec.uid_range {
            let path = self.cfg.uid_lock_dir.join(r.to_string());
            // Only remove the lock if it is still ours.
            let ours = format!("{} {} ", self.cfg.prefix, self.cfg.state_dir.display());
            if std::fs::read_to_string(&path).is_ok_and(|s| s.starts_with(&ours)) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// The slow part of a create, run without the lock. Every host object it makes is named in
    /// `rec` already, so a teardown can remove it whatever step failed.
    async fn build_node(&self, rec: &mut NodeRecord, image_rootfs: &Path) -> Result<(), Error> {
        let nd = self.node_dir(rec);
        let owner = rec.uid_base.map(|b| (b, b)).unwrap_or((0, 0));
        let net = self
            .lock()
            .networks
            .get(&rec.network)
            .cloned()
            .ok_or_else(|| Error::UnknownNetwork(rec.network.clone()))?;
        nd.prepare(owner)?;
        self.cgroup(rec).create(
            &rec.limits,
            rec.uid_base.map(|b| (b, b)),
            rec.isolation == Isolation::Rootful,
        )?;
        nd.make_disk(rec.limits.disk_bytes, owner).await?;
        NodeDir::write_in_place(
            &nd.resolv_conf(),
            &network::render_resolv_conf(net.subnet.gateway()),
            owner,
        )?;
        NodeDir::write_in_place(&nd.hostname(), &format!("{}\n", rec.hostname), owner)?;
        NodeDir::write_in_place(&nd.hosts(), &self.hosts_of(&rec.network), owner)?;
        state::save(
            &nd.init_config(),
            &InitConfig {
                hostname: rec.hostname.clone(),
                isolation: rec.isolation,
                image_rootfs: image_rootfs.to_owned(),
                dockerd_args: self.dockerd_args(net.subnet.gateway()),
                extra_ca: self.registries.as_ref().and_then(|r| r.hub_ca(net.egress)),
            },
        )?;

        let mut launch = Launch::spawn(&self.cfg.helper_exe, &nd.dir)?;
        let res = self.handshake(&mut launch, rec, &net, image_rootfs).await;
        launch.finish().await;
        res?;
        self.wait_engine(rec, &nd).await
    }

    async fn handshake(
        &self,
        launch: &mut Launch,
        rec: &mut NodeRecord,
        net: &NetworkRecord,
        image_rootfs: &Path,
    ) -> Result<(), Error> {
        // Cgroups before the cgroup namespace: its root is where the launcher is now.
        self.cgroup(rec).attach(launch.launcher_pid)?;
        launch.send("attached", None).await?;
        launch.expect("unshared", HANDSHAKE_TIMEOUT).await?;
        let lower = match rec.uid_base {
            Some(base) => {
                launch.write_id_maps(base)?;
                let userns = launch.userns_fd()?;
                let tree =
                    crate::sys::open_tree_clone(image_rootfs).map_err(|e| RootfsError::Io {
                        op: "clone mount of",
                        path: image_rootfs.to_owned(),
                        source: e.into(),
                    })?;
                crate::sys::set_idmap_readonly(&tree, &userns).map_err(|e| RootfsError::Io {
                    op: "idmap",
                    path: image_rootfs.to_owned(),
                    source: e.into(),
                })?;
                Some(tree)
            }
            None => None,
        };
        link::add_node_link(
            &rec.veth,
            &net.bridge,
            launch.launcher_pid,
            rec.ip,
            net.subnet,
            net.egress,
        )
        .await?;
        launch.send("mapped", lower.as_ref()).await?;
        drop(lower);
        // The launcher reports the init's pid and the init reports "ready", in either order.
        let mut ready = false;
        while !(ready && rec.init_pid.is_some()) {
            let line = launch.recv(HANDSHAKE_TIMEOUT).await;
            let line = match line {
                Ok(l) => l,
                Err(e) => return Err(e.into()),
            };
            if line == "ready" {
                ready = true;
            } else if let Some(pid) = line.strip_prefix("pid ") {
                let pid: i32 = pid
                    .parse()
                    .map_err(|_| InitError::Handshake(format!("bad pid line {line:?}")))?;
                rec.init_pid = Some(pid);
                rec.init_start_time = state::process_start_time(pid);
                state::save(&self.node_dir(rec).record(), &*rec)?;
            } else {
                return Err(InitError::Handshake(format!("unexpected {line:?}")).into());
            }
        }
        Ok(())
    }

    /// Polls the node's Docker socket (through the init's root) until `GET /_ping` answers.
    async fn wait_engine(&self, rec: &NodeRecord, nd: &NodeDir) -> Result<(), Error> {
        let pid = rec.init_pid.expect("init pid known after handshake");
        let start_time = rec.init_start_time.unwrap_or_default();
        let sock = PathBuf::from(format!("/proc/{pid}/root/run/docker.sock"));
        let started = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            if engine_ping(&sock).await {
                return Ok(());
            }
            let dead = !state::is_same_process(pid, start_time);
            if dead || started.elapsed() > ENGINE_TIMEOUT {
                return Err(Error::EngineNotReady {
                    hostname: rec.hostname.clone(),
                    waited: started.elapsed(),
                    log_tail: tail(&nd.dockerd_log(), 20),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// How a node's dockerd starts: with the mirror on its gateway for Docker Hub images, and
    /// plain HTTP to the mirror and the session registry (they are reachable only from the
    /// session's own network).
    fn dockerd_args(&self, gateway: Ipv4Addr) -> Vec<String> {
        let mut args = vec!["--storage-driver=overlay2".to_string()];
        if self.registries.is_some() {
            args.push(format!("--registry-mirror=http://{gateway}:{MIRROR_PORT}"));
            args.push(format!("--insecure-registry={gateway}:{MIRROR_PORT}"));
            args.push(format!("--insecure-registry={REGISTRY_HOST}:{PUSH_PORT}"));
        }
        args
    }

    /// Destroys a node and everything it had on the host.
    pub async fn destroy_node(&self, network: &str, hostname: &str) -> Result<(), Error> {
        let key = (network.to_string(), hostname.to_string());
        let rec = {
            let mut inner = self.lock();
            let rec = inner
                .nodes
                .get_mut(&key)
                .ok_or_else(|| Error::UnknownNode {
                    network: network.into(),
                    hostname: hostname.into(),
                })?;
            if !rec.status.can_destroy() {
                return Err(Error::NotRunning {
                    hostname: hostname.into(),
                    status: rec.status,
                });
            }
            rec.status = NodeStatus::Destroying;
            rec.clone()
        };
        let _ = state::save(&self.node_dir(&rec).record(), &rec);
        let res = self.teardown(&rec).await;
        {
            let mut inner = self.lock();
            if res.is_ok() || !self.node_dir(&rec).record().exists() {
                inner.nodes.remove(&key);
            } else if let Some(r) = inner.nodes.get_mut(&key) {
                // Its processes could not all be removed: keep the record (and the uid range)
                // so that another destroy, or the next start, tries again.
                r.status = NodeStatus::Failed;
                let _ = state::save(&self.node_dir(r).record(), r);
            }
        }
        self.refresh_hosts(network);
        res
    }

    /// Removes every trace of a node; each step tolerates what is already gone. Reports every
    /// step that failed. While any of the node's processes may still live, its directory,
    /// record and uid range stay, so that a later attempt can finish the job and no new node
    /// gets the same host uids.
    async fn teardown(&self, rec: &NodeRecord) -> Result<(), Error> {
        let mut failures = Vec::new();
        if let Some(pid) = rec.init_pid {
            // Killing PID 1 of the node ends every process of its pid namespace, and with the
            // last of them the mount and network namespaces (and the veth's node end).
            match rec.init_start_time {
                Some(t) => {
                    if state::is_same_process(pid, t) {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    if !wait_gone(pid, t, Duration::from_secs(10)).await {
                        failures.push(format!("node init {pid} did not exit"));
                    }
                }
                // It had exited before its start time was read: reap it if it is ours.
                None => {
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                }
            }
        }
        if let Err(e) = link::delete_link(&rec.veth).await {
            failures.push(e.to_string());
        }
        let cg = self.cgroup(rec);
        match tokio::task::spawn_blocking(move || cg.destroy()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(format!("remove cgroups: {e}")),
        }
        if !failures.is_empty() {
            return Err(Error::Teardown(failures));
        }
        if let Err(e) = self.node_dir(rec).remove().await {
            failures.push(e.to_string());
        }
        self.release_uid_range(rec);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(failures))
        }
    }

    /// Destroys every node and network of this runtime, and removes its cgroup parent.
    pub async fn destroy_all(&self) -> Result<(), Error> {
        let names: Vec<String> = self.lock().networks.keys().cloned().collect();
        let mut failures = Vec::new();
        for n in names {
            if let Err(e) = self.destroy_network(&n).await {
                failures.push(e.to_string());
            }
        }
        if let Err(e) =
            cgroups::remove_parent_if_empty(&self.cfg.cgroup_root, &self.cfg.cgroup_parent)
        {
            failures.push(e.to_string());
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown(failures))
        }
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

    /// The program and arguments that run `argv` inside the node (namespaces and cgroups
    /// joined). Use it with any process spawner, e.g. a PTY.
    pub fn exec_args(
        &self,
        network: &str,
        hostname: &str,
        argv: &[String],
        opts: &ExecOptions,
    ) -> Result<(PathBuf, Vec<OsString>), Error> {
        let rec = self.running(network, hostname)?;
        let target = ExecTarget {
            pid: rec.init_pid.expect("running node has an init"),
            start_time: rec.init_start_time.expect("running node has an init"),
            cgroup_root: self.cfg.cgroup_root.clone(),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            cgroup_name: rec.cgroup.clone(),
            isolation: rec.isolation,
        };
        Ok((self.cfg.helper_exe.clone(), target.helper_args(opts, argv)))
    }

    /// A command that runs `argv` inside the node, with pipes or whatever stdio the caller sets.
    pub fn command(
        &self,
        network: &str,
        hostname: &str,
        argv: &[String],
        opts: &ExecOptions,
    ) -> Result<tokio::process::Command, Error> {
        let (exe, args) = self.exec_args(network, hostname, argv, opts)?;
        let mut cmd = tokio::process::Command::new(exe);
        // Its own process group: a signal to the node's process group never reaches ours.
        cmd.args(args).kill_on_drop(true).process_group(0);
        Ok(cmd)
    }

    /// A new PTY in the node's own devpts (`/dev/pts/N` inside), its slave owned by the node's
    /// `root:tty`. Both ends are close-on-exec.
    pub fn open_pty(&self, network: &str, hostname: &str) -> Result<NodePty, Error> {
        let rec = self.running(network, hostname)?;
        let pid = rec.init_pid.expect("running node has an init");
        let pty = NodePty::open(
            Path::new(&format!("/proc/{pid}/root")),
            rec.uid_base.unwrap_or(0),
        )
        .map_err(|source| Error::Pty {
            hostname: hostname.into(),
            source,
        })?;
        // The pid could have been reused between the check and the open: check again, so the
        // PTY is known to be the node's.
        if !rec.init_alive() {
            return Err(Error::NotRunning {
                hostname: hostname.into(),
                status: NodeStatus::Failed,
            });
        }
        Ok(pty)
    }

    /// Starts a login shell (`bash -l` as root in `/root`, `TERM=xterm-256color`) on a new PTY
    /// of the node with a window of `cols` x `rows`. The shell leads its own session with the
    /// PTY as its controlling terminal. The returned child is the exec helper, which exits
    /// with the shell's status and is killed when dropped; the shell dies with it.
    pub fn spawn_shell(
        &self,
        network: &str,
        hostname: &str,
        cols: u16,
        rows: u16,
    ) -> Result<ShellProcess, Error> {
        let pty = self.open_pty(network, hostname)?;
        pty.resize(cols, rows).map_err(|source| Error::Pty {
            hostname: hostname.into(),
            source,
        })?;
        let opts = ExecOptions {
            cwd: Some("/root".into()),
            env: SHELL_ENV.iter().map(|e| (*e).to_owned()).collect(),
            tty: true,
        };
        let argv = ["bash".to_owned(), "-l".to_owned()];
        let mut cmd = self.command(network, hostname, &argv, &opts)?;
        let shell_err = |source| Error::Shell {
            hostname: hostname.into(),
            source,
        };
        let NodePty { master, slave } = pty;
        cmd.stdin(slave.try_clone().map_err(shell_err)?)
            .stdout(slave.try_clone().map_err(shell_err)?)
            .stderr(slave);
        // `cmd` goes at the end of this function and with it our copies of the slave: from then
        // on only the shell and its children hold it, so the master hangs up when they exit.
        let child = cmd.spawn().map_err(shell_err)?;
        Ok(ShellProcess { master, child })
    }

    /// Memory, CPU, pids and disk use of a node.
    pub fn stats(&self, network: &str, hostname: &str) -> Result<NodeStats, Error> {
        let rec = self.running(network, hostname)?;
        let cgroup = self.cgroup(&rec).stats()?;
        let disk = self.node_dir(&rec).disk();
        let (used, total) = nix::sys::statvfs::statvfs(&disk)
            .map(|s| {
                let f = s.fragment_size();
                ((s.blocks() - s.blocks_free()) * f, s.blocks() * f)
            })
            .unwrap_or((0, 0));
        Ok(NodeStats {
            cgroup,
            disk_used_bytes: used,
            disk_total_bytes: total,
        })
    }

    /// Names and addresses of a network's nodes whose status passes `keep`, and the session
    /// registry's name when there is one.
    fn host_entries(
        &self,
        inner: &Inner,
        network: &str,
        keep: impl Fn(NodeStatus) -> bool,
    ) -> Vec<(String, Ipv4Addr)> {
        let registry: Vec<(String, Ipv4Addr)> =
            match (inner.networks.get(network), &self.registries) {
                (Some(net), Some(r)) => r
                    .host_names(net.egress)
                    .into_iter()
                    .map(|name| (name.to_string(), net.subnet.gateway()))
                    .collect(),
                _ => Vec::new(),
            };
        inner
            .nodes
            .values()
            .filter(|n| n.network == network && keep(n.status))
            .map(|n| (n.hostname.clone(), n.ip))
            .chain(registry)
            .collect()
    }

    /// `/etc/hosts` of a network's nodes: every node but those being destroyed.
    fn hosts_of(&self, network: &str) -> String {
        network::render_hosts(
            &self.host_entries(&self.lock(), network, |s| s != NodeStatus::Destroying),
        )
    }

    /// Rewrites `/etc/hosts` of every running node of the network, and its DNS table (running
    /// nodes only: their names answer once they do).
    fn refresh_hosts(&self, network: &str) {
        let _serial = self.hosts_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (content, running) = {
            let inner = self.lock();
            let content = network::render_hosts(
                &self.host_entries(&inner, network, |s| s != NodeStatus::Destroying),
            );
            if let Some(services) = inner.services.get(network) {
                let names = self.host_entries(&inner, network, |s| s == NodeStatus::Running);
                *services
                    .dns_table
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = names.into_iter().collect();
            }
            let running: Vec<NodeRecord> = inner
                .nodes
                .values()
                .filter(|n| n.network == network && n.status == NodeStatus::Running)
                .cloned()
                .collect();
            (content, running)
        };
        for n in running {
            let path = self.node_dir(&n).hosts();
            let owner = n.uid_base.map(|b| (b, b)).unwrap_or((0, 0));
            if let Err(e) = NodeDir::write_in_place(&path, &content, owner) {
                tracing::warn!(node = %n.hostname, error = %e, "update /etc/hosts");
            }
        }
    }

    /// Everything this runtime's configuration names that still exists on the host: mounts,
    /// links, cgroups, firewall rules, uid range locks, node and network files, processes in
    /// its cgroups. Empty when the runtime is clean; for tests and `sandpit doctor`.
    pub async fn leftovers(cfg: &RuntimeConfig) -> Vec<String> {
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
        let ours = format!("{} {} ", cfg.prefix, cfg.state_dir.display());
        if let Ok(locks) = std::fs::read_dir(&cfg.uid_lock_dir) {
            for l in locks.flatten() {
                if std::fs::read_to_string(l.path()).is_ok_and(|s| s.starts_with(&ours)) {
                    out.push(format!("uid range lock {}", l.path().display()));
                }
            }
        }
        for sub in ["nodes", "networks"] {
            if let Ok(entries) = std::fs::read_dir(cfg.state_dir.join(sub)) {
                for e in entries.flatten() {
                    out.push(format!("file {}", e.path().display()));
                }
            }
        }
        // Processes in our cgroups, and registries running with a configuration of ours.
        let marker = format!(":/{}/", cfg.cgroup_parent);
        let registry_dir = cfg.state_dir.join("registry");
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let name = p.file_name().to_string_lossy().into_owned();
                if !name.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let in_cgroup = std::fs::read_to_string(p.path().join("cgroup"))
                    .is_ok_and(|c| c.contains(&marker));
                let registry = cmd.split(|b| *b == 0).any(|arg| {
                    Path::new(std::ffi::OsStr::from_bytes(arg)).starts_with(&registry_dir)
                });
                if in_cgroup || registry {
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    out.push(format!("process {name} {}", cmd.trim()));
                }
            }
        }
        out
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

/// Waits until `pid` (started at `start_time`) is gone, reaping it if it is our child.
async fn wait_gone(pid: i32, start_time: u64, limit: Duration) -> bool {
    let started = Instant::now();
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return true,
            // Not our child (adopted after a restart): the system reaps it.
            Err(_) => {
                if !state::is_same_process(pid, start_time) {
                    return true;
                }
            }
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// True if the Docker engine behind `sock` answers `GET /_ping` with 200.
async fn engine_ping(sock: &Path) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::UnixStream::connect(sock).await else {
        return false;
    };
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
    matches!(read, Ok(Ok(_)))
        && (buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200"))
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
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
