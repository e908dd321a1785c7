//! The ways into a running node: a command in its namespaces and cgroups (the exec helper,
//! `exec.rs` of the crate), a PTY of its own devpts, a login shell on one, and its engine.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use super::{Error, Runtime, ShellProcess};
use crate::engine::Engine;
use crate::exec::{ExecOptions, ExecTarget};
use crate::node_root::NodeRoot;
use crate::pty::NodePty;
use crate::state::NodeStatus;

/// The environment of a node's interactive shells, on top of the exec defaults (`PATH`,
/// `HOME=/root`, `LANG=C.UTF-8`).
const SHELL_ENV: &[&str] = &[
    "TERM=xterm-256color",
    "SHELL=/bin/bash",
    "USER=root",
    "LOGNAME=root",
];

/// Asks [`Runtime::spawn_shell`] for a holder: the terminal's name (its holder's id starts
/// with it) and the descriptor the holder keeps with the shell.
#[derive(Debug, Clone, Copy)]
pub struct Hold<'a> {
    pub terminal: &'a str,
    pub keep: BorrowedFd<'a>,
}

impl Runtime {
    /// The engine of a running node.
    pub fn engine(&self, network: &str, hostname: &str) -> Result<Engine, Error> {
        let rec = self.running(network, hostname)?;
        Ok(Engine::new(rec.init().expect("running node has an init")))
    }

    /// The program and arguments that run `argv` inside the node (namespaces and cgroups
    /// joined). Use it with any process spawner, e.g. a PTY.
    pub fn exec_args(
        &self,
        network: &str,
        hostname: &str,
        argv: &[String],
        opts: &ExecOptions,
    ) -> Result<(PathBuf, Vec<OsString>), Error> {
        let rec = self.running(network, hostname)?;
        let target = ExecTarget {
            pid: rec.init_pid.expect("running node has an init"),
            start_time: rec.init_start_time.expect("running node has an init"),
            cgroup_root: self.cfg.cgroup_root.clone(),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            cgroup_name: rec.cgroup.clone(),
            isolation: rec.isolation,
        };
        Ok((self.cfg.helper_exe.clone(), target.helper_args(opts, argv)))
    }

    /// A command that runs `argv` inside the node, with pipes or whatever stdio the caller sets.
    pub fn command(
        &self,
        network: &str,
        hostname: &str,
        argv: &[String],
        opts: &ExecOptions,
    ) -> Result<tokio::process::Command, Error> {
        let (exe, args) = self.exec_args(network, hostname, argv, opts)?;
        let mut cmd = tokio::process::Command::new(exe);
        // Its own process group: a signal to the node's process group never reaches ours.
        cmd.args(args).kill_on_drop(true).process_group(0);
        Ok(cmd)
    }

    /// A new PTY in the node's own devpts (`/dev/pts/N` inside), its slave owned by the node's
    /// `root:tty`. Both ends are close-on-exec.
    pub fn open_pty(&self, network: &str, hostname: &str) -> Result<NodePty, Error> {
        let rec = self.running(network, hostname)?;
        let init = rec.init().expect("running node has an init");
        let pty = NodePty::open(&NodeRoot::of_init(init), rec.uid_base.unwrap_or(0)).map_err(
            |source| Error::Pty {
                hostname: hostname.into(),
                source,
            },
        )?;
        // A node that died since it was found is not running, whatever the PTY says.
        if !rec.init_alive() {
            return Err(Error::NotRunning {
                hostname: hostname.into(),
                status: NodeStatus::Failed,
            });
        }
        Ok(pty)
    }

