//! What starting, feeding or resizing a terminal can fail with.
//!
//! One error for the terminal's public verbs ([`Terminal::start`](crate::Terminal::start),
//! [`Terminal::write`](crate::Terminal::write) and a viewer's input and resizes), below the
//! modules that return it. Attaching has an error of its own (`viewer.rs`).

use std::io;

use crate::options::OptionsError;
use crate::pty::PtyError;
use crate::size::WinSize;

/// Starting, feeding or resizing a terminal.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error("window size {}x{} is outside 1..=1000 columns and rows", .0.cols, .0.rows)]
    Size(WinSize),
    #[error("start the shell: {0}")]
    Spawn(#[source] io::Error),
    #[error("make the copy of the output for the next server: {0}")]
    Keep(#[source] io::Error),
    #[error("take over the output a previous server kept: {0}")]
    Restore(#[source] io::Error),
    #[error(transparent)]
    Pty(#[from] PtyError),
    #[error("the terminal is closed")]
    Closed,
    #[error("this viewer is read-only")]
    ReadOnly,
}
