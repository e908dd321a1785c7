//! A node's Docker engine, through its API socket `/run/docker.sock` inside the node.
//!
//! The host reaches the socket through the node's root ([`NodeRoot`]: resolved inside the
//! node, never through its symlinks) and speaks HTTP/1.1 on it (`unix_http.rs`), one request
//! per connection. The lookup may block as long as the node likes (a FUSE mount), so it runs
//! on the blocking pool. An [`Engine`] holds the node's PID 1 by identity: once that process is
//! gone, every request fails instead of reaching whatever took its pid.
//!
//! Uses: the runtime pings a new node's engine until it answers (the node is ready then); the
//! server follows each running node's events and lists its published ports.

mod ports;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use crate::node_root::NodeRoot;
use crate::process::ProcessId;
use crate::unix_http;

/// The engine's socket in the node.
const SOCKET: &str = "run/docker.sock";
/// Largest listing read (a node with thousands of containers).
const MAX_LISTING: usize = 8 << 20;
/// The events that change published ports.
const PORT_EVENTS: &str = r#"{"type":["container","service"],"event":["start","die","destroy","create","update","remove"]}"#;

/// Talking to a node's engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("connect to the engine socket {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {path} from the engine: {source}")]
    Request {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("GET {path} from the engine: {status}")]
    Status { path: String, status: StatusCode },
    #[error("read the answer to GET {path} from the engine: {source}")]
    Read {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("parse the answer to GET {path} from the engine: {source}")]
    Parse {
        path: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("read the engine's event stream: {0}")]
    Events(#[source] hyper::Error),
    #[error("{what} took longer than {limit:?}")]
    Timeout { what: &'static str, limit: Duration },
}

/// The engine of one running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    root: NodeRoot,
}

/// The engine's event stream ([`Engine::port_events`]).
pub struct EngineEvents {
    body: Incoming,
}

impl Engine {
    /// The engine of the node whose PID 1 is `init`.
    pub(crate) fn new(init: ProcessId) -> Engine {
        Engine {
            root: NodeRoot::of_init(init),
        }
    }

    /// Answers once the engine answers `GET /_ping` with 200.
    pub async fn ping(&self) -> Result<(), EngineError> {
        self.get_ok("/_ping").await.map(drop)
    }

    /// Published TCP ports of the node: the containers' public ports not bound to loopback
    /// (which includes swarm services published in host mode) and, on swarm managers, the
    /// ports of services published through the ingress routing mesh. Sorted, deduplicated.
    pub async fn published_ports(&self) -> Result<Vec<u16>, EngineError> {
        const CONTAINERS: &str = "/containers/json";
        const SERVICES: &str = "/services";
        let containers = read_listing(self.get_ok(CONTAINERS).await?, CONTAINERS).await?;
        let mut found =
            ports::container_ports(&containers).map_err(|source| EngineError::Parse {
                path: CONTAINERS,
                source,
            })?;
        // Only managers answer this; elsewhere it is a 503 and there is nothing to add.
        let services = self.get(SERVICES).await?;
        if services.status() == StatusCode::OK {
            let services = read_listing(services, SERVICES).await?;
            found.extend(
                ports::service_ports(&services).map_err(|source| EngineError::Parse {
                    path: SERVICES,
                    source,
                })?,
            );
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// The engine's event stream, limited to what changes published ports: containers that
    /// start, die or go, services created, updated or removed.
    pub async fn port_events(&self) -> Result<EngineEvents, EngineError> {
        let query = serde_urlencoded::to_string([("filters", PORT_EVENTS)])
            .expect("a static filter encodes");
        let resp = self.get_ok(&format!("/events?{query}")).await?;
        Ok(EngineEvents {
            body: resp.into_body(),
        })
    }

    /// Connects to the engine's socket, resolved inside the node (on the blocking pool).
    async fn connect(&self) -> Result<tokio::net::UnixStream, EngineError> {
        let root = self.root.clone();
        let connect = move || {
            let stream = root.connect(SOCKET)?;
            stream.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(stream)
        };
        let res = match tokio::task::spawn_blocking(connect).await {
            Ok(res) => res,
            Err(e) => Err(std::io::Error::other(e)),
        };
        res.map_err(|source| EngineError::Connect {
            path: self.root.display_path(SOCKET),
            source,
        })
    }

    /// Sends `GET path`; answers once the head of the answer arrived.
    async fn get(&self, path: &str) -> Result<Response<Incoming>, EngineError> {
        let stream = self.connect().await?;
        unix_http::get(stream, "docker", path)
            .await
            .map_err(|source| EngineError::Request {
                path: path.into(),
                source,
            })
    }

    /// Sends `GET path`; an answer other than 200 is an error.
    async fn get_ok(&self, path: &str) -> Result<Response<Incoming>, EngineError> {
        let resp = self.get(path).await?;
        match resp.status() {
            StatusCode::OK => Ok(resp),
            status => Err(EngineError::Status {
                path: path.into(),
                status,
            }),
        }
    }
}

/// The body of a listing, bounded by [`MAX_LISTING`].
async fn read_listing(resp: Response<Incoming>, path: &str) -> Result<Bytes, EngineError> {
    unix_http::read_body(resp, MAX_LISTING)
        .await
        .map_err(|source| EngineError::Read {
            path: path.into(),
            source,
        })
}

impl EngineEvents {
    /// `Some(Ok(()))` per chunk of events, None when the stream ended.
    pub async fn next(&mut self) -> Option<Result<(), EngineError>> {
        match self.body.frame().await? {
            Ok(_) => Some(Ok(())),
            Err(e) => Some(Err(EngineError::Events(e))),
        }
    }
}
