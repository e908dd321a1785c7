//! A terminal: one shared shell, the handle that owns it and the way viewers attach.
//!
//! [`Terminal::start`] validates the options, asks the [`Spawner`] for the first shell (so a
//! shell that cannot start is an error of `start`), and starts the supervisor and the writer
//! tasks (`shell.rs`) around the state they share with viewers (`shared.rs`). [`Terminal`] is a
//! cheap handle; the last clone to go closes the terminal, while viewers do not keep it alive.
//!
//! Viewers ([`Viewer`]) each pull from their own offset; nothing is queued per viewer, so a
//! stalled viewer holds no memory beyond the shared ring and never slows the shell or the
//! others. A terminal takes at most `max_viewers` of them at once.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::TerminalError;
use crate::input::InputQueue;
use crate::mirror::Mirror;
use crate::options::TerminalOptions;
use crate::shared::Shared;
use crate::shell::{self, PtyProcess, Spawner};
use crate::size::WinSize;
use crate::viewer::{AttachError, Viewer};

/// A shared shell. Cheap to clone; the shell is closed when the last clone is dropped.
#[derive(Clone)]
pub struct Terminal {
    handle: Arc<Handle>,
}

/// Closes the terminal when the last [`Terminal`] clone goes (viewers do not keep it alive).
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.shared.left.load(std::sync::atomic::Ordering::SeqCst) {
            self.shared.close("terminal dropped".to_owned());
        }
    }
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("id", &self.handle.shared.id())
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// Starts the first shell and the tasks that serve it. Call inside a tokio runtime.
    pub async fn start(
        spawner: impl Spawner,
        opts: TerminalOptions,
    ) -> Result<Self, TerminalError> {
        opts.validate()?;
        let spawner: Arc<dyn Spawner> = Arc::new(spawner);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mirror = match opts.keep_output {
            true => Some(Mirror::create(&id, opts.ring_bytes).map_err(TerminalError::Keep)?),
            false => None,
        };
        let keep = mirror.as_ref().map(|m| m.fd().try_clone_to_owned());
        let keep = keep.transpose().map_err(TerminalError::Keep)?;
        let first = shell::spawn_off(&spawner, opts.size, keep)
            .await
            .map_err(TerminalError::Spawn)?;
        let (input, input_rx) = InputQueue::new(opts.input_queue_bytes);
        let shared = Arc::new(Shared::new(id, opts, input, mirror));
        Ok(Self::serve(shared, spawner, first, input_rx))
    }

    /// Takes over a terminal that a previous server ran: its shell, still held (or ended,
    /// then the next one starts as after any exit), and the copy of its output that was
    /// kept with it ([`TerminalOptions::keep_output`]). The stream keeps its id and offsets, so
    /// viewers resume exactly where they were; the window keeps the PTY's size. If the copy
    /// cannot be read, the shell is ended and the error returned. Call inside a tokio runtime.
    pub fn adopt(
        spawner: impl Spawner,
        mut opts: TerminalOptions,
        shell: PtyProcess,
        kept: OwnedFd,
    ) -> Result<Self, TerminalError> {
        opts.keep_output = true;
        let opened = opts
            .validate()
            .map_err(TerminalError::from)
            .and_then(|()| Mirror::open(kept).map_err(TerminalError::Restore));
        let (mirror, restored) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                // A shell nobody can serve must not linger in its holder.
                let mut process = shell.process;
                tokio::spawn(async move { process.end().await });
                return Err(e);
            }
        };
        if let Ok(size) = rustix::termios::tcgetwinsize(&shell.master) {
            let size = WinSize {
                cols: size.ws_col,
                rows: size.ws_row,
            };
            if size.is_valid() {
                opts.size = size;
            }
        }
        let (input, input_rx) = InputQueue::new(opts.input_queue_bytes);
        let shared = Arc::new(Shared::restored(restored, opts, input, Some(mirror)));
        Ok(Self::serve(shared, Arc::new(spawner), shell, input_rx))
    }

    fn serve(
        shared: Arc<Shared>,
        spawner: Arc<dyn Spawner>,
        first: PtyProcess,
        input_rx: mpsc::Receiver<Bytes>,
    ) -> Self {
        shell::start_tasks(&shared, spawner, first, input_rx);
        Self {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A random id of this terminal's byte stream. Offsets are only meaningful within one
    /// stream: a client that reconnects to a different id (a new shell after the host
    /// rebooted, or a terminal that kept no output) must not resume by offset. A terminal
    /// taken over by [`Terminal::adopt`] keeps its id.
    pub fn id(&self) -> &str {
        self.shared().id()
    }

    /// A new viewer. Without `since` it replays the ring from its oldest byte; with `since` it
    /// resumes exactly there (an evicted offset yields
    /// [`Output::Skipped`](crate::Output::Skipped) first; an offset ahead of the stream is
    /// reported by [`Viewer::resume_error`] and replays the ring).
    ///
    /// Refused when the terminal already has [`TerminalOptions::max_viewers`] viewers; the
    /// check and the attach are one step, so concurrent attaches never exceed the limit.
    pub fn attach(&self, since: Option<u64>, readonly: bool) -> Result<Viewer, AttachError> {
        Viewer::attach(self.shared(), since, readonly)
    }

    /// Queues input for the shell, in order with every other writer; waits while the queue is
    /// full. Does not change which viewer is active.
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<(), TerminalError> {
        self.shared().send_input(data.into()).await
    }

    /// The current window size of the PTY.
    pub fn size(&self) -> WinSize {
        self.shared().size()
    }

    /// Offset of the next byte of output (the number of bytes produced so far).
    pub fn offset(&self) -> u64 {
        self.shared().state().ring.end()
    }

    /// Number of attached viewers.
    pub fn viewers(&self) -> usize {
        self.shared().state().viewers
    }

    /// How many times the shell was replaced after exiting.
    pub fn restarts(&self) -> u64 {
        self.shared().state().restarts
    }

    /// Whether [`Terminal::close`] was called (or the last handle dropped).
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// Ends the terminal: every viewer gets [`Output::Closed`](crate::Output::Closed) with
    /// `reason`, and the shell is hung up, killed and reaped in the background. Later calls do
    /// nothing.
    pub fn close(&self, reason: impl Into<String>) {
        self.shared().close(reason.into());
    }

    /// The server is stopping and another will take this terminal over: dropping the last
    /// handle will not close it (no hang-up, no `closed` message to viewers), and the shell's
    /// process is simply dropped with the runtime's tasks: a held shell keeps running in its
    /// holder, a child spawned with `kill_on_drop` is killed.
    pub fn leave(&self) {
        self.shared()
            .left
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Resolves once the terminal is closed and its last shell has been reaped.
    pub async fn closed(&self) {
        let mut done = self.shared().done.subscribe();
        // The sender lives in `Shared`, which `self` keeps alive.
        let _ = done.wait_for(|done| *done).await;
    }
}
