//! `sandpit serve` on port 0: prints its address once ready, answers `/healthz`, adopts the
//! nodes of its state directory, runs the registries (which die with it, even when it is
//! killed, and keep their content), and exits cleanly on SIGTERM; a second server on the same
//! subnet pool takes turns in it instead of breaking the first one's networks.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandpit_tests::{
    sandpit_bin, test_config, with_registry, CleanupGuard, KillOnDrop, TestRuntime, TestServer,
};

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_health_and_stops_on_sigterm() {
    let (cfg, claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    // A node left by an earlier process, for the server to adopt.
    {
        let t = TestRuntime::open(cfg.clone(), ()).await;
        t.session("srv", 1).await;
        let mut t = t;
        drop(t.rt.take()); // close without destroying
    }
    let (mut server, addr) = start_serve(&cfg);
    let health = get(&addr, "/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    assert!(health.contains(r#""status":"ok""#), "{health}");
    assert!(
        health.contains(r#""nodes":1"#),
        "adopted the node: {health}"
    );

    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // The node outlived the server; clean it up through a fresh runtime.
    let t = TestRuntime::open(cfg, claim).await;
    assert_eq!(t.rt().nodes().len(), 1);
    t.finish().await;
}

/// Starts `sandpit serve` on `cfg`'s state directory and returns it with its address.
fn start_serve(cfg: &sandbox::RuntimeConfig) -> (KillOnDrop, String) {
    let mut server = KillOnDrop(
        Command::new(sandpit_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(cfg.state_dir.parent().unwrap())
            .args(["--prefix", &cfg.prefix])
            .args(["--subnet-pool", &cfg.subnet_pool.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sandpit serve"),
    );
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("sandpit listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (server, addr)
}

/// The registry processes a configuration's runtime left running.
async fn registries(cfg: &sandbox::RuntimeConfig) -> Vec<String> {
    sandbox::Runtime::leftovers(cfg)
        .await
        .into_iter()
        .filter(|l| l.contains("docker-registry"))
        .collect()
}

/// `GET path` from the registry listening on `socket`.
fn registry_get(socket: &std::path::Path, path: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: registry\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_registries_and_they_die_with_it() {
    let (mut cfg, claim) = test_config();
    with_registry(&mut cfg);
    let _cleanup = CleanupGuard(cfg.clone());
    {
        let mut t = TestRuntime::open(cfg.clone(), ()).await;
        let nodes = t.session("reg", 1).await;
        t.ok(
            &nodes[0],
            "docker pull -q hello-world >/dev/null && docker tag hello-world registry:5000/kept \
             && docker push -q registry:5000/kept",
        )
        .await;
        drop(t.rt.take()); // close without destroying
    }
    let dir = cfg.state_dir.join("registry");

    // A killed server takes its registries along (they get SIGTERM from the kernel).
    let (mut server, _) = start_serve(&cfg);
    assert!(registry_get(&dir.join("mirror.sock"), "/v2/_catalog").contains("library/nginx"));
    server.sigkill();
    let started = Instant::now();
    while !registries(&cfg).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "registries outlived their server: {:?}",
            registries(&cfg).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next server serves what was pushed before.
    let (server, _) = start_serve(&cfg);
    let tags = registry_get(&dir.join("push.sock"), "/v2/sessions/reg/kept/tags/list");
    assert!(tags.contains(r#""tags":["latest"]"#), "{tags}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut server = server;
    assert!(server.0.wait().unwrap().success());
    assert!(
        registries(&cfg).await.is_empty(),
        "{:?}",
        registries(&cfg).await
    );

    let t = TestRuntime::open(cfg, claim).await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_a_taken_pool_says_so_with_a_503_and_why_in_its_log() {
    let first = TestServer::start(&[]);
    let taken = first.cfg.subnet_pool.nth_subnet(24, 0).unwrap();
    // Its whole pool is the first server's first /24.
    let second = TestServer::start_configured(&[], |c| c.subnet_pool = taken);

    let sid = first.session_id().await;
    let bridge = format!("{}b0", first.cfg.prefix);
    let (status, body) = second.post("/api/sessions", serde_json::json!({})).await;
    assert_eq!(status, 503, "{body}\n{}", second.log_tail());
    // The visitor learns the server is full; the operator's log says why and what to do.
    assert_eq!(
        body["error"], "the server is at capacity; try again later",
        "{body}"
    );
    let expected = format!(
        "no free /24 in the pool {taken}: 1 overlap routes or addresses on this host \
         (e.g. {taken} via {bridge}); configure --subnet-pool"
    );
    assert!(
        second.log_tail().contains(&expected),
        "{}",
        second.log_tail()
    );

    // Once the first server's network is gone, the /24 is the second one's.
    assert_eq!(first.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    let (status, body) = second.post("/api/sessions", serde_json::json!({})).await;
    assert_eq!(status, 201, "{body}\n{}", second.log_tail());
    first.finish().await;
    second.finish().await;
}

/// The disk as a resource: with a reserve larger than the free space, the server plans no node
/// (its log says why), says so in `/healthz` and `/metrics`, and answers a new node with a 503
/// while an empty session still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_disk_room_makes_no_nodes_and_says_so() {
    let srv = TestServer::start(&["--disk-reserve-gib", "1000000"]);
    let (status, health) = srv.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["disk_low"], true, "{health}");
    assert_eq!(health["capacity"], 0, "{health}");
    assert!(health["disk_free_bytes"].as_u64().unwrap() > 0, "{health}");
    assert_eq!(health["disk_reserve_bytes"], 1_000_000u64 << 30, "{health}");
    let (status, metrics) = srv.request_raw("GET", "/metrics", &[], Vec::new()).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(status, 200);
    assert!(metrics.contains("sandpit_disk_low 1"), "{metrics}");
    assert!(metrics.contains("sandpit_capacity 0"), "{metrics}");
    assert!(
        srv.log_tail().contains("capacity: 0 nodes (not "),
        "{}",
        srv.log_tail()
    );

    let sid = srv.session_id().await;
    let (status, body) = srv
        .post(&format!("/api/sessions/{sid}/nodes"), serde_json::json!({}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at capacity"),
        "{body}"
    );
    srv.finish().await;
}
