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
//! Modules:
//! - `ring`: the bounded output buffer and its offset arithmetic.
//! - `pty`: the non-blocking PTY master (reads, writes, window size).
//! - `reader`: moves PTY output into the ring, paced during floods.
//! - `terminal`: the terminal's lifecycle: reader, writer, restarts, close, resize policy.
//! - `viewer`: a viewer's cursor, skip-ahead and input handle.
//! - `protocol`: the JSON control messages, query parameters and close codes.
//! - `pump`: the per-connection WebSocket loop, keepalive and backpressure.

#![forbid(unsafe_code)]

pub mod protocol;
mod pty;
mod pump;
mod reader;
mod ring;
mod terminal;
mod viewer;

pub use protocol::{ClientMessage, ProtocolError, ServerMessage, TerminalQuery};
pub use pty::PtyError;
pub use pump::{pump, Frame, PumpEnd, PumpError, PumpOptions};
pub use ring::{Ring, RingError, Slice, DEFAULT_CAPACITY as DEFAULT_RING_BYTES};
pub use terminal::{
    Output, PtyProcess, Spawner, Terminal, TerminalError, TerminalOptions, WinSize,
};
pub use viewer::{Viewer, ViewerInput, DEFAULT_FRAME_BYTES};
