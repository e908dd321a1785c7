//! A terminal: one shell on a PTY, its output ring, and the tasks that keep them going.
//!
//! [`Terminal::start`] asks a [`Spawner`] for a shell and starts two tasks:
//!
//! - the **supervisor** reads the PTY master into the [`Ring`](crate::Ring) and wakes viewers
//!   (through `reader.rs`, which paces itself during floods);
//!   when the shell exits it writes a notice into the stream, starts a new shell (at most one
//!   per `restart_interval`) and records a restart event at the offset where the new shell's
//!   output begins; on [`Terminal::close`] it hangs the shell up, kills it and reaps it.
//! - the **writer** takes input in order from a bounded queue and writes each piece whole to
//!   the current shell, as fast as the line discipline accepts it, so concurrent viewers' input
//!   is serialised and a large paste is never dropped.
//!
//! Reading is bounded per terminal by a token bucket (`read_bytes_per_sec`): over budget the
//! reader simply stops reading, the kernel's PTY buffer fills and the shell's writes block.
//! A flood (`yes`) thus costs at most that much server CPU, and Ctrl-C still works at once
//! because the line discipline turns it into SIGINT on input, without anybody reading.
//!
//! Viewers ([`Viewer`]) each pull from their own offset; nothing is queued per viewer, so a
//! stalled viewer holds no memory beyond the shared ring and never slows the shell or the
//! others.
//!
//! **Resize policy**: the PTY has the window size of the most recently active viewer, that is
//! the last one that sent input or a resize. A viewer's resize applies at once; input from a
//! viewer that is not the active one first applies that viewer's last requested size. When the
//! active viewer leaves, the size stays until another viewer acts.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::Child;
use tokio::sync::{mpsc, watch, Notify};

use crate::pty::{self, Master, PtyError};
use crate::reader::{Reader, READ_SIZE};
use crate::ring::{Ring, RingError};
use crate::viewer::{Viewer, ViewerState};

/// A shell on a fresh PTY, as a [`Spawner`] returns it. The terminal owns both from then on.
#[derive(Debug)]
pub struct PtyProcess {
    /// The PTY master; the child has the slave as its controlling terminal.
    pub master: OwnedFd,
    /// The shell (or the helper that runs it in a node and exits with it).
    pub child: Child,
}

/// Starts shells for a terminal: the first one and each replacement after an exit.
///
/// The shell must have the PTY slave as its controlling terminal (a session leader that opened
/// it, or `TIOCSCTTY`) and default signal dispositions: a SIGINT ignored by the server (as when
/// it was started in the background by a non-interactive shell) is inherited across exec, and
/// bash keeps it ignored for its jobs, so Ctrl-C would do nothing. `spawn` runs on tokio's
/// blocking pool (inside the runtime, so it may create tokio processes).
pub trait Spawner: Send + Sync + 'static {
    /// Starts a login shell on a new PTY of the given size.
    fn spawn(&self, size: WinSize) -> io::Result<PtyProcess>;
}

impl<S: Spawner> Spawner for Arc<S> {
    fn spawn(&self, size: WinSize) -> io::Result<PtyProcess> {
        (**self).spawn(size)
    }
}

/// A terminal window size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinSize {
    pub cols: u16,
    pub rows: u16,
}

impl WinSize {
    /// The largest accepted number of columns or rows.
    pub const MAX: u16 = 1000;

    /// Whether both dimensions are within `1..=1000`.
    pub fn is_valid(self) -> bool {
        (1..=Self::MAX).contains(&self.cols) && (1..=Self::MAX).contains(&self.rows)
    }
}

impl Default for WinSize {
    fn default() -> Self {
        Self { cols: 80, rows: 24 }
    }
}

