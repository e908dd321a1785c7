//! Shells outlive the server: a SIGKILL, a restart or a SIGTERM and a new server leave every
//! terminal's shell running in its holder; the next server takes it over and viewers resume
//! in the same stream at the same offsets, with no gap and no duplicate. Real nodes, a real
//! server, real WebSockets.

use std::collections::BTreeMap;
use std::time::Duration;

use sandpit_tests::{TermClient, TestServer};

const PATIENCE: Duration = Duration::from_secs(60);

/// The holders of this server's shells: pid and number of open descriptors.
fn holders(srv: &TestServer) -> BTreeMap<i32, usize> {
    let cgroup = format!("{}/", srv.cfg.cgroup_parent);
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args
            .windows(2)
            .any(|w| w[0] == b"--cgroup" && w[1].starts_with(cgroup.as_bytes()));
        if ours && args.contains(&&b"--hold"[..]) {
            let fds = std::fs::read_dir(entry.path().join("fd")).map_or(0, |d| d.count());
            found.insert(pid, fds);
        }
    }
    found
}

/// The numbers `n<i>` the counter loop printed, in the order they arrived.
fn counted(output: &[u8]) -> Vec<u64> {
    // A line may start with what the shell printed before it (bracketed paste's reset).
    String::from_utf8_lossy(output)
        .split("\r\n")
        .filter_map(|line| line.rsplit('\r').next()?.strip_prefix('n')?.parse().ok())
        .collect()
}

/// Reads until the counter printed `n<at_least>` (or more).
async fn count_to(t: &mut TermClient, at_least: u64) {
    t.expect(&format!("n{at_least}\r\n"), PATIENCE).await;
}

