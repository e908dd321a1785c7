//! Creating a node, one step after another: reserve its name, address and uid range under
//! the runtime's lock and record it as `creating`; then, without the lock, its directory,
//! cgroups, disk and `/etc` files, the launch handshake with its init (`init/mod.rs` has the
//! diagram), and the wait for its engine. A failure tears down whatever was made and reports
//! the cleanup's failures with the first error.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::{check_name, node_info, with_cleanup, Error, NodeInfo, NodeSpec, Runtime};
use crate::config::Isolation;
use crate::engine::{Engine, EngineError};
use crate::image;
use crate::init::{InitConfig, InitError, Launch};
use crate::network::{self, link};
use crate::process::{self, ProcessId};
use crate::registry::REGISTRY_HOST;
use crate::rootfs::{NodeDir, RootfsError};
use crate::state::{self, NetworkRecord, NodeRecord, NodeStatus, StateError};

/// How long a node's dockerd may take to answer after the node started.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one ping of the engine may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each step of the launch handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

impl Runtime {
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
        let uids = match self.cfg.isolation {
            Isolation::Userns => Some(
                self.uid_pool
                    .claim(&state::node_dir_name(&net.name, &hostname))?
                    .ok_or(Error::UidPoolExhausted(self.uid_pool.size()))?,
            ),
            Isolation::Rootful => None,
        };
        let rec = NodeRecord {
            network: net.name.clone(),
            hostname: hostname.clone(),
            image: image.into(),
            isolation: self.cfg.isolation,
            limits: self.cfg.limits,
            host_number,
            ip,
            uid_range: uids.map(|u| u.index),
            uid_base: uids.map(|u| u.base),
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
        // Mounted before the launcher unshares its mount namespace, which copies the host's
        // mounts of that moment: a disk mounted later would not be in the node.
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
                extra_ca: self.registries.as_ref().and_then(|r| r.ca(net.egress)),
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
                rec.init_start_time = ProcessId::of(pid).map(|p| p.start_time);
                state::save(&self.node_dir(rec).record(), &*rec)?;
            } else {
                return Err(InitError::Handshake(format!("unexpected {line:?}")).into());
            }
        }
        Ok(())
    }

    /// Polls the node's engine until `GET /_ping` answers.
    async fn wait_engine(&self, rec: &NodeRecord, nd: &NodeDir) -> Result<(), Error> {
        let init = rec.init().ok_or(InitError::Handshake(
            "the node's init exited before its start time was read".into(),
        ))?;
        let engine = Engine::new(init);
        let started = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            let last = match tokio::time::timeout(PING_TIMEOUT, engine.ping()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => EngineError::Timeout {
                    what: "GET /_ping",
                    limit: PING_TIMEOUT,
                },
            };
            if !init.alive() || started.elapsed() > ENGINE_TIMEOUT {
                return Err(Error::EngineNotReady {
                    hostname: rec.hostname.clone(),
                    waited: started.elapsed(),
                    last,
                    log_tail: process::tail(&nd.dockerd_log(), 20),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(20));
        }
    }

    /// How a node's dockerd starts: overlay2 storage, and what the registries ask for.
    fn dockerd_args(&self, gateway: Ipv4Addr) -> Vec<String> {
        let mut args = vec!["--storage-driver=overlay2".to_string()];
        if let Some(r) = &self.registries {
            args.extend(r.dockerd_args(gateway));
        }
        args
    }
}
