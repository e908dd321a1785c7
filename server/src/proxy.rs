//! The port proxy: HTTP and WebSocket traffic from browsers to a port of a node, reached
//!
//! - by host name, `{node}-{sid}-{port}.{base_domain}` (any path; with the default base
//!   `localhost` browsers resolve every `*.localhost` to the loopback address by themselves),
//!   through [`by_host`], a layer in front of the whole app;
//! - by path, `/p/{sid}/{node}/{port}/{rest}` through [`routes`], which forwards `/{rest}`.
//!
//! Both check that the node is a running node of the live session, then open a TCP connection
//! to the node's address on its session bridge (the only network the host shares with nodes;
//! the session firewall lets the replies of connections the host opens back in). Any port may
//! be proxied, not only the ones docker publishes: a learner may run a server on the node
//! itself. One upstream connection per request, HTTP/1.1, hop-by-hop headers removed and
//! `X-Forwarded-*` added. An upgrade (WebSocket) is passed through: once the node answers 101,
//! both upgraded connections are joined and bytes copied both ways until either side closes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;

use crate::api::{ApiError, AppState};
use crate::session::is_session_id;

/// Bound on connecting to the node's port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers that belong to one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    sid: String,
    node: String,
    port: u16,
}

/// The path routes, merged into the app.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/p/{sid}/{node}/{port}", any(by_path))
        .route("/p/{sid}/{node}/{port}/", any(by_path))
        .route("/p/{sid}/{node}/{port}/{*rest}", any(by_path))
}

/// Middleware: a request whose host names a node's port is proxied, whatever its path;
/// every other request goes on to the app.
pub(crate) async fn by_host(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let host = request_host(&req).map(str::to_owned);
    match host.and_then(|h| port_host(&h, &s.sessions.config().base_domain)) {
        None => next.run(req).await,
        Some(Err(e)) => e.into_response(),
        Some(Ok(target)) => {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into());
            forward(&s, target, path, None, req)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
    }
}

/// `/p/{sid}/{node}/{port}/{rest}`: the raw path is split here, so `rest` is forwarded exactly
/// as the client encoded it.
async fn by_path(State(s): State<AppState>, req: Request) -> Response {
    match path_target(req.uri()) {
        Err(e) => e.into_response(),
        Ok((_, None)) => {
            // The page's relative links need the trailing slash.
            let query = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            Redirect::permanent(&format!("{}/{query}", req.uri().path())).into_response()
        }
        Ok((target, Some(rest))) => {
            let prefix = format!("/p/{}/{}/{}", target.sid, target.node, target.port);
            forward(&s, target, rest, Some(prefix), req)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
    }
}

/// The target of a `/p/...` path and the upstream path and query (None: the trailing slash is
/// missing).
fn path_target(uri: &Uri) -> Result<(Target, Option<String>), ApiError> {
    let path = uri.path();
    let mut parts = path.strip_prefix("/p/").unwrap_or(path).splitn(4, '/');
    let (sid, node, port) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let target = Target {
        sid: sid.into(),
        node: node.into(),
        port: parse_port(port)?,
    };
    let Some(rest) = parts.next() else {
        return Ok((target, None));
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Ok((target, Some(format!("/{rest}{query}"))))
}

fn parse_port(port: &str) -> Result<u16, ApiError> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 && !port.starts_with('0') => Ok(p),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("port must be a number from 1 to 65535, not {port:?}"),
        )),
    }
}

/// The host the client asked for, without its port: `Host`, or the URI's authority (HTTP/2).
fn request_host(req: &Request) -> Option<&str> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    Some(match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    })
}

