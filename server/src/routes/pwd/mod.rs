//! The play-with-docker API (`docs/pwd.md`), so pages made for PWD (its SDK's embedded
//! terminals, code blocks that run on click, port links) work with only their base URL
//! changed. A translation over [`crate::sessions::Sessions`] and `provision`, nothing more:
//! PWD's instances are sandpit's nodes, its terminals are the nodes' shared shells, its
//! `/setup` is a provisioning plan and its `?stack=` a stack.
//!
//! PWD's pages live on other sites: the operator lists their origins (`--pwd-origin`), which
//! get CORS with credentials (`crate::routes::app`) and may write and open the socket here;
//! any other origin is refused, as on sandpit's own API.
//!
//! `http.rs` has the routes, `ws.rs` the socket, `wire.rs` PWD's JSON, `text.rs` terminal
//! bytes as text, `viewport.rs` PWD's resize rule.

mod http;
mod text;
mod viewport;
mod wire;
mod ws;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;

use super::extract::origin_allowed_among;
use super::state::AppState;
use crate::error::ApiError;
pub use viewport::Viewports;

/// The PWD routes, merged into the app (`POST /` beside the page's `GET /`).
pub fn routes(state: AppState) -> Router<AppState> {
    let instance = "/sessions/{sid}/instances/{name}";
    Router::new()
        .route("/", post(http::new_session))
        .route("/sessions/{sid}", get(http::session).delete(http::close))
        .route("/sessions/{sid}/close", post(http::close))
        .route("/sessions/{sid}/setup", post(http::setup))
        .route("/sessions/{sid}/instances", post(http::new_instance))
        .route(instance, delete(http::delete_instance))
        .route(&format!("{instance}/exec"), post(http::exec))
        .route(
            &format!("{instance}/uploads"),
            post(http::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/sessions/{sid}/ws", get(ws::socket))
        .route("/sessions/{sid}/ws/", get(ws::socket))
        .route("/users/me", get(http::user))
        .route("/instances/images", get(http::images))
        .route("/my/playground", get(http::playground))
        .method_not_allowed_fallback(super::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state, listed_writes))
}

/// Whether a request may come from this page: no Origin, the server's own, `--allowed-origin`
/// or `--pwd-origin`.
fn check_pwd_origin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if origin_allowed_among(headers, &[&s.allowed_origins, &s.pwd_origins]) {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "requests from another origin are refused; its operator can list it with --pwd-origin",
        ))
    }
}

/// Writes come only from listed origins (as on sandpit's own API, a form on any site could
/// post otherwise); reads are guarded by CORS.
async fn listed_writes(
    State(s): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        check_pwd_origin(&s, req.headers())?;
    }
    Ok(next.run(req).await)
}

/// PWD's name of a node's proxy host: `{node}-{sid}`, one DNS label, so that pages can open
/// `{proxy_host}-{port}.direct.{host}`.
fn proxy_host(node: &str, sid: &str) -> String {
    format!("{node}-{sid}")
}
