//! `sandpit __node-init <dir>`: the launcher. It walks its side of the handshake, unshares
//! the node's namespaces, becomes root of its user namespace, and forks the node's PID 1.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{setgroups, setresgid, setresuid, ForkResult, Gid, Uid};

use super::config::{InitConfig, HANDSHAKE_FD};
use super::mounts::setup_node;
use super::pid1::node_init;
use crate::config::Isolation;
use crate::rootfs::NodeDir;

/// Entry point of `sandpit __node-init <dir>`. Never returns.
pub fn run_node_init(dir: &Path) -> ! {
    let sock = match crate::sys::take_inherited_fds([HANDSHAKE_FD]).map(|[fd]| fd) {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("sandpit node init: no handshake socket on fd {HANDSHAKE_FD}: {e}");
            std::process::exit(1)
        }
    };
    let mut conn = Conn { sock: Some(sock) };
    match launcher(dir, &mut conn) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            let _ = conn.send(&format!("error {e}"));
            eprintln!("sandpit node init: {e}");
            std::process::exit(1)
        }
    }
}

/// The launcher's end of the handshake. The protocol is lockstep (each side sends only after
/// it has read the other's message), so reading byte by byte never takes more than one line.
struct Conn {
    sock: Option<UnixStream>,
}

impl Conn {
    fn sock(&self) -> std::io::Result<&UnixStream> {
        self.sock
            .as_ref()
            .ok_or_else(|| std::io::Error::other("handshake closed"))
    }
    fn send(&mut self, msg: &str) -> std::io::Result<()> {
        let mut s = self.sock()?;
        s.write_all(format!("{msg}\n").as_bytes())
    }
    fn close(&mut self) {
        self.sock = None;
    }
    fn expect(&mut self, want: &str) -> Result<(), String> {
        let mut s = self.sock().map_err(|e| e.to_string())?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b) {
                Ok(0) => return Err(format!("the host closed the handshake before {want:?}")),
                Ok(_) if b[0] == b'\n' => break,
                Ok(_) => line.push(b[0]),
                Err(e) => return Err(format!("read handshake: {e}")),
            }
        }
        if line == want.as_bytes() {
            Ok(())
        } else {
            Err(format!(
                "expected {want:?} from the host, got {:?}",
                String::from_utf8_lossy(&line)
            ))
        }
    }
    /// Receives `want` with an optional file descriptor attached.
    fn expect_with_fd(&mut self, want: &str) -> Result<Option<OwnedFd>, String> {
        let sock = self.sock().map_err(|e| e.to_string())?.as_raw_fd();
        let mut data = [0u8; 64];
        let (n, fds) = crate::sys::recv_with_fds(sock, &mut data)
            .map_err(|e| format!("receive {want}: {e}"))?;
        let fd = fds.into_iter().next();
        let text = String::from_utf8_lossy(&data[..n]);
        if text.trim_end() == want {
            Ok(fd)
        } else {
            Err(format!("expected {want:?} from the host, got {text:?}"))
        }
    }
}

fn launcher(dir: &Path, conn: &mut Conn) -> Result<(), String> {
    let nd = NodeDir::new(dir.to_owned());
    let cfg: InitConfig = crate::state::load(&nd.init_config()).map_err(|e| e.to_string())?;
    let userns = cfg.isolation == Isolation::Userns;

    conn.expect("attached")?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if userns {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(|e| format!("unshare namespaces: {e}"))?;
    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    conn.send("unshared").map_err(|e| e.to_string())?;

    let lower_fd = conn.expect_with_fd("mapped")?;
    if userns {
        // The maps exist now: become root of the user namespace (groups first, while we may).
        setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(|e| format!("setresgid 0: {e}"))?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(|e| format!("setresuid 0: {e}"))?;
    }
    unshare(CloneFlags::CLONE_NEWPID).map_err(|e| format!("unshare pid namespace: {e}"))?;
    match crate::sys::fork_single_threaded().map_err(|e| format!("fork node init: {e}"))? {
        ForkResult::Parent { child } => {
            conn.send(&format!("pid {child}"))
                .map_err(|e| e.to_string())?;
            Ok(())
        }
        ForkResult::Child => {
            let res = setup_node(&nd, &cfg, lower_fd);
            match res {
                Ok(()) => {
                    let _ = conn.send("ready");
                    conn.close();
                    node_init(&cfg)
                }
                Err(e) => {
                    let _ = conn.send(&format!("error {e}"));
                    std::process::exit(1)
                }
            }
        }
    }
}
