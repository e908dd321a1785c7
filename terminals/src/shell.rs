//! The shells of a terminal: where they come from, the task that runs them one after another,
//! and the task that types input into them.
//!
//! - The **supervisor** runs a shell from the [`Spawner`] and reads its PTY into the ring
//!   (through `reader.rs`, which paces itself during floods). When the shell exits it writes a
//!   notice into the stream, starts a new shell (at most one per `restart_interval`, backing
//!   off while starts fail) and records a restart event at the offset where the new shell's
//!   output begins; on close it hangs the shell up, kills it and reaps it.
//! - The **writer** takes input in order from the input queue (`input.rs`) and writes each
//!   piece whole to the current shell, as fast as the line discipline accepts it, so concurrent
//!   viewers' input is serialised and a large paste is never dropped.
//!
//! Reading is bounded per terminal by a token bucket (`read_bytes_per_sec`): over budget the
//! reader simply stops reading, the kernel's PTY buffer fills and the shell's writes block.
//! A flood (`yes`) thus costs at most that much server CPU, and Ctrl-C still works at once
//! because the line discipline turns it into SIGINT on input, without anybody reading.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use crate::pty::{self, Master};
use crate::reader::Reader;
use crate::shared::{Shared, Shell};
use crate::size::WinSize;

/// A boxed future of a [`ShellProcess`] method.
pub type ShellFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The process behind a shell's PTY, as the terminal's supervisor sees it: a child of ours
/// (`tokio::process::Child`), or a holder that keeps the shell and its PTY when the server
/// goes. Dropping it without [`ShellProcess::end`] (the server is stopping) leaves held shells
/// running for the next server; a child is killed if it was spawned with `kill_on_drop`.
pub trait ShellProcess: Send + 'static {
    /// Resolves once the shell has ended, with its status when known. Cancel-safe.
    fn wait(&mut self) -> ShellFuture<'_, Option<ExitStatus>>;
    /// Ends the shell for good (the terminal is closed): hangs it up, kills it after a grace
    /// period and reaps it.
    fn end(&mut self) -> ShellFuture<'_, ()>;
    /// The shell has ended and the terminal no longer needs this process (its successor runs,
    /// or the terminal is closed).
    fn release(&mut self) {}
}

impl ShellProcess for Child {
    fn wait(&mut self) -> ShellFuture<'_, Option<ExitStatus>> {
        Box::pin(async move { Child::wait(self).await.ok() })
    }

    fn end(&mut self) -> ShellFuture<'_, ()> {
        Box::pin(hang_up(self))
    }
}

/// A shell on a fresh PTY, as a [`Spawner`] returns it. The terminal owns both from then on.
pub struct PtyProcess {
    /// The PTY master; the shell has the slave as its controlling terminal.
    pub master: OwnedFd,
    /// The shell (or the helper that runs it in a node and exits with it).
    pub process: Box<dyn ShellProcess>,
}

impl PtyProcess {
    /// A shell that is a child of ours.
    pub fn child(master: OwnedFd, child: Child) -> PtyProcess {
        PtyProcess {
            master,
            process: Box::new(child),
        }
    }
}

impl std::fmt::Debug for PtyProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtyProcess")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// Starts shells for a terminal: the first one and each replacement after an exit.
///
/// The shell must have the PTY slave as its controlling terminal (a session leader that opened
/// it, or `TIOCSCTTY`) and default signal dispositions: a SIGINT ignored by the server (as when
/// it was started in the background by a non-interactive shell) is inherited across exec, and
/// bash keeps it ignored for its jobs, so Ctrl-C would do nothing. `spawn` runs on tokio's
/// blocking pool (inside the runtime, so it may create tokio processes).
///
/// `keep` is given when the terminal keeps its output for the next server
/// ([`TerminalOptions::keep_output`](crate::TerminalOptions::keep_output)): a descriptor that
/// whatever holds the shell must keep, and hand back with it (see [`Terminal::adopt`](crate::Terminal::adopt)).
pub trait Spawner: Send + Sync + 'static {
    /// Starts a login shell on a new PTY of the given size.
    fn spawn(&self, size: WinSize, keep: Option<BorrowedFd<'_>>) -> io::Result<PtyProcess>;
}

impl<S: Spawner> Spawner for Arc<S> {
    fn spawn(&self, size: WinSize, keep: Option<BorrowedFd<'_>>) -> io::Result<PtyProcess> {
        (**self).spawn(size, keep)
    }
}

