//! Shells that outlive the server: the holder, and how a server reaches one.
//!
//! A terminal's shell is started by the exec helper in hold mode (`__exec --hold ID`). After
//! forking the shell, the helper stays in the node's cgroup as the shell's **holder**: it keeps
//! the PTY master and a descriptor the terminal asked it to keep (its output ring's copy), and
//! listens on `<node dir>/shells/ID.sock`, where the holder's ID is the terminal's name, a dot
//! and a random suffix: a holder that is still exiting never shares a path with its
//! successor, and each removes only its own socket. The server talks to it over one connection at a
//! time; the hot path (output and keystrokes) never passes through it: the server reads and
//! writes the master directly.
//!
//! - On every connection the holder sends a hello record with the master and the kept
//!   descriptor (`SCM_RIGHTS`) and whether the shell has ended; when the shell ends it sends an
//!   exit record with its wait status.
//! - The server sends one byte: [`HANG_UP`] (the terminal is closed: SIGHUP, SIGKILL after
//!   [`HANGUP_GRACE`], report, exit) or [`RELEASE`] (the shell ended and its successor runs:
//!   exit). End of file means the server went away (a crash, a restart, an upgrade): the
//!   holder keeps everything and waits for the next one. Until a server reads the master
//!   again, the shell's output waits in the PTY and the shell blocks when it is full.
//!
//! The holder is in the node's cgroups and user namespace but not in its pid namespace, so no
//! process of the node can see it, signal it or take its descriptors; it dies with the node's
//! cgroup when the node is destroyed, and the shell dies with it (`PDEATHSIG`). On exit it
//! removes its socket, through a descriptor of the directory taken before entering the node.
//! The socket path is reached through `/proc/self/fd/N/NAME`, which keeps it far below the
//! 108-byte limit of socket addresses whatever the state directory's length.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Where the helper finds what it holds: the listening socket, the PTY master, the kept
/// descriptor and the socket's directory (to remove the socket on exit).
pub(crate) const LISTENER_FD: RawFd = 3;
pub(crate) const MASTER_FD: RawFd = 4;
pub(crate) const KEEP_FD: RawFd = 5;
pub(crate) const DIR_FD: RawFd = 6;

/// The server closes the terminal: end the shell and exit.
pub const HANG_UP: u8 = b'H';
/// The shell ended and the server no longer needs the holder: exit.
pub const RELEASE: u8 = b'R';
/// How long a shell may take to exit after SIGHUP before the holder kills it.
pub const HANGUP_GRACE: Duration = Duration::from_millis(500);

const MAGIC: &[u8; 4] = b"SPH1";
/// Size of every record the holder sends.
pub const RECORD: usize = 16;
const HELLO: u8 = b'S';
const EXIT: u8 = b'X';
/// Longest a server waits for a holder's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// A new holder's id for terminal `terminal` (names have no dots). The suffix only needs to
/// differ from the terminal's other holders': std's randomly keyed hasher gives one.
pub(crate) fn new_id(terminal: &str) -> String {
    use std::hash::BuildHasher;
    let suffix = std::collections::hash_map::RandomState::new().hash_one(terminal) as u32;
    format!("{terminal}.{suffix:08x}")
}

/// The terminal a holder's id names.
pub fn terminal_of(id: &str) -> &str {
    id.split('.').next().unwrap_or(id)
}

/// The file name of a holder's socket in a node's `shells` directory.
fn socket_name(id: &str) -> String {
    format!("{id}.sock")
}

/// The ids of the holders whose sockets are in `dir`, sorted.
pub(crate) fn ids_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".sock").map(str::to_owned)
        })
        .collect();
    ids.sort();
    ids
}

/// Removes the socket of holder `id`, whose holder is gone.
pub(crate) fn remove(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(dir.join(socket_name(id)));
}

/// A record from a holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Sent on connecting; `ended` is the shell's wait status if it has ended.
    Hello { ended: Option<i32> },
    /// The shell ended with this wait status.
    Exit { status: i32 },
}

impl Record {
    fn encode(self) -> [u8; RECORD] {
        let mut r = [0u8; RECORD];
        r[..4].copy_from_slice(MAGIC);
        let (kind, ended, status) = match self {
            Record::Hello { ended } => (HELLO, ended.is_some(), ended.unwrap_or(0)),
            Record::Exit { status } => (EXIT, true, status),
        };
        r[4] = kind;
        r[5] = ended as u8;
        r[8..12].copy_from_slice(&status.to_le_bytes());
        r
    }

    /// Decodes a record, or says what is wrong with it.
    pub fn decode(r: &[u8; RECORD]) -> Result<Record, String> {
        if &r[..4] != MAGIC {
            return Err("not a holder's record".into());
        }
        let status = i32::from_le_bytes(r[8..12].try_into().expect("4 bytes"));
        match (r[4], r[5]) {
            (HELLO, 0) => Ok(Record::Hello { ended: None }),
            (HELLO, 1) => Ok(Record::Hello {
                ended: Some(status),
            }),
            (EXIT, 1) => Ok(Record::Exit { status }),
            (kind, _) => Err(format!("unknown holder record {kind:#x}")),
        }
    }
}

