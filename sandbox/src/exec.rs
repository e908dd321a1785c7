//! Running a process inside a node (`sandpit __exec ...`).
//!
//! Every way into a node (shells, API exec, setup steps) goes through this helper, which joins
//! the node's cgroups and then ALL of its namespaces: a plain `nsenter` joins namespaces but
//! leaves the process in the caller's cgroups, outside the node's memory and pids limits.
//!
//! Order: open every namespace fd first (`/proc/<pid>/ns/*` of the node's PID 1), then join
//! the cgroups (as host root, before entering the user namespace, where the host's cgroup
//! files are no longer ours), then `setns` the user namespace first (which grants the
//! capabilities needed to join the rest), then the others, then become root inside. Joining a
//! pid namespace only affects children, so the helper forks: the child execs the command, the
//! helper waits for it, forwards signals and exits with its status. The helper is a fresh,
//! single-threaded process, as `setns(CLONE_NEWUSER)` requires.
//!
//! With `--tty` (a shell on a PTY of the node, see `pty.rs`, passed as stdin, stdout and
//! stderr) the child also starts a session and makes its stdin the controlling terminal, so
//! the line discipline's Ctrl-C reaches its foreground job, and resets every signal
//! disposition: a signal the server ignores survives `execve`, and bash keeps signals that
//! were ignored on entry ignored for its jobs.

use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{setgroups, setresgid, setresuid, ForkResult, Gid, Uid};

use crate::cgroups::NodeCgroup;
use crate::config::Isolation;
use crate::init::NODE_ENV;

/// How to run a command in a node.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Working directory inside the node (default `/root`).
    pub cwd: Option<String>,
    /// Extra `KEY=VALUE` environment entries.
    pub env: Vec<String>,
    /// Stdin is a terminal: make it the command's controlling terminal in a new session, with
    /// default signal dispositions (for interactive shells).
    pub tty: bool,
    /// Stay as the command's holder with this id (see `hold.rs`), with the descriptors the
    /// runtime passed at the holder's fixed numbers.
    pub hold: Option<String>,
}

/// Which node to enter; built by the runtime from the node's record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecTarget {
    pub pid: i32,
    pub start_time: u64,
    pub cgroup_root: PathBuf,
    pub cgroup_parent: String,
    pub cgroup_name: String,
    pub isolation: Isolation,
}

/// Exit status of the helper when the node is not running.
pub const EXIT_NODE_GONE: i32 = 125;
/// Exit status of the helper when the command cannot be executed.
pub const EXIT_CANNOT_EXEC: i32 = 127;

impl ExecTarget {
    /// The helper's command line after the binary: `__exec <target> [options] -- argv...`.
    pub fn helper_args(&self, opts: &ExecOptions, argv: &[String]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "__exec".into(),
            "--pid".into(),
            self.pid.to_string().into(),
            "--start-time".into(),
            self.start_time.to_string().into(),
            "--cgroup-root".into(),
            self.cgroup_root.clone().into(),
            "--cgroup".into(),
            format!("{}/{}", self.cgroup_parent, self.cgroup_name).into(),
            "--isolation".into(),
            match self.isolation {
                Isolation::Userns => "userns",
                Isolation::Rootful => "rootful",
            }
            .into(),
        ];
        if let Some(cwd) = &opts.cwd {
            a.push("--cwd".into());
            a.push(cwd.into());
        }
        for e in &opts.env {
            a.push("--env".into());
            a.push(e.into());
        }
        if opts.tty {
            a.push("--tty".into());
        }
        if let Some(name) = &opts.hold {
            a.push("--hold".into());
            a.push(name.into());
        }
        a.push("--".into());
        a.extend(argv.iter().map(OsString::from));
        a
    }
}

/// Parsed helper command line.
#[derive(Debug, PartialEq)]
struct HelperArgs {
    target: ExecTarget,
    opts_cwd: Option<String>,
    env: Vec<String>,
    tty: bool,
    hold: Option<String>,
    argv: Vec<String>,
}