/// Tunables of one terminal.
#[derive(Clone, Debug)]
pub struct TerminalOptions {
    /// Output kept for scrollback and resume, 1-4 MiB.
    pub ring_bytes: usize,
    /// Most output read from the PTY per second; over it the shell's writes block.
    pub read_bytes_per_sec: u64,
    /// Window size of the first shell, until a viewer sets one.
    pub size: WinSize,
    /// Least time between two shell starts, so a shell that dies at once does not spin.
    pub restart_interval: Duration,
    /// Input queued for the shell before writers wait (in 64 KiB pieces).
    pub input_queue_bytes: usize,
}

impl TerminalOptions {
    /// Smallest accepted ring.
    pub const MIN_RING_BYTES: usize = 1 << 20;
    /// Largest accepted ring.
    pub const MAX_RING_BYTES: usize = 4 << 20;
    /// Slowest accepted read rate (one full read per second).
    pub const MIN_READ_BYTES_PER_SEC: u64 = READ_SIZE as u64;

    fn validate(&self) -> Result<(), TerminalError> {
        if !(Self::MIN_RING_BYTES..=Self::MAX_RING_BYTES).contains(&self.ring_bytes) {
            return Err(TerminalError::RingSize(self.ring_bytes));
        }
        if self.read_bytes_per_sec < Self::MIN_READ_BYTES_PER_SEC {
            return Err(TerminalError::ReadRate(self.read_bytes_per_sec));
        }
        if !self.size.is_valid() {
            return Err(TerminalError::Size(self.size));
        }
        if self.input_queue_bytes < INPUT_PIECE {
            return Err(TerminalError::InputQueue(self.input_queue_bytes));
        }
        Ok(())
    }
}

impl Default for TerminalOptions {
    fn default() -> Self {
        Self {
            ring_bytes: crate::ring::DEFAULT_CAPACITY,
            read_bytes_per_sec: 64 << 20,
            size: WinSize::default(),
            restart_interval: Duration::from_secs(1),
            input_queue_bytes: 4 << 20,
        }
    }
}

