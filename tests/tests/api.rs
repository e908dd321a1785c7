//! The sessions API (`docs/api.md`) against a real `sandpit serve` on port 0 with real nodes:
//! every route's answers and refusals, the events socket, templates that form a swarm, expiry,
//! the limits, restarts (SIGKILL and SIGTERM) with the nodes surviving, and uploads that stay
//! inside their node. Each test has a server of its own; each checks at the end that nothing
//! of it is left on the host.
//!
//! One file on purpose: every file under `tests/tests` is a test binary of its own that links
//! the whole harness, so splitting this suite by route would add a link per part to every
//! build; its tests are independent and short to read one at a time.

use std::time::{Duration, Instant};

use sandpit_tests::{sha256_hex, TestServer, IMPORT_BUSYBOX};
use serde_json::{json, Value};

/// How long one expected thing may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// A well-formed session id that no server made.
const NO_SUCH_SESSION: &str = "0123456789abcdef0123456789abcdef";

/// Asserts an error answer: the status and a JSON `{"error": "..."}` body.
#[track_caller]
fn refused(reply: (u16, Value), status: u16, what: &str) -> String {
    let (got, body) = reply;
    assert_eq!(got, status, "{what}: {body}");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no JSON error in {body}"))
        .to_string()
}

/// Seconds since the epoch of an RFC 3339 UTC time to the second ("2026-11-24T10:00:00Z").
fn epoch(t: &Value) -> i64 {
    let s = t.as_str().unwrap_or_else(|| panic!("not a time: {t}"));
    let num = |r: std::ops::Range<usize>| -> i64 { s[r].parse().expect("a digit") };
    assert!(s.len() == 20 && s.ends_with('Z'), "not RFC 3339 UTC: {s}");
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs() as i64
}

