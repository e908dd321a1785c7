//! A node cannot harm the host or other nodes, in the default user-namespace mode: its root is
//! an unprivileged host uid, privileged kernel operations fail inside it, its memory, pids and
//! disk limits hold inside it only, sessions cannot reach each other, the host is reachable
//! only on the ports the service opens, and a node sees only its own processes.
//!
//! Network rule of these tests: they only ever address their own bridges and nodes, and
//! loopback.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sandbox::{Isolation, NetworkInfo, NodeInfo};
use sandpit_tests::{stderr, stdout, TestRuntime};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Asserts that a script failed and said why in words of a refused operation.
fn assert_refused(what: &str, out: &Output) {
    let err = stderr(out).to_lowercase();
    assert!(
        !out.status.success(),
        "{what} succeeded inside a node:\nstdout: {}\nstderr: {err}",
        stdout(out)
    );
    let refused = [
        "permission denied",
        "not permitted",
        "read-only file system",
        "not supported",
    ];
    assert!(
        refused.iter().any(|w| err.contains(w)),
        "{what} failed, but not with a permission error ({}): {err}",
        out.status
    );
}

fn init_pid(n: &NodeInfo) -> i32 {
    n.init_pid.expect("a running node has an init pid")
}

/// Host pids and names (`comm`) of the processes in the pid namespace of `init`.
fn processes_of_node(init: i32) -> Vec<(i32, String)> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).expect("node's pid namespace");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/pid")).is_ok_and(|p| p == ns) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_string()));
        }
    }
    found
}

/// The `Uid:` line of a host process: real, effective, saved and filesystem uid.
fn host_uids(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid: line");
    line.split_whitespace()
        .map(|u| u.parse().expect("numeric uid"))
        .collect()
}

/// An id map (`/proc/<pid>/uid_map`) as rows of numbers.
fn id_map(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .collect()
}

/// Bytes available to unprivileged users on the filesystem of `path`.
fn available(path: &str) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    s.blocks_available() * s.fragment_size()
}

