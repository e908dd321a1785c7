//! Shared harness of the integration tests: a [`TestRuntime`] per test, with a prefix, state
//! directory and subnet pool of its own, so tests run in parallel with each other and beside a
//! production instance; cleanup on drop even when the test panics; and a leak check.
//!
//! These tests need root and build real nodes from the base image in
//! `/var/lib/sandpit/images` (made by `ops/setup`). They never skip: on a machine that cannot
//! run them they fail with the reason.

#![forbid(unsafe_code)]

mod rng;
mod runtime;
mod server;
mod sockets;

pub use rng::Rng;
pub use runtime::{
    runtime_args, sandpit_bin, sha256_hex, stderr, stdout, test_config, with_registry,
    CleanupGuard, KillOnDrop, TestRuntime, IMPORT_BUSYBOX,
};
pub use server::TestServer;
pub use sockets::{Events, TermClient, Ws};
