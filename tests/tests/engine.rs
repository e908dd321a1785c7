//! The Docker of today in every node, through a real `sandpit serve` with the registry mirror:
//! the default image's engine, Compose v2 and buildx; the sample compose project in every
//! node's home; BuildKit builds offline (multi-stage, from cache the second time) and a buildx
//! push to the session registry that another node runs; a `3m2w` swarm that deploys a stack
//! with `dnsrr` services and host-mode ports; and a node of the older `bookworm` image beside
//! them.

use sandpit_tests::TestServer;
use serde_json::{json, Value};

/// `stdout` of an exec result.
fn out(r: &Value) -> &str {
    r["stdout"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_image_has_compose_and_buildx_and_bookworm_remains() {
    let srv = TestServer::start_with_registry(&[]);

    // What the page offers: trixie by default, with its versions; bookworm beside it.
    let (status, images) = srv.get("/api/images").await;
    assert_eq!(status, 200, "{images}");
    assert_eq!(images["default"], "trixie", "{images}");
    let by_name = |name: &str| -> Value {
        images["images"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no image {name} in {images}"))
    };
    let trixie = by_name("trixie");
    assert_eq!(trixie["debian"], "trixie");
    for tool in ["docker", "compose", "buildx"] {
        assert!(trixie[tool].is_string(), "{tool} of trixie: {trixie}");
    }
    assert!(by_name("bookworm")["compose"].is_null(), "{images}");

    let sid = srv.session_id().await;
    let node = srv.node(&sid).await;
    assert_eq!(node["image"], "trixie");

    // The engine is the image's, and the plugins answer.
    let v = srv
        .sh(
            &sid,
            "node1",
            "docker version -f '{{.Server.Version}}'; docker compose version --short; \
             docker buildx version",
        )
        .await;
    let lines: Vec<&str> = out(&v).lines().collect();
    assert_eq!(lines.len(), 3, "{v}");
    assert!(
        lines[0].starts_with(trixie["docker"].as_str().unwrap()),
        "{v}"
    );
    assert!(
        lines[1].starts_with(trixie["compose"].as_str().unwrap()),
        "{v}"
    );
    assert!(lines[2].contains("buildx"), "{v}");
    // The welcome message says so.
    let motd = srv.sh(&sid, "node1", "cat /etc/motd").await;
    assert!(out(&motd).contains("Docker Engine 26."), "{motd}");
    assert!(out(&motd).contains("cd ~/compose-demo"), "{motd}");

    // The sample project: three services offline, nginx -> app -> redis, then gone again.
    let up = srv
        .sh(
            &sid,
            "node1",
            "cd ~/compose-demo && docker compose up -d --quiet-pull 2>&1 && \
             for i in $(seq 60); do curl -fsS localhost:8080 >/dev/null 2>&1 && break; sleep 0.5; done; \
             curl -fsS localhost:8080 && curl -fsS localhost:8080 && \
             docker compose ps --format '{{.Service}} {{.State}}' | sort",
        )
        .await;
    assert!(
        out(&up).ends_with(
            "Hello from the sandpit compose demo! Visits: 2\n\
             Hello from the sandpit compose demo! Visits: 3\n\
             app running\nredis running\nweb running\n"
        ),
        "{up}"
    );
    let down = srv
        .sh(
            &sid,
            "node1",
            "cd ~/compose-demo && docker compose down 2>&1 >/dev/null && docker ps -aq | wc -l",
        )
        .await;
    assert_eq!(out(&down).lines().last(), Some("0"), "{down}");

    // A node of the older image still works, and says what it lacks.
    let (status, old) = srv
        .post(
            &format!("/api/sessions/{sid}/nodes"),
            json!({"image": "bookworm"}),
        )
        .await;
    assert_eq!(status, 201, "{old}");
    assert_eq!(old["image"], "bookworm");
    let hello = srv
        .sh(
            &sid,
            "node2",
            "docker version -f '{{.Server.Version}}' && docker run --rm hello-world",
        )
        .await;
    assert!(out(&hello).starts_with("20.10."), "{hello}");
    assert!(out(&hello).contains("Hello from Docker"), "{hello}");
    let motd = srv.sh(&sid, "node2", "cat /etc/motd").await;
    assert!(out(&motd).contains("No Compose v2 or buildx"), "{motd}");
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkit_builds_offline_and_buildx_pushes_to_the_session_registry() {
    let srv = TestServer::start_with_registry(&[]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    srv.node(&sid).await;

    // A multi-stage build from the `python` and `debian` seeds, twice: the second from cache.
    let dockerfile = r#"mkdir -p /root/app && cd /root/app && cat >Dockerfile <<'EOF'
FROM python AS build
RUN python3 -c 'open("/greeting", "w").write("built by buildkit\n")'
FROM debian
COPY --from=build /greeting /greeting
CMD ["cat", "/greeting"]
EOF
"#;
    srv.sh(&sid, "node1", dockerfile).await;
    let build = "cd /root/app && docker build --progress=plain -t app . 2>&1";
    let first = srv.sh(&sid, "node1", build).await;
    assert!(!out(&first).contains("CACHED"), "{first}");
    let second = srv.sh(&sid, "node1", build).await;
    assert_eq!(out(&second).matches("CACHED").count(), 2, "{second}");
    let run = srv.sh(&sid, "node1", "docker run --rm app").await;
    assert_eq!(out(&run), "built by buildkit\n", "{run}");

    // buildx pushes to the session registry, and another node of the session runs it.
    srv.sh(
        &sid,
        "node1",
        "cd /root/app && docker buildx build --push -t registry:5000/app:1 . 2>&1",
    )
    .await;
    let other = srv
        .sh(&sid, "node2", "docker run --rm registry:5000/app:1")
        .await;
    assert!(out(&other).ends_with("built by buildkit\n"), "{other}");

    // A `# syntax=` line names a frontend image on Docker Hub, which offline does not exist:
    // the build fails at once, naming it.
    let syntax = srv
        .sh_result(
            &sid,
            "node1",
            "cd /root/app && { echo '# syntax=docker/dockerfile:1'; cat Dockerfile; } >Dockerfile.syntax && \
             docker build -f Dockerfile.syntax . 2>&1",
        )
        .await;
    assert_ne!(syntax["exit_code"], 0, "{syntax}");
    assert!(
        out(&syntax).contains("docker/dockerfile:1: not found"),
        "{syntax}"
    );
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3m2w_swarm_deploys_a_stack_with_dnsrr_and_host_ports() {
    let srv = TestServer::start_with_registry(&[]);
    let s = srv.session(json!({"template": "3m2w"})).await;
    let sid = s["id"].as_str().unwrap();
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["image"] == "trixie"),
        "{s}"
    );
    // Without IPVS (these hosts) services need DNS round robin and host-mode ports.
    let stack = r#"mkdir -p /root/stack && cd /root/stack && cat >stack.yml <<'EOF'
services:
  web:
    image: nginx
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement:
        max_replicas_per_node: 1
    ports:
      - target: 80
        published: 8080
        mode: host
  probe:
    image: busybox
    command: ["sleep", "3600"]
    deploy:
      endpoint_mode: dnsrr
EOF
docker stack deploy -c stack.yml demo >/dev/null 2>&1 &&
for i in $(seq 200); do
  r=$(docker service ls --format '{{.Name}} {{.Replicas}}' | sort | cut -d' ' -f1,2 | tr '\n' ' ')
  [ "$r" = "demo_probe 1/1 demo_web 2/2 " ] && break
  sleep 0.5
done
echo "$r"
"#;
    let deployed = srv.sh(sid, "node1", stack).await;
    assert_eq!(
        out(&deployed),
        "demo_probe 1/1 demo_web 2/2 \n",
        "{deployed}"
    );

    // Each replica answers on its node's published port.
    let pages = srv
        .sh(
            sid,
            "node1",
            "for n in $(docker service ps demo_web -f desired-state=running --format '{{.Node}}'); do \
               curl -fsS \"$n:8080\" | grep -c '<title>Welcome to nginx'; done",
        )
        .await;
    assert_eq!(out(&pages), "1\n1\n", "{pages}");
    // The probe finds both replicas by the service's name over the overlay network.
    let probe = r#"n=$(docker service ps demo_probe -f desired-state=running --format '{{.Node}}')
echo "$n"
"#;
    let probe_node = out(&srv.sh(sid, "node1", probe).await).trim().to_owned();
    let found = srv
        .sh(
            sid,
            &probe_node,
            "c=$(docker ps -q --filter label=com.docker.swarm.service.name=demo_probe) && \
             docker exec \"$c\" nslookup web | grep -c '^Address: 10\\.' && \
             docker exec \"$c\" wget -qO- http://web/ | grep -c '<title>Welcome to nginx'",
        )
        .await;
    assert_eq!(out(&found), "2\n1\n", "{found}");
    srv.finish().await;
}
