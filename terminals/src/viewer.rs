//! Viewers: one reader of a terminal's stream, with its own offset.
//!
//! A viewer pulls: [`Viewer::next`] returns everything between its offset and the end of the
//! ring (capped per call), so a slow viewer gets fewer, bigger batches and a fast one gets
//! each wake-up's output as it comes. Nothing is buffered per viewer: if it falls so far
//! behind that its offset leaves the ring, it is told how many bytes it lost
//! ([`Output::Skipped`]) and continues from the oldest kept byte. Its input goes through
//! [`ViewerInput`], which also makes it the viewer whose window size the PTY follows.
//!
//! Attaching counts the viewer against the terminal's limit in the same step, under the
//! terminal's lock, that places it in the stream, so concurrent attaches never exceed it;
//! dropping the viewer gives its place back.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use crate::error::TerminalError;
use crate::ring::RingError;
use crate::shared::Shared;
use crate::size::WinSize;

/// Most bytes [`Viewer::next`] returns at once.
pub const DEFAULT_FRAME_BYTES: usize = 256 << 10;

/// What a viewer gets next, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Terminal output from the viewer's offset on.
    Data(Bytes),
    /// The bytes `from..to` were evicted before the viewer read them; it continues at `to`.
    Skipped { from: u64, to: u64 },
    /// The shell exited and a new one starts; its output begins at `offset`.
    Restarted { offset: u64 },
    /// The PTY's window size changed.
    Resized(WinSize),
    /// The terminal was closed; nothing follows (every later call returns this again).
    Closed { reason: String },
}

/// Why a terminal refused a viewer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    #[error("this terminal already has {0} viewers")]
    TooManyViewers(usize),
}

