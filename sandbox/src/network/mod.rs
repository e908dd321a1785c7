//! Session networks: one Linux bridge per session, one veth per node, an address from the
//! session's subnet, `/etc/hosts` and `/etc/resolv.conf` for the nodes, and the host firewall
//! that keeps sessions apart.
//!
//! Kernel background. A bridge is a software switch in the host's network namespace; its own
//! address (host 1 of the subnet) is the nodes' gateway and the only host address they see.
//! A veth pair is a virtual cable: one end (named after the node, see [`veth_name`]) is
//! plugged into the bridge, the other is created directly inside the node's network namespace
//! as `eth0`. Nodes of one session share the bridge and reach each other at layer 2; there is
//! no route between bridges unless the host forwards, and the firewall drops that anyway.
//!
//! Two host settings matter (see `sandbox-probe.md`, "Host-side gotchas"):
//! - with `br_netfilter` loaded and `net.bridge.bridge-nf-call-iptables=1`, frames bridged
//!   between two ports of one bridge go through iptables' FORWARD chain as `-i br -o br`. A
//!   host with a FORWARD policy of DROP (any host that ran dockerd) then silently drops all
//!   traffic between nodes, so our chains accept it first (`firewall`);
//! - `net.ipv4.ip_forward` is only needed for egress, and only `firewall::install` with egress
//!   on sets it.
//!
//! Host objects are named from the runtime's prefix (`[a-z][a-z0-9]{0,7}`) and the network's
//! index in the pool, so that several instances and parallel tests can share a machine and a
//! restarted server finds its objects again. Interface names are limited by IFNAMSIZ (16 bytes
//! with the NUL), so they use hex numbers and stay within 15 characters.

use std::net::Ipv4Addr;

pub(crate) mod dns;
pub(crate) mod firewall;
pub(crate) mod host;
pub(crate) mod link;
mod pool;

pub(crate) use pool::pick;
pub use pool::{HostNet, PoolFull, Subnet, SubnetError};

/// Longest interface name the kernel accepts (IFNAMSIZ minus the NUL).
pub(crate) const MAX_IFNAME_LEN: usize = 15;

/// Errors of the network layer. Failed commands carry the command line and its stderr.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("start the DNS server on {gateway}:53: {source}")]
    Dns {
        gateway: Ipv4Addr,
        source: std::io::Error,
    },
    #[error(transparent)]
    InvalidSubnet(#[from] SubnetError),
    #[error("read the host's {what}: {cause}")]
    ReadHost { what: &'static str, cause: String },
    #[error("take the host-wide network lock {}: {cause}", .path.display())]
    HostLock {
        path: std::path::PathBuf,
        cause: String,
    },
    #[error(
        "interface name {name:?} is not valid: it must be 1 to {MAX_IFNAME_LEN} characters \
         a-z0-9 (use a shorter prefix or a smaller subnet pool)"
    )]
    InvalidLinkName { name: String },
    #[error("create bridge {name}: {cause}")]
    CreateBridge { name: String, cause: String },
    #[error("disable ipv6 on {name}: {source}")]
    DisableIpv6 {
        name: String,
        source: std::io::Error,
    },
    #[error("delete link {name}: {cause}")]
    DeleteLink { name: String, cause: String },
    #[error("create veth {name} with eth0 in the netns of pid {pid}: {cause}")]
    CreateVeth {
        name: String,
        pid: i32,
        cause: String,
    },
    #[error("attach veth {name} to bridge {bridge}: {cause}")]
    AttachVeth {
        name: String,
        bridge: String,
        cause: String,
    },
    #[error("configure eth0 in the netns of pid {pid}: {cause}")]
    ConfigureNode { pid: i32, cause: String },
    #[error("read firewall rules: {cause}")]
    ListRules { cause: String },
    #[error("install firewall for bridge {bridge}: {cause}")]
    InstallFirewall { bridge: String, cause: String },
    #[error("remove firewall for bridge {bridge}: {cause}")]
    RemoveFirewall { bridge: String, cause: String },
    #[error("enable net.ipv4.ip_forward for egress: {source}")]
    EnableForwarding { source: std::io::Error },
    /// A step failed and undoing the steps before it failed too; both are reported.
    #[error("{error} (cleanup failed too: {cleanup})")]
    Cleanup {
        error: Box<NetworkError>,
        cleanup: Box<NetworkError>,
    },
}

impl NetworkError {
    /// Adds the failure of the cleanup that followed `self`, if there was one.
    pub(crate) fn with_cleanup(self, cleanup: Result<(), NetworkError>) -> NetworkError {
        match cleanup {
            Ok(()) => self,
            Err(cleanup) => NetworkError::Cleanup {
                error: Box::new(self),
                cleanup: Box::new(cleanup),
            },
        }
    }
}

/// The session bridge of network `net_index`: `{prefix}b{net_index:x}`.
pub fn bridge_name(prefix: &str, net_index: u32) -> String {
    format!("{prefix}b{net_index:x}")
}

