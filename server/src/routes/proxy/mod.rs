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
//!
//! `target.rs` parses where a request goes, `headers.rs` rewrites headers both ways.

mod headers;
mod target;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;

use super::state::AppState;
use crate::error::ApiError;
use headers::{add_forwarded, confine, rewrite_location, strip_hop_by_hop, wants_upgrade};
use target::{path_target, port_host, request_host, Target};

/// Bound on connecting to the node's port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The path routes, merged into the app.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/p/{sid}/{node}/{port}", any(by_path))
        .route("/p/{sid}/{node}/{port}/", any(by_path))
        .route("/p/{sid}/{node}/{port}/{*rest}", any(by_path))
}

/// Middleware: a request whose host names a node's port is proxied, whatever its path;
/// every other request goes on to the app.
pub async fn by_host(State(s): State<AppState>, req: Request, next: Next) -> Response {
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
    let ip = s.sessions.node_address(sid, node)?;
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
                    () = crate::sessions::ended(&mut session_events) => {}
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
