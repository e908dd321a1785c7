//! Links on the host: the session bridge and each node's veth pair.
//!
//! Kernel background. Links are made with iproute2's `ip` (netlink underneath). A veth pair is
//! created with its peer directly in the node's network namespace (`peer name eth0 netns
//! PID`), so the node's end never appears on the host and no rename is needed inside. Host root
//! may create links in and enter a network namespace owned by a node's user namespace, since
//! it holds CAP_NET_ADMIN over every user namespace below the initial one. Deleting either end
//! of a veth deletes both, and the node's end goes away with its namespace.
//!
//! The host ends and the bridge get IPv6 disabled before they come up: otherwise the kernel
//! gives them link-local addresses, and nodes would have an IPv6 path to host services that
//! the IPv4 firewall does not cover.

use std::io::ErrorKind;
use std::net::Ipv4Addr;

use super::{check_link_name, run, NetworkError, Subnet};

/// A fixed, locally administered MAC for a bridge, derived from its gateway address. A bridge
/// without one takes the lowest MAC of its ports and changes it as nodes come and go, which
/// leaves other nodes' ARP entries for the gateway stale for seconds.
fn bridge_mac(gateway: Ipv4Addr) -> String {
    mac_of(gateway)
}

/// A node's `eth0` MAC, derived from its address like the bridge's. A node made again in a
/// freed slot (same address) then has the same MAC too; a random one would leave the other
/// nodes' and the host's ARP entries pointing at the old node for up to a minute.
fn node_mac(ip: Ipv4Addr) -> String {
    mac_of(ip)
}

fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:5a:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Sets `/proc/sys/net/ipv6/conf/NAME/disable_ipv6`. A kernel without IPv6 has no such file,
/// which is just as good.
async fn disable_ipv6(name: &str) -> Result<(), NetworkError> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match tokio::fs::write(&path, "1").await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound && !ipv6_in_kernel().await => Ok(()),
        Err(source) => Err(NetworkError::DisableIpv6 {
            name: name.into(),
            source,
        }),
    }
}

async fn ipv6_in_kernel() -> bool {
    tokio::fs::try_exists("/proc/sys/net/ipv6")
        .await
        .unwrap_or(true)
}

/// Creates bridge `name` with the gateway address of `subnet` and brings it up. If a step
/// fails, the bridge is deleted again.
pub async fn create_bridge(name: &str, subnet: Subnet) -> Result<(), NetworkError> {
    check_link_name(name)?;
    let gateway = subnet.gateway();
    let mac = bridge_mac(gateway);
    run(
        "ip",
        &["link", "add", name, "address", &mac, "type", "bridge"],
        None,
    )
    .await
    .map_err(|cause| NetworkError::CreateBridge {
        name: name.into(),
        cause,
    })?;
    if let Err(e) = configure_bridge(name, subnet).await {
        return Err(e.with_cleanup(delete_link(name).await));
    }
    Ok(())
}

async fn configure_bridge(name: &str, subnet: Subnet) -> Result<(), NetworkError> {
    // Before `up`: addrconf assigns the link-local address when the link comes up.
    disable_ipv6(name).await?;
    let address = format!("{}/{}", subnet.gateway(), subnet.prefix_len());
    let batch = format!("addr add {address} broadcast + dev {name}\nlink set {name} up\n");
    run("ip", &["-batch", "-"], Some(&batch))
        .await
        .map(drop)
        .map_err(|cause| NetworkError::CreateBridge {
            name: name.into(),
            cause,
        })
}

/// Deletes link `name` (for a veth, both ends). A link that does not exist is fine.
pub async fn delete_link(name: &str) -> Result<(), NetworkError> {
    check_link_name(name)?;
    match run("ip", &["link", "del", "dev", name], None).await {
        Ok(_) => Ok(()),
        Err(_) if !link_exists(name).await => Ok(()),
        Err(cause) => Err(NetworkError::DeleteLink {
            name: name.into(),
            cause,
        }),
    }
}

/// Whether link `name` exists in the host's network namespace.
pub async fn link_exists(name: &str) -> bool {
    check_link_name(name).is_ok()
        && run("ip", &["link", "show", "dev", name], None)
            .await
            .is_ok()
}

/// Plugs the node whose network namespace is that of `ns_pid` into `bridge`: a veth pair with
/// `host_name` on the bridge and `eth0` inside, addressed `ip` in `subnet`, with a default
/// route through the gateway if `default_route`. If a step fails, the pair is deleted again.
pub async fn add_node_link(
    host_name: &str,
    bridge: &str,
    ns_pid: i32,
    ip: Ipv4Addr,
    subnet: Subnet,
    default_route: bool,
) -> Result<(), NetworkError> {
    check_link_name(host_name)?;
    check_link_name(bridge)?;
    if !subnet.contains(ip) || ip == subnet.gateway() || ip == subnet.network() {
        return Err(NetworkError::ConfigureNode {
            pid: ns_pid,
            cause: format!("{ip} is not a node address of {subnet}"),
        });
    }
    let pid = ns_pid.to_string();
    let mac = node_mac(ip);
    run(
        "ip",
        &[
            "link", "add", host_name, "type", "veth", "peer", "name", "eth0", "address", &mac,
            "netns", &pid,
        ],
        None,
    )
    .await
    .map_err(|cause| NetworkError::CreateVeth {
        name: host_name.into(),
        pid: ns_pid,
        cause,
    })?;
    if let Err(e) = configure_node_link(host_name, bridge, ns_pid, ip, subnet, default_route).await
    {
        return Err(e.with_cleanup(delete_link(host_name).await));
    }
    Ok(())
}

