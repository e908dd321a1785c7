//! The HTTP API (`docs/api.md`): routes, request parsing, the one error type, and the two
//! WebSockets (a node's terminal, a session's events). Handlers parse, call one [`Sessions`]
//! method and serialise; no session logic lives here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{self, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use terminals::{Frame, PumpOptions, TerminalQuery};
use tokio::sync::{broadcast, watch};

use crate::exec::{self, ExecRequest};
use crate::metrics::Metrics;
use crate::session::{CreateSession, Event, SessionError, Sessions};

/// Largest JSON request body.
const MAX_JSON_BODY: usize = 64 << 10;
/// Largest WebSocket message a client may send (a big paste arrives in one). Each viewer holds
/// at most one message until the shell takes it, so with the viewer limit
/// (`TerminalOptions::max_viewers`) this bounds the input a terminal holds.
const MAX_WS_MESSAGE: usize = 4 << 20;
/// Uploads buffered at once (each up to `--max-upload-mib`).
pub(crate) const MAX_UPLOADS: usize = 4;
/// How often the events socket pings.
const EVENTS_PING: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub(crate) struct AppState {
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    /// Bearer token of the admin routes; None: they are off.
    pub admin_token: Option<String>,
    /// Origins allowed to open WebSockets besides the server's own.
    pub allowed_origins: Vec<String>,
    pub max_upload_bytes: usize,
    /// Uploads being buffered; at most [`MAX_UPLOADS`] at once.
    pub uploads: Arc<tokio::sync::Semaphore>,
    /// Turns true when the server shuts down; long-lived sockets close.
    pub shutdown: watch::Receiver<bool>,
}

/// The routes, as a function so tests can drive them.
pub(crate) fn app(state: AppState) -> Router {
    let node = "/api/sessions/{sid}/nodes/{node}";
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/sessions", post(create_session))
        .route(
            "/api/sessions/{sid}",
            get(get_session).delete(delete_session),
        )
        .route("/api/sessions/{sid}/extend", post(extend))
        .route("/api/sessions/{sid}/nodes", post(add_node))
        .route("/api/sessions/{sid}/events", get(events))
        .route(node, get(get_node).delete(delete_node))
        .route(&format!("{node}/exec"), post(exec_node))
        .route(
            &format!("{node}/files"),
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .route(&format!("{node}/terminal"), get(terminal))
        .route("/api/admin/sessions", get(admin_sessions))
        .route("/api/admin/drain", post(admin_drain))
        .route("/api/{*rest}", axum::routing::any(no_route))
        // A known route with another method: a JSON 405 like every other API error.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            same_origin_writes,
        ))
        // Only the page is compressed: proxied answers stream as the node's server sent them.
        .merge(crate::assets::router().layer(tower_http::compression::CompressionLayer::new()))
        .merge(crate::proxy::routes())
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        // Requests at debug level; a user's app answering 5xx through the proxy is no server
        // failure, and API failures are logged where they are handled.
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state,
            crate::proxy::by_host,
        ))
}

/// Every error the API answers: a status and a message for the client.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        use sandbox::Error as R;
        use SessionError as E;
        let status = match &e {
            E::UnknownSession(_) | E::UnknownNode(_) => StatusCode::NOT_FOUND,
            E::Invalid(_) => StatusCode::BAD_REQUEST,
            E::NodeLimit(_)
            | E::NodeBusy(_)
            | E::NodeNotRunning { .. }
            | E::TerminalLimit { .. }
            | E::Ending => StatusCode::CONFLICT,
            E::ClientLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            E::AtCapacity(_) | E::Draining => StatusCode::SERVICE_UNAVAILABLE,
            E::Template { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            E::Runtime(r) => match r {
                R::InvalidName { .. } | R::Image(_) => StatusCode::BAD_REQUEST,
                R::UnknownNode { .. } | R::UnknownNetwork(_) => StatusCode::NOT_FOUND,
                R::NotRunning { .. } | R::NetworkBusy(_) | R::NetworkFull(_) => {
                    StatusCode::CONFLICT
                }
                R::SubnetPoolExhausted(_) | R::UidPoolExhausted(_) => {
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server is at capacity; try again later",
                    );
                }
                R::EngineNotReady { hostname, .. } => {
                    tracing::error!(error = %e, "node engine did not start");
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the engine of {hostname} did not start in time; try again"),
                    );
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            E::Store(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "request failed");
            // A failed template step says which step: that is what the user can report.
            if let E::Template { step, .. } = &e {
                return ApiError::new(status, format!("{step} failed; see the server log"));
            }
            return ApiError::new(status, "internal error; see the server log");
        }
        ApiError::new(status, e.to_string())
    }
}

