//! Bad input (issue 12): a bounded fuzz of the HTTP API and both WebSockets against a real
//! `sandpit serve` with one real node. Hand-written cases (malformed, oversized and mistyped
//! JSON, unknown fields, bad UTF-8, path tricks in ids, names and upload paths, impossible
//! proxy ports, huge headers, protocol garbage, garbage frames, impossible resume offsets and
//! window sizes) and a few hundred mutations drawn from a seeded PRNG, so a failure replays
//! exactly (`FUZZ_SEED=<n>` picks another sequence).
//!
//! Whatever comes in: no 5xx but the documented ones, every error under `/api` (and of the
//! port proxy) is `{"error": "<message>"}`, a bad terminal control message gets an `error`
//! message, frames that break the protocol or the size bound end the connection (the events
//! socket ignores the rest), and afterwards the server answers `/healthz` and the session,
//! its node and its terminal work as before.
//!
//! The server runs with limits that make every request that would build something fail
//! (one session per client, one node per session, capacity one node), so random bodies that
//! happen to be valid cost nothing; deletions are only ever aimed at sessions that do not
//! exist.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sandpit_tests::{Rng, TestServer, Ws};
use serde_json::{json, Value};
use terminals::ClientMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// How long one expected thing may take.
const PATIENCE: Duration = Duration::from_secs(60);
/// The PRNG's seed unless `FUZZ_SEED` gives another.
const SEED: u64 = 0x5eed_0012;
/// Random HTTP requests, and random control messages on the terminal.
const RANDOM_REQUESTS: usize = 400;
const RANDOM_FRAMES: usize = 150;
/// The terminal's largest input message (`docs/api.md`).
const MAX_TERMINAL_MESSAGE: usize = 4 << 20;
/// The events socket's largest client message (it takes none).
const MAX_EVENTS_MESSAGE: usize = 4 << 10;
/// A well-formed session id that no server made.
const NO_SUCH_SESSION: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_breaks_the_server() {
    let started = Instant::now();
    let srv = TestServer::start(&[
        "--max-nodes",
        "1",
        "--sessions-per-client",
        "1",
        "--capacity",
        "1",
        "--max-upload-mib",
        "1",
        "--admin-token",
        "fuzz-admin-token-that-no-mutation-guesses",
    ]);
    let sid = srv.session_id().await;
    srv.node(&sid).await;
    // Something only this shell printed: a fresh viewer at the end must replay it.
    let mut term = srv.terminal(&sid, "node1").await;
    term.send("echo before$((20+1))\r").await;
    term.expect("before21", PATIENCE).await;
    drop(term);
    let mut events = srv.events(&sid).await;
    assert_eq!(
        events.next(PATIENCE).await.expect("a snapshot")["type"],
        "snapshot"
    );

    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    eprintln!("fuzz seed {seed} (set FUZZ_SEED to replay another)");
    let mut f = Fuzz {
        srv: &srv,
        sid: sid.clone(),
        rng: Rng::new(seed),
        requests: 0,
        frames: 0,
    };
    f.json_bodies().await;
    f.path_tricks().await;
    f.proxy_paths().await;
    f.huge_headers().await;
    f.protocol_garbage().await;
    f.random_requests().await;
    f.terminal_queries().await;
    f.terminal_frames().await;
    f.connection_killers().await;
    f.events_frames().await;
    let (requests, frames) = (f.requests, f.frames);

    // Still up, and nothing was made or lost.
    let (status, health) = srv.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    assert_eq!(
        (&health["sessions"], &health["session_nodes"]),
        (&json!(1), &json!(1)),
        "{health}"
    );
    let (status, s) = srv.get(&format!("/api/sessions/{sid}")).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["nodes"][0]["name"], "node1", "{s}");
    assert_eq!(s["nodes"][0]["status"], "running", "{s}");
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s}");
    let (status, r) = srv
        .post(
            &format!("/api/sessions/{sid}/nodes/node1/exec"),
            json!({"cmd": ["echo", "ok"]}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (&r["exit_code"], &r["stdout"]),
        (&json!(0), &json!("ok\n")),
        "{r}"
    );
    // The same shell, replayed to a fresh viewer, still takes input.
    let mut term = srv.terminal(&sid, "node1").await;
    term.expect("before21", PATIENCE).await;
    term.send("echo after$((40+2))\r").await;
    term.expect("after42", PATIENCE).await;
    // The events socket opened before it all still follows the session.
    let (status, _) = srv
        .post(&format!("/api/sessions/{sid}/extend"), json!({"secs": 60}))
        .await;
    assert_eq!(status, 200);
    events.until("extended", PATIENCE).await;

    eprintln!(
        "fuzz: {requests} HTTP requests and {frames} WebSocket frames in {:.1?}",
        started.elapsed()
    );
    assert_eq!(srv.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    srv.finish().await;
}

/// The fuzzer: the server, the session it must not break, and what was sent.
struct Fuzz<'a> {
    srv: &'a TestServer,
    sid: String,
    rng: Rng,
    requests: usize,
    frames: usize,
}

