//! The one HTTP error boundary: every failed request answers `{"error": "..."}` with a status.
//! Domain errors say their own status ([`SessionError::status`]); internal failures are logged
//! here, once, with their detail, and the client gets a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::node_runtime::RuntimeError;
use crate::sessions::SessionError;
use crate::wire::ErrorBody;

/// Every error the API answers: a status and a message for the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        let status = e.status();
        match &e {
            SessionError::Runtime(RuntimeError::EngineNotReady { detail, .. }) => {
                tracing::error!(error = %e, %detail, "node engine did not start");
            }
            // The operator's to fix (a larger or another subnet pool, fewer nodes).
            SessionError::Runtime(RuntimeError::Exhausted(detail)) => {
                tracing::warn!(%detail, "the host has no room for the request");
            }
            _ if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "request failed");
            }
            _ => {}
        }
        ApiError::new(status, e.public_message())
    }
}

/// A terminal with all the viewers it takes.
impl From<terminals::AttachError> for ApiError {
    fn from(e: terminals::AttachError) -> Self {
        ApiError::new(StatusCode::CONFLICT, e.to_string())
    }
}