/// One reader of a terminal's output. Dropping it detaches.
pub struct Viewer {
    shared: Arc<Shared>,
    id: u64,
    readonly: bool,
    /// Offset of the next byte this viewer gets.
    cursor: u64,
    /// Sequence number of the next restart event to consider.
    event_seq: u64,
    /// The size change last reported.
    size_seq: u64,
    changes: watch::Receiver<u64>,
    resume_error: Option<RingError>,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("id", &self.id)
            .field("readonly", &self.readonly)
            .field("offset", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Viewer {
    /// Attaches a viewer to `shared` (see [`Terminal::attach`](crate::Terminal::attach)):
    /// counted against the viewer limit and placed in the stream under one lock.
    pub(crate) fn attach(
        shared: &Arc<Shared>,
        since: Option<u64>,
        readonly: bool,
    ) -> Result<Self, AttachError> {
        let mut st = shared.state();
        let max = shared.opts.max_viewers;
        if st.viewers >= max {
            return Err(AttachError::TooManyViewers(max));
        }
        st.viewers += 1;
        let id = st.next_viewer;
        st.next_viewer += 1;
        let (cursor, resume_error) = match since {
            None => (st.ring.start(), None),
            Some(offset) if offset > st.ring.end() => (
                st.ring.start(),
                Some(RingError::Future {
                    offset,
                    end: st.ring.end(),
                }),
            ),
            Some(offset) => (offset, None),
        };
        let event_seq = st.events.first_at_or_after(cursor);
        let size_seq = st.window.seq();
        drop(st);
        Ok(Self {
            shared: shared.clone(),
            id,
            readonly,
            cursor,
            event_seq,
            size_seq,
            changes: shared.changes.subscribe(),
            resume_error,
        })
    }

    /// Offset of the next byte this viewer will get: everything before it was delivered or
    /// reported as skipped.
    pub fn offset(&self) -> u64 {
        self.cursor
    }

    /// Whether this viewer may only watch.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Id of the terminal's byte stream (see [`Terminal::id`](crate::Terminal::id)).
    pub fn stream(&self) -> &str {
        self.shared.id()
    }

    /// The PTY's current window size.
    pub fn size(&self) -> WinSize {
        self.shared.size()
    }

    /// Why the requested resume offset was not used (it was ahead of the stream; the viewer
    /// replays the ring instead).
    pub fn resume_error(&self) -> Option<&RingError> {
        self.resume_error.as_ref()
    }

    /// A handle for this viewer's input and resizes, usable while [`Viewer::next`] waits.
    pub fn input(&self) -> ViewerInput {
        ViewerInput {
            shared: self.shared.clone(),
            id: self.id,
            readonly: self.readonly,
        }
    }

    /// Waits for something new and returns it; output is capped at [`DEFAULT_FRAME_BYTES`].
    pub async fn next(&mut self) -> Output {
        self.next_limited(DEFAULT_FRAME_BYTES).await
    }

    /// Like [`Viewer::next`] with at most `max` bytes of output. With `max == 0` only events
    /// (skips, restarts, resizes, close) are returned. Cancel-safe.
    pub async fn next_limited(&mut self, max: usize) -> Output {
        loop {
            // Mark the current version seen before looking, so a change made after the look
            // wakes the wait below.
            self.changes.borrow_and_update();
            if let Some(out) = self.poll(max) {
                return out;
            }
            if self.changes.changed().await.is_err() {
                // Unreachable while `shared` (which owns the sender) is alive.
                return Output::Closed {
                    reason: "terminal gone".to_owned(),
                };
            }
        }
    }

    /// The next thing for this viewer, if any, without waiting.
    fn poll(&mut self, max: usize) -> Option<Output> {
        let st = self.shared.state();
        if let Some(reason) = &st.closed {
            return Some(Output::Closed {
                reason: reason.clone(),
            });
        }
        if st.window.seq() != self.size_seq {
            self.size_seq = st.window.seq();
            return Some(Output::Resized(st.window.size()));
        }
        let mut max = max;
        self.event_seq = self.event_seq.max(st.events.base());
        while let Some(offset) = st.events.get(self.event_seq) {
            if offset < self.cursor {
                // Skipped over, or before where this viewer started.
                self.event_seq += 1;
            } else if offset == self.cursor {
                self.event_seq += 1;
                return Some(Output::Restarted { offset });
            } else {
                // Stop the data at the restart so the event comes in stream order.
                max = max.min(usize::try_from(offset - self.cursor).unwrap_or(usize::MAX));
                break;
            }
        }
        let slice = match st.ring.read_from(self.cursor, max) {
            Ok(slice) => slice,
            Err(e) => {
                // A cursor never passes the end; if it somehow did, resync to the end.
                debug_assert!(false, "viewer cursor ahead of the ring: {e}");
                self.cursor = st.ring.end();
                return None;
            }
        };
        if slice.offset > self.cursor {
            let from = self.cursor;
            self.cursor = slice.offset;
            return Some(Output::Skipped {
                from,
                to: slice.offset,
            });
        }
        if slice.bytes.is_empty() {
            return None;
        }
        self.cursor += slice.bytes.len() as u64;
        Some(Output::Data(slice.bytes))
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut st = self.shared.state();
        st.viewers -= 1;
        st.window.leave(self.id);
    }
}

/// A viewer's way in: input and resizes, tagged with the viewer for the resize policy.
#[derive(Clone)]
pub struct ViewerInput {
    shared: Arc<Shared>,
    id: u64,
    readonly: bool,
}

impl std::fmt::Debug for ViewerInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerInput")
            .field("id", &self.id)
            .field("readonly", &self.readonly)
            .finish_non_exhaustive()
    }
}

impl ViewerInput {
    /// Whether this viewer may only watch.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Queues input for the shell (written whole, in order with other viewers' input) and
    /// makes this viewer the active one. Waits while the input queue is full.
    pub async fn write(&self, data: Bytes) -> Result<(), TerminalError> {
        if self.readonly {
            return Err(TerminalError::ReadOnly);
        }
        self.shared.make_active(self.id);
        self.shared.send_input(data).await
    }

    /// Sets this viewer's window size, makes it the active viewer and resizes the PTY.
    pub fn resize(&self, size: WinSize) -> Result<(), TerminalError> {
        if self.readonly {
            return Err(TerminalError::ReadOnly);
        }
        self.shared.resize_for(self.id, size)
    }
}
