//! `/api/sessions/{sid}/nodes/{node}`: a node's view, removal, commands and file uploads.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::extract::{JsonBody, PathParams, StrictQuery};
use super::state::AppState;
use crate::error::ApiError;
use crate::wire::ExecRequest;
use tokio::sync::OwnedSemaphorePermit;

/// The path's session and node; a malformed id is simply an unknown session.
#[derive(Deserialize)]
pub struct NodePath {
    pub sid: String,
    pub node: String,
}

pub async fn get(
    State(s): State<AppState>,
    PathParams(p): PathParams<NodePath>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.node(&p.sid, &p.node)?).into_response())
}

pub async fn delete(
    State(s): State<AppState>,
    PathParams(p): PathParams<NodePath>,
) -> Result<StatusCode, ApiError> {
    s.sessions.remove_node(&p.sid, &p.node).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn exec(
    State(s): State<AppState>,
    PathParams(p): PathParams<NodePath>,
    JsonBody(req): JsonBody<ExecRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.exec(&p.sid, &p.node, req).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    path: String,
}

/// `PUT .../files?path=`: writes the body into the node (see `Sessions::write_file`).
pub async fn upload(
    State(s): State<AppState>,
    PathParams(p): PathParams<NodePath>,
    StrictQuery(q): StrictQuery<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    // Held until the file is written.
    let mut _permit = None;
    let read = async {
        let (permit, bytes) = read_upload(&s, body).await?;
        _permit = Some(permit);
        Ok::<_, ApiError>(bytes)
    };
    let done = s
        .sessions
        .write_file(&p.sid, &p.node, &q.path, read)
        .await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

/// Reads an upload's body (up to `--max-upload-mib`) with a permit: at most `MAX_UPLOADS`
/// bodies are in memory at once, until their permits are dropped.
pub(super) async fn read_upload(
    s: &AppState,
    body: Body,
) -> Result<(OwnedSemaphorePermit, Bytes), ApiError> {
    let permit = s
        .uploads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    let limit = s.max_upload_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|c| c.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the file is larger than the upload limit of {} MiB",
                    limit >> 20
                ),
            )
        } else {
            ApiError::bad_request(format!("read the upload: {e}"))
        }
    })?;
    Ok((permit, bytes))
}
