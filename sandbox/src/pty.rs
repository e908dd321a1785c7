//! Terminals inside a node: a PTY pair from the node's own devpts instance.
//!
//! Every node mounts a private devpts (`newinstance`) on `/dev/pts`, so a shell's terminal has
//! to come from that instance: only then does `tty` inside print `/dev/pts/N`, is the slave
//! owned by the node's `root:tty`, and does nothing of the host's `/dev/pts` show through.
//!
//! The host opens the instance's multiplexer through `/proc/<init>/root/dev/pts/ptmx`, not
//! through the `/dev/ptmx` symlink, and resolves the directory inside the node ([`NodeRoot`]:
//! the node's root may plant symlinks on that path). The directory must be a devpts filesystem: node root may mount anything on `/dev/pts`,
//! and a rootful node can even make device nodes, which host root must never open (opening a
//! watchdog device arms it). Inside a devpts, `ptmx` is always the multiplexer: nothing else
//! can be created there. The slave comes from the master with `TIOCGPTPEER` (no path lookup),
//! and is given to the node's root and `tty` group, as `/dev/pts` inside expects
//! (`mode=0620,gid=5`; a PTY opened by host root would otherwise belong to an unmapped uid).

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{fchown, fstatfs, openat2, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::pty::{ioctl_tiocgptpeer, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};

use crate::node_root::NodeRoot;

/// `DEVPTS_SUPER_MAGIC` from `linux/magic.h`.
const DEVPTS_SUPER_MAGIC: u64 = 0x1cd1;
/// The `tty` group of Debian (and of every base image), relative to the node's root group.
const TTY_GID: u32 = 5;

/// Allocating a PTY in a node.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("open {path}: {source}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a devpts filesystem (the node mounted something else there)")]
    NotDevpts { path: PathBuf },
    #[error("open {path}: {source}")]
    OpenPtmx {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unlock the pty: {0}")]
    Unlock(#[source] io::Error),
    #[error("open the pty slave (TIOCGPTPEER): {0}")]
    Peer(#[source] io::Error),
    #[error("give the pty slave to uid {uid}, gid {gid}: {source}")]
    Chown {
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("set the pty window size to {cols}x{rows}: {source}")]
    Resize {
        cols: u16,
        rows: u16,
        #[source]
        source: io::Error,
    },
}

/// Both ends of a PTY allocated in a node's devpts. Close-on-exec; pass the slave on
/// explicitly (as a shell's stdin, stdout and stderr).
#[derive(Debug)]
pub struct NodePty {
    /// The side the host reads output from and writes input to.
    pub master: OwnedFd,
    /// The side a process in the node uses as its terminal (`/dev/pts/N` inside).
    pub slave: OwnedFd,
}

impl NodePty {
    /// Opens a new PTY in the devpts mounted at `/dev/pts` of the node and gives the slave to
    /// the node's root user and `tty` group, `root_id` being the host id of the node's root
    /// (0 for rootful nodes).
    pub(crate) fn open(node_root: &NodeRoot, root_id: u32) -> Result<NodePty, PtyError> {
        let pts_path = node_root.display_path("dev/pts");
        // 1. The directory, resolved inside the node. O_PATH: a handle, nothing is opened yet.
        let pts = node_root
            .open("dev/pts", OFlags::PATH | OFlags::DIRECTORY)
            .map_err(|source| PtyError::OpenDir {
                path: pts_path.clone(),
                source,
            })?;
        // 2. It must be a devpts, whose `ptmx` can be nothing but the multiplexer.
        let fs = fstatfs(&pts).map_err(|e| PtyError::OpenDir {
            path: pts_path.clone(),
            source: e.into(),
        })?;
        if fs.f_type as u64 != DEVPTS_SUPER_MAGIC {
            return Err(PtyError::NotDevpts { path: pts_path });
        }
        // 3. The master. NOCTTY: it must never become the server's controlling terminal.
        let ptmx_path = pts_path.join("ptmx");
        let master = openat2(
            &pts,
            "ptmx",
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| PtyError::OpenPtmx {
            path: ptmx_path,
            source: e.into(),
        })?;
        // 4. The slave, from the master itself.
        unlockpt(&master).map_err(|e| PtyError::Unlock(e.into()))?;
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let slave = ioctl_tiocgptpeer(&master, flags).map_err(|e| PtyError::Peer(e.into()))?;
        // 5. Owned by the node's root:tty, as login would leave it.
        let (uid, gid) = (root_id, root_id + TTY_GID);
        fchown(&slave, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| {
            PtyError::Chown {
                uid,
                gid,
                source: e.into(),
            }
        })?;
        Ok(NodePty { master, slave })
    }

    /// Sets the window size (before the shell starts, so it reads the right one at once).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<(), PtyError> {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&self.master, size).map_err(|e| PtyError::Resize {
            cols,
            rows,
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root and a devpts mounted from a fresh instance; the host's own `/dev/pts` is
    /// one, so a "node root" of `/` exercises every step but the ownership inside a node.
    #[test]
    #[ignore = "needs root"]
    fn opens_a_pty_under_a_root() {
        let pty = NodePty::open(&NodeRoot::at(std::path::Path::new("/")), 0).unwrap();
        pty.resize(100, 30).unwrap();
        let st = rustix::fs::fstat(&pty.slave).unwrap();
        assert_eq!((st.st_uid, st.st_gid), (0, TTY_GID));
        let size = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (100, 30));
    }

    #[test]
    fn refuses_a_directory_that_is_not_devpts() {
        let dir = crate::testdir::TempDir::new("pty-not-devpts");
        std::fs::create_dir_all(dir.0.join("dev/pts")).unwrap();
        std::fs::write(dir.0.join("dev/pts/ptmx"), "").unwrap();
        let err = NodePty::open(&NodeRoot::at(&dir.0), 0).unwrap_err();
        assert!(matches!(err, PtyError::NotDevpts { .. }), "{err}");
    }

    #[test]
    fn symlinks_resolve_inside_the_node_root() {
        // A node's `/dev/pts` pointing at "/dev/pts" must not reach the host's devpts.
        let dir = crate::testdir::TempDir::new("pty-symlink");
        std::fs::create_dir_all(dir.0.join("dev")).unwrap();
        std::os::unix::fs::symlink("/dev/pts", dir.0.join("dev/pts")).unwrap();
        let err = NodePty::open(&NodeRoot::at(&dir.0), 0).unwrap_err();
        assert!(matches!(err, PtyError::OpenDir { .. }), "{err}");
    }
}
