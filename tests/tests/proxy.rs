//! Published ports through a real `sandpit serve` on port 0 with a real node: a port that
//! docker publishes shows on the node and in the events, an nginx page is served by host name
//! and by path, a WebSocket server on the node carries messages both ways through the proxy,
//! a node of another session is 404 and a port nothing listens on is 502. At the end nothing
//! of the server is left on the host.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandpit_tests::{
    sandpit_bin, test_config, with_registry, CleanupGuard, KillOnDrop, TestRuntime,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one expected thing may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// A WebSocket server for the node, in Perl (the base image has it, with Digest::SHA): it says
/// hello with the `X-Forwarded-*` headers it got, then answers every text message with
/// `echo: <message>`.
const WS_ECHO: &str = r#"
use strict; use warnings; use IO::Socket::INET; use Digest::SHA qw(sha1_base64);
my $srv = IO::Socket::INET->new(LocalPort => 9000, Listen => 5, ReuseAddr => 1) or die "listen: $!";
sub rd { my ($c, $n) = @_; my $b = ''; while (length $b < $n) {
  my $r = sysread($c, $b, $n - length $b, length $b); return undef unless $r; } return $b; }
sub send_text { my ($c, $p) = @_; my $n = length $p;
  my $h = $n < 126 ? pack('CC', 0x81, $n) : pack('CCn', 0x81, 126, $n); syswrite($c, $h . $p); }