/// Whether `host` (without port) is `{node}-{sid}-{port}.{base}`: None if it does not have
/// that shape (an ordinary request), an error if it does but the port is impossible.
fn port_host(host: &str, base: &str) -> Option<Result<Target, ApiError>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let base = base.trim_end_matches('.').to_ascii_lowercase();
    let label = host.strip_suffix(&base)?.strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let mut parts = label.rsplitn(3, '-');
    let (port, sid, node) = (parts.next()?, parts.next()?, parts.next()?);
    if node.is_empty() || !is_session_id(sid) || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(parse_port(port).map(|port| Target {
        sid: sid.into(),
        node: node.into(),
        port,
    }))
}

/// Whether the client asks to switch protocols (a WebSocket).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Adds `X-Forwarded-For/Host/Proto` (and `-Prefix` for the path form).
fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, prefix: Option<&str>) {
    const XFF: &str = "x-forwarded-for";
    let xff = match headers.get(XFF).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(XFF, v);
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
    // A front proxy that terminates TLS says so; otherwise the client spoke plain HTTP to us.
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(p) = prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert("x-forwarded-prefix", p);
    }
}

fn bad_gateway(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, message)
}

/// Sends `req` to the target's port as `path` and answers what the node answers. With the
/// path form, `prefix` is put back in front of redirects to absolute paths.
async fn forward(
    s: &AppState,
    target: Target,
    path: String,
    prefix: Option<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let Target { sid, node, port } = &target;
    s.sessions.running_node(sid, node)?;
    let ip = s
        .sessions
        .runtime()
        .node(sid, node)
        .map(|n| n.ip)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node {node:?}")))?;
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let client_host = request_host(&req).unwrap_or_default().to_ascii_lowercase();
    let upgrade = wants_upgrade(req.headers()).then(|| {
        let protocol = req.headers().get(header::UPGRADE).cloned();
        (hyper::upgrade::on(&mut req), protocol)
    });

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, client, prefix.as_deref());
    if let Some((_, Some(protocol))) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    parts.uri = path
        .parse()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid path"))?;
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    let nothing = || bad_gateway(format!("nothing answers on port {port} of node {node}"));
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((ip, *port)))
            .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(session = %sid, node = %node, port, error = %e, "proxy connect");
                return Err(nothing());
            }
            Err(_) => return Err(nothing()),
        };
    let _ = stream.set_nodelay(true);
    keepalive(&stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| nothing())?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = sender.send_request(upstream_req).await.map_err(|e| {
        bad_gateway(format!(
            "port {port} of node {node} did not answer HTTP: {e}"
        ))
    })?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some((client_upgrade, _)) = upgrade else {
            return Err(bad_gateway(format!(
                "port {port} of node {node} switched protocols unasked"
            )));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        // The tunnel ends with its session (and, through keepalive, with its node).
        let mut session_events = s.sessions.events(sid)?;
        let span = tracing::debug_span!("proxied upgrade", session = %sid, node = %node, port);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let (Ok(client), Ok(upstream)) = tokio::join!(client_upgrade, upstream_upgrade)
                else {
                    return;
                };
                let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                    () = crate::session::ended(&mut session_events) => {}
                }
            },
            span,
        ));
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    rewrite_location(&mut parts.headers, &client_host, prefix.as_deref());
    confine(&mut parts.headers, prefix.as_deref());
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// TCP keepalive on a connection to a node: a node that is destroyed sends no reset, and a
/// tunnel to it would otherwise stay open as long as the client's side does.
fn keepalive(stream: &tokio::net::TcpStream) {
    use rustix::net::sockopt;
    let _ = sockopt::set_socket_keepalive(stream, true);
    let _ = sockopt::set_tcp_keepidle(stream, Duration::from_secs(60));
    let _ = sockopt::set_tcp_keepintvl(stream, Duration::from_secs(10));
    let _ = sockopt::set_tcp_keepcnt(stream, 3);
}

