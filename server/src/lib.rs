//! sandpit's service: sessions of nodes with shared terminals, over HTTP and WebSockets.
//!
//! [`Sessions`] is the domain: limits, reservations, expiry, recovery, terminals and published
//! ports, over the [`NodeRuntime`] seam ([`SandboxRuntime`] drives real nodes; unit tests use a
//! fake). [`provision`] builds templates on top of it. [`routes::app`] is the HTTP surface,
//! [`wire`] every JSON shape, [`error`] the one error boundary, [`serve`] the process around
//! them, [`cli`] the command line. See `ARCHITECTURE.md`.

#![forbid(unsafe_code)]

mod assets;
pub mod cli;
mod disk;
pub mod error;
#[cfg(test)]
mod fake_runtime;
mod held_shell;
mod metrics;
mod node_runtime;
mod ports;
pub mod provision;
pub mod routes;
mod sandbox_runtime;
pub mod serve;
mod sessions;
mod store;
pub mod wire;

pub use metrics::Metrics;
pub use node_runtime::{
    Command, NodeFacts, NodeRuntime, NodeSample, NodeShell, PortsReport, RuntimeError,
};
pub use sandbox_runtime::SandboxRuntime;
pub use sessions::{SessionConfig, SessionError, Sessions};
pub use store::{Store, StoreError};