while (my $c = $srv->accept) {
  my $req = '';
  while ($req !~ /\r\n\r\n/) { sysread($c, $req, 4096, length $req) or last; }
  my ($key) = $req =~ /^Sec-WebSocket-Key:\s*(\S+)/mi;
  next unless $key;
  my %h = map { /^([^:]+):\s*(.*?)\s*$/ ? (lc($1), $2) : () } split /\r\n/, $req;
  my $acc = sha1_base64($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11') . '=';
  syswrite($c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    . "Sec-WebSocket-Accept: $acc\r\n\r\n");
  send_text($c, join ' ', 'hello', map { "$_=" . ($h{$_} // '-') }
    qw(x-forwarded-for x-forwarded-host x-forwarded-proto x-forwarded-prefix));
  while (defined(my $hd = rd($c, 2))) {
    my ($b0, $b1) = unpack('CC', $hd); my $n = $b1 & 127;
    if ($n == 126) { $n = unpack('n', rd($c, 2)); } elsif ($n == 127) { last; }
    my $mask = ($b1 & 128) ? rd($c, 4) : "\0\0\0\0";
    my $p = $n ? rd($c, $n) : ''; last unless defined $p;
    $p ^= substr($mask x (int($n / 4) + 1), 0, $n);
    last if ($b0 & 15) == 8;
    send_text($c, "echo: $p") if ($b0 & 15) == 1;
  }
  close $c;
}
"#;

/// `sandpit serve` on port 0 with a state directory of its own; killed when dropped.
struct Server {
    process: KillOnDrop,
    addr: String,
}

impl Server {
    fn start(cfg: &sandbox::RuntimeConfig) -> Server {
        let mut process = KillOnDrop(
            Command::new(sandpit_bin())
                .args(["serve", "--listen", "127.0.0.1:0"])
                .arg("--state-dir")
                .arg(cfg.state_dir.parent().expect("test dir"))
                .args(["--prefix", &cfg.prefix])
                .args(["--subnet-pool", &cfg.subnet_pool.to_string()])
                .args(["--node-memory-mib", "1024", "--node-disk-gib", "4"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sandpit serve"),
        );
        let mut line = String::new();
        std::io::BufReader::new(process.0.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read the server's first line");
        let addr = line
            .trim()
            .strip_prefix("sandpit listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { process, addr }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// An API call with a JSON body (or none); the status and the JSON answer.
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let reply = http(&self.addr, method, path, &self.addr, body.as_deref()).await;
        let json = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", reply.body));
        (reply.status, json)
    }

    /// Runs `sh -c script` (with `stdin`) in a node; its output must say exit code 0.
    async fn sh(&self, sid: &str, node: &str, script: &str, stdin: Option<&str>) -> Value {
        let (status, out) = self
            .api(
                "POST",
                &format!("/api/sessions/{sid}/nodes/{node}/exec"),
                Some(json!({"cmd": ["sh", "-c", script], "stdin": stdin, "timeout_secs": 300})),
            )
            .await;
        assert_eq!(
            (status, &out["exit_code"]),
            (200, &json!(0)),
            "`{script}`: {out}"
        );
        out
    }

    /// The node as the API shows it.
    async fn node(&self, sid: &str, node: &str) -> Value {
        let (status, n) = self
            .api("GET", &format!("/api/sessions/{sid}/nodes/{node}"), None)
            .await;
        assert_eq!(status, 200, "{n}");
        n
    }

    /// Polls the node until its published port numbers are `want`.
    async fn wait_ports(&self, sid: &str, node: &str, want: &[u16]) -> Value {
        let started = Instant::now();
        loop {
            let n = self.node(sid, node).await;
            let ports: Vec<u64> = n["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .map(|p| p["port"].as_u64().expect("port"))
                .collect();
            if ports.iter().copied().eq(want.iter().map(|p| u64::from(*p))) {
                return n;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "ports stay {ports:?}, want {want:?}: {n}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server with SIGTERM; it must exit cleanly.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.process.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the server");
        let status = self.process.0.wait().expect("wait for the server");
        assert!(status.success(), "server exit status {status}");
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.0 request (so the answer is never chunked) to `addr` with a `Host` of our choice.
async fn http(addr: &str, method: &str, path: &str, host: &str, body: Option<&str>) -> Reply {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the server");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(330), s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} (Host {host}) did not finish"))
        .expect("read the answer");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {raw:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line: {head}"));
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// A minimal WebSocket client (RFC 6455): text frames, masked as clients must.
struct Ws {
    s: TcpStream,
}

impl Ws {
    /// Opens `path` on `addr` with `Host: host`; the answer's head if it is not a 101.
    async fn connect(addr: &str, host: &str, path: &str) -> Result<Ws, String> {
        let mut s = TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(req.as_bytes())
            .await
            .expect("send the handshake");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(PATIENCE, s.read(&mut b))
                .await
                .expect("handshake answer in time")
                .expect("read the handshake answer");
            if n == 0 {
                break;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        // The accept value of the RFC's example key.
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept: {head}"
        );
        Ok(Ws { s })
    }

    async fn send(&mut self, text: &str) {
        let p = text.as_bytes();
        assert!(p.len() < 126, "short messages only");
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x81, 0x80 | p.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&frame).await.expect("send a frame");
    }

    /// The next text message (pings are skipped).
    async fn recv(&mut self) -> String {
        loop {
            let (opcode, payload) = tokio::time::timeout(PATIENCE, self.frame())
                .await
                .expect("a WebSocket message in time");
            match opcode {
                1 => return String::from_utf8(payload).expect("UTF-8 text"),
                9 | 10 => continue,
                op => panic!(
                    "unexpected frame {op}: {:?}",
                    String::from_utf8_lossy(&payload)
                ),
            }
        }
    }

    async fn frame(&mut self) -> (u8, Vec<u8>) {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).await.expect("read a frame");
        let mut len = u64::from(h[1] & 127);
        if len == 126 {
            let mut b = [0u8; 2];
            self.s.read_exact(&mut b).await.expect("read a length");
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.s.read_exact(&mut b).await.expect("read a length");
            len = u64::from_be_bytes(b);
        }
        assert_eq!(h[1] & 128, 0, "servers do not mask");
        let mut payload = vec![0u8; len as usize];
        self.s
            .read_exact(&mut payload)
            .await
            .expect("read a payload");
        (h[0] & 15, payload)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_are_served_by_host_name_and_by_path() {
    let (mut cfg, claim) = test_config();
    with_registry(&mut cfg);
    let _cleanup = CleanupGuard(cfg.clone());
    let srv = Server::start(&cfg);
    let addr = srv.addr.clone();

    let (status, s) = srv.api("POST", "/api/sessions", Some(json!({}))).await;
    assert_eq!(status, 201, "{s}");
    let sid = s["id"].as_str().expect("id").to_string();
    let (status, n) = srv
        .api(
            "POST",
            &format!("/api/sessions/{sid}/nodes"),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, &n["name"]), (201, &json!("node1")), "{n}");
    assert_eq!(n["ports"], json!([]));
    let mut events = Ws::connect(&addr, &addr, &format!("/api/sessions/{sid}/events"))
        .await
        .expect("events socket");
    let snapshot: Value = serde_json::from_str(&events.recv().await).unwrap();
    assert_eq!(snapshot["type"], "snapshot");

    // A port docker publishes shows on the node and in the events.
    srv.sh(
        &sid,
        "node1",
        "docker pull -q nginx >/dev/null && docker run -d -p 8080:80 nginx",
        None,
    )
    .await;
    let n = srv.wait_ports(&sid, "node1", &[8080]).await;
    let port = srv.port();
    let host = format!("node1-{sid}-8080.localhost:{port}");
    assert_eq!(n["ports"][0]["url"], format!("http://{host}/"), "{n}");
    assert_eq!(
        n["ports"][0]["path"],
        format!("/p/{sid}/node1/8080/"),
        "{n}"
    );
    loop {
        let ev: Value = serde_json::from_str(&events.recv().await).unwrap();
        if ev["type"] == "node_updated" && ev["node"]["ports"][0]["port"] == 8080 {
            break;
        }
    }

    // The page, by host name (whatever the path: the API's paths belong to the node there)
    // and by path.
    let page = http(&addr, "GET", "/", &host, None).await;
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.body.contains("Welcome to nginx!"), "{}", page.body);
    let missing = http(&addr, "GET", "/api/sessions", &host, None).await;
    assert_eq!(missing.status, 404, "{}", missing.head);
    assert!(
        missing
            .header("server")
            .is_some_and(|s| s.starts_with("nginx")),
        "{}",
        missing.head
    );
    // Request bodies stream through, beyond the API's JSON limit (nginx refuses a POST to a
    // file with 405 once it has the body).
    let big = "x".repeat(200 << 10);
    let post = http(&addr, "POST", "/index.html", &host, Some(&big)).await;
    assert_eq!(post.status, 405, "{}", post.head);
    let page = http(&addr, "GET", &format!("/p/{sid}/node1/8080/"), &addr, None).await;
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.body.contains("Welcome to nginx!"), "{}", page.body);
    let redirect = http(
        &addr,
        "GET",
        &format!("/p/{sid}/node1/8080?a=1"),
        &addr,
        None,
    )
    .await;
    assert_eq!(redirect.status, 308, "{}", redirect.head);
    assert_eq!(
        redirect.header("location"),
        Some(format!("/p/{sid}/node1/8080/?a=1").as_str())
    );
    // nginx redirects a directory without its slash; the redirect stays under the prefix.
    srv.sh(
        &sid,
        "node1",
        "docker exec $(docker ps -q) mkdir /usr/share/nginx/html/dir",
        None,
    )
    .await;
    let redirect = http(
        &addr,
        "GET",
        &format!("/p/{sid}/node1/8080/dir"),
        &addr,
        None,
    )
    .await;
    assert_eq!(redirect.status, 301, "{}", redirect.head);
    assert_eq!(
        redirect.header("location"),
        Some(format!("/p/{sid}/node1/8080/dir/").as_str())
    );
    let redirect = http(&addr, "GET", "/dir", &host, None).await;
    assert_eq!(redirect.status, 301, "{}", redirect.head);
    assert_eq!(
        redirect.header("location"),
        Some("/dir/"),
        "{}",
        redirect.head
    );

    // A WebSocket server run on the node itself (any port works, published or not).
    srv.sh(
        &sid,
        "node1",
        "cat > /root/ws.pl && (setsid perl /root/ws.pl >/root/ws.log 2>&1 </dev/null &)",
        Some(WS_ECHO),
    )
    .await;
    let ws_host = format!("node1-{sid}-9000.localhost:{port}");
    let started = Instant::now();
    let mut ws = loop {
        match Ws::connect(&addr, &ws_host, "/chat").await {
            Ok(ws) => break ws,
            Err(head) => {
                assert!(
                    started.elapsed() < PATIENCE,
                    "no WebSocket on port 9000: {head}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let hello = ws.recv().await;
    assert!(
        hello.starts_with("hello x-forwarded-for=127.0.0.1 "),
        "{hello}"
    );
    assert!(
        hello.contains(&format!("x-forwarded-host={ws_host} ")),
        "{hello}"
    );
    assert!(hello.contains("x-forwarded-proto=http "), "{hello}");
    for msg in ["one", "two, a little longer", "three"] {
        ws.send(msg).await;
        assert_eq!(ws.recv().await, format!("echo: {msg}"));
    }
    // The server takes one client at a time: this one's end must reach it through the proxy.
    drop(ws);
    let mut ws = Ws::connect(&addr, &addr, &format!("/p/{sid}/node1/9000/chat"))
        .await
        .expect("WebSocket by path");
    let hello = ws.recv().await;
    assert!(
        hello.ends_with(&format!("x-forwarded-prefix=/p/{sid}/node1/9000")),
        "{hello}"
    );
    ws.send("by path").await;
    assert_eq!(ws.recv().await, "echo: by path");
    drop(ws);

    // A node of another session, an unknown session, a port nothing listens on, no port.
    let (_, other) = srv.api("POST", "/api/sessions", Some(json!({}))).await;
    let other = other["id"].as_str().expect("id").to_string();
    for (what, path, host) in [
        ("by path", format!("/p/{other}/node1/8080/"), addr.clone()),
        (
            "by host",
            "/".into(),
            format!("node1-{other}-8080.localhost:{port}"),
        ),
        (
            "unknown session",
            "/".into(),
            format!("node1-{}-8080.localhost", "0".repeat(32)),
        ),
        (
            "unknown node",
            format!("/p/{sid}/node9/8080/"),
            addr.clone(),
        ),
    ] {
        let r = http(&addr, "GET", &path, &host, None).await;
        assert_eq!(r.status, 404, "{what}: {}", r.head);
        assert!(r.body.contains(r#""error":"no "#), "{what}: {}", r.body);
    }
    let (status, body) = srv.api("GET", &format!("/p/{sid}/node1/8081/"), None).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "nothing answers on port 8081 of node node1");
    let (status, body) = srv
        .api("GET", &format!("/p/{sid}/node1/70000/"), None)
        .await;
    assert_eq!(status, 400, "{body}");

    // The port goes when its container does.
    srv.sh(
        &sid,
        "node1",
        "docker rm -f $(docker ps -q) >/dev/null",
        None,
    )
    .await;
    srv.wait_ports(&sid, "node1", &[]).await;

    drop(events);
    // Ended through the server, which reaps its nodes' init processes (they are its children).
    for id in [&sid, &other] {
        let reply = http(&addr, "DELETE", &format!("/api/sessions/{id}"), &addr, None).await;
        assert_eq!(reply.status, 204, "{}", reply.head);
    }
    srv.stop();
    // Nothing of the server is left on the host.
    let t = TestRuntime::open(cfg, claim).await;
    t.finish().await;
}