/// How long a shell may take to exit after SIGHUP before it is killed.
const HANGUP_GRACE: Duration = Duration::from_millis(500);
/// How long to wait for the shell's exit status after its PTY hung up.
const EXIT_AFTER_HANGUP: Duration = Duration::from_secs(2);
/// Longest wait between two attempts to start a shell after failures.
const MAX_SPAWN_BACKOFF: Duration = Duration::from_secs(30);

/// How a shell's run ended.
enum RunEnd {
    Closed,
    Exited(Option<ExitStatus>),
}

/// Starts the supervisor with the `first` shell and the writer with the receiving side of the
/// input queue, both in the terminal's span. Call inside a tokio runtime.
pub(crate) fn start_tasks(
    shared: &Arc<Shared>,
    spawner: Arc<dyn Spawner>,
    first: PtyProcess,
    input: mpsc::Receiver<Bytes>,
) {
    let span = tracing::info_span!("terminal", id = %shared.id());
    let supervisor = supervise(shared.clone(), spawner, first);
    tokio::spawn(tracing::Instrument::instrument(supervisor, span.clone()));
    let writer = write_input(shared.clone(), input);
    tokio::spawn(tracing::Instrument::instrument(writer, span));
}

/// The supervisor task: runs shells one after another until the terminal is closed.
async fn supervise(shared: Arc<Shared>, spawner: Arc<dyn Spawner>, first: PtyProcess) {
    let mut next = Some(first);
    let mut generation = 0u64;
    while let Some(PtyProcess {
        master,
        mut process,
    }) = next.take()
    {
        generation += 1;
        let started = Instant::now();
        let end = match Master::new(master) {
            Ok(master) => {
                let shell = Arc::new(Shell { generation, master });
                shared.set_shell(Some(shell.clone()));
                let end = run_shell(&shared, &shell, process.as_mut()).await;
                shared.set_shell(None);
                end
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot use the new shell's pty");
                shared.push_notice(&format!("cannot use the shell's terminal: {e}"));
                process.end().await;
                RunEnd::Exited(None)
            }
        };
        match end {
            RunEnd::Closed => {
                process.end().await;
                break;
            }
            RunEnd::Exited(status) => {
                let how =
                    status.map_or_else(|| "with unknown status".to_owned(), |s| s.to_string());
                tracing::info!(status = %how, "shell exited");
                shared.push_notice(&format!("shell exited ({how}); starting a new shell"));
            }
        }
        // Released only once its successor runs: a holder keeps the output's copy until then.
        next = restart(&shared, &spawner, started).await;
        process.release();
    }
    shared.set_shell(None);
    shared.done.send_replace(true);
}

/// Runs the spawner on the blocking pool: starting a shell may open files and fork, and for a
/// shell in a sandbox that can block for as long as the sandbox likes (a FUSE mount over its
/// `/dev`), which must never hold up an async worker.
pub(crate) async fn spawn_off(
    spawner: &Arc<dyn Spawner>,
    size: WinSize,
    keep: Option<OwnedFd>,
) -> io::Result<PtyProcess> {
    let spawner = spawner.clone();
    tokio::task::spawn_blocking(move || spawner.spawn(size, keep.as_ref().map(|fd| fd.as_fd())))
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
        match spawn_off(spawner, shared.size(), shared.kept()).await {
            Ok(process) => {
                shared.push_restart();
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
async fn run_shell(shared: &Arc<Shared>, shell: &Shell, process: &mut dyn ShellProcess) -> RunEnd {
    let master = match shell.master.try_clone() {
        Ok(master) => master,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the shell's pty");
            shared.push_notice(&format!("cannot read the shell's terminal: {e}"));
            process.end().await;
            return RunEnd::Exited(None);
        }
    };
    let mut reader = Reader::new(shared.clone(), master, shared.opts.read_bytes_per_sec);
    tokio::select! {
        biased;
        _ = shared.close.notified() => RunEnd::Closed,
        status = process.wait() => {
            // Whatever it printed before exiting is still in the PTY.
            reader.drain();
            RunEnd::Exited(status)
        }
        e = reader.run() => {
            if !pty::is_hangup(&e) {
                tracing::warn!(error = %e, "pty read failed");
            }
            // The slave side is closed: the shell is exiting (or gave up its terminal).
            match tokio::time::timeout(EXIT_AFTER_HANGUP, process.wait()).await {
                Ok(status) => RunEnd::Exited(status),
                Err(_) => {
                    process.end().await;
                    RunEnd::Exited(None)
                }
            }
        }
    }
}

/// Ends a child shell at close: SIGHUP first (an interactive bash passes it on to its jobs),
/// then SIGKILL, then reap.
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
