//! Images inside nodes: `docker pull` goes through the host's mirror of the seed images with no
//! flags, a swarm resolves and deploys from it, pushes to `registry:5000` stay inside their
//! session, an unknown image fails at once, and everything survives a restart of the owner.
//!
//! The mirror's content comes from `ops/seed/publish` (run by the set-up); nothing here leaves
//! the machine: nodes have no egress, and the relays listen on the tests' own bridges.

use std::time::{Duration, Instant};

use sandbox::{NodeInfo, NodeSpec};
use sandpit_tests::{stderr, stdout, with_registry, TestRuntime};

/// Runs `script` in `node` until it succeeds, for at most `limit`.
async fn eventually(t: &TestRuntime, node: &NodeInfo, script: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let out = t.sh(node, script).await;
        if out.status.success() {
            return stdout(&out);
        }
        assert!(
            started.elapsed() < limit,
            "`{script}` still failing after {limit:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_minute_of_a_learner_works_offline() {
    let t = TestRuntime::with(with_registry).await;
    let nodes = t.session("first", 1).await;
    let n = &nodes[0];

    let hello = t.ok(n, "docker run --rm hello-world").await;
    assert!(hello.contains("Hello from Docker"), "{hello}");

    t.ok(n, "docker run -d -p 8080:80 nginx >/dev/null").await;
    let page = eventually(
        &t,
        n,
        "curl -sf http://node1:8080/",
        Duration::from_secs(30),
    )
    .await;
    assert!(page.contains("Welcome to nginx!"), "{page}");

    // Servers answer clients in other containers, by name on a user network.
    t.ok(
        n,
        "docker network create apps >/dev/null && \
         docker run -d --net apps --name cache redis >/dev/null && \
         docker run -d --net apps --name db -e POSTGRES_PASSWORD=x postgres >/dev/null",
    )
    .await;
    let pong = eventually(
        &t,
        n,
        "docker run --rm --net apps redis redis-cli -h cache ping",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(pong.trim(), "PONG");
    let one = eventually(
        &t,
        n,
        "docker run --rm --net apps -e PGPASSWORD=x postgres \
         psql -h db -U postgres -tAc 'select 40 + 2'",
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(one.trim(), "42");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_deploys_a_service_from_the_mirror() {
    let t = TestRuntime::with(with_registry).await;
    let nodes = t.session("swarm", 2).await;
    let (m, w) = (&nodes[0], &nodes[1]);
    t.ok(
        m,
        &format!("docker swarm init --advertise-addr {} >/dev/null", m.ip),
    )
    .await;
    let token = t.ok(m, "docker swarm join-token -q worker").await;
    t.ok(
        w,
        &format!("docker swarm join --token {} {}:2377", token.trim(), m.ip),
    )
    .await;
    // No --no-resolve-image: the manager resolves the tag to a digest through the mirror.
    // dnsrr: this kernel has no IPVS for service VIPs.
    t.ok(
        m,
        "docker service create -d --name web --replicas 2 --endpoint-mode dnsrr nginx >/dev/null",
    )
    .await;
    eventually(
        &t,
        m,
        "docker service ps web --filter desired-state=running --format '{{.CurrentState}}' \
         | grep -c Running | grep -qx 2",
        Duration::from_secs(120),
    )
    .await;
    let image = t
        .ok(
            m,
            "docker service inspect web --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}'",
        )
        .await;
    assert!(image.starts_with("nginx:latest@sha256:"), "{image}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_stay_inside_their_session() {
    let t = TestRuntime::with(with_registry).await;
    let a = t.session("alpha", 2).await;
    t.rt().create_network("beta").await.unwrap();
    let b = t
        .rt()
        .create_node(NodeSpec {
            network: "beta".into(),
            hostname: Some("node1".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    t.ok(
        &a[0],
        "docker pull -q busybox >/dev/null && \
         printf 'FROM busybox\\nCMD [\"echo\", \"built in alpha\"]\\n' > Dockerfile && \
         docker build -q -t registry:5000/team/app:1 . >/dev/null && \
         docker push registry:5000/team/app:1",
    )
    .await;
    let out = t
        .ok(&a[1], "docker run --rm registry:5000/team/app:1")
        .await;
    assert_eq!(out.trim(), "built in alpha");
    let catalog = t
        .ok(&a[1], "curl -sf http://registry:5000/v2/_catalog")
        .await;
    assert_eq!(catalog.trim(), r#"{"repositories":["team/app"]}"#);
    let tags = t
        .ok(&a[1], "curl -sf http://registry:5000/v2/team/app/tags/list")
        .await;
    assert!(tags.contains(r#""name":"team/app""#), "{tags}");

    // Another session sees nothing of it.
    let other = t.sh(&b, "docker pull registry:5000/team/app:1").await;
    assert!(!other.status.success());
    assert!(stderr(&other).contains("not found"), "{}", stderr(&other));
    let catalog = t.ok(&b, "curl -sf http://registry:5000/v2/_catalog").await;
    assert_eq!(catalog.trim(), r#"{"repositories":[]}"#);
    // Names cannot climb out of the namespace.
    let climb = t
        .ok(
            &b,
            "curl -s -o /dev/null -w '%{http_code}' --path-as-is \
             http://registry:5000/v2/../alpha/team/app/manifests/1",
        )
        .await;
    assert_eq!(climb, "400");

    // The mirror takes no pushes.
    let gw = t.rt().network("alpha").unwrap().gateway;
    let push = t
        .ok(
            &a[0],
            &format!(
                "curl -s -w ' %{{http_code}}' -X POST http://{gw}:{}/v2/library/x/blobs/uploads/",
                sandbox::MIRROR_PORT
            ),
        )
        .await;
    assert!(
        push.ends_with(" 405") && push.contains("read-only"),
        "{push}"
    );

    // A destroyed session's pushes go with it.
    let ns = t
        .cfg
        .state_dir
        .join("registry/push/docker/registry/v2/repositories/sessions/alpha");
    assert!(ns.is_dir());
    t.rt().destroy_network("alpha").await.unwrap();
    assert!(!ns.exists());
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_the_mirror_lacks_fails_at_once() {
    let t = TestRuntime::with(with_registry).await;
    let nodes = t.session("missing", 1).await;
    let started = Instant::now();
    // A hang would be cut by the limit and fail the test.
    let out = t
        .sh_timeout(
            &nodes[0],
            "docker pull no-such-image-here",
            Duration::from_secs(60),
        )
        .await;
    assert!(!out.status.success());
    let err = stderr(&out);
    // Docker's own words for an image that does not exist, not a network error.
    assert!(
        err.contains("no-such-image-here") && err.contains("not found")
            || err.contains("repository does not exist"),
        "{err} after {:?}",
        started.elapsed()
    );
    assert!(
        !err.contains("no such host") && !err.contains("x509"),
        "{err}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_survive_a_restart_of_their_owner() {
    let mut t = TestRuntime::with(with_registry).await;
    let nodes = t.session("again", 2).await;
    t.ok(
        &nodes[0],
        "docker pull -q hello-world >/dev/null && docker tag hello-world registry:5000/hi && \
         docker push -q registry:5000/hi",
    )
    .await;

    // The owner goes away (its registries and relays with it) and a new one adopts the nodes.
    drop(t.rt.take());
    t.rt = Some(std::sync::Arc::new(
        sandbox::Runtime::open(t.cfg.clone()).await.unwrap(),
    ));

    let hi = t.ok(&nodes[1], "docker run --rm registry:5000/hi").await;
    assert!(hi.contains("Hello from Docker"), "{hi}");
    t.ok(&nodes[1], "docker pull -q busybox").await;
    t.finish().await;
}
