//! Chaos: `sandpit serve` is SIGKILLed at random moments while clients create and delete
//! sessions, templates and nodes, and started again each time, 20 times. Whatever the server
//! confirmed (a 201 for a session or a node) is there afterwards and works; what it confirmed
//! deleted (a 204) stays gone; no answer is a 5xx other than "at capacity"; and once every
//! session is deleted through the API nothing of them is left on the host.
//!
//! The moments and the operations come from a seeded generator: the seed is printed, and
//! `SANDPIT_CHAOS_SEED=<seed>` replays a run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sandpit_tests::{Rng, TestServer};
use serde_json::{json, Value};

const ROUNDS: usize = 20;
/// Requests in flight when the server is killed, per round.
const OPS_PER_ROUND: usize = 4;
/// Confirmed nodes kept at most, so that the run stays small on 2 cores.
const MAX_NODES: usize = 10;
const ADMIN_TOKEN: &str = "chaos-admin-token";

/// What the server confirmed, from the clients' side.
#[derive(Default, Clone)]
struct Ledger {
    /// Sessions answered 201, with the nodes answered 201 (or made by their template).
    sessions: BTreeMap<String, BTreeSet<String>>,
    /// Sessions whose DELETE answered 204.
    deleted: BTreeSet<String>,
}

impl Ledger {
    fn nodes(&self) -> usize {
        self.sessions.values().map(BTreeSet::len).sum()
    }

    fn pick(&self, r: u64) -> Option<String> {
        let n = self.sessions.len() as u64;
        (n > 0).then(|| self.sessions.keys().nth((r % n) as usize).unwrap().clone())
    }
}

/// An answer no client should ever get: a 5xx other than 503 (a full or draining server).
fn check_status(what: &str, status: u16, body: &Value) {
    assert!(
        status < 500 || status == 503,
        "{what} answered {status}: {body}"
    );
}

/// One client request of a random kind; what the server confirms goes into the ledger. A
/// request that finds the server gone has an unknown outcome and confirms nothing.
async fn operate(srv: &TestServer, ledger: &Mutex<Ledger>, kind: u64, r: u64) {
    let (sessions, nodes) = {
        let l = ledger.lock().unwrap();
        (l.sessions.len(), l.nodes())
    };
    let room = nodes + 2 <= MAX_NODES;
    match kind {
        // An empty session.
        0 => {
            if let Ok((status, s)) = srv
                .try_request("POST", "/api/sessions", Some(json!({})))
                .await
            {
                check_status("create a session", status, &s);
                if status == 201 {
                    let id = s["id"].as_str().unwrap().to_owned();
                    ledger.lock().unwrap().sessions.insert(id, BTreeSet::new());
                }
            }
        }
        // A two-node swarm.
        1 if room => {
            let body = Some(json!({"template": "1m1w"}));
            if let Ok((status, s)) = srv.try_request("POST", "/api/sessions", body).await {
                check_status("create a 1m1w session", status, &s);
                if status == 201 {
                    let id = s["id"].as_str().unwrap().to_owned();
                    let names = ["node1".to_string(), "node2".to_string()].into();
                    ledger.lock().unwrap().sessions.insert(id, names);
                }
            }
        }
        // A node more.
        2 if room && sessions > 0 => {
            let Some(sid) = ledger.lock().unwrap().pick(r) else {
                return;
            };
            let path = format!("/api/sessions/{sid}/nodes");
            if let Ok((status, n)) = srv.try_request("POST", &path, Some(json!({}))).await {
                check_status("add a node", status, &n);
                if status == 201 {
                    let name = n["name"].as_str().unwrap().to_owned();
                    if let Some(nodes) = ledger.lock().unwrap().sessions.get_mut(&sid) {
                        nodes.insert(name);
                    }
                }
            }
        }
        // The end of a session; until the answer its fate is unknown, so it is no longer
        // counted on.
        _ if sessions > 2 => {
            let Some(sid) = ledger.lock().unwrap().pick(r) else {
                return;
            };
            ledger.lock().unwrap().sessions.remove(&sid);
            let path = format!("/api/sessions/{sid}");
            if let Ok((status, b)) = srv.try_request("DELETE", &path, None).await {
                check_status("delete a session", status, &b);
                if status == 204 {
                    ledger.lock().unwrap().deleted.insert(sid);
                }
            }
        }
        _ => {}
    }
}

/// Asserts that every confirmed session and node is there, and that deleted sessions are not.
async fn check_ledger(srv: &TestServer, ledger: &Ledger, exec: bool) {
    for (sid, nodes) in &ledger.sessions {
        let (status, s) = srv.get(&format!("/api/sessions/{sid}")).await;
        assert_eq!(status, 200, "confirmed session {sid} is gone: {s}");
        let running: BTreeSet<String> = s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "running")
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            nodes.is_subset(&running),
            "session {sid}: confirmed nodes {nodes:?}, running {running:?}: {s}"
        );
        if exec {
            for node in nodes {
                let r = srv.sh(sid, node, "echo ok").await;
                assert_eq!(r["stdout"], "ok\n", "{sid}/{node}: {r}");
            }
        }
    }
    for sid in &ledger.deleted {
        let (status, s) = srv.get(&format!("/api/sessions/{sid}")).await;
        assert_eq!(status, 404, "deleted session {sid} came back: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_work_survives_twenty_sigkills() {
    let seed = std::env::var("SANDPIT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos seed {seed} (SANDPIT_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let mut srv = TestServer::start(&["--admin-token", ADMIN_TOKEN, "--max-nodes", "3"]);
    let ledger = Mutex::new(Ledger::default());
    let started = Instant::now();
    for round in 0..ROUNDS {
        let pid = srv.pid();
        let kill_after = Duration::from_millis(100 + rng.below(2400) as u64);
        let ops: Vec<_> = (0..OPS_PER_ROUND)
            .map(|_| {
                let (kind, r) = (rng.below(4) as u64, rng.next_u64());
                operate(&srv, &ledger, kind, r)
            })
            .collect();
        let kill = async {
            tokio::time::sleep(kill_after).await;
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
        };
        tokio::join!(join_all(ops), kill);
        srv.restart();
        let l = ledger.lock().unwrap().clone();
        check_ledger(&srv, &l, false).await;
        eprintln!(
            "round {round}: killed after {kill_after:?}; {} sessions, {} nodes confirmed, {} deleted",
            l.sessions.len(),
            l.nodes(),
            l.deleted.len()
        );
    }
    eprintln!("{ROUNDS} kills in {:?}", started.elapsed());
    // Everything confirmed works, nodes included.
    let ledger = ledger.into_inner().unwrap();
    check_ledger(&srv, &ledger, true).await;

    // Every session, confirmed or not (a create whose answer was lost), ends through the API,
    // and then nothing of them is left on the host.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, all) = srv
        .request(
            "GET",
            "/api/admin/sessions",
            &[("authorization", &auth)],
            Vec::new(),
        )
        .await;
    assert_eq!(status, 200, "{all}");
    for s in all.as_array().unwrap() {
        let sid = s["id"].as_str().unwrap();
        let (status, b) = srv.delete(&format!("/api/sessions/{sid}")).await;
        assert_eq!(status, 204, "delete {sid}: {b}");
    }
    srv.assert_clean().await;
    srv.finish().await;
}
