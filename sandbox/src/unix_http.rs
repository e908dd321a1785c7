//! HTTP/1.1 over a unix socket (hyper's client): how the host talks to a node's engine
//! (`engine.rs`) and `sandpit doctor` to a running registry mirror. One request per
//! connection; the connection is driven by a task of its own until the answer's body is read
//! or dropped.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Sends `GET path` with `Host: host` on `stream`; answers once the head of the answer arrived.
pub(crate) async fn get(
    stream: UnixStream,
    host: &str,
    path: &str,
) -> Result<Response<Incoming>, hyper::Error> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .expect("a GET of a fixed path is a valid request");
    sender.send_request(req).await
}

/// The whole body of an answer, refused beyond `limit` bytes.
pub(crate) async fn read_body(
    resp: Response<Incoming>,
    limit: usize,
) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
    Ok(Limited::new(resp.into_body(), limit)
        .collect()
        .await?
        .to_bytes())
}
