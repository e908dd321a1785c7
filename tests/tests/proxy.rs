//! Published ports through a real `sandpit serve` on port 0 with a real node: a port that
//! docker publishes shows on the node and in the events, an nginx page is served by host name
//! and by path, a WebSocket server on the node carries messages both ways through the proxy,
//! a node of another session is 404 and a port nothing listens on is 502. At the end nothing
//! of the server is left on the host.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sandpit_tests::{TestServer, Ws};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

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

/// An answer through the proxy: status, headers and body as text.
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request with a `Host` of our choice (and a body, sent as JSON).
async fn http(srv: &TestServer, method: &str, path: &str, host: &str, body: Option<&str>) -> Reply {
    let headers = [("host", host), ("content-type", "application/json")];
    let body = body.unwrap_or("").as_bytes().to_vec();
    let (status, headers, body) = srv.request_full(method, path, &headers, body).await;
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Polls the node until its published port numbers are `want`.
async fn wait_ports(srv: &TestServer, sid: &str, node: &str, want: &[u16]) -> Value {
    let started = Instant::now();
    loop {
        let (status, n) = srv.get(&format!("/api/sessions/{sid}/nodes/{node}")).await;
        assert_eq!(status, 200, "{n}");
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

/// The next text message of a WebSocket (pings are answered by the client library).
async fn recv(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a WebSocket message in time")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected WebSocket message: {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into()))
        .await
        .expect("send a message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_ports_are_served_by_host_name_and_by_path() {
    let srv = TestServer::start_with_registry(&[]);
    let addr = srv.addr().to_string();

    let sid = srv.session_id().await;
    let n = srv.node(&sid).await;
    assert_eq!(n["name"], "node1", "{n}");
    assert_eq!(n["ports"], json!([]));
    let mut events = srv.events(&sid).await;
    assert_eq!(events.until("snapshot", PATIENCE).await["type"], "snapshot");

    // A port docker publishes shows on the node and in the events.
    srv.sh(
        &sid,
        "node1",
        "docker pull -q nginx >/dev/null && docker run -d -p 8080:80 nginx",
    )
    .await;
    let n = wait_ports(&srv, &sid, "node1", &[8080]).await;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let host = format!("node1-{sid}-8080.localhost:{port}");
    assert_eq!(n["ports"][0]["url"], format!("http://{host}/"), "{n}");
    assert_eq!(
        n["ports"][0]["path"],
        format!("/p/{sid}/node1/8080/"),
        "{n}"
    );
    loop {
        let ev = events.until("node_updated", PATIENCE).await;
        if ev["node"]["ports"][0]["port"] == 8080 {
            break;
        }
    }

    // The page, by host name (whatever the path: the API's paths belong to the node there)
    // and by path.
    let page = http(&srv, "GET", "/", &host, None).await;
    assert_eq!(page.status, 200, "{:?}", page.headers);
    assert!(page.body.contains("Welcome to nginx!"), "{}", page.body);
    let missing = http(&srv, "GET", "/api/sessions", &host, None).await;
    assert_eq!(missing.status, 404, "{:?}", missing.headers);
    assert!(
        missing
            .header("server")
            .is_some_and(|s| s.starts_with("nginx")),
        "{:?}",
        missing.headers
    );
    // Request bodies stream through, beyond the API's JSON limit (nginx refuses a POST to a
    // file with 405 once it has the body).
    let big = "x".repeat(200 << 10);
    let post = http(&srv, "POST", "/index.html", &host, Some(&big)).await;
    assert_eq!(post.status, 405, "{:?}", post.headers);
    let page = http(&srv, "GET", &format!("/p/{sid}/node1/8080/"), &addr, None).await;
    assert_eq!(page.status, 200, "{:?}", page.headers);
    assert!(page.body.contains("Welcome to nginx!"), "{}", page.body);
    let redirect = http(
        &srv,
        "GET",
        &format!("/p/{sid}/node1/8080?a=1"),
        &addr,
        None,
    )
    .await;
    assert_eq!(redirect.status, 308, "{:?}", redirect.headers);
    assert_eq!(
        redirect.header("location"),
        Some(format!("/p/{sid}/node1/8080/?a=1").as_str())
    );
    // nginx redirects a directory without its slash; the redirect stays under the prefix.
    srv.sh(
        &sid,
        "node1",
        "docker exec $(docker ps -q) mkdir /usr/share/nginx/html/dir",
    )
    .await;
    let redirect = http(
        &srv,
        "GET",
        &format!("/p/{sid}/node1/8080/dir"),
        &addr,
        None,
    )
    .await;
    assert_eq!(redirect.status, 301, "{:?}", redirect.headers);
    assert_eq!(
        redirect.header("location"),
        Some(format!("/p/{sid}/node1/8080/dir/").as_str())
    );
    let redirect = http(&srv, "GET", "/dir", &host, None).await;
    assert_eq!(redirect.status, 301, "{:?}", redirect.headers);
    assert_eq!(
        redirect.header("location"),
        Some("/dir/"),
        "{:?}",
        redirect.headers
    );

    // A WebSocket server run on the node itself (any port works, published or not).
    let (status, up) = srv
        .put(
            &format!("/api/sessions/{sid}/nodes/node1/files?path=ws.pl"),
            WS_ECHO.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 201, "{up}");
    srv.sh(
        &sid,
        "node1",
        "(setsid perl /root/ws.pl >/root/ws.log 2>&1 </dev/null &)",
    )
    .await;
    let ws_host = format!("node1-{sid}-9000.localhost:{port}");
    let started = Instant::now();
    let mut ws = loop {
        match srv.ws_with("/chat", &[("host", &ws_host)]).await {
            Ok(ws) => break ws,
            Err(refusal) => {
                assert!(
                    started.elapsed() < PATIENCE,
                    "no WebSocket on port 9000: {refusal:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let hello = recv(&mut ws).await;
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
        send(&mut ws, msg).await;
        assert_eq!(recv(&mut ws).await, format!("echo: {msg}"));
    }
    // The server takes one client at a time: this one's end must reach it through the proxy.
    drop(ws);
    let mut ws = srv
        .ws(&format!("/p/{sid}/node1/9000/chat"), None)
        .await
        .expect("WebSocket by path");
    let hello = recv(&mut ws).await;
    assert!(
        hello.ends_with(&format!("x-forwarded-prefix=/p/{sid}/node1/9000")),
        "{hello}"
    );
    send(&mut ws, "by path").await;
    assert_eq!(recv(&mut ws).await, "echo: by path");
    drop(ws);

    // A node of another session, an unknown session, a port nothing listens on, no port.
    let other = srv.session_id().await;
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
        let r = http(&srv, "GET", &path, &host, None).await;
        assert_eq!(r.status, 404, "{what}: {:?}", r.headers);
        assert!(r.body.contains(r#""error":"no "#), "{what}: {}", r.body);
    }
    let (status, body) = srv.get(&format!("/p/{sid}/node1/8081/")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "nothing answers on port 8081 of node node1");
    let (status, body) = srv.get(&format!("/p/{sid}/node1/70000/")).await;
    assert_eq!(status, 400, "{body}");

    // The port goes when its container does.
    srv.sh(&sid, "node1", "docker rm -f $(docker ps -q) >/dev/null")
        .await;
    wait_ports(&srv, &sid, "node1", &[]).await;

    drop(events);
    // Ended through the server, which reaps its nodes' init processes (they are its children).
    for id in [&sid, &other] {
        let (status, reply) = srv.delete(&format!("/api/sessions/{id}")).await;
        assert_eq!(status, 204, "{reply}");
    }
    // The server stops cleanly and nothing of it is left on the host.
    srv.finish().await;
}
