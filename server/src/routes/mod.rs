//! The HTTP surface (`docs/api.md`): [`app`] builds every route, one file per resource.
//! Handlers parse, call one [`crate::Sessions`] method and serialise; failures are
//! [`crate::error::ApiError`]s. Requests whose host names a node's port never reach the routes:
//! the port proxy (`proxy/`) sits in front of them.

mod admin;
mod events;
mod extract;
mod images;
mod nodes;
mod proxy;
mod pwd;
mod sessions;
mod state;
mod terminals;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{any, get, post, put};
use axum::Router;

use crate::error::ApiError;
pub use pwd::Viewports;
pub use state::{AppState, MAX_UPLOADS};

/// Largest JSON request body.
const MAX_JSON_BODY: usize = 64 << 10;

/// The routes, as a function so tests can drive them.
pub fn app(state: AppState) -> Router {
    let node = "/api/sessions/{sid}/nodes/{node}";
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/metrics", get(admin::metrics))
        .route("/api/images", get(images::list))
        .route("/api/sessions", post(sessions::create))
        .route(
            "/api/sessions/{sid}",
            get(sessions::get).delete(sessions::delete),
        )
        .route("/api/sessions/{sid}/extend", post(sessions::extend))
        .route("/api/sessions/{sid}/nodes", post(sessions::add_node))
        .route("/api/sessions/{sid}/events", get(events::events))
        .route(node, get(nodes::get).delete(nodes::delete))
        .route(&format!("{node}/exec"), post(nodes::exec))
        .route(
            &format!("{node}/files"),
            put(nodes::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(&format!("{node}/terminal"), get(terminals::terminal))
        .route("/api/admin/sessions", get(admin::sessions))
        .route("/api/admin/drain", post(admin::drain))
        .route("/api/{*rest}", any(no_route))
        // A known route with another method: a JSON 405 like every other API error.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::same_origin_writes,
        ))
        .merge(pwd::routes(state.clone()))
        // Only the page is compressed: proxied answers stream as the node's server sent them.
        .merge(crate::assets::router().layer(tower_http::compression::CompressionLayer::new()))
        .merge(proxy::routes())
        // Paths of no route (`/sessions/{sid}/nope` of the PWD API, say) get a JSON error too.
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        // Requests at debug level; a user's app answering 5xx through the proxy is no server
        // failure, and API failures are logged where they are handled (`crate::error`).
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()))
        .layer(pwd_cors(&state.pwd_origins))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, proxy::by_host))
}

/// CORS with credentials for the pages of `--pwd-origin` (none: no grant to anyone). Inside
/// the port proxy's layer: proxied answers keep the node's own headers.
fn pwd_cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    tower_http::cors::CorsLayer::new()
        .allow_origin(origins)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::HEAD, Method::DELETE])
        .allow_headers([
            HeaderName::from_static("x-requested-with"),
            header::CONTENT_TYPE,
        ])
}

async fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; see docs/api.md (and docs/pwd.md)",
    )
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this route does not take that method; see docs/api.md",
    )
}

#[cfg(test)]
mod tests;