/// A JSON body checked strictly (unknown fields are refused); an empty body is `{}`.
pub(crate) struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

fn body_error(e: BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "the request body is too large");
    }
    ApiError::new(status, format!("read the request body: {}", e.body_text()))
}

/// The path's session and node; a malformed id is simply an unknown session.
#[derive(Deserialize)]
struct NodePath {
    sid: String,
    node: String,
}

/// The client's address: the peer of the connection.
pub(crate) struct ClientAddr(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ))
    }
}

async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    let (sessions, nodes, viewers) = s.sessions.counts();
    Json(json!({
        "status": "ok",
        "sessions": sessions,
        "nodes": s.sessions.runtime().nodes().len(),
        "session_nodes": nodes,
        "viewers": viewers,
        "networks": s.sessions.runtime().networks().len(),
        "session_secs": s.sessions.config().lifetime.as_secs(),
        "max_nodes": s.sessions.config().max_nodes,
    }))
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(s.sessions.counts()),
    )
        .into_response()
}

async fn create_session(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(req): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let view = s.sessions.create(req, client).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn get_session(
    State(s): State<AppState>,
    Path(sid): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.view(&sid)?).into_response())
}

async fn delete_session(
    State(s): State<AppState>,
    Path(sid): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.sessions.delete(&sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ExtendRequest {
    secs: Option<u64>,
}

async fn extend(
    State(s): State<AppState>,
    Path(sid): Path<String>,
    JsonBody(req): JsonBody<ExtendRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.extend(&sid, req.secs)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AddNodeRequest {
    image: Option<String>,
}

async fn add_node(
    State(s): State<AppState>,
    Path(sid): Path<String>,
    JsonBody(req): JsonBody<AddNodeRequest>,
) -> Result<Response, ApiError> {
    let node = s.sessions.add_node(&sid, req.image, None).await?;
    Ok((StatusCode::CREATED, Json(node)).into_response())
}

async fn get_node(
    State(s): State<AppState>,
    Path(p): Path<NodePath>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.node(&p.sid, &p.node)?).into_response())
}

async fn delete_node(
    State(s): State<AppState>,
    Path(p): Path<NodePath>,
) -> Result<StatusCode, ApiError> {
    s.sessions.remove_node(&p.sid, &p.node).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn exec_node(
    State(s): State<AppState>,
    Path(p): Path<NodePath>,
    JsonBody(req): JsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    s.sessions.running_node(&p.sid, &p.node)?;
    let out = exec::run(s.sessions.runtime(), &p.sid, &p.node, req).await?;
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    path: String,
}

/// The absolute path inside the node: relative paths are taken from the shell's home.
fn node_path(path: &str) -> Result<String, ApiError> {
    if path.is_empty() || path.len() > 4096 || path.contains('\0') || path.ends_with('/') {
        return Err(ApiError::bad_request(
            "path must name a file: 1 to 4096 bytes, no NUL, not ending in '/'",
        ));
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/root/{path}")
    })
}

/// Writes the body into the node. The write runs inside the node (its mount namespace and
/// root), so the path and any symlink in it resolve in the node's file system, never the host's.
async fn upload(
    State(s): State<AppState>,
    Path(p): Path<NodePath>,
    query: Result<axum::extract::Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let axum::extract::Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "give the file's path as ?path=...: {}",
            e.body_text()
        ))
    })?;
    let path = node_path(&q.path)?;
    s.sessions.running_node(&p.sid, &p.node)?;
    // Read only with a permit: at most MAX_UPLOADS bodies are in memory at once.
    let _permit = s
        .uploads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let body = axum::body::to_bytes(body, s.max_upload_bytes)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|c| c.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the file is larger than the upload limit of {} MiB",
                        s.max_upload_bytes >> 20
                    ),
                )
            } else {
                ApiError::bad_request(format!("read the upload: {e}"))
            }
        })?;
    let req = ExecRequest {
        cmd: vec![
            "sh".into(),
            "-c".into(),
            r#"mkdir -p -- "$(dirname -- "$1")" && cat > "$1""#.into(),
            "sh".into(),
            path.clone(),
        ],
        stdin: None,
        timeout_secs: Some(120),
    };
    let out = exec::run_bytes(s.sessions.runtime(), &p.sid, &p.node, &req, Some(&body)).await?;
    if out.timed_out {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("writing {path} in {} did not finish in time", p.node),
        ));
    }
    if out.exit_code != Some(0) {
        return Err(ApiError::bad_request(format!(
            "cannot write {path} in {}: {}",
            p.node,
            out.stderr.trim()
        )));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "path": path, "size": body.len() })),
    )
        .into_response())
}