impl Fuzz<'_> {
    /// One request, judged (see [`judge`]); its status and body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        self.requests += 1;
        let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let shown = format!(
            "{method} {} ({} headers, {header_bytes} bytes) {}",
            clip(path.as_bytes()),
            headers.len(),
            clip(&body)
        );
        let (status, _, answer) = self.srv.request_full(method, path, headers, body).await;
        judge(method, path, status, &answer, &shown);
        (status, answer)
    }

    /// A POST with a raw body, which must be refused with `status`.
    async fn refused(&mut self, path: &str, body: &[u8], status: u16) {
        let json = [("content-type", "application/json")];
        let (got, answer) = self.send("POST", path, &json, body.to_vec()).await;
        assert_eq!(
            got,
            status,
            "POST {} {}: {}",
            clip(path.as_bytes()),
            clip(body),
            clip(&answer)
        );
    }

    fn base(&self) -> String {
        format!("/api/sessions/{}", self.sid)
    }

    /// Malformed, oversized and mistyped bodies, unknown fields and bad UTF-8 on every route
    /// that takes JSON.
    async fn json_bodies(&mut self) {
        let base = self.base();
        let routes = [
            "/api/sessions".to_string(),
            format!("{base}/extend"),
            format!("{base}/nodes"),
            format!("{base}/nodes/node1/exec"),
        ];
        let deep = "[".repeat(60_000);
        let malformed: &[&[u8]] = &[
            b"{",
            b"}",
            b"[]",
            b"null",
            b"\"{}\"",
            b"1",
            b"{} x",
            b"{}{}",
            b"{\"a\":}",
            b"{'cmd': 1}",
            b"\xef\xbb\xbf{}",
            b"\0",
            b"{\"\0\": 1}",
            b"\xff\xfe\xfd",
            b"{\"\xff\": 1}",
            b"{\"image\": \"\xc0\xae\xc0\xae\"}",
            b"{\"template\": \"\\ud800\"}",
            b"{\"secs\": 1, \"secs\": 2}",
            deep.as_bytes(),
        ];
        for route in &routes {
            for body in malformed {
                self.refused(route, body, 400).await;
            }
            // Over the 64 KiB bound, whatever the content: 413 before parsing.
            self.refused(route, &vec![b' '; (64 << 10) + 1], 413).await;
            self.refused(route, &vec![b'{'; 1 << 20], 413).await;
            self.refused(route, br#"{"no_such_field": 1}"#, 400).await;
        }
        // Wrong types and values out of range, route by route.
        let create: &[&[u8]] = &[
            br#"{"template": 5}"#,
            br#"{"template": ["1m1w"]}"#,
            br#"{"template": "1M1W"}"#,
            br#"{"template": "../3m2w"}"#,
            br#"{"duration_secs": "60"}"#,
            br#"{"duration_secs": -1}"#,
            br#"{"duration_secs": 1.5}"#,
            br#"{"duration_secs": 1e400}"#,
            br#"{"duration_secs": 18446744073709551616}"#,
            br#"{"duration_secs": 18446744073709551615}"#,
            br#"{"duration_secs": 0}"#,
            br#"{"duration_secs": null, "x": null}"#,
        ];
        for body in create {
            self.refused("/api/sessions", body, 400).await;
        }
        let extend: &[&[u8]] = &[
            br#"{"secs": "60"}"#,
            br#"{"secs": -60}"#,
            br#"{"secs": 0}"#,
            br#"{"secs": 18446744073709551615}"#,
            br#"{"secs": 1e3}"#,
            br#"{"secs": true}"#,
            br#"{"secs": {}}"#,
        ];
        for body in extend {
            self.refused(&format!("{base}/extend"), body, 400).await;
        }
        // The node limit is full, so even good images are refused; bad ones must be too.
        let long_image = format!(r#"{{"image": "{}"}}"#, "a".repeat(60_000));
        let images: [&[u8]; 8] = [
            br#"{"image": 1}"#,
            br#"{"image": ["trixie"]}"#,
            br#"{"image": "../../etc"}"#,
            br#"{"image": "/"}"#,
            br#"{"image": ""}"#,
            br#"{"image": "trixie\u0000"}"#,
            br#"{"image": "trixie"}"#,
            long_image.as_bytes(),
        ];
        for body in images {
            let json = [("content-type", "application/json")];
            let (status, _) = self
                .send("POST", &format!("{base}/nodes"), &json, body.to_vec())
                .await;
            assert!([400, 409, 503].contains(&status), "{status}");
        }
        let exec = format!("{base}/nodes/node1/exec");
        let bad_exec: &[&[u8]] = &[
            br#"{"cmd": "echo"}"#,
            br#"{"cmd": [1, 2]}"#,
            br#"{"cmd": [["echo"]]}"#,
            br#"{"cmd": null}"#,
            br#"{"cmd": []}"#,
            br#"{"cmd": [""]}"#,
            br#"{"cmd": ["echo\u0000"]}"#,
            br#"{"cmd": ["echo"], "stdin": 5}"#,
            br#"{"cmd": ["echo"], "stdin": ["a"]}"#,
            br#"{"cmd": ["echo"], "timeout_secs": "5"}"#,
            br#"{"cmd": ["echo"], "timeout_secs": -5}"#,
            br#"{"cmd": ["echo"], "timeout_secs": 0}"#,
            br#"{"cmd": ["echo"], "timeout_secs": 601}"#,
            br#"{"cmd": ["echo"], "timeout_secs": 18446744073709551615}"#,
            br#"{"cmd": ["echo"], "env": {"A": "1"}}"#,
            br#"{"CMD": ["echo"]}"#,
        ];
        for body in bad_exec {
            self.refused(&exec, body, 400).await;
        }
        // Odd but valid: NUL in stdin, many arguments, a long one. They run.
        let many = serde_json::to_vec(&json!({"cmd": vec!["true"; 8_000]})).expect("json");
        let long = serde_json::to_vec(&json!({"cmd": ["echo", "x".repeat(60_000)]})).expect("json");
        let odd: [&[u8]; 3] = [
            br#"{"cmd": ["cat"], "stdin": "a\u0000b", "timeout_secs": 5}"#,
            &many,
            &long,
        ];
        for body in odd {
            let json = [("content-type", "application/json")];
            let (status, answer) = self.send("POST", &exec, &json, body.to_vec()).await;
            assert_eq!(status, 200, "{}", clip(&answer));
        }
    }

    /// `..`, encoded dots and slashes, NUL, bad UTF-8 and very long names in session ids, node
    /// names and upload paths: unknown, refused or inside the node, never anything else.
    async fn path_tricks(&mut self) {
        let sid = self.sid.clone();
        let long = "a".repeat(10_000);
        let sessions = [
            "..".to_string(),
            ".".into(),
            "%2e%2e".into(),
            "%2E%2E%2Fadmin%2Fsessions".into(),
            "..%2f..%2fhealthz".into(),
            "%00".into(),
            format!("{sid}%00"),
            format!("{sid}%2f..%2f{sid}"),
            "%ff%fe".into(),
            "%c0%ae%c0%ae".into(),
            "%".into(),
            "%zz".into(),
            sid.to_uppercase(),
            sid[..31].to_string(),
            format!("{sid}0"),
            "%2fetc%2fpasswd".into(),
            "~root".into(),
            long.clone(),
            "%41".repeat(5_000),
        ];
        for s in &sessions {
            let p = format!("/api/sessions/{s}");
            for (method, path) in [
                ("GET", p.clone()),
                ("DELETE", p.clone()),
                ("POST", format!("{p}/extend")),
                ("POST", format!("{p}/nodes")),
                ("GET", format!("{p}/nodes/node1")),
                ("POST", format!("{p}/nodes/node1/exec")),
                ("GET", format!("{p}/events")),
            ] {
                let (status, _) = self.send(method, &path, &[], b"{}".to_vec()).await;
                assert!(
                    [400, 404].contains(&status),
                    "{method} {}",
                    clip(path.as_bytes())
                );
            }
        }
        let base = self.base();
        let nodes = [
            "..",
            ".",
            "%2e%2e",
            "..%2fnode1",
            "node1%2f..",
            "node1%00",
            "%00",
            "%ff",
            "NODE1",
            "node1%20",
            "%2fetc",
            "node0",
            "-1",
            &long,
        ];
        for n in nodes {
            let p = format!("{base}/nodes/{n}");
            for (method, path) in [
                ("GET", p.clone()),
                ("POST", format!("{p}/exec")),
                ("PUT", format!("{p}/files?path=x")),
                ("GET", format!("{p}/terminal")),
            ] {
                let body = br#"{"cmd": ["true"]}"#.to_vec();
                let (status, _) = self.send(method, &path, &[], body).await;
                assert!(
                    [400, 404].contains(&status),
                    "{method} {}",
                    clip(path.as_bytes())
                );
            }
        }
        // An encoded name is the same name.
        let (status, _) = self
            .send("GET", &format!("{base}/nodes/node%31"), &[], vec![])
            .await;
        assert_eq!(status, 200);

        // Uploads: refused, or written inside the node (`..` cannot leave its root).
        let files = format!("{base}/nodes/node1/files");
        let refused = [
            "".to_string(),
            "dir%2f".into(),
            "%00".into(),
            "a%00b".into(),
            ".".into(),
            "..".into(),
            "%2e%2e%2f%2e%2e".into(),
            "%2f".into(),
            "%2ftmp".into(),
            "a".repeat(300),
            format!("{}x", "d/".repeat(2100)),
            "x&path=y".into(),
            "x&unknown=1".into(),
        ];
        for p in &refused {
            let (status, _) = self
                .send("PUT", &format!("{files}?path={p}"), &[], b"x".to_vec())
                .await;
            assert_eq!(status, 400, "upload to {}", clip(p.as_bytes()));
        }
        let (status, _) = self.send("PUT", &files, &[], b"x".to_vec()).await;
        assert_eq!(status, 400, "an upload without a path");
        // Not UTF-8: decoded lossily by the query parser, or refused.
        let (status, _) = self
            .send("PUT", &format!("{files}?path=%ff"), &[], vec![])
            .await;
        assert!([201, 400].contains(&status), "{status}");
        for (p, lands) in [
            ("..%2f..%2f..%2f..%2ftmp%2ffuzz-up", "/tmp/fuzz-up"),
            ("%2e%2e/%2e%2e/tmp/fuzz-up2", "/tmp/fuzz-up2"),
            ("%2ftmp%2f..%2ftmp%2ffuzz-up3", "/tmp/fuzz-up3"),
            ("fuzz%20dir/~/x", "/root/fuzz dir/~/x"),
        ] {
            let (status, answer) = self
                .send(
                    "PUT",
                    &format!("{files}?path={p}"),
                    &[],
                    b"fuzz\xff".to_vec(),
                )
                .await;
            assert_eq!(status, 201, "upload to {p}: {}", clip(&answer));
            let check = json!({"cmd": ["cat", lands], "timeout_secs": 10});
            let (status, out) = self
                .send(
                    "POST",
                    &format!("{base}/nodes/node1/exec"),
                    &[],
                    check.to_string().into(),
                )
                .await;
            let out: Value = serde_json::from_slice(&out).expect("JSON");
            assert_eq!((status, &out["exit_code"]), (200, &json!(0)), "{p}: {out}");
        }
        // Too large for --max-upload-mib 1.
        let (status, _) = self
            .send(
                "PUT",
                &format!("{files}?path=big"),
                &[],
                vec![0; (1 << 20) + 1],
            )
            .await;
        assert_eq!(status, 413);
    }

    /// `/p/{sid}/{node}/{port}/`: ports outside 1-65535 or not numbers, unknown targets.
    async fn proxy_paths(&mut self) {
        let sid = self.sid.clone();
        for port in [
            "0",
            "65536",
            "-1",
            "x",
            "1e3",
            "0x50",
            "080",
            "99999999999999999999",
            "%31",
            "",
            "%00",
            "8080%2f..",
        ] {
            let path = format!("/p/{sid}/node1/{port}/");
            let (status, _) = self.send("GET", &path, &[], vec![]).await;
            assert!([400, 404].contains(&status), "{path}");
        }
        for (s, n) in [
            (NO_SUCH_SESSION, "node1"),
            (sid.as_str(), "node2"),
            (sid.as_str(), "..%2fnode1"),
            ("..", "node1"),
            ("%2e%2e", ".."),
        ] {
            let path = format!("/p/{s}/{n}/8080/x");
            let (status, _) = self.send("GET", &path, &[], vec![]).await;
            assert_eq!(status, 404, "{path}");
        }
        // A real node where nothing listens: the documented 502.
        for rest in ["", "..%2f..%2fetc%2fpasswd", "%00", "a?%ff"] {
            let path = format!("/p/{sid}/node1/1/{rest}");
            let (status, _) = self.send("GET", &path, &[], vec![]).await;
            assert_eq!(status, 502, "{path}");
        }
        let (status, _) = self
            .send("GET", &format!("/p/{sid}/node1/1"), &[], vec![])
            .await;
        assert_eq!(status, 308);
        // By host name, with impossible ports and unknown targets.
        for host in [
            format!("node1-{sid}-0.localhost"),
            format!("node1-{sid}-65536.localhost"),
            format!("node1-{sid}-99999999999999999999.localhost"),
            format!("node2-{sid}-80.localhost"),
            format!("node1-{NO_SUCH_SESSION}-80.localhost"),
        ] {
            let (status, _) = self.send("GET", "/", &[("host", &host)], vec![]).await;
            assert!([400, 404].contains(&status), "{host}");
        }
    }

    /// A 100 KiB header value, many headers, many values: answered, never a 5xx.
    async fn huge_headers(&mut self) {
        let path = self.base();
        let big = "a".repeat(100 << 10);
        for name in [
            "x-fuzz",
            "cookie",
            "user-agent",
            "accept",
            "authorization",
            "origin",
        ] {
            let (status, _) = self.send("GET", &path, &[(name, &big)], vec![]).await;
            assert!(status < 500);
        }
        let (status, _) = self
            .send(
                "GET",
                "/api/admin/sessions",
                &[("authorization", &format!("Bearer {big}"))],
                vec![],
            )
            .await;
        assert_eq!(status, 401);
        for count in [50, 99, 101, 500, 2_000] {
            let names: Vec<String> = (0..count).map(|i| format!("x-fuzz-{i}")).collect();
            let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
            let (status, _) = self.send("GET", &path, &headers, vec![]).await;
            assert!(status < 500, "{count} headers");
            let same: Vec<(&str, &str)> = (0..count).map(|_| ("x-fuzz", "v")).collect();
            let (status, _) = self.send("GET", &path, &same, vec![]).await;
            assert!(status < 500, "{count} values of one header");
        }
    }

    /// Requests that are not HTTP enough for a client library: raw bytes on a socket. The
    /// server answers a 4xx or closes; either way it goes on.
    async fn protocol_garbage(&mut self) {
        let sid = self.sid.clone();
        let long_uri = format!("/api/sessions/{}", "a".repeat(70_000));
        let requests: Vec<Vec<u8>> = vec![
            b"GET /api/sessions/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            format!("GET /api/sessions/{sid}\0 HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            format!("GET {long_uri} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
            format!("GET /api/sessions/{sid} HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n")
                .into_bytes(),
            [
                format!("GET /api/sessions/{sid} HTTP/1.1\r\nHost: x\r\nX-B: ").as_bytes(),
                b"\xff\r\n\r\n",
            ]
            .concat(),
            format!(
                "GET /api/sessions/{sid} HTTP/1.1\r\nHost: x\r\nX-C: {}\r\n\r\n",
                "c".repeat(1 << 20)
            )
            .into_bytes(),
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}".to_vec(),
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}".to_vec(),
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
                .to_vec(),
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
                .to_vec(),
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n"
                .to_vec(),
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}".to_vec(),
            format!(
                "POST /api/sessions/{sid}/extend HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n{{}}"
            )
            .into_bytes(),
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            b"GET /api/images HTTP/1.0\r\n\r\n".to_vec(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            b"garbage\r\n\r\n".to_vec(),
            b"GET\r\n\r\n".to_vec(),
            b"\r\n\r\n\r\n".to_vec(),
        ];
        for request in &requests {
            self.requests += 1;
            let status = raw_request(self.srv.addr(), request).await;
            assert!(
                status.is_none_or(|s| s < 500),
                "{} -> {status:?}",
                clip(request)
            );
        }
    }

    /// Mutations of valid requests: methods, path segments swapped for tricks, encodings,
    /// query strings, headers and bodies flipped, cut, spliced and padded.
    async fn random_requests(&mut self) {
        let sid = self.sid.clone();
        for _ in 0..RANDOM_REQUESTS {
            let r = random_request(&mut self.rng, &sid);
            let headers: Vec<(&str, &str)> =
                r.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.send(r.method, &r.path, &headers, r.body).await;
        }
    }

    /// Terminal query parameters and handshakes that are refused before the upgrade, and
    /// resume offsets the stream never had.
    async fn terminal_queries(&mut self) {
        let path = format!("{}/nodes/node1/terminal", self.base());
        for q in [
            "since=-1",
            "since=abc",
            "since=",
            "since=1e3",
            "since=18446744073709551616",
            "since=99999999999999999999999999",
            "since=%ff",
            "since=1&since=2",
            "readonly=maybe",
            "readonly=%00",
            "name=..%2fmain",
            "name=%00",
            "name=%ff",
            "name=MAIN",
            "name=",
            "name=seventeen-chars-x",
        ] {
            self.requests += 1;
            let (status, body) = self.srv.ws_refused(&format!("{path}?{q}"), None).await;
            assert_eq!(status, 400, "{q}: {body}");
            assert_json_error(body.as_bytes(), q);
        }
        // Upgrades that are not quite WebSocket handshakes, on both sockets.
        for route in [path.clone(), format!("{}/events", self.base())] {
            for headers in [
                &[("connection", "upgrade"), ("upgrade", "websocket")][..],
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "13"),
                ],
                &[
                    ("connection", "upgrade"),
                    ("upgrade", "websocket"),
                    ("sec-websocket-version", "8"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
                &[
                    ("connection", "keep-alive"),
                    ("upgrade", "h2c"),
                    ("sec-websocket-version", "13"),
                    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ],
            ] {
                let (status, _) = self.send("GET", &route, headers, vec![]).await;
                assert!((400..500).contains(&status), "{headers:?}: {status}");
            }
        }
        // Offsets ahead of the stream: the hello, an error, and the replay from the start.
        let mut ws = self.ws(&path).await;
        let first = next_text(&mut ws).await.expect("a hello");
        let stream = first["stream"].as_str().expect("a stream id").to_string();
        let offset = first["offset"].as_u64().expect("an offset");
        for q in [
            format!("since={}", u64::MAX),
            format!("since={}&stream={stream}", u64::MAX),
            format!("since={}&stream={stream}", offset + (1 << 40)),
        ] {
            let mut ws = self.ws(&format!("{path}?{q}")).await;
            let hello = next_text(&mut ws).await.expect("a hello");
            assert_eq!(hello["type"], "hello", "{q}: {hello}");
            let error = next_text(&mut ws).await.expect("an error");
            assert_eq!(error["type"], "error", "{q}: {error}");
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("bad since")),
                "{error}"
            );
            self.frames += 1;
        }
        // Another stream's offset is ignored.
        let mut ws = self
            .ws(&format!("{path}?since={}&stream=nope", u64::MAX))
            .await;
        let hello = next_text(&mut ws).await.expect("a hello");
        assert_eq!(hello["offset"].as_u64(), Some(offset), "{hello}");
        self.frames += 1;
    }

    /// A terminal socket to `path`, which must be accepted.
    async fn ws(&mut self, path: &str) -> Ws {
        self.requests += 1;
        self.srv
            .ws(path, None)
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e:?}"))
    }

    /// Garbage control messages on one terminal socket: each gets an `error` (or nothing, if
    /// the mutation happened to be valid) and the connection goes on.
    async fn terminal_frames(&mut self) {
        let path = format!("{}/nodes/node1/terminal", self.base());
        let mut ws = self.ws(&path).await;
        assert_eq!(next_text(&mut ws).await.expect("a hello")["type"], "hello");
        let huge_type = format!(r#"{{"type":"{}"}}"#, "a".repeat(MAX_TERMINAL_MESSAGE - 64));
        let huge_garbage = "{".repeat(MAX_TERMINAL_MESSAGE - 1);
        let refused = [
            "",
            " ",
            "{",
            "null",
            "[]",
            "\"resize\"",
            "\0",
            r#"{"type":"nope"}"#,
            r#"{"type":"PING"}"#,
            r#"{"TYPE":"ping"}"#,
            r#"{"type":"ping","extra":1}"#,
            r#"{"type":"ping"}x"#,
            r#"{"type":"resize"}"#,
            r#"{"type":"resize","cols":0,"rows":0}"#,
            r#"{"type":"resize","cols":65535,"rows":65535}"#,
            r#"{"type":"resize","cols":65536,"rows":24}"#,
            r#"{"type":"resize","cols":-1,"rows":-1}"#,
            r#"{"type":"resize","cols":1.5,"rows":24}"#,
            r#"{"type":"resize","cols":"80","rows":"24"}"#,
            r#"{"type":"resize","cols":80,"rows":24,"x":1}"#,
            r#"{"type":"resize","cols":1001,"rows":1}"#,
            r#"{"type":"ack","offset":-1}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"hello","offset":0}"#,
            &huge_type,
            &huge_garbage,
        ];
        for text in refused {
            assert!(
                ClientMessage::parse(text).is_err(),
                "{}",
                clip(text.as_bytes())
            );
            self.control(&mut ws, text).await;
        }
        // Valid, but beyond what was sent.
        self.control(&mut ws, r#"{"type":"ack","offset":18446744073709551615}"#)
            .await;
        // Mutations of valid messages.
        let seeds = [
            r#"{"type":"resize","cols":80,"rows":24}"#,
            r#"{"type":"ack","offset":0}"#,
            r#"{"type":"ping"}"#,
        ];
        for _ in 0..RANDOM_FRAMES {
            let seed = self.rng.pick(&seeds);
            let text =
                String::from_utf8_lossy(&mutate(&mut self.rng, seed.as_bytes())).into_owned();
            self.control(&mut ws, &text).await;
        }
        self.control(&mut ws, r#"{"type":"resize","cols":80,"rows":24}"#)
            .await;
        let _ = ws.close(None).await;
    }

    /// Sends `text` as a control message, then a ping, and reads up to the last pong: a
    /// message the protocol refuses gets exactly one `error`, a valid one none (an `ack` may
    /// be beyond what was sent); nothing but errors and size changes comes between.
    async fn control(&mut self, ws: &mut Ws, text: &str) {
        let parsed = ClientMessage::parse(text);
        let pongs = 1 + usize::from(matches!(parsed, Ok(ClientMessage::Ping {})));
        for t in [text, r#"{"type":"ping"}"#] {
            ws.send(Message::Text(t.into()))
                .await
                .expect("send a control message");
            self.frames += 1;
        }
        let shown = clip(text.as_bytes());
        let (mut errors, mut pongs_seen) = (0, 0);
        while pongs_seen < pongs {
            let reply = next_text(ws)
                .await
                .unwrap_or_else(|close| panic!("{shown}: closed {close:?}"));
            match reply["type"].as_str() {
                Some("pong") => pongs_seen += 1,
                Some("error") => {
                    assert!(
                        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "{reply}"
                    );
                    errors += 1;
                }
                Some("resized") => {}
                _ => panic!("{shown}: unexpected {reply}"),
            }
        }
        match parsed {
            Err(_) => assert_eq!(errors, 1, "{shown}"),
            Ok(ClientMessage::Ack { .. }) => assert!(errors <= 1, "{shown}"),
            Ok(_) => assert_eq!(errors, 0, "{shown}"),
        }
    }

    /// Frames that break the WebSocket protocol or the size bound end the connection (with a
    /// close or an error), on the terminal and on the events socket alike.
    async fn connection_killers(&mut self) {
        let terminal = format!("{}/nodes/node1/terminal", self.base());
        let events = format!("{}/events", self.base());
        let mut cases: Vec<(&str, &str, Message)> = Vec::new();
        for path in [&terminal, &events] {
            let broken = [
                (
                    "text that is not UTF-8",
                    raw_frame(Data::Text, b"\xff\xfe\xfd"),
                ),
                ("a reserved opcode", raw_frame(Data::Reserved(3), b"x")),
                ("a continuation of nothing", raw_frame(Data::Continue, b"x")),
                (
                    "an oversized ping",
                    Message::Frame(Frame::ping(vec![b'p'; 200])),
                ),
            ];
            cases.extend(broken.map(|(what, frame)| (path.as_str(), what, frame)));
        }
        let terminal_text = "x".repeat(MAX_TERMINAL_MESSAGE + 1);
        cases.extend([
            (
                terminal.as_str(),
                "text over 4 MiB",
                Message::Text(terminal_text.into()),
            ),
            (
                terminal.as_str(),
                "input over 4 MiB",
                Message::Binary(vec![b'x'; MAX_TERMINAL_MESSAGE + 1].into()),
            ),
            (
                events.as_str(),
                "text over 4 KiB",
                Message::Text("x".repeat(MAX_EVENTS_MESSAGE + 1).into()),
            ),
            (
                events.as_str(),
                "binary of 16 MiB",
                Message::Binary(vec![0; 16 << 20].into()),
            ),
        ]);
        for (path, what, frame) in cases {
            let mut ws = self.ws(path).await;
            next_text(&mut ws).await.expect("a hello or snapshot");
            // The server may close before it read all of a big frame.
            let _ = ws.send(frame).await;
            self.frames += 1;
            let end = until_end(&mut ws).await;
            eprintln!(
                "{what} on {}: ends with {end:?}",
                path.rsplit('/').next().unwrap_or("")
            );
        }
    }

    /// The events socket only sends: text and binary garbage within its bound is ignored, and
    /// it goes on answering pings and sending events.
    async fn events_frames(&mut self) {
        let mut ws = self.ws(&format!("{}/events", self.base())).await;
        let snapshot = next_text(&mut ws).await.expect("a snapshot");
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        let mut frames: Vec<Message> = vec![
            Message::Text("".into()),
            Message::Text("{".into()),
            Message::Text(r#"{"type":"snapshot"}"#.into()),
            Message::Text(r#"{"type":"ended","reason":"deleted"}"#.into()),
            Message::Text("x".repeat(MAX_EVENTS_MESSAGE).into()),
            Message::Binary(vec![0; MAX_EVENTS_MESSAGE].into()),
            Message::Pong(vec![1, 2, 3].into()),
        ];
        for _ in 0..30 {
            let len = self.rng.below(MAX_EVENTS_MESSAGE + 1);
            frames.push(Message::Binary(self.rng.bytes(len).into()));
        }
        for frame in frames {
            ws.send(frame).await.expect("send to the events socket");
            self.frames += 1;
        }
        ws.send(Message::Ping(b"fuzz".to_vec().into()))
            .await
            .expect("ping");
        self.frames += 1;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Pong(p)))) if &p[..] == b"fuzz" => break,
                Ok(Some(Ok(Message::Text(t)))) => {
                    serde_json::from_str::<Value>(&t).expect("events are JSON");
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the events socket ended: {other:?}"),
            }
        }
        let _ = ws.close(None).await;
    }
}