/// The node's root, its processes, and every privileged operation it tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_root_is_unprivileged_on_the_host() {
    let t = TestRuntime::new().await;
    let nodes = t.session("iso", 1).await;
    let n = &nodes[0];
    assert_eq!(n.isolation, Isolation::Userns);
    let init = init_pid(n);

    // 1. uid 0 inside is a high uid of the node's own range outside.
    assert_eq!(t.ok(n, "id -u; id -g").await, "0\n0\n");
    let uid_map = std::fs::read_to_string(format!("/proc/{init}/uid_map")).unwrap();
    let map = id_map(&uid_map);
    assert_eq!(map.len(), 1, "uid_map: {uid_map}");
    let base = map[0][1];
    assert_eq!((map[0][0], map[0][2]), (0, 65536), "uid_map: {uid_map}");
    let start = u64::from(t.cfg.uid_pool_start);
    assert!(base != 0 && base >= start, "uid base {base} below {start}");
    assert_eq!(
        (base - start) % 65536,
        0,
        "uid base {base} not a range start"
    );
    let gid_map = std::fs::read_to_string(format!("/proc/{init}/gid_map")).unwrap();
    assert_eq!(id_map(&gid_map), map, "gid_map: {gid_map}");
    assert_eq!(host_uids(init), vec![base as u32; 4]);
    // The node sees the same map from inside.
    assert_eq!(id_map(&t.ok(n, "cat /proc/self/uid_map").await), map);
    // A process started through exec runs as the same host uid.
    t.ok(n, "sleep 4242 >/dev/null 2>&1 &").await;
    // (The forked shell may not have exec'd `sleep` yet when the exec returns.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        let found = processes_of_node(init).into_iter().find(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == "sleep\x004242\x00")
        });
        if let Some((pid, _)) = found {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "no exec'd sleep in the node's pid namespace"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(host_uids(sleeper), vec![base as u32; 4]);

    // 2. Privileged operations fail, and the host does not change.
    let panic_before = std::fs::read_to_string("/proc/sys/kernel/panic").unwrap();
    // A value unlike the host's, so that a write that got through would show.
    let panic_value = if panic_before.trim() == "37" { 38 } else { 37 };
    let checks = [
        (
            "mknod of a character device",
            "mknod /tmp/k c 1 1".to_string(),
        ),
        ("reading the kernel log", "dmesg".into()),
        (
            "setting a kernel sysctl",
            format!("echo {panic_value} > /proc/sys/kernel/panic"),
        ),
        (
            "dropping the host's caches",
            "echo 3 > /proc/sys/vm/drop_caches".into(),
        ),
        ("setting the clock", "date -s 2001-01-01".into()),
    ];
    for (what, script) in &checks {
        assert_refused(what, &t.sh(n, script).await);
    }
    // Without CONFIG_MAGIC_SYSRQ the file does not exist; the write fails all the same.
    let sysrq = t.sh(n, "echo h > /proc/sysrq-trigger").await;
    if std::path::Path::new("/proc/sysrq-trigger").exists() {
        assert_refused("a sysrq", &sysrq);
    } else {
        assert!(!sysrq.status.success(), "a sysrq succeeded inside a node");
    }
    // The kernel has no module support: ENOSYS or EPERM, either way a failure.
    let insmod = t.sh(n, "busybox insmod /etc/hostname").await;
    assert!(
        !insmod.status.success(),
        "insmod succeeded inside a node: {}",
        stderr(&insmod)
    );
    assert!(
        !t.sh(n, "test -e /tmp/k").await.status.success(),
        "mknod left a device node"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/panic").unwrap(),
        panic_before
    );
    let year = |secs: u64| 1970 + secs / 31_556_952;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(year(now.as_secs()) >= 2026, "host clock was set back");
    let node_year: u64 = t.ok(n, "date +%Y").await.trim().parse().unwrap();
    assert!(node_year >= 2026, "node clock says {node_year}");

    // 7. The node sees its own processes only.
    let listed: usize = t.ok(n, "ps -e | wc -l").await.trim().parse().unwrap();
    assert!(listed < 50, "ps -e in a node lists {listed} lines");
    let in_proc: usize = t
        .ok(n, "ls /proc | grep -c '^[0-9]'")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(in_proc < 50, "/proc of a node has {in_proc} processes");
    let host_init = std::fs::read("/proc/1/cmdline").unwrap();
    let node_init = t.ok(n, "cat /proc/1/cmdline").await.into_bytes();
    assert!(!node_init.is_empty(), "the node has no PID 1");
    assert_ne!(node_init, host_init, "the node sees the host's init");
    // This test process is not among the node's processes, whatever its pids are.
    let me = std::env::current_exe().unwrap();
    let me = me.file_name().unwrap().to_string_lossy();
    let cmdlines = t.ok(n, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(
        !cmdlines.contains(me.as_ref()),
        "the node sees the test process {me}: {cmdlines}"
    );
    t.finish().await;
}

/// An allocation past the memory limit is OOM-killed inside its node; the node's engine, the
/// other node and the host carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_inside_the_node_only() {
    let t = TestRuntime::with(|c| c.limits.memory_bytes = 256 * MIB).await;
    let nodes = t.session("mem", 2).await;
    let (n1, n2) = (&nodes[0], &nodes[1]);

    // `tail` keeps all of an endless line in memory.
    let out = t.sh(n1, "tail /dev/zero").await;
    assert!(
        out.status.code() == Some(137) || stderr(&out).contains("Killed"),
        "tail /dev/zero ended with {}: {}",
        out.status,
        stderr(&out)
    );
    let stats = t.rt().stats(&n1.network, &n1.hostname).unwrap();
    assert!(stats.cgroup.oom_kills >= 1, "{stats:?}");
    assert_eq!(stats.cgroup.memory_limit_bytes, 256 * MIB);

    t.ok(n1, "docker info >/dev/null").await;
    t.ok(n2, "docker info >/dev/null").await;
    let stats2 = t.rt().stats(&n2.network, &n2.hostname).unwrap();
    assert_eq!(stats2.cgroup.oom_kills, 0, "{stats2:?}");
    t.finish().await;
}