/// Whether a WebSocket may be opened from this page: no Origin (not a browser), the server's
/// own origin (same host and port), or one of the configured origins.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

fn check_origin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if origin_allowed(headers, &s.allowed_origins) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from another origin are refused; add it with --allowed-origin",
        ))
    }
}

/// Browsers send some cross-site writes (form posts, `text/plain` bodies) without asking
/// first, so another site could make its visitors create or delete sessions. The API takes
/// writes only from the page's own origin (or `--allowed-origin`); clients that are not
/// browsers send no `Origin` and are not affected.
async fn same_origin_writes(
    State(s): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if !read {
        check_origin(&s, req.headers())?;
    }
    Ok(next.run(req).await)
}

fn need_upgrade(
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<WebSocketUpgrade, ApiError> {
    ws.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("this route is a WebSocket: {}", e.body_text()),
        )
    })
}

/// `GET .../terminal`: the node's shared shell (see `docs/protocol.md`).
async fn terminal(
    State(s): State<AppState>,
    Path(p): Path<NodePath>,
    headers: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let q: TerminalQuery = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    check_origin(&s, &headers)?;
    let ws = need_upgrade(ws)?;
    let name = q
        .name
        .as_deref()
        .unwrap_or(crate::session::DEFAULT_TERMINAL);
    if !valid_terminal_name(name) {
        return Err(ApiError::bad_request(
            "name must be 1 to 16 of a-z, 0-9 and '-'",
        ));
    }
    let term = s.sessions.terminal(&p.sid, &p.node, name).await?;
    let viewer = term
        .attach(q.since_in(term.id()), q.readonly)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    let span = tracing::info_span!("terminal", session = %p.sid, node = %p.node);
    Ok(ws
        .max_message_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| {
            use tracing::Instrument;
            async move {
                let (sink, stream) = socket.split();
                let sink = sink.with(|f: Frame| async move { Ok::<_, axum::Error>(to_message(f)) });
                let stream = stream.map(|m| m.map(from_message));
                match terminals::pump(viewer, Box::pin(sink), stream, &PumpOptions::default()).await
                {
                    Ok(end) => tracing::debug!(?end, "viewer left"),
                    Err(e) => tracing::info!(error = %e, "viewer dropped"),
                }
            }
            .instrument(span)
        }))
}

