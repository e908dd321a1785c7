//! `sandpit serve` on port 0: prints its address once ready, answers `/healthz`, adopts the
//! nodes of its state directory, and exits cleanly on SIGTERM.

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandpit_tests::{sandpit_bin, test_config, CleanupGuard, KillOnDrop, TestRuntime};

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
