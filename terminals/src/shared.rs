//! The state a terminal's tasks, its handles and its viewers share.
//!
//! [`Shared`] holds, behind one mutex ([`State`]), the output ring, the offsets where shells
//! restarted, the window size, the attached viewers and whether the terminal is closed; next to
//! it the input queue, the running shell (published for the writer task and for resizes) and
//! the signals that wake viewers and tasks. Viewers are woken through a `watch` counter bumped
//! on every change: each compares what it last saw with the state and takes what is new, so a
//! wake-up is never lost and a slow viewer is simply woken fewer times.
//!
//! The lock is held only for bookkeeping and the `TIOCSWINSZ` ioctl, never across an await.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::{watch, Notify};

use crate::error::TerminalError;
use crate::input::InputQueue;
use crate::mirror::{Mirror, Restored, MAX_EVENTS};
use crate::options::TerminalOptions;
use crate::pty::Master;
use crate::ring::Ring;
use crate::size::{WinSize, Window};

/// What the terminal's tasks, its handles and its viewers share.
pub(crate) struct Shared {
    /// See [`Terminal::id`](crate::Terminal::id).
    id: String,
    state: Mutex<State>,
    /// Bumped after every change viewers must see (output, events, size, close).
    pub(crate) changes: watch::Sender<u64>,
    /// The current shell, for the writer and for resizes; `None` between shells. Set through
    /// [`Shared::set_shell`].
    pub(crate) shell: watch::Sender<Option<Arc<Shell>>>,
    /// The writer's queue.
    input: InputQueue,
    /// The ring's copy for the next server, when the terminal keeps its output. Its lock is
    /// taken before the state's, and the copy written outside the state's: viewers never wait
    /// for it, and copies go in the ring's order.
    mirror: Option<Mutex<Mirror>>,
    /// Wakes the supervisor to close.
    pub(crate) close: Notify,
    /// Set once the last shell has been reaped.
    pub(crate) done: watch::Sender<bool>,
    /// Set by [`Terminal::leave`](crate::Terminal::leave): dropping the last handle does not close.
    pub(crate) left: AtomicBool,
    pub(crate) opts: TerminalOptions,
}

/// The part of [`Shared`] behind its mutex.
pub(crate) struct State {
    pub(crate) ring: Ring,
    pub(crate) events: Events,
    pub(crate) window: Window,
    /// Attached viewers, at most `opts.max_viewers`.
    pub(crate) viewers: usize,
    /// Id of the next viewer.
    pub(crate) next_viewer: u64,
    pub(crate) closed: Option<String>,
    pub(crate) restarts: u64,
}

/// One running shell.
pub(crate) struct Shell {
    /// Counts shells of this terminal, so the writer notices a replacement.
    pub(crate) generation: u64,
    pub(crate) master: Master,
}

impl Shared {
    /// A new stream `id`, copied into `mirror` if given.
    pub(crate) fn new(
        id: String,
        opts: TerminalOptions,
        input: InputQueue,
        mirror: Option<Mirror>,
    ) -> Self {
        let restored = Restored {
            id,
            ring: Ring::new(opts.ring_bytes),
            events: (0, Vec::new()),
            restarts: 0,
        };
        Self::restored(restored, opts, input, mirror)
    }

    /// The stream a previous server left in `mirror`, going on; the window starts at `size`.
    pub(crate) fn restored(
        restored: Restored,
        opts: TerminalOptions,
        input: InputQueue,
        mirror: Option<Mirror>,
    ) -> Self {
        let (base, offsets) = restored.events;
        let events = Events::restored(base, offsets.into_iter(), restored.ring.start());
        Self {
            id: restored.id,
            state: Mutex::new(State {
                ring: restored.ring,
                events,
                window: Window::new(opts.size),
                viewers: 0,
                next_viewer: 0,
                closed: None,
                restarts: restored.restarts,
            }),
            changes: watch::Sender::new(0),
            shell: watch::Sender::new(None),
            input,
            mirror: mirror.map(Mutex::new),
            close: Notify::new(),
            done: watch::Sender::new(false),
            left: AtomicBool::new(false),
            opts,
        }
    }

