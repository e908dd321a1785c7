//! Session networks: a bridge per network on a subnet of the pool, its firewall chains, and
//! the services the runtime runs on its gateway (the session's DNS server and the registries'
//! relay). Creating one reserves its name under the runtime's lock; then, under the host-wide
//! network lock (`network/host.rs`), it reads the host's routes and addresses, reserves the
//! first index whose subnet overlaps none of them, and makes the bridge; the rest is built
//! without either lock. Destroying one destroys its nodes first.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::SocketAddrV4;

use super::{
    check_name, network_info, with_cleanup, Error, Inner, NetServices, NetworkInfo, Runtime,
};
use crate::network::host::{self, HostLock};
use crate::network::{self, dns, firewall, link, HostNet, NetworkError, Subnet};
use crate::registry::RegistryError;
use crate::state::{self, NetworkRecord, NodeRecord, NodeStatus};

/// Networks one runtime makes at most: their index is in link names (see `network/mod.rs`).
const MAX_NETWORKS: u32 = 0x1000;

impl Runtime {
    pub(super) fn firewall_spec(&self, net: &NetworkRecord) -> firewall::FirewallSpec {
        firewall::FirewallSpec {
            prefix: self.cfg.prefix.clone(),
            net_index: net.index,
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            host_ports: self
                .registries
                .as_ref()
                .map(|r| r.ports(net.egress))
                .unwrap_or_default(),
            egress: net.egress,
            uplink: if net.egress {
                let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
                network::default_route_interface(&routes).unwrap_or_default()
            } else {
                String::new()
            },
        }
    }

    /// Creates a session network: a bridge with the first address of a free subnet, and the
    /// firewall rules that let its nodes talk to each other and to nothing else.
    pub async fn create_network(&self, name: &str) -> Result<NetworkInfo, Error> {
        check_name("network name", name)?;
        {
            let mut inner = self.lock();
            if inner.networks.contains_key(name) || inner.pending_networks.contains(name) {
                return Err(Error::NetworkExists(name.into()));
            }
            inner.pending_networks.insert(name.into());
        }
        let mut reserved = None;
        let res = self.make_network(name, &mut reserved).await;
        let mut inner = self.lock();
        inner.pending_networks.remove(name);
        if let Some(index) = reserved {
            inner.pending_indexes.remove(&index);
        }
        let net = res?;
        inner.networks.insert(name.into(), net.clone());
        Ok(network_info(&net))
    }

    /// Picks the network's subnet and builds it; `reserved` gets the index it reserved.
    async fn make_network(
        &self,
        name: &str,
        reserved: &mut Option<u32>,
    ) -> Result<NetworkRecord, Error> {
        // Host-wide, so that no instance picks between our read of the host and our bridge.
        let host_lock = HostLock::take(&self.cfg.network_lock).await?;
        let on_host = host::used_subnets().await?;
        let net = {
            let mut inner = self.lock();
            let (index, subnet) = self.pick(&inner, &on_host)?;
            inner.pending_indexes.insert(index);
            *reserved = Some(index);
            NetworkRecord {
                name: name.into(),
                index,
                subnet,
                bridge: network::bridge_name(&self.cfg.prefix, index),
                egress: self.cfg.egress,
            }
        };
        self.build_network(&net, host_lock).await?;
        if let Err(e) = self.start_services(&net).await {
            return Err(with_cleanup(e, self.unbuild_network(&net).await));
        }
        Ok(net)
    }

    /// The first index and subnet of the pool that neither this runtime nor the host uses.
    fn pick(&self, inner: &Inner, on_host: &[HostNet]) -> Result<(u32, Subnet), Error> {
        let used: BTreeSet<u32> = inner
            .networks
            .values()
            .map(|n| n.index)
            .chain(inner.pending_indexes.iter().copied())
            .collect();
        network::pick(
            self.cfg.subnet_pool,
            self.cfg.network_prefix_len,
            MAX_NETWORKS,
            &used,
            on_host,
        )
        .map_err(Error::SubnetPoolExhausted)
    }

    /// The subnet the next network would get now, or why there is none: for a check at start.
    pub async fn next_subnet(&self) -> Result<Subnet, Error> {
        let on_host = host::used_subnets().await?;
        self.pick(&self.lock(), &on_host).map(|(_, subnet)| subnet)
    }

    /// Records the network and makes its bridge (then lets other instances pick: the bridge is
    /// in the host's routes now) and its firewall.
    async fn build_network(&self, net: &NetworkRecord, host_lock: HostLock) -> Result<(), Error> {
        let spec = self.firewall_spec(net);
        let res: Result<(), Error> = async {
            state::save(&self.network_path(&net.name), net)?;
            link::create_bridge(&net.bridge, net.subnet).await?;
            drop(host_lock);
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
    pub(super) async fn unbuild_network(&self, net: &NetworkRecord) -> Vec<String> {
        let mut failures = Vec::new();
        drop(self.lock().services.remove(&net.name));
        if let Some(r) = &self.registries {
            if let Err(e) = r.detach(&net.name) {
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

    /// Starts the network's DNS server (see `network/dns.rs`) and the registries' service on
    /// its gateway.
    pub(super) async fn start_services(&self, net: &NetworkRecord) -> Result<(), Error> {
        let upstream = if net.egress {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            network::host_nameservers(&host)
        } else {
            Vec::new()
        };
        let dns_table = dns::Table::default();
        let dns = dns::serve(net.subnet, dns_table.clone(), upstream)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AddrInUse => Error::AddressInUse {
                    service: "the session DNS server",
                    addr: SocketAddrV4::new(net.subnet.gateway(), 53),
                },
                _ => Error::Network(NetworkError::Dns {
                    gateway: net.subnet.gateway(),
                    source: e,
                }),
            })?;
        let registries = match &self.registries {
            Some(r) => match r.attach(net.subnet, &net.name, net.egress).await {
                Ok(attached) => Some(attached),
                Err(e) => {
                    dns.abort();
                    return Err(match e {
                        RegistryError::Relay { addr, source }
                            if source.kind() == ErrorKind::AddrInUse =>
                        {
                            Error::AddressInUse {
                                service: "the registry relay",
                                addr,
                            }
                        }
                        e => e.into(),
                    });
                }
            },
            None => None,
        };
        let services = NetServices {
            dns_table,
            dns,
            _registries: registries,
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
}