/// The rules every answer keeps: no 5xx but the documented ones (503 for a session or node
/// the host has no room for, 502 when nothing answers on a proxied port), and every error
/// under `/api` or of the port proxy's routes is a JSON `{"error": "..."}`.
fn judge(method: &str, path: &str, status: u16, body: &[u8], shown: &str) {
    let route = path.split('?').next().unwrap_or_default();
    let documented = match status {
        503 => {
            method == "POST"
                && (["/api/sessions", "/"].contains(&route)
                    || route.ends_with("/nodes")
                    || route.ends_with("/instances"))
        }
        502 => error_of(body).is_some_and(|e| e.starts_with("nothing answers on port")),
        _ => false,
    };
    assert!(
        status < 500 || documented,
        "{shown} -> {status}: {}",
        clip(body)
    );
    // What the HTTP layer refuses before any route sees it (more than 100 headers, a head
    // over its buffer, a URI over 64 KiB) is a bare 431 or 414, as docs/api.md says.
    let transport = matches!(status, 414 | 431) && body.is_empty();
    // A `/p/` path without a session, node and port is no route of the proxy.
    let proxied = route
        .strip_prefix("/p/")
        .is_some_and(|r| r.split('/').take(3).filter(|s| !s.is_empty()).count() == 3);
    let pwd = route.starts_with("/sessions/") || (route == "/" && method == "POST");
    let ours = route.starts_with("/api/") || proxied || pwd;
    if status >= 400 && ours && method != "HEAD" && !transport {
        assert_json_error(body, &format!("{shown} -> {status}"));
    }
}

