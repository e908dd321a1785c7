//! The ways into a running node: a command in its namespaces and cgroups (the exec helper,
//! `exec.rs` of the crate), a PTY of its own devpts, a login shell on one, and its engine.

use std::ffi::OsString;
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
    /// with the shell's status and is killed when dropped; the shell dies with it.
    pub fn spawn_shell(
        &self,
        network: &str,
        hostname: &str,
        cols: u16,
        rows: u16,
    ) -> Result<ShellProcess, Error> {
        let pty = self.open_pty(network, hostname)?;
        pty.resize(cols, rows).map_err(|source| Error::Pty {
            hostname: hostname.into(),
            source,
        })?;
        let opts = ExecOptions {
            cwd: Some("/root".into()),
            env: SHELL_ENV.iter().map(|e| (*e).to_owned()).collect(),
            tty: true,
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
        // `cmd` goes at the end of this function and with it our copies of the slave: from then
        // on only the shell and its children hold it, so the master hangs up when they exit.
        let child = cmd.spawn().map_err(shell_err)?;
        Ok(ShellProcess { master, child })
    }
}