/// Starting, feeding or resizing a terminal.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error(
        "ring size {0} bytes is outside {min}..={max}",
        min = TerminalOptions::MIN_RING_BYTES,
        max = TerminalOptions::MAX_RING_BYTES
    )]
    RingSize(usize),
    #[error(
        "read rate {0} bytes/s is below {min}",
        min = TerminalOptions::MIN_READ_BYTES_PER_SEC
    )]
    ReadRate(u64),
    #[error("input queue of {0} bytes is below {min}", min = INPUT_PIECE)]
    InputQueue(usize),
    #[error("window size {}x{} is outside 1..=1000 columns and rows", .0.cols, .0.rows)]
    Size(WinSize),
    #[error("start the shell: {0}")]
    Spawn(#[source] io::Error),
    #[error(transparent)]
    Pty(#[from] PtyError),
    #[error("the terminal is closed")]
    Closed,
    #[error("this viewer is read-only")]
    ReadOnly,
}

/// Input is queued in pieces of at most this size, so the queue is bounded in bytes.
const INPUT_PIECE: usize = 64 << 10;
/// How long a shell may take to exit after SIGHUP before it is killed.
const HANGUP_GRACE: Duration = Duration::from_millis(500);
/// How long to wait for the shell's exit status after its PTY hung up.
const EXIT_AFTER_HANGUP: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to start a shell after failures.
const MAX_SPAWN_BACKOFF: Duration = Duration::from_secs(30);
/// Restart events kept (each restart also writes a notice into the ring, so few matter).
const MAX_EVENTS: usize = 1024;

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
        self.shared.close("terminal dropped".to_owned());
    }
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("id", &self.handle.shared.id)
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
        let first = spawn_off(&spawner, opts.size)
            .await
            .map_err(TerminalError::Spawn)?;
        let (input_tx, input_rx) = mpsc::channel(opts.input_queue_bytes / INPUT_PIECE);
        let shared = Arc::new(Shared {
            id: uuid::Uuid::new_v4().simple().to_string(),
            state: Mutex::new(State {
                ring: Ring::new(opts.ring_bytes),
                events: Events::default(),
                size: opts.size,
                size_seq: 0,
                active: None,
                closed: None,
                restarts: 0,
            }),
            changes: watch::Sender::new(0),
            shell: watch::Sender::new(None),
            input: tokio::sync::Mutex::new(input_tx),
            close: Notify::new(),
            done: watch::Sender::new(false),
            viewers: AtomicUsize::new(0),
            next_viewer: AtomicU64::new(0),
            opts,
        });
        let span = tracing::info_span!("terminal", id = %shared.id);
        let supervisor = supervise(shared.clone(), spawner, first);
        tokio::spawn(tracing::Instrument::instrument(supervisor, span.clone()));
        let writer = write_input(shared.clone(), input_rx);
        tokio::spawn(tracing::Instrument::instrument(writer, span));
        Ok(Self {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// A random id of this terminal's byte stream. Offsets are only meaningful within one
    /// stream: a client that reconnects to a different id (the server restarted) must not
    /// resume by offset.
    pub fn id(&self) -> &str {
        &self.shared().id
    }

    /// A new viewer. Without `since` it replays the ring from its oldest byte; with `since` it
    /// resumes exactly there (an evicted offset yields [`Output::Skipped`] first; an offset
    /// ahead of the stream is reported by [`Viewer::resume_error`] and replays the ring).
    pub fn attach(&self, since: Option<u64>, readonly: bool) -> Viewer {
        let shared = self.shared();
        let id = shared.next_viewer.fetch_add(1, Ordering::Relaxed);
        let st = shared.state();
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
        let size_seq = st.size_seq;
        drop(st);
        Viewer::new(
            shared.clone(),
            Arc::new(ViewerState::new(id, readonly)),
            cursor,
            event_seq,
            size_seq,
            resume_error,
        )
    }

    /// Queues input for the shell, in order with every other writer; waits while the queue is
    /// full. Does not change which viewer is active.
    pub async fn write(&self, data: impl Into<Bytes>) -> Result<(), TerminalError> {
        self.shared().send_input(data.into()).await
    }

    /// The current window size of the PTY.
    pub fn size(&self) -> WinSize {
        self.shared().state().size
    }

    /// Offset of the next byte of output (the number of bytes produced so far).
    pub fn offset(&self) -> u64 {
        self.shared().state().ring.end()
    }

    /// Number of attached viewers.
    pub fn viewers(&self) -> usize {
        self.shared().viewers.load(Ordering::Relaxed)
    }

    /// How many times the shell was replaced after exiting.
    pub fn restarts(&self) -> u64 {
        self.shared().state().restarts
    }

    /// Whether [`Terminal::close`] was called (or the last handle dropped).
    pub fn is_closed(&self) -> bool {
        self.shared().state().closed.is_some()
    }

    /// Ends the terminal: every viewer gets [`Output::Closed`] with `reason`, and the shell is
    /// hung up, killed and reaped in the background. Later calls do nothing.
    pub fn close(&self, reason: impl Into<String>) {
        self.shared().close(reason.into());
    }

    /// Resolves once the terminal is closed and its last shell has been reaped.
    pub async fn closed(&self) {
        let mut done = self.shared().done.subscribe();
        // The sender lives in `Shared`, which `self` keeps alive.
        let _ = done.wait_for(|done| *done).await;
    }
}

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

/// State shared by the handle, the tasks and the viewers.
pub(crate) struct Shared {
    id: String,
    state: Mutex<State>,
    /// Bumped after every change viewers must see (output, events, size, close).
    pub(crate) changes: watch::Sender<u64>,
    /// The current shell, for the writer and for resizes; `None` between shells.
    shell: watch::Sender<Option<Arc<Shell>>>,
    /// The writer's queue; holding the lock keeps one message's pieces together.
    input: tokio::sync::Mutex<mpsc::Sender<Bytes>>,
    /// Wakes the supervisor to close.
    close: Notify,
    /// Set once the last shell has been reaped.
    done: watch::Sender<bool>,
    pub(crate) viewers: AtomicUsize,
    next_viewer: AtomicU64,
    opts: TerminalOptions,
}

pub(crate) struct State {
    pub(crate) ring: Ring,
    pub(crate) events: Events,
    pub(crate) size: WinSize,
    /// Bumped on every size change, so viewers notice one.
    pub(crate) size_seq: u64,
    /// The viewer whose size the PTY follows.
    active: Option<u64>,
    pub(crate) closed: Option<String>,
    restarts: u64,
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

/// One running shell.
struct Shell {
    /// Counts shells of this terminal, so the writer notices a replacement.
    generation: u64,
    master: Master,
}

impl Shared {
    /// The stream id (see [`Terminal::id`]).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the ring inconsistent in a way that
        // matters more than losing the terminal, so keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify_viewers(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn push_output(&self, chunk: Bytes) {
        self.state().ring.push(chunk);
        self.notify_viewers();
    }

    fn push_notice(&self, text: &str) {
        self.push_output(Bytes::from(format!("\r\n[{text}]\r\n")));
    }

    fn close(&self, reason: String) {
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

    fn is_closed(&self) -> bool {
        self.state().closed.is_some()
    }

    /// Queues `data` in pieces, none of another writer's in between.
    pub(crate) async fn send_input(&self, mut data: Bytes) -> Result<(), TerminalError> {
        let queue = self.input.lock().await;
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(INPUT_PIECE));
            queue.send(piece).await.map_err(|_| TerminalError::Closed)?;
        }
        Ok(())
    }

    /// Makes `viewer` the active one, applying its size if it has one.
    pub(crate) fn make_active(&self, viewer: &ViewerState) {
        let mut st = self.state();
        if st.active == Some(viewer.id()) {
            return;
        }
        st.active = Some(viewer.id());
        if let Some(size) = viewer.size() {
            let changed = self.apply_size(&mut st, size);
            drop(st);
            if changed {
                self.notify_viewers();
            }
        }
    }

    /// Records `size` as `viewer`'s and applies it (the viewer becomes the active one).
    pub(crate) fn resize_for(
        &self,
        viewer: &ViewerState,
        size: WinSize,
    ) -> Result<(), TerminalError> {
        if !size.is_valid() {
            return Err(TerminalError::Size(size));
        }
        viewer.set_size(size);
        let mut st = self.state();
        st.active = Some(viewer.id());
        let changed = self.apply_size(&mut st, size);
        drop(st);
        if changed {
            self.notify_viewers();
        }
        Ok(())
    }

    /// Sets the PTY size; returns whether it changed.
    fn apply_size(&self, st: &mut State, size: WinSize) -> bool {
        if st.size == size {
            return false;
        }
        st.size = size;
        st.size_seq += 1;
        if let Some(shell) = self.shell.borrow().as_ref() {
            if let Err(e) = shell.master.resize(size) {
                tracing::warn!(error = %e, "resize failed");
            }
        }
        true
    }
}