/// Keeps what a node's server answers from reaching beyond its own port.
///
/// - Cookies lose their `Domain` (with a real base domain, `Domain=<base>` would reach every
///   other session's ports and the page), and by path their `Path` is put under the prefix.
/// - By path, the answer shares the page's origin: it gets an opaque origin of its own
///   (`Content-Security-Policy: sandbox`, without `allow-same-origin`), so its scripts cannot read
///   the page's storage, open WebSockets as the page or register a service worker, and the
///   headers that act on the whole origin (`Service-Worker-Allowed`, `Clear-Site-Data`) go.
fn confine(headers: &mut HeaderMap, prefix: Option<&str>) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .filter_map(|c| HeaderValue::from_str(&confine_cookie(c, prefix)).ok())
        .collect();
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
    if prefix.is_some() {
        headers.remove("service-worker-allowed");
        headers.remove("clear-site-data");
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads",
            ),
        );
    }
}

/// A `Set-Cookie` value without `Domain`, and with its `Path` under `prefix` when given.
fn confine_cookie(cookie: &str, prefix: Option<&str>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut has_path = false;
    for (i, attr) in cookie.split(';').enumerate() {
        let a = attr.trim();
        let lower = a.to_ascii_lowercase();
        if i > 0 && lower.starts_with("domain=") {
            continue;
        }
        if i > 0 && lower.starts_with("path=") {
            has_path = true;
            if let Some(p) = prefix {
                let path = a[5..].trim_start_matches('/');
                parts.push(format!("Path={p}/{path}"));
                continue;
            }
        }
        parts.push(a.to_string());
    }
    if let (Some(p), false) = (prefix, has_path) {
        parts.push(format!("Path={p}/"));
    }
    parts.join("; ")
}

