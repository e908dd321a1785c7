//! `/api/images`: the base images nodes can be made from.

use axum::extract::State;
use axum::Json;

use super::state::AppState;
use crate::wire::ImageList;

pub async fn list(State(s): State<AppState>) -> Json<ImageList> {
    Json(s.sessions.images())
}
