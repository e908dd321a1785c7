//! The routes driven through [`app`] with `oneshot`, over the fake runtime: statuses, JSON
//! errors and the checks in front of the handlers. Real nodes and real sockets are in
//! `tests/tests/api.rs`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::fake_runtime::FakeRuntime;
use crate::metrics::Metrics;
use crate::sessions::{SessionConfig, Sessions};
use crate::store::Store;

struct Api {
    app: Router,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::watch::Sender<bool>,
}

fn api(admin_token: Option<&str>) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let cfg = SessionConfig {
        lifetime: std::time::Duration::from_secs(3600),
        max_lifetime: std::time::Duration::from_secs(7200),
        max_nodes: 2,
        sessions_per_client: 10,
        capacity: 10,
        disk_reserve_bytes: 0,
        base_domain: "localhost".into(),
        public_port: 8080,
        terminal: Default::default(),
        stack_sources: Vec::new(),
    };
    let store = Store::open(&dir.path().join("db")).unwrap();
    let sessions = Sessions::new(
        Arc::new(FakeRuntime::default()),
        store,
        cfg,
        metrics.clone(),
    );
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let state = AppState {
        sessions,
        metrics,
        admin_token: admin_token.map(Into::into),
        pwd_origins: Vec::new(),
        allowed_origins: vec![],
        max_upload_bytes: 1 << 20,
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        shutdown,
        pwd_viewports: Arc::default(),
    };
    Api {
        app: app(state),
        _dir: dir,
        _stop: stop,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:8080");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}"))
        };
        (status, json)
    }
}

/// An error answer: the status and a message that contains `words`.
fn error(got: (StatusCode, Value), status: StatusCode, words: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let message = got.1["error"].as_str().unwrap_or_default();
    assert!(message.contains(words), "{message:?} lacks {words:?}");
}

#[tokio::test]
async fn sessions_and_nodes_through_the_routes() {
    let api = api(None);
    let (status, session) = api.call("POST", "/api/sessions", &[], "").await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let sid = session["id"].as_str().unwrap().to_string();
    assert_eq!(session["max_nodes"], 2);
    let (status, node) = api
        .call("POST", &format!("/api/sessions/{sid}/nodes"), &[], "{}")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{node}");
    assert_eq!(node["name"], "node1");
    assert_eq!(node["status"], "running");
    let exec = format!("/api/sessions/{sid}/nodes/node1/exec");
    let (status, out) = api
        .call("POST", &exec, &[], r#"{"cmd":["docker","ps"]}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["exit_code"], 0);
    error(
        api.call("POST", &exec, &[], r#"{"cmd":[]}"#).await,
        StatusCode::BAD_REQUEST,
        "cmd must name a program",
    );
    api.call("POST", &format!("/api/sessions/{sid}/nodes"), &[], "")
        .await;
    error(
        api.call("POST", &format!("/api/sessions/{sid}/nodes"), &[], "")
            .await,
        StatusCode::CONFLICT,
        "already has 2 nodes",
    );
    let (status, _) = api
        .call("DELETE", &format!("/api/sessions/{sid}"), &[], "")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    error(
        api.call("GET", &format!("/api/sessions/{sid}"), &[], "")
            .await,
        StatusCode::NOT_FOUND,
        "no session",
    );
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let api = api(None);
    error(
        api.call("POST", "/api/sessions", &[], r#"{"template":"9x"}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid JSON body",
    );
    error(
        api.call("POST", "/api/sessions", &[], r#"{"nodes":3}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "unknown field",
    );
    error(
        api.call("POST", "/api/sessions", &[], r#"{"duration_secs":1}"#)
            .await,
        StatusCode::BAD_REQUEST,
        "duration_secs must be between",
    );
    error(
        api.call("GET", "/api/nothing", &[], "").await,
        StatusCode::NOT_FOUND,
        "no such route",
    );
    error(
        api.call("PUT", "/api/sessions", &[], "").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "does not take that method",
    );
    error(
        api.call(
            "POST",
            "/api/sessions",
            &[("origin", "http://evil.example")],
            "",
        )
        .await,
        StatusCode::FORBIDDEN,
        "another origin",
    );
    let uri = "/api/sessions/0123456789abcdef0123456789abcdef/nodes/node1/files?path=a";
    error(
        api.call("PUT", uri, &[], "x").await,
        StatusCode::NOT_FOUND,
        "no session",
    );
    let uri = "/api/sessions/0123456789abcdef0123456789abcdef/nodes/node1/files";
    error(
        api.call("PUT", uri, &[], "x").await,
        StatusCode::BAD_REQUEST,
        "?path=",
    );
    // A name that is not UTF-8 is refused, not turned into U+FFFD.
    let uri = "/api/sessions/0123456789abcdef0123456789abcdef/nodes/node1/files?path=a%ff";
    error(
        api.call("PUT", uri, &[], "x").await,
        StatusCode::BAD_REQUEST,
        "not UTF-8",
    );
    let uri = "/api/sessions/0123456789abcdef0123456789abcdef/nodes/node1/terminal";
    error(
        api.call("GET", uri, &[], "").await,
        StatusCode::BAD_REQUEST,
        "WebSocket",
    );
    // Path segments that are not UTF-8 once decoded.
    for (method, uri) in [
        ("GET", "/api/sessions/%ff"),
        ("POST", "/api/sessions/%c0%ae/nodes"),
        ("GET", "/api/sessions/%ff/events"),
        (
            "POST",
            "/api/sessions/0123456789abcdef0123456789abcdef/nodes/%ff/exec",
        ),
    ] {
        error(
            api.call(method, uri, &[], "").await,
            StatusCode::BAD_REQUEST,
            "malformed path",
        );
    }
}

#[tokio::test]
async fn admin_routes_need_their_token() {
    let off = api(None);
    error(
        off.call("GET", "/api/admin/sessions", &[], "").await,
        StatusCode::NOT_FOUND,
        "--admin-token",
    );
    let on = api(Some("s3cret"));
    error(
        on.call(
            "POST",
            "/api/admin/drain",
            &[("authorization", "Bearer nope")],
            "",
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "Bearer",
    );
    let (status, body) = on
        .call(
            "POST",
            "/api/admin/drain",
            &[("authorization", "Bearer s3cret")],
            "",
        )
        .await;
    assert_eq!(
        (status, body["draining"].clone()),
        (StatusCode::OK, Value::Bool(true))
    );
    error(
        on.call("POST", "/api/sessions", &[], "").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting down",
    );
    let (status, health) = on.call("GET", "/healthz", &[], "").await;
    assert_eq!(
        (status, health["status"].clone()),
        (StatusCode::OK, Value::from("ok"))
    );
}
