//! Shells in nodes for the terminals: the [`terminals::Spawner`] of a node.
//!
//! The work is the runtime's ([`sandbox::Runtime::spawn_shell`]: a PTY from the node's own
//! devpts, a login shell in a session of its own joined to the node's cgroups and namespaces);
//! this adapter only translates sizes and errors. The terminal calls it for the first shell
//! and again after each exit, so a shell that was ended with `exit` comes back.

use std::io;
use std::sync::Arc;

use terminals::{PtyProcess, Spawner, WinSize};

/// Starts login shells in one node.
pub(crate) struct NodeShell {
    pub(crate) runtime: Arc<sandbox::Runtime>,
    pub(crate) network: String,
    pub(crate) hostname: String,
}

impl Spawner for NodeShell {
    fn spawn(&self, size: WinSize) -> io::Result<PtyProcess> {
        let shell = self
            .runtime
            .spawn_shell(&self.network, &self.hostname, size.cols, size.rows)
            .map_err(io::Error::other)?;
        Ok(PtyProcess {
            master: shell.master,
            child: shell.child,
        })
    }
}