async fn configure_node_link(
    host_name: &str,
    bridge: &str,
    ns_pid: i32,
    ip: Ipv4Addr,
    subnet: Subnet,
    default_route: bool,
) -> Result<(), NetworkError> {
    // Before `up`, as for the bridge.
    disable_ipv6(host_name).await?;
    run(
        "ip",
        &["link", "set", host_name, "master", bridge, "up"],
        None,
    )
    .await
    .map_err(|cause| NetworkError::AttachVeth {
        name: host_name.into(),
        bridge: bridge.into(),
        cause,
    })?;
    // One exec for the whole inside: nsenter joins only the network namespace, so the host's
    // `ip` binary runs against the node's links.
    let mut batch = format!(
        "addr add {ip}/{len} dev eth0\nlink set eth0 up\nlink set lo up\n",
        len = subnet.prefix_len()
    );
    if default_route {
        batch += &format!("route add default via {}\n", subnet.gateway());
    }
    let netns = format!("--net=/proc/{ns_pid}/ns/net");
    run("nsenter", &[&netns, "ip", "-batch", "-"], Some(&batch))
        .await
        .map(drop)
        .map_err(|cause| NetworkError::ConfigureNode { pid: ns_pid, cause })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_macs_are_local_unicast_and_follow_the_gateway() {
        assert_eq!(
            bridge_mac(Ipv4Addr::new(10, 251, 7, 1)),
            "02:5a:0a:fb:07:01"
        );
        let first = u8::from_str_radix(&bridge_mac(Ipv4Addr::new(10, 201, 0, 1))[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "locally administered, not multicast");
    }

    mod on_the_host {
        //! Real links, namespaces and rules; needs root. `ping` is not installed everywhere, so
        //! reachability is checked with sockets made inside the nodes' namespaces.

        use std::io::{ErrorKind, Read, Write};
        use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
        use std::process::{Child, Command, Stdio};
        use std::time::{Duration, Instant};

        use nix::sched::{setns, CloneFlags};

        use super::super::super::firewall::{self, FirewallSpec};
        use super::super::super::{bridge_name, veth_name};
        use super::super::*;

        const PREFIX: &str = "ntst";
        const NET_INDEX: u32 = 1;
        const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 251, 7, 1);
        const NODE1: Ipv4Addr = Ipv4Addr::new(10, 251, 7, 2);
        const NODE2: Ipv4Addr = Ipv4Addr::new(10, 251, 7, 3);
        const ALLOWED_PORT: u16 = 18411;
        const CLOSED_PORT: u16 = 18412;
        const TIMEOUT: Duration = Duration::from_secs(3);

        fn spec() -> FirewallSpec {
            FirewallSpec {
                prefix: PREFIX.into(),
                net_index: NET_INDEX,
                bridge: bridge_name(PREFIX, NET_INDEX),
                subnet: Subnet::new(GATEWAY, 24),
                host_ports: vec![ALLOWED_PORT],
                egress: false,
                uplink: String::new(),
            }
        }

        fn veths() -> [String; 3] {
            [2, 3, 9].map(|host| veth_name(PREFIX, NET_INDEX, host))
        }

        /// Runs `f` on a thread of its own that joined the network namespace of `pid`: setns
        /// changes only the calling thread, and a pooled thread would keep the namespace.
        /// Sockets stay in the namespace they were made in, so they may be returned.
        fn in_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
            std::thread::spawn(move || {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("open netns");
                setns(ns, CloneFlags::CLONE_NEWNET).expect("join netns");
                f()
            })
            .join()
            .expect("netns thread panicked")
        }

        /// A process in a network namespace of its own, killed by its pid in teardown.
        fn spawn_netns() -> Child {
            let child = Command::new("unshare")
                .args(["--net", "sleep", "30"])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn unshare --net sleep 30");
            let own = std::fs::read_link("/proc/self/ns/net").unwrap();
            let deadline = Instant::now() + TIMEOUT;
            while std::fs::read_link(format!("/proc/{}/ns/net", child.id()))
                .ok()
                .as_ref()
                == Some(&own)
            {
                assert!(
                    Instant::now() < deadline,
                    "unshare did not enter a new netns"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            child
        }

        fn connect(pid: u32, to: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
            in_netns(pid, move || {
                TcpStream::connect_timeout(&SocketAddr::from((to, port)), TIMEOUT)
            })
        }

        /// A byte each way over an accepted connection.
        fn exchange(listener: &TcpListener, mut client: TcpStream, expect_peer: Ipv4Addr) {
            let (mut server, peer) = listener.accept().expect("accept");
            assert_eq!(peer.ip(), expect_peer);
            server.set_read_timeout(Some(TIMEOUT)).unwrap();
            client.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut byte = [0u8];
            client.write_all(b"q").unwrap();
            server.read_exact(&mut byte).unwrap();
            server.write_all(b"a").unwrap();
            client.read_exact(&mut byte).unwrap();
            assert_eq!(&byte, b"a");
        }

        async fn teardown(children: &mut [Child]) {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            firewall::remove(&spec()).await.expect("remove firewall");
            for veth in veths() {
                delete_link(&veth).await.expect("delete veth");
            }
            delete_link(&spec().bridge).await.expect("delete bridge");
        }

        async fn scenario(pid1: u32, pid2: u32) {
            let spec = spec();
            let subnet = spec.subnet;
            let [veth1, veth2, veth9] = veths();

            create_bridge(&spec.bridge, subnet)
                .await
                .expect("create bridge");
            assert!(link_exists(&spec.bridge).await);
            let e = create_bridge(&spec.bridge, subnet)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("create bridge ntstb1: `ip link add ntstb1"),
                "{e}"
            );
            assert!(
                link_exists(&spec.bridge).await,
                "a failed create must not delete what it did not make"
            );

            // Fails after the pair exists (no such bridge): the pair must go, freeing eth0.
            let e = add_node_link(&veth9, "ntstb7f", pid1 as i32, NODE1, subnet, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("attach veth ntst1v9 to bridge ntstb7f: "),
                "{e}"
            );
            assert!(!link_exists(&veth9).await);
            let e = add_node_link(&veth9, &spec.bridge, 999_999_999, NODE1, subnet, false)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("create veth ntst1v9 with eth0 in the netns of pid 999999999: "),
                "{e}"
            );

            add_node_link(&veth1, &spec.bridge, pid1 as i32, NODE1, subnet, false)
                .await
                .expect("node1 link");
            add_node_link(&veth2, &spec.bridge, pid2 as i32, NODE2, subnet, false)
                .await
                .expect("node2 link");
            // eth0 is taken in node2 now.
            assert!(
                add_node_link(&veth9, &spec.bridge, pid2 as i32, NODE2, subnet, false)
                    .await
                    .is_err()
            );
            assert!(!link_exists(&veth9).await);

            firewall::install(&spec).await.expect("install firewall");
            let rules = firewall::leftover_rules(PREFIX).await;
            firewall::install(&spec)
                .await
                .expect("install firewall again");
            assert_eq!(
                firewall::leftover_rules(PREFIX).await,
                rules,
                "a second install must replace, not add"
            );

            // Node to node across the bridge (through FORWARD when br_netfilter is on).
            let listener =
                in_netns(pid2, || TcpListener::bind((NODE2, 7000))).expect("listen in node2");
            let client = connect(pid1, NODE2, 7000).expect("node1 reaches node2");
            exchange(&listener, client, NODE1);

            // Node to host: the allowed port works, a port with a listener but not allowed
            // and a port without one are refused at once (tcp-reset), not left to time out.
            let allowed = TcpListener::bind((GATEWAY, ALLOWED_PORT)).expect("listen on gateway");
            let _closed = TcpListener::bind((GATEWAY, CLOSED_PORT)).expect("listen on gateway");
            let client =
                connect(pid1, GATEWAY, ALLOWED_PORT).expect("node1 reaches an allowed host port");
            exchange(&allowed, client, NODE1);
            for port in [CLOSED_PORT, 9] {
                let e =
                    connect(pid1, GATEWAY, port).expect_err("host port must be closed to nodes");
                assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "port {port}: {e}");
            }

            // DNS to the gateway (resolv.conf without egress) fails at once too.
            let e = in_netns(pid1, || {
                let udp = UdpSocket::bind((NODE1, 0))?;
                udp.connect((GATEWAY, 53))?;
                udp.set_read_timeout(Some(TIMEOUT))?;
                udp.send(b"query")?;
                udp.recv(&mut [0u8; 16])
            })
            .expect_err("udp to the gateway must be rejected");
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        }

        #[tokio::test]
        #[ignore = "needs root: creates a bridge, veths, network namespaces and iptables rules"]
        async fn two_nodes_on_a_session_bridge() {
            // Leftovers of an earlier run that was killed would make every step fail.
            teardown(&mut []).await;
            let mut children = vec![spawn_netns(), spawn_netns()];
            let (pid1, pid2) = (children[0].id(), children[1].id());
            // A panic in the scenario comes back as an error here, so teardown always runs.
            let outcome = tokio::spawn(scenario(pid1, pid2)).await;
            teardown(&mut children).await;
            firewall::remove(&spec())
                .await
                .expect("remove is idempotent");
            if let Err(panic) = outcome {
                std::panic::resume_unwind(panic.into_panic());
            }
            assert_eq!(firewall::leftover_rules(PREFIX).await, Vec::<String>::new());
            for link in veths().iter().chain([&spec().bridge]) {
                assert!(!link_exists(link).await, "{link} left behind");
            }
        }
    }
}
