//! A node's file system as the host reaches it: below `/proc/<init>/root`, resolved as if
//! chrooted into the node.
//!
//! The node's root owns every directory in its tree and may plant symlinks anywhere; an
//! absolute one, followed from the host, would lead into the host's own tree (say `/run` ->
//! `/`). So every lookup in a node goes through [`NodeRoot::open`]: `openat2` with
//! `RESOLVE_IN_ROOT` (absolute symlinks and `..` stay inside the node's root) and
//! `RESOLVE_NO_MAGICLINKS` (no `/proc/<pid>/fd/...` jumps), relative to the magic link
//! `/proc/<init>/root`, which is followed once, on purpose. Since a pid may be reused, the
//! init's identity is checked after its root is open: the handle is then known to be the
//! node's.
//!
//! A lookup may block as long as the node likes (a FUSE mount of its own on the path): async
//! callers run it on the blocking pool.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::fs::{open, openat2, Mode, OFlags, ResolveFlags};

use crate::process::ProcessId;

/// The root directory of a running node.
#[derive(Debug, Clone)]
pub(crate) struct NodeRoot {
    /// `/proc/<init>/root`, or any directory in tests.
    root: PathBuf,
    /// Whose root it is; checked after each open of `root`.
    init: Option<ProcessId>,
}

impl NodeRoot {
    /// The root of the node whose PID 1 is `init`.
    pub fn of_init(init: ProcessId) -> NodeRoot {
        NodeRoot {
            root: PathBuf::from(format!("/proc/{}/root", init.pid)),
            init: Some(init),
        }
    }

    /// A plain directory standing in for a node's root.
    #[cfg(test)]
    pub fn at(dir: &Path) -> NodeRoot {
        NodeRoot {
            root: dir.to_owned(),
            init: None,
        }
    }

    /// `rel` as the host names it, for messages.
    pub fn display_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Opens `rel` (relative to the node's `/`) with `flags` (close-on-exec is added),
    /// resolving every component inside the node. Blocking.
    pub fn open(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let root = open(
            &self.root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        if self.init.is_some_and(|init| !init.alive()) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        let fd = openat2(
            &root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        Ok(fd)
    }

    /// Connects to the unix socket `rel` inside the node. Blocking.
    pub fn connect(&self, rel: &str) -> io::Result<UnixStream> {
        let sock = self.open(rel, OFlags::PATH)?;
        // The socket is connected by its handle: nothing is looked up again.
        UnixStream::connect(Path::new(&format!("/proc/self/fd/{}", sock.as_raw_fd())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        let dir = crate::testdir::TempDir::new("node-root");
        std::fs::create_dir_all(dir.0.join("inside/etc")).unwrap();
        std::fs::write(dir.0.join("inside/etc/marker"), "node").unwrap();
        std::os::unix::fs::symlink("/etc", dir.0.join("inside/link")).unwrap();
        let root = NodeRoot::at(&dir.0.join("inside"));
        let fd = root.open("link/marker", OFlags::RDONLY).unwrap();
        let text = std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(text, "node");
        assert!(root.open("link/hostname", OFlags::RDONLY).is_err());
        assert!(root.open("../../etc/marker", OFlags::RDONLY).is_ok());
        assert_eq!(
            root.display_path("run/docker.sock"),
            dir.0.join("inside/run/docker.sock")
        );
    }

    #[test]
    fn a_gone_init_has_no_root() {
        let me = ProcessId::of(std::process::id() as i32).unwrap();
        let stale = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        let err = NodeRoot::of_init(stale)
            .open("etc", OFlags::PATH)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
        assert!(NodeRoot::of_init(me).open("etc", OFlags::PATH).is_ok());
    }
}
