//! Published ports: which TCP ports each running node's containers publish, kept up to date
//! in the sessions (`Sessions::set_ports`, which tells the events stream when they change).
//!
//! Each node runs its own dockerd; its API socket is `/run/docker.sock` in the node's mount
//! namespace. The host reaches it through the node's PID 1 (`/proc/<init>/root`), resolved with
//! `openat2(RESOLVE_IN_ROOT)` so that a symlink the node's root plants on the way (say `/run`
//! -> `/var/run/...`) resolves inside the node, never on the host; the socket is then connected
//! through `/proc/self/fd/<fd>`. Lookups in a node's file system may block for as long as the
//! node likes (a FUSE mount), so they run on the blocking pool, at most one per node at a time.
//!
//! Per node, one task follows dockerd's event stream (container start, die, destroy; service
//! create, update, remove) and lists the ports after each burst of events, a second time a
//! moment later (some state settles after the event), and every [`RESYNC`] anyway. The list is
//! `GET /containers/json` (`Ports[].PublicPort` of TCP ports not bound to loopback, which
//! includes swarm services published in host mode) and, on swarm managers, `GET /services`
//! (ports published through the ingress routing mesh). An idle node costs one open connection
//! and one listing every [`RESYNC`]; a node that floods events is listed at most about every
//! [`SETTLE`], since its stream is not read while the task waits. A supervisor starts and stops
//! the per-node tasks as nodes come and go.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sandbox::Runtime;
use serde::Deserialize;

use crate::node_runtime::PortsReport;

/// A listing without events, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(30);
/// Wait after an event before listing, so a burst of events costs one listing.
const SETTLE: Duration = Duration::from_millis(250);
/// The second listing after events.
const FOLLOW_UP: Duration = Duration::from_secs(2);
/// Wait before trying a node's engine again after it did not answer.
const RETRY: Duration = Duration::from_secs(2);
/// Bound on connecting and on one listing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest listing read (a node with thousands of containers).
const MAX_LISTING: usize = 8 << 20;

/// Keeps one node's ports up to date until the future is dropped (see the module docs).
pub(crate) async fn follow(
    runtime: Arc<Runtime>,
    network: String,
    name: String,
    report: PortsReport,
) {
    loop {
        let init_pid = runtime.node(&network, &name).and_then(|n| {
            (n.status == sandbox::NodeStatus::Running)
                .then_some(n.init_pid)
                .flatten()
        });
        if let Some(pid) = init_pid {
            let err = follow_engine(pid, &report).await;
            tracing::debug!(session = %network, node = %name, error = %err, "node engine not followed");
        }
        // No engine, no running containers.
        report(Vec::new());
        tokio::time::sleep(RETRY).await;
    }
}

/// Follows the engine's events and reports the ports; returns why it stopped.
async fn follow_engine(init_pid: i32, report: &PortsReport) -> String {
    let mut events = match open_events(init_pid).await {
        Ok(body) => body,
        Err(e) => return e,
    };
    let mut wait = RESYNC;
    loop {
        match list_ports(init_pid).await {
            Ok(ports) => report(ports),
            Err(e) => return e,
        }
        let event = tokio::select! {
            frame = events.frame() => match frame {
                Some(Ok(_)) => true,
                Some(Err(e)) => return format!("read events: {e}"),
                None => return "the event stream ended".into(),
            },
            () = tokio::time::sleep(wait) => false,
        };
        if event {
            tokio::time::sleep(SETTLE).await;
            wait = FOLLOW_UP;
        } else {
            wait = RESYNC;
        }
    }
}

/// Connects to the node's engine socket, resolved inside the node (see the module docs).
async fn connect(init_pid: i32) -> Result<tokio::net::UnixStream, String> {
    let stream = tokio::task::spawn_blocking(move || {
        use rustix::fs::{open, openat2, Mode, OFlags, ResolveFlags};
        let root = open(
            format!("/proc/{init_pid}/root"),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let sock = openat2(
            &root,
            "run/docker.sock",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        let stream =
            std::os::unix::net::UnixStream::connect(format!("/proc/self/fd/{}", sock.as_raw_fd()))?;
        stream.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(stream)
    })
    .await
    .map_err(|e| format!("connect to the engine: {e}"))?
    .map_err(|e| format!("connect to the engine: {e}"))?;
    tokio::net::UnixStream::from_std(stream).map_err(|e| format!("connect to the engine: {e}"))
}

/// Sends `GET path` to the node's engine; answers the response once its head arrived.
async fn get(init_pid: i32, path: &str) -> Result<Response<Incoming>, String> {
    let stream = connect(init_pid).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("engine handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("build request: {e}"))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))
}

/// Opens the engine's event stream, limited to what changes published ports.
async fn open_events(init_pid: i32) -> Result<Incoming, String> {
    let filters = r#"{"type":["container","service"],"event":["start","die","destroy","create","update","remove"]}"#;
    let query = serde_urlencoded::to_string([("filters", filters)]).unwrap_or_default();
    let path = format!("/events?{query}");
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, get(init_pid, &path))
        .await
        .map_err(|_| "the event stream did not open in time".to_string())??;
    if resp.status() != StatusCode::OK {
        return Err(format!("GET /events: {}", resp.status()));
    }
    Ok(resp.into_body())
}

/// The node's published TCP ports, sorted and deduplicated.
async fn list_ports(init_pid: i32) -> Result<Vec<u16>, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let containers = get_json(init_pid, "/containers/json").await?;
        let mut ports = container_ports(&containers.ok_or("GET /containers/json failed")?)
            .map_err(|e| format!("parse /containers/json: {e}"))?;
        // Only managers answer this; elsewhere it is a 503 and there is nothing to add.
        if let Some(services) = get_json(init_pid, "/services").await? {
            ports.extend(service_ports(&services).map_err(|e| format!("parse /services: {e}"))?);
        }
        ports.sort_unstable();
        ports.dedup();
        Ok(ports)
    })
    .await
    .map_err(|_| "listing the ports took too long".to_string())?
}

