//! The page in a real browser: `web/tests/run` (headless Debian chromium driven by
//! playwright-core; the scenarios are in `web/tests/browser.mjs`) against a real `sandpit serve`
//! with real nodes and the registry mirror: Start, a node, `docker run hello-world` in the
//! terminal, uploads, a published nginx port, reload with scrollback, the 3m2w swarm, expiry.
//! Screenshots land in `target/web-tests/` (or `$SANDPIT_WEB_OUT`); the page's Start-to-prompt
//! time is printed as a JSON line.

use std::path::PathBuf;
use std::process::Command;

use sandpit_tests::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_owned();
    let out = std::env::var_os("SANDPIT_WEB_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/web-tests"));
    let s = TestServer::start_with_registry(&[]);
    let url = format!("http://{}", s.addr());
    let run = repo.join("web/tests/run");
    let result = tokio::task::spawn_blocking(move || {
        Command::new(run)
            .env("SANDPIT_URL", url)
            .env("SANDPIT_WEB_OUT", &out)
            .output()
            .expect("run web/tests/run")
    })
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
    s.finish().await;
}
