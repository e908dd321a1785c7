//! The master side of a pseudo-terminal, as the terminal drives it.
//!
//! A PTY is a pair of character devices: the shell reads and writes the slave (its stdin, stdout
//! and stderr); we read what it printed from the master and write keystrokes into the master.
//! The kernel's line discipline sits in between: it echoes input, turns `\n` into `\r\n` on
//! output (`onlcr`), and turns Ctrl-C into SIGINT for the foreground process group (`isig`) the
//! moment the byte is written, whether or not anybody reads the output. That last point is what
//! keeps Ctrl-C responsive while we throttle a flood by not reading.
//!
//! The caller allocates the PTY (inside a node's own devpts for nodes) and hands us the master
//! as an [`OwnedFd`]; here it becomes non-blocking and registered with tokio's reactor for
//! writing (the reader in `reader.rs` watches its own descriptor for reading). When every slave
//! descriptor is closed (the shell and its children exited), reads fail with `EIO` once the
//! buffered output has been read.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use rustix::termios::{tcsetwinsize, Winsize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::size::WinSize;

/// Bytes asked of the kernel per read: far more than a PTY hands out at once (about 4 KiB),
/// so one read takes everything that is buffered.
pub(crate) const READ_SIZE: usize = 64 << 10;

/// Preparing or driving a PTY master.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("make the pty master non-blocking: {0}")]
    NonBlocking(#[source] io::Error),
    #[error("register the pty master with the reactor: {0}")]
    Register(#[source] io::Error),
    #[error("set the pty window size to {cols}x{rows}: {source}")]
    Resize {
        cols: u16,
        rows: u16,
        #[source]
        source: io::Error,
    },
}

/// A PTY master in non-blocking mode, written to from tasks.
#[derive(Debug)]
pub(crate) struct Master {
    fd: AsyncFd<OwnedFd>,
}

impl Master {
    /// Takes ownership of `fd`. Must be called inside a tokio runtime.
    pub(crate) fn new(fd: OwnedFd) -> Result<Self, PtyError> {
        let flags = fcntl_getfl(&fd).map_err(|e| PtyError::NonBlocking(e.into()))?;
        fcntl_setfl(&fd, flags | OFlags::NONBLOCK).map_err(|e| PtyError::NonBlocking(e.into()))?;
        let fd = register(fd, Interest::WRITABLE).map_err(PtyError::Register)?;
        Ok(Self { fd })
    }

    /// Sets the window size; the kernel sends SIGWINCH to the shell's foreground job.
    pub(crate) fn resize(&self, size: WinSize) -> Result<(), PtyError> {
        let winsize = Winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(self.fd.get_ref(), winsize).map_err(|e| PtyError::Resize {
            cols: size.cols,
            rows: size.rows,
            source: e.into(),
        })
    }

    /// Another descriptor of the master, for the reader (it watches its own descriptor for
    /// reading, and only while output trickles in).
    pub(crate) fn try_clone(&self) -> io::Result<OwnedFd> {
        self.fd.get_ref().try_clone()
    }

    /// Writes some of `data` once the line discipline has room; returns how much it took.
    pub(crate) async fn write(&self, data: &[u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::WRITABLE, |fd| {
                rustix::io::write(fd, data).map_err(io::Error::from)
            })
            .await
    }
}

/// Registers `fd` with the reactor for `interest`.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // tokio 1.54 deprecates the safe constructor because an arbitrary `AsRawFd` type may
    // close or swap its descriptor while registered; an `OwnedFd` owned by the `AsyncFd`
    // cannot, which is exactly the contract of the `unsafe` replacement. Keeping the safe
    // call keeps this crate free of `unsafe`.
    #[allow(deprecated)]
    AsyncFd::with_interest(fd, interest)
}

/// One non-blocking read; `WouldBlock` when nothing is buffered.
pub(crate) fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Whether a read or write error means the slave side is gone (the shell exited).
pub(crate) fn is_hangup(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
        || e.kind() == io::ErrorKind::UnexpectedEof
}
