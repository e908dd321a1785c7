//! Session networks: nodes reach each other by host name and `/etc/hosts` follows nodes that
//! come and go; DNS without egress fails fast; a two-node swarm runs a service across nodes
//! over VXLAN (dnsrr and host-mode publishing, since this kernel has no IPVS); a port published
//! in a node is reachable from the host, the path of the server's port proxy; a network never
//! gets a subnet that the host already uses, by another runtime or by any other interface.
//!
//! Every address used here is on the test's own bridges or a link it makes (from its own
//! pool), inside its nodes, or loopback.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sandbox::{NodeInfo, NodeSpec};
use sandpit_tests::{stderr, stdout, TestRuntime, IMPORT_BUSYBOX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Calls `f` until it returns `Ok`, every `every`, for at most `limit`; panics with the last
/// error after that.
async fn poll<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if started.elapsed() > limit => {
                panic!("{what}: not done after {limit:?}; last: {e}")
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// The `(name, address)` entries of an `/etc/hosts` beyond the loopback ones.
fn host_entries(hosts: &str) -> BTreeSet<(String, String)> {
    hosts
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?;
            let name = words.next()?;
            (ip != "127.0.0.1" && ip != "::1" && !ip.starts_with('#'))
                .then(|| (name.to_string(), ip.to_string()))
        })
        .collect()
}

