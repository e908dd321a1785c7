//! Shared shells for sandpit: one PTY per terminal, streamed to any number of viewers.
//!
//! A [`Terminal`] runs a shell obtained from a [`Spawner`] (for nodes, the runtime's exec
//! helper allocates the PTY inside the node) and keeps its recent output in a [`Ring`]
//! addressed by byte offsets. [`Terminal::attach`] gives a [`Viewer`] with its own offset,
//! which pulls output in coalesced batches and resumes exactly where a previous connection
//! stopped. [`pump`] serves a viewer over any WebSocket implementation speaking [`Frame`]s,
//! with the wire protocol of [`protocol`] (documented for client authors in
//! `docs/protocol.md`). Nothing here knows about HTTP routes or axum.
//!
//! Modules, each importing only those above it:
//! - `ring`: the bounded output buffer and its offset arithmetic.
//! - `mirror`: the ring's copy in a memfd, kept with the shell for the next server.
//! - `size`: the window size and the resize policy (whose size the PTY has).
//! - `pty`: the non-blocking PTY master (reads, writes, window size).
//! - `input`: the bounded input queue that keeps each viewer's message whole.
//! - `options`: a terminal's tunables and limits. `error`: the terminal's error.
//! - `shared`: the state a terminal's tasks, handles and viewers share.
//! - `reader`: moves PTY output into the ring, paced during floods.
//! - `viewer`: a viewer's cursor, skip-ahead and input handle; attaching under the limit.
//! - `shell`: the shells: the `Spawner`, the supervisor (restarts, close) and the writer.
//! - `terminal`: the `Terminal` handle: start, attach, write, close.
//! - `protocol`: the JSON control messages, query parameters and close codes.
//! - `pump`: the per-connection WebSocket loop, keepalive and backpressure.

#![forbid(unsafe_code)]

mod error;
mod input;
mod mirror;
mod options;
pub mod protocol;
mod pty;
mod pump;
mod reader;
mod ring;
mod shared;
mod shell;
mod size;
mod terminal;
mod viewer;

pub use error::TerminalError;
pub use options::{OptionsError, TerminalOptions};
pub use protocol::{ClientMessage, ProtocolError, ServerMessage, TerminalQuery};
pub use pty::PtyError;
pub use pump::{pump, Frame, PumpEnd, PumpError, PumpOptions};
pub use ring::{Ring, RingError, Slice, DEFAULT_CAPACITY as DEFAULT_RING_BYTES};
pub use shell::{PtyProcess, ShellFuture, ShellProcess, Spawner};
pub use size::WinSize;
pub use terminal::Terminal;
pub use viewer::{AttachError, Output, Viewer, ViewerInput, DEFAULT_FRAME_BYTES};
