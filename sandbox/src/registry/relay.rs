//! The registry relay of one session network: two HTTP listeners on the network's gateway that
//! pass node requests to the host's registries over their unix sockets.
//!
//! - `<gateway>:MIRROR_PORT` is the mirror every node's dockerd pulls Docker Hub images through
//!   (`registry-mirrors`). Read-only: only GET and HEAD pass.
//! - `<gateway>:PUSH_PORT`, named `registry` in the nodes, is the session registry: names are
//!   moved into the session's namespace on the way in and out (see `names.rs`).
//!
//! - `<gateway>:443`, offline only, is the stand-in for Docker Hub: bytes pass unchanged (TLS
//!   ends in that registry, see `mod.rs`).
//!
//! Only peers inside the network's subnet are served (the firewall already drops the rest).

use std::convert::Infallible;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use super::RegistryError;

use super::gateway::{MIRROR_PORT, PUSH_PORT, REGISTRY_HOST};
use super::names::{self, Mapped};
use crate::network::Subnet;

type Body = BoxBody<Bytes, hyper::Error>;

/// Largest tag list or catalog the relay rewrites.
const MAX_REWRITTEN_BODY: usize = 16 << 20;

/// The listeners of one network. Dropping it stops them and their connections.
pub(crate) struct Relay {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What one listener does with a request.
struct Route {
    socket: PathBuf,
    /// The session namespace (push registry), or None (read-only mirror).
    namespace: Option<String>,
}

/// Starts the relay of network `network` on the gateway of `subnet`.
pub(crate) async fn start(
    subnet: Subnet,
    network: &str,
    mirror_socket: PathBuf,
    push_socket: PathBuf,
    hub: Option<(u16, PathBuf)>,
) -> Result<Relay, RegistryError> {
    let mirror = Route {
        socket: mirror_socket,
        namespace: None,
    };
    let push = Route {
        socket: push_socket,
        namespace: Some(names::namespace(network)),
    };
    // Built as it goes, so a failed bind stops the listeners started before it.
    let mut relay = Relay { tasks: Vec::new() };
    for (port, route) in [(MIRROR_PORT, mirror), (PUSH_PORT, push)] {
        let route = Arc::new(route);
        let listener = bind(subnet, port).await?;
        relay
            .tasks
            .push(tokio::spawn(accept(listener, subnet, move |stream| {
                serve_http(stream, route.clone())
            })));
    }
    if let Some((port, socket)) = hub {
        let listener = bind(subnet, port).await?;
        relay
            .tasks
            .push(tokio::spawn(accept(listener, subnet, move |stream| {
                pass_through(stream, socket.clone())
            })));
    }
    Ok(relay)
}

async fn bind(subnet: Subnet, port: u16) -> Result<tokio::net::TcpListener, RegistryError> {
    let addr = SocketAddrV4::new(subnet.gateway(), port);
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RegistryError::Relay { addr, source })
}

/// Hands every connection from inside `subnet` to `serve`, each in its own task.
async fn accept<F, Fut>(listener: tokio::net::TcpListener, subnet: Subnet, serve: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // Connections live in the set, so aborting this task ends them too.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if matches!(peer, SocketAddr::V4(p) if subnet.contains(*p.ip())) {
                    conns.spawn(serve(stream));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Serves registry HTTP on one connection.
async fn serve_http(stream: tokio::net::TcpStream, route: Arc<Route>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let route = route.clone();
        async move { Ok::<_, Infallible>(handle(&route, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Copies the bytes of one connection to a fresh connection to `socket`, both ways.
async fn pass_through(mut stream: tokio::net::TcpStream, socket: PathBuf) {
    if let Ok(mut up) = tokio::net::UnixStream::connect(&socket).await {
        let _ = tokio::io::copy_bidirectional(&mut stream, &mut up).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("the mirror is read-only: push to {REGISTRY_HOST}:{PUSH_PORT}/<name> instead")]
    ReadOnly,
    #[error("the registry is not running")]
    Unavailable,
}

impl RelayError {
    /// An error in the registry API's own format, so `docker` shows the message.
    fn response(&self) -> Response<Body> {
        let (status, code) = match self {
            RelayError::Name(names::NameError::UnknownPath) => {
                (StatusCode::NOT_FOUND, "UNSUPPORTED")
            }
            RelayError::Name(names::NameError::InvalidName(_)) => {
                (StatusCode::BAD_REQUEST, "NAME_INVALID")
            }
            RelayError::ReadOnly => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            RelayError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        };
        let body = serde_json::json!({
            "errors": [{ "code": code, "message": self.to_string() }]
        });
        let mut r = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    }
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

/// How the answer to a request must be rewritten.
enum Answer {
    AsIs,
    Tags,
    Catalog,
}

async fn handle(route: &Route, req: Request<Incoming>) -> Response<Body> {
    match forward(route, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn forward(route: &Route, req: Request<Incoming>) -> Result<Response<Body>, RelayError> {
    let (mut parts, body) = req.into_parts();
    let mut answer = Answer::AsIs;
    match &route.namespace {
        None => {
            if parts.method != Method::GET && parts.method != Method::HEAD {
                return Err(RelayError::ReadOnly);
            }
        }
        Some(ns) => {
            let (path, query) = match names::map_path(ns, parts.uri.path())? {
                Mapped::Base => (parts.uri.path().to_string(), None),
                Mapped::Catalog => {
                    answer = Answer::Catalog;
                    // One page holding everything (see `catalog.maxentries` in the registry's
                    // configuration): the namespace's share is picked out after.
                    ("/v2/_catalog".to_string(), None)
                }
                Mapped::Repo(p) => {
                    if p.ends_with("/tags/list") {
                        answer = Answer::Tags;
                    }
                    let q = parts
                        .uri
                        .query()
                        .map(|q| names::map_query(ns, q))
                        .transpose()?;
                    (p, q)
                }
            };
            let uri = match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            parts.uri = uri
                .parse::<Uri>()
                .map_err(|_| names::NameError::UnknownPath)?;
        }
    }

    let stream = tokio::net::UnixStream::connect(&route.socket)
        .await
        .map_err(|_| RelayError::Unavailable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| RelayError::Unavailable)?;
    // Drives the upstream connection until the response body has been read.
    tokio::spawn(conn);
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|_| RelayError::Unavailable)?;

    let Some(ns) = &route.namespace else {
        return Ok(resp.map(BodyExt::boxed));
    };
    let (mut parts, body) = resp.into_parts();
    if let Some(loc) = parts.headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
        if let Ok(v) = HeaderValue::from_str(&names::unmap_location(ns, loc)) {
            parts.headers.insert(LOCATION, v);
        }
    }
    let rewrite: fn(&str, &[u8]) -> Option<Vec<u8>> = match answer {
        Answer::AsIs => return Ok(Response::from_parts(parts, body.boxed())),
        Answer::Tags => names::unmap_tags,
        Answer::Catalog => names::unmap_catalog,
    };
    let bytes = Limited::new(body, MAX_REWRITTEN_BODY)
        .collect()
        .await
        .map_err(|_| RelayError::Unavailable)?
        .to_bytes();
    let out = if parts.status.is_success() {
        rewrite(ns, &bytes).unwrap_or_else(|| bytes.to_vec())
    } else {
        bytes.to_vec()
    };
    parts.headers.remove(CONTENT_LENGTH);
    // The catalog's paging refers to names outside the namespace.
    parts.headers.remove(hyper::header::LINK);
    Ok(Response::from_parts(parts, full(out)))
}