fn names(session: &Value) -> Vec<String> {
    session["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_and_refuses_with_json() {
    let srv = TestServer::start(&["--max-nodes", "1", "--max-upload-mib", "1"]);

    // Health and an empty session.
    let (status, health) = srv.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    let s = srv.session(json!({})).await;
    let sid = s["id"].as_str().expect("id").to_string();
    assert!(
        sid.len() == 32
            && sid
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{sid}"
    );
    assert_eq!(s["template"], Value::Null);
    assert_eq!(s["max_nodes"], 1);
    assert_eq!(s["nodes"], json!([]));
    let created = epoch(&s["created_at"]);
    assert_eq!(epoch(&s["expires_at"]) - created, 4 * 3600, "{s}");
    assert_eq!(epoch(&s["max_expires_at"]) - created, 8 * 3600, "{s}");
    let (status, got) = srv.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!((status, &got), (200, &s));
    let base = format!("/api/sessions/{sid}");

    // A node, as the API shows it.
    let n = srv.node(&sid).await;
    assert_eq!(n["name"], "node1", "{n}");
    assert_eq!(n["hostname"], "node1");
    assert_eq!(n["status"], "running");
    assert_eq!(n["image"], "trixie");
    assert_eq!(n["role"], Value::Null);
    assert_eq!(n["ports"], json!([]));
    assert_eq!(n["terminal"], format!("{base}/nodes/node1/terminal"));
    let ip: std::net::Ipv4Addr = n["ip"].as_str().expect("ip").parse().expect("an address");
    assert!(
        srv.cfg.subnet_pool.contains(ip),
        "{ip} outside {}",
        srv.cfg.subnet_pool
    );
    let (status, got) = srv.get(&format!("{base}/nodes/node1")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["ip"], n["ip"]);
    let (_, got) = srv.get(&base).await;
    assert_eq!(names(&got), ["node1"]);
    let out = srv
        .sh(
            &sid,
            "node1",
            "hostname; docker info -f '{{.ServerVersion}}'",
        )
        .await;
    assert!(
        out["stdout"].as_str().unwrap().starts_with("node1\n"),
        "{out}"
    );

    // The node limit (1 here).
    let e = refused(
        srv.post(&format!("{base}/nodes"), json!({})).await,
        409,
        "over the node limit",
    );
    assert!(e.contains("limit"), "{e}");

    // Unknown and malformed sessions: every route says 404 in JSON.
    let other = format!("/api/sessions/{NO_SUCH_SESSION}");
    for sess in [
        other.as_str(),
        "/api/sessions/nope",
        "/api/sessions/0123456789ABCDEF0123456789ABCDEF",
    ] {
        refused(srv.get(sess).await, 404, sess);
        refused(srv.delete(sess).await, 404, sess);
        refused(
            srv.post(&format!("{sess}/extend"), json!({})).await,
            404,
            sess,
        );
        refused(
            srv.post(&format!("{sess}/nodes"), json!({})).await,
            404,
            sess,
        );
        refused(srv.get(&format!("{sess}/nodes/node1")).await, 404, sess);
        refused(srv.delete(&format!("{sess}/nodes/node1")).await, 404, sess);
        refused(
            srv.post(
                &format!("{sess}/nodes/node1/exec"),
                json!({"cmd": ["true"]}),
            )
            .await,
            404,
            sess,
        );
        refused(
            srv.put(&format!("{sess}/nodes/node1/files?path=x"), b"x".to_vec())
                .await,
            404,
            sess,
        );
        let (code, _) = srv.ws_refused(&format!("{sess}/events"), None).await;
        assert_eq!(code, 404, "events of {sess}");
        let (code, _) = srv
            .ws_refused(&format!("{sess}/nodes/node1/terminal"), None)
            .await;
        assert_eq!(code, 404, "terminal of {sess}");
    }

    // Unknown nodes, and a node of another session (names are per session).
    let s2 = srv.session(json!({})).await;
    let sid2 = s2["id"].as_str().unwrap().to_string();
    for (sess, node) in [
        (sid.as_str(), "node2"),
        (sid.as_str(), "..%2Fnode1"),
        (sid2.as_str(), "node1"),
    ] {
        let p = format!("/api/sessions/{sess}/nodes/{node}");
        let e = refused(srv.get(&p).await, 404, &p);
        assert!(e.contains("no node"), "{e}");
        refused(srv.delete(&p).await, 404, &p);
        refused(
            srv.post(&format!("{p}/exec"), json!({"cmd": ["true"]}))
                .await,
            404,
            &p,
        );
        refused(
            srv.put(&format!("{p}/files?path=x"), b"x".to_vec()).await,
            404,
            &p,
        );
        let (code, _) = srv.ws_refused(&format!("{p}/terminal"), None).await;
        assert_eq!(code, 404, "terminal of {p}");
    }
    let (status, _) = srv.get(&format!("{base}/nodes/node1")).await;
    assert_eq!(status, 200, "node1 of the first session is untouched");

    // Malformed bodies, unknown fields, out-of-range values: 400 with a reason.
    let bad: &[(&str, &[u8])] = &[
        ("/api/sessions", b"{"),
        ("/api/sessions", b"[]"),
        ("/api/sessions", br#"{"template": "9m"}"#),
        ("/api/sessions", br#"{"templates": "1m1w"}"#),
        ("/api/sessions", br#"{"duration_secs": 4}"#),
        ("/api/sessions", br#"{"duration_secs": 28801}"#),
        ("/api/sessions", br#"{"duration_secs": -1}"#),
        ("/api/sessions", br#"{"duration_secs": "60"}"#),
        (&format!("{base}/extend"), b"{\"secs\": 0}"),
        (&format!("{base}/extend"), b"{\"secs\": 28801}"),
        (&format!("{base}/extend"), b"{\"seconds\": 60}"),
        (&format!("{base}/extend"), b"not json"),
        (
            &format!("{base}/nodes"),
            br#"{"image": "bookworm", "cpus": 4}"#,
        ),
        (&format!("{base}/nodes"), b"\x80\x81"),
        (&format!("{base}/nodes/node1/exec"), br#"{}"#),
        (&format!("{base}/nodes/node1/exec"), br#"{"cmd": []}"#),
        (&format!("{base}/nodes/node1/exec"), br#"{"cmd": [""]}"#),
        (&format!("{base}/nodes/node1/exec"), br#"{"cmd": "ls"}"#),
        (
            &format!("{base}/nodes/node1/exec"),
            br#"{"cmd": ["ls"], "timeout_secs": 0}"#,
        ),
        (
            &format!("{base}/nodes/node1/exec"),
            br#"{"cmd": ["ls"], "timeout_secs": 601}"#,
        ),
        (
            &format!("{base}/nodes/node1/exec"),
            br#"{"cmd": ["ls"], "env": {}}"#,
        ),
        (
            &format!("{base}/nodes/node1/exec"),
            b"{\"cmd\": [\"a\\u0000b\"]}",
        ),
    ];
    for (path, body) in bad {
        let what = format!("POST {path} {}", String::from_utf8_lossy(body));
        let e = refused(srv.post_raw(path, body).await, 400, &what);
        assert!(!e.is_empty(), "{what}");
    }
    // An unknown image is the client's mistake too (the node limit is full, so make room).
    assert_eq!(srv.delete(&format!("{base}/nodes/node1")).await.0, 204);
    let e = refused(
        srv.post(&format!("{base}/nodes"), json!({"image": "no-such-image"}))
            .await,
        400,
        "unknown image",
    );
    assert!(e.contains("no-such-image"), "{e}");
    let e = refused(
        srv.post(&format!("{base}/nodes"), json!({"image": "../etc"}))
            .await,
        400,
        "image outside the images dir",
    );
    assert!(!e.is_empty());
    // A body over the JSON limit (64 KiB).
    let big = format!(
        r#"{{"cmd": ["true"], "stdin": "{}"}}"#,
        "x".repeat(100 << 10)
    );
    refused(
        srv.post_raw(&format!("{base}/nodes/node1/exec"), big.as_bytes())
            .await,
        413,
        "a JSON body over 64 KiB",
    );

    // A known route with the wrong method: 405, in JSON like every other error.
    for (method, p) in [
        ("PATCH", base.clone()),
        ("GET", "/api/sessions".to_string()),
        ("PUT", format!("{base}/extend")),
    ] {
        let e = refused(
            srv.request(method, &p, &[], vec![]).await,
            405,
            &format!("{method} {p}"),
        );
        assert!(!e.is_empty());
    }

    // Unknown routes under /api are JSON 404s too.
    for p in ["/api/nope", "/api/sessions/x/y/z/w", "/api/admin"] {
        let e = refused(srv.get(p).await, 404, p);
        assert!(e.contains("no such route"), "{e}");
    }

    // The gauges.
    let (status, m) = srv.get("/metrics").await;
    assert_eq!(status, 200);
    let m = m.as_str().expect("text");
    for line in [
        "sandpit_sessions 2",
        "sandpit_nodes 0",
        "sandpit_terminal_viewers 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line:?} not in:\n{m}");
    }
    assert!(m.contains("sandpit_create_seconds_bucket"), "{m}");

    // Deleting: 204, then the session is gone, and deleting again is a 404.
    assert_eq!(srv.delete(&base).await, (204, Value::Null));
    refused(srv.get(&base).await, 404, "a deleted session");
    refused(srv.delete(&base).await, 404, "deleting twice");
    assert_eq!(srv.delete(&format!("/api/sessions/{sid2}")).await.0, 204);
    let (_, health) = srv.get("/healthz").await;
    assert_eq!(health["sessions"], 0, "{health}");
    assert_eq!(health["nodes"], 0, "{health}");
    assert_eq!(health["networks"], 0, "{health}");
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_upload() {
    let srv = TestServer::start(&["--max-upload-mib", "1"]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    let exec = format!("/api/sessions/{sid}/nodes/node1/exec");

    // Stdin, stdout, stderr, exit codes.
    let (status, r) = srv
        .post(&exec, json!({"cmd": ["cat"], "stdin": "hello\nworld\n"}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r,
        json!({"exit_code": 0, "stdout": "hello\nworld\n", "stderr": "", "truncated": false, "timed_out": false})
    );
    let (_, r) = srv
        .post(
            &exec,
            json!({"cmd": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
        )
        .await;
    assert_eq!(
        (&r["exit_code"], &r["stdout"], &r["stderr"]),
        (&json!(3), &json!("out\n"), &json!("err\n"))
    );
    let (_, r) = srv
        .post(&exec, json!({"cmd": ["sh", "-c", "kill -9 $$"]}))
        .await;
    assert_eq!(r["exit_code"], 137, "killed by SIGKILL: {r}");
    let (status, r) = srv.post(&exec, json!({"cmd": ["no-such-program"]})).await;
    assert_eq!(status, 200, "{r}");
    assert_ne!(r["exit_code"], 0, "{r}");
    // A command that reads no input still gets its answer.
    let (_, r) = srv
        .post(
            &exec,
            json!({"cmd": ["true"], "stdin": "x".repeat(60 << 10)}),
        )
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");

    // Output beyond 1 MiB is cut.
    let (_, r) = srv
        .post(
            &exec,
            json!({"cmd": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2"]}),
        )
        .await;
    assert_eq!(r["truncated"], true, "{}", r["stderr"]);
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(r["stderr"], "done\n");

    // Uploads: relative paths land in /root, directories are made, bytes arrive intact.
    let files = format!("/api/sessions/{sid}/nodes/node1/files");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let (status, r) = srv
        .put(&format!("{files}?path=dir/sub/data.bin"), data.clone())
        .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(
        r,
        json!({"path": "/root/dir/sub/data.bin", "size": data.len()})
    );
    let sum = srv
        .sh(
            &sid,
            "node1",
            "sha256sum < /root/dir/sub/data.bin | cut -c1-64",
        )
        .await;
    assert_eq!(
        sum["stdout"].as_str().map(str::trim),
        Some(sha256_hex(&data).as_str()),
        "the uploaded bytes differ"
    );
    let (status, r) = srv
        .put(&format!("{files}?path=/etc/motd"), b"welcome\n".to_vec())
        .await;
    assert_eq!((status, &r["path"]), (201, &json!("/etc/motd")), "{r}");
    assert_eq!(
        srv.sh(&sid, "node1", "cat /etc/motd").await["stdout"],
        "welcome\n"
    );
    let (status, r) = srv.put(&format!("{files}?path=empty"), Vec::new()).await;
    assert_eq!((status, &r["size"]), (201, &json!(0)), "{r}");
    for q in ["", "?path=", "?path=dir/", "?name=x", "?path=a%00b"] {
        refused(srv.put(&format!("{files}{q}"), b"x".to_vec()).await, 400, q);
    }
    // Writing where the node cannot (a directory) is the client's mistake.
    refused(
        srv.put(&format!("{files}?path=/root/dir"), b"x".to_vec())
            .await,
        400,
        "onto a dir",
    );
    // The upload limit (1 MiB here), above the JSON limit.
    let (status, r) = srv
        .put(&format!("{files}?path=big"), vec![b'y'; 1 << 20])
        .await;
    assert_eq!((status, &r["size"]), (201, &json!(1 << 20)), "{r}");
    let e = refused(
        srv.put(&format!("{files}?path=big2"), vec![b'y'; (1 << 20) + 4096])
            .await,
        413,
        "over the upload limit",
    );
    assert!(e.contains("1 MiB"), "{e}");
    let r = srv
        .sh(&sid, "node1", "test ! -e /root/big2 && echo absent")
        .await;
    assert_eq!(r["stdout"], "absent\n");

    // Symlinks resolve inside the node: one to a host directory, one to a host file.
    let host_dir = srv.cfg.state_dir.parent().unwrap().join("host-canary");
    std::fs::create_dir_all(&host_dir).unwrap();
    let host_file = host_dir.join("secret");
    std::fs::write(&host_file, "host\n").unwrap();
    let hd = host_dir.display();
    srv.sh(
        &sid,
        "node1",
        &format!("mkdir -p {hd} && ln -s {hd} /root/out && ln -s {hd}/secret /root/secret-link && ln -s /../../../../{hd} /root/up"),
    )
    .await;
    for path in [
        "out/planted",
        "secret-link",
        "up/planted2",
        "../../..{hd}/planted3",
    ] {
        let path = path.replace("{hd}", &hd.to_string());
        let (status, r) = srv
            .put(&format!("{files}?path={path}"), b"from the node\n".to_vec())
            .await;
        assert_eq!(status, 201, "{path}: {r}");
    }
    assert_eq!(
        std::fs::read_to_string(&host_file).unwrap(),
        "host\n",
        "the host file was written"
    );
    let mut on_host: Vec<_> = std::fs::read_dir(&host_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_host.sort();
    assert_eq!(on_host, ["secret"], "uploads escaped the node into {hd}");
    let inside = srv
        .sh(&sid, "node1", &format!("cat {hd}/secret; ls {hd}"))
        .await;
    assert_eq!(
        inside["stdout"], "from the node\nplanted\nplanted2\nplanted3\nsecret\n",
        "{inside}"
    );
    std::fs::remove_dir_all(&host_dir).unwrap();

    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.finish().await;
}

/// A command past its timeout is killed, and leaves nothing that keeps its node from going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_exec_is_killed_and_its_node_still_goes() {
    let srv = TestServer::start(&[]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    let exec = format!("/api/sessions/{sid}/nodes/node1/exec");
    // The answer comes in time, and the command is gone afterwards.
    let started = Instant::now();
    let (status, r) = srv
        .post(
            &exec,
            json!({"cmd": ["sh", "-c", "echo started; exec sleep 1234"], "timeout_secs": 1}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (&r["timed_out"], &r["exit_code"]),
        (&json!(true), &Value::Null),
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let gone = srv
        .sh(
            &sid,
            "node1",
            "for i in $(seq 50); do pgrep -x -f 'sleep 1234' >/dev/null || { echo gone; exit 0; }; \
             sleep 0.1; done; ps -ef",
        )
        .await;
    assert_eq!(
        gone["stdout"], "gone\n",
        "the timed-out command still runs: {gone}"
    );

    // Deleting the node and the session works at once.
    let started = Instant::now();
    let (status, r) = srv.delete(&format!("/api/sessions/{sid}")).await;
    assert_eq!(status, 204, "{r}\n{}", srv.log_tail());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_session() {
    let srv = TestServer::start(&["--session-secs", "600", "--session-max-secs", "900"]);
    let s = srv.session(json!({"duration_secs": 400})).await;
    let sid = s["id"].as_str().unwrap().to_string();
    let base = format!("/api/sessions/{sid}");
    assert_eq!(epoch(&s["expires_at"]) - epoch(&s["created_at"]), 400);
    assert_eq!(epoch(&s["max_expires_at"]) - epoch(&s["created_at"]), 900);

    let mut ev = srv.events(&sid).await;
    let snap = ev.next(PATIENCE).await.expect("a snapshot");
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["session"], s);

    // A node: added (creating), then updated (running).
    let n = srv.node(&sid).await;
    let added = ev.until("node_added", PATIENCE).await;
    assert_eq!(
        (&added["node"]["name"], &added["node"]["status"]),
        (&json!("node1"), &json!("creating")),
        "{added}"
    );
    let updated = ev.until("node_updated", PATIENCE).await;
    assert_eq!(updated["node"]["status"], "running", "{updated}");
    assert_eq!(updated["node"]["ip"], n["ip"]);

    // Stats every few seconds, with the node's figures.
    let st = ev.until("stats", Duration::from_secs(15)).await;
    let fig = &st["nodes"]["node1"];
    assert!(fig["memory_bytes"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(fig["memory_limit_bytes"], 1u64 << 30, "{st}");
    assert!(fig["pids"].as_u64().unwrap() > 0, "{st}");
    assert!(fig["disk_total_bytes"].as_u64().unwrap() > 0, "{st}");
    assert!(fig["cpu_percent"].as_f64().is_some(), "{st}");
    let (_, node) = srv.get(&format!("{base}/nodes/node1")).await;
    assert!(node["stats"].is_object(), "GET shows the stats too: {node}");

    // Extending: by 100 s, then capped at the maximum; too long a step is refused.
    let (status, e1) = srv
        .post(&format!("{base}/extend"), json!({"secs": 100}))
        .await;
    assert_eq!(status, 200, "{e1}");
    assert_eq!(
        epoch(&e1["expires_at"]) - epoch(&s["expires_at"]),
        100,
        "{e1}"
    );
    let x = ev.until("extended", PATIENCE).await;
    assert_eq!(x["expires_at"], e1["expires_at"]);
    let (status, e2) = srv.post_raw(&format!("{base}/extend"), b"").await;
    assert_eq!(status, 200, "{e2}");
    assert_eq!(e2["expires_at"], s["max_expires_at"], "capped: {e2}");
    assert_eq!(
        ev.until("extended", PATIENCE).await["expires_at"],
        s["max_expires_at"]
    );
    refused(
        srv.post(&format!("{base}/extend"), json!({"secs": 901}))
            .await,
        400,
        "secs over the max",
    );
    let (_, now) = srv.get(&base).await;
    assert_eq!(now["expires_at"], s["max_expires_at"]);

    // Removing the node.
    assert_eq!(srv.delete(&format!("{base}/nodes/node1")).await.0, 204);
    let removed = ev.until("node_removed", PATIENCE).await;
    assert_eq!(removed["name"], "node1");
    refused(
        srv.get(&format!("{base}/nodes/node1")).await,
        404,
        "a removed node",
    );

    // A second socket starts with the current state.
    let mut ev2 = srv.events(&sid).await;
    let snap = ev2.next(PATIENCE).await.unwrap();
    assert_eq!(snap["session"]["nodes"], json!([]), "{snap}");
    assert_eq!(snap["session"]["expires_at"], s["max_expires_at"]);

    // Deleting ends both sockets with `ended`.
    assert_eq!(srv.delete(&base).await.0, 204);
    for e in [&mut ev, &mut ev2] {
        let end = e.until("ended", PATIENCE).await;
        assert_eq!(end["reason"], "deleted");
        assert!(
            e.next(PATIENCE).await.is_none(),
            "the socket closes after ended"
        );
    }
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_destroys_everything() {
    let srv = TestServer::start(&[]);
    // One session enters its last 5 minutes after 6 s (the warning), another ends after 8 s.
    let warned = srv.session(json!({"duration_secs": 306})).await;
    let mut warn_ev = srv.events(warned["id"].as_str().unwrap()).await;
    assert_eq!(warn_ev.next(PATIENCE).await.unwrap()["type"], "snapshot");
    let s = srv.session(json!({"duration_secs": 8})).await;
    let sid = s["id"].as_str().unwrap().to_string();
    let mut ev = srv.events(&sid).await;
    assert_eq!(ev.next(PATIENCE).await.unwrap()["type"], "snapshot");
    srv.node(&sid).await;
    let mut term = srv.terminal(&sid, "node1").await;
    term.send("echo ready$((40+2))\r").await;
    term.expect("ready42", PATIENCE).await;

    let warn = warn_ev.until("expiring", PATIENCE).await;
    assert_eq!(warn["expires_at"], warned["expires_at"], "{warn}");
    let left = warn["secs_left"].as_u64().unwrap();
    assert!((290..=300).contains(&left), "{warn}");
    assert_eq!(
        srv.delete(&format!("/api/sessions/{}", warned["id"].as_str().unwrap()))
            .await
            .0,
        204
    );
    assert_eq!(warn_ev.until("ended", PATIENCE).await["reason"], "deleted");

    let end = ev.until("ended", PATIENCE).await;
    assert_eq!(end["reason"], "expired");
    assert!(
        ev.next(PATIENCE).await.is_none(),
        "the events socket closes"
    );
    let expired_at = Instant::now();
    let (code, reason) = term.until_closed(PATIENCE).await;
    assert!(
        term.texts.iter().any(|t| t["type"] == "closed"),
        "the terminal says it closed: {:?} {code} {reason}",
        term.texts
    );

    // Everything goes: the session, its node, its network, every host object.
    refused(
        srv.get(&format!("/api/sessions/{sid}")).await,
        404,
        "an expired session",
    );
    loop {
        let (_, h) = srv.get("/healthz").await;
        let left = srv.leftovers().await;
        if h["sessions"] == 0 && h["nodes"] == 0 && h["networks"] == 0 && left.is_empty() {
            break;
        }
        assert!(
            expired_at.elapsed() < PATIENCE,
            "after expiry: {h} {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3m2w_session_is_a_five_node_swarm() {
    let srv = TestServer::start(&[]);
    let started = Instant::now();
    let s = srv.session(json!({"template": "3m2w"})).await;
    eprintln!("3m2w session in {:?}", started.elapsed());
    let sid = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["template"], "3m2w");
    assert_eq!(names(&s), ["node1", "node2", "node3", "node4", "node5"]);
    let roles: Vec<_> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].clone())
        .collect();
    assert_eq!(
        roles,
        ["manager", "manager", "manager", "worker", "worker"],
        "{s}"
    );
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "running"),
        "{s}"
    );

    // Docker agrees: three managers (one leader), two workers, all ready.
    let ls = srv
        .sh(
            &sid,
            "node1",
            "for i in $(seq 120); do \
               out=$(docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}' | sort); \
               [ \"$(echo \"$out\" | grep -c ' Ready ')\" = 5 ] && break; sleep 0.5; done; echo \"$out\"",
        )
        .await;
    assert_eq!(
        ls["stdout"],
        "node1 Ready Leader\nnode2 Ready Reachable\nnode3 Ready Reachable\nnode4 Ready \nnode5 Ready \n",
        "{ls}"
    );
    let w = srv
        .sh(
            &sid,
            "node4",
            "docker info -f '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'",
        )
        .await;
    assert_eq!(w["stdout"], "active false\n", "{w}");

    // A full session takes no more nodes.
    refused(
        srv.post(&format!("/api/sessions/{sid}/nodes"), json!({}))
            .await,
        409,
        "a sixth node",
    );
    // The roles survive a restart.
    let mut srv = srv;
    srv.sigkill();
    srv.restart();
    let (_, again) = srv.get(&format!("/api/sessions/{sid}")).await;
    let roles: Vec<_> = again["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].clone())
        .collect();
    assert_eq!(
        roles,
        ["manager", "manager", "manager", "worker", "worker"],
        "{again}"
    );

    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_node_creations_stay_within_the_limit() {
    let srv = TestServer::start(&[]);
    let sid = srv.session_id().await;
    let path = format!("/api/sessions/{sid}/nodes");
    let replies = futures_util::future::join_all((0..10).map(|_| srv.post(&path, json!({})))).await;
    let mut made: Vec<String> = Vec::new();
    for (status, r) in &replies {
        match status {
            201 => made.push(r["name"].as_str().unwrap().to_string()),
            409 => assert!(r["error"].as_str().unwrap().contains("limit"), "{r}"),
            _ => panic!("{status} {r}"),
        }
    }
    made.sort();
    assert_eq!(
        made,
        ["node1", "node2", "node3", "node4", "node5"],
        "{replies:?}"
    );
    let (_, s) = srv.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!(names(&s), made);
    let mut ips: Vec<String> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["ip"].to_string())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5, "distinct addresses: {s}");
    // They reach each other by name.
    let hosts = srv
        .sh(
            &sid,
            "node1",
            "getent hosts node1 node2 node3 node4 node5 | wc -l",
        )
        .await;
    assert_eq!(
        hosts["stdout"], "5\n",
        "every node is in /etc/hosts: {hosts}"
    );
    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_client_and_capacity() {
    let srv = TestServer::start(&["--sessions-per-client", "2", "--capacity", "1"]);
    let a = srv.session_id().await;
    let b = srv.session_id().await;
    let e = refused(
        srv.post("/api/sessions", json!({})).await,
        429,
        "a third session",
    );
    assert!(e.contains('2'), "{e}");

    srv.node(&a).await;
    let e = refused(
        srv.post(&format!("/api/sessions/{b}/nodes"), json!({}))
            .await,
        503,
        "over capacity",
    );
    assert!(e.contains("capacity"), "{e}");
    // A deleted session frees its place and its nodes.
    assert_eq!(srv.delete(&format!("/api/sessions/{a}")).await.0, 204);
    let e = refused(
        srv.post("/api/sessions", json!({"template": "1m1w"})).await,
        503,
        "a template over capacity",
    );
    assert!(e.contains("capacity"), "{e}");
    srv.node(&b).await;
    assert_eq!(srv.delete(&format!("/api/sessions/{b}")).await.0, 204);
    srv.finish().await;
}

/// Templates started together compete for the last places: the loser gets the same 503 as a
/// template refused up front, and its nodes are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_templates_over_capacity_get_503() {
    let srv = TestServer::start(&["--capacity", "3"]);
    let body = json!({"template": "1m1w"});
    let (a, b) = tokio::join!(
        srv.post("/api/sessions", body.clone()),
        srv.post("/api/sessions", body)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [201, 503], "{a:?} {b:?}");
    let winner = if a.0 == 201 { &a.1 } else { &b.1 };
    let loser = if a.0 == 201 { &b.1 } else { &a.1 };
    assert!(
        loser["error"]
            .as_str()
            .unwrap_or_default()
            .contains("capacity"),
        "{loser}"
    );
    let (_, health) = srv.get("/healthz").await;
    assert_eq!(
        (&health["sessions"], &health["nodes"]),
        (&json!(1), &json!(2)),
        "{health}"
    );
    assert_eq!(
        srv.delete(&format!("/api/sessions/{}", winner["id"].as_str().unwrap()))
            .await
            .0,
        204
    );
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_their_token() {
    let off = TestServer::start(&[]);
    let e = refused(
        off.get("/api/admin/sessions").await,
        404,
        "admin without a token configured",
    );
    assert!(e.contains("--admin-token"), "{e}");
    refused(
        off.request(
            "GET",
            "/api/admin/sessions",
            &[("authorization", "Bearer ")],
            vec![],
        )
        .await,
        404,
        "empty bearer",
    );
    off.finish().await;

    let token = "s3cret-token-for-tests";
    let srv = TestServer::start(&["--admin-token", token]);
    let sid = srv.session_id().await;
    for auth in [
        "",
        "Bearer ",
        "Bearer s3cret",
        "Bearer s3cret-token-for-testsX",
        "s3cret-token-for-tests",
        "Basic czM=",
    ] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", auth)]
        };
        refused(
            srv.request("GET", "/api/admin/sessions", &headers, vec![])
                .await,
            401,
            auth,
        );
        refused(
            srv.request("POST", "/api/admin/drain", &headers, vec![])
                .await,
            401,
            auth,
        );
    }
    let bearer = format!("Bearer {token}");
    let (status, all) = srv
        .request(
            "GET",
            "/api/admin/sessions",
            &[("authorization", &bearer)],
            vec![],
        )
        .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all.as_array().map(|a| a.len()), Some(1), "{all}");
    assert_eq!(all[0]["id"], sid.as_str());

    // Draining: no new sessions or nodes; the running ones go on.
    let (status, r) = srv
        .request(
            "POST",
            "/api/admin/drain",
            &[("authorization", &bearer)],
            vec![],
        )
        .await;
    assert_eq!((status, &r["draining"]), (200, &json!(true)), "{r}");
    refused(
        srv.post("/api/sessions", json!({})).await,
        503,
        "a session while draining",
    );
    refused(
        srv.post(&format!("/api/sessions/{sid}/nodes"), json!({}))
            .await,
        503,
        "a node while draining",
    );
    assert_eq!(srv.get(&format!("/api/sessions/{sid}")).await.0, 200);
    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_from_other_origins_are_refused() {
    let srv = TestServer::start(&["--allowed-origin", "https://workshop.example"]);
    let sid = srv.session_id().await;
    let events = format!("/api/sessions/{sid}/events");
    let own = format!("http://{}", srv.addr());
    for origin in [
        "http://evil.example",
        "https://workshop.example.evil",
        "null",
        "http://127.0.0.1:1",
    ] {
        let (code, body) = srv.ws_refused(&events, Some(origin)).await;
        assert_eq!(code, 403, "{origin}: {body}");
        assert!(body.contains("origin"), "{body}");
        // Before anything else: even the terminal of a node that does not exist.
        let (code, _) = srv
            .ws_refused(
                &format!("/api/sessions/{sid}/nodes/node1/terminal"),
                Some(origin),
            )
            .await;
        assert_eq!(code, 403, "{origin}");
    }
    for origin in [Some(own.as_str()), Some("https://workshop.example"), None] {
        let ws = srv.ws(&events, origin).await;
        assert!(ws.is_ok(), "{origin:?}: {:?}", ws.err());
    }
    // A plain GET on a WebSocket route says what it is.
    let (status, r) = srv.get(&events).await;
    assert!((400..500).contains(&status), "{status} {r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("WebSocket"),
        "{r}"
    );
    // Writes from another site's page (a form post needs no preflight) are refused too; the
    // page's own origin and clients without an Origin may write.
    let post = |origin: &'static str| {
        let srv = &srv;
        async move {
            srv.request_raw(
                "POST",
                "/api/sessions",
                &[("origin", origin), ("content-type", "text/plain")],
                b"{}".to_vec(),
            )
            .await
            .0
        }
    };
    assert_eq!(post("http://evil.example").await, 403);
    let (code, body) = srv
        .request_raw(
            "DELETE",
            &format!("/api/sessions/{sid}"),
            &[("origin", "http://evil.example")],
            Vec::new(),
        )
        .await;
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(post("https://workshop.example").await, 201);
    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_comes_back_to_its_sessions() {
    let mut srv = TestServer::start(&[]);
    let s = srv.session(json!({})).await;
    let sid = s["id"].as_str().unwrap().to_string();
    srv.node(&sid).await;
    srv.sh(&sid, "node1", IMPORT_BUSYBOX).await;
    srv.sh(
        &sid,
        "node1",
        "docker run -d --name keep busybox:local sleep 3600 >/dev/null",
    )
    .await;
    srv.sh(&sid, "node1", "echo kept > /root/mark").await;
    let mut term = srv.terminal(&sid, "node1").await;
    term.send("echo before$((1+1))\r").await;
    term.expect("before2", PATIENCE).await;
    let mut ev = srv.events(&sid).await;
    ev.next(PATIENCE).await;
    // A session that expires while the server is down.
    let short = srv.session(json!({"duration_secs": 5})).await;
    let short_id = short["id"].as_str().unwrap().to_string();
    srv.node(&short_id).await;

    srv.sigkill();
    // The socket dies with the server; a figures event sent just before the kill may come
    // first (they go out every few seconds), nothing else.
    while let Some(v) = ev.next(PATIENCE).await {
        assert_eq!(
            v["type"], "stats",
            "the events socket dies with the server; got {v}"
        );
    }
    let expired = epoch(&short["expires_at"]);
    while now_secs() <= expired {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.restart();
    refused(
        srv.get(&format!("/api/sessions/{short_id}")).await,
        404,
        "a session that expired while the server was down",
    );
    let (_, health) = srv.get("/healthz").await;
    assert_eq!(
        (&health["sessions"], &health["nodes"], &health["networks"]),
        (&json!(1), &json!(1), &json!(1)),
        "the expired session's node and network are gone: {health}"
    );

    let (status, again) = srv.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["expires_at"], s["expires_at"]);
    assert_eq!(again["nodes"][0]["status"], "running", "{again}");
    let ps = srv
        .sh(
            &sid,
            "node1",
            "docker inspect -f '{{.State.Running}}' keep; cat /root/mark",
        )
        .await;
    assert_eq!(ps["stdout"], "true\nkept\n", "{ps}");
    let mut term = srv.terminal(&sid, "node1").await;
    term.send("echo after$((2+2))\r").await;
    term.expect("after4", PATIENCE).await;
    let mut ev = srv.events(&sid).await;
    assert_eq!(
        ev.next(PATIENCE).await.unwrap()["session"]["id"],
        sid.as_str()
    );

    // Nodes can still be added and removed, with a fresh name.
    let n2 = srv.node(&sid).await;
    assert_eq!(n2["name"], "node2");
    assert_eq!(
        srv.delete(&format!("/api/sessions/{sid}/nodes/node2"))
            .await
            .0,
        204
    );
    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.assert_clean().await;
    srv.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_the_next_server_adopts_the_nodes() {
    let mut srv = TestServer::start(&[]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    srv.sh(&sid, "node1", "echo kept > /root/mark").await;
    let mut ev = srv.events(&sid).await;
    ev.next(PATIENCE).await;
    let mut term = srv.terminal(&sid, "node1").await;
    term.send("echo up\r").await;
    term.expect("up", PATIENCE).await;

    let started = Instant::now();
    let status = srv.sigterm();
    assert!(status.success(), "exit {status}:\n{}", srv.log_tail());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "drained in {:?}",
        started.elapsed()
    );
    // Both sockets end with the server. (Whether their close frames get out first is a race:
    // the server does not wait for upgraded connections before it exits.)
    assert!(ev.next(PATIENCE).await.is_none());
    let (code, reason) = term.until_closed(PATIENCE).await;
    assert!([1001, 1006, 1012].contains(&code), "{code} {reason}");

    srv.restart();
    let (status, s) = srv.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(names(&s), ["node1"]);
    assert_eq!(
        srv.sh(&sid, "node1", "cat /root/mark").await["stdout"],
        "kept\n"
    );
    let mut term = srv.terminal(&sid, "node1").await;
    term.send("echo again\r").await;
    term.expect("again", PATIENCE).await;
    // The nodes outlive a server; finish() stops this one and checks they are cleaned up.
    srv.finish().await;
}
