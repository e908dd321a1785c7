//! The page in a real browser: `web/tests/run` (headless Debian chromium driven by
//! playwright-core; the scenarios are in `web/tests/browser.mjs`) against a real `sandpit serve`
//! with real nodes and the registry mirror: Start, a node, `docker run hello-world` in the
//! terminal, uploads, a published nginx port, reload with scrollback, the 3m2w swarm, expiry.
//! Screenshots land in `target/web-tests/` (or `$SANDPIT_WEB_OUT`); the page's Start-to-prompt
//! time is printed as a JSON line. A second test runs a training page made for
//! play-with-docker against the server, and stack links (`web/tests/pwd.mjs`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use sandpit_tests::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium() {
    let s = TestServer::start_with_registry(&[]);
    let url = format!("http://{}", s.addr());
    run_browser(&s, None, &[("SANDPIT_URL", url)]).await;
    s.finish().await;
}

/// vim with unsaved text in a node's terminal lives through a SIGKILL and restart of the
/// server: the page reconnects by itself to the same screen and `:wq` saves the text
/// (the `restart` scenario of `web/tests/browser.mjs`, which asks for the restart on stdout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vim_in_the_page_survives_a_server_crash() {
    use std::io::{BufRead, BufReader, Write};
    let mut s = TestServer::start_with_registry(&[]);
    let mut cmd = Command::new(repo().join("web/tests/run"));
    cmd.env("SANDPIT_URL", format!("http://{}", s.addr()))
        .env("SANDPIT_WEB_OUT", web_out())
        .env("SANDPIT_WEB_SCENARIOS", "restart")
        .env("SANDPIT_WEB_RESTART", "stdio")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("run web/tests/run");
    let mut stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut restarts = 0;
    tokio::task::block_in_place(|| {
        for line in stdout.lines() {
            let line = line.expect("read the browser tests' output");
            println!("{line}");
            if line == "sandpit-test: restart-server" {
                s.sigkill();
                s.restart_in_place();
                restarts += 1;
                writeln!(stdin, "restarted").expect("answer the browser tests");
            }
        }
    });
    let status = child.wait().expect("wait for web/tests/run");
    assert!(
        status.success() && restarts == 1,
        "browser tests failed ({status}, {restarts} restarts)\n--- server log ---\n{}",
        s.log_tail()
    );
    s.finish().await;
}

/// A training page made for play-with-docker, on an origin of its own, against the server
/// (`web/tests/pwd.mjs`); stack links on the landing page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_made_for_play_with_docker_in_chromium() {
    let (page, other) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{page}");
    let source = format!("{origin}/stacks/");
    let s = TestServer::start_with_registry(&["--pwd-origin", &origin, "--stack-source", &source]);
    // `localhost`, so that port links (`*.direct.localhost`) resolve in the browser.
    let port = s.addr().rsplit(':').next().expect("a port").to_string();
    let env = [
        ("SANDPIT_URL", format!("http://localhost:{port}")),
        ("SANDPIT_PWD_PAGE_PORT", page.to_string()),
        ("SANDPIT_PWD_OTHER_PORT", other.to_string()),
    ];
    run_browser(&s, Some("pwd"), &env).await;
    s.finish().await;
}

/// A loopback port free right now (the browser tests' static sites listen on it).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("its address").port()
}

/// Runs `web/tests/run [suite]` with `env` against `s` and fails with its output and the
/// server's log unless it passed.
async fn run_browser(s: &TestServer, suite: Option<&'static str>, env: &[(&str, String)]) {
    let mut cmd = Command::new(repo().join("web/tests/run"));
    cmd.args(suite).env("SANDPIT_WEB_OUT", web_out());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let result = tokio::task::spawn_blocking(move || cmd.output().expect("run web/tests/run"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    // The benchmark line, for whoever reads the test output.
    println!("{stdout}");
    assert!(
        result.status.success(),
        "browser tests failed ({}):\n{stderr}\n{stdout}\n--- server log ---\n{}",
        result.status,
        s.log_tail()
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned()
}

/// Where screenshots go: `$SANDPIT_WEB_OUT`, or `target/web-tests`.
fn web_out() -> PathBuf {
    std::env::var_os("SANDPIT_WEB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/web-tests"))
}