/// Redirects of the node's server to itself stay on the proxy: an absolute URL of the host the
/// client asked for (servers such as nginx put their own port in it) becomes a path, and with
/// the path form a path gets the prefix back in front.
fn rewrite_location(headers: &mut HeaderMap, client_host: &str, prefix: Option<&str>) {
    let Some(loc) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) else {
        return;
    };
    let own = ["http://", "https://"].iter().find_map(|scheme| {
        let rest = loc.get(scheme.len()..)?;
        if !loc[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return None;
        }
        let (authority, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        host.eq_ignore_ascii_case(client_host).then_some(path)
    });
    let path = match own {
        Some("") => "/",
        Some(path) => path,
        None if loc.starts_with('/') && !loc.starts_with("//") => loc,
        None => return,
    };
    let new = format!("{}{path}", prefix.unwrap_or(""));
    if new != loc {
        if let Ok(v) = HeaderValue::from_str(&new) {
            headers.insert(header::LOCATION, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn cookies_stay_with_their_port() {
        let by_path = Some("/p/s/node1/80");
        assert_eq!(
            confine_cookie("a=1; Domain=play.example.com; Path=/; HttpOnly", None),
            "a=1; Path=/; HttpOnly"
        );
        assert_eq!(
            confine_cookie("a=1; domain=.example.com; path=/app", by_path),
            "a=1; Path=/p/s/node1/80/app"
        );
        assert_eq!(
            confine_cookie("a=1; Secure", by_path),
            "a=1; Secure; Path=/p/s/node1/80/"
        );
        // A value that looks like an attribute is the value.
        assert_eq!(confine_cookie("domain=x", None), "domain=x");
    }

    #[test]
    fn answers_by_path_get_an_opaque_origin() {
        let mut h = HeaderMap::new();
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
        h.insert("clear-site-data", HeaderValue::from_static("\"*\""));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; Domain=x"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        let mut by_host = h.clone();
        confine(&mut h, Some("/p/s/node1/80"));
        assert!(h.get("service-worker-allowed").is_none());
        assert!(h.get("clear-site-data").is_none());
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("sandbox"));
        assert_eq!(h.get_all(header::SET_COOKIE).iter().count(), 2);
        confine(&mut by_host, None);
        assert!(by_host.get(header::CONTENT_SECURITY_POLICY).is_none());
        assert_eq!(by_host[header::SET_COOKIE], "a=1");
    }

    fn target(node: &str, port: u16) -> Target {
        Target {
            sid: SID.into(),
            node: node.into(),
            port,
        }
    }

    #[test]
    fn host_names_of_ports() {
        let h = |host: &str| port_host(host, "localhost").map(|r| r.map_err(|e| format!("{e:?}")));
        assert_eq!(
            h(&format!("node1-{SID}-8080.localhost")),
            Some(Ok(target("node1", 8080)))
        );
        assert_eq!(
            h(&format!("NODE1-{}-80.LocalHost.", SID.to_uppercase())),
            Some(Ok(target("node1", 80)))
        );
        assert_eq!(
            h(&format!("my-node-{SID}-80.localhost")),
            Some(Ok(target("my-node", 80)))
        );
        assert!(matches!(
            h(&format!("node1-{SID}-0.localhost")),
            Some(Err(_))
        ));
        assert!(matches!(
            h(&format!("node1-{SID}-70000.localhost")),
            Some(Err(_))
        ));
        // Not port hosts: the app answers them.
        assert_eq!(h("localhost"), None);
        assert_eq!(h("sandpit.localhost"), None);
        assert_eq!(h(&format!("node1-{SID}-80.localhost.evil.example")), None);
        assert_eq!(h(&format!("a.node1-{SID}-80.localhost")), None);
        assert_eq!(h(&format!("-{SID}-80.localhost")), None);
        assert_eq!(h("node1-notasession-80.localhost"), None);
        assert_eq!(
            port_host(
                &format!("node2-{SID}-3000.play.example.com"),
                "play.example.com"
            )
            .map(|r| r.ok()),
            Some(Some(target("node2", 3000)))
        );
    }

    #[test]
    fn path_targets() {
        let p = |uri: &str| path_target(&uri.parse().unwrap()).map_err(|e| format!("{e:?}"));
        assert_eq!(
            p(&format!("/p/{SID}/node1/8080/a/b%20c?x=1&y")).unwrap(),
            (target("node1", 8080), Some("/a/b%20c?x=1&y".into()))
        );
        assert_eq!(
            p(&format!("/p/{SID}/node1/8080/")).unwrap(),
            (target("node1", 8080), Some("/".into()))
        );
        assert_eq!(
            p(&format!("/p/{SID}/node1/8080")).unwrap(),
            (target("node1", 8080), None)
        );
        assert!(p(&format!("/p/{SID}/node1/0/")).is_err());
        assert!(p(&format!("/p/{SID}/node1/080/")).is_err());
        assert!(p(&format!("/p/{SID}/node1/x/")).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-private".parse().unwrap());
        h.insert("keep-alive", "5".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert("host", "node1-x-80.localhost:8080".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.9".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), Some("/p/s/node1/80"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "node1-x-80.localhost:8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-prefix"], "/p/s/node1/80");
    }

    #[test]
    fn redirects_stay_on_the_proxy() {
        let loc = |loc: &str, prefix: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert("location", loc.parse().unwrap());
            rewrite_location(&mut h, "node1-s-80.localhost", prefix);
            h["location"].to_str().unwrap().to_string()
        };
        let p = Some("/p/s/node1/80");
        assert_eq!(loc("/login?next=/", p), "/p/s/node1/80/login?next=/");
        assert_eq!(loc("/login", None), "/login");
        assert_eq!(loc("http://node1-s-80.localhost/dir/", None), "/dir/");
        assert_eq!(
            loc("http://NODE1-s-80.localhost:8080?x", p),
            "/p/s/node1/80?x"
        );
        assert_eq!(loc("https://node1-s-80.localhost", p), "/p/s/node1/80/");
        for other in [
            "http://elsewhere/",
            "//elsewhere/",
            "relative",
            "http://node1-s-80.localhost.evil/",
        ] {
            assert_eq!(loc(other, p), other);
        }
    }

    #[test]
    fn upgrades_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        assert!(!wants_upgrade(&h));
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
    }
}
