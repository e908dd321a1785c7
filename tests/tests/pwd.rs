//! The play-with-docker API of a real `sandpit serve` with real nodes, driven as PWD's SDK and
//! pages drive it (`docs/pwd.md`): a session from `POST /` (XHR and form), instances, the
//! socket with every node's shared shell (the same shell as sandpit's own terminal), PWD's
//! resize rule, exec, uploads, `.direct.` port hosts, CORS and origins, `/setup`, and stack
//! links from an allowed source (and nothing fetched from any other). Nothing is left after.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sandpit_tests::{TestServer, Ws};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(60);
/// A page origin the servers list with --pwd-origin.
const PAGES: &str = "http://pages.localhost:4000";
const XHR: (&str, &str) = ("x-requested-with", "XMLHttpRequest");

/// A PWD page's socket: every message kept, terminal output per instance.
struct PwdSocket {
    ws: Ws,
    seen: Vec<Value>,
    out: HashMap<String, String>,
    /// How much of each instance's output earlier waits consumed.
    read: HashMap<String, usize>,
}

impl PwdSocket {
    async fn open(s: &TestServer, sid: &str) -> PwdSocket {
        let ws = s
            .ws(&format!("/sessions/{sid}/ws/"), Some(PAGES))
            .await
            .unwrap_or_else(|e| panic!("open the PWD socket: {e:?}"));
        PwdSocket {
            ws,
            seen: Vec::new(),
            out: HashMap::new(),
            read: HashMap::new(),
        }
    }

    async fn send(&mut self, name: &str, args: Value) {
        let msg = json!({"name": name, "args": args}).to_string();
        self.ws.send(Message::Text(msg.into())).await.expect("send");
    }

    async fn type_in(&mut self, node: &str, text: &str) {
        self.send("instance terminal in", json!([node, text])).await;
    }

    /// The next message; None once the server closed the socket.
    async fn next(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "nothing came in time; terminal output: {:#?}\nlast messages: {:#?}",
                        self.out,
                        self.tail()
                    )
                });
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("a message is JSON");
                    assert!(v["name"].is_string() && v["args"].is_array(), "{v}");
                    if v["name"] == "instance terminal out" {
                        let node = v["args"][0].as_str().unwrap().to_string();
                        let text = v["args"][1].as_str().expect("output is a string");
                        self.out.entry(node).or_default().push_str(text);
                    }
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads until a message named `name` whose args satisfy `ok`.
    async fn until(&mut self, name: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.next(deadline).await {
                Some(v) if v["name"] == name && ok(&v["args"]) => return v,
                Some(_) => {}
                None => panic!("closed before {name:?}; seen: {:#?}", self.tail()),
            }
        }
    }

    /// Reads until `node`'s output (past earlier waits) contains `needle`.
    async fn expect(&mut self, node: &str, needle: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let from = self.read.get(node).copied().unwrap_or(0);
            let out = self.out.get(node).map(String::as_str).unwrap_or("");
            if let Some(at) = out[from..].find(needle) {
                self.read.insert(node.into(), from + at + needle.len());
                return;
            }
            // Searched up to here: only a needle that straddles the end can still start before.
            let mut next = out.len().saturating_sub(needle.len()).max(from);
            while !out.is_char_boundary(next) {
                next -= 1;
            }
            self.read.insert(node.into(), next);
            if self.next(deadline).await.is_none() {
                panic!(
                    "closed before {needle:?} in {node}; it had:\n{:?}",
                    self.out.get(node)
                );
            }
        }
    }

    /// The last messages other than figures.
    fn tail(&self) -> Vec<&Value> {
        let shown = self.seen.iter().filter(|v| v["name"] != "instance stats");
        let all: Vec<&Value> = shown.collect();
        all[all.len().saturating_sub(20)..].to_vec()
    }
}

/// `POST /` as the SDK sends it; the session id and the host it names.
async fn pwd_session(s: &TestServer, form: &str) -> (String, String) {
    let (status, v) = s
        .request(
            "POST",
            "/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", PAGES),
                XHR,
            ],
            form.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 200, "POST / {form}: {v}");
    let sid = v["session_id"].as_str().expect("session_id").to_string();
    (sid, v["hostname"].as_str().expect("hostname").to_string())
}

/// A command through PWD's exec: its answer.
async fn exec(s: &TestServer, sid: &str, node: &str, cmd: &str) -> (u16, Value) {
    let path = format!("/sessions/{sid}/instances/{node}/exec");
    pwd(s, "POST", &path, json!({"command": ["sh", "-c", cmd]})).await
}

