//! IPv4 subnet arithmetic for the address pool.
//!
//! The runtime owns one pool (e.g. `10.201.0.0/16`) and cuts it into equal network subnets
//! (e.g. `/24`), one per session; network `i` is `pool.nth_subnet(len, i)`. Inside a network
//! subnet, host number 1 is the bridge (the nodes' gateway), nodes take 2, 3, ... and the last
//! address stays the broadcast address.
//!
//! A network's subnet must not overlap anything the host already routes or has an address in
//! (another instance's bridges, a VPN, a Docker bridge): the host would send the gateway's
//! replies elsewhere. [`pick`] chooses the first free index given what the host has
//! (`host.rs` reads it). Everything here is pure so it can be unit tested.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network: an address with its host bits cleared and a prefix length.
///
/// Serialised as the string `"10.201.3.0/24"`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Subnet {
    network: u32,
    len: u8,
}

/// The netmask of a prefix length as a number (`/0` has none, so no shift by 32).
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl Subnet {
    /// The subnet of `addr` with `prefix_len` bits; host bits of `addr` are cleared.
    ///
    /// # Panics
    /// If `prefix_len` is above 32: that is a programming error, text input goes through
    /// [`FromStr`], which reports it.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Subnet {
        assert!(prefix_len <= 32, "prefix length /{prefix_len} is above /32");
        Subnet {
            network: u32::from(addr) & mask(prefix_len),
            len: prefix_len,
        }
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == self.network
    }

    /// Addresses in the subnet, broadcast included (u64: a `/0` has 2^32).
    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// How many `/len` subnets fit in this one: 0 if `len` is shorter than ours or above 32,
    /// and saturated at `u32::MAX` for the one case that does not fit (`/32`s in a `/0`).
    pub fn subnet_count(&self, len: u8) -> u32 {
        if len < self.len || len > 32 {
            return 0;
        }
        u32::try_from(1u64 << (len - self.len)).unwrap_or(u32::MAX)
    }

    /// The `index`-th `/len` subnet inside this one, counting from 0.
    pub fn nth_subnet(&self, len: u8, index: u32) -> Option<Subnet> {
        if index >= self.subnet_count(len) {
            return None;
        }
        let offset = u64::from(index) << (32 - u32::from(len));
        // Fits: index < count, so the offset stays inside this subnet.
        let network = self.network + offset as u32;
        Some(Subnet { network, len })
    }

    /// Usable host addresses: everything but the network and broadcast addresses. `/31` and
    /// `/32` have none in this scheme (a bridge needs a gateway and at least one node).
    pub fn max_hosts(&self) -> u32 {
        if self.len >= 31 {
            0
        } else {
            (self.size() - 2) as u32
        }
    }

    /// The `n`-th usable host address, `n >= 1`: `host(1)` is the gateway, nodes start at
    /// `host(2)`. `None` for 0 and past the last address before the broadcast.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        if n == 0 || n > self.max_hosts() {
            return None;
        }
        Some(Ipv4Addr::from(self.network + n))
    }

    /// Whether the two subnets share an address (one of them contains the other).
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// The bridge's address, `host(1)`. For `/31` and `/32`, which have no usable host, it is
    /// the address after the network address all the same; the runtime never uses those.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network.wrapping_add(1))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

/// A subnet the host already uses, and where: `"10.201.0.0/24 via sandpitb1"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNet {
    pub subnet: Subnet,
    /// The interface (or route type, for routes without one) that holds it.
    pub holder: String,
}

impl fmt::Display for HostNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.subnet, self.holder)
    }
}

/// Why [`pick`] found no subnet: how the candidates were taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no free /{len} in the pool {pool}: {}{overlapping} overlap routes or addresses on this host{}; {}",
    if *.in_use > 0 { format!("{} used by this instance's networks, ", .in_use) } else { String::new() },
    .example.as_ref().map(|e| format!(" (e.g. {e})")).unwrap_or_default(),
    if *.overlapping > 0 {
        "configure --subnet-pool with a range that nothing else on this host uses"
    } else {
        "destroy a network or configure a larger --subnet-pool"
    }
)]
pub struct PoolFull {
    pub pool: Subnet,
    pub len: u8,
    /// Candidates taken by the runtime's own networks (made or being made).
    pub in_use: u32,
    /// Candidates that overlap something of the host.
    pub overlapping: u32,
    /// The first overlap found.
    pub example: Option<HostNet>,
}

