//! Session logic over the fake runtime: no root, no nodes. Limits under concurrency, expiry and
//! its warning, extension caps, recovery, and the clean-up of a failed template.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::fake_runtime::FakeRuntime;
use crate::store::NodeRow;
use crate::wire::Role;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccc";
const D: &str = "dddddddddddddddddddddddddddddddd";

fn config() -> SessionConfig {
    SessionConfig {
        lifetime: Duration::from_secs(3600),
        max_lifetime: Duration::from_secs(7200),
        max_nodes: 5,
        sessions_per_client: 10,
        capacity: 100,
        disk_reserve_bytes: 4 << 30,
        base_domain: "localhost".into(),
        public_port: 8080,
        terminal: Default::default(),
        stack_sources: Vec::new(),
    }
}

struct Fixture {
    sessions: Arc<Sessions>,
    fake: Arc<FakeRuntime>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn store(&self) -> Store {
        Store::open(&self.dir.path().join("sandpit.db")).unwrap()
    }
}

fn fixture_with(fake: FakeRuntime, cfg: SessionConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(fake);
    let store = Store::open(&dir.path().join("sandpit.db")).unwrap();
    let sessions = Sessions::new(fake.clone(), store, cfg, Arc::new(Metrics::new()));
    Fixture {
        sessions,
        fake,
        dir,
    }
}

fn fixture(cfg: SessionConfig) -> Fixture {
    fixture_with(FakeRuntime::default(), cfg)
}

fn client(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}

async fn new_session(f: &Fixture) -> String {
    f.sessions.create(None, None, client(1)).await.unwrap().id
}