/// The host end of a node's veth: `{prefix}{net_index:x}v{host:x}`, `host` being the node's
/// host number in its subnet. The `v` keeps it apart from every bridge name (`b` + hex).
pub fn veth_name(prefix: &str, net_index: u32, host_octet: u32) -> String {
    format!("{prefix}{net_index:x}v{host_octet:x}")
}

/// Whether a link is named like one of `prefix`'s: a bridge or the host end of a veth.
pub fn is_link_of(prefix: &str, name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    match rest.strip_prefix('b') {
        Some(index) if hex(index) => true,
        _ => rest
            .split_once('v')
            .is_some_and(|(net, host)| hex(net) && hex(host)),
    }
}

/// The iptables chain of network `net_index` for `kind` ('F' forward, 'I' input, 'N' nat):
/// `{PREFIX}-{net_index:X}-{kind}`. Upper case tells our chains apart from interface names in
/// `iptables -S`, and the index is hex like the bridge's.
pub fn chain_name(prefix: &str, net_index: u32, kind: char) -> String {
    format!("{}-{net_index:X}-{kind}", prefix.to_ascii_uppercase())
}

/// Refuses names the kernel would reject (too long) and names that could escape a sysfs or
/// procfs path.
pub(crate) fn check_link_name(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidLinkName { name: name.into() })
    }
}

/// Checks that every bridge and veth name of a pool fits IFNAMSIZ: the names grow with the
/// number of networks in the pool and of hosts per network (with an 8-character prefix, a pool
/// of /11 or smaller always fits). For `RuntimeConfig::validate`.
pub fn check_link_names(prefix: &str, pool: Subnet, network_len: u8) -> Result<(), NetworkError> {
    let networks = pool.subnet_count(network_len);
    let Some(last) = networks.checked_sub(1) else {
        return Err(SubnetError {
            input: pool.to_string(),
            reason: format!("it holds no /{network_len} network"),
        }
        .into());
    };
    let hosts = pool.nth_subnet(network_len, 0).map_or(0, |s| s.max_hosts());
    check_link_name(&bridge_name(prefix, last))?;
    check_link_name(&veth_name(prefix, last, hosts))
}

/// Runs `program` to completion, feeding it `stdin` if given. Returns its stdout, or a cause
/// naming the command line with its stderr, for the caller's error variant.
pub(crate) async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;

    let cmdline = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A cancelled caller must not leave a half-done `ip` or `iptables-restore` behind.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("`{cmdline}`: {e}"))?;
    // Written alongside the wait so that a child that answers before reading cannot block us;
    // the pipe is dropped after the write, which is the child's end of input.
    let pipe = child.stdin.take();
    let feed = async move {
        match (pipe, stdin) {
            (Some(mut pipe), Some(input)) => pipe.write_all(input.as_bytes()).await,
            _ => Ok(()),
        }
    };
    let (fed, output) = tokio::join!(feed, child.wait_with_output());
    let output = output.map_err(|e| format!("`{cmdline}`: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        tracing::debug!(%cmdline, input = stdin.unwrap_or(""), %stderr, "command failed");
        return Err(if stderr.is_empty() {
            format!("`{cmdline}` failed ({})", output.status)
        } else {
            format!("`{cmdline}` failed ({}): {stderr}", output.status)
        });
    }
    // A successful exit that did not read all of its input did not do all it was asked.
    fed.map_err(|e| format!("`{cmdline}`: write its input: {e}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `/etc/hosts` for the nodes of a session: loopback names, then one line per node.
pub fn render_hosts(entries: &[(String, Ipv4Addr)]) -> String {
    let mut out = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
    for (name, ip) in entries {
        out.push_str(&format!("{ip} {name}\n"));
    }
    out
}

/// `/etc/resolv.conf` for the nodes: the session's DNS server on the gateway (`dns.rs`), which
/// knows the node names and relays the rest upstream only when egress is on.
pub fn render_resolv_conf(gateway: Ipv4Addr) -> String {
    format!("nameserver {gateway}\noptions timeout:1 attempts:2\n")
}

/// The interface of the host's IPv4 default route (from `/proc/net/route`), if any: where
/// egress traffic leaves.
pub fn default_route_interface(proc_net_route: &str) -> Option<String> {
    proc_net_route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f[0].to_string())
    })
}