/// How a shell's run ended.
enum RunEnd {
    Closed,
    Exited(Option<ExitStatus>),
}

/// The supervisor task: runs shells one after another until the terminal is closed.
async fn supervise(shared: Arc<Shared>, spawner: Arc<dyn Spawner>, first: PtyProcess) {
    let mut next = Some(first);
    let mut generation = 0u64;
    while let Some(process) = next.take() {
        generation += 1;
        let started = Instant::now();
        let mut child = ChildGuard(process.child);
        let end = match Master::new(process.master) {
            Ok(master) => {
                let shell = Arc::new(Shell { generation, master });
                // The size may have changed while the shell was being started.
                let size = shared.state().size;
                if let Err(e) = shell.master.resize(size) {
                    tracing::warn!(error = %e, "resize failed");
                }
                shared.shell.send_replace(Some(shell.clone()));
                let end = run_shell(&shared, &shell, &mut child.0).await;
                shared.shell.send_replace(None);
                end
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot use the new shell's pty");
                shared.push_notice(&format!("cannot use the shell's terminal: {e}"));
                child.0.start_kill().ok();
                RunEnd::Exited(child.0.wait().await.ok())
            }
        };
        match end {
            RunEnd::Closed => {
                hang_up(&mut child.0).await;
                break;
            }
            RunEnd::Exited(status) => {
                let how =
                    status.map_or_else(|| "with unknown status".to_owned(), |s| s.to_string());
                tracing::info!(status = %how, "shell exited");
                shared.push_notice(&format!("shell exited ({how}); starting a new shell"));
            }
        }
        next = restart(&shared, &spawner, started).await;
    }
    shared.shell.send_replace(None);
    shared.done.send_replace(true);
}

