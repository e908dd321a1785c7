//! Abuse: a node of one session does its worst, one abuse at a time (a fork bomb, a memory hog,
//! its disk filled, `/dev/shm` filled, its inodes used up, a `yes` flood in its terminal, a
//! spin on every core, thousands of connections to another node), while a second session's
//! terminal keeps echoing and `docker run hello-world` keeps working in it. After each, the
//! abusing node is deleted through the API like any other, and the host still has its
//! memory, disk, pids and conntrack headroom.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sandpit_tests::{with_registry, TermClient, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// How long the endless abuses run before their command is ended (the exec's timeout).
const ABUSE_SECS: u64 = 8;
/// The bound for those that end by themselves (at a limit).
const LIMITED_SECS: u64 = 90;
/// The filesystem of the tests' state directories.
const TEST_FS: &str = "/var/tmp";

/// What the host has left, read from /proc.
#[derive(Debug, Clone, Copy)]
struct Headroom {
    mem_available_mib: u64,
    disk_free_mib: u64,
    processes: u64,
    pid_max: u64,
    /// (entries, max), where the kernel has connection tracking.
    conntrack: Option<(u64, u64)>,
}

impl Headroom {
    fn read(state_dir: &std::path::Path) -> Headroom {
        let num =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let mem_available_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let fs = nix::sys::statvfs::statvfs(state_dir).unwrap();
        #[allow(clippy::unnecessary_cast)]
        let disk_free = fs.blocks_available() as u64 * fs.fragment_size() as u64;
        let processes = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count() as u64;
        let conntrack = num("/proc/sys/net/netfilter/nf_conntrack_count")
            .zip(num("/proc/sys/net/netfilter/nf_conntrack_max"));
        Headroom {
            mem_available_mib: mem_available_kib >> 10,
            disk_free_mib: disk_free >> 20,
            processes,
            pid_max: num("/proc/sys/kernel/pid_max").unwrap(),
            conntrack,
        }
    }

    /// Asserts that `self` (after an abuse) kept what the host needs, against `before`.
    fn assert_unharmed(&self, before: &Headroom, abuse: &str) {
        assert!(
            self.mem_available_mib >= before.mem_available_mib / 2,
            "{abuse}: host memory {before:?} -> {self:?}"
        );
        // The abusing node is gone by now, and its disk image with it.
        assert!(
            self.disk_free_mib + 512 >= before.disk_free_mib,
            "{abuse}: host disk {before:?} -> {self:?}"
        );
        assert!(
            self.processes < self.pid_max / 4,
            "{abuse}: host processes {self:?}"
        );
        if let Some((count, max)) = self.conntrack {
            assert!(count < max / 2, "{abuse}: conntrack {self:?}");
        }
    }
}

/// The neighbour: a session with one node and its terminal open.
struct Neighbour {
    sid: String,
    term: TermClient,
    checks: u32,
}

impl Neighbour {
    /// Its terminal echoes and its engine runs a container, both while the abuse goes on.
    async fn still_fine(&mut self, srv: &TestServer, abuse: &str) {
        self.checks += 1;
        let n = self.checks;
        let started = Instant::now();
        self.term.send(&format!("echo alive-{n}-$((6*7))\r")).await;
        self.term
            .expect(&format!("alive-{n}-42"), Duration::from_secs(30))
            .await;
        let echo = started.elapsed();
        let r = srv
            .sh(
                &self.sid,
                "node1",
                "docker run --rm hello-world | grep -c 'Hello from Docker'",
            )
            .await;
        assert_eq!(
            r["stdout"], "1\n",
            "{abuse}: hello-world in the neighbour: {r}"
        );
        eprintln!(
            "{abuse}: neighbour echo after {echo:?}, hello-world done after {:?}",
            started.elapsed()
        );
    }

    /// Runs `work` (an abuse) and checks the neighbour every few seconds while it lasts, at
    /// least once, 2 s in: a long abuse must not pass unchecked, and a terminal left unread for
    /// its ping interval would be dropped as a dead client.
    async fn throughout<F: std::future::Future>(
        &mut self,
        srv: &TestServer,
        abuse: &str,
        work: F,
    ) -> F::Output {
        tokio::pin!(work);
        let mut checked = false;
        let mut pause = Duration::from_secs(2);
        loop {
            tokio::select! {
                out = &mut work => {
                    if !checked {
                        self.still_fine(srv, abuse).await;
                    }
                    return out;
                }
                _ = tokio::time::sleep(pause) => {
                    self.still_fine(srv, abuse).await;
                    checked = true;
                    pause = Duration::from_secs(5);
                }
            }
        }
    }
}

/// Runs `script` in `node` of `sid` for at most `secs`; the exec's answer.
async fn abuse_exec(srv: &TestServer, sid: &str, node: &str, script: &str, secs: u64) -> Value {
    let (status, r) = srv
        .post(
            &format!("/api/sessions/{sid}/nodes/{node}/exec"),
            json!({"cmd": ["bash", "-c", script], "timeout_secs": secs}),
        )
        .await;
    assert_eq!(status, 200, "exec in an abused node: {r}");
    r
}

