//! Taking a terminal over (`Terminal::adopt`) from what a previous server left: a shell whose
//! kept output cannot be read is not served, and it is ended rather than left running.

use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::pty::{openpt, OpenptFlags};
use terminals::{
    PtyProcess, ShellFuture, ShellProcess, Spawner, Terminal, TerminalError, TerminalOptions,
    WinSize,
};

/// A process that, like a held shell, keeps running when its handle is dropped; `end` kills it.
struct Held(std::process::Child);

impl ShellProcess for Held {
    fn wait(&mut self) -> ShellFuture<'_, Option<ExitStatus>> {
        Box::pin(std::future::pending())
    }

    fn end(&mut self) -> ShellFuture<'_, ()> {
        let _ = self.0.kill();
        let _ = self.0.wait();
        Box::pin(async {})
    }
}

struct NoShells;

impl Spawner for NoShells {
    fn spawn(
        &self,
        _: WinSize,
        _: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> std::io::Result<PtyProcess> {
        Err(std::io::Error::other("no new shells in this test"))
    }
}

#[tokio::test]
async fn a_shell_whose_kept_output_is_junk_is_ended() {
    let child = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = child.id();
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    let shell = PtyProcess {
        master,
        process: Box::new(Held(child)),
    };
    let junk: OwnedFd = tempfile::tempfile().unwrap().into();
    let err = Terminal::adopt(NoShells, TerminalOptions::default(), shell, junk).unwrap_err();
    assert!(matches!(err, TerminalError::Restore(_)), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(
            Instant::now() < deadline,
            "the shell {pid} was left running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
