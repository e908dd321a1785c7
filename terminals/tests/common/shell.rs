//! `HostShell`: a real bash on a real PTY on the host, for tests and the local benchmark.
//! Never for serving users: it is a shell on the host.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::Stdio;

use rustix::pty::{grantpt, ioctl_tiocgptpeer, openpt, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};
use terminals::{PtyProcess, Spawner, WinSize};

/// Starts `setsid -c bash --norc --noprofile -i` on a fresh PTY, in `dir`, with default signal
/// dispositions.
pub struct HostShell {
    /// Working and home directory of the shell.
    pub dir: PathBuf,
}

impl Spawner for HostShell {
    fn spawn(&self, size: WinSize, _keep: Option<BorrowedFd<'_>>) -> io::Result<PtyProcess> {
        // Both ends close-on-exec from the start (unlike openpty(3)): tests start shells on
        // several threads at once, and a master inherited by another test's bash would keep
        // this PTY from hanging up when its own shell is gone.
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = openpt(flags)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let slave = ioctl_tiocgptpeer(&master, flags)?;
        tcsetwinsize(
            &slave,
            Winsize {
                ws_row: size.rows,
                ws_col: size.cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )?;
        // `env --default-signal`: a signal this process ignores (SIGINT and SIGQUIT, when it
        // was started in the background by a non-interactive shell) would stay ignored across
        // exec, and bash keeps signals ignored on entry ignored for its jobs: Ctrl-C would do
        // nothing. `setsid -c`: the slave becomes the controlling terminal (job control, ^C).
        let mut cmd = tokio::process::Command::new("env");
        cmd.args(["--default-signal", "setsid", "-c"])
            .args(["bash", "--norc", "--noprofile", "-i"])
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave))
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("TERM", "xterm-256color")
            .env("PS1", "$ ")
            .env("LANG", "C.UTF-8")
            .env("HOME", &self.dir)
            .env("HISTFILE", "")
            .current_dir(&self.dir)
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        Ok(PtyProcess::child(master, child))
    }
}
