//! A shell kept by a holder (`sandbox::hold`), as a terminal's supervisor drives it: the
//! connection to the holder tells when the shell ended, takes the hang-up when the terminal
//! closes, and the release once the terminal no longer needs it. Dropping it closes the
//! connection, which the holder takes as "the server went": the shell keeps running.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use sandbox::hold::{Record, HANGUP_GRACE, HANG_UP, RECORD, RELEASE};
use terminals::{ShellFuture, ShellProcess};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::process::Child;

/// How long past the hang-up grace a holder may take to report the shell's end.
const REPORT_SLACK: Duration = Duration::from_secs(2);

pub struct HeldShell {
    conn: UnixStream,
    /// The helper, when this server started it (to reap it, and for its status when it failed
    /// before holding anything).
    child: Option<Child>,
    /// Set once the shell's end is known: its status, if the holder could say.
    ended: Option<Option<ExitStatus>>,
    /// A record being read (cancel-safe across awaits).
    buf: [u8; RECORD],
    filled: usize,
}

impl HeldShell {
    /// Drives the holder at the other end of `conn`. `ended` is what its hello said, when it
    /// was already read (a shell taken over from a previous server).
    pub fn new(
        conn: std::os::unix::net::UnixStream,
        child: Option<Child>,
        ended: Option<i32>,
    ) -> io::Result<HeldShell> {
        conn.set_nonblocking(true)?;
        Ok(HeldShell {
            conn: UnixStream::from_std(conn)?,
            child,
            ended: ended.map(|s| Some(ExitStatus::from_raw(s))),
            buf: [0; RECORD],
            filled: 0,
        })
    }

    /// The next record, or None once the holder is gone (or sent nonsense).
    async fn next_record(&mut self) -> Option<Record> {
        while self.filled < RECORD {
            if self.conn.readable().await.is_err() {
                return None;
            }
            match self.conn.try_read(&mut self.buf[self.filled..]) {
                Ok(0) => return None,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        self.filled = 0;
        match Record::decode(&self.buf) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "a shell's holder");
                None
            }
        }
    }

    async fn wait_ended(&mut self) -> Option<ExitStatus> {
        while self.ended.is_none() {
            match self.next_record().await {
                Some(Record::Hello { ended: None }) => {}
                Some(Record::Hello { ended: Some(s) }) | Some(Record::Exit { status: s }) => {
                    self.ended = Some(Some(ExitStatus::from_raw(s)));
                }
                None => {
                    // The holder is gone without a word: the helper's own status says why.
                    let status = match &mut self.child {
                        Some(child) => child.wait().await.ok(),
                        None => None,
                    };
                    self.ended = Some(status);
                }
            }
        }
        self.ended.flatten()
    }
}

impl ShellProcess for HeldShell {
    fn wait(&mut self) -> ShellFuture<'_, Option<ExitStatus>> {
        Box::pin(self.wait_ended())
    }

    fn end(&mut self) -> ShellFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.conn.write_all(&[HANG_UP]).await;
            let reported = tokio::time::timeout(HANGUP_GRACE + REPORT_SLACK, self.wait_ended());
            if reported.await.is_err() {
                tracing::warn!("a shell's holder did not report the hang-up");
            }
            if let Some(child) = &mut self.child {
                if tokio::time::timeout(REPORT_SLACK, child.wait())
                    .await
                    .is_err()
                {
                    child.start_kill().ok();
                    let _ = child.wait().await;
                }
            }
        })
    }

    fn release(&mut self) {
        // One byte on an idle socket never blocks; a holder already gone needs no release.
        let _ = self.conn.try_write(&[RELEASE]);
    }
}