    /// Starts a login shell (`bash -l` as root in `/root`, `TERM=xterm-256color`) on a new PTY
    /// of the node with a window of `cols` x `rows`. The shell leads its own session with the
    /// PTY as its controlling terminal. The returned child is the exec helper, which exits
    /// with the shell's status; the shell dies with it.
    ///
    /// Without `hold` the helper is killed when dropped. With it the helper stays as the
    /// shell's holder for terminal `hold.terminal` (see `hold.rs`), keeping the master and
    /// `hold.keep` for the next server, and outlives the returned child handle; the returned
    /// connection to it is the first server's.
    pub fn spawn_shell(
        &self,
        network: &str,
        hostname: &str,
        cols: u16,
        rows: u16,
        hold: Option<Hold<'_>>,
    ) -> Result<ShellProcess, Error> {
        let pty = self.open_pty(network, hostname)?;
        pty.resize(cols, rows).map_err(|source| Error::Pty {
            hostname: hostname.into(),
            source,
        })?;
        let id = hold.map(|h| crate::hold::new_id(h.terminal));
        let opts = ExecOptions {
            cwd: Some("/root".into()),
            env: SHELL_ENV.iter().map(|e| (*e).to_owned()).collect(),
            tty: true,
            hold: id.clone(),
        };
        let argv = ["bash".to_owned(), "-l".to_owned()];
        let mut cmd = self.command(network, hostname, &argv, &opts)?;
        let shell_err = |source| Error::Shell {
            hostname: hostname.into(),
            source,
        };
        let NodePty { master, slave } = pty;
        cmd.stdin(slave.try_clone().map_err(shell_err)?)
            .stdout(slave.try_clone().map_err(shell_err)?)
            .stderr(slave);
        let (Some(hold), Some(id)) = (hold, id) else {
            // `cmd` goes at the end of this function and with it our copies of the slave: from
            // then on only the shell and its children hold it, so the master hangs up when
            // they exit.
            let child = cmd.spawn().map_err(shell_err)?;
            return Ok(ShellProcess {
                master,
                child,
                holder: None,
            });
        };
        let dir = self.shells_dir(network, hostname);
        let (listener, dirfd) = crate::hold::listen(&dir, &id).map_err(shell_err)?;
        // Above the fixed numbers, so that placing one never overwrites another's source.
        let high = |fd: BorrowedFd<'_>| -> Result<OwnedFd, Error> {
            rustix::io::fcntl_dupfd_cloexec(fd, 64).map_err(|e| shell_err(e.into()))
        };
        let passed = [
            (
                high(std::os::fd::AsFd::as_fd(&listener))?,
                crate::hold::LISTENER_FD,
            ),
            (
                high(std::os::fd::AsFd::as_fd(&master))?,
                crate::hold::MASTER_FD,
            ),
            (high(hold.keep)?, crate::hold::KEEP_FD),
            (high(std::os::fd::AsFd::as_fd(&dirfd))?, crate::hold::DIR_FD),
        ];
        for (fd, target) in &passed {
            crate::sys::pass_fd(&mut cmd, fd.as_raw_fd(), *target);
        }
        // The holder outlives this handle (and this server).
        cmd.kill_on_drop(false);
        let child = cmd.spawn().map_err(shell_err)?;
        // Queued by the listener until the holder serves it.
        let conn = crate::hold::connect_new(&dir, &id).map_err(shell_err)?;
        Ok(ShellProcess {
            master,
            child,
            holder: Some(conn),
        })
    }

    /// The directory of a node's holder sockets.
    fn shells_dir(&self, network: &str, hostname: &str) -> PathBuf {
        self.node_dir_of(network, hostname).shells()
    }

    /// The holders a node's shells have (ids: see `hold.rs`), for a new server to take over.
    pub fn held_shells(&self, network: &str, hostname: &str) -> Vec<String> {
        crate::hold::ids_in(&self.shells_dir(network, hostname))
    }

    /// Takes over a shell from its holder `id` (a previous server's). The socket of a holder
    /// that is gone is removed.
    pub fn adopt_shell(
        &self,
        network: &str,
        hostname: &str,
        id: &str,
    ) -> Result<crate::hold::Held, Error> {
        self.running(network, hostname)?;
        let dir = self.shells_dir(network, hostname);
        crate::hold::connect(&dir, id).map_err(|source| {
            if source.kind() == std::io::ErrorKind::ConnectionRefused {
                crate::hold::remove(&dir, id);
            }
            Error::Shell {
                hostname: hostname.into(),
                source,
            }
        })
    }
}
