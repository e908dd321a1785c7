//! Node lifecycle: repeated create/destroy leaves nothing behind, nodes outlive a crash of the
//! process that made them and are adopted or destroyed on the next start, and bad input gives
//! a clear error without leaving anything half-made.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox::{Error, NodeSpec, OrphanPolicy, Runtime, Subnet};
use sandpit_tests::{sandpit_bin, test_config, CleanupGuard, KillOnDrop, TestRuntime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_create_destroy_cycles_leave_nothing_behind() {
    let t = TestRuntime::new().await;
    t.rt().create_network("cycles").await.unwrap();
    for i in 0..20 {
        let node = t
            .rt()
            .create_node(NodeSpec {
                network: "cycles".into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        assert_eq!(node.hostname, "node1", "the first free name is reused");
        if i % 5 == 0 {
            t.ok(&node, "docker info >/dev/null").await;
        }
        t.rt().destroy_node("cycles", "node1").await.unwrap();
    }
    assert!(t.rt().nodes().is_empty());
    t.finish().await;
}

/// `sandpit node create --hold` with the test's configuration, as a separate process.
fn spawn_creator(cfg: &sandbox::RuntimeConfig, network: &str) -> KillOnDrop {
    let child = Command::new(sandpit_bin())
        .args(["node", "create", "--network", network, "--hold"])
        .arg("--state-dir")
        .arg(cfg.state_dir.parent().unwrap())
        .args(["--prefix", &cfg.prefix])
        .args(["--subnet-pool", &cfg.subnet_pool.to_string()])
        .args(["--node-memory-mib", "1024", "--node-disk-gib", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sandpit node create");
    KillOnDrop(child)
}

/// Reads the node JSON the creator prints once the node is ready.
fn wait_created(child: &mut KillOnDrop) -> serde_json::Value {
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("creator printed {line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_survives_a_crash_of_its_creator_and_is_adopted() {
    let (cfg, claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    let mut creator = spawn_creator(&cfg, "crash");
    let made = wait_created(&mut creator);
    creator.sigkill();

    let t = TestRuntime::open(cfg, claim).await;
    let node = t.rt().node("crash", "node1").expect("node adopted");
    assert_eq!(
        node.init_pid.map(serde_json::Value::from),
        Some(made["init_pid"].clone()),
        "the same node, not a new one"
    );
    assert_eq!(t.ok(&node, "hostname").await.trim(), "node1");
    t.ok(&node, "docker info >/dev/null").await;
    // The adopted network still works for new nodes.
    let n2 = t
        .rt()
        .create_node(NodeSpec {
            network: "crash".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    t.ok(&n2, "ping -c1 -W2 node1 >/dev/null").await;
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_destroyed_when_so_configured() {
    let (mut cfg, claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    let mut creator = spawn_creator(&cfg, "orphan");
    wait_created(&mut creator);
    creator.sigkill();

    cfg.orphans = OrphanPolicy::Destroy;
    let t = TestRuntime::open(cfg, claim).await;
    assert!(t.rt().nodes().is_empty());
    assert!(t.rt().networks().is_empty());
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_interrupted_by_a_crash_is_cleaned_up() {
    let (cfg, claim) = test_config();
    let _cleanup = CleanupGuard(cfg.clone());
    let mut creator = spawn_creator(&cfg, "cut");
    // Kill the creator as soon as the node's record exists, in the middle of the build.
    let record = cfg.state_dir.join("nodes/cut-node1/node.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !record.exists() {
        assert!(
            Instant::now() < deadline,
            "the creator never started the node"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    creator.sigkill();

    let t = TestRuntime::open(cfg, claim).await;
    // Either the kill came before the node was ready and it was cleaned up, or it was ready
    // and is adopted whole; never anything in between.
    if let Some(node) = t.rt().node("cut", "node1") {
        t.ok(&node, "docker info >/dev/null").await;
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors_and_leaves_nothing() {
    // A pool with room for two /24 networks of which the second has room for one node.
    let t = TestRuntime::with(|c| {
        c.subnet_pool = Subnet::new(c.subnet_pool.network(), 23);
    })
    .await;
    let rt = t.rt();
    rt.create_network("bad").await.unwrap();

    let spec = |image: Option<&str>, host: Option<&str>| NodeSpec {
        network: "bad".into(),
        hostname: host.map(Into::into),
        image: image.map(Into::into),
    };
    let e = rt.create_node(spec(Some("nope"), None)).await.unwrap_err();
    assert!(matches!(e, Error::Image(_)), "{e:?}");
    assert!(e.to_string().contains("unknown image \"nope\""), "{e}");
    assert!(e.to_string().contains("bookworm"), "lists what exists: {e}");

    let e = rt
        .create_node(spec(None, Some("Bad_Name")))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e:?}");

    let e = rt
        .create_node(NodeSpec {
            network: "nosuch".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownNetwork(_)), "{e:?}");

    let first = rt.create_node(spec(None, Some("web"))).await.unwrap();
    let e = rt.create_node(spec(None, Some("web"))).await.unwrap_err();
    assert!(matches!(e, Error::NameTaken { .. }), "{e:?}");
    assert!(e.to_string().contains("already taken"), "{e}");
    // The failed attempts did not disturb the node that holds the name.
    t.ok(&first, "docker info >/dev/null").await;

    let e = rt.create_network("bad").await.unwrap_err();
    assert!(matches!(e, Error::NetworkExists(_)), "{e:?}");
    rt.create_network("second").await.unwrap();
    let e = rt.create_network("third").await.unwrap_err();
    assert!(matches!(e, Error::SubnetPoolExhausted(_)), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!(
            "no free /24 in the pool {}: 2 used by this instance's networks",
            t.cfg.subnet_pool
        )),
        "{e}"
    );

    // Another process cannot take over a state directory in use.
    let e = Runtime::open(t.cfg.clone()).await.err().expect("busy");
    assert!(matches!(e, Error::Busy(_)), "{e:?}");

    assert_eq!(rt.nodes().len(), 1, "only the good node exists");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_network_and_a_missing_base_image_are_refused() {
    let empty_images =
        std::env::temp_dir().join(format!("sandpit-noimages-{}", std::process::id()));
    std::fs::create_dir_all(&empty_images).unwrap();
    // A /30 has two usable addresses: the bridge and one node.
    let t = TestRuntime::with(|c| c.network_prefix_len = 30).await;
    let rt = t.rt();
    rt.create_network("tiny").await.unwrap();
    let spec = NodeSpec {
        network: "tiny".into(),
        ..Default::default()
    };
    rt.create_node(spec.clone()).await.unwrap();
    let e = rt.create_node(spec.clone()).await.unwrap_err();
    assert!(matches!(e, Error::NetworkFull(_)), "{e:?}");
    t.finish().await;

    let t = TestRuntime::with(|c| c.images_dir = empty_images.clone()).await;
    t.rt().create_network("noimg").await.unwrap();
    let e = t
        .rt()
        .create_node(NodeSpec {
            network: "noimg".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("ops/setup"),
        "says how to fix it: {e}"
    );
    assert!(e.to_string().contains("available: none"), "{e}");
    assert!(t.rt().nodes().is_empty());
    t.finish().await;
    std::fs::remove_dir_all(&empty_images).unwrap();
}