fn error_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("error")?.as_str().map(str::to_owned)
}

#[track_caller]
fn assert_json_error(body: &[u8], what: &str) {
    assert!(
        error_of(body).is_some_and(|e| !e.is_empty()),
        "{what}: not a JSON error: {}",
        clip(body)
    );
}

/// At most 200 bytes of `b`, for messages.
fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    if b.len() > 200 {
        format!("{s}... ({} bytes)", b.len())
    } else {
        s
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it (it answers
/// with `Connection: close` semantics or refuses); the status, if any came.
async fn raw_request(addr: &str, request: &[u8]) -> Option<u16> {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it read everything.
    let _ = tcp.write_all(request).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Enough to see the status line; a request the server waits to complete gets none.
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let line = String::from_utf8_lossy(&answer);
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

/// A data frame as it is, whatever its opcode and content.
fn raw_frame(opcode: Data, payload: &[u8]) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(opcode), true))
}

/// The next text message (which must be JSON), skipping output and keepalives; `Err` with the
/// close code (None: no close frame) once the socket ended.
async fn next_text(ws: &mut Ws) -> Result<Value, Option<u16>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the socket in {PATIENCE:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                return Ok(serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("a text frame that is not JSON ({e}): {t}")))
            }
            Some(Ok(Message::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
            None | Some(Err(_)) => return Err(None),
            Some(Ok(_)) => {}
        }
    }
}