/// The first index `i < limit` of a `/len` subnet of `pool` that is neither in `used` nor
/// overlaps anything in `host`.
pub fn pick(
    pool: Subnet,
    len: u8,
    limit: u32,
    used: &std::collections::BTreeSet<u32>,
    host: &[HostNet],
) -> Result<(u32, Subnet), PoolFull> {
    let mut full = PoolFull {
        pool,
        len,
        in_use: 0,
        overlapping: 0,
        example: None,
    };
    for index in 0..pool.subnet_count(len).min(limit) {
        let Some(subnet) = pool.nth_subnet(len, index) else {
            break;
        };
        if used.contains(&index) {
            full.in_use += 1;
        } else if let Some(taken) = host.iter().find(|h| h.subnet.overlaps(&subnet)) {
            full.overlapping += 1;
            full.example.get_or_insert_with(|| taken.clone());
        } else {
            return Ok((index, subnet));
        }
    }
    Err(full)
}

/// A subnet that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid subnet {input:?}: {reason}")]
pub struct SubnetError {
    pub input: String,
    pub reason: String,
}

impl FromStr for Subnet {
    type Err = SubnetError;

    /// Parses `a.b.c.d/len`. An address with host bits set is refused rather than masked,
    /// because `10.201.3.7/16` is more likely a typo than a wish for `10.201.0.0/16`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| SubnetError {
            input: s.to_string(),
            reason,
        };
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected a.b.c.d/len, e.g. 10.201.0.0/16".into()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid(format!("{addr:?} is not an IPv4 address")))?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
            invalid(format!(
                "prefix length {len:?} is not a number from 0 to 32"
            ))
        })?;
        let subnet = Subnet::new(addr, len);
        if subnet.network() != addr {
            return Err(invalid(format!(
                "host bits are set: did you mean {subnet}?"
            )));
        }
        Ok(subnet)
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Subnet {
    type Error = SubnetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn net(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn new_masks_host_bits() {
        let s = Subnet::new(Ipv4Addr::new(10, 201, 3, 77), 24);
        assert_eq!(s.network(), Ipv4Addr::new(10, 201, 3, 0));
        assert_eq!(s.prefix_len(), 24);
        assert_eq!(s.to_string(), "10.201.3.0/24");
        assert_eq!(
            Subnet::new(Ipv4Addr::new(255, 1, 2, 3), 0).to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            Subnet::new(Ipv4Addr::new(1, 2, 3, 4), 32).to_string(),
            "1.2.3.4/32"
        );
    }

    #[test]
    #[should_panic(expected = "above /32")]
    fn new_refuses_long_prefix() {
        Subnet::new(Ipv4Addr::LOCALHOST, 33);
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in [
            "10.201.0.0/16",
            "10.201.3.0/24",
            "0.0.0.0/0",
            "10.250.7.8/29",
            "1.2.3.4/32",
        ] {
            assert_eq!(net(s).to_string(), s);
        }
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = |s: &str| s.parse::<Subnet>().unwrap_err().to_string();
        assert!(
            err("10.201.0.0").contains("expected a.b.c.d/len"),
            "{}",
            err("10.201.0.0")
        );
        assert!(err("10.201.0/16").contains("not an IPv4 address"));
        assert!(err("10.201.0.0/33").contains("not a number from 0 to 32"));
        assert!(err("10.201.0.0/x").contains("not a number from 0 to 32"));
        assert!(err("10.201.0.0/").contains("not a number from 0 to 32"));
        let e = err("10.201.3.7/16");
        assert!(e.contains("did you mean 10.201.0.0/16?"), "{e}");
        assert!(e.starts_with("invalid subnet \"10.201.3.7/16\""), "{e}");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let s = net("10.201.3.0/24");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"10.201.3.0/24\"");
        assert_eq!(
            serde_json::from_str::<Subnet>("\"10.201.3.0/24\"").unwrap(),
            s
        );
        let e = serde_json::from_str::<Subnet>("\"10.201.3.1/24\"").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    #[test]
    fn contains() {
        let s = net("10.201.3.0/24");
        assert!(s.contains(Ipv4Addr::new(10, 201, 3, 0)));
        assert!(s.contains(Ipv4Addr::new(10, 201, 3, 255)));
        assert!(!s.contains(Ipv4Addr::new(10, 201, 4, 0)));
        assert!(!s.contains(Ipv4Addr::new(10, 201, 2, 255)));
        assert!(net("0.0.0.0/0").contains(Ipv4Addr::BROADCAST));
        assert!(net("1.2.3.4/32").contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!net("1.2.3.4/32").contains(Ipv4Addr::new(1, 2, 3, 5)));
    }

    #[test]
    fn cutting_a_pool_into_networks() {
        let pool = net("10.201.0.0/16");
        assert_eq!(pool.subnet_count(24), 256);
        assert_eq!(pool.subnet_count(16), 1);
        assert_eq!(pool.subnet_count(15), 0);
        assert_eq!(pool.subnet_count(33), 0);
        assert_eq!(pool.subnet_count(29), 8192);
        assert_eq!(pool.nth_subnet(24, 0), Some(net("10.201.0.0/24")));
        assert_eq!(pool.nth_subnet(24, 3), Some(net("10.201.3.0/24")));
        assert_eq!(pool.nth_subnet(24, 255), Some(net("10.201.255.0/24")));
        assert_eq!(pool.nth_subnet(24, 256), None, "the pool is exhausted");
        assert_eq!(pool.nth_subnet(29, 8191), Some(net("10.201.255.248/29")));
        assert_eq!(pool.nth_subnet(29, 8192), None);
        assert_eq!(pool.nth_subnet(16, 0), Some(pool));
        assert_eq!(pool.nth_subnet(8, 0), None);
        // Every subnet lies inside the pool and none overlaps the next.
        for i in 0..pool.subnet_count(24) {
            let s = pool.nth_subnet(24, i).unwrap();
            assert!(pool.contains(s.network()) && pool.contains(s.host(254).unwrap()));
        }
    }

    #[test]
    fn extreme_pools_do_not_overflow() {
        let all = net("0.0.0.0/0");
        assert_eq!(all.subnet_count(0), 1);
        assert_eq!(all.subnet_count(1), 2);
        assert_eq!(all.subnet_count(31), 1 << 31);
        assert_eq!(all.subnet_count(32), u32::MAX, "2^32 saturates");
        assert_eq!(all.nth_subnet(0, 0), Some(all));
        assert_eq!(
            all.nth_subnet(32, u32::MAX - 1),
            Some(net("255.255.255.254/32"))
        );
        assert_eq!(all.max_hosts(), u32::MAX - 1);
        assert_eq!(
            all.host(u32::MAX - 1),
            Some(Ipv4Addr::new(255, 255, 255, 254))
        );
        let top = net("255.255.255.0/24");
        assert_eq!(top.host(254), Some(Ipv4Addr::new(255, 255, 255, 254)));
        assert_eq!(top.host(255), None);
        assert_eq!(top.nth_subnet(25, 1), Some(net("255.255.255.128/25")));
    }

    #[test]
    fn overlaps() {
        let s = net("10.201.3.0/24");
        assert!(s.overlaps(&s));
        assert!(s.overlaps(&net("10.201.3.77/32")));
        assert!(net("10.201.3.77/32").overlaps(&s), "symmetric");
        assert!(s.overlaps(&net("10.201.0.0/16")));
        assert!(net("10.0.0.0/8").overlaps(&s));
        assert!(s.overlaps(&net("10.201.3.128/25")));
        assert!(!s.overlaps(&net("10.201.4.0/24")));
        assert!(!s.overlaps(&net("10.201.2.0/24")));
        assert!(!s.overlaps(&net("10.201.2.255/32")));
        assert!(!s.overlaps(&net("10.201.4.0/32")));
        assert!(net("0.0.0.0/0").overlaps(&s));
    }

    fn held(subnet: &str, holder: &str) -> HostNet {
        HostNet {
            subnet: net(subnet),
            holder: holder.into(),
        }
    }

    #[test]
    fn pick_skips_used_indexes_and_host_overlaps() {
        let pool = net("10.201.0.0/16");
        let none = BTreeSet::new();
        assert_eq!(
            pick(pool, 24, 0x1000, &none, &[]),
            Ok((0, net("10.201.0.0/24")))
        );

        let used: BTreeSet<u32> = [0, 2].into();
        assert_eq!(
            pick(pool, 24, 0x1000, &used, &[]),
            Ok((1, net("10.201.1.0/24")))
        );

        // Another instance's bridge on .1, an address on .3 (its /24 route), a /23 on 4-5.
        let host = [
            held("10.201.1.0/24", "sandpitb1"),
            held("10.201.3.9/32", "dummy0"),
            held("10.201.4.0/23", "tun0"),
            held("192.168.1.0/24", "eth0"),
        ];
        assert_eq!(
            pick(pool, 24, 0x1000, &used, &host),
            Ok((6, net("10.201.6.0/24")))
        );
        // A /29 network inside a host /24 is taken; the one after it is not.
        assert_eq!(
            pick(net("10.201.3.0/24"), 29, 0x1000, &none, &host),
            Ok((0, net("10.201.3.0/29"))),
            "10.201.3.9 is in the second /29"
        );
        assert_eq!(
            pick(net("10.201.3.8/29"), 29, 0x1000, &none, &host)
                .unwrap_err()
                .overlapping,
            1
        );
    }

    #[test]
    fn a_full_pool_says_why_and_what_to_do() {
        let pool = net("10.201.0.0/22");
        let host = [
            held("10.201.0.0/24", "sandpitb1"),
            held("10.201.2.0/23", "tun0"),
        ];
        let used: BTreeSet<u32> = [1].into();
        let full = pick(pool, 24, 0x1000, &used, &host).unwrap_err();
        assert_eq!(
            full,
            PoolFull {
                pool,
                len: 24,
                in_use: 1,
                overlapping: 3,
                example: Some(held("10.201.0.0/24", "sandpitb1")),
            }
        );
        assert_eq!(
            full.to_string(),
            "no free /24 in the pool 10.201.0.0/22: 1 used by this instance's networks, \
             3 overlap routes or addresses on this host (e.g. 10.201.0.0/24 via sandpitb1); \
             configure --subnet-pool with a range that nothing else on this host uses"
        );

        let used: BTreeSet<u32> = [0, 1, 2, 3].into();
        let full = pick(pool, 24, 0x1000, &used, &host).unwrap_err();
        assert_eq!(
            (full.in_use, full.overlapping, full.example.clone()),
            (4, 0, None)
        );
        assert_eq!(
            full.to_string(),
            "no free /24 in the pool 10.201.0.0/22: 4 used by this instance's networks, \
             0 overlap routes or addresses on this host; \
             destroy a network or configure a larger --subnet-pool"
        );

        let full = pick(
            pool,
            24,
            0x1000,
            &BTreeSet::new(),
            &[held("10.0.0.0/8", "vpn0")],
        )
        .unwrap_err();
        assert_eq!(
            full.to_string(),
            "no free /24 in the pool 10.201.0.0/22: 4 overlap routes or addresses on this \
             host (e.g. 10.0.0.0/8 via vpn0); configure --subnet-pool with a range that \
             nothing else on this host uses"
        );
    }

    #[test]
    fn pick_stops_at_the_limit() {
        let pool = net("10.201.0.0/16");
        let used: BTreeSet<u32> = (0..4).collect();
        let full = pick(pool, 24, 4, &used, &[]).unwrap_err();
        assert_eq!(full.in_use, 4);
        assert_eq!(pick(pool, 24, 5, &used, &[]), Ok((4, net("10.201.4.0/24"))));
    }

    #[test]
    fn hosts_of_a_network() {
        let s = net("10.201.3.0/24");
        assert_eq!(s.max_hosts(), 254);
        assert_eq!(s.host(0), None, "the network address is not a host");
        assert_eq!(s.host(1), Some(Ipv4Addr::new(10, 201, 3, 1)));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 201, 3, 1));
        assert_eq!(s.host(2), Some(Ipv4Addr::new(10, 201, 3, 2)));
        assert_eq!(s.host(254), Some(Ipv4Addr::new(10, 201, 3, 254)));
        assert_eq!(s.host(255), None, "the broadcast address is not a host");
        assert_eq!(s.host(u32::MAX), None);

        let small = net("10.201.0.8/29");
        assert_eq!(small.max_hosts(), 6);
        assert_eq!(small.gateway(), Ipv4Addr::new(10, 201, 0, 9));
        assert_eq!(small.host(6), Some(Ipv4Addr::new(10, 201, 0, 14)));
        assert_eq!(small.host(7), None);

        let p2p = net("10.201.0.4/30");
        assert_eq!(p2p.max_hosts(), 2);
        assert_eq!(p2p.host(2), Some(Ipv4Addr::new(10, 201, 0, 6)));
        assert_eq!(p2p.host(3), None);

        for tiny in ["10.201.0.4/31", "10.201.0.4/32"] {
            assert_eq!(net(tiny).max_hosts(), 0);
            assert_eq!(net(tiny).host(1), None);
        }
    }
}
