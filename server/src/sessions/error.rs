//! What went wrong with a session request, in terms a client can act on, and the HTTP status
//! each answer gets (the one error boundary, `crate::error`, turns it into a response).

use axum::http::StatusCode;

use crate::node_runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no session {0:?}")]
    UnknownSession(String),
    #[error("no node {0:?} in this session")]
    UnknownNode(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this session already has {0} nodes, its limit; delete one first")]
    NodeLimit(usize),
    #[error("this session already has a node named {0:?}")]
    NameTaken(String),
    #[error("node {0:?} is being created or removed; try again in a moment")]
    NodeBusy(String),
    #[error("node {node:?} already has {max} terminals ({open}); use one of them")]
    TerminalLimit {
        node: String,
        open: String,
        max: usize,
    },
    #[error("node {name:?} is {status}; delete it and add a new one")]
    NodeNotRunning { name: String, status: String },
    #[error("this address already has {0} sessions, its limit; end one first")]
    ClientLimit(usize),
    #[error("the server is at capacity ({0} nodes); try again later")]
    AtCapacity(usize),
    /// The operator's log says why (`sessions/disk.rs`); clients see a full server.
    #[error("the server is at capacity; try again later")]
    DiskLow { free: u64, reserve: u64 },
    #[error("the server is shutting down; try again in a moment")]
    Draining,
    #[error("the session is ending")]
    Ending,
    #[error("this session already has nodes; a setup needs an empty session")]
    SessionNotEmpty,
    /// A stack file could not be had from its (allowed) source.
    #[error("{0}")]
    StackFetch(String),
    #[error("{step} failed: {message}")]
    Template { step: String, message: String },
    #[error("cannot write {path} in {node}: {reason}")]
    WriteFailed {
        path: String,
        node: String,
        reason: String,
    },
    #[error("writing {path} in {node} did not finish in time")]
    WriteTimedOut { path: String, node: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl SessionError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        use RuntimeError as R;
        use SessionError as E;
        match self {
            E::UnknownSession(_) | E::UnknownNode(_) => StatusCode::NOT_FOUND,
            E::Invalid(_) | E::WriteFailed { .. } => StatusCode::BAD_REQUEST,
            E::NodeLimit(_)
            | E::NameTaken(_)
            | E::NodeBusy(_)
            | E::NodeNotRunning { .. }
            | E::TerminalLimit { .. }
            | E::SessionNotEmpty
            | E::Ending => StatusCode::CONFLICT,
            E::StackFetch(_) => StatusCode::BAD_GATEWAY,
            E::ClientLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            E::AtCapacity(_) | E::DiskLow { .. } | E::Draining => StatusCode::SERVICE_UNAVAILABLE,
            E::WriteTimedOut { .. } => StatusCode::GATEWAY_TIMEOUT,
            E::Runtime(r) => match r {
                R::Invalid(_) => StatusCode::BAD_REQUEST,
                R::Unknown(_) => StatusCode::NOT_FOUND,
                R::Busy(_) | R::Conflict(_) => StatusCode::CONFLICT,
                R::Exhausted(_) | R::EngineNotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
                R::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            E::Template { .. } | E::Store(_) | E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told: internal failures stay in the server log, except which step
    /// of a template failed (that is what a user can report).
    pub fn public_message(&self) -> String {
        match self {
            SessionError::Template { step, .. } => format!("{step} failed; see the server log"),
            e if e.status() == StatusCode::INTERNAL_SERVER_ERROR => {
                "internal error; see the server log".into()
            }
            e => e.to_string(),
        }
    }
}
