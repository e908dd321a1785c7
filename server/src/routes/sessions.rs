//! `/api/sessions`: create, read, extend and delete sessions; add a node.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::{ClientAddr, JsonBody, PathParams};
use super::state::AppState;
use crate::error::ApiError;
use crate::provision;
use crate::wire::{AddNodeRequest, CreateSession, ExtendRequest};

pub async fn create(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(req): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let view = provision::create_session(&s.sessions, req, client).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub async fn get(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.view(&sid)?).into_response())
}

pub async fn delete(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    s.sessions.delete(&sid).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn extend(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
    JsonBody(req): JsonBody<ExtendRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(s.sessions.extend(&sid, req.secs)?).into_response())
}

pub async fn add_node(
    State(s): State<AppState>,
    PathParams(sid): PathParams<String>,
    JsonBody(req): JsonBody<AddNodeRequest>,
) -> Result<Response, ApiError> {
    let node = s.sessions.add_node(&sid, req).await?;
    Ok((StatusCode::CREATED, Json(node)).into_response())
}
