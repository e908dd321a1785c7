//! Headers on the way through the proxy: hop-by-hop headers go, `X-Forwarded-*` come, and what
//! a node's server answers is kept from reaching beyond its own port (cookies, the page's
//! origin, redirects).

use std::net::IpAddr;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

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

/// Whether the client asks to switch protocols (a WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub fn add_forwarded(headers: &mut HeaderMap, client: IpAddr, prefix: Option<&str>) {
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

/// Keeps what a node's server answers from reaching beyond its own port.
///
/// - Cookies lose their `Domain` (with a real base domain, `Domain=<base>` would reach every
///   other session's ports and the page), and by path their `Path` is put under the prefix.
/// - By path, the answer shares the page's origin: it gets an opaque origin of its own
///   (`Content-Security-Policy: sandbox`, without `allow-same-origin`), so its scripts cannot read
///   the page's storage, open WebSockets as the page or register a service worker, and the
///   headers that act on the whole origin (`Service-Worker-Allowed`, `Clear-Site-Data`) go.
pub fn confine(headers: &mut HeaderMap, prefix: Option<&str>) {
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
pub fn rewrite_location(headers: &mut HeaderMap, client_host: &str, prefix: Option<&str>) {
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
