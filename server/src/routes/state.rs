//! What every handler shares.

use std::sync::Arc;

use tokio::sync::{watch, Semaphore};

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
    pub max_upload_bytes: usize,
    /// Uploads being buffered; at most [`MAX_UPLOADS`] at once.
    pub uploads: Arc<Semaphore>,
    /// Turns true when the server shuts down; long-lived sockets close.
    pub shutdown: watch::Receiver<bool>,
}