/// Reads until the socket ends, which it must within `PATIENCE`; every text before is an
/// `error` or an event. The close code, None without a close frame.
async fn until_end(ws: &mut Ws) -> Option<u16> {
    let work = async {
        loop {
            match next_text(ws).await {
                Ok(v)
                    if ["error", "snapshot", "stats"]
                        .contains(&v["type"].as_str().unwrap_or("")) => {}
                Ok(v) => panic!("unexpected {v}"),
                Err(code) => return code,
            }
        }
    };
    tokio::time::timeout(PATIENCE, work)
        .await
        .unwrap_or_else(|_| panic!("the socket stayed open for {PATIENCE:?}"))
}

/// One random request.
struct RandomRequest {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// What may replace a session id, a node name, an upload path or a proxy port (all already
/// percent-encoded where a URI needs it).
const SID_TRICKS: &[&str] = &[
    "..",
    ".",
    "%2e%2e",
    "%2E%2e%2Fadmin",
    "..%2f..%2fhealthz",
    "%00",
    "%ff",
    "%c0%ae",
    "%",
    "~",
    "%20",
    "-1",
    NO_SUCH_SESSION,
    "0123456789ABCDEF0123456789ABCDEF",
];
const NODE_TRICKS: &[&str] = &[
    "..",
    "%2e%2e",
    "..%2fnode1",
    "node1%00",
    "%ff",
    "NODE1",
    "node%31",
    "node1%2f",
    "-1",
    "node18446744073709551616",
    "%2fetc",
];
const UPLOAD_TRICKS: &[&str] = &[
    "..", "%2e%2e", ".", "fuzz", "f%00z", "%ff", "", "%2f", "~", "tmp", "x%20y", "/",
];
const PORT_TRICKS: &[&str] = &[
    "0",
    "65536",
    "-1",
    "x",
    "080",
    "1e3",
    "%31",
    "4294967297",
    "+",
    "",
];
/// JSON fragments and bytes to splice into bodies.
const INTERESTING: &[&[u8]] = &[
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e309",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\"\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"[]",
    b"{}",
    b"[[[[[[[[[[",
    b"\xff",
    b"\xc0\xae",
    b"\"",
    b"\\",
    b",",
    b":",
    b"{",
    b"}",
    b"\0",
    b"\"zz\":1,",
    b"\"cmd\":",
    b"\xef\xbb\xbf",
];

fn random_request(rng: &mut Rng, sid: &str) -> RandomRequest {
    let exec = br#"{"cmd": ["echo", "fuzz"], "stdin": "x", "timeout_secs": 5}"#;
    let (mut method, template, seed): (&'static str, &str, &[u8]) = rng.pick(&[
        (
            "POST",
            "/api/sessions",
            &br#"{"template": "1m1w", "duration_secs": 60}"#[..],
        ),
        ("GET", "/api/sessions/{sid}", b""),
        ("POST", "/api/sessions/{sid}/extend", br#"{"secs": 60}"#),
        (
            "POST",
            "/api/sessions/{sid}/nodes",
            br#"{"image": "trixie"}"#,
        ),
        ("GET", "/api/sessions/{sid}/nodes/{node}", b""),
        ("POST", "/api/sessions/{sid}/nodes/{node}/exec", exec),
        ("POST", "/api/sessions/{sid}/nodes/{node}/exec", exec),
        (
            "PUT",
            "/api/sessions/{sid}/nodes/{node}/files?path={upload}",
            b"fuzz",
        ),
        ("GET", "/api/sessions/{sid}/events", b""),
        (
            "GET",
            "/api/sessions/{sid}/nodes/{node}/terminal?since=1",
            b"",
        ),
        ("DELETE", "/api/sessions/{sid}", b""),
        ("DELETE", "/api/sessions/{sid}/nodes/{node}", b""),
        ("GET", "/p/{sid}/{node}/{port}/{rest}", b""),
        ("GET", "/api/images", b""),
        ("GET", "/api/admin/sessions", b""),
        ("POST", "/api/admin/drain", b""),
        // The play-with-docker routes (docs/pwd.md); `/close` would end the session.
        ("POST", "/", b"session-duration=90m&stack_name=x"),
        ("GET", "/sessions/{sid}", b""),
        (
            "POST",
            "/sessions/{sid}/instances",
            br#"{"ImageName": "franela/dind", "type": "linux"}"#,
        ),
        (
            "POST",
            "/sessions/{sid}/setup",
            br#"{"instances": [{"is_swarm_manager": true, "run": [["true"]]}]}"#,
        ),
        (
            "POST",
            "/sessions/{sid}/instances/{node}/exec",
            br#"{"command": ["echo", "fuzz"]}"#,
        ),
        (
            "POST",
            "/sessions/{sid}/instances/{node}/uploads?path={upload}",
            b"fuzz",
        ),
        ("DELETE", "/sessions/{sid}/instances/{node}", b""),
        ("GET", "/sessions/{sid}/ws/", b""),
        ("GET", "/my/playground", b""),
    ]);
    if rng.chance(1, 8) {
        method = rng.pick(&[
            "GET", "POST", "PUT", "PATCH", "OPTIONS", "HEAD", "TRACE", "FUZZ",
        ]);
    }
    // Deletions only ever name sessions that do not exist.
    let session = if method == "DELETE" || rng.chance(1, 3) {
        rng.pick(SID_TRICKS).to_string()
    } else {
        sid.to_string()
    };
    let node = if rng.chance(1, 3) {
        rng.pick(NODE_TRICKS)
    } else {
        "node1"
    };
    let upload: Vec<&str> = (0..1 + rng.below(5))
        .map(|_| rng.pick(UPLOAD_TRICKS))
        .collect();
    let mut path = template
        .replace("{sid}", &session)
        .replace("{node}", node)
        .replace("{upload}", &upload.join("/"))
        .replace("{port}", rng.pick(PORT_TRICKS))
        .replace("{rest}", rng.pick(&["", "x", "..%2f..", "%00"]));
    if rng.chance(1, 6) {
        // Percent-encode one byte of the path after its first slash (`%2F`, `%73` for `s`).
        let at = 1 + rng.below(path.len() - 1);
        if path.is_char_boundary(at) && path.is_char_boundary(at + 1) {
            let b = path.as_bytes()[at];
            path.replace_range(at..at + 1, &format!("%{b:02X}"));
        }
    }
    if rng.chance(1, 8) {
        path.push_str(rng.pick(&[
            "?%ff",
            "?a=%zz",
            "?&&&",
            "?path",
            "?since=-1",
            "/",
            "/..",
            "%00",
        ]));
    }
    if rng.chance(1, 16) {
        path.push_str(&"a".repeat(rng.below(20_000)));
    }
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    if rng.chance(1, 5) {
        let (k, v) = rng.pick(&[
            ("content-type", "text/plain"),
            ("content-type", "application/json; charset=latin1"),
            ("content-type", "multipart/form-data; boundary=x"),
            ("origin", "http://evil.example"),
            ("origin", "null"),
            ("authorization", "Bearer fuzz"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "99"),
            ("x-forwarded-for", "::1"),
            ("accept-encoding", "gzip, br, zstd, *;q=0"),
            ("host", "node1-{sid}-0.localhost"),
            ("host", "node1-{sid}-65536.localhost"),
            ("host", "%2e%2e-{sid}-80.localhost"),
            ("host", "node9-{sid}-80.localhost"),
        ]);
        headers.push((k, v.replace("{sid}", sid)));
    }
    let body = if seed.is_empty() && !rng.chance(1, 4) {
        Vec::new()
    } else {
        mutate(rng, seed)
    };
    RandomRequest {
        method,
        path,
        headers,
        body,
    }
}

/// `seed` with one to three mutations: bits flipped, fragments spliced in, ranges cut,
/// duplicated or dropped, now and then a padding past the body limit.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(b.len() + 1);
        match rng.below(7) {
            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
            1 => {
                let piece = rng.pick(INTERESTING);
                b.splice(at..at, piece.iter().copied());
            }
            2 => {
                let end = (at + rng.below(8)).min(b.len());
                b.drain(at..end);
            }
            3 => b.truncate(at),
            4 => {
                let end = (at + rng.below(16)).min(b.len());
                let copy = b[at..end].to_vec();
                b.splice(at..at, copy);
            }
            5 => {
                let piece = rng.pick(INTERESTING);
                let end = (at + rng.below(6)).min(b.len());
                b.splice(at..end, piece.iter().copied());
            }
            _ if rng.chance(1, 10) => b.extend(std::iter::repeat_n(b' ', 70_000)),
            _ => b.push(rng.next_u64() as u8),
        }
    }
    b
}
