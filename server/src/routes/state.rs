//! What every handler shares.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

use super::pwd::Viewports;

use crate::metrics::Metrics;
use crate::sessions::Sessions;

/// Uploads buffered at once (each up to `--max-upload-mib`).
pub const MAX_UPLOADS: usize = 4;

#[derive(Clone)]
pub struct AppState {
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    /// Bearer token of the admin routes; None: they are off.
    pub admin_token: Option<String>,
    /// Origins allowed to open WebSockets and send writes besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Origins of play-with-docker pages: CORS with credentials, the PWD routes and socket.
    pub pwd_origins: Vec<String>,
    pub max_upload_bytes: usize,
    /// Uploads being buffered; at most [`MAX_UPLOADS`] at once.
    pub uploads: Arc<Semaphore>,
    /// Turns true when the server shuts down; long-lived sockets close.
    pub shutdown: watch::Receiver<bool>,
    /// The sizes of play-with-docker pages, per session.
    pub pwd_viewports: Arc<Viewports>,
}

/// Resolves once the shutdown flag is set (never, if its sender is gone without setting it).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
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
