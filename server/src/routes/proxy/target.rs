//! Where a proxied request goes: `{node}-{sid}-{port}.{base}` host names (and
//! play-with-docker's `{node}-{sid}-{port}.direct.{base}`) and `/p/{sid}/{node}/{port}/{rest}`
//! paths, parsed without touching anything.

use axum::extract::Request;
use axum::http::{header, StatusCode, Uri};

use crate::error::ApiError;
use crate::sessions::is_session_id;

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub sid: String,
    pub node: String,
    pub port: u16,
}

/// The target of a `/p/...` path and the upstream path and query (None: the trailing slash is
/// missing).
pub fn path_target(uri: &Uri) -> Result<(Target, Option<String>), ApiError> {
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
    // Digits only: Rust's parser would also take `+80`.
    let digits = port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(p) if digits && p != 0 && !port.starts_with('0') => Ok(p),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("port must be a number from 1 to 65535, not {port:?}"),
        )),
    }
}

/// The host the client asked for, without its port: `Host`, or the URI's authority (HTTP/2).
pub fn request_host(req: &Request) -> Option<&str> {
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
pub fn port_host(host: &str, base: &str) -> Option<Result<Target, ApiError>> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let base = base.trim_end_matches('.').to_ascii_lowercase();
    let label = host.strip_suffix(&base)?.strip_suffix('.')?;
    // play-with-docker's form, which its pages build: `{node}-{sid}-{port}.direct.{base}`.
    let label = label.strip_suffix(".direct").unwrap_or(label);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "0123456789abcdef0123456789abcdef";

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
        // play-with-docker's form.
        assert_eq!(
            h(&format!("node1-{SID}-8080.direct.localhost")),
            Some(Ok(target("node1", 8080)))
        );
        assert_eq!(h(&format!("node1-{SID}-80.other.localhost")), None);
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
        assert!(p(&format!("/p/{SID}/node1/+80/")).is_err());
    }
}