fn valid_terminal_name(name: &str) -> bool {
    (1..=16).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

fn to_message(f: Frame) -> Message {
    match f {
        Frame::Binary(b) => Message::Binary(b),
        Frame::Text(t) => Message::Text(t.into()),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(c) => Message::Close(c.map(|(code, reason)| ws::CloseFrame {
            code,
            reason: reason.into(),
        })),
    }
}

fn from_message(m: Message) -> Frame {
    match m {
        Message::Binary(b) => Frame::Binary(b),
        Message::Text(t) => Frame::Text(t.to_string()),
        Message::Ping(b) => Frame::Ping(b),
        Message::Pong(b) => Frame::Pong(b),
        Message::Close(c) => Frame::Close(c.map(|c| (c.code, c.reason.to_string()))),
    }
}

/// `GET /api/sessions/{sid}/events`: a snapshot, then the session's events as JSON text.
async fn events(
    State(s): State<AppState>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_origin(&s, &headers)?;
    let ws = need_upgrade(ws)?;
    let (snapshot, rx) = s.sessions.subscribe(&sid)?;
    let span = tracing::info_span!("events", session = %sid);
    Ok(ws.on_upgrade(move |socket| {
        use tracing::Instrument;
        serve_events(s, sid, snapshot, rx, socket).instrument(span)
    }))
}

async fn serve_events(
    s: AppState,
    sid: String,
    snapshot: crate::session::SessionView,
    mut rx: broadcast::Receiver<Event>,
    mut socket: WebSocket,
) {
    let mut shutdown = s.shutdown.clone();
    let mut ping = tokio::time::interval(EVENTS_PING);
    ping.tick().await;
    let mut next = Some(Event::Snapshot { session: snapshot });
    loop {
        if let Some(ev) = next.take() {
            let ended = matches!(ev, Event::Ended { .. });
            let text = serde_json::to_string(&ev).unwrap_or_default();
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
            if ended {
                let _ = socket.send(close(1000, "the session ended")).await;
                return;
            }
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => next = Some(ev),
                // Too slow to follow: start again from the current state.
                Err(broadcast::error::RecvError::Lagged(_)) => match s.sessions.subscribe(&sid) {
                    Ok((session, fresh)) => {
                        rx = fresh;
                        next = Some(Event::Snapshot { session });
                    }
                    Err(_) => next = Some(Event::Ended { reason: crate::session::EndReason::Deleted }),
                },
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = socket.send(close(1000, "the session ended")).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
            () = stopped(&mut shutdown) => {
                let _ = socket.send(close(1001, "the server is restarting")).await;
                return;
            }
        }
    }
}

/// Resolves once the shutdown flag is set (never, if its sender is gone without setting it).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        let stop = *rx.borrow_and_update();
        if stop {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Admin routes need `Authorization: Bearer <--admin-token>`; without a token they are off.
fn check_admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.admin_token else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "admin routes are off; start the server with --admin-token",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    // Constant-time comparison: the token is the only secret here.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin routes need Authorization: Bearer <admin token>",
        ))
    }
}

async fn admin_sessions(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    Ok(Json(s.sessions.all()).into_response())
}

/// Stops taking new sessions and nodes (before maintenance); running sessions go on.
async fn admin_drain(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    s.sessions.drain();
    Ok(Json(json!({ "draining": true })).into_response())
}

async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such route; see docs/api.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; see docs/api.md",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn websocket_origins() {
        let none: Vec<String> = vec![];
        assert!(origin_allowed(&headers(&[("host", "a:8080")]), &none));
        assert!(origin_allowed(
            &headers(&[("host", "a:8080"), ("origin", "http://a:8080")]),
            &none
        ));
        assert!(!origin_allowed(
            &headers(&[("host", "a:8080"), ("origin", "http://evil.example")]),
            &none
        ));
        assert!(origin_allowed(
            &headers(&[("host", "a:8080"), ("origin", "https://b")]),
            &["https://b".to_string()]
        ));
    }

    #[test]
    fn terminal_names() {
        assert!(valid_terminal_name("main"));
        assert!(valid_terminal_name("build-2"));
        assert!(!valid_terminal_name(""));
        assert!(!valid_terminal_name("Main"));
        assert!(!valid_terminal_name("a/b"));
        assert!(!valid_terminal_name("seventeen-chars-x"));
    }

    #[test]
    fn upload_paths() {
        assert_eq!(node_path("x.txt").unwrap(), "/root/x.txt");
        assert_eq!(node_path("/etc/motd").unwrap(), "/etc/motd");
        assert!(node_path("").is_err());
        assert!(node_path("dir/").is_err());
        assert!(node_path("a\0b").is_err());
    }
}