async fn pwd(s: &TestServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    s.request(
        method,
        path,
        &[("content-type", "application/json"), ("origin", PAGES), XHR],
        body.to_string().into_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_made_for_play_with_docker_work() {
    let s = TestServer::start(&["--max-nodes", "2", "--pwd-origin", PAGES]);
    let port = s.addr().rsplit(':').next().unwrap().to_string();

    // A session, as the SDK makes it; the host it names is the base domain with the port.
    let (sid, host) = pwd_session(&s, "session-duration=90m").await;
    assert_eq!(host, format!("localhost:{port}"));
    let (status, v) = pwd(&s, "GET", &format!("/sessions/{sid}"), Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], sid);
    assert_eq!(v["instances"], json!({}));
    // A form post (PWD's own landing page) goes on to the session's page.
    let (status, headers, _) = s
        .request_full(
            "POST",
            "/",
            &[("content-type", "application/x-www-form-urlencoded")],
            b"session-duration=1h".to_vec(),
        )
        .await;
    assert_eq!(status, 303);
    let other = headers["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/s/");
    assert_eq!(s.delete(&format!("/api/sessions/{other}")).await.0, 204);
    for (form, why) in [
        ("session-duration=forever", "not a duration"),
        ("session-duration=100h", "must be between"),
    ] {
        let (status, v) = s
            .request("POST", "/", &[XHR], form.as_bytes().to_vec())
            .await;
        assert_eq!(status, 400, "{form}: {v}");
        assert!(v["error"].as_str().unwrap().contains(why), "{form}: {v}");
    }

    // Two instances; the third is PWD's 409.
    let mut names = Vec::new();
    for want in ["node1", "node2"] {
        let body =
            json!({"ImageName": "franela/dind", "Envs": [], "Networks": [], "Hostname": want});
        let (status, i) = pwd(&s, "POST", &format!("/sessions/{sid}/instances"), body).await;
        assert_eq!(status, 200, "{i}");
        assert_eq!(i["name"], want);
        assert_eq!(i["proxy_host"], format!("{want}-{sid}"));
        assert!(i["ip"].as_str().unwrap().starts_with("10."), "{i}");
        names.push(want);
    }
    let (status, v) = pwd(&s, "POST", &format!("/sessions/{sid}/instances"), json!({})).await;
    assert_eq!(status, 409, "{v}");
    let (_, v) = pwd(&s, "GET", &format!("/sessions/{sid}"), Value::Null).await;
    assert_eq!(v["instances"]["node2"]["hostname"], "node2", "{v}");

    // The socket: both instances, their shells; input and output as text.
    let mut page = PwdSocket::open(&s, &sid).await;
    for n in &names {
        page.until("instance new", |a| {
            a[0] == *n && a[3] == format!("{n}-{sid}")
        })
        .await;
    }
    page.type_in("node1", "echo pwd-$((6*7)) ☃🐳\r").await;
    page.expect("node1", "pwd-42 ☃🐳").await;
    page.type_in("node2", "hostname\r").await;
    page.expect("node2", "\rnode2\r\n").await;

    // The same shell as sandpit's own terminal of node1, scrollback included.
    let mut own = s.terminal(&sid, "node1").await;
    own.expect("pwd-42", PATIENCE).await;
    own.send("echo from-sandpit-$((1+1))\r").await;
    page.expect("node1", "from-sandpit-2").await;

    // PWD's resize rule: the smallest page wins, on every terminal, for every page.
    let mut second = PwdSocket::open(&s, &sid).await;
    page.send("instance viewport resize", json!([120, 40]))
        .await;
    page.until("instance viewport resize", |a| *a == json!([120, 40]))
        .await;
    second
        .send("instance viewport resize", json!([100, 50]))
        .await;
    for p in [&mut page, &mut second] {
        p.until("instance viewport resize", |a| *a == json!([100, 40]))
            .await;
    }
    page.type_in("node2", "stty size\r").await;
    page.expect("node2", "40 100").await;
    drop(second);

    // exec answers the status; uploads land where PWD put them.
    assert_eq!(
        exec(&s, &sid, "node1", "true").await,
        (200, json!({"status_code": 0}))
    );
    assert_eq!(
        exec(&s, &sid, "node1", "exit 3").await,
        (200, json!({"status_code": 3}))
    );
    let boundary = "XbOuNdArY";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.txt\"\r\n\
         Content-Type: text/plain\r\n\r\nhello from a page\r\n--{boundary}--\r\n"
    );
    let (status, v) = s
        .request(
            "POST",
            &format!("/sessions/{sid}/instances/node1/uploads?path=up&url="),
            &[
                (
                    "content-type",
                    &format!("multipart/form-data; boundary={boundary}"),
                ),
                ("origin", PAGES),
            ],
            form.into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v[0]["path"], "/root/up/notes.txt");
    assert_eq!(
        exec(
            &s,
            &sid,
            "node1",
            "test \"$(cat /root/up/notes.txt)\" = 'hello from a page'"
        )
        .await
        .1,
        json!({"status_code": 0})
    );
    let (status, v) = s
        .request(
            "POST",
            &format!("/sessions/{sid}/instances/node1/uploads?path=/tmp/raw.bin"),
            &[("origin", PAGES)],
            vec![7u8; 1000],
        )
        .await;
    assert_eq!((status, v[0]["size"].clone()), (200, json!(1000)), "{v}");
    let (status, v) = s
        .request(
            "POST",
            &format!("/sessions/{sid}/instances/node1/uploads?path=x&url=http://example.com/f"),
            &[("origin", PAGES)],
            Vec::new(),
        )
        .await;
    assert_eq!(status, 400, "uploads from a URL are refused: {v}");

    // A port by PWD's host name: {proxy_host}-{port}.direct.{host}.
    assert_eq!(
        exec(
            &s,
            &sid,
            "node2",
            "mkdir -p /tmp/w && echo served-direct > /tmp/w/index.html && busybox httpd -p 8081 -h /tmp/w"
        )
        .await
        .1,
        json!({"status_code": 0})
    );
    let direct = format!("node2-{sid}-8081.direct.localhost:{port}");
    let (status, body) = s
        .request_raw("GET", "/index.html", &[("host", &direct)], Vec::new())
        .await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).trim()),
        (200, "served-direct")
    );

    // Origins: listed pages get CORS with credentials; others get no grant and no writes.
    let (_, h, _) = preflight(&s, &sid, PAGES).await;
    assert_eq!(h["access-control-allow-origin"], PAGES);
    assert_eq!(h["access-control-allow-credentials"], "true");
    let (_, h, _) = preflight(&s, &sid, "http://evil.localhost").await;
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    let (status, _) = s
        .request(
            "DELETE",
            &format!("/sessions/{sid}"),
            &[("origin", "http://evil.localhost")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = s
        .ws_refused(
            &format!("/sessions/{sid}/ws/"),
            Some("http://evil.localhost"),
        )
        .await;
    assert_eq!(status, 403);

    // A page that stops reading holds back only its own viewers: the shell and another page
    // go on through a flood, and the slow page, reading again, is told what it missed.
    let mut slow = PwdSocket::open(&s, &sid).await;
    let mut fast = PwdSocket::open(&s, &sid).await;
    fast.type_in(
        "node1",
        "head -c 30000000 /dev/zero | tr '\\0' x; echo; echo flood-$((2*3))-done\r",
    )
    .await;
    fast.expect("node1", "flood-6-done").await;
    slow.expect("node1", "bytes of output skipped").await;
    slow.expect("node1", "flood-6-done").await;
    drop((slow, fast));

    // Removing an instance and ending the session reach the page.
    let (status, _) = pwd(
        &s,
        "DELETE",
        &format!("/sessions/{sid}/instances/node2"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    page.until("instance delete", |a| *a == json!(["node2"]))
        .await;
    let (status, _) = pwd(&s, "POST", &format!("/sessions/{sid}/close"), Value::Null).await;
    assert_eq!(status, 200);
    page.until("session end", |_| true).await;
    let (status, _) = pwd(&s, "GET", &format!("/sessions/{sid}"), Value::Null).await;
    assert_eq!(status, 404);
    s.finish().await;
}

/// A CORS preflight of `DELETE /sessions/{sid}` from `origin`: the answer's headers.
async fn preflight(s: &TestServer, sid: &str, origin: &str) -> (u16, hyper::HeaderMap, Vec<u8>) {
    let headers = [
        ("origin", origin),
        ("access-control-request-method", "DELETE"),
        (
            "access-control-request-headers",
            "x-requested-with,content-type",
        ),
    ];
    s.request_full("OPTIONS", &format!("/sessions/{sid}"), &headers, Vec::new())
        .await
}

/// A loopback HTTP server for stack files: answers `files` by path (404 otherwise) and counts
/// the requests for each path.
async fn stack_server(
    files: HashMap<&'static str, &'static str>,
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            let reply = match files.get(path.as_str()) {
                Some(body) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .into(),
            };
            let _ = c.write_all(reply.as_bytes()).await;
        }
    });
    (port, asked)
}

