//! A node's engine works: `docker info`, `docker run` of a locally imported image, `docker
//! build`, `--privileged`, a published port reachable by the node's hostname, and the engine's
//! daemons restarted by the node's init when they die.

use sandpit_tests::{stderr, stdout, TestRuntime, IMPORT_BUSYBOX};

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

/// The node's init keeps the engine running: containerd and dockerd each come back after a
/// SIGKILL (dockerd finding the new containerd by itself), and containers run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_comes_back_after_its_daemons_are_killed() {
    let t = TestRuntime::new().await;
    let nodes = t.session("revive", 1).await;
    let n = &nodes[0];
    t.ok(n, IMPORT_BUSYBOX).await;
    // Kill one daemon, wait for a new one, then for the engine to run a container again.
    let revive = |daemon: &str| {
        format!(
            "old=$(pidof {daemon}) && kill -9 $old && \
             for i in $(seq 300); do new=$(pidof {daemon}) && [ \"$new\" != \"$old\" ] && break; sleep 0.1; done && \
             for i in $(seq 300); do docker run --rm busybox:local echo back 2>/dev/null && exit 0; sleep 0.1; done; exit 1"
        )
    };
    for daemon in ["containerd", "dockerd"] {
        let out = t.ok(n, &revive(daemon)).await;
        assert_eq!(out.trim(), "back", "after killing {daemon}");
    }
    let log = t.ok(n, "cat /var/log/sandpit-init.log").await;
    assert!(log.contains("containerd exited"), "{log}");
    assert!(log.contains("dockerd exited"), "{log}");
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

/// What the base image and the node's layout promise: file capabilities survive the idmapped
/// image (ping works for a non-root user), no daemon starts from package scripts, the nested
/// engine's cgroups live beneath the node's own, and host-wide /sys settings stay out of reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_and_layout_promises_hold() {
    let t = TestRuntime::new().await;
    let nodes = t.session("layout", 1).await;
    let n = &nodes[0];
    t.ok(
        n,
        "setpriv --reuid=65534 --regid=65534 --clear-groups ping -c1 -W2 node1 >/dev/null",
    )
    .await;
    // Programs get the default SIGPIPE: a closed pipe ends them quietly (141), it does not
    // make them print "Broken pipe", in the node and in its containers.
    let pipe = t
        .sh(
            n,
            "bash -c 'yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}'",
        )
        .await;
    assert_eq!(stdout(&pipe).trim(), "141", "{}", stderr(&pipe));
    assert!(!stderr(&pipe).contains("Broken pipe"), "{}", stderr(&pipe));
    let policy = t.ok(n, "/usr/sbin/policy-rc.d; echo $?").await;
    assert_eq!(
        policy.trim(),
        "101",
        "policy-rc.d refuses every service start"
    );

    t.ok(n, IMPORT_BUSYBOX).await;
    let in_container = t
        .sh(n, "docker run --rm busybox:local sh -c 'yes | head -1'")
        .await;
    assert!(in_container.status.success(), "{}", stderr(&in_container));
    assert!(
        !stderr(&in_container).contains("Broken pipe"),
        "{}",
        stderr(&in_container)
    );
    let id = t
        .ok(n, "docker run -d busybox:local sleep 300")
        .await
        .trim()
        .to_string();
    let cg = t
        .cfg
        .cgroup_root
        .join("memory")
        .join(&t.cfg.cgroup_parent)
        .join(format!("{}-{}", n.network, n.hostname))
        .join("docker")
        .join(&id);
    assert!(cg.is_dir(), "container cgroup {} missing", cg.display());

    for knob in [
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/ksm/run",
        "/sys/module/printk/parameters/time",
    ] {
        if std::path::Path::new(knob).exists() {
            let before = std::fs::read_to_string(knob).unwrap();
            let o = t.sh(n, &format!("echo 1 > {knob}")).await;
            assert!(!o.status.success(), "a node wrote {knob}");
            assert_eq!(std::fs::read_to_string(knob).unwrap(), before);
        }
    }
    t.finish().await;
}

/// `sandpit node exec` under a terminal: the command inside sees a TTY of the right size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_works_with_a_pty() {
    let t = TestRuntime::new().await;
    let nodes = t.session("pty", 1).await;
    let n = &nodes[0];
    let (exe, args) = t
        .rt()
        .exec_args(
            &n.network,
            &n.hostname,
            &[
                "sh".into(),
                "-c".into(),
                "stty cols 91 rows 27; test -t 0 && echo is-a-tty; stty size".into(),
            ],
            &Default::default(),
        )
        .unwrap();
    let mut cmdline = vec![exe.into_os_string()];
    cmdline.extend(args);
    let quoted: Vec<String> = cmdline
        .iter()
        .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
        .collect();
    // util-linux `script` runs the command on a fresh pseudo-terminal.
    let out = std::process::Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("is-a-tty"), "{text}");
    assert!(text.contains("27 91"), "{text}");
    t.finish().await;
}