/// Runs the spawner on the blocking pool: starting a shell may open files and fork, and for a
/// shell in a sandbox that can block for as long as the sandbox likes (a FUSE mount over its
/// `/dev`), which must never hold up an async worker.
async fn spawn_off(spawner: &Arc<dyn Spawner>, size: WinSize) -> io::Result<PtyProcess> {
    let spawner = spawner.clone();
    tokio::task::spawn_blocking(move || spawner.spawn(size))
        .await
        .map_err(io::Error::other)?
}

/// Starts the next shell, no sooner than `restart_interval` after the previous start and with
/// a growing wait after failures. `None` once the terminal is closed.
async fn restart(
    shared: &Shared,
    spawner: &Arc<dyn Spawner>,
    previous: Instant,
) -> Option<PtyProcess> {
    let mut not_before = previous + shared.opts.restart_interval;
    let mut backoff = shared.opts.restart_interval;
    loop {
        tokio::select! {
            biased;
            _ = shared.close.notified() => return None,
            _ = tokio::time::sleep_until(not_before.into()) => {}
        }
        if shared.is_closed() {
            return None;
        }
        let size = shared.state().size;
        match spawn_off(spawner, size).await {
            Ok(process) => {
                let mut st = shared.state();
                let offset = st.ring.end();
                let oldest = st.ring.start();
                st.events.push(offset, oldest);
                st.restarts += 1;
                drop(st);
                shared.notify_viewers();
                return Some(process);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a shell");
                shared.push_notice(&format!(
                    "cannot start a shell: {e}; retrying in {}s",
                    backoff.as_secs_f32().ceil()
                ));
                not_before = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_SPAWN_BACKOFF);
            }
        }
    }
}

/// Reads one shell's output until it exits or the terminal closes.
async fn run_shell(shared: &Arc<Shared>, shell: &Shell, child: &mut Child) -> RunEnd {
    let master = match shell.master.try_clone() {
        Ok(master) => master,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the shell's pty");
            shared.push_notice(&format!("cannot read the shell's terminal: {e}"));
            child.start_kill().ok();
            return RunEnd::Exited(child.wait().await.ok());
        }
    };
    let mut reader = Reader::new(shared.clone(), master, shared.opts.read_bytes_per_sec);
    tokio::select! {
        biased;
        _ = shared.close.notified() => RunEnd::Closed,
        status = child.wait() => {
            // Whatever it printed before exiting is still in the PTY.
            reader.drain();
            RunEnd::Exited(status.ok())
        }
        e = reader.run() => {
            if !pty::is_hangup(&e) {
                tracing::warn!(error = %e, "pty read failed");
            }
            // The slave side is closed: the shell is exiting (or gave up its terminal).
            match tokio::time::timeout(EXIT_AFTER_HANGUP, child.wait()).await {
                Ok(status) => RunEnd::Exited(status.ok()),
                Err(_) => {
                    child.start_kill().ok();
                    RunEnd::Exited(child.wait().await.ok())
                }
            }
        }
    }
}