fn parse(args: &[String]) -> Result<HelperArgs, String> {
    let mut it = args.iter();
    let (mut pid, mut start, mut root, mut cg, mut iso, mut cwd) =
        (None, None, None, None, None, None);
    let mut env = Vec::new();
    let mut tty = false;
    let mut hold = None;
    let mut argv = Vec::new();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--pid" => pid = Some(val()?.parse::<i32>().map_err(|e| e.to_string())?),
            "--start-time" => start = Some(val()?.parse::<u64>().map_err(|e| e.to_string())?),
            "--cgroup-root" => root = Some(PathBuf::from(val()?)),
            "--cgroup" => cg = Some(val()?),
            "--isolation" => iso = Some(val()?.parse::<Isolation>()?),
            "--cwd" => cwd = Some(val()?),
            "--env" => env.push(val()?),
            "--tty" => tty = true,
            "--hold" => hold = Some(val()?),
            "--" => {
                argv = it.by_ref().cloned().collect();
                break;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let cg = cg.ok_or("--cgroup is required")?;
    let (parent, name) = cg.rsplit_once('/').ok_or("--cgroup must be PARENT/NAME")?;
    if argv.is_empty() {
        return Err("no command given after --".into());
    }
    Ok(HelperArgs {
        target: ExecTarget {
            pid: pid.ok_or("--pid is required")?,
            start_time: start.ok_or("--start-time is required")?,
            cgroup_root: root.ok_or("--cgroup-root is required")?,
            cgroup_parent: parent.to_string(),
            cgroup_name: name.to_string(),
            isolation: iso.ok_or("--isolation is required")?,
        },
        opts_cwd: cwd,
        env,
        tty,
        hold,
        argv,
    })
}

/// Entry point of `sandpit __exec ...` (arguments after `__exec`). Never returns; exits with
/// the command's status, 128+N if a signal N ended it, [`EXIT_NODE_GONE`] if the node is not
/// running, or [`EXIT_CANNOT_EXEC`] if the command could not be started.
pub fn run_exec_helper(args: &[String]) -> ! {
    let fail = |code: i32, msg: String| -> ! {
        eprintln!("sandpit exec: {msg}");
        std::process::exit(code)
    };
    let h = parse(args).unwrap_or_else(|e| fail(2, e));
    // Asked now: once in the node's mount namespace, /proc no longer shows this process.
    if !crate::sys::single_threaded() {
        fail(1, "the exec helper must be single-threaded".into());
    }
    let held = h
        .hold
        .clone()
        .map(|name| crate::hold::HeldFds::take(name).unwrap_or_else(|e| fail(1, e)));
    let t = &h.target;
    let init = crate::process::ProcessId {
        pid: t.pid,
        start_time: t.start_time,
    };
    if !init.alive() {
        fail(EXIT_NODE_GONE, "the node is not running".into());
    }
    if let Err(e) = enter(t) {
        fail(EXIT_NODE_GONE, e);
    }
    let argv: Vec<CString> = h
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|_| fail(2, "argument contains a NUL byte".into()));
    let mut env: Vec<CString> = NODE_ENV
        .iter()
        .map(|e| CString::new(*e).expect("static env"))
        .collect();
    for e in &h.env {
        let c = CString::new(e.as_str())
            .unwrap_or_else(|_| fail(2, "environment contains a NUL byte".into()));
        // Later entries override the defaults with the same name.
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| !x.to_bytes().starts_with(format!("{key}=").as_bytes()));
        env.push(c);
    }
    let cwd = h.opts_cwd.clone().unwrap_or_else(|| "/root".into());

    // Forward the signals a terminal or a supervisor sends; wait for the child with SIGCHLD.
    let mut forwarded = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        forwarded.add(s);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None);
    match crate::sys::fork_single_threaded() {
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            );
            crate::sys::reset_sigpipe();
            if h.tty {
                if let Err(e) = become_terminal_session() {
                    fail(EXIT_CANNOT_EXEC, e);
                }
            }
            // The command dies with the helper (killed by a timeout or a dropped terminal).
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            if nix::unistd::chdir(cwd.as_str()).is_err() {
                let _ = nix::unistd::chdir("/");
            }
            let e = nix::unistd::execvpe(&argv[0], &argv, &env).unwrap_err();
            fail(EXIT_CANNOT_EXEC, format!("cannot run {:?}: {e}", h.argv[0]));
        }
        Ok(ForkResult::Parent { child }) if held.is_some() => {
            crate::hold::hold(child, forwarded, held.expect("checked"))
        }
        Ok(ForkResult::Parent { child }) => loop {
            let sig = forwarded.wait().unwrap_or(Signal::SIGCHLD);
            if sig != Signal::SIGCHLD {
                let _ = kill(child, sig);
                continue;
            }
            match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, s, _)) => std::process::exit(128 + s as i32),
                Ok(_) => continue,
                Err(e) => fail(1, format!("wait: {e}")),
            }
        },
        Err(e) => fail(1, format!("fork: {e}")),
    }
}