#[tokio::test]
async fn no_node_is_made_while_the_disk_is_below_its_reserve() {
    let f = fixture(config());
    let sid = new_session(&f).await;
    f.sessions.add_node(&sid, Default::default()).await.unwrap();
    // Something else fills the host's disk.
    f.fake.with(|s| s.disk_free = Some(3 << 30));
    f.sessions.sample_disk();
    let h = f.sessions.health();
    assert!(h.disk_low, "{h:?}");
    assert_eq!(h.disk_free_bytes, Some(3 << 30));
    let e = f
        .sessions
        .add_node(&sid, Default::default())
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::DiskLow { .. }), "{e:?}");
    assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        e.public_message(),
        "the server is at capacity; try again later"
    );
    let e = f
        .sessions
        .create(None, Some(Template::OneManagerOneWorker), client(2))
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::DiskLow { .. }), "{e:?}");
    // An empty session takes no disk; the running node stays usable.
    new_session(&f).await;
    assert_eq!(f.sessions.view(&sid).unwrap().nodes.len(), 1);
    // Room again (or an unreadable figure): nodes are made again.
    f.fake.with(|s| s.disk_free = Some(5 << 30));
    f.sessions.sample_disk();
    assert!(!f.sessions.health().disk_low);
    f.sessions.add_node(&sid, Default::default()).await.unwrap();
    f.fake.with(|s| s.disk_free = None);
    f.sessions.sample_disk();
    assert_eq!(f.sessions.health().disk_free_bytes, None);
    f.sessions.add_node(&sid, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_limits_hold_under_concurrent_requests() {
    let mut cfg = config();
    cfg.capacity = 7;
    let slow = FakeRuntime {
        create_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let f = fixture_with(slow, cfg);
    let (a, b) = (new_session(&f).await, new_session(&f).await);
    let add = |sid: String| {
        let s = f.sessions.clone();
        tokio::spawn(async move { s.add_node(&sid, Default::default()).await })
    };
    let mut tasks: Vec<_> = (0..12).map(|_| add(a.clone())).collect();
    tasks.extend((0..12).map(|_| add(b.clone())));
    let mut names = Vec::new();
    let (mut node_limit, mut at_capacity) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(node) => names.push(node.name),
            Err(SessionError::NodeLimit(5)) => node_limit += 1,
            Err(SessionError::AtCapacity(7)) => at_capacity += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(names.len(), 7, "capacity 7 over both sessions: {names:?}");
    assert_eq!(node_limit + at_capacity, 17);
    let views = [f.sessions.view(&a).unwrap(), f.sessions.view(&b).unwrap()];
    for v in &views {
        assert!(v.nodes.len() <= 5);
        let mut n: Vec<_> = v.nodes.iter().map(|n| n.name.clone()).collect();
        n.dedup();
        assert_eq!(n.len(), v.nodes.len(), "names are never shared: {n:?}");
    }
    assert_eq!(f.fake.nodes().len(), 7);
    assert_eq!(f.store().nodes().unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_limit_holds_under_concurrent_requests() {
    let mut cfg = config();
    cfg.sessions_per_client = 3;
    let f = fixture(cfg);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let s = f.sessions.clone();
            tokio::spawn(async move { s.create(None, None, client(7)).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(matches!(e, SessionError::ClientLimit(3)), "{e}"),
        }
    }
    assert_eq!(ok, 3);
    // Another address is not affected.
    f.sessions.create(None, None, client(8)).await.unwrap();
    assert_eq!(f.store().sessions().unwrap().len(), 4);
}

#[tokio::test]
async fn a_template_larger_than_the_room_is_refused() {
    let mut cfg = config();
    cfg.capacity = 4;
    let f = fixture(cfg);
    let e = f
        .sessions
        .create(None, Some(Template::ThreeManagersTwoWorkers), client(1))
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::AtCapacity(4)), "{e}");
    let mut cfg = config();
    cfg.max_nodes = 2;
    let f = fixture(cfg);
    let e = f
        .sessions
        .create(None, Some(Template::FiveManagers), client(1))
        .await
        .unwrap_err();
    assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{e}");
    assert!(f.fake.networks().is_empty());
}

#[tokio::test]
async fn a_removed_node_frees_its_slot_and_name() {
    let mut cfg = config();
    cfg.max_nodes = 2;
    let f = fixture(cfg);
    let sid = new_session(&f).await;
    f.sessions.add_node(&sid, Default::default()).await.unwrap();
    f.sessions.add_node(&sid, Default::default()).await.unwrap();
    assert!(matches!(
        f.sessions.add_node(&sid, Default::default()).await,
        Err(SessionError::NodeLimit(2))
    ));
    f.sessions.remove_node(&sid, "node1").await.unwrap();
    assert_eq!(
        f.sessions
            .add_node(&sid, Default::default())
            .await
            .unwrap()
            .name,
        "node1"
    );
    let e = f.sessions.remove_node(&sid, "node9").await.unwrap_err();
    assert!(matches!(e, SessionError::UnknownNode(_)), "{e}");
    let e = f.sessions.node_address(B, "node1").unwrap_err();
    assert!(matches!(e, SessionError::UnknownSession(_)), "{e}");
}

#[tokio::test]
async fn draining_refuses_new_sessions_and_nodes() {
    let f = fixture(config());
    let sid = new_session(&f).await;
    f.sessions.drain();
    assert!(matches!(
        f.sessions.create(None, None, client(1)).await,
        Err(SessionError::Draining)
    ));
    assert!(matches!(
        f.sessions.add_node(&sid, Default::default()).await,
        Err(SessionError::Draining)
    ));
    // What exists goes on.
    assert!(f.sessions.view(&sid).is_ok());
}

/// Waits until `sid` is gone from the sessions (its end runs in a task).
async fn gone(f: &Fixture, sid: &str) {
    for _ in 0..200 {
        if f.sessions.lock().get(sid).is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("session {sid} was not destroyed");
}

#[tokio::test]
async fn expiry_warns_once_then_ends_the_session() {
    let f = fixture(config());
    let sid = new_session(&f).await;
    f.sessions.add_node(&sid, Default::default()).await.unwrap();
    let mut events = f.sessions.events(&sid).unwrap();
    let expires = f.sessions.lock()[&sid].row.expires_at;
    f.sessions.expire_due(expires - 400);
    assert!(
        events.try_recv().is_err(),
        "no warning 400 s before the end"
    );
    f.sessions.expire_due(expires - 100);
    assert!(matches!(
        events.try_recv(),
        Ok(Event::Expiring { secs_left: 100, .. })
    ));
    f.sessions.expire_due(expires - 50);
    assert!(events.try_recv().is_err(), "one warning only");
    f.sessions.expire_due(expires);
    gone(&f, &sid).await;
    assert!(matches!(
        events.recv().await,
        Ok(Event::Ended {
            reason: EndReason::Expired
        })
    ));
    assert!(f.fake.networks().is_empty() && f.fake.nodes().is_empty());
    assert!(f.store().sessions().unwrap().is_empty());
    assert!(matches!(
        f.sessions.view(&sid),
        Err(SessionError::UnknownSession(_))
    ));
}

#[tokio::test]
async fn extensions_are_capped_and_warn_again() {
    let f = fixture(config());
    let sid = new_session(&f).await;
    let row = f.sessions.lock()[&sid].row.clone();
    assert_eq!(row.max_expires_at - row.created_at, 7200);
    for bad in [Some(0), Some(7201)] {
        let e = f.sessions.extend(&sid, bad).unwrap_err();
        assert!(matches!(e, SessionError::Invalid(_)), "{e}");
    }
    let mut events = f.sessions.events(&sid).unwrap();
    f.sessions.expire_due(row.expires_at - 10);
    assert!(matches!(events.try_recv(), Ok(Event::Expiring { .. })));
    // Twice the default lifetime asked for, capped at the maximum.
    let view = f.sessions.extend(&sid, Some(7200)).unwrap();
    assert_eq!(view.expires_at, rfc3339(row.max_expires_at));
    assert!(matches!(events.try_recv(), Ok(Event::Extended { .. })));
    let stored = f.store().sessions().unwrap();
    assert_eq!(stored[0].expires_at, row.max_expires_at);
    // Far from the end again: the next approach warns again.
    f.sessions.expire_due(row.max_expires_at - 10);
    assert!(matches!(events.try_recv(), Ok(Event::Expiring { .. })));
    let e = f.sessions.extend(B, None).unwrap_err();
    assert!(matches!(e, SessionError::UnknownSession(_)), "{e}");
}

#[tokio::test]
async fn recovery_reconciles_the_store_with_the_runtime() {
    let f = fixture(config());
    let now = now_secs();
    let row = |id: &str, expires_at: i64| SessionRow {
        id: id.into(),
        created_at: now - 10,
        expires_at,
        max_expires_at: now + 7200,
        template: None,
        client: client(1),
    };
    let store = f.store();
    store.insert_session(&row(A, now + 600)).unwrap(); // live
    store.insert_session(&row(B, now - 1)).unwrap(); // expired while down
    store.insert_session(&row(C, now + 600)).unwrap(); // its network is gone
    let node = |sid: &str, name: &str, role: Option<&str>| NodeRow {
        session: sid.into(),
        name: name.into(),
        image: "bookworm".into(),
        role: role.map(Into::into),
    };
    store.put_node(&node(A, "node1", Some("manager"))).unwrap();
    store.put_node(&node(A, "node2", None)).unwrap(); // gone from the runtime
    f.fake.adopt(A, "node1");
    f.fake.adopt(A, "node3"); // created but never recorded
    f.fake.adopt(B, "node1");
    f.fake.adopt(D, "node1"); // a network without a row
    f.fake.with(|s| s.networks.insert("other".into())); // not a session's

    f.sessions.recover().await.unwrap();

    let a = f.sessions.view(A).unwrap();
    let names: Vec<_> = a.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node1", "node3"]);
    assert_eq!(a.nodes[0].role, Some(Role::Manager));
    let mut stored: Vec<_> = store.nodes().unwrap().into_iter().map(|n| n.name).collect();
    stored.sort();
    assert_eq!(stored, ["node1", "node3"]);
    let ids: Vec<_> = store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [A]);
    assert_eq!(f.fake.networks(), [A.to_string(), "other".to_string()]);
    for gone in [B, C, D] {
        assert!(f.sessions.view(gone).is_err(), "{gone}");
    }
}

#[tokio::test]
async fn a_failed_template_ends_the_session_and_names_the_step() {
    let fake = FakeRuntime {
        fail_word: Some("join"),
        ..Default::default()
    };
    let f = fixture_with(fake, config());
    let req = crate::wire::CreateSession {
        template: Some(Template::OneManagerOneWorker),
        ..Default::default()
    };
    let e = crate::provision::create_session(&f.sessions, req, client(1))
        .await
        .unwrap_err();
    match &e {
        SessionError::Template { step, .. } => {
            assert_eq!(step, "node2 joins as a worker", "{e}")
        }
        e => panic!("expected a template error, got {e}"),
    }
    assert_eq!(
        e.public_message(),
        "node2 joins as a worker failed; see the server log"
    );
    assert!(f.fake.networks().is_empty() && f.fake.nodes().is_empty());
    assert!(f.store().sessions().unwrap().is_empty());
    assert!(f.sessions.lock().is_empty());
    let ran = f.fake.with(|s| s.commands.clone());
    assert!(
        ran.iter()
            .any(|c| c.starts_with("node1: docker swarm init")),
        "{ran:?}"
    );
}

#[tokio::test]
async fn a_template_forms_the_swarm_with_roles() {
    let f = fixture(config());
    let req = crate::wire::CreateSession {
        template: Some(Template::ThreeManagersTwoWorkers),
        duration_secs: Some(600),
        ..Default::default()
    };
    let view = crate::provision::create_session(&f.sessions, req, client(1))
        .await
        .unwrap();
    let roles: Vec<_> = view.nodes.iter().map(|n| n.role).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == Some(Role::Manager)).count(),
        3
    );
    assert_eq!(
        roles.iter().filter(|r| **r == Some(Role::Worker)).count(),
        2
    );
    assert_eq!(view.nodes[0].role, Some(Role::Manager));
    let stored = f.store().nodes().unwrap();
    assert_eq!(stored.iter().filter(|n| n.role.is_some()).count(), 5);
}

