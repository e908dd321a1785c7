//! What operators use: `/healthz`, `/metrics`, and the admin routes behind a bearer token that
//! has no default (`--admin-token`; without it they answer 404).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::state::AppState;
use crate::error::ApiError;
use crate::wire::{Drained, Health};

pub async fn healthz(State(s): State<AppState>) -> Json<Health> {
    Json(s.sessions.health())
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s.sessions.health()),
    )
        .into_response()
}

/// Admin routes need `Authorization: Bearer <--admin-token>`.
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

/// Every live session.
pub async fn sessions(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    Ok(Json(s.sessions.all()).into_response())
}

/// Stops taking new sessions and nodes (before maintenance); running sessions go on.
pub async fn drain(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_admin(&s, &headers)?;
    s.sessions.drain();
    Ok(Json(Drained { draining: true }).into_response())
}