/// In the command's process: a new session whose controlling terminal is stdin, and default
/// dispositions for every signal. A freshly forked child leads no process group, so `setsid`
/// succeeds; the PTY is new, so no other session has it as its terminal.
fn become_terminal_session() -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    rustix::process::ioctl_tiocsctty(std::io::stdin())
        .map_err(|e| format!("make stdin the controlling terminal (TIOCSCTTY): {e}"))?;
    crate::sys::reset_signal_dispositions();
    Ok(())
}

/// Joins the node's cgroups and namespaces and becomes its root.
fn enter(t: &ExecTarget) -> Result<(), String> {
    let mut kinds = vec![];
    if t.isolation == Isolation::Userns {
        kinds.push(("user", CloneFlags::CLONE_NEWUSER));
    }
    kinds.extend([
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ]);
    let fds: Vec<(&str, CloneFlags, OwnedFd)> = kinds
        .into_iter()
        .map(|(name, flag)| {
            let path = format!("/proc/{}/ns/{name}", t.pid);
            std::fs::File::open(&path)
                .map(|f| (name, flag, OwnedFd::from(f)))
                .map_err(|e| format!("open {path}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    NodeCgroup::new(&t.cgroup_root, &t.cgroup_parent, &t.cgroup_name)
        .attach(std::process::id() as i32)
        .map_err(|e| format!("join the node's cgroups: {e}"))?;
    for (name, flag, fd) in &fds {
        setns(fd, *flag).map_err(|e| format!("join {name} namespace: {e}"))?;
    }
    match t.isolation {
        Isolation::Userns => {
            setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
            setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                .map_err(|e| format!("setresgid: {e}"))?;
            setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                .map_err(|e| format!("setresuid: {e}"))?;
        }
        Isolation::Rootful => crate::sys::drop_rootful_capabilities()
            .map_err(|e| format!("drop capabilities: {e}"))?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_args_round_trip() {
        let t = ExecTarget {
            pid: 42,
            start_time: 777,
            cgroup_root: "/sys/fs/cgroup".into(),
            cgroup_parent: "sandpit".into(),
            cgroup_name: "s1-node1".into(),
            isolation: Isolation::Userns,
        };
        let mut opts = ExecOptions {
            cwd: Some("/tmp".into()),
            env: vec!["TERM=xterm-256color".into()],
            tty: false,
            hold: None,
        };
        // The helper's command line, parsed back as the helper does.
        let round_trip = |opts: &ExecOptions, argv: &[String]| {
            let args: Vec<String> = t
                .helper_args(opts, argv)
                .into_iter()
                .skip(1)
                .map(|a| a.into_string().unwrap())
                .collect();
            parse(&args).unwrap()
        };
        let argv = vec!["sh".to_string(), "-c".into(), "echo --pid".into()];
        let parsed = round_trip(&opts, &argv);
        assert_eq!(parsed.target, t);
        assert_eq!(parsed.opts_cwd.as_deref(), Some("/tmp"));
        assert_eq!(parsed.env, opts.env);
        assert!(!parsed.tty);
        assert_eq!(parsed.argv, argv);

        opts.tty = true;
        opts.hold = Some("main".into());
        // `--tty` after `--` belongs to the command.
        let argv = vec!["bash".to_string(), "-l".into(), "--tty".into()];
        let parsed = round_trip(&opts, &argv);
        assert!(parsed.tty);
        assert_eq!(parsed.hold.as_deref(), Some("main"));
        assert_eq!(parsed.argv, argv);
    }

    #[test]
    fn bad_helper_args_are_refused() {
        assert!(parse(&["--pid".into()]).is_err());
        assert!(parse(&["--bogus".into()]).is_err());
        assert!(parse(&[
            "--pid".into(),
            "1".into(),
            "--start-time".into(),
            "2".into(),
            "--cgroup-root".into(),
            "/x".into(),
            "--cgroup".into(),
            "a/b".into(),
            "--isolation".into(),
            "userns".into(),
        ])
        .unwrap_err()
        .contains("no command"));
    }
}
