//! What the host's network namespace already uses, which a new network's subnet must not
//! overlap, and the host-wide lock around choosing a subnet and making its bridge.
//!
//! Kernel background. Once two interfaces hold overlapping prefixes, the kernel routes the
//! overlap to one of them only: a second bridge on a taken /24 gets its address, but its nodes'
//! replies leave through the first one and their traffic silently dies. So before a subnet is
//! handed out, every IPv4 route of every table (`ip -4 -j route show table all`: other
//! instances' bridges, VPNs, Docker's bridges, local and broadcast routes) and every address of
//! every interface (`ip -4 -j addr show`: an address with no route of its own) is read, and
//! the candidates that overlap one are skipped, as Docker does for its pools. Default routes
//! are not counted: they overlap everything.
//!
//! Reading the host and creating the bridge are two steps; another instance could pick the same
//! free subnet between them. Every instance therefore takes an exclusive `flock` on one file
//! (`RuntimeConfig::network_lock`, `/run/sandpit/networks.lock`) around "read, pick, create the
//! bridge"; a bridge made under the lock is in the host's routes for the next holder.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::pool::HostNet;
use super::{run, NetworkError, Subnet};

/// The IPv4 routes of `ip -4 -j route show table all`, default routes left out.
pub fn parse_routes(json: &str) -> Result<Vec<HostNet>, String> {
    let entries: Vec<Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(entries
        .iter()
        .filter_map(|r| {
            let subnet = parse_prefix(r.get("dst")?.as_str()?)?;
            if subnet.prefix_len() == 0 {
                return None;
            }
            let holder = r
                .get("dev")
                .or_else(|| r.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("a route")
                .to_string();
            Some(HostNet { subnet, holder })
        })
        .collect())
}

/// The IPv4 addresses of `ip -4 -j addr show`, each as its interface's subnet.
pub fn parse_addrs(json: &str) -> Result<Vec<HostNet>, String> {
    let links: Vec<Value> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links
        .iter()
        .flat_map(|link| {
            let name = link.get("ifname").and_then(Value::as_str).unwrap_or("?");
            let addrs = link.get("addr_info").and_then(Value::as_array);
            addrs.into_iter().flatten().filter_map(move |a| {
                if a.get("family").and_then(Value::as_str) != Some("inet") {
                    return None;
                }
                let ip: Ipv4Addr = a.get("local")?.as_str()?.parse().ok()?;
                let len = u8::try_from(a.get("prefixlen")?.as_u64()?).ok()?;
                (len <= 32).then(|| HostNet {
                    subnet: Subnet::new(ip, len),
                    holder: name.to_string(),
                })
            })
        })
        .collect())
}

/// `a.b.c.d` (a host route) or `a.b.c.d/len`; `default` and anything else is None.
fn parse_prefix(dst: &str) -> Option<Subnet> {
    let (addr, len) = match dst.split_once('/') {
        Some((addr, len)) => (addr, len.parse().ok().filter(|l| *l <= 32)?),
        None => (dst, 32),
    };
    Some(Subnet::new(addr.parse().ok()?, len))
}

/// Every route and address of the host's network namespace (this process's).
pub async fn used_subnets() -> Result<Vec<HostNet>, NetworkError> {
    let read = |what: &'static str| move |cause: String| NetworkError::ReadHost { what, cause };
    let routes = run("ip", &["-4", "-j", "route", "show", "table", "all"], None)
        .await
        .map_err(read("routes"))?;
    let addrs = run("ip", &["-4", "-j", "addr", "show"], None)
        .await
        .map_err(read("addresses"))?;
    let mut used = parse_routes(&routes).map_err(read("routes"))?;
    used.extend(parse_addrs(&addrs).map_err(read("addresses"))?);
    Ok(used)
}

/// The host-wide lock around choosing a subnet and creating its bridge; released on drop.
pub struct HostLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// How long to wait for another instance's pick: one takes a few `ip` commands.
const LOCK_WAIT: Duration = Duration::from_secs(30);

impl HostLock {
    /// Takes the lock on `path` (made if missing), waiting for other holders.
    pub async fn take(path: &Path) -> Result<HostLock, NetworkError> {
        use nix::fcntl::{Flock, FlockArg};
        let failed = |cause: String| NetworkError::HostLock {
            path: path.to_owned(),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| failed(e.to_string()))?;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(HostLock { _lock: lock }),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                    file = f;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(failed(format!(
                        "another process held it for over {LOCK_WAIT:?}"
                    )))
                }
                Err((_, e)) => return Err(failed(e.to_string())),
            }
        }
    }
}

