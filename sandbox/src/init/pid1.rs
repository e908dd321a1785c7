//! The node's PID 1 once its file system stands: supervise dockerd, reap orphans, stop on
//! SIGTERM.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execve, ForkResult, Pid};

use super::config::{InitConfig, EXTRA_CA_DIR, NODE_ENV};

/// PID 1 of the node: starts dockerd, restarts it when it dies, reaps every orphan, and on
/// SIGTERM stops dockerd (up to 10 s) before exiting, which ends the node.
pub(super) fn node_init(cfg: &InitConfig) -> ! {
    // From here on our stderr goes to a log on the node's own disk: the launcher's log is a
    // host file, and the node's root could write to it through /proc/1/fd/2.
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/sandpit-init.log")
    {
        let _ = nix::unistd::dup2_stderr(&log);
    }
    // Docker needs shared propagation below / for its own mounts.
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SHARED,
        None::<&str>,
    );
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("sandpit init: block signals: {e}");
        std::process::exit(1);
    }
    let sfd = match SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sandpit init: signalfd: {e}");
            std::process::exit(1);
        }
    };
    let mut dockerd = start_dockerd(cfg);
    let mut started_at = std::time::Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut restart_at: Option<std::time::Instant> = None;
    let mut stopping: Option<std::time::Instant> = None;
    loop {
        let timeout = match (stopping, restart_at) {
            (Some(deadline), _) => deadline.saturating_duration_since(std::time::Instant::now()),
            (None, Some(at)) => at.saturating_duration_since(std::time::Instant::now()),
            (None, None) => Duration::from_secs(3600),
        };
        let mut fds = [nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let _ = nix::poll::poll(
            &mut fds,
            nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
        );
        while let Ok(Some(info)) = sfd.read_signal() {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) if stopping.is_none() => {
                    stopping = Some(std::time::Instant::now() + Duration::from_secs(10));
                    if let Some(pid) = dockerd {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                }
                _ => {}
            }
        }
        // Reap everything that exited: our children and every orphan of the node.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid().is_some() && status.pid() == dockerd {
                        dockerd = None;
                        if started_at.elapsed() > Duration::from_secs(60) {
                            backoff = Duration::from_millis(500);
                        }
                        if stopping.is_none() {
                            eprintln!("sandpit init: dockerd exited ({status:?}); restarting in {backoff:?}");
                            restart_at = Some(std::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
            }
        }
        if let Some(deadline) = stopping {
            if dockerd.is_none() || std::time::Instant::now() >= deadline {
                std::process::exit(0);
            }
            continue;
        }
        if let Some(at) = restart_at {
            if std::time::Instant::now() >= at {
                dockerd = start_dockerd(cfg);
                started_at = std::time::Instant::now();
                // A failed fork (the pids limit during a fork bomb) is retried later.
                restart_at = dockerd
                    .is_none()
                    .then(|| std::time::Instant::now() + backoff);
            }
        }
    }
}

/// Forks and execs dockerd with its output in /var/log/dockerd.log.
fn start_dockerd(cfg: &InitConfig) -> Option<Pid> {
    let mut argv = vec!["/usr/sbin/dockerd".to_string()];
    argv.extend(cfg.dockerd_args.iter().cloned());
    let argv: Vec<std::ffi::CString> = argv
        .into_iter()
        .map(|a| std::ffi::CString::new(a).expect("no NUL in dockerd args"))
        .collect();
    let mut env: Vec<String> = NODE_ENV.iter().map(|e| e.to_string()).collect();
    if cfg.extra_ca.is_some() {
        // Go reads every certificate in these directories on top of the system bundle.
        env.push(format!("SSL_CERT_DIR=/etc/ssl/certs:{EXTRA_CA_DIR}"));
    }
    let env: Vec<std::ffi::CString> = env
        .into_iter()
        .map(|e| std::ffi::CString::new(e).expect("no NUL in the environment"))
        .collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/dockerd.log");
    match crate::sys::fork_single_threaded() {
        Ok(ForkResult::Parent { child }) => Some(child),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            );
            let _ = nix::unistd::setsid();
            if let Ok(log) = &log {
                let _ = nix::unistd::dup2_stdout(log);
                let _ = nix::unistd::dup2_stderr(log);
            }
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(&null);
            }
            let e = execve(&argv[0], &argv, &env).unwrap_err();
            eprintln!("sandpit init: exec dockerd: {e}");
            std::process::exit(127)
        }
        Err(e) => {
            eprintln!("sandpit init: fork dockerd: {e}");
            None
        }
    }
}