const DEMO_STACK: &str = "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setups_and_stack_links() {
    let (files, asked) = stack_server(HashMap::from([("/stacks/demo.yml", DEMO_STACK)])).await;
    let source = format!("http://127.0.0.1:{files}/stacks/");
    let s = TestServer::start_with_registry(&["--pwd-origin", PAGES, "--stack-source", &source]);

    // /setup: a manager and a worker, each running two commands after the swarm is formed.
    let (sid, _) = pwd_session(&s, "session-duration=90m").await;
    let run = |tag: &str| {
        json!([
            ["sh", "-c", format!("echo {tag} >> /root/ran")],
            [
                "sh",
                "-c",
                "docker info -f '{{.Swarm.LocalNodeState}}' >> /root/ran"
            ]
        ])
    };
    let body = json!({"instances": [
        {"hostname": "manager1", "is_swarm_manager": true, "run": run("m")},
        {"hostname": "worker1", "is_swarm_worker": true, "run": run("w"), "type": "linux"},
    ]});
    let (status, v) = pwd(&s, "POST", &format!("/sessions/{sid}/setup"), body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["instances"]["manager1"], json!([0, 0]), "{v}");
    // The nodes have the setup's names, as hostnames and in the swarm.
    let nodes = s
        .sh(
            &sid,
            "manager1",
            "docker node ls --format '{{.Hostname}} {{.Status}}' | sort",
        )
        .await;
    assert_eq!(
        nodes["stdout"], "manager1 Ready\nworker1 Ready\n",
        "{nodes}"
    );
    let ran = s
        .sh(
            &sid,
            "worker1",
            "cat /root/ran; ping -c1 -W2 manager1 >/dev/null && echo reached",
        )
        .await;
    assert_eq!(ran["stdout"], "w\nactive\nreached\n", "{ran}");
    // Names through sandpit's own API: taken, or not a name.
    for (name, want) in [("manager1", 409), ("Bad_Name", 400)] {
        let (status, v) = s
            .post(&format!("/api/sessions/{sid}/nodes"), json!({"name": name}))
            .await;
        assert_eq!(status, want, "{name}: {v}");
    }
    let (status, v) = pwd(&s, "POST", &format!("/sessions/{sid}/setup"), body).await;
    assert_eq!(status, 409, "a session with instances takes no setup: {v}");
    assert_eq!(s.delete(&format!("/api/sessions/{sid}")).await.0, 204);

    // A stack link from the allowed source: node1 is a manager and deploys it in its terminal.
    let form = format!("session-duration=90m&stack={source}demo.yml&stack_name=demo");
    let (sid, _) = pwd_session(&s, &form).await;
    let mut term = s.terminal(&sid, "node1").await;
    term.expect("docker stack deploy -c /root/stack.yml demo", PATIENCE)
        .await;
    term.expect("Creating service demo_web", PATIENCE).await;
    // The service exists once the deploy has made it (its line can come first).
    let services = s
        .sh(
            &sid,
            "node1",
            "for i in $(seq 100); do docker service inspect demo_web >/dev/null 2>&1 && break; \
             sleep 0.1; done; docker stack services demo --format '{{.Name}}'",
        )
        .await;
    assert_eq!(services["stdout"], "demo_web\n", "{services}");
    assert_eq!(s.delete(&format!("/api/sessions/{sid}")).await.0, 204);
    // The same through sandpit's own API, inline (as a workshop gives it).
    let (status, v) = s
        .post(
            "/api/sessions",
            json!({"stack": {"compose": DEMO_STACK, "name": "inline"}}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let sid = v["id"].as_str().unwrap().to_string();
    let mut term = s.terminal(&sid, "node1").await;
    term.expect("Creating service inline_web", PATIENCE).await;
    assert_eq!(s.delete(&format!("/api/sessions/{sid}")).await.0, 204);

    // Any other source is refused before anything is fetched or made.
    let sessions_before = s.get("/healthz").await.1["sessions"].clone();
    let fetched_before = asked.lock().unwrap().len();
    for url in [
        format!("http://127.0.0.1:{files}/elsewhere/x.yml"),
        format!("http://127.0.0.1:{files}/stacks/../x.yml"),
        "http://10.0.0.1/stacks/demo.yml".to_string(),
    ] {
        let (status, v) = s
            .post("/api/sessions", json!({"stack": {"url": url}}))
            .await;
        assert_eq!(status, 400, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("fetched only from"),
            "{url}: {v}"
        );
    }
    let (status, v) = s
        .request(
            "POST",
            "/",
            &[XHR],
            format!("stack=http://127.0.0.1:{files}/x.yml").into_bytes(),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    // An allowed source that has no such file: the fetch's answer, and no session.
    let (status, v) = s
        .post(
            "/api/sessions",
            json!({"stack": {"url": format!("{source}missing.yml")}}),
        )
        .await;
    assert_eq!(status, 502, "{v}");
    assert!(v["error"].as_str().unwrap().contains("404"), "{v}");
    assert_eq!(
        asked.lock().unwrap().len(),
        fetched_before + 1,
        "{:?}",
        asked.lock().unwrap()
    );
    assert_eq!(s.get("/healthz").await.1["sessions"], sessions_before);
    s.finish().await;
}
