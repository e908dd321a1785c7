//! A node's engine works: `docker info`, `docker run` of a locally imported image, `docker
//! build`, `--privileged`, and a published port reachable by the node's hostname.

use sandpit_tests::{TestRuntime, IMPORT_BUSYBOX};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_runs_and_builds_containers() {
    let t = TestRuntime::new().await;
    let nodes = t.session("eng", 1).await;
    let n = &nodes[0];
    let info = t
        .ok(
            n,
            "docker info --format '{{.Driver}} {{.CgroupDriver}} {{.Name}}'",
        )
        .await;
    assert_eq!(info.trim(), "overlay2 cgroupfs node1");

    t.ok(n, IMPORT_BUSYBOX).await;
    let out = t
        .ok(
            n,
            "docker run --rm busybox:local sh -c 'echo hello from a container'",
        )
        .await;
    assert!(out.contains("hello from a container"), "{out}");

    let built = t
        .ok(
            n,
            "mkdir -p /tmp/ctx && printf 'FROM busybox:local\\nRUN echo built > /built\\nCMD cat /built\\n' \
             > /tmp/ctx/Dockerfile && docker build -q -t mine /tmp/ctx >/dev/null && docker run --rm mine",
        )
        .await;
    assert_eq!(built.trim(), "built");

    // Privileged containers are privileged only within the node's user namespace.
    t.ok(n, "docker run --rm --privileged busybox:local true")
        .await;

    let page = t
        .ok(
            n,
            "docker run -d -p 8080:80 busybox:local sh -c 'mkdir /w && echo served > /w/index.html && httpd -f -p 80 -h /w' \
             >/dev/null && for i in $(seq 50); do curl -sf http://node1:8080/ && exit 0; sleep 0.1; done; exit 1",
        )
        .await;
    assert_eq!(page.trim(), "served");
    t.finish().await;
}