/// Deletes a node that was abused; it must go like any other.
async fn delete_node(srv: &TestServer, sid: &str, node: &str, abuse: &str) {
    let started = Instant::now();
    let (status, b) = srv
        .delete(&format!("/api/sessions/{sid}/nodes/{node}"))
        .await;
    assert_eq!(status, 204, "{abuse}: delete {node}: {b}");
    eprintln!("{abuse}: {node} deleted in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_in_one_session_leaves_its_neighbour_and_the_host_unharmed() {
    // Small nodes, so that the abuses reach their limits quickly.
    let srv = TestServer::start_configured(&[], |c| {
        with_registry(c);
        c.limits.memory_bytes = 512 << 20;
        c.limits.pids = 512;
        c.limits.disk_bytes = 1 << 30;
    });
    let state_dir = std::path::Path::new(TEST_FS);
    let sid_b = srv.session_id().await;
    srv.node(&sid_b).await;
    let term = srv.terminal(&sid_b, "node1").await;
    let mut neighbour = Neighbour {
        sid: sid_b,
        term,
        checks: 0,
    };
    neighbour.still_fine(&srv, "before any abuse").await;
    let sid = srv.session_id().await;
    let before = Headroom::read(state_dir);
    eprintln!("host before: {before:?}");

    let abuses: &[(&str, &str, &str, u64)] = &[
        // (name, script, what its answer must show, how long it may run)
        (
            "fork bomb",
            "bomb() { bomb | bomb & }; bomb; sleep 30",
            "",
            ABUSE_SECS,
        ),
        (
            "memory hog",
            "head -c 2000m /dev/zero | tail; echo exit=$?",
            "exit=137",
            LIMITED_SECS,
        ),
        (
            "disk filled",
            "dd if=/dev/zero of=/var/lib/docker/fill bs=1M 2>&1 | head -n 1",
            "No space left",
            LIMITED_SECS,
        ),
        (
            "/dev/shm filled",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M 2>&1 | head -n 1",
            "No space left",
            LIMITED_SECS,
        ),
        (
            "inodes used up",
            "mkdir -p /var/lib/docker/i && cd /var/lib/docker/i && \
             seq 1 200000 | xargs touch 2>&1 | tail -n 1",
            "No space left",
            LIMITED_SECS,
        ),
        (
            "a spin on every core",
            "for i in $(seq $(nproc)); do (while :; do :; done) & done; sleep 30",
            "",
            ABUSE_SECS,
        ),
    ];
    for (abuse, script, shows, secs) in abuses {
        let node = srv.node(&sid).await["name"].as_str().unwrap().to_owned();
        let r = neighbour
            .throughout(&srv, abuse, abuse_exec(&srv, &sid, &node, script, *secs))
            .await;
        let out = format!("{}{}", r["stdout"], r["stderr"]);
        assert!(out.contains(shows), "{abuse}: {r}");
        // The abused node still takes a command, once the abuse is over.
        if *abuse != "fork bomb" && *abuse != "a spin on every core" {
            let ok = srv.sh(&sid, &node, "echo ok").await;
            assert_eq!(ok["stdout"], "ok\n", "{abuse}: {ok}");
        }
        delete_node(&srv, &sid, &node, abuse).await;
        Headroom::read(state_dir).assert_unharmed(&before, abuse);
    }

    // A `yes` flood in a terminal: read and dropped here, as a browser tab would lag behind.
    let abuse = "a yes flood in the terminal";
    let node = srv.node(&sid).await["name"].as_str().unwrap().to_owned();
    let mut ws = srv
        .ws(&format!("/api/sessions/{sid}/nodes/{node}/terminal"), None)
        .await
        .expect("open the flooded terminal");
    ws.send(Message::binary(b"yes\r".to_vec())).await.unwrap();
    let flood = async {
        let mut bytes = 0usize;
        let until = tokio::time::Instant::now() + Duration::from_secs(ABUSE_SECS);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, ws.next()).await {
            bytes += m.len();
        }
        bytes
    };
    let bytes = neighbour.throughout(&srv, abuse, flood).await;
    eprintln!("{abuse}: {} MiB read in {ABUSE_SECS} s", bytes >> 20);
    assert!(bytes > 1 << 20, "{abuse}: the flood flowed ({bytes} bytes)");
    ws.send(Message::binary(b"\x03".to_vec())).await.unwrap();
    drop(ws);
    delete_node(&srv, &sid, &node, abuse).await;
    Headroom::read(state_dir).assert_unharmed(&before, abuse);

    // Thousands of connections from one node to another.
    let abuse = "thousands of connections";
    let server = srv.node(&sid).await["name"].as_str().unwrap().to_owned();
    let client = srv.node(&sid).await["name"].as_str().unwrap().to_owned();
    srv.sh(
        &sid,
        &server,
        "mkdir -p /srv && echo hi >/srv/index.html && (busybox httpd -p 8080 -h /srv &)",
    )
    .await;
    let script = format!(
        "ok=0; for i in $(seq 3000); do curl -s -m 2 http://{server}:8080/ >/dev/null && ok=$((ok+1)); done; echo ok=$ok"
    );
    let r = neighbour
        .throughout(
            &srv,
            abuse,
            abuse_exec(&srv, &sid, &client, &script, LIMITED_SECS),
        )
        .await;
    assert_eq!(r["stdout"], "ok=3000\n", "{abuse}: {r}");
    delete_node(&srv, &sid, &client, abuse).await;
    delete_node(&srv, &sid, &server, abuse).await;
    Headroom::read(state_dir).assert_unharmed(&before, abuse);

    neighbour.still_fine(&srv, "after every abuse").await;
    srv.finish().await;
}