/// What a holder hands a server that connects: the shell's PTY master, the descriptor kept
/// for the terminal, whether the shell has ended, and the connection to talk to the holder.
#[derive(Debug)]
pub struct Held {
    pub master: OwnedFd,
    pub kept: OwnedFd,
    /// The shell's wait status, if it ended while no server was there.
    pub ended: Option<i32>,
    pub conn: UnixStream,
}

/// The path that reaches `name` in the directory open as `dir`, however long its real path.
fn short_path(dir: BorrowedFd<'_>, name: &str) -> String {
    format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{open, Mode, OFlags};
    Ok(open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Makes the socket directory (root only) and a listening socket for holder `id` in it.
/// Returns the listener and a descriptor of the directory, both for the helper.
pub(crate) fn listen(dir: &Path, id: &str) -> io::Result<(UnixListener, OwnedFd)> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let dirfd = open_dir(dir)?;
    let path = short_path(dirfd.as_fd(), &socket_name(id));
    Ok((UnixListener::bind(&path)?, dirfd))
}

/// Connects to holder `id` in `dir`, whose hello (with descriptors the caller already has)
/// comes first on the connection.
pub(crate) fn connect_new(dir: &Path, id: &str) -> io::Result<UnixStream> {
    let dirfd = open_dir(dir)?;
    UnixStream::connect(short_path(dirfd.as_fd(), &socket_name(id)))
}

/// Connects to holder `id` in `dir` and takes what it holds.
pub(crate) fn connect(dir: &Path, id: &str) -> io::Result<Held> {
    let conn = connect_new(dir, id)?;
    conn.set_read_timeout(Some(HELLO_TIMEOUT))?;
    let mut record = [0u8; RECORD];
    let (got, fds) = crate::sys::recv_with_fds(conn.as_raw_fd(), &mut record)?;
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    if got != RECORD {
        return Err(bad(format!("the holder sent {got} bytes, not a hello")));
    }
    let ended = match Record::decode(&record).map_err(bad)? {
        Record::Hello { ended } => ended,
        Record::Exit { .. } => return Err(bad("the holder sent no hello".into())),
    };
    let [master, kept]: [OwnedFd; 2] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
        bad(format!(
            "the holder passed {} descriptors, not 2",
            fds.len()
        ))
    })?;
    conn.set_read_timeout(None)?;
    Ok(Held {
        master,
        kept,
        ended,
        conn,
    })
}

/// What the helper holds, taken from its inherited descriptors.
pub(crate) struct HeldFds {
    pub listener: UnixListener,
    pub master: OwnedFd,
    pub keep: OwnedFd,
    pub dir: OwnedFd,
    /// The holder's id (its socket's name).
    pub id: String,
}

impl HeldFds {
    /// Takes the descriptors the runtime passed at [`LISTENER_FD`]..=[`DIR_FD`] and marks them
    /// close-on-exec, so the shell does not inherit them.
    pub(crate) fn take(id: String) -> Result<HeldFds, String> {
        let [listener, master, keep, dir] =
            crate::sys::take_inherited_fds([LISTENER_FD, MASTER_FD, KEEP_FD, DIR_FD])
                .map_err(|e| format!("take the held descriptors: {e}"))?;
        for fd in [&listener, &master, &keep, &dir] {
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
                .map_err(|e| format!("mark a held descriptor close-on-exec: {e}"))?;
        }
        Ok(HeldFds {
            listener: UnixListener::from(listener),
            master,
            keep,
            dir,
            id,
        })
    }
}

/// The holder's loop, in the helper after it forked `shell`: serves servers one at a time,
/// forwards the signals in `forwarded` to the shell, and exits when a server releases it or
/// hangs the shell up. Never returns.
pub(crate) fn hold(shell: Pid, forwarded: SigSet, fds: HeldFds) -> ! {
    let mut holder = Holder {
        shell,
        fds,
        conn: None,
        ended: None,
        hang_up_by: None,
    };
    let code = match holder.run(forwarded) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sandpit holder: {e}");
            1
        }
    };
    let _ = rustix::fs::unlinkat(
        &holder.fds.dir,
        socket_name(&holder.fds.id),
        rustix::fs::AtFlags::empty(),
    );
    if holder.ended.is_none() {
        let _ = kill(shell, Signal::SIGKILL);
    }
    std::process::exit(code)
}

struct Holder {
    shell: Pid,
    fds: HeldFds,
    conn: Option<UnixStream>,
    /// The shell's wait status once it ended.
    ended: Option<i32>,
    /// Set by a hang-up: when to kill the shell if it is still running.
    hang_up_by: Option<Instant>,
}