/// Ends a shell at close: SIGHUP first (an interactive bash passes it on to its jobs), then
/// SIGKILL, then reap.
async fn hang_up(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        kill(Pid::from_raw(pid), Signal::SIGHUP).ok();
        if let Ok(status) = tokio::time::timeout(HANGUP_GRACE, child.wait()).await {
            tracing::debug!(?status, "shell ended on hangup");
            return;
        }
    }
    child.start_kill().ok();
    if let Err(e) = child.wait().await {
        tracing::warn!(error = %e, "reaping the shell failed");
    }
}

/// Kills the shell if the supervisor is dropped without closing (runtime shutdown).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Fails harmlessly when the child was already reaped.
        self.0.start_kill().ok();
    }
}

/// The writer task: input pieces in order, each written whole to the shell current when it is
/// taken (waiting for one between shells). The rest of a piece the shell could not take
/// before it exited is dropped rather than typed into its successor.
async fn write_input(shared: Arc<Shared>, mut input: mpsc::Receiver<Bytes>) {
    let mut shells = shared.shell.subscribe();
    loop {
        let data = tokio::select! {
            data = input.recv() => data,
            _ = wait_closed(&shared, &mut shells) => None,
        };
        let Some(mut data) = data else { return };
        let mut closing = shells.clone();
        let shell = tokio::select! {
            shell = shells.wait_for(|s| s.is_some()) => match shell {
                Ok(shell) => shell.clone(),
                Err(_) => return,
            },
            _ = wait_closed(&shared, &mut closing) => return,
        };
        let Some(shell) = shell else { return };
        while !data.is_empty() {
            tokio::select! {
                written = shell.master.write(&data) => match written {
                    Ok(n) => {
                        let _ = data.split_to(n);
                    }
                    Err(e) => {
                        if !pty::is_hangup(&e) {
                            tracing::warn!(error = %e, "pty write failed");
                        }
                        break;
                    }
                },
                _ = replaced(&mut shells, shell.generation) => break,
            }
        }
    }
}

/// Resolves when the terminal is closed (the supervisor clears the shell and is done).
async fn wait_closed(shared: &Shared, shells: &mut watch::Receiver<Option<Arc<Shell>>>) {
    loop {
        if shared.is_closed() && shells.borrow().is_none() {
            return;
        }
        if shells.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves when the shell of `generation` is no longer the current one.
async fn replaced(shells: &mut watch::Receiver<Option<Arc<Shell>>>, generation: u64) {
    let _ = shells
        .wait_for(|s| s.as_ref().map(|s| s.generation) != Some(generation))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_sizes_are_bounded() {
        assert!(WinSize { cols: 1, rows: 1 }.is_valid());
        assert!(WinSize {
            cols: 1000,
            rows: 1000
        }
        .is_valid());
        assert!(!WinSize { cols: 0, rows: 24 }.is_valid());
        assert!(!WinSize {
            cols: 80,
            rows: 1001
        }
        .is_valid());
    }

    #[test]
    fn options_are_validated() {
        let ok = TerminalOptions::default();
        assert!(ok.validate().is_ok());
        let bad = |f: fn(&mut TerminalOptions)| {
            let mut o = TerminalOptions::default();
            f(&mut o);
            o.validate().unwrap_err().to_string()
        };
        assert_eq!(
            bad(|o| o.ring_bytes = 5 << 20),
            "ring size 5242880 bytes is outside 1048576..=4194304"
        );
        assert_eq!(
            bad(|o| o.read_bytes_per_sec = 1000),
            "read rate 1000 bytes/s is below 65536"
        );
        assert_eq!(
            bad(|o| o.size = WinSize { cols: 0, rows: 5 }),
            "window size 0x5 is outside 1..=1000 columns and rows"
        );
        assert_eq!(
            bad(|o| o.input_queue_bytes = 10),
            "input queue of 10 bytes is below 65536"
        );
    }

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
