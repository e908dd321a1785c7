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

/// The fallback isolation for kernels without idmapped mounts: the engine works, and the node's
/// real root is still fenced off from host-wide settings, the kernel log and host devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootful_nodes_run_containers_but_not_the_host() {
    let t = TestRuntime::with(|c| c.isolation = sandbox::Isolation::Rootful).await;
    let nodes = t.session("rootful", 1).await;
    let n = &nodes[0];
    t.ok(n, IMPORT_BUSYBOX).await;
    let out = t
        .ok(n, "docker run --rm busybox:local echo rootful-ok")
        .await;
    assert_eq!(out.trim(), "rootful-ok");
    for denied in [
        "echo 1 > /proc/sys/kernel/panic",
        "echo h > /proc/sysrq-trigger",
        "dmesg",
        // mknod itself is allowed (the engine needs it); opening a device the allow-list does
        // not name (/dev/kmsg) is not.
        "mknod /tmp/kmsg c 1 11 && head -c1 /tmp/kmsg",
        "date -s 2001-01-01",
    ] {
        let o = t.sh(n, denied).await;
        assert!(
            !o.status.success(),
            "`{denied}` succeeded in a rootful node"
        );
    }
    t.finish().await;
}