impl Holder {
    /// Returns when the holder is done (released, or the shell ended after a hang-up).
    fn run(&mut self, forwarded: SigSet) -> Result<(), String> {
        let signals = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        // The shell may have ended before the signalfd existed.
        self.reap()?;
        loop {
            if self.ended.is_some() && self.hang_up_by.is_some() {
                return Ok(());
            }
            let timeout = match self.hang_up_by {
                Some(by) => {
                    let left = by.saturating_duration_since(Instant::now());
                    PollTimeout::from(left.as_millis().min(60_000) as u16)
                }
                None => PollTimeout::NONE,
            };
            let (sig_ready, other_ready) = {
                let mut polled = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
                match &self.conn {
                    Some(conn) => polled.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN)),
                    None => polled.push(PollFd::new(self.fds.listener.as_fd(), PollFlags::POLLIN)),
                }
                match poll(&mut polled, timeout) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(format!("poll: {e}")),
                    Ok(_) => {}
                }
                let ready = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
                (ready(&polled[0]), ready(&polled[1]))
            };
            if sig_ready {
                if let Ok(Some(info)) = signals.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGCHLD) => self.reap()?,
                        Ok(sig) => {
                            let _ = kill(self.shell, sig);
                        }
                        Err(_) => {}
                    }
                }
            }
            if other_ready {
                match self.conn.is_some() {
                    true => {
                        if self.serve_request()? {
                            return Ok(());
                        }
                    }
                    false => self.accept(),
                }
            }
            if self.ended.is_none() && self.hang_up_by.is_some_and(|by| Instant::now() >= by) {
                let _ = kill(self.shell, Signal::SIGKILL);
            }
        }
    }

    /// Collects the shell's status if it ended, and tells the server.
    fn reap(&mut self) -> Result<(), String> {
        if self.ended.is_some() {
            return Ok(());
        }
        let status = match waitpid(self.shell, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => code << 8,
            Ok(WaitStatus::Signaled(_, sig, core)) => sig as i32 | if core { 0x80 } else { 0 },
            Ok(_) => return Ok(()),
            Err(e) => return Err(format!("wait for the shell: {e}")),
        };
        self.ended = Some(status);
        self.send(Record::Exit { status }, false);
        Ok(())
    }

    fn accept(&mut self) {
        if let Ok((conn, _)) = self.fds.listener.accept() {
            self.conn = Some(conn);
            self.send(Record::Hello { ended: self.ended }, true);
        }
    }

    /// Handles what the server sent; true when the holder is done.
    fn serve_request(&mut self) -> Result<bool, String> {
        let mut byte = [0u8; 1];
        let n = match self.conn.as_ref().map(|c| rustix::io::read(c, &mut byte)) {
            Some(Ok(n)) => n,
            Some(Err(rustix::io::Errno::INTR)) | None => return Ok(false),
            Some(Err(_)) => 0,
        };
        if n == 0 {
            // The server went away: keep everything for the next one.
            self.conn = None;
            return Ok(false);
        }
        match byte[0] {
            RELEASE if self.ended.is_some() => Ok(true),
            HANG_UP if self.ended.is_some() => Ok(true),
            HANG_UP => {
                let _ = kill(self.shell, Signal::SIGHUP);
                self.hang_up_by = Some(Instant::now() + HANGUP_GRACE);
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Sends `record` (with the held descriptors if `with_fds`); a server that cannot take it
    /// is dropped, and the next one hears the same.
    fn send(&mut self, record: Record, with_fds: bool) {
        let Some(conn) = &self.conn else { return };
        let bytes = record.encode();
        let iov = [IoSlice::new(&bytes)];
        let fds = [self.fds.master.as_raw_fd(), self.fds.keep.as_raw_fd()];
        let cmsgs = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if with_fds { &cmsgs } else { &[] };
        let sent = sendmsg::<()>(conn.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None);
        if sent != Ok(RECORD) {
            self.conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for r in [
            Record::Hello { ended: None },
            Record::Hello {
                ended: Some(0x0100),
            },
            Record::Exit { status: 9 },
        ] {
            assert_eq!(Record::decode(&r.encode()), Ok(r));
        }
        let mut junk = Record::Exit { status: 0 }.encode();
        junk[4] = b'?';
        assert!(Record::decode(&junk).is_err());
        assert!(Record::decode(&[0u8; RECORD]).is_err());
    }

    #[test]
    fn a_long_directory_is_reached_through_its_descriptor() {
        let dir = crate::testdir::TempDir::new("hold-long");
        let long = dir.0.join("x".repeat(100)).join("shells");
        let id = new_id("main");
        assert_eq!(terminal_of(&id), "main");
        let (listener, _dirfd) = listen(&long, &id).unwrap();
        assert_eq!(ids_in(&long), vec![id.clone()]);
        let conn = connect_new(&long, &id).unwrap();
        let (_accepted, _) = listener.accept().unwrap();
        drop(conn);
        remove(&long, &id);
        assert!(ids_in(&long).is_empty());
    }
}
