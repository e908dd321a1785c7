//! The host side of the launch handshake: spawn the launcher, walk it through the steps.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use super::config::{InitError, HANDSHAKE_FD};

/// The host's end of a launch in progress.
pub(crate) struct Launch {
    sock: tokio::net::UnixStream,
    child: tokio::process::Child,
    pub launcher_pid: i32,
    buf: Vec<u8>,
}

impl Launch {
    /// Starts `exe __node-init <dir>`, with the handshake socket as fd 3 and its stderr going to
    /// `<dir>/init.log`.
    pub fn spawn(exe: &Path, dir: &Path) -> Result<Launch, InitError> {
        let spawn_err = |source| InitError::Spawn {
            exe: exe.to_owned(),
            source,
        };
        let (host, child_end) = UnixStream::pair().map_err(spawn_err)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("init.log"))
            .map_err(spawn_err)?;
        let child_fd = child_end.as_raw_fd();
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("__node-init")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        crate::sys::pass_fd(&mut cmd, child_fd, HANDSHAKE_FD);
        let child = cmd.spawn().map_err(spawn_err)?;
        drop(child_end);
        host.set_nonblocking(true).map_err(spawn_err)?;
        let sock = tokio::net::UnixStream::from_std(host).map_err(spawn_err)?;
        let launcher_pid = child.id().map(|p| p as i32).unwrap_or(-1);
        Ok(Launch {
            sock,
            child,
            launcher_pid,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, msg: &str, fd: Option<&OwnedFd>) -> Result<(), InitError> {
        let line = format!("{msg}\n");
        loop {
            self.sock
                .writable()
                .await
                .map_err(|e| InitError::Handshake(format!("send {msg}: {e}")))?;
            let res = self.sock.try_io(tokio::io::Interest::WRITABLE, || {
                let iov = [IoSlice::new(line.as_bytes())];
                let fds;
                let cmsgs: &[ControlMessage] = match fd {
                    Some(fd) => {
                        fds = [fd.as_raw_fd()];
                        &[ControlMessage::ScmRights(&fds)]
                    }
                    None => &[],
                };
                sendmsg::<()>(self.sock.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
                    .map_err(std::io::Error::from)
            });
            match res {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(InitError::Handshake(format!("send {msg}: {e}"))),
            }
        }
    }

    /// Reads the next line from the launcher or the node's init. An `error ...` line becomes
    /// [`InitError::Node`].
    pub async fn recv(&mut self, timeout: Duration) -> Result<String, InitError> {
        use tokio::io::AsyncReadExt;
        let read = async {
            loop {
                if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=pos).collect();
                    return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .sock
                    .read(&mut chunk)
                    .await
                    .map_err(|e| InitError::Handshake(format!("read: {e}")))?;
                if n == 0 {
                    return Err(InitError::Handshake(
                        "the node launcher exited before it finished (see init.log)".into(),
                    ));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        let line = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| InitError::Handshake(format!("no answer within {timeout:?}")))??;
        match line.strip_prefix("error ") {
            Some(why) => Err(InitError::Node(why.to_string())),
            None => Ok(line),
        }
    }

    pub async fn expect(&mut self, want: &str, timeout: Duration) -> Result<(), InitError> {
        let got = self.recv(timeout).await?;
        if got == want {
            Ok(())
        } else {
            Err(InitError::Handshake(format!(
                "expected {want:?}, got {got:?}"
            )))
        }
    }

    /// Writes the user namespace's id maps: root inside is `base` outside, 65536 ids.
    pub fn write_id_maps(&self, base: u32) -> Result<(), InitError> {
        let pid = self.launcher_pid;
        let map = format!("0 {base} 65536\n");
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{file}"), &map).map_err(|source| {
                InitError::Host {
                    op: "write id map",
                    pid,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// The launcher's user namespace, for the idmapped mount.
    pub fn userns_fd(&self) -> Result<OwnedFd, InitError> {
        let pid = self.launcher_pid;
        std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|source| InitError::Host {
                op: "open user namespace",
                pid,
                source,
            })
    }

    /// Kills the launcher if it is still there and reaps it.
    pub async fn finish(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