    /// A descriptor of the ring's copy, for a shell's holder to keep for the next server.
    pub(crate) fn kept(&self) -> Option<std::os::fd::OwnedFd> {
        let mirror = self.mirror()?;
        match mirror.fd().try_clone_to_owned() {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "the output's copy cannot be given to the shell's holder");
                None
            }
        }
    }

    fn mirror(&self) -> Option<MutexGuard<'_, Mirror>> {
        let m = self.mirror.as_ref()?;
        Some(m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The stream id (see [`Terminal::id`](crate::Terminal::id)).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the ring inconsistent in a way that
        // matters more than losing the terminal, so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn notify_viewers(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn push_output(&self, chunk: Bytes) {
        // Copied first: a viewer never has a byte the next server would not.
        let mut mirror = self.mirror();
        if let Some(mirror) = &mut mirror {
            if let Err(e) = mirror.append(&chunk) {
                tracing::warn!(error = %e, "copy output for the next server");
            }
        }
        self.state().ring.push(chunk);
        drop(mirror);
        self.notify_viewers();
    }

    /// Writes a line of ours into the stream, set apart from the shell's output.
    pub(crate) fn push_notice(&self, text: &str) {
        self.push_output(Bytes::from(format!("\r\n[{text}]\r\n")));
    }

    /// Records a restart at the current end of the stream, where the new shell's output
    /// begins.
    pub(crate) fn push_restart(&self) {
        let mirror = self.mirror();
        let mut st = self.state();
        let offset = st.ring.end();
        let oldest = st.ring.start();
        st.events.push(offset, oldest);
        st.restarts += 1;
        if let Some(mirror) = &mirror {
            let offsets = st.events.offsets.iter().copied();
            if let Err(e) = mirror.record_restarts(st.events.base, offsets, st.restarts) {
                tracing::warn!(error = %e, "copy the restarts for the next server");
            }
        }
        drop(st);
        drop(mirror);
        self.notify_viewers();
    }

    pub(crate) fn close(&self, reason: String) {
        {
            let mut st = self.state();
            if st.closed.is_some() {
                return;
            }
            tracing::info!(%reason, "closing terminal");
            st.closed = Some(reason);
        }
        self.notify_viewers();
        self.close.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed.is_some()
    }

    /// Queues `data` for the shell, none of another writer's input in between.
    pub(crate) async fn send_input(&self, data: Bytes) -> Result<(), TerminalError> {
        self.input
            .send(data)
            .await
            .map_err(|_| TerminalError::Closed)
    }

    /// The window size the next shell starts with.
    pub(crate) fn size(&self) -> WinSize {
        self.state().window.size()
    }

    /// Makes `shell` the running one (or none), with the window's current size: a resize
    /// while the shell was being started is not lost, as both happen under the state lock.
    pub(crate) fn set_shell(&self, shell: Option<Arc<Shell>>) {
        let st = self.state();
        if let Some(shell) = &shell {
            resize_pty(&shell.master, st.window.size());
        }
        self.shell.send_replace(shell);
    }

    /// Viewer `viewer` sent input: it becomes the active one, and the PTY takes the size it
    /// last asked for.
    pub(crate) fn make_active(&self, viewer: u64) {
        let mut st = self.state();
        let changed = st.window.activate(viewer);
        self.apply_size(st, changed);
    }

    /// Viewer `viewer` asked for `size`: it becomes the active one, and the PTY takes it.
    pub(crate) fn resize_for(&self, viewer: u64, size: WinSize) -> Result<(), TerminalError> {
        if !size.is_valid() {
            return Err(TerminalError::Size(size));
        }
        let mut st = self.state();
        let changed = st.window.request(viewer, size);
        self.apply_size(st, changed);
        Ok(())
    }

    /// Gives the running shell's PTY the window's new size, if it changed, and tells viewers.
    fn apply_size(&self, st: MutexGuard<'_, State>, changed: Option<WinSize>) {
        let Some(size) = changed else { return };
        if let Some(shell) = self.shell.borrow().as_ref() {
            resize_pty(&shell.master, size);
        }
        drop(st);
        self.notify_viewers();
    }
}

/// Sets the PTY's size; the kernel sends SIGWINCH to the shell's foreground job.
fn resize_pty(master: &Master, size: WinSize) {
    if let Err(e) = master.resize(size) {
        tracing::warn!(error = %e, "resize failed");
    }
}

/// Offsets at which a new shell's output starts, numbered by a running sequence.
#[derive(Default)]
pub(crate) struct Events {
    /// Sequence number of `offsets[0]`.
    base: u64,
    offsets: VecDeque<u64>,
}

impl Events {
    /// The offset of event `seq`, if still kept.
    pub(crate) fn get(&self, seq: u64) -> Option<u64> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.offsets.get(i).copied()
    }

    /// Sequence number of the oldest event kept.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Sequence number of the first event at or after `offset` (or of the next event).
    pub(crate) fn first_at_or_after(&self, offset: u64) -> u64 {
        self.base + self.offsets.partition_point(|o| *o < offset) as u64
    }

    /// Events `base..` at `offsets` (ascending), less those before the ring's oldest byte.
    pub(crate) fn restored(
        base: u64,
        offsets: impl Iterator<Item = u64>,
        oldest_kept: u64,
    ) -> Self {
        let mut events = Events {
            base,
            offsets: offsets.collect(),
        };
        while events.offsets.front().is_some_and(|o| *o < oldest_kept) {
            events.offsets.pop_front();
            events.base += 1;
        }
        events
    }

    fn push(&mut self, offset: u64, oldest_kept: u64) {
        self.offsets.push_back(offset);
        while self.offsets.len() > MAX_EVENTS
            || self.offsets.front().is_some_and(|o| *o < oldest_kept)
        {
            self.offsets.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_by_offset_and_forgotten_with_the_ring() {
        let mut events = Events::default();
        events.push(10, 0);
        events.push(20, 0);
        events.push(20, 0);
        assert_eq!(events.first_at_or_after(0), 0);
        assert_eq!(events.first_at_or_after(10), 0);
        assert_eq!(events.first_at_or_after(11), 1);
        assert_eq!(events.first_at_or_after(21), 3);
        assert_eq!((events.get(1), events.get(3)), (Some(20), None));
        // The ring moved past offset 10: that event goes, sequence numbers stay.
        events.push(30, 15);
        assert_eq!(events.base(), 1);
        assert_eq!(
            (events.get(0), events.get(1), events.get(3)),
            (None, Some(20), Some(30))
        );
        assert_eq!(events.first_at_or_after(25), 3);
    }
}