/// A fork bomb stops at the pids limit; the node recovers once its processes are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_stops_a_fork_bomb() {
    let t = TestRuntime::with(|c| c.limits.pids = 200).await;
    let nodes = t.session("pids", 1).await;
    let n = &nodes[0];
    let init = init_pid(n);

    let out = t
        .sh_timeout(
            n,
            "for i in $(seq 400); do sleep 60 >/dev/null 2>&1 & done; echo spawned",
            Duration::from_secs(60),
        )
        .await;
    let err = stderr(&out);
    assert!(
        err.contains("Cannot fork") || err.contains("Resource temporarily unavailable"),
        "no fork failure among 400 processes under a limit of 200 ({}): {err}",
        out.status
    );
    let stats = t.rt().stats(&n.network, &n.hostname).unwrap();
    assert!(
        stats.cgroup.pids <= 200 && stats.cgroup.pids > 150,
        "{stats:?}"
    );

    // A new exec cannot fork while the node is at its limit, so the sleepers are killed from
    // the host.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sleepers: Vec<i32> = processes_of_node(init)
            .into_iter()
            .filter(|(_, comm)| comm == "sleep")
            .map(|(pid, _)| pid)
            .collect();
        if sleepers.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} sleepers left",
            sleepers.len()
        );
        for pid in sleepers {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.ok(n, "pkill sleep; echo alive").await;
    t.ok(n, "docker info >/dev/null").await;
    let stats = t.rt().stats(&n.network, &n.hostname).unwrap();
    assert!(stats.cgroup.pids < 150, "{stats:?}");
    t.finish().await;
}

/// Writes past the disk cap fail inside the node, for its root and for /var/lib/docker, and
/// the host's disk is spared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cap_fills_inside_the_node_only() {
    let t = TestRuntime::with(|c| c.limits.disk_bytes = GIB).await;
    let nodes = t.session("disk", 1).await;
    let n = &nodes[0];

    let host_before = available("/var/tmp");
    let out = t
        .sh(n, "dd if=/dev/zero of=/root/big bs=1M count=1500")
        .await;
    assert!(
        !out.status.success() && stderr(&out).contains("No space left on device"),
        "dd past the cap ended with {}: {}",
        out.status,
        stderr(&out)
    );
    let out = t
        .sh(n, "dd if=/dev/zero of=/var/lib/docker/big bs=1M count=100")
        .await;
    assert!(
        !out.status.success() && stderr(&out).contains("No space left on device"),
        "dd into a full /var/lib/docker ended with {}: {}",
        out.status,
        stderr(&out)
    );
    let host_after = available("/var/tmp");
    let used = host_before.saturating_sub(host_after);
    assert!(
        used < GIB + GIB / 5,
        "the host lost {} MiB of disk to a node capped at 1 GiB",
        used / MIB
    );
    let stats = t.rt().stats(&n.network, &n.hostname).unwrap();
    assert!(stats.disk_total_bytes <= GIB, "{stats:?}");

    t.ok(
        n,
        "rm /root/big /var/lib/docker/big; echo fits > /root/small",
    )
    .await;
    t.ok(n, "docker info >/dev/null").await;
    t.finish().await;
}