#[tokio::test]
async fn a_setup_forms_the_swarm_and_runs_every_command_in_order() {
    use crate::provision::{setup, NodePlan};
    let f = fixture(config());
    let sid = f.sessions.create(None, None, client(1)).await.unwrap().id;
    let cmd = |s: &str| vec!["sh".to_string(), "-c".into(), s.into()];
    let plan = [
        NodePlan {
            role: None,
            run: vec![cmd("echo plain")],
            ..Default::default()
        },
        NodePlan {
            role: Some(Role::Manager),
            node: crate::wire::AddNodeRequest {
                name: Some("manager1".into()),
                ..Default::default()
            },
            run: vec![cmd("echo one"), cmd("echo two")],
        },
        NodePlan {
            role: Some(Role::Worker),
            ..Default::default()
        },
    ];
    let runs = setup(&f.sessions, &sid, &plan).await.unwrap();
    let names: Vec<_> = runs.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(names, ["node1", "manager1", "node2"]);
    assert_eq!(runs[1].exit_codes, vec![Some(0), Some(0)]);
    let view = f.sessions.view(&sid).unwrap();
    let role = |n: &str| view.nodes.iter().find(|v| v.name == n).unwrap().role;
    assert_eq!(role(names[0]), None);
    assert_eq!(role(names[1]), Some(Role::Manager));
    assert_eq!(role(names[2]), Some(Role::Worker));
    let ran = f.fake.with(|s| s.commands.clone());
    let at = |needle: &str| ran.iter().position(|c| c.contains(needle)).expect(needle);
    assert!(at("swarm init") < at("swarm join"), "{ran:?}");
    assert!(at("echo one") < at("echo two"), "{ran:?}");
    assert!(
        ran.iter()
            .any(|c| c.starts_with(&format!("{}: sh -c echo plain", names[0]))),
        "{ran:?}"
    );

    // A session with nodes takes no setup; a worker needs a manager.
    let again = setup(&f.sessions, &sid, &plan[..1]).await.unwrap_err();
    assert!(matches!(again, SessionError::SessionNotEmpty), "{again}");
    let other = f.sessions.create(None, None, client(1)).await.unwrap().id;
    let lone = [NodePlan {
        role: Some(Role::Worker),
        ..Default::default()
    }];
    let e = setup(&f.sessions, &other, &lone).await.unwrap_err();
    assert!(e.to_string().contains("needs a manager"), "{e}");
    assert!(f.sessions.view(&other).unwrap().nodes.is_empty());
}