/// The IPv4 nameservers of a host `resolv.conf` that a node could use. Loopback ones
/// (systemd-resolved's 127.0.0.53, a local dnsmasq) and 0.0.0.0 mean "this host", which a node
/// cannot reach; IPv6 ones are skipped because nodes get no IPv6 route.
pub fn host_nameservers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<Ipv4Addr>().ok()
        })
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_of_a_prefix() {
        for ours in [
            bridge_name("tst", 0x1a),
            veth_name("tst", 0x1a, 2),
            "tstb0".to_string(),
        ] {
            assert!(is_link_of("tst", &ours), "{ours}");
        }
        for other in [
            "tst", "tstb", "tstbX", "tst1a", "tst1av", "eth0", "docker0", "otherb1",
        ] {
            assert!(!is_link_of("tst", other), "{other}");
        }
    }

    use super::*;

    #[test]
    fn names_follow_the_scheme() {
        assert_eq!(bridge_name("sandpit", 3), "sandpitb3");
        assert_eq!(bridge_name("ntst", 0x1f), "ntstb1f");
        assert_eq!(veth_name("sandpit", 3, 2), "sandpit3v2");
        assert_eq!(veth_name("ntst", 0x1f, 0xfe), "ntst1fvfe");
        assert_eq!(chain_name("sandpit", 3, 'F'), "SANDPIT-3-F");
        assert_eq!(chain_name("ntst", 0x1f, 'N'), "NTST-1F-N");
    }

    #[test]
    fn names_fit_ifnamsiz_with_the_longest_prefix() {
        let prefix = "abcdefgh";
        for net in [0, 1, 0xf, 0xff, 0xfff] {
            let b = bridge_name(prefix, net);
            assert!(b.len() <= MAX_IFNAME_LEN, "{b}");
            check_link_name(&b).unwrap();
            for host in [1, 2, 0xf, 0xfe] {
                let v = veth_name(prefix, net, host);
                assert!(v.len() <= MAX_IFNAME_LEN, "{v}");
                check_link_name(&v).unwrap();
            }
            // iptables chain names may have 28 characters.
            assert!(chain_name(prefix, net, 'F').len() <= 28);
        }
        assert_eq!(veth_name(prefix, 0xfff, 0xfe), "abcdefghfffvfe");
    }

    #[test]
    fn bridge_and_veth_names_never_collide() {
        let mut seen = std::collections::HashSet::new();
        for net in 0..0x120 {
            assert!(seen.insert(bridge_name("ab", net)));
            for host in 1..0x30 {
                assert!(seen.insert(veth_name("ab", net, host)));
            }
        }
    }

    #[test]
    fn link_names_are_checked() {
        for bad in [
            "",
            "sandpitb3/../x",
            "Eth0",
            "abcdefghijklmnop",
            "a b",
            "a-b",
        ] {
            assert!(check_link_name(bad).is_err(), "{bad:?} accepted");
        }
        check_link_name("abcdefghijklmno").unwrap();
        let e = check_link_name("abcdefghijklmnop").unwrap_err().to_string();
        assert!(
            e.contains("\"abcdefghijklmnop\"") && e.contains("15"),
            "{e}"
        );
    }

    #[test]
    fn pools_are_checked_for_name_length() {
        let pool = |s: &str| s.parse::<Subnet>().unwrap();
        check_link_names("abcdefgh", pool("10.201.0.0/16"), 24).unwrap();
        check_link_names("abcdefgh", pool("10.201.0.0/16"), 29).unwrap();
        check_link_names("abcdefgh", pool("10.192.0.0/11"), 29).unwrap();
        // 2^21 networks of /29: "abcdefgh1fffffv6" has 16 characters.
        assert!(check_link_names("abcdefgh", pool("10.0.0.0/8"), 29).is_err());
        check_link_names("abc", pool("10.0.0.0/8"), 29).unwrap();
        let e = check_link_names("abc", pool("10.201.0.0/16"), 8).unwrap_err();
        assert!(e.to_string().contains("holds no /8 network"), "{e}");
    }

    #[test]
    fn hosts_file() {
        assert_eq!(
            render_hosts(&[]),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
        );
        let entries = [
            ("node1".to_string(), Ipv4Addr::new(10, 201, 0, 2)),
            ("node2".to_string(), Ipv4Addr::new(10, 201, 0, 3)),
        ];
        assert_eq!(
            render_hosts(&entries),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n\
             10.201.0.2 node1\n10.201.0.3 node2\n"
        );
    }

    #[test]
    fn resolv_conf() {
        let gw = Ipv4Addr::new(10, 201, 3, 1);
        assert_eq!(
            render_resolv_conf(gw),
            "nameserver 10.201.3.1\noptions timeout:1 attempts:2\n"
        );
    }

    #[test]
    fn default_route_interface_is_found() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     br0\t0000C90A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface("Iface\n"), None);
    }

    #[test]
    fn host_nameservers_skip_what_nodes_cannot_reach() {
        let conf = "# generated\n\
                    search example.org\n\
                    nameserver 127.0.0.53\n\
                    nameserver\t192.0.2.1  # office\n\
                    ;nameserver 192.0.2.9\n\
                    nameserver ::1\n\
                    nameserver 2001:db8::1\n\
                      nameserver 198.51.100.7\n\
                    nameserver 0.0.0.0\n\
                    nameserver not-an-ip\n\
                    nameservers 192.0.2.8\n\
                    options edns0\n";
        assert_eq!(
            host_nameservers(conf),
            [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7)]
        );
        assert!(host_nameservers("").is_empty());
        assert!(host_nameservers("nameserver 127.0.0.1\n").is_empty());
    }
}