/// A TCP listener on the host that counts the connections it accepts.
struct HostListener {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostListener {
    fn start() -> HostListener {
        let l = TcpListener::bind("0.0.0.0:0").expect("bind a host listener");
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok(_) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HostListener {
            port,
            accepted,
            stop,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Other links with a route to `net`'s subnet: a leaked runtime that reuses our subnet pool
/// would take our replies and make the reachability checks below meaningless.
fn clashing_routes(net: &NetworkInfo) -> Vec<String> {
    let routes = std::fs::read_to_string("/proc/net/route").expect("read /proc/net/route");
    let ours = net.subnet.network();
    routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dest = Ipv4Addr::from(u32::from_str_radix(f.get(1)?, 16).ok()?.to_le_bytes());
            (dest == ours && f[0] != net.bridge).then(|| f[0].to_string())
        })
        .collect()
}

/// Nodes of different sessions cannot reach each other, even with a route added by hand, and a
/// node reaches the host only on the ports the runtime opens (the registries' relay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_apart_and_host_ports_are_opt_in() {
    let closed = HostListener::start();
    let open_port = sandbox::PUSH_PORT;
    let t = TestRuntime::with(sandpit_tests::with_registry).await;
    let s1 = t.session("net-a", 2).await;
    let s2 = t.session("net-b", 1).await;
    let (a, a2, b) = (&s1[0], &s1[1], &s2[0]);
    let (net1, net2) = (
        t.rt().network("net-a").unwrap(),
        t.rt().network("net-b").unwrap(),
    );
    for net in [&net1, &net2] {
        let clash = clashing_routes(net);
        assert!(
            clash.is_empty(),
            "{} is also routed to {clash:?}: another runtime leaked on this subnet pool",
            net.subnet
        );
    }
    let (gw1, subnet2) = (net1.gateway, net2.subnet);

    // A listener in the other session's node, reachable from the host.
    t.ok(b, "mkdir -p /tmp/www && busybox httpd -p 8080 -h /tmp/www")
        .await;
    let listening = |ip: Ipv4Addr| {
        TcpStream::connect_timeout(&SocketAddr::from((ip, 8080)), Duration::from_secs(1)).is_ok()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(b.ip) {
        assert!(
            Instant::now() < deadline,
            "httpd in {} never listened",
            b.ip
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Within a session, ping works.
    t.ok(a, &format!("ping -c1 -W1 {}", a2.ip)).await;

    let cross = [
        format!("ping -c1 -W1 {}", b.ip),
        format!("nc -z -w2 {} 8080", b.ip),
    ];
    for script in &cross {
        let out = t.sh(a, script).await;
        assert!(
            !out.status.success(),
            "`{script}` reached the other session: {}",
            stdout(&out)
        );
    }
    // Root in the node owns its routes: a route to the other session through the host does
    // not help.
    t.ok(a, &format!("ip route add {subnet2} via {gw1}")).await;
    for script in &cross {
        let out = t.sh(a, script).await;
        assert!(
            !out.status.success(),
            "`{script}` reached the other session through the host: {}",
            stdout(&out)
        );
    }

    // The host: only the opened port answers; the other is refused at once.
    let out = t
        .sh(a, &format!("nc -v -z -w2 {gw1} {}", closed.port))
        .await;
    assert!(
        !out.status.success() && stderr(&out).contains("refused"),
        "host port {} not refused: {} {}",
        closed.port,
        out.status,
        stderr(&out)
    );
    t.ok(a, &format!("nc -v -z -w2 {gw1} {open_port}")).await;
    assert_eq!(closed.accepted(), 0);
    // The host's listeners are not on the node's own loopback.
    for port in [closed.port, open_port] {
        let out = t.sh(a, &format!("nc -z -w2 127.0.0.1 {port}")).await;
        assert!(
            !out.status.success(),
            "the node reached port {port} on its loopback"
        );
    }
    t.finish().await;
}

/// The CPU quota holds: two busy loops for 2 s in a node limited to a quarter of a core get
/// about half a CPU-second, not the 2-4 s they would take unlimited on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_quota_holds() {
    let t = TestRuntime::with(|c| c.limits.cpus = 0.25).await;
    let nodes = t.session("cpu", 1).await;
    let n = &nodes[0];
    let before = t
        .rt()
        .stats(&n.network, &n.hostname)
        .unwrap()
        .cgroup
        .cpu_usage_ns;
    t.ok(
        n,
        "timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done'; wait; true",
    )
    .await;
    let after = t
        .rt()
        .stats(&n.network, &n.hostname)
        .unwrap()
        .cgroup
        .cpu_usage_ns;
    let used = (after - before) as f64 / 1e9;
    assert!(used > 0.1, "the loops ran: {used:.2} CPU-s");
    assert!(
        used < 0.9,
        "0.25 cores for 2 s allow about 0.5 CPU-s, the node used {used:.2}"
    );
    t.finish().await;
}