/// The body of a 200 answer to `GET path`; None for another status.
async fn get_json(init_pid: i32, path: &str) -> Result<Option<Bytes>, String> {
    let resp = get(init_pid, path).await?;
    if resp.status() != StatusCode::OK {
        return Ok(None);
    }
    let body = Limited::new(resp.into_body(), MAX_LISTING)
        .collect()
        .await
        .map_err(|e| format!("read {path}: {e}"))?;
    Ok(Some(body.to_bytes()))
}

#[derive(Deserialize)]
struct Container {
    #[serde(rename = "Ports")]
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Deserialize)]
struct ContainerPort {
    #[serde(rename = "IP")]
    ip: Option<String>,
    #[serde(rename = "PublicPort")]
    public_port: Option<u16>,
    #[serde(rename = "Type")]
    kind: Option<String>,
}

/// Published TCP ports of `GET /containers/json`, skipping those bound to loopback (the proxy
/// reaches nodes at their bridge address).
fn container_ports(json: &[u8]) -> Result<Vec<u16>, serde_json::Error> {
    let containers: Vec<Container> = serde_json::from_slice(json)?;
    Ok(containers
        .into_iter()
        .flat_map(|c| c.ports.unwrap_or_default())
        .filter(|p| p.kind.as_deref().unwrap_or("tcp") == "tcp")
        .filter(|p| {
            !p.ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback())
        })
        .filter_map(|p| p.public_port)
        .filter(|p| *p != 0)
        .collect())
}

#[derive(Deserialize)]
struct Service {
    #[serde(rename = "Endpoint")]
    endpoint: Option<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    #[serde(rename = "Ports")]
    ports: Option<Vec<ServicePort>>,
}

#[derive(Deserialize)]
struct ServicePort {
    #[serde(rename = "Protocol")]
    protocol: Option<String>,
    #[serde(rename = "PublishedPort")]
    published_port: Option<u16>,
    #[serde(rename = "PublishMode")]
    publish_mode: Option<String>,
}

/// TCP ports that `GET /services` publishes through the ingress routing mesh (host-mode ports
/// show up in the containers' listing, on the nodes that run a task).
fn service_ports(json: &[u8]) -> Result<Vec<u16>, serde_json::Error> {
    let services: Vec<Service> = serde_json::from_slice(json)?;
    Ok(services
        .into_iter()
        .filter_map(|s| s.endpoint?.ports)
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("tcp") == "tcp")
        .filter(|p| p.publish_mode.as_deref().unwrap_or("ingress") == "ingress")
        .filter_map(|p| p.published_port)
        .filter(|p| *p != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_listing_gives_published_tcp_ports() {
        let json = br#"[
          {"Id": "a", "Ports": [
            {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            {"PrivatePort": 443, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
            {"IP": "127.0.0.1", "PrivatePort": 22, "PublicPort": 2222, "Type": "tcp"}
          ]},
          {"Id": "b", "Ports": null},
          {"Id": "c", "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 81, "Type": "tcp"}]}
        ]"#;
        assert_eq!(container_ports(json).unwrap(), vec![8080, 8080, 81]);
        assert!(container_ports(b"{}").is_err());
    }

    #[test]
    fn service_listing_gives_ingress_ports() {
        let json = br#"[
          {"ID": "x", "Endpoint": {"Ports": [
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8000, "PublishMode": "ingress"},
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8001, "PublishMode": "host"},
            {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 53, "PublishMode": "ingress"}
          ]}},
          {"ID": "y", "Endpoint": {}},
          {"ID": "z"}
        ]"#;
        assert_eq!(service_ports(json).unwrap(), vec![8000]);
    }
}