/// The lock's default place, beside the uid-range locks.
pub fn default_lock_path() -> PathBuf {
    "/run/sandpit/networks.lock".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(subnet: &str, holder: &str) -> HostNet {
        HostNet {
            subnet: subnet.parse().unwrap(),
            holder: holder.into(),
        }
    }

    #[test]
    fn routes_of_every_table_but_the_default_ones() {
        let json = r#"[
            {"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
            {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},
            {"dst":"10.201.0.0/24","dev":"sandpitb0","protocol":"kernel","scope":"link","prefsrc":"10.201.0.1","flags":[]},
            {"type":"unreachable","dst":"10.9.0.0/16","flags":[]},
            {"dst":"0.0.0.0/0","table":"7","dev":"wg0","flags":[]},
            {"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},
            {"type":"local","dst":"10.201.0.1","dev":"sandpitb0","table":"local","flags":[]},
            {"type":"broadcast","dst":"10.201.0.255","dev":"sandpitb0","table":"local","flags":[]},
            {"dst":"not-an-address","dev":"x","flags":[]},
            {"dev":"nodst","flags":[]}
        ]"#;
        assert_eq!(
            parse_routes(json).unwrap(),
            [
                held("192.0.2.0/24", "eth0"),
                held("10.201.0.0/24", "sandpitb0"),
                held("10.9.0.0/16", "unreachable"),
                held("127.0.0.0/8", "lo"),
                held("10.201.0.1/32", "sandpitb0"),
                held("10.201.0.255/32", "sandpitb0"),
            ]
        );
        assert_eq!(parse_routes("[]").unwrap(), []);
        assert!(parse_routes("").is_err());
    }

    #[test]
    fn addresses_of_every_interface() {
        let json = r#"[
            {"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo"}]},
            {"ifindex":4,"ifname":"eth0","addr_info":[
                {"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255"},
                {"family":"inet","local":"10.201.3.7","prefixlen":32},
                {"family":"inet6","local":"fe80::1","prefixlen":64}
            ]},
            {"ifindex":9,"ifname":"tdum0","addr_info":[{"family":"inet","local":"10.240.0.5","prefixlen":24}]},
            {"ifindex":10,"ifname":"noaddr","addr_info":[]},
            {"ifindex":11,"ifname":"bad","addr_info":[{"family":"inet","local":"10.0.0.1","prefixlen":40}]}
        ]"#;
        assert_eq!(
            parse_addrs(json).unwrap(),
            [
                held("127.0.0.0/8", "lo"),
                held("192.0.2.0/24", "eth0"),
                held("10.201.3.7/32", "eth0"),
                held("10.240.0.0/24", "tdum0"),
            ]
        );
        assert!(parse_addrs("{").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix("10.1.2.3"),
            Some("10.1.2.3/32".parse().unwrap())
        );
        assert_eq!(
            parse_prefix("10.1.2.0/23"),
            Some("10.1.2.0/23".parse().unwrap())
        );
        assert_eq!(parse_prefix("default"), None);
        assert_eq!(parse_prefix("10.1.2.0/33"), None);
        assert_eq!(parse_prefix("fe80::/64"), None);
    }

    #[tokio::test]
    async fn the_lock_excludes_a_second_holder_until_dropped() {
        let dir = crate::testdir::TempDir::new("host-lock");
        let path = dir.0.join("sub").join("networks.lock");
        let first = HostLock::take(&path).await.unwrap();
        let second = tokio::spawn({
            let path = path.clone();
            async move { HostLock::take(&path).await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "taken twice");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the second waiter got the lock")
            .unwrap()
            .unwrap();
    }

    /// The host's own tables parse: needs `ip`, not root.
    #[tokio::test]
    #[ignore = "reads the host's routes with ip(8)"]
    async fn the_host_is_read() {
        let used = used_subnets().await.unwrap();
        assert!(
            used.iter().any(|h| h.subnet.contains(Ipv4Addr::LOCALHOST)),
            "{used:?}"
        );
    }
}