fn entries_of(nodes: &[&NodeInfo]) -> BTreeSet<(String, String)> {
    nodes
        .iter()
        .map(|n| (n.hostname.clone(), n.ip.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_each_other_by_hostname() {
    let t = TestRuntime::new().await;
    let net = "hosts";
    let nodes = t.session(net, 3).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = entries_of(&[n1, n2, n3]);

    let checks = nodes.iter().map(|n| {
        let t = &t;
        let all = &all;
        async move {
            let pings: Vec<String> = all
                .iter()
                .filter(|(name, _)| *name != n.hostname)
                .map(|(name, _)| format!("ping -c1 -W2 {name} >/dev/null"))
                .collect();
            t.ok(n, &pings.join(" && ")).await;
            let hosts = t.ok(n, "cat /etc/hosts").await;
            assert_eq!(&host_entries(&hosts), all, "/etc/hosts of {}", n.hostname);
        }
    });
    futures_util::future::join_all(checks).await;

    // A destroyed node leaves every other node's /etc/hosts at once.
    t.rt()
        .destroy_node(net, "node2")
        .await
        .expect("destroy node2");
    let hosts = t.ok(n1, "cat /etc/hosts").await;
    assert_eq!(host_entries(&hosts), entries_of(&[n1, n3]), "{hosts}");
    // Exit status 2 is getent's "not found"; 124 would be timeout's.
    let gone = t.sh(n1, "timeout 5 getent hosts node2").await;
    assert_eq!(gone.status.code(), Some(2), "getent hosts node2: {gone:?}");

    // A node without a name takes the first free one, and everyone learns it.
    let new = t
        .rt()
        .create_node(NodeSpec {
            network: net.into(),
            ..Default::default()
        })
        .await
        .expect("create a node without a name");
    assert_eq!(new.hostname, "node2");
    // It reuses the old node2's address too. Other nodes still have an ARP entry for it, so
    // the pings below pass at once only because a node's MAC follows from its address.
    assert_eq!(new.ip, n2.ip, "the freed address is reused");
    let expected = entries_of(&[n1, &new, n3]);
    for n in [n1, &new, n3] {
        let hosts = t.ok(n, "cat /etc/hosts").await;
        assert_eq!(
            host_entries(&hosts),
            expected,
            "/etc/hosts of {}",
            n.hostname
        );
    }
    t.ok(n1, "ping -c1 -W2 node2 >/dev/null").await;
    t.ok(
        &new,
        "ping -c1 -W2 node1 >/dev/null && ping -c1 -W2 node3 >/dev/null",
    )
    .await;

    // The only nameserver is the session's DNS server on the gateway: it knows the node
    // names (also for containers, which do not see the node's /etc/hosts) and, without
    // egress, answers everything else with NXDOMAIN at once, however many lookups come.
    let gateway = t.rt().network(net).expect("network exists").gateway;
    let resolv = t.ok(n1, "cat /etc/resolv.conf").await;
    assert!(
        resolv.lines().any(|l| l
            .split_whitespace()
            .eq(["nameserver", &gateway.to_string()])),
        "resolv.conf without `nameserver {gateway}`:\n{resolv}"
    );
    // 20 lookups in a row all get an answer (NXDOMAIN), none a timeout: an ICMP-rejected
    // query would be rate-limited after a burst of six and then time out.
    t.ok(n1, IMPORT_BUSYBOX).await;
    let lookups = t
        .sh(
            n1,
            "docker run --rm busybox:local sh -c \
             'for i in $(seq 20); do nslookup nosuch$i.example; done' 2>&1",
        )
        .await;
    let text = stdout(&lookups);
    for i in 1..=20 {
        assert!(
            text.contains(&format!("nosuch{i}.example: NXDOMAIN")),
            "lookup {i}:\n{text}"
        );
    }
    assert!(!text.contains("timed out"), "{text}");
    let from_container = t
        .ok(n1, "docker run --rm busybox:local nslookup node3")
        .await;
    assert!(
        from_container.contains(&nodes[2].ip.to_string()),
        "a container resolves node3 through the session DNS:\n{from_container}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_swarm_runs_a_dnsrr_service() {
    let t = TestRuntime::new().await;
    let nodes = t.session("swarm", 2).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);

    let started = Instant::now();
    let init = format!("docker swarm init --advertise-addr {}", n1.ip);
    let (_, _, _) = tokio::join!(
        t.ok(n1, &init),
        t.ok(n1, IMPORT_BUSYBOX),
        t.ok(n2, IMPORT_BUSYBOX)
    );
    eprintln!(
        "swarm init (with busybox imports) took {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let token = t.ok(n1, "docker swarm join-token -q worker").await;
    t.ok(
        n2,
        &format!("docker swarm join --token {} {}:2377", token.trim(), n1.ip),
    )
    .await;
    eprintln!("swarm join took {:?}", started.elapsed());
    poll(
        "both nodes Ready",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let ls = t
                .ok(n1, "docker node ls --format '{{.Hostname}} {{.Status}}'")
                .await;
            let ready: BTreeSet<&str> = ls
                .lines()
                .filter_map(|l| l.strip_suffix(" Ready"))
                .collect();
            (ready == BTreeSet::from(["node1", "node2"]))
                .then_some(())
                .ok_or(ls)
        },
    )
    .await;
    eprintln!(
        "both nodes Ready {:?} after the join began",
        started.elapsed()
    );

    // One task per node, reachable over the overlay by task address (no VIP without IPVS)
    // and on each node's own address through a host-mode published port.
    t.ok(
        n1,
        "docker network create -d overlay --attachable ov >/dev/null",
    )
    .await;
    let started = Instant::now();
    t.ok(
        n1,
        "docker service create -d --name web --replicas 2 --replicas-max-per-node 1 \
         --endpoint-mode dnsrr --network ov --publish mode=host,published=8080,target=80 \
         --no-resolve-image busybox:local \
         sh -c 'mkdir /w; hostname > /w/index.html; exec httpd -f -p 80 -h /w' >/dev/null",
    )
    .await;
    poll(
        "both tasks running, one per node",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || async {
            let ps = t
                .ok(
                    n1,
                    "docker service ps web --filter desired-state=running \
                     --format '{{.Node}} {{.CurrentState}}'",
                )
                .await;
            let running: BTreeSet<&str> = ps
                .lines()
                .filter(|l| l.contains(" Running"))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            (running == BTreeSet::from(["node1", "node2"]))
                .then_some(())
                .ok_or(ps)
        },
    )
    .await;
    eprintln!("service converged {:?} after create", started.elapsed());

    // Each node's task: container id, overlay address, host name.
    let task = |n: &NodeInfo| {
        let t = &t;
        let n = n.clone();
        async move {
            let out = t
                .ok(
                    &n,
                    "c=$(docker ps -q --filter label=com.docker.swarm.service.name=web) && \
                     docker inspect -f '{{.Id}} {{(index .NetworkSettings.Networks \"ov\").IPAddress}} \
                     {{.Config.Hostname}}' $c",
                )
                .await;
            let words: Vec<String> = out.split_whitespace().map(String::from).collect();
            assert_eq!(words.len(), 3, "one task on {}: {out}", n.hostname);
            let ip: Ipv4Addr = words[1].parse().expect("task address");
            (words[0].clone(), ip, words[2].clone())
        }
    };
    let ((c1, ip1, h1), (c2, ip2, h2)) = tokio::join!(task(n1), task(n2));
    assert_ne!(h1, h2);

    // Across nodes over VXLAN, both ways. `timeout` rather than `wget -T`, which crashes
    // (SIGSEGV) in the busybox 1.35 of the base image.
    for (n, c, peer_ip, peer_host) in [(n1, &c1, ip2, &h2), (n2, &c2, ip1, &h1)] {
        let got = t
            .ok(
                n,
                &format!(
                    "for i in $(seq 20); do docker exec {c} timeout 5 wget -qO- http://{peer_ip}/ && exit 0; \
                     sleep 0.2; done; exit 1"
                ),
            )
            .await;
        assert_eq!(&got.trim(), peer_host, "{} -> {peer_ip}", n.hostname);
    }

    // The embedded DNS lists both tasks, under tasks.<service> and (dnsrr) the service name.
    for name in ["tasks.web", "web"] {
        let out = t.sh(n1, &format!("docker exec {c1} nslookup {name}")).await;
        let text = stdout(&out);
        for ip in [ip1, ip2] {
            assert!(
                text.contains(&ip.to_string()),
                "nslookup {name} lacks {ip}:\n{text}{}",
                stderr(&out)
            );
        }
    }

    // Host-mode publishing: each node answers on its own address with its own task.
    let bridge = t.rt().network("swarm").expect("network exists").bridge;
    for (n, host) in [(n1, &h1), (n2, &h2)] {
        assert_routed_via(n.ip, &bridge);
        let body = http_get(SocketAddr::from((n.ip, 8080)), Duration::from_secs(30)).await;
        assert_eq!(body.trim(), host, "{}:8080", n.hostname);
    }
    t.finish().await;
}

/// Checks that the host routes `ip` through `bridge`: a leaked bridge of another run with the
/// same subnet would take the test's traffic and turn it into a puzzling failure.
fn assert_routed_via(ip: Ipv4Addr, bridge: &str) {
    let out = std::process::Command::new("ip")
        .args(["-o", "route", "get", &ip.to_string()])
        .output()
        .expect("run `ip route get`");
    let route = stdout(&out);
    let words: Vec<&str> = route.split_whitespace().collect();
    assert!(
        words.windows(2).any(|w| w == ["dev", bridge]),
        "the host routes {ip} as `{}`, not through the test's bridge {bridge}: another bridge \
         on the host has the same subnet",
        route.trim()
    );
}

/// `GET /` over a plain TCP connection from the test process, retried until the server
/// answers 200 or `limit` passes; returns the body.
async fn http_get(addr: SocketAddr, limit: Duration) -> String {
    poll(
        &format!("GET http://{addr}/"),
        limit,
        Duration::from_millis(200),
        || async {
            let io = async {
                let mut s = tokio::net::TcpStream::connect(addr).await?;
                s.write_all(b"GET / HTTP/1.0\r\nHost: sandpit\r\n\r\n")
                    .await?;
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await?;
                Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
            };
            let resp = tokio::time::timeout(Duration::from_secs(3), io)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            let (head, body) = resp
                .split_once("\r\n\r\n")
                .ok_or_else(|| format!("no header end in {resp:?}"))?;
            let status = head.lines().next().unwrap_or("");
            if status.split_whitespace().nth(1) == Some("200") {
                Ok(body.to_string())
            } else {
                Err(format!("status line {status:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_is_reachable_from_the_host() {
    const MARK: &str = "published-port-answers-the-host";
    let t = TestRuntime::new().await;
    let nodes = t.session("ports", 1).await;
    let n = &nodes[0];
    t.ok(n, IMPORT_BUSYBOX).await;
    t.ok(
        n,
        &format!(
            "docker run -d -p 8080:80 busybox:local \
             sh -c 'mkdir /w && echo {MARK} > /w/index.html && exec httpd -f -p 80 -h /w' >/dev/null"
        ),
    )
    .await;
    assert_routed_via(
        n.ip,
        &t.rt().network("ports").expect("network exists").bridge,
    );
    let body = http_get(SocketAddr::from((n.ip, 8080)), Duration::from_secs(30)).await;
    assert_eq!(body.trim(), MARK);
    t.finish().await;
}

/// A link of the test's standing for another program's interface, deleted on drop (even when
/// the test fails). A port-less bridge, since kernels without the `dummy` module (like this
/// project's CI VMs) have no `type dummy`.
struct ForeignLink(String);

impl ForeignLink {
    /// Creates link `name` (down, so it adds no route) holding `address` (`a.b.c.d/len`).
    fn new(name: &str, address: &str) -> ForeignLink {
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {}", stderr(&out));
        };
        ip(&["link", "add", name, "type", "bridge"]);
        let link = ForeignLink(name.into());
        ip(&["addr", "add", address, "dev", name]);
        link
    }
}

impl Drop for ForeignLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_the_host_has_an_address_in_is_skipped() {
    let t = TestRuntime::new().await;
    let pool = t.cfg.subnet_pool;
    let first = pool.nth_subnet(24, 0).unwrap();
    // Another program's address in the first /24 of the pool, with no route of its own.
    let foreign = ForeignLink::new(
        &format!("{}x", t.cfg.prefix),
        &format!("{}/24", first.host(5).unwrap()),
    );

    let net = t.rt().create_network("skip").await.unwrap();
    assert_eq!(net.subnet, pool.nth_subnet(24, 1).unwrap(), "the next /24");
    assert_eq!(net.gateway, net.subnet.gateway());
    assert_routed_via(net.subnet.host(2).unwrap(), &net.bridge);

    // With the address gone, the first /24 is free again.
    drop(foreign);
    let next = t.rt().create_network("after").await.unwrap();
    assert_eq!(next.subnet, first);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runtimes_on_one_pool_get_different_subnets() {
    let a = TestRuntime::new().await;
    let pool = a.cfg.subnet_pool;
    let b = TestRuntime::with(|c| c.subnet_pool = pool).await;
    assert_ne!(a.cfg.prefix, b.cfg.prefix);

    // Both at once, two networks each: every pick sees the others' bridges.
    let make = |t: &TestRuntime, names: [&'static str; 2]| {
        let rt = t.shared();
        async move {
            let mut nets = Vec::new();
            for name in names {
                let make = rt.create_network(name);
                nets.push(make.await.unwrap_or_else(|e| panic!("create {name}: {e}")));
            }
            nets
        }
    };
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(make(&a, ["a1", "a2"])),
        tokio::spawn(make(&b, ["b1", "b2"]))
    );
    let nets: Vec<_> = from_a.unwrap().into_iter().chain(from_b.unwrap()).collect();
    let subnets: BTreeSet<String> = nets.iter().map(|n| n.subnet.to_string()).collect();
    assert_eq!(subnets.len(), 4, "a subnet was handed out twice: {nets:#?}");
    for n in &nets {
        assert!(pool.contains(n.subnet.network()), "{n:?} is outside {pool}");
        assert_eq!(n.subnet.prefix_len(), 24);
        assert_routed_via(n.subnet.host(2).unwrap(), &n.bridge);
    }
    a.finish().await;
    b.finish().await;
}