/// Opens `node`'s terminal `name` again, resuming `old` in its stream.
async fn resume(
    srv: &TestServer,
    sid: &str,
    node: &str,
    name: &str,
    old: &TermClient,
) -> TermClient {
    let query = format!(
        "?name={name}&since={}&stream={}",
        old.offset(),
        old.stream()
    );
    let t = srv.terminal_with(sid, node, &query).await;
    assert_eq!(t.stream(), old.stream(), "the stream goes on: {}", t.hello);
    assert_eq!(
        t.offset(),
        old.offset(),
        "resumed where it stopped: {}",
        t.hello
    );
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counting_shell_survives_sigkill_and_sigterm_without_a_gap() {
    let mut srv = TestServer::start(&[]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    let mut t = srv.terminal(&sid, "node1").await;
    t.send("echo $$ > /root/shpid; for i in $(seq 1 1000000); do echo n$i; sleep 0.01; done\r")
        .await;
    count_to(&mut t, 20).await;
    let mut seen = t.output.clone();

    // A crash: the counter keeps going into the PTY (and pauses when it is full).
    srv.sigkill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.restart();
    let mut t = resume(&srv, &sid, "node1", "main", &t).await;
    let last = *counted(&seen).last().unwrap();
    count_to(&mut t, last + 50).await;
    seen.extend_from_slice(&t.output);

    // An upgrade: SIGTERM, then a new server on the same state.
    assert!(srv.sigterm().success(), "{}", srv.log_tail());
    srv.restart();
    let mut t = resume(&srv, &sid, "node1", "main", &t).await;
    let last = *counted(&seen).last().unwrap();
    count_to(&mut t, last + 50).await;
    seen.extend_from_slice(&t.output);

    let numbers = counted(&seen);
    let expected: Vec<u64> = (1..=*numbers.last().unwrap()).collect();
    assert_eq!(numbers, expected, "every number once, in order");

    // The same shell, interrupted and still answering.
    let pid = srv
        .sh(
            &sid,
            "node1",
            "kill -0 $(cat /root/shpid) && cat /root/shpid",
        )
        .await;
    assert_eq!(pid["exit_code"], 0, "{pid}");
    t.send("\x03").await;
    t.send("echo alive-$((3+4)) $$\r").await;
    let shpid = pid["stdout"].as_str().unwrap().trim().to_string();
    t.expect(&format!("alive-7 {shpid}"), PATIENCE).await;

    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_terminals_live_through_twenty_sigkills() {
    let mut srv = TestServer::start(&[]);
    let sid = srv.session_id().await;
    let mut terms: Vec<(String, String)> = Vec::new();
    for (node, names) in [
        ("node1", &["main", "t1", "t2", "t3"][..]),
        ("node2", &["main", "t1", "t2", "t3"][..]),
        ("node3", &["main", "t1"][..]),
    ] {
        srv.node(&sid).await;
        terms.extend(names.iter().map(|n| (node.to_string(), n.to_string())));
    }
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for (node, name) in &terms {
        let mut t = srv
            .terminal_with(&sid, node, &format!("?name={name}"))
            .await;
        // The marker is computed, so the echo of the typed line does not match it.
        t.send("echo pid=$$=$((6*7))\r").await;
        t.expect("=42\r\n", PATIENCE).await;
        let text = String::from_utf8_lossy(&t.output).to_string();
        let pid = text
            .rsplit("pid=")
            .next()
            .unwrap()
            .split('=')
            .next()
            .unwrap()
            .to_string();
        pids.push(pid);
        clients.push(t);
    }
    let first = holders(&srv);
    assert_eq!(first.len(), 10, "a holder per terminal: {first:?}");

    for cycle in 0..20 {
        srv.sigkill();
        srv.restart();
        let i = cycle % terms.len();
        let (node, name) = &terms[i];
        let mut t = resume(&srv, &sid, node, name, &clients[i]).await;
        t.send(&format!("echo cycle-$((1000+{cycle}))\r")).await;
        t.expect(&format!("cycle-{}", 1000 + cycle), PATIENCE).await;
        clients[i] = t;
    }

    // The same holders, none more, none holding more descriptors than before.
    let last = holders(&srv);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        last.keys().collect::<Vec<_>>(),
        "the same holders"
    );
    for (pid, fds) in &last {
        assert!(
            *fds <= first[pid],
            "holder {pid} went from {} to {fds} descriptors",
            first[pid]
        );
    }
    // Every shell is the one it was.
    for (i, (node, name)) in terms.iter().enumerate() {
        let mut t = resume(&srv, &sid, node, name, &clients[i]).await;
        t.send("echo now=$$=$((6*7))\r").await;
        t.expect(&format!("now={}=42", pids[i]), PATIENCE).await;
    }

    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    assert!(holders(&srv).is_empty(), "holders outlived their session");
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_that_ended_meanwhile_is_replaced_and_deleting_ends_holders() {
    let mut srv = TestServer::start(&[]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    srv.node(&sid).await;
    let mut t = srv.terminal(&sid, "node1").await;
    t.send("sleep 1; exit 3\r").await;
    t.expect("sleep 1; exit 3", PATIENCE).await;
    srv.sigkill();
    // The shell ends while no server is there; its holder keeps the stream for the next one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    srv.restart();
    let mut t = resume(&srv, &sid, "node1", "main", &t).await;
    t.expect(
        "shell exited (exit status: 3); starting a new shell",
        PATIENCE,
    )
    .await;
    t.send("echo fresh-$((5+5))\r").await;
    t.expect("fresh-10", PATIENCE).await;
    assert_eq!(holders(&srv).len(), 1, "the new shell's holder only");

    // Deleting a node ends its terminals and their holders; the other node's stay.
    let mut other = srv.terminal(&sid, "node2").await;
    other.send("echo two\r").await;
    other.expect("two", PATIENCE).await;
    assert_eq!(holders(&srv).len(), 2);
    assert_eq!(
        srv.delete(&format!("/api/sessions/{sid}/nodes/node1"))
            .await
            .0,
        204
    );
    t.until_closed(PATIENCE).await;
    let left = holders(&srv);
    assert_eq!(left.len(), 1, "node2's holder only: {left:?}");
    other.send("echo still\r").await;
    other.expect("still", PATIENCE).await;

    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.assert_clean().await;
    srv.finish().await;
}
